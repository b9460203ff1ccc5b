"""The Absolute Zero loop as two processes joined by `jax.distributed` over loopback (2 x 1 CPU
devices), launched as users do: the same summary as one process with 2 devices. The executor's
decisions (validation, checks; deadlines make them timing-dependent) are taken once on process 0
and shared, so both processes train on the same buffers."""

import pytest

from experiments.toy_code.build import ensure_base_model
from tests import support

pytestmark = pytest.mark.slow  # end-to-end: `make test-all`


def test_two_processes_match_one(tmp_path):
  model = ensure_base_model(support.CACHE)
  flags = [*support.AZR_TINY, f"--config.model_path={model}", "--mesh=data:2"]
  one = tmp_path / "one"
  support.finish(support.launch_processes(one, flags, processes=1, devices=2, log_dir=tmp_path))
  reference = support.summary(one, "config")
  assert len(reference["steps"]) == 2 and reference["buffer_sizes"]["deduction"] > 0

  two = tmp_path / "two"
  outputs = support.finish(
      support.launch_processes(two, flags, processes=2, devices=2, log_dir=tmp_path)
  )
  assert support.summary(two, "config") == reference
  assert "held-out accuracy" in outputs[0] and "held-out accuracy" not in outputs[1]
  assert (two / "export/final/actor/model.safetensors").exists()
