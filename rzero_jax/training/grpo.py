"""GRPO math: group-relative advantages and the clipped policy loss with a KL penalty.

Conventions follow veRL / tunix `algo_core`: a per-token PPO objective with separate low/high clip
(clip-higher) and an optional dual clip, plus `kl_coef` times a KL estimate to a frozen reference,
aggregated either over all unmasked tokens of the batch (`token-mean`) or per sequence first
(`seq-mean-token-mean`). Every aggregate is a sum divided by a denominator that callers may fix to the
*global* batch value, so gradient accumulation over micro-batches is exact (see `loss_denominators`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean")
LOG_RATIO_CLAMP = 20.0  # log-ratios are clamped to [-20, 20] before exp, so exp never overflows


def group_advantages(
    rewards: jax.Array, group_size: int, *, eps: float = 1e-6, normalize_std: bool = True
) -> jax.Array:
  """`(r - group mean) / (group std (ddof=1) + eps)` for rewards [num_groups * group_size]
  (or any shape with that many elements, e.g. [num_groups, group_size]; the result has its shape).

  Consecutive runs of `group_size` rewards form a group (all samples of one prompt). A constant
  group gives exactly 0 (statistics are taken relative to the group's first reward, so float32
  rounding of the mean cannot leave a residue that the std division would blow up). With
  `normalize_std=False` only the mean is subtracted (Dr. GRPO).
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim == 0 or rewards.size % group_size:
    raise ValueError(
        f"rewards must hold a multiple of group_size={group_size} values; got "
        f"shape {rewards.shape}. Order rewards prompt by prompt, group_size per prompt."
    )
  grouped = rewards.reshape(-1, group_size)
  grouped = grouped - grouped[:, :1]
  centered = grouped - grouped.mean(axis=1, keepdims=True)
  if normalize_std:
    if group_size < 2:
      raise ValueError(
          "normalize_std needs group_size >= 2 (the std uses ddof=1); "
          "use normalize_std=False for single samples."
      )
    centered = centered / (grouped.std(axis=1, ddof=1, keepdims=True) + eps)
  return centered.reshape(rewards.shape)


def kl_penalty(logprobs: jax.Array, ref_logprobs: jax.Array, estimator: str = "k3") -> jax.Array:
  """Per-token KL(policy || reference) estimate from sampled-token log-probs.

  k1 = logp - ref; k2 = 0.5 (ref - logp)^2; k3 = exp(ref - logp) - (ref - logp) - 1 (unbiased, low
  variance, always >= 0; its log-difference is clamped to [-20, 20] so exp cannot overflow).
  """
  diff = ref_logprobs - logprobs
  if estimator == "k1":
    return -diff
  if estimator == "k2":
    return 0.5 * diff * diff
  if estimator == "k3":
    diff = jnp.clip(diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.exp(diff) - diff - 1.0
  raise ValueError(f"Unknown kl_estimator {estimator!r}: choose one of {KL_ESTIMATORS}.")


def loss_denominators(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(number of unmasked tokens, number of sequences with at least one unmasked token), each >= 1.

  Pass these, computed over the full batch, as `policy_loss(..., denominators=...)` on every
  micro-batch: the micro-batch losses then sum to the full-batch loss for either aggregation.
  """
  mask = jnp.asarray(mask, jnp.float32)
  tokens = jnp.maximum(mask.sum(), 1.0)
  seqs = jnp.maximum((mask.sum(axis=-1) > 0).sum().astype(jnp.float32), 1.0)
  return tokens, seqs


def aggregate(
    values: jax.Array,
    mask: jax.Array,
    agg: str,
    denominators: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
  """Masked mean of per-token `values` [B, T] by `agg` (see module docstring)."""
  mask = jnp.asarray(mask, jnp.float32)
  tokens, seqs = loss_denominators(mask) if denominators is None else denominators
  masked = jnp.where(mask > 0, values, 0.0) * mask
  if agg == "token-mean":
    return masked.sum() / tokens
  if agg == "seq-mean-token-mean":
    per_seq = masked.sum(axis=-1) / jnp.maximum(mask.sum(axis=-1), 1.0)
    return per_seq.sum() / seqs
  raise ValueError(f"Unknown agg {agg!r}: choose one of {AGGREGATIONS}.")


def _clamped_ratio(logprobs: jax.Array, other_logprobs: jax.Array) -> jax.Array:
  """Per-token probability ratio exp(clamp(logprobs - other, -20, 20)) in float32."""
  diff = logprobs.astype(jnp.float32) - other_logprobs.astype(jnp.float32)
  return jnp.exp(jnp.clip(diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def check_tis_cap(tis_cap: float | None) -> None:
  """Fails (one line) unless `tis_cap` is None (no TIS) or > 0."""
  if tis_cap is not None and not tis_cap > 0:
    raise ValueError(f"tis_cap must be > 0 (typically 2.0) or None; got {tis_cap}.")


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    ref_logprobs: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    agg: str = "token-mean",
    entropy: jax.Array | None = None,
    entropy_coef: float = 0.0,
    denominators: tuple[jax.Array, jax.Array] | None = None,
    sampler_logprobs: jax.Array | None = None,
    tis_cap: float | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
  """The GRPO loss on [B, T] per-token log-probs; `advantages` is [B] (or [B, T]).

  Per token: ratio = exp(clamp(logp - old, -20, 20)),
  pg = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high)); with `dual_clip` c (> 1)
  and A < 0, pg = min(pg, -A * c). Loss = agg(pg) + kl_coef * agg(kl) - entropy_coef * agg(entropy).
  `ref_logprobs` may be None when `kl_coef == 0`. Metrics: "pg_loss", "kl" (both by `agg`, so
  loss = pg_loss + kl_coef * kl when entropy_coef is 0), "clip_frac" (share of tokens where the
  clipped branch is active), "log_ratio_max" (max over the masked tokens of abs(logp - old): 0 when
  the step is exactly on-policy), "entropy" when given, "dual_clip_frac" when `dual_clip` is set.
  `denominators` overrides the (token, sequence) counts; see `loss_denominators`.

  Truncated importance sampling (TIS, veRL's token-level "truncate" rollout correction): with
  `tis_cap` and the sampler's `sampler_logprobs`, each token's pg term is multiplied by the
  constant w = min(exp(clamp(old - sampler, -20, 20)), tis_cap), correcting for the sampler's
  distribution differing from the trainer's (`old`); metrics "tis_weight" (token mean of w) and
  "tis_clip_frac" (share of tokens where the cap bit). `tis_cap` None leaves the loss unchanged.
  """
  if agg not in AGGREGATIONS:
    raise ValueError(f"Unknown agg {agg!r}: choose one of {AGGREGATIONS}.")
  if kl_estimator not in KL_ESTIMATORS:
    raise ValueError(f"Unknown kl_estimator {kl_estimator!r}: choose one of {KL_ESTIMATORS}.")
  if dual_clip is not None and dual_clip <= 1.0:
    raise ValueError(f"dual_clip must be > 1 (e.g. 3.0) or None; got {dual_clip}.")
  check_tis_cap(tis_cap)
  if tis_cap is not None and sampler_logprobs is None:
    raise ValueError(f"tis_cap={tis_cap} needs sampler_logprobs (the sampler's log-probs).")
  mask = jnp.asarray(mask, jnp.float32)
  denominators = loss_denominators(mask) if denominators is None else denominators
  logprobs = logprobs.astype(jnp.float32)
  adv = jnp.asarray(advantages, jnp.float32)
  adv = adv[:, None] if adv.ndim == 1 else adv
  ratio = _clamped_ratio(logprobs, old_logprobs)
  pg_unclipped = -adv * ratio
  pg_clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  pg = jnp.maximum(pg_unclipped, pg_clipped)
  token_mean = lambda x: aggregate(x, mask, "token-mean", denominators)
  log_ratio = jnp.abs(logprobs - jax.lax.stop_gradient(old_logprobs).astype(jnp.float32))
  metrics: dict[str, Any] = {
      "clip_frac": token_mean((pg_clipped > pg_unclipped).astype(jnp.float32)),
      "log_ratio_max": jax.lax.stop_gradient(jnp.max(jnp.where(mask > 0, log_ratio, 0.0))),
  }
  if dual_clip is not None:
    dual = -adv * dual_clip
    metrics["dual_clip_frac"] = token_mean(((adv < 0) & (dual < pg)).astype(jnp.float32))
    pg = jnp.where(adv < 0, jnp.minimum(pg, dual), pg)
  if tis_cap is not None:
    sampler_ratio = _clamped_ratio(old_logprobs, sampler_logprobs)
    weight = jax.lax.stop_gradient(jnp.minimum(sampler_ratio, tis_cap))
    metrics["tis_weight"] = token_mean(weight)
    metrics["tis_clip_frac"] = token_mean((sampler_ratio > tis_cap).astype(jnp.float32))
    pg = pg * weight
  pg_loss = aggregate(pg, mask, agg, denominators)
  loss = pg_loss
  if ref_logprobs is None:
    if kl_coef:
      raise ValueError(
          f"kl_coef={kl_coef} needs ref_logprobs: compute them with the reference "
          "policy (make_logprob_fn) or set kl_coef=0."
      )
    kl = jnp.zeros((), jnp.float32)
  else:
    kl = aggregate(
        kl_penalty(logprobs, ref_logprobs.astype(jnp.float32), kl_estimator),
        mask,
        agg,
        denominators,
    )
    loss = loss + kl_coef * kl
  metrics.update(pg_loss=pg_loss, kl=kl)
  if entropy is not None:
    metrics["entropy"] = aggregate(entropy.astype(jnp.float32), mask, agg, denominators)
    loss = loss - entropy_coef * metrics["entropy"]
  elif entropy_coef:
    raise ValueError("entropy_coef is set but no entropy was given: pass entropy=[B, T].")
  return loss, metrics
