#!/usr/bin/env bash
# One multi-GPU host (e.g. 8 GPUs): one process drives all local GPUs.
#   bash launch/gpu_host.sh experiments/paper.py:qwen3_4b /runs/q4b --config.model_path=/ckpt/Qwen3-4B-Base
# Several GPU hosts: run this on every host with
#   --coordinator_address=HOST0:1234 --num_processes=N --process_id=I
# (or RZERO_COORDINATOR / RZERO_NUM_PROCESSES / RZERO_PROCESS_ID in the environment).
set -euo pipefail
# Let XLA use most of the GPU memory; the sampler's KV cache and both roles live there.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec bash "$(dirname "$0")/_run.sh" cuda12 "${MESH:-fsdp:-1}" "$@"
