"""The CutoutBatch contract, status combination, ImagesConfig checks, and the serve-sia command."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from survey_deblend.cli import build_parser
from survey_deblend.config.images import ImagesConfig
from survey_deblend.config.loader import from_mapping
from survey_deblend.cutouts import CutoutBatch
from survey_deblend.cutouts import status as st
from survey_deblend.errors import ConfigError
from survey_deblend.surveys import PhotometricFrame


def test_band_statuses_combine_into_one_row_status():
    assert st.combine_band_statuses([st.OK, st.NO_COVERAGE, st.OK]) == st.OK
    assert st.combine_band_statuses([st.OK, st.PADDED]) == st.PADDED
    assert st.combine_band_statuses([st.NO_COVERAGE, st.NO_COVERAGE]) == st.NO_COVERAGE
    # a failed band is masked: the row stays usable while any band is
    assert st.combine_band_statuses([st.OK, st.ERROR_TIMEOUT, st.PADDED]) == st.PADDED
    assert st.combine_band_statuses([st.ERROR_NAN, st.OK]) == st.OK
    # no usable band: the worst failure is named
    assert st.combine_band_statuses([st.ERROR_NAN, st.ERROR_HTTP, st.NO_COVERAGE]) == st.ERROR_HTTP
    assert st.combine_band_statuses([st.ERROR_WRONG_SIZE, st.ERROR_OFF_HOST]) == st.ERROR_OFF_HOST
    assert set(st.SEVERITY) == st.FAILURES
    # the model does not survive a failed i band (measured): the row names that failure
    assert st.combine_band_statuses([st.OK, st.ERROR_TIMEOUT, st.OK], ("r", "i", "z")) == st.ERROR_TIMEOUT
    assert st.combine_band_statuses([st.OK, st.NO_COVERAGE, st.OK], ("r", "i", "z")) == st.OK
    assert st.combine_band_statuses([st.ERROR_NAN, st.OK, st.OK], ("r", "i", "z")) == st.OK
    assert st.failed_bands(("g", "r", "Y"), [st.OK, st.ERROR_HTTP, st.ERROR_NAN]) == "r:error_http Y:error_nan"
    assert st.failed_bands(("g",), [st.NO_COVERAGE]) == ""
    assert st.USABLE == {"ok", "padded"}
    assert st.FAILURES.isdisjoint(st.USABLE) and st.NO_COVERAGE not in st.FAILURES


def test_batch_counts_usable_rows_and_carries_its_frame():
    frame = PhotometricFrame("DES", ("g", "r"), 0.2637, (30.0, 30.0))
    a = CutoutBatch.empty(3, frame, 5, status=st.OK)
    a.status[1] = st.ERROR_HTTP
    assert len(a) == 3 and a.stamp_size == 5 and a.images.dtype == np.float32
    assert a.status_counts() == {st.ERROR_HTTP: 1, st.OK: 2}
    assert list(a.failed_bands) == ["", "", ""]
    a.settle(np.array([[st.OK, st.ERROR_TIMEOUT], [st.ERROR_NAN, st.ERROR_HTTP], [st.NO_COVERAGE, st.PADDED]]))
    assert list(a.status) == [st.OK, st.ERROR_HTTP, st.PADDED]
    assert list(a.failed_bands) == ["r:error_timeout", "g:error_nan r:error_http", ""]
    assert a.band_mask.tolist() == [[True, False], [False, False], [False, True]]
    a.status[:] = [st.OK, st.ERROR_HTTP, st.OK]
    assert list(a.usable) == [True, False, True]
    assert a.bands == ("g", "r") and a.pixel_scale_arcsec == 0.2637 and a.frame.zeropoints == (30.0, 30.0)
    with pytest.raises(ValueError, match="band_mask shape"):
        CutoutBatch(a.images, a.band_mask[:, :1], a.status, frame)
    with pytest.raises(ValueError, match="1 zeropoints for 2 bands"):
        PhotometricFrame("DES", ("g", "r"), 0.2637, (30.0,))


def test_images_config_rejects_bad_manners():
    assert from_mapping(ImagesConfig, {"concurrency": 8, "bands": ["g", "r"]}).bands == ("g", "r")
    with pytest.raises(ConfigError, match="concurrency"):
        from_mapping(ImagesConfig, {"concurrency": 0}, "images")
    with pytest.raises(ConfigError, match="timeout_s"):
        from_mapping(ImagesConfig, {"timeout_s": -1.0}, "images")
    with pytest.raises(ConfigError, match="whole_image_threshold"):
        from_mapping(ImagesConfig, {"whole_image_threshold": -1}, "images")


def test_serve_sia_is_registered():
    args = build_parser().parse_args(["serve-sia", "--tiles", "t", "--port", "0", "--error-rate", "0.1"])
    assert args.tiles == "t" and args.port == 0 and args.error_rate == 0.1 and callable(args.func)


@contextlib.contextmanager
def serve_sia(*args: str) -> Iterator[str]:
    """``survey-deblend serve-sia ARGS --port 0`` in a subprocess; yields the SIA URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "survey_deblend", "serve-sia", *args, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("SIA: "):
                url = line.split()[1]
            elif not line and proc.poll() is not None:
                break
        assert url is not None, proc.stderr.read()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_sia_command_serves_tiles(field):
    with serve_sia("--tiles", str(field.std)) as url:
        ra, dec = field.radec("round")
        answer = requests.get(url, params={"POS": f"{ra[0]},{dec[0]}", "SIZE": "0.01"}, timeout=10)
        assert answer.status_code == 200 and b"access_url" in answer.content


def test_ordinary_server_on_every_address_has_no_admin_path(field):
    with serve_sia("--tiles", str(field.std), "--host", "0.0.0.0") as url:
        root = url.replace("0.0.0.0", "127.0.0.1").rsplit("/sia/", 1)[0]
        assert requests.get(f"{root}/admin/faults?error_rate=1", timeout=10).status_code == 404
        ra, dec = field.radec("round")
        answer = requests.get(f"{root}/sia/des_sva1", params={"POS": f"{ra[0]},{dec[0]}", "SIZE": "0.01"},
                              timeout=10)
        assert answer.status_code == 200 and b"access_url" in answer.content


def test_fault_injection_needs_explicit_options(field, capsys):
    from survey_deblend.cli import main

    assert main(["serve-sia", "--tiles", str(field.std), "--port", "0", "--error-rate", "0.2"]) == 2
    assert "need --enable-fault-injection" in capsys.readouterr().err
    assert main(["serve-sia", "--tiles", str(field.std), "--port", "0", "--host", "0.0.0.0",
                 "--enable-fault-injection"]) == 2
    err = capsys.readouterr().err
    assert "not a loopback address" in err and len(err.strip().splitlines()) == 1
    with serve_sia("--tiles", str(field.std), "--enable-fault-injection", "--error-rate", "1") as url:
        root = url.rsplit("/sia/", 1)[0]
        assert requests.get(url, params={"POS": "80,-50", "SIZE": "0.01"}, timeout=10).status_code == 200
        cutout = requests.get(f"{root}/svc/cutout", params={"siaRef": "x", "POS": "80,-50", "SIZE": "0.01"},
                              timeout=10)
        assert cutout.status_code == 503  # every cutout fails, as asked
        assert requests.get(f"{root}/admin/faults?error_rate=0", timeout=10).status_code == 200


def test_serve_sia_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from survey_deblend.cli import main

    assert main(["serve-sia", "--tiles", str(tmp_path / "nope"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"survey-deblend serve-sia: error: {tmp_path / 'nope'}: tile directory not found"
    assert main(["serve-sia", "--tiles", str(tmp_path), "--error-rate", "1.5"]) == 2
    assert "fault rates must be probabilities" in capsys.readouterr().err


def test_synthetic_pixel_scale_is_the_surveycodex_one():
    import surveycodex

    from survey_deblend.cutouts.sia import des_pixel_scale_arcsec
    from survey_deblend.cutouts.synthetic import DES_PIXEL_SCALE_ARCSEC

    assert DES_PIXEL_SCALE_ARCSEC == surveycodex.get_survey("DES").pixel_scale.to_value("arcsec")
    assert des_pixel_scale_arcsec() == DES_PIXEL_SCALE_ARCSEC
