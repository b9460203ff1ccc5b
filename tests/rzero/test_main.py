"""The launcher end to end: a tiny R-Zero run, kill-and-resume determinism, and clear errors."""

import json
import os

import pytest

from experiments.toy_arith.build import ensure_base_model
from tests import support


@pytest.fixture(scope="module")
def base_model():
  return ensure_base_model(support.CACHE)


def _toy_gsm8k(directory) -> str:
  """A local GSM8K-format file of toy-arithmetic problems (gold after '####')."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "gsm8k.jsonl"), "w") as f:
    for a, b in [(3, 4), (12, 30), (7, 8), (25, 5)]:
      f.write(json.dumps({"question": f"What is {a} + {b}?", "answer": f"... #### {a + b}"}) + "\n")
  return str(directory)


@pytest.mark.slow
def test_tiny_run_kill_and_resume_gives_the_same_summary(tmp_path, base_model):
  flags = [
      *support.RZERO_TINY,
      f"--config.model_path={base_model}",
      "--config.eval.benchmarks=gsm8k",
      f"--config.eval.data_dir={_toy_gsm8k(tmp_path / 'bench')}",
  ]
  straight = tmp_path / "straight"
  code, out = support.run(straight, *flags)
  assert code == 0, out
  summary = support.summary(straight)
  assert set(summary["heldout_accuracy"]) == {"base", "iter_1"}
  assert 0.0 <= summary["heldout_accuracy"]["iter_1"] <= 1.0
  assert "held-out acc" in out  # the final table
  for point in ("base", "iter_1"):  # rzero_jax.eval after each iteration
    assert 0.0 <= summary["benchmarks"][point]["eval/gsm8k"] <= 1.0
  for sub in (
      "checkpoints",
      "tb",
      "data/iter_1.jsonl",
      "export/iter_1/solver/config.json",
      "export/iter_1/challenger/model.safetensors",
  ):
    assert os.path.exists(straight / sub), sub
  records = [json.loads(line) for line in open(straight / "data" / "iter_1.jsonl")]
  for r in records:
    assert {"question", "label", "p_hat", "answers"} <= set(r) and 0.25 <= r["p_hat"] <= 0.75

  assert support.kill_and_resume(tmp_path / "killed", flags, min_step=2) == summary


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--config.challenger.no_such_field=3"], "no_such_field"),
        (["--mesh=data:3"], "needs 3 devices"),
        (["--config.model_path=/no/such/dir"], "does not exist"),
        (["--strategy=diagonal"], "Unknown sharding strategy 'diagonal'"),
        (["--config.challenger.train.learning_rte=1.0"], "learning_rte"),
        (["--config.solver.prompts_per_update=7"], "must be a multiple"),
        (["--config.challenger.prompts_per_update=0"], "prompts_per_update must be >= 1"),
        (["--config.solver.group_size=1"], "group_size must be >= 2"),
        (["--config.eval.benchmarks=math500,gsm9k"], "gsm9k"),
        (
            ["--config.challenger.max_prompt_tokens=4"],
            "longer than config.challenger.max_prompt_tokens (4)",
        ),
    ],
)
def test_bad_flags_fail_clearly(tmp_path, base_model, flags, message):
  model = [] if any("model_path" in f for f in flags) else [f"--config.model_path={base_model}"]
  code, out = support.run(tmp_path / "w", *support.RZERO_TINY, *model, *flags, timeout=300)
  assert code != 0
  assert message in out
  assert "Traceback" not in out


def test_missing_config_file_fails_clearly(tmp_path):
  code, out = support.run(tmp_path / "w", "--config=experiments/no_such_config.py", timeout=300)
  assert code == 2 and "no_such_config.py" in out and "Traceback" not in out


@pytest.mark.slow
def test_three_lora_roles_resume_and_export_merged_models(tmp_path, base_model):
  """Challenger, Solver and the Verifier (`demo.py:verifier_smoke`) on LoRA adapters over one
  frozen base: every role's state is checkpointed and exported, kill-and-resume inside the Solver
  phase (its adapters are the reference) gives the same summary, and the merged exports load in
  transformers as models that differ from the base."""
  lora = [
      f"--config.{role}.{field}"
      for role in ("challenger", "solver")
      for field in ("lora.rank=16", "lora.alpha=32", "train.learning_rate=1e-3")
  ]
  flags = [
      "--config=experiments/demo.py:verifier_smoke",
      *support.RZERO_TINY[1:],
      f"--config.model_path={base_model}",
      *lora,
      "--config.verifier.lora.rank=4",
      "--config.verifier.train.learning_rate=1e-3",
  ]
  straight = tmp_path / "straight"
  code, out = support.run(straight, *flags)
  assert code == 0, out
  summary = support.summary(straight)
  assert summary["config"]["solver"]["lora"]["rank"] == 16
  assert summary["config"]["verifier"]["enabled"] and summary["config"]["verifier"]["lora"]["rank"]
  record = summary["iterations"][0]
  assert record["verifier_targets"] > 0 and "band_questions" in record
  assert set(summary["pseudo_label_accuracy"]) == {"iter_1"}

  # Killed inside the Solver phase, after the Verifier's.
  assert support.kill_and_resume(tmp_path / "killed", flags, min_step=4) == summary

  import numpy as np
  import torch
  from transformers import AutoModelForCausalLM

  tokens = torch.tensor([[1, 5, 9, 13, 17, 21]])
  with torch.no_grad():
    base = AutoModelForCausalLM.from_pretrained(base_model).eval()(tokens).logits.numpy()
    for role in ("challenger", "solver", "verifier"):
      path = straight / "export" / "iter_1" / role
      logits = AutoModelForCausalLM.from_pretrained(path).eval()(tokens).logits.numpy()
      assert np.all(np.isfinite(logits)) and np.abs(logits - base).max() > 1e-4, role
