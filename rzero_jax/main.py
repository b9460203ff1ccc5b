"""Launcher: `python -m rzero_jax.main --config=experiments/<name>.py[:arg] --workdir=DIR`.

The config's `algorithm` picks the loop: "rzero" (the default; `rzero_jax.rzero.loop`) or "azr"
(Absolute Zero, `rzero_jax.azr.loop`, e.g. `--config=experiments/azr_demo.py`). With no --config
it runs the embedded R-Zero demo (`experiments/demo.py`). Any config field can be
overridden as `--config.a.b=value`. Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from rzero_jax import cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(_REPO, "experiments", "demo.py")
if _REPO not in sys.path:  # experiment configs import the `experiments` package
  sys.path.insert(0, _REPO)

_CONFIG = config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Experiment config file (ml_collections), optionally `path:arg`."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, data, metrics).")
_MESH = flags.DEFINE_string(
    "mesh",
    None,
    "Device mesh, e.g. 'data:2,fsdp:2,tensor:2' "
    "(overrides config.mesh; -1 takes the remaining devices).",
)
_STRATEGY = flags.DEFINE_string(
    "strategy",
    None,
    "Sharding strategy for every role (dp, fsdp, tp, fsdp_tp), or per role: "
    "'challenger:fsdp,solver:tp' (R-Zero; Absolute Zero has one role, 'actor').",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host coordinator host:port (GPU/CPU clusters)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


ALGORITHMS = {"rzero": ("challenger", "solver"), "azr": ("actor",)}


def algorithm_of(config) -> str:
  """config.algorithm ("rzero" when absent); ValueError for an unknown one."""
  name = config.get("algorithm", "rzero")
  if name not in ALGORITHMS:
    raise ValueError(f"config.algorithm must be one of {sorted(ALGORITHMS)}, got {name!r}.")
  return name


def apply_strategy_flag(config, value: str) -> None:
  """Sets every role's strategy from 'name', or some from 'role:a,role:b'."""
  roles = ALGORITHMS[algorithm_of(config)]
  if ":" not in value:
    for role in roles:
      config[role].strategy = value
    return
  for part in value.split(","):
    role, _, name = part.partition(":")
    if role not in roles or not name:
      raise ValueError(
          f"Bad --strategy {value!r}: use 'fsdp' or " f"'{','.join(f'{r}:fsdp' for r in roles)}'."
      )
    config[role].strategy = name


def main(argv):
  cli.start(argv)
  if not _WORKDIR.value:
    cli.fail("--workdir is required: the run directory to write (or resume).")
  from rzero_jax import multihost

  multihost.initialize_distributed(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
  )
  from rzero_jax.selfplay.util import RunError

  try:
    config = _CONFIG.value  # the config file is read here: a missing file fails cleanly below
    if _MESH.value:
      config.mesh = _MESH.value
    if _STRATEGY.value:
      apply_strategy_flag(config, _STRATEGY.value)
    if algorithm_of(config) == "azr":
      from rzero_jax.azr.loop import run
    else:
      from rzero_jax.rzero.loop import run
    run(config, _WORKDIR.value)
  except (RunError, ValueError, OSError) as e:
    cli.fail(e)


def parse_flags(argv: list[str]) -> list[str]:
  """`cli.parse_flags`, and a bad `--config...` override as a one-line error too."""
  try:
    return cli.parse_flags(argv)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).replace("\\'", "'").replace("\\n", " ").strip("'\"")
    cli.fail(
        f"bad --config override, no such field or wrong type: {message} (fields are listed in the "
        "experiment file and rzero_jax/rzero/config.py or rzero_jax/azr/config.py)."
    )


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
