"""Small helpers of the self-play runs: errors, seeds, callables, copies."""

from __future__ import annotations

import hashlib
import importlib
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
  phase names are mapped through `PHASE_IDS` (any other string is an error: a misspelt phase
  would otherwise change a run's random numbers silently). Names from an open set, such as role
  names, enter as `name_id(name)`."""
  words = [seed]
  for p in parts:
    if isinstance(p, str):
      if p not in PHASE_IDS:
        raise ValueError(f"derive_seed: unknown phase {p!r} (one of {sorted(PHASE_IDS)}).")
      p = PHASE_IDS[p]
    words.append(int(p))
  return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def name_id(name: str) -> int:
  """A fixed seed word for any name, e.g. a role's: its `PHASE_IDS` index when it has one (so
  R-Zero's roles keep the seeds they always had), else 2**32 + the first 8 bytes of the name's
  SHA-256, the same in every process, host and Python version (unlike `hash()`, salted per
  process) and never equal to a table index."""
  if name in PHASE_IDS:
    return PHASE_IDS[name]
  return 2**32 + int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def resolve_callable(spec: str) -> Callable[..., Any]:
  """Imports "package.module:function"."""
  module, _, name = spec.partition(":")
  if not module or not name:
    raise RunError(f"Bad callable reference {spec!r}: write it as 'package.module:function'.")
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise RunError(f"Cannot import {spec!r}: {e}") from e


def copy_tree(tree: Any) -> Any:
  """A copy with its own buffers: train steps donate their state, so nothing may alias it."""
  return jax.tree.map(jnp.copy, tree)
