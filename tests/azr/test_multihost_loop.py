"""The Absolute Zero loop as two processes joined by `jax.distributed` over loopback (2 x 1 CPU
devices), launched as users do: the same summary as one process with 2 devices. The executor's
decisions (validation, checks; deadlines make them timing-dependent) are taken once on process 0
and shared, so both processes train on the same buffers."""

import os

import pytest

from experiments.toy_code.build import ensure_base_model
from tests.azr.test_main import TINY
from tests.rzero.test_multihost_loop import REPO, _finish, _launch, _summary

pytestmark = pytest.mark.slow  # end-to-end: `make test-all`


def test_two_processes_match_one(tmp_path):
  model = ensure_base_model(os.path.join(REPO, ".cache"))
  flags = [*TINY, f"--config.model_path={model}", "--mesh=data:2"]
  one = tmp_path / "one"
  _finish(_launch(one, flags, num_processes=1, devices_per_process=2, log_dir=tmp_path))
  reference = _summary(one)
  assert len(reference["steps"]) == 2 and reference["buffer_sizes"]["deduction"] > 0

  two = tmp_path / "two"
  outputs = _finish(_launch(two, flags, num_processes=2, devices_per_process=1, log_dir=tmp_path))
  assert _summary(two) == reference
  assert "held-out accuracy" in outputs[0] and "held-out accuracy" not in outputs[1]
  assert (two / "export/final/actor/model.safetensors").exists()
