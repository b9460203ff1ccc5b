"""Per-token log-probabilities (and entropies) of given sequences, aligned with the tokens.

Alignment: entry t of a [B, T] result refers to predicting tokens[:, t] from tokens[:, :t], i.e. it
comes from the logits at position t - 1; a row's first real token (nothing to condition on) and
padding entries are 0.
The distribution is softmax(logits / temperature): the one the sampler draws from, so ratios against
the sampler's log-probs are exact when the temperature matches.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rzero_jax.models.config import ModelConfig
from rzero_jax.models.functional import Params, chosen_logprobs, forward, unembed
from rzero_jax.sharding import ShardingPlan, constrain
from rzero_jax.training.train_state import TrainConfig, compute_config


def _shift(per_position: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Moves values computed at position t - 1 to entry t; zero on padding and where t - 1 is not a
  real token (t = 0, a left-padded row's first token)."""
  shifted = jnp.pad(per_position[:, :-1], ((0, 0), (1, 0)))
  real = attention_mask.astype(bool)
  conditioned = real & jnp.pad(real[:, :-1], ((0, 0), (1, 0)))
  return jnp.where(conditioned, shifted, 0.0)


def logprobs_from_logits(
    logits: jax.Array,
    tokens: jax.Array,
    attention_mask: jax.Array,
    temperature: float = 1.0,
    *,
    cfg: ModelConfig | None = None,
    plan: ShardingPlan | None = None,
) -> jax.Array:
  """[B, T] log-probs of `tokens` under softmax(logits / temperature), aligned as in the module doc.

  Computed by `models.chosen_logprobs` (the sampler's expression; in fixed tiles when
  `cfg.batch_invariant`), so no [B, T, V] log-softmax is materialised.
  """
  next_tokens = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
  return _shift(chosen_logprobs(cfg, logits, next_tokens, temperature, plan), attention_mask)


def entropy_from_logits(
    logits: jax.Array, attention_mask: jax.Array, temperature: float = 1.0
) -> jax.Array:
  """[B, T] entropy of the distribution that predicts token t, aligned as in the module doc."""
  scaled = logits.astype(jnp.float32) / temperature
  lse = jax.nn.logsumexp(scaled, axis=-1)
  entropy = lse - jnp.sum(jax.nn.softmax(scaled, axis=-1) * scaled, axis=-1)
  return _shift(entropy, attention_mask)


def token_logprobs(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    attention_mask: jax.Array,
    *,
    temperature: float = 1.0,
    plan: ShardingPlan | None = None,
) -> jax.Array:
  """[B, T] log-probs: out[:, t] = log softmax(logits[:, t-1] / temperature)[tokens[:, t]], out[:, 0] = 0."""
  logits = forward(cfg, params, tokens, attention_mask, plan=plan)
  return logprobs_from_logits(logits, tokens, attention_mask, temperature, cfg=cfg, plan=plan)


def target_logprobs_from_hidden(
    cfg: ModelConfig,
    params: Params,
    hidden: jax.Array,
    targets: jax.Array,
    *,
    chunk_size: int = 256,
    temperature: float = 1.0,
    plan: ShardingPlan | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Log-probs of `targets` from last-layer hidden states without [B, T, V] logits.

  hidden [B, T, D] (`models.forward(..., hidden=True)`, before the final norm), targets [B, T]
  int. Returns float32 [B, T] log softmax(unembed(hidden[:, t]) / temperature)[targets[:, t]] and
  bool [B, T] "targets[:, t] is the argmax" (first maximum, as `jnp.argmax`); entry t uses
  position t (no shift: pass the hidden states of the inputs and the next tokens as targets).

  The logits are computed `chunk_size` positions at a time in a rematerialised `lax.map`: each chunk
  gives its [B, chunk_size, V] float32 logits, logsumexp and target logit, and the backward pass
  recomputes them chunk by chunk, so at most a few [B, chunk_size, V] buffers are live at once
  (T is padded up to a multiple of `chunk_size`; the padding is dropped). The vocab axis stays
  whole, so a vocab-sharded projection (tensor parallelism) is reduced by XLA as usual.
  """
  b, t, d = hidden.shape
  size = max(1, min(chunk_size, t))
  pad = (-t) % size
  num = (t + pad) // size
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  hidden = jnp.swapaxes(hidden.reshape(b, num, size, d), 0, 1)  # [num, B, size, D]
  targets = jnp.swapaxes(targets.reshape(b, num, size), 0, 1)  # [num, B, size]

  @jax.checkpoint
  def one_chunk(chunk):
    h, tgt = chunk
    h = constrain(h, ("batch", "length", "embed"), plan)
    logits = unembed(cfg, params, h, plan) / temperature  # [B, size, V] float32
    picked = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0]
    hit = jnp.argmax(logits, axis=-1) == tgt
    return picked - jax.nn.logsumexp(logits, axis=-1), hit

  logprobs, hits = jax.lax.map(one_chunk, (hidden, targets))
  unchunk = lambda x: jnp.swapaxes(x, 0, 1).reshape(b, num * size)[:, :t]  # noqa: E731
  return unchunk(logprobs), unchunk(hits)


def split_micro_batches(x: jax.Array, num: int) -> jax.Array:
  """[B, ...] -> [num, B // num, ...] with micro-batch i = rows i, i + num, i + 2 num, ...

  Strided rather than contiguous, so with the batch sharded over devices every micro-batch still
  spans all devices (each device holds a contiguous block of rows).
  """
  return jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1)


def merge_micro_batches(x: jax.Array) -> jax.Array:
  """Inverse of `split_micro_batches`."""
  return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def make_logprob_fn(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig | float = 1.0,
    plan: ShardingPlan | None = None,
    *,
    chunk_size: int | None = None,
) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
  """A jitted `(params, tokens, attention_mask) -> [B, T] float32 log-probs` for old/ref log-probs.

  `train_cfg` is a `TrainConfig` (its temperature, compute dtype and micro-batch size are used) or a
  temperature. The batch is processed `chunk_size` rows at a time (default: the TrainConfig's
  `micro_batch_size`, else all at once), so at most [chunk_size, T, V] logits exist at a time; a
  batch that does not divide evenly is padded with empty rows.
  """
  if isinstance(train_cfg, TrainConfig):
    cfg, temperature = compute_config(model_cfg, train_cfg), train_cfg.temperature
    chunk_size = chunk_size or train_cfg.micro_batch_size
  else:
    cfg, temperature = model_cfg, float(train_cfg)

  @jax.jit
  def logprob_fn(params: Params, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
    b = tokens.shape[0]
    size = min(chunk_size or b, b)
    pad = (-b) % size
    tokens = jnp.pad(tokens, ((0, pad), (0, 0)))
    attention_mask = jnp.pad(attention_mask, ((0, pad), (0, 0)))
    num = (b + pad) // size

    def one_chunk(chunk):
      tokens, mask = (constrain(x, ("batch", "length"), plan) for x in chunk)
      return token_logprobs(cfg, params, tokens, mask, temperature=temperature, plan=plan)

    out = jax.lax.map(
        one_chunk, (split_micro_batches(tokens, num), split_micro_batches(attention_mask, num))
    )
    return merge_micro_batches(out)[:b]

  return logprob_fn
