"""``survey-deblend serve-sia``: serve a tile directory over SIA and the Data Lab cutout endpoint."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve-sia`` sub-command."""
    parser = subparsers.add_parser(
        "serve-sia",
        help="serve coadd tiles like the Astro Data Lab (SIA query + /svc/cutout), for offline runs and the demo",
        description="Serve a directory of coadd tiles (TILE_rNNNNpNN_BAND.fits[.fz]) the way the Astro Data Lab "
        "does: an SIA query endpoint answering a VOTable in the Data Lab's schema and the /svc/cutout endpoint "
        "returning FITS. Fault injection (and its /admin/faults endpoint) exists only with "
        "--enable-fault-injection, for testing clients against a real socket; on an address other than "
        "loopback it also needs --allow-remote-fault-injection.",
    )
    parser.add_argument("--tiles", required=True, help="directory of tile FITS files")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--collection", default="des_sva1", help="collection name in the SIA path /sia/NAME")
    parser.add_argument("--enable-fault-injection", action="store_true",
                        help="testing only: inject the faults below and serve /admin/faults to change them")
    parser.add_argument("--allow-remote-fault-injection", action="store_true",
                        help="allow fault injection on an address other than loopback (a second explicit opt-in)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of cutouts answered HTTP 503")
    parser.add_argument("--html-error-rate", type=float, default=0.0, help="fraction answered with an HTML page")
    parser.add_argument("--truncate-rate", type=float, default=0.0, help="fraction with a truncated body")
    parser.add_argument("--wrong-size-rate", type=float, default=0.0, help="fraction with a cutout of half size")
    parser.add_argument("--nan-rate", type=float, default=0.0, help="fraction with NaN pixels")
    parser.add_argument("--delay-s", type=float, default=0.0, help="delay before every answer, in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import threading

    from survey_deblend.cutouts.server import Faults, running_server
    from survey_deblend.errors import ConfigError

    try:
        faults = Faults(
            error_rate=args.error_rate, html_error_rate=args.html_error_rate, truncate_rate=args.truncate_rate,
            wrong_size_rate=args.wrong_size_rate, nan_rate=args.nan_rate, delay_s=args.delay_s, seed=args.seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if faults != Faults(seed=args.seed) and not args.enable_fault_injection:
        raise ConfigError("fault options need --enable-fault-injection (a server started for testing)")
    try:
        context = running_server(args.tiles, host=args.host, port=args.port,
                                 faults=faults if args.enable_fault_injection else None, collection=args.collection,
                                 fault_injection=args.enable_fault_injection,
                                 allow_remote_faults=args.allow_remote_fault_injection)
        with context as url:
            print(f"serving {len(url.server.tiles)} tile files from {args.tiles}", flush=True)
            print(f"SIA: {url}", flush=True)
            print(f"cutouts: {url.server.root_url}/svc/cutout   (Ctrl-C to stop)", flush=True)
            if args.enable_fault_injection:
                print(f"fault injection ON (testing): {faults}; change it at {url.server.root_url}/admin/faults",
                      flush=True)
            threading.Event().wait()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    return 0
