#!/usr/bin/env bash
# TPU pod slice: the SAME command runs on every worker; jax.distributed initialises itself on TPU.
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command \
#     "cd rzero_jax && bash launch/tpu_pod.sh experiments/paper.py:qwen3_8b /mnt/shared/runs/q8b \
#        --config.model_path=/mnt/ckpt/Qwen3-8B-Base"
# The workdir must be a filesystem path shared by all workers (e.g. an NFS/Filestore mount): every worker
# joins checkpoints; only worker 0 writes logs, datasets and summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; workdir=$2; shift 2
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet -e . "jax[tpu]>=0.10,<0.11"
exec .venv/bin/python -m rzero_jax.main --config="$config" --workdir="$workdir" \
  --mesh="${MESH:-data:-1,fsdp:4}" "$@"
