"""`python -m rzero_jax.report`: figures and a page from a real (tiny) run directory, finished or
still going, and from an Absolute Zero summary."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

from experiments.toy_arith.build import ensure_base_model  # noqa: E402
from rzero_jax import report  # noqa: E402
from tests.support import CACHE, REPO, RZERO_TINY, cpu_env  # noqa: E402


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """A finished tiny R-Zero run (the smoke demo made smaller, as in tests/rzero/test_main.py),
  with Weights & Biases asked for: without the wandb package that is one warning and nothing else.
  """
  base = ensure_base_model(CACHE)
  workdir = tmp_path_factory.mktemp("report") / "run"
  env = cpu_env(WANDB_MODE="offline", WANDB_DIR=str(workdir.parent))
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "rzero_jax.main",
          f"--workdir={workdir}",
          *RZERO_TINY,
          f"--config.model_path={base}",
          "--config.wandb_project=rzero_test",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  try:
    import wandb  # noqa: F401
  except ImportError:
    assert "wandb package is not installed" in proc.stderr
  return workdir


def _pngs(directory):
  return sorted(f for f in os.listdir(directory) if f.endswith(".png"))


@pytest.mark.slow
def test_cli_on_a_finished_run_writes_figures_and_a_page(smoke_run):
  proc = subprocess.run(
      [sys.executable, "-m", "rzero_jax.report", f"--workdir={smoke_run}"],
      cwd=REPO,
      env=cpu_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  out = smoke_run / "report"
  pngs = _pngs(out)
  assert {"accuracy.png", "rewards.png", "p_hat.png", "kept.png", "timing.png"} <= set(pngs)
  for name in pngs:
    with open(out / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out / name) > 5000
  page = (out / "index.md").read_text()
  assert "status: finished" in page and "| base |" in page
  for name in pngs:
    assert f"]({name})" in page
  assert all(f"src='{name}'" in (out / "index.html").read_text() for name in pngs)
  summary = json.loads((smoke_run / "summary.json").read_text())
  kept = summary["iterations"][0]["kept"]
  assert f"| 1 | {kept} |" in page


def test_a_run_that_is_still_going(smoke_run, tmp_path):
  """No summary.json yet: the newest checkpoint's loop position (mid Solver phase here) gives
  the finished iterations and the rewards so far; before any checkpoint, TensorBoard does."""
  running = tmp_path / "running"
  shutil.copytree(smoke_run, running, ignore=shutil.ignore_patterns("report"))
  os.remove(running / "summary.json")
  steps = sorted(int(d) for d in os.listdir(running / "checkpoints") if d.isdigit())
  shutil.rmtree(running / "checkpoints" / str(steps[-1]))  # back to the save inside the phase
  result = report.make_report(str(running))
  run = result["run"]
  assert run["source"] == "checkpoint meta" and not run["finished"]
  assert run["current"]["challenger_reward"] and run["base_heldout_accuracy"] is not None
  assert len(result["figures"]) >= 3
  assert "timing.png" not in _pngs(running / "report")  # only a finished run has timing
  assert "(running)" in open(result["page"]).read()

  shutil.rmtree(running / "checkpoints")
  shutil.rmtree(running / "report")
  result = report.make_report(str(running))
  assert result["run"]["source"] == "TensorBoard events"
  assert len(result["run"]["current"]["challenger_reward"]) == 2
  assert "Rewards per step" in result["figures"]

  # a TensorBoard file cut in the middle of a record (being written) still reads
  event_file = next((running / "tb").iterdir())
  data = event_file.read_bytes()
  event_file.write_bytes(data[: len(data) - 7])
  assert report.read_tb_scalars(str(running / "tb"))["challenger/reward"]


def test_azr_summary(tmp_path):
  steps = [
      {
          "valid_rate": 0.5 + 0.1 * i,
          "proposer_reward": 0.1 * i,
          "solver_reward": -0.2,
          "solver_accuracy": 0.3,
          **{f"{t}/valid_rate": 0.4 + 0.1 * i for t in report.TASK_TYPES},
          **{f"{t}/buffer_size": 8 + 4 * i for t in report.TASK_TYPES},
      }
      for i in range(3)
  ]
  del steps[1]["induction/buffer_size"]  # keys may be missing: skipped, not an error
  acc = {"deduction": 0.2, "abduction": 0.1, "induction": 0.0, "mean": 0.1}
  (tmp_path / "summary.json").write_text(
      json.dumps(
          {
              "heldout_accuracy": {"base": acc, "step_3": dict(acc, deduction=0.4, mean=0.17)},
              "steps": steps,
              "seeding": {"rounds": 1, "valid_rate": [], "buffer_sizes": None},
              "timing": {"sampling_s": 3.0, "training_s": 2.0, "grading_s": 1.0, "total_s": 8.0},
          }
      )
  )
  result = report.make_report(str(tmp_path))
  assert result["run"]["algorithm"] == "azr"
  assert {
      "azr_accuracy.png",
      "azr_valid_rate.png",
      "azr_buffers.png",
      "azr_rewards.png",
      "timing.png",
  } <= set(_pngs(tmp_path / "report"))
  assert "| step_3 | 0.400 |" in open(result["page"]).read()


def test_empty_and_missing_directories(tmp_path):
  result = report.make_report(str(tmp_path))
  assert result["figures"] == {} and "No figures yet" in open(result["page"]).read()
  assert report.main([f"--workdir={tmp_path / 'nope'}"]) == 2
