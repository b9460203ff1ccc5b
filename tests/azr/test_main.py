"""The launcher runs Absolute Zero from the config: a tiny run end to end, kill -9 and rerun gives
the identical summary, and bad configs fail with one line."""

import os

import pytest

from experiments.toy_code.build import ensure_base_model
from tests import support


@pytest.fixture(scope="module")
def base_model():
  return ensure_base_model(support.CACHE)


@pytest.mark.slow
def test_tiny_azr_run_kill_and_resume_gives_the_same_summary(tmp_path, base_model):
  flags = [*support.AZR_TINY, f"--config.model_path={base_model}"]
  straight = tmp_path / "straight"
  code, out = support.run(straight, *flags)
  assert code == 0, out
  summary = support.summary(straight)
  assert summary["config"]["algorithm"] == "azr"
  assert set(summary["heldout_accuracy"]) == {"base", "step_2"}
  for point in summary["heldout_accuracy"].values():
    assert set(point) == {"deduction", "abduction", "induction", "mean"}
  assert len(summary["steps"]) == 2 and summary["seeding"]["rounds"] == 1
  assert set(summary["buffer_sizes"]) == {"deduction", "abduction", "induction"}
  assert "induction" in out and "mean" in out  # the final table
  for sub in ("checkpoints", "tb", "export/final/actor/model.safetensors"):
    assert os.path.exists(straight / sub), sub

  assert support.kill_and_resume(tmp_path / "killed", flags, min_step=2) == summary


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--config.tasks.no_such_field=3"], "no_such_field"),
        (["--config.algorithm=alphazero"], "config.algorithm must be one of"),
        (["--config.actor.updates_per_step=5"], "must divide"),
        (["--config.tasks.learnability_rollouts=0"], "learnability_rollouts must be >= 1"),
        (["--config.tasks.prompts=no.such.module"], "cannot import"),
        (["--strategy=challenger:fsdp"], "Bad --strategy"),
        (["--config.model_path=/no/such/dir"], "does not exist"),
    ],
)
def test_bad_flags_fail_clearly(tmp_path, base_model, flags, message):
  model = [] if any("model_path" in f for f in flags) else [f"--config.model_path={base_model}"]
  code, out = support.run(tmp_path / "w", *support.AZR_TINY, *model, *flags, timeout=300)
  assert code != 0
  assert message in out
  assert "Traceback" not in out
  assert len(out.strip().splitlines()) <= 2  # the error (and a hint)
