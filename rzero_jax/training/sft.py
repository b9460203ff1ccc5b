"""Supervised next-token training: masked cross-entropy and one jitted optimizer step.

A batch is a dict of [B, T] arrays: `tokens` (int), `loss_mask` (1 where the token at t is a
target, predicted from position t - 1; e.g. the completion and its end-of-turn token) and
optionally `attention_mask` (1 = real token; default all ones, i.e. no padding). The loss is the
mean negative log-likelihood over all target tokens of the batch.

Memory. The cross-entropy never holds [B, T, V] float32 logits: the step runs the decoder to its
last hidden states and projects them onto the vocabulary `loss_chunk_size` positions at a time
(`training.logprobs.target_logprobs_from_hidden`, rematerialised in the backward pass). With
`micro_batch_size` the batch is also processed that many rows at a time (strided rows, as the GRPO
step), gradients summed in float32; every micro-batch's loss is divided by the target-token count
of the *whole* batch, so the accumulated gradient is the full-batch gradient (up to float
summation order), however unevenly the targets fall across micro-batches.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rzero_jax.models.config import ModelConfig
from rzero_jax.models.functional import Params, combine_params, forward, param_shardings
from rzero_jax.sharding import ShardingPlan, constrain
from rzero_jax.training.logprobs import split_micro_batches, target_logprobs_from_hidden
from rzero_jax.training.train_state import TrainConfig, TrainState, compute_config, trainable
from rzero_jax.training.train_state import make_optimizer, make_schedule, state_shardings

Batch = dict[str, jax.Array]
BATCH_KEYS = ("tokens", "loss_mask", "attention_mask")
# Positions per chunk of the cross-entropy: [B, 256, V] float32 logits at a time (Qwen's V = 151,936
# and a micro-batch of 4 rows: ~0.6 GB per buffer, against ~10 GB for [4, 4096, V]).
LOSS_CHUNK_SIZE = 256


def sft_loss(
    cfg: ModelConfig,
    params: Params,
    batch: Batch,
    *,
    plan: ShardingPlan | None = None,
    loss_chunk_size: int = LOSS_CHUNK_SIZE,
    num_tokens: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token NLL over the target tokens, and metrics {loss, accuracy, tokens}.

  `num_tokens` replaces the denominator (default: this batch's target count, at least 1): pass the
  whole batch's count when `batch` is a micro-batch, so that losses, accuracies and their
  gradients add up over micro-batches to the whole batch's. "tokens" is this batch's count.
  """
  tokens = batch["tokens"]
  attention_mask = batch.get("attention_mask")
  hidden = forward(
      cfg,
      params,
      tokens[:, :-1],
      None if attention_mask is None else attention_mask[:, :-1],
      plan=plan,
      hidden=True,
  )
  logprobs, hits = target_logprobs_from_hidden(
      cfg, params, hidden, tokens[:, 1:], chunk_size=loss_chunk_size, plan=plan
  )
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0) if num_tokens is None else num_tokens
  loss = -(logprobs * mask).sum() / count
  accuracy = (hits.astype(jnp.float32) * mask).sum() / count
  return loss, {"loss": loss, "accuracy": accuracy, "tokens": mask.sum()}


def num_micro_batches(batch_size: int, micro_batch_size: int | None) -> int:
  """How many micro-batches a batch of `batch_size` rows splits into (raises if uneven)."""
  size = micro_batch_size or batch_size
  if size < 1 or batch_size % size:
    raise ValueError(
        f"Batch of {batch_size} sequences is not a multiple of micro_batch_size={size}: "
        "pick a micro-batch size that divides the batch size."
    )
  return batch_size // size


def sft_grads(
    cfg: ModelConfig,
    params: Params,
    batch: Batch,
    *,
    base: Params | None = None,
    micro_batch_size: int | None = None,
    loss_chunk_size: int = LOSS_CHUNK_SIZE,
    plan: ShardingPlan | None = None,
    grad_shardings: Params | None = None,
) -> tuple[Params, dict[str, jax.Array]]:
  """(grads, metrics {loss, accuracy, tokens}) of `sft_loss` on the whole batch, accumulated over
  micro-batches of `micro_batch_size` rows (None: the whole batch at once). Jittable.

  `params` are the trained params; with `base` (LoRA) they are the adapters and `base` the frozen
  rest (no gradient for it). Each micro-batch's loss is divided by the whole batch's target count,
  so the summed gradient equals the full-batch one. With micro-batches the gradients are summed in
  float32 (`grad_shardings`, e.g. the params' shardings, places the running sum) and returned in
  the params' dtypes; micro-batch i holds rows i, i + n, i + 2n, ... (`split_micro_batches`).
  """
  b = batch["tokens"].shape[0]
  num = num_micro_batches(b, micro_batch_size)
  count = jnp.maximum(jnp.asarray(batch["loss_mask"])[:, 1:].astype(jnp.float32).sum(), 1.0)
  grad_fn = jax.value_and_grad(
      lambda p, mb: sft_loss(
          cfg,
          combine_params(base, p),
          mb,
          plan=plan,
          loss_chunk_size=loss_chunk_size,
          num_tokens=count,
      ),
      has_aux=True,
  )
  batch = {k: jnp.asarray(batch[k]) for k in BATCH_KEYS if k in batch}
  if num == 1:
    (_, metrics), grads = grad_fn(params, batch)
    return grads, metrics

  def body(carry, mb):
    acc_grads, acc_metrics = carry
    mb = {k: constrain(v, ("batch", "length"), plan) for k, v in mb.items()}
    (_, metrics), grads = grad_fn(params, mb)
    acc_grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc_grads, grads)
    return (acc_grads, jax.tree.map(jnp.add, acc_metrics, metrics)), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  if grad_shardings is not None:
    zeros = jax.lax.with_sharding_constraint(zeros, grad_shardings)
  metrics = {k: jnp.zeros((), jnp.float32) for k in ("loss", "accuracy", "tokens")}
  micro_batches = {k: split_micro_batches(v, num) for k, v in batch.items()}
  (grads, metrics), _ = jax.lax.scan(body, (zeros, metrics), micro_batches)
  return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), metrics


def make_sft_step(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    plan: ShardingPlan | None = None,
    *,
    loss_chunk_size: int = LOSS_CHUNK_SIZE,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
  """One jitted `(state, batch, base=None) -> (state, metrics)` SFT update with the loops'
  optimizer (`make_optimizer(train_cfg)`: clipping + AdamW and its schedule); `state` is donated.
  With LoRA (`model_cfg.lora_rank` > 0) the state holds the adapters and `base` is the frozen base
  params (no gradient for them). The compute dtype is the model config's (or
  `train_cfg.compute_dtype`); `train_cfg.micro_batch_size` rows are processed at a time (exact
  gradient accumulation, see `sft_grads`). With a `plan`, params and optimizer state keep their
  logical-axis shardings. Metrics: loss, accuracy (greedy next-token), tokens, grad_norm,
  learning_rate."""
  optimizer, schedule = make_optimizer(train_cfg), make_schedule(train_cfg)
  cfg = compute_config(model_cfg, train_cfg)
  grad_shardings = None if plan is None else trainable(model_cfg, param_shardings(model_cfg, plan))

  def step(state, batch, base=None):
    grads, metrics = sft_grads(
        cfg,
        state.params,
        batch,
        base=base,
        micro_batch_size=train_cfg.micro_batch_size,
        loss_chunk_size=loss_chunk_size,
        plan=plan,
        grad_shardings=grad_shardings,
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = TrainState(
        params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1
    )
    return new_state, {
        **metrics,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
    }

  out_shardings = None if plan is None else (state_shardings(model_cfg, train_cfg, plan), None)
  return jax.jit(step, donate_argnums=0, out_shardings=out_shardings)


def make_sft_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], length: int, pad_id: int
) -> dict[str, np.ndarray]:
  """Right-padded batch of `prompt + completion` rows, targets on the completion tokens only.

  Rows longer than `length` raise: pick a longer bucket rather than silently truncating targets.
  """
  if len(prompts) != len(completions):
    raise ValueError(
        f"{len(prompts)} prompts but {len(completions)} completions: pass one "
        "completion per prompt."
    )
  tokens = np.full((len(prompts), length), pad_id, dtype=np.int32)
  loss_mask = np.zeros((len(prompts), length), dtype=np.int32)
  attention_mask = np.zeros((len(prompts), length), dtype=np.int32)
  for i, (prompt, completion) in enumerate(zip(prompts, completions)):
    n, total = len(prompt), len(prompt) + len(completion)
    if total > length:
      raise ValueError(
          f"Row {i} has {total} tokens but the batch length is {length}: raise "
          "`length` (or shorten the prompt / completion)."
      )
    tokens[i, :total] = list(prompt) + list(completion)
    loss_mask[i, n:total] = 1
    attention_mask[i, :total] = 1
  return {"tokens": tokens, "loss_mask": loss_mask, "attention_mask": attention_mask}
