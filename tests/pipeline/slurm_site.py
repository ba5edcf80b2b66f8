"""A real SLURM controller for the ``slurm`` tests: is one answering, a site file for it, submitting and waiting.

The controller is the single-node one of ``cluster/local-slurm.sh`` (or any SLURM whose default partition has an
idle node). Jobs run on this host; scheduler and workers talk over loopback only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
START_HINT = "start one with: sudo bash cluster/local-slurm.sh start"


def _run(*command: str, timeout_s: float = 15.0) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=timeout_s).stdout


def controller_problem() -> str | None:
    """None when ``sinfo`` answers and the default partition has an idle (or partly used) node, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return f"no SLURM client (sinfo, sbatch) on PATH; {START_HINT}"
    try:
        lines = _run("sinfo", "-h", "-o", "%P %t", timeout_s=8).split()  # sinfo retries a dead controller ~20 s
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
        return f"sinfo gets no answer from a controller ({said[0]}); {START_HINT}"
    except subprocess.TimeoutExpired:
        return f"sinfo gets no answer from a controller within 8 s; {START_HINT}"
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    usable = [state for part, state in pairs if part.endswith("*") and state in ("idle", "mix")]
    if not usable:
        return f"no idle node in the default partition (sinfo: {pairs}); {START_HINT}"
    return None


def default_partition() -> str:
    return next(p.rstrip("*") for p in _run("sinfo", "-h", "-o", "%P").split() if p.endswith("*"))


def job_environment() -> dict[str, str]:
    """This process's environment with the checkout first on PYTHONPATH and VENV naming this interpreter's venv.

    sbatch passes the submitting environment on (``--export=ALL``), so batch jobs import this checkout with this
    venv's packages, as in CI (a fresh clone with its own ``.venv``) and in a developer's worktree.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["VENV"] = sys.prefix
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def write_site_file(path: Path, work: Path, name: str, **extra) -> Path:
    """``cluster/slurm.yaml`` edited for this one-node cluster, as a user edits it for a site.

    Kept from the repository's file: one worker process per job, its ``--resources GPU=1``. Changed: the partition,
    account, size (1 core, 2 GB: the node has no GPU, so no ``--gres``), a short walltime, loopback, folders, and
    the Python and import path of this checkout (a worker job on another node would source the venv instead).
    """
    data = yaml.safe_load((REPO / "cluster" / "slurm.yaml").read_text())
    site = data["jobqueue"]["slurm"]
    site.update(
        {
            "name": name,
            "queue": default_partition(),
            "account": None,
            "cores": 1,
            "memory": "2GB",
            "walltime": "00:10:00",
            "interface": "lo",
            "death-timeout": 30,
            "local-directory": str(work / "dask-local"),
            "log-directory": str(work / "dask-logs"),
            "python": sys.executable,
            "job-extra-directives": [],
            "job-script-prologue": [f"export PYTHONPATH={job_environment()['PYTHONPATH']}"],
        }
    )
    site.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


def sbatch(*args: str, cwd: Path = REPO) -> str:
    """Submit with ``sbatch --parsable`` from ``cwd``; the job id."""
    out = subprocess.run(
        ["sbatch", "--parsable", *args], cwd=cwd, env=job_environment(), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, f"sbatch {' '.join(args)}: {out.stderr.strip()}"
    return out.stdout.strip().split(";")[0]


def job_state(job_id: str) -> tuple[str, str]:
    """(JobState, ExitCode) of a job the controller still remembers (MinJobAge)."""
    text = _run("scontrol", "show", "job", job_id)
    state = re.search(r"JobState=(\S+)", text)
    code = re.search(r"ExitCode=(\S+)", text)
    return (state.group(1) if state else "UNKNOWN", code.group(1) if code else "")


def wait_for_job(job_id: str, timeout_s: float) -> tuple[str, str]:
    """Poll until the job has ended; its final (JobState, ExitCode). Cancels it and fails on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state, code = job_state(job_id)
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state, code
        time.sleep(1.0)
    subprocess.run(["scancel", job_id], timeout=15)
    raise AssertionError(f"SLURM job {job_id} still {state} after {timeout_s:.0f} s (cancelled)")


def jobs_named(name: str) -> list[str]:
    """Ids of the queued or running jobs called ``name``."""
    return _run("squeue", "-h", "-n", name, "-o", "%i").split()
