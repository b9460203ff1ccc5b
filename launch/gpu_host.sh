#!/usr/bin/env bash
# One multi-GPU host (e.g. 8 GPUs): one process drives all local GPUs.
#   bash launch/gpu_host.sh experiments/paper.py:qwen3_4b /runs/q4b --config.model_path=/ckpt/Qwen3-4B-Base
# Several GPU hosts: run this on every host with
#   --coordinator_address=HOST0:1234 --num_processes=N --process_id=I
# (or RZERO_COORDINATOR / RZERO_NUM_PROCESSES / RZERO_PROCESS_ID in the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; workdir=$2; shift 2
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet -e . "jax[cuda12]>=0.10,<0.11"
# Let XLA use most of the GPU memory; the sampler's KV cache and both roles live there.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec .venv/bin/python -m rzero_jax.main --config="$config" --workdir="$workdir" \
  --mesh="${MESH:-fsdp:-1}" "$@"
