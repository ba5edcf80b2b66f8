#!/usr/bin/env bash
# An elastic pool: run this on a login node (or in a small long-running job). The scheduler lives in this
# process; dask-jobqueue submits one SLURM job per GPU worker (settings in cluster/slurm.yaml), and the run
# resumes from its finished partitions if the pool or this script is killed and started again.
#
#   bash cluster/elastic_pool.sh 8        # 8 GPU workers
set -euo pipefail
JOBS="${1:-4}"
source .venv/bin/activate
survey-deblend run \
  --config pipelines/des_sva1.yaml \
  --cluster slurm \
  --set cluster.jobqueue_config=cluster/slurm.yaml \
  --set "cluster.jobs=${JOBS}" \
  --out "${SCRATCH:-.}/sva1-shapes"
