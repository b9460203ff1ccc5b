"""Small helpers of the self-play runs: errors, seeds, callables, atomic files."""

from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# Named loop positions that enter seeds; the indices are fixed forever (they decide every run's
# random numbers), so new names are only ever appended.
PHASE_IDS = {
    "challenger": 0,
    "dataset": 1,
    "solver": 2,
    "done": 3,
    "seeding": 4,
    "train": 5,
    "learnability": 6,
    "evaluate": 7,
    "verifier": 8,
}


class RunError(RuntimeError):
  """A configuration or environment problem, reported to the user without a traceback."""


def derive_seed(seed: int, *parts: Any) -> int:
  """A 31-bit seed derived from the run seed and a loop position, e.g. (iteration, phase, step);
  phase names are mapped through `PHASE_IDS`."""
  words = [seed] + [
      PHASE_IDS[p] if isinstance(p, str) and p in PHASE_IDS else int(p) for p in parts
  ]
  return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_callable(spec: str) -> Callable[..., Any]:
  """Imports "package.module:function"."""
  module, _, name = spec.partition(":")
  if not module or not name:
    raise RunError(f"Bad callable reference {spec!r}: write it as 'package.module:function'.")
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise RunError(f"Cannot import {spec!r}: {e}") from e


def natural_key(key: Any) -> list:
  """Sort key that orders the numbers inside names by value: "step_8" before "step_16"."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(key))]


def _naturally_sorted(data: Any) -> Any:
  if isinstance(data, dict):
    return {k: _naturally_sorted(data[k]) for k in sorted(data, key=natural_key)}
  if isinstance(data, (list, tuple)):
    return [_naturally_sorted(v) for v in data]
  return data


def atomic_json(path: str, data: Any) -> None:
  """Writes `data` as JSON to `path` through a temporary file renamed over it, keys in natural
  order (the same bytes whatever order the dicts were built in; evaluation points in step order)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=os.path.dirname(path))
  with os.fdopen(fd, "w") as f:
    json.dump(_naturally_sorted(data), f, indent=2)
  os.replace(tmp, path)


def copy_tree(tree: Any) -> Any:
  """A copy with its own buffers: train steps donate their state, so nothing may alias it."""
  return jax.tree.map(jnp.copy, tree)
