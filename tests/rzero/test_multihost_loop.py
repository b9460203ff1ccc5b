"""The R-Zero loop as two processes joined by `jax.distributed` over loopback (2 x 2 CPU devices),
launched exactly as users do (the CLI with RZERO_* variables): the same summary as one process
with 4 devices, also after both processes are killed and rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.toy_arith.build import ensure_base_model
from tests.multihost_worker import free_port
from tests.rzero.test_main import TINY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 600


pytestmark = pytest.mark.slow  # end-to-end: `make test-all`


@pytest.fixture(scope="module")
def flags():
  model = ensure_base_model(os.path.join(REPO, ".cache"))
  # KL on (the default coefficient), so reference log-probs cross the device/host boundary too.
  return [
      *TINY,
      f"--config.model_path={model}",
      "--config.solver.train.kl_coef=0.01",
      "--config.challenger.train.kl_coef=0.01",
      "--mesh=data:4",
  ]


def _launch(workdir, flags, *, num_processes, devices_per_process, log_dir):
  address = f"127.0.0.1:{free_port()}"
  procs = []
  for i in range(num_processes):
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(
        JAX_PLATFORMS="cpu",
        PYTHONPATH=REPO,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
    )
    if num_processes > 1:
      env.update(
          RZERO_COORDINATOR=address, RZERO_NUM_PROCESSES=str(num_processes), RZERO_PROCESS_ID=str(i)
      )
    log = open(os.path.join(log_dir, f"p{i}.{time.monotonic_ns()}.log"), "w+")
    procs.append(
        (
            subprocess.Popen(
                [sys.executable, "-m", "rzero_jax.main", f"--workdir={workdir}", *flags],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    )
  return procs


def _finish(procs):
  deadline = time.time() + TIMEOUT_S
  try:
    for p, _ in procs:
      p.wait(timeout=max(1.0, deadline - time.time()))
  except subprocess.TimeoutExpired:
    pass
  outputs = []
  for p, log in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
    log.seek(0)
    outputs.append(log.read())
    log.close()
  for (p, _), out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  return outputs


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  summary.pop("timing")
  summary.pop("config")  # differs only in the mesh-independent fields' provenance
  return summary


def _kill_after_checkpoint(procs, ckpt_dir, min_step):
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline and all(p.poll() is None for p, _ in procs):
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
    if steps and max(steps) >= min_step:
      break
    time.sleep(0.2)
  assert all(p.poll() is None for p, _ in procs), "a process ended before it could be killed"
  for p, log in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
    log.close()


def test_two_processes_match_one_and_resume_after_kill(tmp_path, flags):
  one = tmp_path / "one"
  _finish(_launch(one, flags, num_processes=1, devices_per_process=4, log_dir=tmp_path))
  reference = _summary(one)
  assert reference["iterations"][0]["kept"] > 0

  two = tmp_path / "two"
  outputs = _finish(_launch(two, flags, num_processes=2, devices_per_process=2, log_dir=tmp_path))
  assert _summary(two) == reference
  assert "held-out acc" in outputs[0] and "held-out" not in outputs[1]  # process 0 reports
  for sub in ("data/iter_1.jsonl", "export/iter_1/solver/model.safetensors"):
    assert (two / sub).exists(), sub

  killed = tmp_path / "killed"
  _kill_after_checkpoint(
      _launch(killed, flags, num_processes=2, devices_per_process=2, log_dir=tmp_path),
      killed / "checkpoints",
      min_step=3,
  )
  assert not (killed / "summary.json").exists()
  outputs = _finish(
      _launch(killed, flags, num_processes=2, devices_per_process=2, log_dir=tmp_path)
  )
  assert "resuming from checkpoint" in outputs[0]
  assert _summary(killed) == reference
