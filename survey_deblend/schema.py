"""The output schema, owned once: every column of a run's Parquet parts (name, dtype, unit, one-line description,
which stage fills it), the row statuses, and the dtypes of a catalog selection (DESIGN.md, "Output columns").

Everything else imports from here: the pipeline writes ``arrow_schema()`` (units and descriptions travel in the
Parquet field metadata, so ``pq.read_schema(part).field("e1_pred").metadata`` says what a column is), the
Predictor returns ``PREDICTION_COLUMNS``, the catalog selection builds ``SELECTION_DTYPES``, evaluation reads the
names. Kept free of heavy imports (pyarrow is imported only when the Arrow schema is built): ``cutouts`` and
``catalog`` import the status names and dtypes from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# ---- row statuses: why a row has predictions, or why not ------------------------------------------------------

OK = "ok"
PADDED = "padded"  # the cut (metacal's margin included) partly off the survey, padded with zeros; still usable
NO_COVERAGE = "no_coverage"  # no tile of any band covers the position
ERROR_HTTP = "error_http"  # HTTP error status (5xx after retries, or a 4xx)
ERROR_TIMEOUT = "error_timeout"  # no (complete) answer within the timeout, after retries
ERROR_BAD_FITS = "error_bad_fits"  # truncated, HTML or otherwise unreadable body
ERROR_WRONG_SIZE = "error_wrong_size"  # the cutout does not hold the stamp asked for
ERROR_NAN = "error_nan"  # non-finite pixels in the stamp
ERROR_CONNECTION = "error_connection"  # connection refused or reset
ERROR_OFF_HOST = "error_off_host"  # the service pointed at a host other than the configured one; not followed
# The stamp went to the model (e1_pred.. filled) but the row's PSF (psf_fwhm, psf_e1, psf_e2) is unusable
# (non-finite, -9999, FWHM <= 0, |e| >= 1), so it has no metacalibration: r11..r22, e1_mcal, e2_mcal null.
NO_PSF = "no_psf"

USABLE = frozenset({OK, PADDED})  # rows whose stamp goes to the model
FAILURES = frozenset(
    {ERROR_HTTP, ERROR_TIMEOUT, ERROR_BAD_FITS, ERROR_WRONG_SIZE, ERROR_NAN, ERROR_CONNECTION, ERROR_OFF_HOST}
)
PREDICTED = USABLE | {NO_PSF}  # rows with the model's predictions (e1_pred..)
STATUSES = PREDICTED | {NO_COVERAGE} | FAILURES  # every status a row can have

# ---- output columns --------------------------------------------------------------------------------------------

# Which stage fills a column: the catalog selection, the partition plan, the cutout batch, the model,
# metacalibration, or the run itself.
GROUPS = ("catalog", "partition", "cutout", "model", "calibration", "run")


@dataclass(frozen=True)
class Column:
    """One output column: ``dtype`` is a pandas/Arrow type name (``int64``, ``float64``, ``string``)."""

    name: str
    dtype: str
    unit: str  # "" for text and identifiers; "dimensionless" for pure numbers
    description: str
    group: str

    def arrow_metadata(self) -> dict[bytes, bytes]:
        """The Parquet field metadata: ``unit`` (when there is one) and ``description``."""
        meta = {b"description": self.description.encode()}
        if self.unit:
            meta[b"unit"] = self.unit.encode()
        return meta


_D = "dimensionless"
OUTPUT_COLUMNS: tuple[Column, ...] = (
    Column("coadd_objects_id", "int64", "", "DES COADD_OBJECTS_ID, the join key of the SVA1 catalogs", "catalog"),
    Column("ra", "float64", "deg", "right ascension (J2000) from the gold or wlinfo catalog", "catalog"),
    Column("dec", "float64", "deg", "declination (J2000) from the gold or wlinfo catalog", "catalog"),
    Column("tile", "string", "", "locality key of the row's partition (coadd tile or sky cell)", "partition"),
    Column("snr_w", "float64", _D, "im3shape SNR_W, the signal-to-noise the selection cuts on", "catalog"),
    Column("e1_im3shape", "float64", _D, "im3shape E_1, raw (uncalibrated) ellipticity, shear convention", "catalog"),
    Column("e2_im3shape", "float64", _D, "im3shape E_2, raw (uncalibrated) ellipticity, shear convention", "catalog"),
    Column("nbc_m", "float64", _D, "im3shape NBC_M, noise-bias multiplicative correction (for ensembles)", "catalog"),
    Column("nbc_c1", "float64", _D, "im3shape NBC_C1, noise-bias additive correction of e1", "catalog"),
    Column("nbc_c2", "float64", _D, "im3shape NBC_C2, noise-bias additive correction of e2", "catalog"),
    Column("w", "float64", _D, "im3shape W, the galaxy's weight", "catalog"),
    Column("psf_fwhm", "float64", "pixel", "im3shape MEAN_PSF_FWHM, mean PSF FWHM over exposures (DES pixels)",
           "catalog"),
    Column("psf_e1", "float64", _D, "im3shape MEAN_PSF_E1, mean PSF ellipticity e1 over exposures", "catalog"),
    Column("psf_e2", "float64", _D, "im3shape MEAN_PSF_E2, mean PSF ellipticity e2 over exposures", "catalog"),
    Column("bands_used", "string", "", "bands whose pixels the model saw, source order (e.g. griz); null if none",
           "cutout"),
    Column("e1_pred", "float64", _D, "predicted ellipticity e1, posterior mean (shear convention)", "model"),
    Column("e2_pred", "float64", _D, "predicted ellipticity e2, posterior mean (shear convention)", "model"),
    Column("e_sigma_pred", "float64", _D, "predicted 1-sigma uncertainty of each ellipticity component", "model"),
    Column("e1_sample", "float64", _D, "one posterior draw of e1 seeded by the id (flow head; null without)",
           "model"),
    Column("e2_sample", "float64", _D, "one posterior draw of e2 seeded by the id (flow head; null without)",
           "model"),
    Column("z_pred", "float64", _D, "predicted redshift: posterior median (flow head), else the Gaussian mean",
           "model"),
    Column("z_sigma_pred", "float64", _D, "predicted 1-sigma redshift uncertainty", "model"),
    Column("z_lo", "float64", _D, "16th percentile of the redshift posterior (flow head; null without)", "model"),
    Column("z_hi", "float64", _D, "84th percentile of the redshift posterior (flow head; null without)", "model"),
    Column("e1_recon", "float64", _D, "PSF-corrected HSM e1 of the VAE reconstruction (null: off or HSM failed)",
           "model"),
    Column("e2_recon", "float64", _D, "PSF-corrected HSM e2 of the VAE reconstruction (null: off or HSM failed)",
           "model"),
    *(
        Column(f"r{i}{j}", "float64", _D, f"metacalibration response R{i}{j} = d e{i}_pred / d g{j} (null: off)",
               "calibration")
        for i in (1, 2) for j in (1, 2)
    ),
    *(
        Column(f"e{i}_mcal", "float64", _D,
               f"e{i}_pred on the unsheared metacal image, symmetrized by default; ensemble <R>^-1 <e_mcal>",
               "calibration")
        for i in (1, 2)
    ),
    Column("status", "string", "", "why the row has predictions or not: ok, padded, no_psf, no_coverage, error_*",
           "cutout"),
    Column("model", "string", "", "hash of the checkpoint file that made the predictions", "run"),
    Column("run_id", "string", "", "id of the run that wrote the row", "run"),
)
COLUMNS: dict[str, Column] = {c.name: c for c in OUTPUT_COLUMNS}
OUTPUT_NAMES: tuple[str, ...] = tuple(COLUMNS)


def names_in(*groups: str) -> tuple[str, ...]:
    """Output column names filled by ``groups``, in output order."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown column group '{unknown[0]}' (groups: {', '.join(GROUPS)})")
    return tuple(c.name for c in OUTPUT_COLUMNS if c.group in groups)


CATALOG_COLUMNS = names_in("catalog")  # what a selection carries into the output
PREDICTION_COLUMNS = names_in("model", "calibration")  # what ``Predictor.predict_batch`` returns
CUTOUT_COLUMNS = names_in("cutout")  # what a cutout batch says of each row (bands used, status)
PSF_COLUMNS = ("psf_fwhm", "psf_e1", "psf_e2")  # the catalog columns metacalibration builds each row's PSF from
RESPONSE_COLUMNS = tuple(f"r{i}{j}" for i in (1, 2) for j in (1, 2))  # R row by row, reshape(-1, 2, 2)

# A catalog selection: the catalog output columns plus the quality flags it was cut on.
SELECTION_DTYPES: dict[str, str] = {
    **{name: COLUMNS[name].dtype for name in CATALOG_COLUMNS},
    "error_flag": "int32",
    "info_flag": "int32",
}


@cache
def arrow_schema() -> pa.Schema:
    """The Parquet schema of a part file, units and descriptions in each field's metadata."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(c.name, pa.type_for_alias(c.dtype), metadata=c.arrow_metadata()) for c in OUTPUT_COLUMNS],
        metadata={b"survey_deblend": b"DESIGN.md 'Output columns'"},
    )
