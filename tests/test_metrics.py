"""MetricWriter: TensorBoard always; Weights & Biases only when config.wandb_project is set, and a
missing wandb package changes nothing but a one-line warning. Progress: its lines."""

import io
import sys
import types

import numpy as np
import pytest

from rzero_jax import metrics, report
from rzero_jax.metrics import MetricWriter
from rzero_jax.rzero.config import default_config


def test_wandb_is_off_by_default():
  assert default_config().wandb_project == ""


def test_wandb_project_set_but_package_missing(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
  with pytest.warns(UserWarning, match="wandb package is not installed") as caught:
    writer = MetricWriter(str(tmp_path), wandb_project="rzero")
  assert len(caught) == 1 and "\n" not in str(caught[0].message)
  writer.scalars(3, {"solver/reward": 0.5, "skipped": None, "nan": float("nan")})
  writer.histogram(3, "challenger/p_hat", np.array([0.3, 0.5]))
  writer.close()
  assert report.read_tb_scalars(str(tmp_path)) == {"solver/reward": [(3, 0.5)]}


def test_wandb_receives_the_scalars(tmp_path, monkeypatch):
  logged, calls = [], {}

  class FakeRun:

    def log(self, values, step):
      logged.append((step, values))

    def finish(self):
      calls["finished"] = True

  fake = types.ModuleType("wandb")
  fake.init = lambda **kwargs: calls.setdefault("init", kwargs) and FakeRun()
  fake.Histogram = lambda values: ("histogram", len(values))
  monkeypatch.setitem(sys.modules, "wandb", fake)
  writer = MetricWriter(str(tmp_path), wandb_project="rzero", wandb_config={"seed": 0})
  writer.scalars(1, {"challenger/reward": 0.25, "dropped": None})
  writer.histogram(1, "challenger/p_hat", [0.5, 0.25])
  writer.close()
  assert calls["init"]["project"] == "rzero" and calls["init"]["config"] == {"seed": 0}
  assert logged == [(1, {"challenger/reward": 0.25}), (1, {"challenger/p_hat": ("histogram", 2)})]
  assert calls["finished"]


def test_wandb_init_failure_is_a_warning(tmp_path, monkeypatch):
  fake = types.ModuleType("wandb")

  def init(**kwargs):
    raise RuntimeError("not logged in")

  fake.init = init
  monkeypatch.setitem(sys.modules, "wandb", fake)
  with pytest.warns(UserWarning, match="not logged in"):
    writer = MetricWriter(str(tmp_path), wandb_project="rzero")
  writer.scalars(0, {"a": 1.0})
  writer.close()


def test_disabled_writer_never_starts_wandb(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)
  MetricWriter(str(tmp_path), enabled=False, wandb_project="rzero").close()  # no warning


def test_progress_lines(monkeypatch):
  clock = iter([0.0, 2.0, 4.0, 4.5, 10.0])
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
  out = io.StringIO()
  progress = metrics.Progress("solver step", 4, start=1, stream=out)
  progress.update(loss=0.5, kept=3)
  progress.update(2)
  assert out.getvalue().splitlines() == [
      "solver step 2/4 [0:02<0:04, 0.50/s] loss=0.5 kept=3",
      "solver step 4/4 [0:04<0:00, 0.75/s]",
  ]
  quiet = metrics.Progress("x", 3, enabled=False, stream=out)
  quiet.update()
  assert quiet.done == 1 and len(out.getvalue().splitlines()) == 2


def test_progress_at_most_one_line_per_interval(monkeypatch):
  clock = iter([0.0, 1.0, 2.0, 3.5, 4.0, 5.0])
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
  out = io.StringIO()
  progress = metrics.Progress("eval completions", 5, stream=out, min_interval_s=2.0)
  for _ in range(5):  # at 1.0 (first), 2.0 (too soon), 3.5, 4.0 (too soon), 5.0 (the last)
    progress.update()
  assert [line.split(" [")[0] for line in out.getvalue().splitlines()] == [
      "eval completions 1/5",
      "eval completions 3/5",
      "eval completions 5/5",
  ]
