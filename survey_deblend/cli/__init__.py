"""The ``survey-deblend`` command: parses, builds a config, calls one function.

Each sub-command lives in its own module here and exposes ``register(subparsers)``; stage modules are
imported only when their command runs, so ``survey-deblend --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from survey_deblend.errors import SurveyDeblendError

# Sub-command modules, in the order the help lists them.
COMMAND_MODULES = (
    "select",
    "simulate",
    "serve_sia",
    "train",
    "run",
    "demo",
    "evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="survey-deblend",
        description="Weak-lensing ellipticities of blended galaxies with generative neural networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"survey_deblend.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one sub-command; user errors become one line on stderr and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SurveyDeblendError as exc:
        print(f"survey-deblend {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"survey-deblend {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
