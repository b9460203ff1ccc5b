#!/usr/bin/env bash
# TPU pod slice: the SAME command runs on every worker; jax.distributed initialises itself on TPU.
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command \
#     "cd rzero_jax && bash launch/tpu_pod.sh experiments/paper.py:qwen3_8b /mnt/shared/runs/q8b \
#        --config.model_path=/mnt/ckpt/Qwen3-8B-Base"
# The workdir must be a filesystem path shared by all workers (e.g. an NFS/Filestore mount): every worker
# joins checkpoints; only worker 0 writes logs, datasets and summary.json.
set -euo pipefail
exec bash "$(dirname "$0")/_run.sh" tpu "${MESH:-data:-1,fsdp:4}" "$@"
