"""Shared test helpers: the repository root, the launcher run as users run it (one process or
several joined by `jax.distributed`), and the tiny settings tests share.

Beside it: `hf_fixtures` (tiny Hugging Face checkpoints and model configs), `draws` (the sampler's
per-row random stream), and the worker scripts tests start as subprocesses (`multihost_worker`,
`sharded_worker`). Importing this package imports no jax, so workers can set devices first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(REPO, ".cache")  # where the toy worlds' base models are rebuilt when stale
TIMEOUT_S = 600

# Each built-in sharding strategy on a mesh of the 8 simulated CPU devices (tests/conftest.py).
STRATEGY_MESHES = [
    ("dp", "data:8"),
    ("fsdp", "fsdp:8"),
    ("tp", "data:2,tensor:4"),
    ("fsdp_tp", "data:2,fsdp:2,tensor:2"),
]

# R-Zero's smoke demo made smaller still, so several runs fit in CI time.
RZERO_TINY = [
    "--config=experiments/demo.py:smoke",
    "--config.challenger.prompts_per_step=8",
    "--config.challenger.prompts_per_update=8",
    "--config.challenger.train.micro_batch_size=32",
    "--config.dataset.num_candidates=32",
    "--config.solver.prompts_per_step=16",
    "--config.solver.prompts_per_update=16",
    "--config.checkpoint_every_steps=1",
]
# Absolute Zero's smoke demo made smaller still.
AZR_TINY = [
    "--config=experiments/azr_demo.py:smoke",
    "--config.checkpoint_every_steps=1",
    "--config.actor.prompts_per_step=4",
    "--config.actor.train.micro_batch_size=24",
]


def tiny_build(build_config: type, **overrides):
  """A toy world's `BuildConfig` (experiments/toy_*/build.py) for a build of seconds: a one-layer
  model of width 16, batches of 4."""
  dims = dict(hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
  return build_config(**dims, head_dim=8, batch_size=4, warmup_steps=1, **overrides)


def cpu_env(devices: int = 1, **extra: str) -> dict[str, str]:
  """This process's environment for a child on `devices` simulated CPU devices (without pytest's
  PYTEST_CURRENT_TEST), plus `extra`."""
  env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return {**env, **extra}


def distributed_env(
    address: str, num_processes: int, process_id: int, devices: int
) -> dict[str, str]:
  """The environment of process `process_id` of `num_processes` joined by `jax.distributed` at
  `address` (the RZERO_* variables the launcher reads), on `devices` CPU devices."""
  return cpu_env(
      devices,
      PYTHONPATH=REPO,
      RZERO_COORDINATOR=address,
      RZERO_NUM_PROCESSES=str(num_processes),
      RZERO_PROCESS_ID=str(process_id),
  )


def launch(workdir, *flags: str) -> subprocess.Popen:
  """`python -m rzero_jax.main --workdir=WORKDIR FLAGS` on one CPU device, output to a pipe."""
  return subprocess.Popen(
      [sys.executable, "-m", "rzero_jax.main", f"--workdir={workdir}", *flags],
      cwd=REPO,
      env=cpu_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def run(workdir, *flags: str, timeout: float = TIMEOUT_S) -> tuple[int, str]:
  """The launcher's exit code and output; a run that runs out of time is killed rather than left
  behind."""
  import pytest

  proc = launch(workdir, *flags)
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
    pytest.fail(f"the run took more than {timeout} s:\n{out[-4000:]}")
  return proc.returncode, out


def summary(workdir, *drop: str) -> dict:
  """The run's summary.json without its timing (and without the `drop` keys)."""
  with open(os.path.join(workdir, "summary.json")) as f:
    result = json.load(f)
  for key in ("timing", *drop):
    result.pop(key)
  return result


def kill_and_resume(workdir, flags: list[str], min_step: int) -> dict:
  """The run killed -9 once it has saved step `min_step`, then rerun to the end: the rerun's
  summary (the rerun must have resumed from the checkpoint)."""
  kill_after_checkpoint([launch(workdir, *flags)], workdir, min_step)
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  code, out = run(workdir, *flags)
  assert code == 0, out
  assert "resuming from checkpoint" in out
  return summary(workdir)


def launch_processes(
    workdir, flags: list[str], *, processes: int, devices: int, log_dir
) -> list[tuple[subprocess.Popen, str]]:
  """The launcher as `processes` processes joined over loopback (RZERO_* variables, as users start
  it) that share `devices` CPU devices evenly: (process, log file) pairs."""
  address = f"127.0.0.1:{free_port()}"
  procs = []
  for i in range(processes):
    env = (
        distributed_env(address, processes, i, devices // processes)
        if processes > 1
        else cpu_env(devices, PYTHONPATH=REPO)
    )
    path = os.path.join(log_dir, f"p{i}.{time.monotonic_ns()}.log")
    command = [sys.executable, "-m", "rzero_jax.main", f"--workdir={workdir}", *flags]
    with open(path, "w") as log:
      procs.append(
          (subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), path)
      )
  return procs


def finish(procs: list[tuple[subprocess.Popen, str]]) -> list[str]:
  """Waits for every process (killing those still running after TIMEOUT_S), asserts each exited
  with 0 and returns their outputs."""
  deadline = time.time() + TIMEOUT_S
  try:
    for p, _ in procs:
      p.wait(timeout=max(1.0, deadline - time.time()))
  except subprocess.TimeoutExpired:
    pass
  outputs = []
  for p, path in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
    with open(path) as log:
      outputs.append(log.read())
  for (p, _), out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  return outputs


def kill_after_checkpoint(procs: list[subprocess.Popen], workdir, min_step: int) -> None:
  """Kill -9s every process once a checkpoint of step `min_step` or later is in the run's
  `workdir`; asserts all were still running then."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline and all(p.poll() is None for p in procs):
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
    if steps and max(steps) >= min_step:
      break
    time.sleep(0.2)
  assert all(p.poll() is None for p in procs), "a run ended before it could be killed"
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()


def free_port() -> int:
  """A TCP port free on this host now (for a `jax.distributed` coordinator)."""
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
