"""The jitted GRPO train step: micro-batch gradient accumulation, AdamW, non-finite skip.

A batch is a dict of arrays with B sequences (leading dim):
  tokens [B, T] int32: prompt + completion (right-padded; prompts may be left-padded too)
  attention_mask [B, T]: 1 on real tokens
  loss_mask [B, T]: 1 where tokens[:, t] is a completion token being trained
  old_logprobs [B, T] float32: the sampler's log-probs, aligned like `token_logprobs` (optional:
    when absent the step is on-policy, old = stop_gradient(current))
  ref_logprobs [B, T] float32: the reference policy's log-probs (needed when kl_coef != 0)
  sampler_logprobs [B, T] float32: the sampler's log-probs when old_logprobs are the trainer's
    (needed when tis_cap is set: truncated importance sampling weights the pg term by them)
  advantages [B] float32
Other keys are ignored. On a multi-host mesh pass global arrays (`rzero_jax.multihost.host_to_global`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from rzero_jax.models.config import ModelConfig
from rzero_jax.models.functional import Params, combine_params, forward, param_shardings
from rzero_jax.sharding import ShardingPlan, constrain
from rzero_jax.training.grpo import loss_denominators, policy_loss
from rzero_jax.training.logprobs import (
    entropy_from_logits,
    logprobs_from_logits,
    split_micro_batches,
)
from rzero_jax.training.train_state import (
    TrainConfig,
    TrainState,
    compute_config,
    make_optimizer,
    make_schedule,
    state_shardings,
    trainable,
)

Batch = dict[str, jax.Array]
REQUIRED_KEYS = ("tokens", "attention_mask", "loss_mask", "advantages")
OPTIONAL_KEYS = ("old_logprobs", "ref_logprobs", "sampler_logprobs")


def _check_batch(batch: Batch, train_cfg: TrainConfig) -> int:
  missing = [k for k in REQUIRED_KEYS if k not in batch]
  if missing:
    raise ValueError(
        f"GRPO batch is missing {missing}: it needs {REQUIRED_KEYS} (+ optional "
        f"{OPTIONAL_KEYS}); see rzero_jax.training.train_step for the format."
    )
  if train_cfg.kl_coef and "ref_logprobs" not in batch:
    raise ValueError(
        f"kl_coef={train_cfg.kl_coef} needs batch['ref_logprobs'] (the reference "
        "policy's log-probs from make_logprob_fn); or set kl_coef=0."
    )
  if train_cfg.tis_cap is not None and "sampler_logprobs" not in batch:
    raise ValueError(
        f"tis_cap={train_cfg.tis_cap} needs batch['sampler_logprobs'] (the sampler's "
        "log-probs, with old_logprobs recomputed by the trainer); or set tis_cap=None."
    )
  b = batch["tokens"].shape[0]
  size = train_cfg.micro_batch_size or b
  if b % size:
    raise ValueError(
        f"Batch of {b} sequences is not a multiple of micro_batch_size={size}: pad the "
        "batch with empty rows (loss_mask 0) or change micro_batch_size."
    )
  return b // size


def _micro_batch_loss(
    cfg: ModelConfig,
    train_cfg: TrainConfig,
    plan: ShardingPlan | None,
    params: Params,
    mb: Batch,
    denominators: tuple[jax.Array, jax.Array],
):
  mb = {k: constrain(v, ("batch", "length")[: v.ndim], plan) for k, v in mb.items()}
  logits = forward(cfg, params, mb["tokens"], mb["attention_mask"], plan=plan)
  logprobs = logprobs_from_logits(
      logits, mb["tokens"], mb["attention_mask"], train_cfg.temperature, cfg=cfg, plan=plan
  )
  entropy = entropy_from_logits(logits, mb["attention_mask"], train_cfg.temperature)
  if not train_cfg.entropy_coef:
    entropy = jax.lax.stop_gradient(entropy)
  old = mb.get("old_logprobs", jax.lax.stop_gradient(logprobs))
  return policy_loss(
      logprobs,
      old,
      mb.get("ref_logprobs"),
      mb["advantages"],
      mb["loss_mask"],
      clip_low=train_cfg.clip_low,
      clip_high=train_cfg.clip_high,
      dual_clip=train_cfg.dual_clip,
      kl_coef=train_cfg.kl_coef,
      kl_estimator=train_cfg.kl_estimator,
      agg=train_cfg.agg,
      entropy=entropy,
      entropy_coef=train_cfg.entropy_coef,
      denominators=denominators,
      sampler_logprobs=mb.get("sampler_logprobs"),
      tis_cap=train_cfg.tis_cap,
  )


def compute_grads(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    params: Params,
    batch: Batch,
    *,
    plan: ShardingPlan | None = None,
    base: Params | None = None,
) -> tuple[jax.Array, Params, dict[str, Any]]:
  """(loss, grads, metrics) of the GRPO loss on the whole batch, accumulated over micro-batches.

  `params` are the trained params; with LoRA (`model_cfg.lora_rank` > 0) they are the adapters and
  `base` the frozen base params (no gradient is taken for it).

  Every micro-batch loss is divided by the token/sequence counts of the *full* batch, so the sum
  over micro-batches equals the full-batch loss exactly. Grads are float32 and shaped like params.
  Jittable; `make_train_step` wraps it.
  """
  num = _check_batch(batch, train_cfg)
  cfg = compute_config(model_cfg, train_cfg)
  denominators = loss_denominators(batch["loss_mask"])
  grad_fn = jax.value_and_grad(
      lambda p, mb: _micro_batch_loss(
          cfg, train_cfg, plan, combine_params(base, p), mb, denominators
      ),
      has_aux=True,
  )
  shardings = None if plan is None else trainable(model_cfg, param_shardings(model_cfg, plan))

  def zeros_like_params():
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    return zeros if shardings is None else jax.lax.with_sharding_constraint(zeros, shardings)

  def body(carry, mb):
    (loss, metrics), grads = grad_fn(params, mb)
    acc_loss, acc_grads, acc_metrics = carry
    acc_grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc_grads, grads)
    acc_metrics = {  # summed over micro-batches, but maxima ("*_max") by their maximum
        k: (jnp.maximum if k.endswith("_max") else jnp.add)(acc_metrics[k], v)
        for k, v in metrics.items()
    }
    return (acc_loss + loss, acc_grads, acc_metrics), None

  micro_batches = {
      k: split_micro_batches(jnp.asarray(batch[k]), num)
      for k in REQUIRED_KEYS + OPTIONAL_KEYS
      if k in batch
  }
  first = jax.tree.map(lambda x: x[0], micro_batches)
  metric_shapes = jax.eval_shape(lambda: grad_fn(params, first)[0][1])
  init = (
      jnp.zeros((), jnp.float32),
      zeros_like_params(),
      jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
  )
  (loss, grads, metrics), _ = jax.lax.scan(body, init, micro_batches)
  metrics = {**metrics, "num_tokens": batch["loss_mask"].astype(jnp.float32).sum()}
  return loss, grads, metrics


def make_train_step(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    plan: ShardingPlan | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
  """One jitted `(state, batch, base=None) -> (state, metrics)` GRPO update for a role; `state` is
  donated. With LoRA (`model_cfg.lora_rank` > 0) `state` holds the adapters and `base` is the
  frozen base params (shared, not donated); only the adapters and their AdamW state change.

  A non-finite loss or gradient norm leaves params and optimizer state unchanged and does not
  advance `state.step`; metrics["skipped"] is then 1. Metrics: loss, pg_loss, kl, clip_frac,
  entropy, grad_norm (before clipping), learning_rate, num_tokens, skipped (+ dual_clip_frac, and
  tis_weight and tis_clip_frac with `tis_cap`).
  With a `plan`, params and optimizer state keep their logical-axis shardings and the batch is
  sharded over "batch".
  """
  optimizer = make_optimizer(train_cfg)
  schedule = make_schedule(train_cfg)

  def step(
      state: TrainState, batch: Batch, base: Params | None = None
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    if bool(model_cfg.lora_rank) != (base is not None):
      raise ValueError(
          "A LoRA train step (lora_rank > 0) takes the frozen base params as `base`; "
          "a full fine-tuning step takes none."
      )
    loss, grads, metrics = compute_grads(
        model_cfg, train_cfg, state.params, batch, plan=plan, base=base
    )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Not optax.apply_if_finite: it checks only the gradients (we also skip a non-finite loss), it
    # would change the optimizer state's structure (existing checkpoints), and `state.step` must
    # not advance on a skipped step so it keeps matching the schedule.
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(
        params=jax.tree.map(keep, params, state.params),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        step=state.step + finite.astype(state.step.dtype),
    )
    metrics = {
        **metrics,
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "skipped": 1 - finite.astype(jnp.int32),
    }
    return new_state, metrics

  out_shardings = None if plan is None else (state_shardings(model_cfg, train_cfg, plan), None)
  return jax.jit(step, donate_argnums=0, out_shardings=out_shardings)
