"""Supervised next-token training: masked cross-entropy and one jitted optimizer step.

A batch is a dict of [B, T] arrays: `tokens` (int), `loss_mask` (1 where the token at t is a
target, predicted from position t - 1; e.g. the completion and its end-of-turn token) and
optionally `attention_mask` (1 = real token; default all ones, i.e. no padding). The loss is the
mean negative log-likelihood over all target tokens of the batch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rzero_jax.models.config import ModelConfig
from rzero_jax.models.decoder import Params, combine_params, forward
from rzero_jax.sharding import ShardingPlan

Batch = dict[str, jax.Array]
SFTStep = Callable[[Params, Any, Batch], tuple[Params, Any, dict[str, jax.Array]]]


def sft_loss(
    cfg: ModelConfig, params: Params, batch: Batch, *, plan: ShardingPlan | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token NLL over the target tokens, and metrics {loss, accuracy, tokens}."""
  tokens = batch["tokens"]
  attention_mask = batch.get("attention_mask")
  logits = forward(
      cfg,
      params,
      tokens[:, :-1],
      None if attention_mask is None else attention_mask[:, :-1],
      plan=plan,
  )
  targets = tokens[:, 1:]
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  count = jnp.maximum(mask.sum(), 1.0)
  loss = (nll * mask).sum() / count
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": (correct * mask).sum() / count, "tokens": mask.sum()}


def make_sft_step(
    cfg: ModelConfig, optimizer: optax.GradientTransformation, *, plan: ShardingPlan | None = None
) -> SFTStep:
  """A jitted `step(params, opt_state, batch) -> (params, opt_state, metrics)`; params and
  optimizer state are donated. Metrics: loss, accuracy (greedy next-token), tokens, grad_norm."""

  def step(params, opt_state, batch):
    grad_fn = jax.value_and_grad(lambda p: sft_loss(cfg, p, batch, plan=plan), has_aux=True)
    (_, metrics), grads = grad_fn(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

  return jax.jit(step, donate_argnums=(0, 1))


def make_sft_train_step(
    model_cfg: ModelConfig, train_cfg: Any, mesh: Any = None, strategy: Any = None
) -> Callable[[Any, Batch], tuple[Any, dict]]:
  """A jitted `(TrainState, batch, base=None) -> (TrainState, metrics)` SFT update with the loops'
  optimizer (`make_optimizer(train_cfg)`: clipping + AdamW) and shardings; the state is donated.
  With LoRA (`model_cfg.lora_rank` > 0) the state holds the adapters and `base` is the frozen
  base params (no gradient for them). The compute dtype is the model config's (or
  `train_cfg.compute_dtype`). Metrics: loss, accuracy, tokens, grad_norm, learning_rate."""
  from rzero_jax.sharding import make_plan
  from rzero_jax.training.train_state import (
      TrainState,
      compute_config,
      make_optimizer,
      make_schedule,
      state_shardings,
  )

  plan = make_plan(mesh, strategy)
  optimizer, schedule = make_optimizer(train_cfg), make_schedule(train_cfg)
  cfg = compute_config(model_cfg, train_cfg)

  def step(state, batch, base=None):
    full = lambda p: combine_params(base, p)  # noqa: E731
    grad_fn = jax.value_and_grad(lambda p: sft_loss(cfg, full(p), batch, plan=plan), has_aux=True)
    (_, metrics), grads = grad_fn(state.params)
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
