"""Re-measuring exported Solvers: iterations in order, bad input named, the loop's number, and how
far each iteration moved the weights."""

import os
import pathlib
import shutil

import numpy as np
import pytest
import safetensors.numpy

from experiments.toy_arith import data, heldout_eval
from experiments.toy_arith.build import COMMITTED_MODEL
from rzero_jax.models import load_pretrained


def _run_dir(root: pathlib.Path, solvers: dict[str, str]) -> str:
  """A run directory whose export/<iteration>/solver links to the given model directories."""
  for name, model in solvers.items():
    os.makedirs(root / "export" / name)
    os.symlink(model, root / "export" / name / "solver")
  return str(root)


def _perturbed_copy(path: pathlib.Path, shift: float) -> float:
  """Copies the base model to `path` with `shift` added to one tensor; returns the L2 change."""
  shutil.copytree(COMMITTED_MODEL, path)
  weights = safetensors.numpy.load_file(path / "model.safetensors")
  name = sorted(weights)[0]
  weights[name] = weights[name] + np.float32(shift)
  safetensors.numpy.save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
  return shift * float(np.sqrt(weights[name].size))


def test_exported_solvers_in_iteration_order(tmp_path):
  run = _run_dir(tmp_path, {f"iter_{i}": COMMITTED_MODEL for i in (10, 2, 1)})
  os.makedirs(tmp_path / "export" / "iter_3")  # an iteration without a Solver is skipped
  assert [name for name, _ in heldout_eval.exported_solvers(run)] == ["iter_1", "iter_2", "iter_10"]
  with pytest.raises(ValueError, match="No exported Solver"):
    heldout_eval.exported_solvers(str(tmp_path / "export"))


def test_weight_distance_is_the_l2_norm_of_the_change(tmp_path):
  expected = _perturbed_copy(tmp_path / "model", 0.5)
  base, moved = (
      load_pretrained(p, dtype="float32")[1] for p in (COMMITTED_MODEL, tmp_path / "model")
  )
  assert heldout_eval.weight_distance(base, moved) == pytest.approx(expected, rel=1e-4)


def test_base_model_accuracy_is_the_loops_measurement():
  accuracy = heldout_eval.greedy_accuracy(COMMITTED_MODEL, data.heldout_set(50))
  # Every demo run's summary.json recorded the base model's held-out accuracy on these 150
  # problems (50 per level), graded by the loop's own grader, as 31/150.
  assert accuracy[heldout_eval.ALL] == pytest.approx(31 / 150)
  assert sorted(accuracy) == [heldout_eval.ALL, 3, 4, 5]


def test_main_measures_each_iteration_from_the_previous_one(tmp_path, capsys):
  change = _perturbed_copy(tmp_path / "moved", 0.25)
  run = _run_dir(tmp_path / "run", {"iter_1": COMMITTED_MODEL, "iter_2": str(tmp_path / "moved")})
  heldout_eval.main([run, "--per_level", "2"])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("greedy accuracy on 6 held-out problems (2 per level)")
  assert [line.split()[1] for line in lines[1:]] == ["iter_1", "iter_2"]
  assert lines[1].endswith("moved 0.000")  # iteration 1 is the base model itself
  assert lines[2].endswith(f"moved {change:.3f}")  # iteration 2 against iteration 1


def test_main_rejects_bad_input(tmp_path, capsys):
  run = _run_dir(tmp_path / "run", {"iter_1": COMMITTED_MODEL})
  for argv in ([str(tmp_path / "missing")], [run, "--per_level", "0"]):
    with pytest.raises(SystemExit) as exit_info:
      heldout_eval.main(argv)
    assert exit_info.value.code == 2
  errors = capsys.readouterr().err
  assert "No exported Solver" in errors and "--per_level must be at least 1" in errors
