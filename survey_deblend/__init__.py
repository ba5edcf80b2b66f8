"""survey-deblend: weak-lensing ellipticities of blended galaxies with generative neural networks.

Importing the package merges its Dask defaults (``survey_deblend/dask.yaml``) into ``dask.config`` under the
user's own settings, the way dask-jobqueue ships its defaults, so that users override them as usual.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def _load_dask_defaults() -> None:
    import dask.config
    import distributed  # noqa: F401  (distributed merges its own defaults on import: ours go over them)
    import yaml

    defaults = yaml.safe_load((Path(__file__).with_name("dask.yaml")).read_text())
    dask.config.update_defaults(defaults)


_load_dask_defaults()
