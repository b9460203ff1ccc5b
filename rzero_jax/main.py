"""Launcher: `python -m rzero_jax.main --config=experiments/<name>.py[:arg] --workdir=DIR`.

With no --config it runs the embedded demo (`experiments/demo.py`). Any config field can be
overridden as `--config.a.b=value`. Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(_REPO, "experiments", "demo.py")
if _REPO not in sys.path:  # experiment configs import the `experiments` package
  sys.path.insert(0, _REPO)

_CONFIG = config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Experiment config file (ml_collections), optionally `path:arg`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, data, metrics).")
_MESH = flags.DEFINE_string("mesh", None, "Device mesh, e.g. 'data:2,fsdp:2,tensor:2' "
                            "(overrides config.mesh; -1 takes the remaining devices).")
_STRATEGY = flags.DEFINE_string(
    "strategy", None, "Sharding strategy for both roles (dp, fsdp, tp, fsdp_tp), or per role: "
    "'challenger:fsdp,solver:tp'.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-host coordinator host:port (GPU/CPU clusters).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


def apply_strategy_flag(config, value: str) -> None:
  """Sets config.{challenger,solver}.strategy from 'name' or 'challenger:a,solver:b'."""
  if ":" not in value:
    config.challenger.strategy = config.solver.strategy = value
    return
  for part in value.split(","):
    role, _, name = part.partition(":")
    if role not in ("challenger", "solver") or not name:
      raise ValueError(f"Bad --strategy {value!r}: use 'fsdp' or 'challenger:fsdp,solver:tp'.")
    config[role].strategy = name


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the run directory to write (or resume).")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep library INFO logs (orbax, jax) off the console
  from rzero_jax import sharding
  sharding.initialize_distributed(coordinator_address=_COORDINATOR.value,
                                  num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  from rzero_jax.rzero.loop import RunError, run
  try:
    config = _CONFIG.value  # the config file is read here: a missing file fails cleanly below
    if _MESH.value:
      config.mesh = _MESH.value
    if _STRATEGY.value:
      apply_strategy_flag(config, _STRATEGY.value)
    run(config, _WORKDIR.value)
  except (RunError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that turns a bad `--config...` override into a one-line error."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}\nPass --helpfull to see every flag.", file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).replace("\\'", "'").replace("\\n", " ").strip("'\"")
    print(f"error: bad --config override, no such field or wrong type: {message} (fields are "
          "listed in the experiment file and rzero_jax/rzero/config.py).", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
