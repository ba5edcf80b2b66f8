"""TileSource against real FITS tiles: centring, orientation, edges, coverage, band mask, bad files, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from astropy.io import fits

from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.tiles import TileSource, read_tile_info
from survey_deblend.errors import InputError

from .conftest import BANDS, FLUX, POSITIONS

S = 45
C = S // 2


def moments(image: np.ndarray) -> tuple[float, float, float, float]:
    """Centroid (x, y) and variances along x and y of a stamp."""
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    total = image.sum()
    cx, cy = (image * x).sum() / total, (image * y).sum() / total
    return cx, cy, (image * (x - cx) ** 2).sum() / total, (image * (y - cy) ** 2).sum() / total


def test_stamp_is_centred_on_the_source_and_keeps_its_flux(field):
    source = TileSource(field.std, bands=BANDS)
    batch = source.fetch(*field.radec("round"), S)
    assert batch.images.shape == (1, 5, S, S) and batch.images.dtype == np.float32
    r = BANDS.index("r")
    cx, cy, _, _ = moments(batch.images[0, r])
    assert abs(cx - C) < 0.05 and abs(cy - C) < 0.05
    assert np.unravel_index(batch.images[0, r].argmax(), (S, S)) == (C, C)
    assert batch.images[0, r].sum() == pytest.approx(FLUX["round"] * field.band_scale["r"], rel=0.01)
    assert source.pixel_scale_arcsec == pytest.approx(0.2637, rel=1e-6)


def test_east_west_source_is_elongated_along_x(field):
    batch = TileSource(field.std, bands=BANDS).fetch(*field.radec("elongated"), S)
    _, _, var_x, var_y = moments(batch.images[0, 0])
    expected_ratio = (2.0 / 0.6) ** 2  # sigma east / sigma north, squared
    assert var_x / var_y == pytest.approx(expected_ratio, rel=0.1)


def test_flipped_wcs_gives_the_same_stamps(field):
    flipped_header = fits.getheader(next(field.flipped.glob("*_g.fits")), 1)
    assert flipped_header.get("CDELT1", 1.0) * flipped_header.get("PC1_1", flipped_header.get("CD1_1", 1.0)) > 0
    names = ("elongated", "round", "edge", "overlap_tile0", "overlap_tile1")
    std = TileSource(field.std, bands=BANDS).fetch(*field.radec(*names), S)
    flipped = TileSource(field.flipped, bands=BANDS).fetch(*field.radec(*names), S)
    np.testing.assert_array_equal(flipped.status, std.status)
    np.testing.assert_array_equal(flipped.band_mask, std.band_mask)
    np.testing.assert_allclose(flipped.images, std.images, atol=1e-5 * std.images.max())


def test_rotated_wcs_is_resampled_north_up(field):
    names = ("elongated", "round")
    std = TileSource(field.std, bands=BANDS).fetch(*field.radec(*names), S)
    rotated = TileSource(field.rotated, bands=BANDS).fetch(*field.radec(*names), S)
    assert list(rotated.status) == [st.OK, st.OK]
    for k in range(2):
        peak = std.images[k, 0].max()
        assert np.abs(rotated.images[k, 0] - std.images[k, 0]).max() < 0.03 * peak
        assert rotated.images[k, 0].sum() == pytest.approx(std.images[k, 0].sum(), rel=0.01)
    _, _, var_x, var_y = moments(rotated.images[0, 0])
    assert var_x > 8 * var_y


def test_compressed_tiles_give_the_same_stamps(field):
    names = ("elongated", "round", "edge")
    std = TileSource(field.std, bands=BANDS).fetch(*field.radec(*names), S)
    compressed = TileSource(field.compressed, bands=BANDS)
    assert all(t.path.name.endswith(".fits.fz") for t in compressed.tiles)
    np.testing.assert_array_equal(compressed.fetch(*field.radec(*names), S).images, std.images)


def test_stamp_running_off_the_tile_is_zero_padded_and_flagged(field):
    batch = TileSource(field.std, bands=BANDS).fetch(*field.radec("edge"), S)
    assert batch.status[0] == st.PADDED
    assert batch.band_mask[0].all()
    image = batch.images[0, 0]
    # the source is 7.5 px inside the west edge: columns beyond x = C + 7 are off the tile
    assert np.all(image[:, C + 8 :] == 0)
    tile = fits.getdata(field.std / "DES0000-5000_r0001p01_g.fits", 1)
    x, y = POSITIONS["edge"]
    np.testing.assert_array_equal(image[:, : C + 8], tile[int(y) - C : int(y) + C + 1, int(x) - C :])
    assert np.unravel_index(image.argmax(), image.shape) == (C, C)


def test_position_off_every_tile_has_no_coverage(field):
    source = TileSource(field.std, bands=BANDS)
    batch = source.fetch(*field.radec("outside", "round"), S)
    assert list(batch.status) == [st.NO_COVERAGE, st.OK]
    assert not batch.band_mask[0].any()
    assert np.all(batch.images[0] == 0)
    assert source.locality_keys(*field.radec("outside"))[0] == "no_coverage"


def test_missing_band_is_zero_with_its_mask_bit_cleared(field):
    batch = TileSource(field.std, bands=BANDS).fetch(*field.radec("round"), S)
    y = BANDS.index("Y")
    assert batch.status[0] == st.OK
    assert list(batch.band_mask[0]) == [True, True, True, True, False]
    assert np.all(batch.images[0, y] == 0)
    assert np.all(batch.images[0, :y].max(axis=(1, 2)) > 0)


def test_locality_key_is_the_tile_where_the_galaxy_is_deepest(field):
    source = TileSource(field.std, bands=BANDS)
    keys = source.locality_keys(*field.radec("overlap_tile0", "overlap_tile1", "elongated", "round"))
    assert list(keys) == ["DES0000-5000", "DES0001-5000", "DES0000-5000", "DES0001-5000"]
    assert source.tile_names == ["DES0000-5000", "DES0001-5000"]


def test_nan_pixels_give_error_nan(field, tmp_path):
    data = fits.getdata(field.std / "DES0000-5000_r0001p01_g.fits", 1)
    header = fits.getheader(field.std / "DES0000-5000_r0001p01_g.fits", 1)
    data[205:215, 140:160] = np.nan
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header)]).writeto(tmp_path / "DES0000-5000_r0001p01_g.fits")
    batch = TileSource(tmp_path, bands=("g", "r")).fetch(*field.radec("elongated", "overlap_tile0"), S)
    assert list(batch.status) == [st.ERROR_NAN, st.OK]
    assert list(batch.band_mask[0]) == [False, False]
    assert np.all(np.isfinite(batch.images))


def test_file_that_is_not_fits_is_named_in_the_error(field, tmp_path):
    bad = tmp_path / "DES0000-5000_r0001p01_g.fits"
    bad.write_text("<html>not a FITS file</html>")
    with pytest.raises(InputError, match="DES0000-5000_r0001p01_g.fits"):
        TileSource(tmp_path)


def test_file_without_wcs_is_named_in_the_error(tmp_path):
    path = tmp_path / "DES0000-5000_r0001p01_r.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((20, 20), np.float32))]).writeto(path)
    with pytest.raises(InputError, match=r"DES0000-5000_r0001p01_r\.fits: no celestial WCS"):
        read_tile_info(path)


def test_empty_directory_and_missing_directory_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no tile files"):
        TileSource(tmp_path)
    with pytest.raises(InputError, match="not found"):
        TileSource(tmp_path / "nope")


def test_source_pickles_small_and_works_after(field):
    source = TileSource(field.std, bands=BANDS)
    source.locality_keys(*field.radec("round"))  # builds WCS caches, which must not travel
    blob = pickle.dumps(source)
    assert len(blob) < 4 * 1024 * len(source.tiles)  # the WCS keywords of each tile, not its whole header
    clone = pickle.loads(blob)
    names = ("elongated", "round", "edge")
    expected = source.fetch(*field.radec(*names), S)
    np.testing.assert_array_equal(clone.fetch(*field.radec(*names), S).images, expected.images)


def test_empty_request_gives_an_empty_batch(field):
    batch = TileSource(field.std, bands=BANDS).fetch(np.array([]), np.array([]), S)
    assert batch.images.shape == (0, 5, S, S) and len(batch.status) == 0 and batch.status_counts() == {}


def test_other_pixel_scale_is_resampled_to_the_source_scale(field, tmp_path):
    from survey_deblend.cutouts.synthetic import Blob, write_field

    ra, dec = field.radec("round")
    write_field(tmp_path, [(float(ra[0]) + 0.001, float(dec[0]))], [Blob(ra[0], dec[0], 800.0, 0.8, 0.8)],
                tile_size_pix=300, bands=("g",), scale_arcsec=0.2)
    fine = TileSource(tmp_path, bands=("g",), pixel_scale_arcsec=0.2637)
    assert TileSource(tmp_path, bands=("g",)).pixel_scale_arcsec == pytest.approx(0.2)
    batch = fine.fetch(ra, dec, S)
    std = TileSource(field.std, bands=("g",)).fetch(ra, dec, S)
    assert batch.status[0] == st.OK
    assert batch.images[0, 0].sum() == pytest.approx(std.images[0, 0].sum(), rel=0.01)
    assert np.abs(batch.images[0, 0] - std.images[0, 0]).max() < 0.03 * std.images[0, 0].max()


def test_unreadable_pixels_mark_rows_not_the_partition(field, tmp_path):
    import shutil

    for path in field.std.glob("DES0000-5000_*_[gr].fits"):
        shutil.copy(path, tmp_path / path.name)
    source = TileSource(tmp_path, bands=("g", "r"))
    broken = tmp_path / "DES0000-5000_r0001p01_r.fits"
    broken.write_bytes(broken.read_bytes()[: 2880 * 3])  # headers intact, pixels cut off
    with pytest.warns(RuntimeWarning, match="DES0000-5000_r0001p01_r.fits"):
        batch = source.fetch(*field.radec("elongated"), S)
    assert batch.status[0] == st.OK and batch.failed_bands[0] == "r:error_bad_fits"  # g still serves it
    assert list(batch.band_mask[0]) == [True, False]


def test_plan_is_the_choice_fetch_uses_and_travels_per_partition(field):
    source = TileSource(field.std, bands=BANDS)
    names = ("elongated", "round", "edge", "overlap_tile0", "overlap_tile1", "outside")
    ra, dec = field.radec(*names)
    choice = source.plan(ra, dec)
    np.testing.assert_array_equal(choice.keys, source.locality_keys(ra, dec))
    # tile 1 has no Y: the round galaxy's Y comes from nowhere, the overlap ones' Y from tile 0
    y = BANDS.index("Y")
    assert [choice.tiles[i].tile if i >= 0 else None for i in choice.index[:, y]] == [
        "DES0000-5000", None, "DES0000-5000", "DES0000-5000", "DES0000-5000", None]
    whole = source.fetch(ra, dec, S)
    for key in np.unique(choice.keys):
        rows = np.flatnonzero(choice.keys == key)
        part = choice.take(rows)
        assert len(pickle.dumps(part)) < 2048 and {t.tile for t in part.tiles} <= {"DES0000-5000", "DES0001-5000"}
        batch = source.fetch(ra[rows], dec[rows], S, choice=pickle.loads(pickle.dumps(part)))
        np.testing.assert_array_equal(batch.images, whole.images[rows])
        np.testing.assert_array_equal(batch.status, whole.status[rows])
    with pytest.raises(ValueError, match="tile choice of 1 rows for 6 positions"):
        source.fetch(ra, dec, S, choice=choice.take([0]))
