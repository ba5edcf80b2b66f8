#!/usr/bin/env bash
# An elastic pool: run this on a login node, or submit it as a small long-running job (`sbatch`). The scheduler
# lives in this process; dask-jobqueue submits one SLURM job per GPU worker (settings in cluster/slurm.yaml,
# merged into the Dask configuration), and a worker job that ends early (scancel, walltime) is resubmitted. The
# run resumes from its finished partitions if the pool or this script is killed and started again.
#
#   bash cluster/elastic_pool.sh 8                      # 8 GPU workers, from the repository folder
#   sbatch cluster/elastic_pool.sh 8 --out /scratch/me/sva1-shapes   # the pool itself as a job
#
# Options after the number of jobs go to `survey-deblend run` and win over the ones here. VENV names the
# virtual environment (default .venv of this folder); the worker jobs use the same Python.
#SBATCH --job-name=survey-deblend-pool
#SBATCH --cpus-per-task=1
#SBATCH --time=24:00:00
set -euo pipefail
JOBS="${1:-4}"
shift || true
source "${VENV:-.venv}/bin/activate"
exec survey-deblend run \
  --config pipelines/des_sva1.yaml \
  --cluster slurm \
  --set cluster.jobqueue_config=cluster/slurm.yaml \
  --set "cluster.jobs=${JOBS}" \
  --out "${SCRATCH:-.}/sva1-shapes" \
  "$@"
