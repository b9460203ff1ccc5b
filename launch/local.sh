#!/usr/bin/env bash
# Local run (one host, all its devices): bash launch/local.sh CONFIG WORKDIR [extra flags...]
# e.g. bash launch/local.sh experiments/demo.py runs/demo
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-experiments/demo.py}
workdir=${2:-runs/local}
shift $(( $# > 2 ? 2 : $# ))
make install
exec .venv/bin/python -m rzero_jax.main --config="$config" --workdir="$workdir" "$@"
