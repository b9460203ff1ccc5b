"""The R-Zero loop as two processes joined by `jax.distributed` over loopback (2 x 2 CPU devices),
launched exactly as users do (the CLI with RZERO_* variables): the same summary as one process
with 4 devices, also after both processes are killed and rerun."""

import pytest

from experiments.toy_arith.build import ensure_base_model
from tests import support

pytestmark = pytest.mark.slow  # end-to-end: `make test-all`


@pytest.fixture(scope="module")
def flags():
  model = ensure_base_model(support.CACHE)
  # KL on (the default coefficient), so reference log-probs cross the device/host boundary too.
  return [
      *support.RZERO_TINY,
      f"--config.model_path={model}",
      "--config.solver.train.kl_coef=0.01",
      "--config.challenger.train.kl_coef=0.01",
      "--mesh=data:4",
  ]


def _summary(workdir):
  return support.summary(workdir, "config")  # config differs only in mesh-independent provenance


def test_two_processes_match_one_and_resume_after_kill(tmp_path, flags):
  one = tmp_path / "one"
  support.finish(support.launch_processes(one, flags, processes=1, devices=4, log_dir=tmp_path))
  reference = _summary(one)
  assert reference["iterations"][0]["kept"] > 0

  two = tmp_path / "two"
  outputs = support.finish(
      support.launch_processes(two, flags, processes=2, devices=4, log_dir=tmp_path)
  )
  assert _summary(two) == reference
  assert "held-out acc" in outputs[0] and "held-out" not in outputs[1]  # process 0 reports
  for sub in ("data/iter_1.jsonl", "export/iter_1/solver/model.safetensors"):
    assert (two / sub).exists(), sub

  killed = tmp_path / "killed"
  procs = support.launch_processes(killed, flags, processes=2, devices=4, log_dir=tmp_path)
  support.kill_after_checkpoint([p for p, _ in procs], killed, min_step=3)
  assert not (killed / "summary.json").exists()
  outputs = support.finish(
      support.launch_processes(killed, flags, processes=2, devices=4, log_dir=tmp_path)
  )
  assert "resuming from checkpoint" in outputs[0]
  assert _summary(killed) == reference
