"""The launcher end to end: a tiny R-Zero run, kill-and-resume determinism, and clear errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.toy_arith.build import ensure_base_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The smoke demo made smaller still, so three runs fit in CI time.
TINY = [
    "--config=experiments/demo.py:smoke",
    "--config.challenger.prompts_per_step=8",
    "--config.challenger.prompts_per_update=8",
    "--config.challenger.train.micro_batch_size=32",
    "--config.dataset.num_candidates=32",
    "--config.solver.prompts_per_step=16",
    "--config.solver.prompts_per_update=16",
    "--config.checkpoint_every_steps=1",
]


@pytest.fixture(scope="module")
def base_model():
  return ensure_base_model(os.path.join(REPO, ".cache"))


def _env():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  env.pop("PYTEST_CURRENT_TEST", None)
  return env


def _launch(workdir, *flags):
  return subprocess.Popen(
      [sys.executable, "-m", "rzero_jax.main", f"--workdir={workdir}", *flags],
      cwd=REPO,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _run(workdir, *flags, timeout=600):
  """The launcher's exit code and output; a run that runs out of time is killed rather than left
  behind."""
  proc = _launch(workdir, *flags)
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
    pytest.fail(f"the run took more than {timeout} s:\n{out[-4000:]}")
  return proc.returncode, out


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  summary.pop("timing")
  return summary


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
      *TINY,
      f"--config.model_path={base_model}",
      "--config.eval.benchmarks=gsm8k",
      f"--config.eval.data_dir={_toy_gsm8k(tmp_path / 'bench')}",
  ]
  straight = tmp_path / "straight"
  code, out = _run(straight, *flags)
  assert code == 0, out
  summary = _summary(straight)
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

  killed = tmp_path / "killed"
  proc = _launch(killed, *flags)
  ckpt = killed / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    steps = [d for d in os.listdir(ckpt) if d.isdigit()] if ckpt.exists() else []
    if len(steps) >= 1 and max(map(int, steps)) >= 2:
      break
    time.sleep(0.2)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "summary.json").exists()
  code, out = _run(killed, *flags)
  assert code == 0, out
  assert "resuming from checkpoint" in out
  assert _summary(killed) == summary


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
  code, out = _run(tmp_path / "w", *TINY, *model, *flags, timeout=300)
  assert code != 0
  assert message in out
  assert "Traceback" not in out


def test_missing_config_file_fails_clearly(tmp_path):
  code, out = _run(tmp_path / "w", "--config=experiments/no_such_config.py", timeout=300)
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
      *TINY[1:],
      f"--config.model_path={base_model}",
      *lora,
      "--config.verifier.lora.rank=4",
      "--config.verifier.train.learning_rate=1e-3",
  ]
  straight = tmp_path / "straight"
  code, out = _run(straight, *flags)
  assert code == 0, out
  summary = _summary(straight)
  assert summary["config"]["solver"]["lora"]["rank"] == 16
  assert summary["config"]["verifier"]["enabled"] and summary["config"]["verifier"]["lora"]["rank"]
  record = summary["iterations"][0]
  assert record["verifier_targets"] > 0 and "band_questions" in record
  assert set(summary["pseudo_label_accuracy"]) == {"iter_1"}

  killed = tmp_path / "killed"
  proc = _launch(killed, *flags)
  ckpt = killed / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    steps = [d for d in os.listdir(ckpt) if d.isdigit()] if ckpt.exists() else []
    if steps and max(map(int, steps)) >= 4:  # inside the Solver phase, after the Verifier's
      break
    time.sleep(0.2)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  code, out = _run(killed, *flags)
  assert code == 0, out
  assert "resuming from checkpoint" in out
  assert _summary(killed) == summary

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
