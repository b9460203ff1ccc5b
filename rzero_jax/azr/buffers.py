"""Absolute Zero task buffers: one per task type, seeded with the identity triplet.

Every valid proposal joins its type's buffer (oldest first, capped: the oldest leave first).
Proposers see K references sampled from the buffer; the solver's batch takes the newest tasks
(those added at a given step) and fills up uniformly from the whole buffer. Sampling is
deterministic given a numpy Generator (or a seed). The state is JSON, saved with checkpoints.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np

from rzero_jax.azr.tasks import (
    TASK_TYPES,
    InductionTask,
    Task,
    Triplet,
    check_task_type,
    identity_task,
)
from rzero_jax.io import atomic_json

DEFAULT_CAP = 16384
NUM_REFERENCES = 6
SEED_STEP = -1
STATE_VERSION = 1

Rng = np.random.Generator | int


def _rng(rng: Rng) -> np.random.Generator:
  return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def task_to_dict(task: Task) -> dict[str, Any]:
  """A JSON-serialisable form of a task."""
  if isinstance(task, InductionTask):
    return {
        "program": task.program,
        "message": task.message,
        "pairs": [[i, o] for i, o in task.pairs],
    }
  if isinstance(task, Triplet):
    return {"program": task.program, "inputs": task.inputs, "output": task.output}
  raise TypeError(f"not a task: {type(task).__name__}")


def task_from_dict(data: dict[str, Any]) -> Task:
  """Inverse of `task_to_dict`; ValueError on a malformed entry."""
  try:
    if "pairs" in data:
      pairs = tuple((str(i), str(o)) for i, o in data["pairs"])
      return InductionTask(str(data["program"]), str(data["message"]), pairs)
    return Triplet(str(data["program"]), str(data["inputs"]), str(data["output"]))
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"malformed task entry ({type(e).__name__}: {e})") from None


class TaskBuffer:
  """The valid tasks of one type with the step at which each joined, oldest first."""

  def __init__(self, task_type: str, *, cap: int = DEFAULT_CAP, seed: bool = True):
    check_task_type(task_type)
    if not isinstance(cap, int) or cap < 1:
      raise ValueError(f"buffer cap must be an int >= 1, got {cap!r}.")
    self.task_type = task_type
    self.cap = cap
    self.tasks: list[Task] = []
    self.steps: list[int] = []
    self.total_added = 0
    if seed:
      self.add(identity_task(task_type), SEED_STEP)

  def __len__(self) -> int:
    return len(self.tasks)

  def add(self, task: Task, step: int) -> None:
    """Appends a valid task; the oldest leave when over the cap."""
    expected = InductionTask if self.task_type == "induction" else Triplet
    if not isinstance(task, expected):
      raise TypeError(
          f"the {self.task_type} buffer holds {expected.__name__}, " f"got {type(task).__name__}"
      )
    self.tasks.append(task)
    self.steps.append(int(step))
    self.total_added += 1
    if len(self.tasks) > self.cap:
      del self.tasks[: -self.cap], self.steps[: -self.cap]

  def extend(self, tasks: Iterable[Task], step: int) -> None:
    for task in tasks:
      self.add(task, step)

  def newest(self, step: int) -> list[Task]:
    """The tasks that joined at `step`, in the order they joined."""
    return [t for t, s in zip(self.tasks, self.steps) if s == step]

  def references(self, rng: Rng, k: int = NUM_REFERENCES) -> list[Task]:
    """Up to `k` distinct tasks sampled uniformly (K references for a proposer prompt)."""
    if k < 0:
      raise ValueError(f"k must be >= 0, got {k}.")
    if not self.tasks or k == 0:
      return []
    picks = _rng(rng).choice(len(self.tasks), size=min(k, len(self.tasks)), replace=False)
    return [self.tasks[i] for i in picks]

  def sample(self, rng: Rng, n: int) -> list[Task]:
    """`n` tasks drawn uniformly with replacement."""
    if n < 0:
      raise ValueError(f"n must be >= 0, got {n}.")
    if n == 0:
      return []
    if not self.tasks:
      raise ValueError(f"the {self.task_type} buffer is empty.")
    return [self.tasks[i] for i in _rng(rng).integers(0, len(self.tasks), size=n)]

  def solver_batch(self, rng: Rng, n: int, step: int | None = None) -> list[Task]:
    """`n` tasks for the solver: those that joined at `step` (the newest `n` if more), then
    uniform draws from the whole buffer to fill up."""
    newest = self.newest(step)[-n:] if step is not None and n > 0 else []
    return newest + self.sample(rng, n - len(newest))

  def to_state(self) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "task_type": self.task_type,
        "cap": self.cap,
        "total_added": self.total_added,
        "entries": [{"step": s, "task": task_to_dict(t)} for t, s in zip(self.tasks, self.steps)],
    }

  @classmethod
  def from_state(cls, state: dict[str, Any]) -> "TaskBuffer":
    """Inverse of `to_state`; ValueError with one line on a malformed state."""
    try:
      if state.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported buffer state version {state.get('version')!r}")
      buffer = cls(state["task_type"], cap=int(state["cap"]), seed=False)
      for entry in state["entries"]:
        buffer.add(task_from_dict(entry["task"]), int(entry["step"]))
      buffer.total_added = int(state["total_added"])
    except (KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"malformed buffer state ({type(e).__name__}: {e})") from None
    return buffer


class TaskBuffers:
  """The three buffers (``buffers["deduction"]``...) of one run."""

  def __init__(self, *, cap: int = DEFAULT_CAP, seed: bool = True):
    self.buffers = {t: TaskBuffer(t, cap=cap, seed=seed) for t in TASK_TYPES}

  def __getitem__(self, task_type: str) -> TaskBuffer:
    check_task_type(task_type)
    return self.buffers[task_type]

  def sizes(self) -> dict[str, int]:
    return {t: len(b) for t, b in self.buffers.items()}

  def seeded(self, n: int) -> bool:
    """Whether every buffer holds at least `n` valid tasks (the end of seeding)."""
    return all(len(b) >= n for b in self.buffers.values())

  def sample_programs(self, rng: Rng, n: int) -> list[str]:
    """`n` programs drawn uniformly from the deduction and abduction buffers (for induction
    proposals)."""
    pool = self.buffers["deduction"].tasks + self.buffers["abduction"].tasks
    if n > 0 and not pool:
      raise ValueError("no programs to sample: the deduction and abduction buffers are empty.")
    return [pool[i].program for i in _rng(rng).integers(0, len(pool), size=max(n, 0))]

  def to_state(self) -> dict[str, Any]:
    return {t: b.to_state() for t, b in self.buffers.items()}

  @classmethod
  def from_state(cls, state: dict[str, Any]) -> "TaskBuffers":
    if not isinstance(state, dict) or sorted(state) != sorted(TASK_TYPES):
      raise ValueError(f"malformed buffers state: expected the keys {', '.join(TASK_TYPES)}")
    buffers = cls(seed=False)
    for t in TASK_TYPES:
      buffer = TaskBuffer.from_state(state[t])
      if buffer.task_type != t:
        raise ValueError(f"malformed buffers state: the {t} entry holds {buffer.task_type}")
      buffers.buffers[t] = buffer
    return buffers

  def save(self, path: str) -> None:
    """Writes the state as JSON atomically (a temporary file renamed over `path`)."""
    atomic_json(path, self.to_state(), indent=None)

  @classmethod
  def load(cls, path: str) -> "TaskBuffers":
    with open(path) as f:
      try:
        state = json.load(f)
      except ValueError as e:
        raise ValueError(f"{path}: not a buffers state ({e})") from None
    return cls.from_state(state)
