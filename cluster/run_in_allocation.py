"""Run ``survey-deblend run`` inside one SLURM allocation with dask-jobqueue's SLURMRunner (see
``single_allocation.sbatch``). Every rank runs this file; the runner turns rank 0 into the scheduler, the
ranks from 2 on into workers (each with the resource GPU=1), and only rank 1 goes past the ``with`` line.
"""

from __future__ import annotations

import argparse
import sys

from dask_jobqueue.slurm import SLURMRunner
from distributed import Client

from survey_deblend.config import load
from survey_deblend.config.run import RunConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.pipeline import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--interface", help="network interface of scheduler and workers, e.g. ib0 (default: any)")
    parser.add_argument("--scheduler-file", default="scheduler-{job_id}.json", help="on a folder every node sees")
    args = parser.parse_args()
    config = load(RunConfig, args.config, [*args.overrides, f"output.out={args.out}"])
    network = {"interface": args.interface} if args.interface else {}
    with SLURMRunner(
        scheduler_file=args.scheduler_file,
        scheduler_options={**network},
        worker_options={**network, "resources": {"GPU": 1}},
    ) as runner:
        with Client(runner) as client:
            client.wait_for_workers(runner.n_workers)
            try:
                run(config, client)
            except SurveyDeblendError as exc:
                print(f"survey-deblend run: error: {exc}", file=sys.stderr)
                return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
