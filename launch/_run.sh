#!/usr/bin/env bash
# Shared by gpu_host.sh and tpu_pod.sh:
#   bash launch/_run.sh JAX_EXTRA MESH CONFIG WORKDIR [extra flags...]
# installs rzero_jax and jax[JAX_EXTRA] into .venv (made when missing), then runs the launcher.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=$1; mesh=$2; config=$3; workdir=$4; shift 4
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet -e . "jax[$extra]>=0.10,<0.11"
exec .venv/bin/python -m rzero_jax.main --config="$config" --workdir="$workdir" --mesh="$mesh" "$@"
