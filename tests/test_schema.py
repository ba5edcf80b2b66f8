"""The facts owned once (issue 11): the output schema and statuses (``schema``), the survey facts (``surveys``),
and that the stages import them instead of retyping them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import surveycodex

from survey_deblend import schema
from survey_deblend.surveys import DES_BANDS, LSST_BANDS, band_facts, pixel_scale, stamp_frame

PACKAGE = Path(schema.__file__).parent
DESIGN_ORDER = (  # ../shared/DESIGN.md "Output columns"
    "coadd_objects_id ra dec tile snr_w e1_im3shape e2_im3shape nbc_m nbc_c1 nbc_c2 w psf_fwhm psf_e1 psf_e2 "
    "bands_used e1_pred e2_pred e_sigma_pred e1_sample e2_sample z_pred z_sigma_pred z_lo z_hi e1_recon e2_recon "
    "r11 r12 r21 r22 e1_mcal e2_mcal status model run_id"
).split()


def test_output_columns_are_design_md_in_order_with_units_and_descriptions():
    assert list(schema.OUTPUT_NAMES) == DESIGN_ORDER
    for column in schema.OUTPUT_COLUMNS:
        assert column.group in schema.GROUPS and column.description and len(column.description) < 100
        assert column.dtype in ("int64", "float64", "string")
        assert bool(column.unit) == (column.dtype != "string" and column.name != "coadd_objects_id"), column.name
    arrow = schema.arrow_schema()
    assert arrow.names == DESIGN_ORDER
    assert arrow.field("e1_pred").type == pa.float64() and arrow.field("coadd_objects_id").type == pa.int64()
    assert arrow.field("status").type == pa.string()
    assert arrow.field("dec").metadata == {b"unit": b"deg", b"description": schema.COLUMNS["dec"].description.encode()}
    assert b"unit" not in arrow.field("tile").metadata


def test_column_groups_split_the_output_between_the_stages_that_fill_it():
    assert schema.PREDICTION_COLUMNS == (
        "e1_pred", "e2_pred", "e_sigma_pred", "e1_sample", "e2_sample", "z_pred", "z_sigma_pred", "z_lo", "z_hi",
        "e1_recon", "e2_recon", "r11", "r12", "r21", "r22", "e1_mcal", "e2_mcal",
    )
    assert schema.CUTOUT_COLUMNS == ("bands_used", "status")
    assert schema.CATALOG_COLUMNS[:3] == ("coadd_objects_id", "ra", "dec")
    assert {"psf_fwhm", "psf_e1", "psf_e2"} <= set(schema.CATALOG_COLUMNS)
    groups = [schema.CATALOG_COLUMNS, schema.CUTOUT_COLUMNS, schema.PREDICTION_COLUMNS, schema.names_in("partition"),
              schema.names_in("run")]
    assert sorted(sum(groups, ())) == sorted(schema.OUTPUT_NAMES)  # every column has exactly one owner
    with pytest.raises(ValueError, match="unknown column group 'nope'"):
        schema.names_in("nope")


def test_selection_dtypes_are_the_catalog_columns_plus_flags_each_with_a_source():
    from survey_deblend.catalog.cuts import SHEAR_COLUMNS
    from survey_deblend.catalog.schema import IM3SHAPE_COLUMNS
    from survey_deblend.catalog.select import _FROM_SHEAR

    assert list(schema.SELECTION_DTYPES) == [*schema.CATALOG_COLUMNS, "error_flag", "info_flag"]
    for name in schema.SELECTION_DTYPES:
        if name in ("ra", "dec"):
            continue
        assert _FROM_SHEAR[name] in SHEAR_COLUMNS and _FROM_SHEAR[name] in IM3SHAPE_COLUMNS, name
    assert _FROM_SHEAR["psf_fwhm"] == "MEAN_PSF_FWHM"


def test_statuses_are_owned_by_the_schema_and_reexported_by_cutouts():
    from survey_deblend.cutouts import status as st

    assert schema.USABLE == {"ok", "padded"} and schema.USABLE < schema.PREDICTED < schema.STATUSES
    assert schema.PREDICTED - schema.USABLE == {schema.NO_PSF}  # predicted, but no PSF for metacalibration
    assert not schema.USABLE & schema.FAILURES and schema.NO_COVERAGE not in schema.FAILURES
    assert st.USABLE is schema.USABLE and st.FAILURES is schema.FAILURES and st.OK is schema.OK
    assert all(s.startswith("error_") for s in schema.FAILURES)
    assert st.combine_band_statuses([schema.NO_COVERAGE, schema.PADDED]) == schema.PADDED


def test_survey_facts_are_surveycodex_facts():
    des, lsst = surveycodex.get_survey("DES"), surveycodex.get_survey("LSST")
    assert pixel_scale("DES") == des.pixel_scale.to_value("arcsec") == pytest.approx(0.2637)
    assert pixel_scale("LSST") == lsst.pixel_scale.to_value("arcsec") == pytest.approx(0.2)
    assert DES_BANDS == ("g", "r", "i", "z", "Y") and LSST_BANDS == ("u", "g", "r", "i", "z", "y")
    for band in DES_BANDS:
        assert band_facts("DES", band).psf_fwhm_arcsec == des.get_filter(band).psf_fwhm.to_value("arcsec")
    i = lsst.get_filter("i")
    expected = i.full_exposure_time.to_value("s") * 10 ** (-0.4 * (30.0 - i.zeropoint.value))
    assert band_facts("LSST", "i").electrons_per_unit(30.0) == pytest.approx(expected, rel=1e-12)
    assert band_facts("LSST", "i").electrons_per_unit(None) == 1.0


def test_stamp_frames_of_the_simulations():
    lsst = stamp_frame("LSST")
    assert lsst.bands == LSST_BANDS and lsst.zeropoints is None and lsst.pixel_scale_arcsec == pixel_scale("LSST")
    des = stamp_frame("DES", ("g", "r"))
    assert des.bands == ("g", "r") and des.zeropoints == (30.0, 30.0) and des.survey == "DES"
    # a DES stamp of a magnitude-m source holds 10**(-0.4 (m - 30)) units: the frame's zeropoint is that 30
    flux = band_facts("DES", "r").flux(22.0)
    np.testing.assert_allclose(flux, 10 ** (-0.4 * (22.0 - des.zeropoints[1])), rtol=1e-12)


@pytest.mark.parametrize("pattern", [r'\("g", "r", "i", "z", "Y"\)', r"0\.2637", r"\bPREDICTION_COLUMNS = ",
                                     r'\["ok", "padded"\]', r"SourceFrame", r"\bOUTPUT_SCHEMA\b"])
def test_each_fact_is_typed_once(pattern):
    """A survey fact or output name typed outside its owner is a second copy that can drift."""
    owners = {"surveys.py", "schema.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in owners:
            continue
        found += [f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert found == []
