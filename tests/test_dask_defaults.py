"""The package's Dask defaults: the nanny must not set MALLOC_TRIM_THRESHOLD_ in workers."""

import subprocess
import sys


def test_malloc_trim_threshold_is_unset_whatever_the_import_order():
    code = (
        "import survey_deblend, distributed, dask.config;"
        "from distributed.nanny import _get_env_variables;"
        "print(dask.config.get('distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_'),"
        " 'MALLOC_TRIM_THRESHOLD_' in _get_env_variables('distributed.nanny.pre-spawn-environ'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False"]


def test_user_override_wins(monkeypatch):
    code = "import survey_deblend, dask.config; print(dask.config.get('distributed.nanny.pre-spawn-environ'))"
    env = {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_": "131072"}
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    assert "131072" in out
