"""Re-measuring exported Solvers: iterations in order, bad run dirs named, the loop's number."""

import os
import shutil

import numpy as np
import pytest
import safetensors.numpy

from experiments.toy_arith import data, heldout_eval
from experiments.toy_arith.build import COMMITTED_MODEL


def _run_dir(tmp_path, iterations):
  for name in iterations:
    os.makedirs(tmp_path / "export" / name)
    os.symlink(COMMITTED_MODEL, tmp_path / "export" / name / "solver")
  return str(tmp_path)


def test_exported_solvers_in_iteration_order(tmp_path):
  run = _run_dir(tmp_path, ["iter_10", "iter_2", "iter_1"])
  os.makedirs(tmp_path / "export" / "iter_3")  # an iteration without a Solver is skipped
  assert [name for name, _ in heldout_eval.exported_solvers(run)] == ["iter_1", "iter_2", "iter_10"]
  with pytest.raises(ValueError, match="No exported Solver"):
    heldout_eval.exported_solvers(str(tmp_path / "export"))


def test_weight_distance_is_the_l2_norm_of_the_change(tmp_path):
  copy = tmp_path / "model"
  shutil.copytree(COMMITTED_MODEL, copy)
  weights = safetensors.numpy.load_file(copy / "model.safetensors")
  name = sorted(weights)[0]
  weights[name] = weights[name] + np.float32(0.5)
  safetensors.numpy.save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
  expected = 0.5 * np.sqrt(weights[name].size)
  assert heldout_eval.weight_distance(COMMITTED_MODEL, str(copy)) == pytest.approx(expected, 1e-4)
  assert heldout_eval.weight_distance(str(copy), str(copy)) == 0.0


def test_base_model_accuracy_is_the_loops_measurement():
  accuracy = heldout_eval.greedy_accuracy(COMMITTED_MODEL, data.heldout_set(50))
  # Every demo run's summary.json recorded the base model's held-out accuracy on these 150
  # problems (50 per level) as 31/150.
  assert accuracy[0] == pytest.approx(31 / 150)
  assert accuracy[0] == pytest.approx(sum(accuracy[level] for level in (3, 4, 5)) / 3)


def test_main_prints_every_iteration_and_rejects_bad_input(tmp_path, capsys):
  run = _run_dir(tmp_path / "run", ["iter_1", "iter_2"])
  heldout_eval.main([run, "--per_level", "2"])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("greedy accuracy on 6 held-out problems (2 per level)")
  assert [line.split()[1] for line in lines[1:]] == ["iter_1", "iter_2"]
  assert lines[1].split()[2:] == lines[2].split()[2:]  # the same model twice
  assert lines[1].endswith("moved 0.000")  # the base model itself
  for argv in ([str(tmp_path / "missing")], [run, "--per_level", "0"]):
    with pytest.raises(SystemExit) as exit_info:
      heldout_eval.main(argv)
    assert exit_info.value.code == 2
  assert "No exported Solver" in capsys.readouterr().err
