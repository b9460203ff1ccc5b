"""One process of a multi-process test run, started by tests (see `run_processes`).

  python -m tests.support.multihost_worker --mode=forward --model=DIR --out=PREFIX \
      --plan=fsdp_tp@data:2,fsdp:2,tensor:2

Each process joins `jax.distributed` (coordinator from RZERO_* environment variables), runs every
`--mode` once per `--plan` (strategy@mesh spanning every process's devices) and writes the gathered,
global results to PREFIX.<process_id>.npz as "mode/plan/key". A mode is a function
(args, mesh, strategy) -> dict of numpy arrays; add one to MODES to test another compute path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Callable

import numpy as np

from tests.support import REPO, distributed_env, free_port


def example_tokens(
    vocab_size: int, batch: int = 8, length: int = 12
) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic tokens and a left-padded attention mask, identical on every process."""
  rng = np.random.RandomState(0)
  tokens = rng.randint(0, vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), dtype=np.int32)
  mask[1, :3] = 0
  mask[5, :5] = 0
  return tokens, mask


def run_forward(args: argparse.Namespace, mesh, strategy: str) -> dict[str, np.ndarray]:
  """Loads the model onto the mesh, feeds each process's rows, returns the gathered logits."""
  import jax
  from jax.experimental import multihost_utils

  from rzero_jax import multihost, sharding
  from rzero_jax.models import functional, hf_io

  cfg, params = hf_io.load_pretrained(args.model, dtype="float32", mesh=mesh, strategy=strategy)
  plan = sharding.make_plan(mesh, strategy)
  tokens, mask = example_tokens(cfg.vocab_size)
  rows = multihost.process_rows(plan, tokens.shape[0])
  batch = multihost.host_to_global(
      {"tokens": tokens[rows], "mask": mask[rows]}, plan, ("batch", "length")
  )
  logits = jax.jit(lambda p, b: functional.forward(cfg, p, b["tokens"], b["mask"], plan=plan))(
      params, batch
  )
  return {
      "logits": np.asarray(multihost_utils.process_allgather(logits, tiled=True)),
      "bytes_on_device0": np.asarray(sharding.bytes_on_device(params)),
  }


def run_batch(args: argparse.Namespace, mesh, strategy: str) -> dict[str, np.ndarray]:
  """This process's rows, the gathered global batch, and whether a 7-row batch is refused."""
  from jax.experimental import multihost_utils

  from rzero_jax import multihost, sharding

  plan = sharding.make_plan(mesh, strategy)
  tokens, _ = example_tokens(97)
  rows = multihost.process_rows(plan, tokens.shape[0])
  batch = multihost.host_to_global(tokens[rows], plan, ("batch", "length"))
  try:
    multihost.process_rows(plan, 7)
    odd_refused = False
  except ValueError:
    odd_refused = True
  return {
      "rows": np.asarray([rows.start, rows.stop]),
      "odd_refused": np.asarray(odd_refused),
      "tokens": np.asarray(multihost_utils.process_allgather(batch, tiled=True)),
  }


def example_grpo_batch(vocab_size: int) -> dict[str, np.ndarray]:
  """A deterministic GRPO batch (completion = the last 6 positions), identical on every process."""
  tokens, mask = example_tokens(vocab_size)
  loss_mask = np.zeros(tokens.shape, np.float32)
  loss_mask[:, 6:] = mask[:, 6:]
  return {
      "tokens": tokens,
      "attention_mask": mask,
      "loss_mask": loss_mask,
      "old_logprobs": np.full(tokens.shape, -4.0, np.float32) * loss_mask,
      "advantages": np.linspace(-1.0, 1.0, tokens.shape[0]).astype(np.float32),
  }


LOSS_TRAIN_CONFIG = dict(learning_rate=1e-2, kl_coef=0.0, micro_batch_size=4)


def run_loss(args: argparse.Namespace, mesh, strategy: str) -> dict[str, np.ndarray]:
  """One jitted GRPO train step over both processes' rows: its loss and grad norm."""
  from rzero_jax import multihost, sharding
  from rzero_jax.models import hf_io
  from rzero_jax.training import TrainConfig, init_train_state, make_train_step

  plan = sharding.make_plan(mesh, strategy)
  cfg, params = hf_io.load_pretrained(args.model, dtype="float32", plan=plan)
  train_cfg = TrainConfig(**LOSS_TRAIN_CONFIG)
  state = init_train_state(cfg, train_cfg, params, plan)
  batch = example_grpo_batch(cfg.vocab_size)
  rows = multihost.process_rows(plan, batch["tokens"].shape[0])
  batch = multihost.host_to_global({k: v[rows] for k, v in batch.items()}, plan)
  _, metrics = make_train_step(cfg, train_cfg, plan)(state, batch)
  return {"loss": np.asarray(metrics["loss"]), "grad_norm": np.asarray(metrics["grad_norm"])}


MODES: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "forward": run_forward,
    "batch": run_batch,
    "loss": run_loss,
}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument(
      "--mode", choices=sorted(MODES), action="append", required=True, help="repeatable"
  )
  parser.add_argument("--model", required=True, help="HF checkpoint directory")
  parser.add_argument("--out", required=True, help="output prefix; writes PREFIX.<process_id>.npz")
  parser.add_argument(
      "--plan", action="append", required=True, help="strategy@mesh_spec, repeatable"
  )
  args = parser.parse_args(argv)

  from rzero_jax import multihost, sharding

  if not multihost.initialize_distributed():
    raise SystemExit(
        "multihost_worker needs RZERO_COORDINATOR, RZERO_NUM_PROCESSES, RZERO_PROCESS_ID."
    )
  import jax

  results = {}
  for mode in args.mode:
    for plan in args.plan:
      strategy, _, spec = plan.partition("@")
      for key, value in MODES[mode](args, sharding.make_mesh(spec), strategy).items():
        results[f"{mode}/{plan}/{key}"] = value
  np.savez(f"{args.out}.{jax.process_index()}.npz", **results)
  jax.distributed.shutdown()


def run_processes(
    worker_args: list[str],
    log_dir: str,
    *,
    num_processes: int = 2,
    devices_per_process: int = 4,
    timeout_s: float = 120.0,
) -> None:
  """Runs `num_processes` workers on local CPU devices; raises with their logs if any fails.

  Every worker is killed when one fails or the timeout passes, so no process outlives the call.
  """
  address = f"127.0.0.1:{free_port()}"
  procs, logs = [], []
  try:
    for i in range(num_processes):
      env = distributed_env(address, num_processes, i, devices_per_process)
      log = open(os.path.join(log_dir, f"worker{i}.log"), "w+")
      logs.append(log)
      procs.append(
          subprocess.Popen(
              [sys.executable, "-m", "tests.support.multihost_worker", *worker_args],
              cwd=REPO,
              env=env,
              stdout=log,
              stderr=subprocess.STDOUT,
          )
      )
    for p in procs:
      p.wait(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    pass
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    outputs = []
    for log in logs:
      log.seek(0)
      outputs.append(log.read())
      log.close()
  failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
  if failed:
    details = "\n".join(f"--- worker {i} (exit {rc}) ---\n{outputs[i][-3000:]}" for i, rc in failed)
    raise RuntimeError(f"Multi-process workers failed or timed out after {timeout_s}s:\n{details}")


if __name__ == "__main__":
  main()
