"""The shared stage bookkeeping (`Runner.run_steps`, `Runner.end_stage`) on a stand-in run: which
steps it runs, what it files and when it checkpoints."""

import types

import ml_collections
import pytest

from rzero_jax.selfplay.runner import Runner


class _Writer:

  def __init__(self):
    self.scalars_at = []

  def scalars(self, step, values):
    self.scalars_at.append((step, dict(values)))


def _run(every):
  saves = []
  run = types.SimpleNamespace(
      config=ml_collections.ConfigDict({"checkpoint_every_steps": every}),
      writer=_Writer(),
      main=False,
      saves=saves,
      save=lambda meta: saves.append(meta["step"]),
      log=lambda message: None,
  )
  return run


@pytest.mark.parametrize(
    "start, save_last, saved",
    [(0, False, [2, 4, 6]), (0, True, [2, 4, 6, 7]), (5, False, [6]), (7, True, [])],
)
def test_run_steps_resumes_at_meta_and_saves_every_n_steps(start, save_last, saved):
  run, meta, ran = _run(every=2), {"step": start, "rewards": []}, []

  def step_fn(step):
    ran.append(step)
    return {"reward": float(step)}

  Runner.run_steps(
      run,
      "step",
      7,
      step_fn,
      meta=meta,
      tb_prefix="role",
      tb_step=lambda step: 100 + step,
      record=lambda step, m: meta["rewards"].append((step, meta["step"], m["reward"])),
      save_last=save_last,
  )
  assert ran == list(range(start, 7)) and meta["step"] == 7
  assert meta["rewards"] == [(s, s + 1, float(s)) for s in range(start, 7)]  # filed after the step
  assert run.writer.scalars_at == [(100 + s, {"role/reward": float(s)}) for s in range(start, 7)]
  assert run.saves == saved


def test_run_steps_without_meta_starts_at_zero_and_never_saves():
  run, ran = _run(every=1), []
  Runner.run_steps(run, "fold", 3, lambda s: ran.append(s) or {"loss": 0.5})
  assert ran == [0, 1, 2] and run.saves == []
  assert run.writer.scalars_at == [(s, {"loss": 0.5}) for s in range(3)]  # no prefix


def test_end_stage_writes_numbers_moves_the_position_and_saves():
  run, meta = _run(every=1), {"step": 4, "phase": "a"}
  Runner.end_stage(
      run, meta, tb_step=9, tb_prefix="dataset", scalars={"kept": 3, "note": "x"}, phase="b", step=0
  )
  assert run.writer.scalars_at == [(9, {"dataset/kept": 3})]
  assert (meta["phase"], meta["step"], run.saves) == ("b", 0, [0])
