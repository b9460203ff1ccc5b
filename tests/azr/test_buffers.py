"""Absolute Zero task buffers: seeding, references, solver batches, cap, state round trip."""

import json

import numpy as np
import pytest

from rzero_jax.azr.buffers import TaskBuffer, TaskBuffers, task_from_dict, task_to_dict
from rzero_jax.azr.tasks import InductionTask, Triplet, identity_task, identity_triplet


def triplet(k: int) -> Triplet:
  return Triplet(f"def f(x):\n    return x + {k}", "1", str(1 + k))


def induction(k: int) -> InductionTask:
  return InductionTask(
      f"def f(x):\n    return x * {k}", f"times {k}", tuple((str(i), str(i * k)) for i in range(10))
  )


def test_every_buffer_starts_from_the_identity_triplet():
  buffers = TaskBuffers()
  assert buffers.sizes() == {"deduction": 1, "abduction": 1, "induction": 1}
  assert buffers["deduction"].tasks == [identity_triplet()] == buffers["abduction"].tasks
  assert buffers["induction"].tasks == [identity_task("induction")]
  assert identity_triplet().program == "def f(a):\n    return a"
  assert TaskBuffer("deduction", seed=False).tasks == []
  with pytest.raises(ValueError, match="Unknown task type 'inductive'"):
    buffers["inductive"]


def test_seeding_until_each_holds_n():
  buffers = TaskBuffers()
  for k in range(4):
    buffers["deduction"].add(triplet(k), step=-1)
    buffers["abduction"].add(triplet(k), step=-1)
  assert not buffers.seeded(5)
  for k in range(3):
    buffers["induction"].add(induction(k), step=-1)
  assert not buffers.seeded(5) and buffers.seeded(4)
  buffers["induction"].add(induction(9), step=-1)
  assert buffers.seeded(5)


def test_references_are_k_distinct_and_deterministic():
  buffer = TaskBuffer("deduction")
  buffer.extend([triplet(k) for k in range(20)], step=0)
  refs = buffer.references(np.random.default_rng(3))
  assert len(refs) == 6 and len(set(refs)) == 6
  assert refs == buffer.references(np.random.default_rng(3)) == buffer.references(3)
  assert buffer.references(np.random.default_rng(4)) != refs
  assert TaskBuffer("abduction").references(0) == [identity_triplet()]  # fewer than K
  assert buffer.references(0, k=0) == []


def test_solver_batch_takes_the_newest_then_fills_uniformly():
  buffer = TaskBuffer("deduction")
  buffer.extend([triplet(k) for k in range(10)], step=0)
  buffer.extend([triplet(k) for k in range(100, 103)], step=1)
  batch = buffer.solver_batch(np.random.default_rng(0), 8, step=1)
  assert batch[:3] == [triplet(100), triplet(101), triplet(102)] and len(batch) == 8
  assert all(t in buffer.tasks for t in batch[3:])
  assert batch == buffer.solver_batch(np.random.default_rng(0), 8, step=1)
  assert buffer.solver_batch(0, 2, step=1) == [triplet(101), triplet(102)]  # newest n
  assert buffer.solver_batch(0, 0, step=1) == []
  assert len(buffer.solver_batch(0, 5)) == 5  # no step: all uniform
  counts = np.zeros(len(buffer))
  for t in buffer.solver_batch(np.random.default_rng(1), 14000, step=None):
    counts[buffer.tasks.index(t)] += 1
  assert counts.min() > 800 and counts.max() < 1200  # uniform over 14 tasks (~1000 each)


def test_cap_drops_the_oldest():
  buffer = TaskBuffer("abduction", cap=3)
  buffer.extend([triplet(k) for k in range(5)], step=2)
  assert buffer.tasks == [triplet(2), triplet(3), triplet(4)]
  assert buffer.steps == [2, 2, 2] and buffer.total_added == 6
  with pytest.raises(ValueError, match="cap must be an int >= 1"):
    TaskBuffer("abduction", cap=0)
  with pytest.raises(TypeError, match="holds InductionTask"):
    TaskBuffer("induction").add(triplet(0), 0)


def test_sample_programs_for_induction():
  buffers = TaskBuffers()
  buffers["deduction"].add(triplet(1), 0)
  programs = buffers.sample_programs(np.random.default_rng(0), 50)
  assert set(programs) == {identity_triplet().program, triplet(1).program}
  assert programs == buffers.sample_programs(np.random.default_rng(0), 50)
  with pytest.raises(ValueError, match="no programs"):
    TaskBuffers(seed=False).sample_programs(0, 1)


def test_state_round_trip(tmp_path):
  buffers = TaskBuffers(cap=50)
  buffers["deduction"].extend([triplet(k) for k in range(3)], step=4)
  buffers["induction"].add(induction(3), step=5)
  state = buffers.to_state()
  restored = TaskBuffers.from_state(json.loads(json.dumps(state)))
  assert restored.to_state() == state
  assert restored["induction"].tasks[-1] == induction(3)
  path = tmp_path / "run" / "buffers.json"
  buffers.save(str(path))
  loaded = TaskBuffers.load(str(path))
  assert loaded.to_state() == state and loaded["deduction"].cap == 50
  rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
  assert loaded["deduction"].solver_batch(rng_a, 6, 4) == buffers["deduction"].solver_batch(
      rng_b, 6, 4
  )
  assert [p.name for p in path.parent.iterdir()] == ["buffers.json"]


def test_bad_states_give_one_line_errors(tmp_path):
  state = TaskBuffers().to_state()
  with pytest.raises(ValueError, match="expected the keys"):
    TaskBuffers.from_state({"deduction": state["deduction"]})
  swapped = dict(state, abduction=state["deduction"])
  with pytest.raises(ValueError, match="the abduction entry holds deduction"):
    TaskBuffers.from_state(swapped)
  with pytest.raises(ValueError, match="version"):
    TaskBuffer.from_state(dict(state["deduction"], version=99))
  broken = dict(state["deduction"], entries=[{"step": 0, "task": {"program": "p"}}])
  with pytest.raises(ValueError, match="malformed task entry"):
    TaskBuffer.from_state(broken)
  with pytest.raises(ValueError, match="malformed buffer state"):
    TaskBuffer.from_state({"version": 1})
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="not a buffers state"):
    TaskBuffers.load(str(bad))


def test_task_dict_round_trip():
  for task in (triplet(1), induction(2), identity_task("induction")):
    assert task_from_dict(json.loads(json.dumps(task_to_dict(task)))) == task
  with pytest.raises(TypeError, match="not a task"):
    task_to_dict("x")
