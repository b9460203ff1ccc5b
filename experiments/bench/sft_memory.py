"""Compiled memory of the SFT step: the old full-vocabulary cross-entropy next to the chunked one,
with and without micro-batches.

  python -m experiments.bench.sft_memory [--vocab=151936 --seq_len=1024 --batch=4 --hidden=256]

Nothing runs: each step (forward, backward, AdamW update, params and optimizer state donated) is
compiled for abstract inputs, `jax.jit(step).lower(...).compile().memory_analysis()`, and XLA's
buffer assignment is read back, so a Qwen-sized vocabulary fits on any CPU. Columns (MiB): temp,
the step's scratch buffers (activations, logits, gradients: what the change is about); args, the
inputs (params, AdamW state, batch); total, temp + args + outputs - outputs aliased to donated
inputs, i.e. what the step holds at its peak. "old" is the step before the change,
kept verbatim below: `jax.nn.log_softmax` over the whole [B, T, V] float32 logits. "chunked" is
`make_sft_step` (logits `--loss_chunk_size` positions at a time, rematerialised), on the whole
batch and then on `--micro_batch_size` rows at a time.
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rzero_jax.models import ModelConfig, forward, init_params
from rzero_jax.training import TrainConfig, init_train_state
from rzero_jax.training.sft import LOSS_CHUNK_SIZE, make_sft_step

MIB = 1024**2


def old_sft_loss(cfg, params, batch):
  """`rzero_jax.training.sft.sft_loss` before the change (full [B, T, V] float32 log-softmax)."""
  tokens = batch["tokens"]
  attention_mask = batch.get("attention_mask")
  logits = forward(
      cfg, params, tokens[:, :-1], None if attention_mask is None else attention_mask[:, :-1]
  )
  targets = tokens[:, 1:]
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  count = jnp.maximum(mask.sum(), 1.0)
  loss = (nll * mask).sum() / count
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": (correct * mask).sum() / count, "tokens": mask.sum()}


def old_sft_step(cfg, optimizer):
  """`make_sft_step` before the change."""

  def step(params, opt_state, batch):
    grad_fn = jax.value_and_grad(lambda p: old_sft_loss(cfg, p, batch), has_aux=True)
    (_, metrics), grads = grad_fn(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

  return jax.jit(step, donate_argnums=(0, 1))


def memory(step, *args) -> dict[str, float]:
  stats = step.lower(*args).compile().memory_analysis()
  total = (
      stats.temp_size_in_bytes
      + stats.argument_size_in_bytes
      + stats.output_size_in_bytes
      - stats.alias_size_in_bytes
  )
  return {
      "temp": stats.temp_size_in_bytes / MIB,
      "args": stats.argument_size_in_bytes / MIB,
      "total": total / MIB,
  }


def main(argv: Any = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab", type=int, default=151936)
  parser.add_argument("--seq_len", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--dtype", default="float32", help="compute dtype (weights stay float32)")
  parser.add_argument("--loss_chunk_size", type=int, default=LOSS_CHUNK_SIZE)
  parser.add_argument("--micro_batch_size", type=int, default=1)
  args = parser.parse_args(argv)

  cfg = ModelConfig(
      model_type="qwen3",
      vocab_size=args.vocab,
      hidden_size=args.hidden,
      intermediate_size=4 * args.hidden,
      num_layers=args.layers,
      num_heads=max(1, args.hidden // 64),
      num_kv_heads=max(1, args.hidden // 128),
      head_dim=64,
      qk_norm=True,
      tie_embeddings=True,
      dtype=args.dtype,
  )
  optimizer = optax.adamw(1e-5)
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  opt_state = jax.eval_shape(optimizer.init, params)
  # The same AdamW (weight decay 1e-4, no clipping) as a TrainConfig, whole batch / micro-batches.
  whole, micro = (
      TrainConfig(learning_rate=1e-5, weight_decay=1e-4, max_grad_norm=None, micro_batch_size=m)
      for m in (None, args.micro_batch_size)
  )
  state = jax.eval_shape(lambda: init_train_state(cfg, whole, init_params(cfg, jax.random.key(0))))
  shape = jax.ShapeDtypeStruct((args.batch, args.seq_len), jnp.int32)
  batch = {"tokens": shape, "loss_mask": shape, "attention_mask": shape}

  logits_mib = args.batch * (args.seq_len - 1) * args.vocab * 4 / MIB
  print(
      f"model: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, "
      f"{args.dtype} compute; batch {args.batch} x {args.seq_len} tokens; one [B, T, V] float32 logits array = "
      f"{logits_mib:,.0f} MiB; backend {jax.default_backend()}"
  )
  rows = [
      ("old: full-vocab log_softmax", old_sft_step(cfg, optimizer), (params, opt_state, batch)),
      (
          f"chunked ({args.loss_chunk_size} positions), whole batch",
          make_sft_step(cfg, whole, loss_chunk_size=args.loss_chunk_size),
          (state, batch),
      ),
      (
          f"chunked ({args.loss_chunk_size}), micro-batches of {args.micro_batch_size}",
          make_sft_step(cfg, micro, loss_chunk_size=args.loss_chunk_size),
          (state, batch),
      ),
  ]
  print("| step | temp MiB | args MiB | total MiB | total vs old |")
  print("| --- | ---: | ---: | ---: | ---: |")
  base = None
  for name, step, step_args in rows:
    m = memory(step, *step_args)
    base = base or m["total"]
    print(
        f"| {name} | {m['temp']:,.0f} | {m['args']:,.0f} | {m['total']:,.0f} | "
        f"{m['total'] / base:.2f}x |",
        flush=True,
    )


if __name__ == "__main__":
  main()
