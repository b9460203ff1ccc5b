"""Task-Relative REINFORCE++ (TRR++): one baseline per (task type, role) pair."""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def task_relative_advantages(
    rewards: Sequence[float],
    task_types: Sequence[Hashable],
    roles: Sequence[Hashable],
    eps: float = 1e-6,
) -> np.ndarray:
  """`(r - mean) / (std + eps)` within each (task type, role) group, with the population std.

  Rewards, task types and roles are aligned per sequence (any order; groups need not be
  contiguous). A group of one, or one whose rewards are all equal, gets exactly 0.
  """
  r = np.asarray(rewards, np.float64)
  if r.ndim != 1:
    raise ValueError(f"rewards must be one-dimensional, got shape {r.shape}.")
  if not np.all(np.isfinite(r)):
    raise ValueError("rewards must be finite (found NaN or inf).")
  if not len(task_types) == len(roles) == r.size:
    raise ValueError(
        f"rewards, task_types and roles differ in length: {r.size}, "
        f"{len(task_types)}, {len(roles)}."
    )
  if eps < 0:
    raise ValueError(f"eps must be >= 0, got {eps}.")
  groups: dict[tuple, list[int]] = {}
  for k, key in enumerate(zip(task_types, roles)):
    groups.setdefault(key, []).append(k)
  advantages = np.zeros_like(r)
  for members in groups.values():
    values = r[members]
    if values.size < 2 or np.all(values == values[0]):
      continue
    centered = values - values.mean()
    advantages[members] = centered / (values.std() + eps)
  return advantages
