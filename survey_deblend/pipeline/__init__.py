"""The Dask graph of ``survey-deblend run``: partitions, cutouts, inference, atomic Parquet writes, resume.

``run(config, client)`` takes a client the caller made (``survey_deblend.cluster.make_client``), hats-import
style; the stage functions in ``tasks`` take and return plain numpy/pandas values.
"""

from survey_deblend.pipeline.plan import MANIFEST_NAME
from survey_deblend.pipeline.run import RunSummary, run

__all__ = ["MANIFEST_NAME", "RunSummary", "run"]
