"""Sampling methods: small frozen (hashable, jit-static) dataclasses mapping logits to tokens.

Every method has `sample(logits [B, V], keys [B]) -> (tokens [B] int32, logprobs [B] float32)`,
where `logprobs` is the log-softmax of the temperature-scaled FULL distribution at the chosen token
(the quantity the trainer recomputes), never the top-k/top-p renormalised one.

Top-k and top-p are computed without sorting (XLA's CPU sort and top_k cost ~10x a decode step):
each cut is a probability threshold found by bisection on the float's bit pattern, which is exact
(positive float32s order like their int32 bits). The token is then drawn by inverse-CDF sampling
with one uniform per row, also by bisection. Ties at a threshold are all kept.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_ONE_BITS = 0x3F800000  # float32 1.0; probabilities lie in [0, 1]


def _float_bisect(pred, shape: tuple[int, ...]) -> jax.Array:
  """The largest float t in [0, 1] with pred(t) true, for pred monotone (true at 0, false above 1);
  shape is the batch shape of the thresholds."""
  lo = jnp.zeros(shape, jnp.int32)  # pred(bits(lo)) holds
  hi = jnp.full(shape, _ONE_BITS + 1, jnp.int32)  # pred(bits(hi)) fails

  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    ok = pred(jax.lax.bitcast_convert_type(mid, jnp.float32))
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(0, 31, body, (lo, hi))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def top_k_threshold(probs: jax.Array, k: int) -> jax.Array:
  """The k-th largest probability per row [B, 1] (keep `probs >= threshold`)."""
  return _float_bisect(
      lambda t: jnp.sum(probs >= t, axis=-1, keepdims=True) >= k, probs.shape[:-1] + (1,)
  )


def top_p_threshold(probs: jax.Array, top_p: float) -> jax.Array:
  """Threshold [B, 1] keeping the smallest set of most likely tokens whose mass is >= top_p of the
  (possibly unnormalised) total; the most likely token is always kept."""
  target = top_p * jnp.sum(probs, axis=-1, keepdims=True)
  mass_at = lambda t: jnp.sum(jnp.where(probs >= t, probs, 0.0), axis=-1, keepdims=True)
  return _float_bisect(lambda t: mass_at(t) >= target, target.shape)


def inverse_cdf(weights: jax.Array, uniforms: jax.Array) -> jax.Array:
  """Index i per row with prefix(i-1) <= u * total < prefix(i), for weights [B, V] >= 0 and
  uniforms [B] in [0, 1): a draw from the normalised weights; zero-weight entries are never
  drawn."""
  b, v = weights.shape
  iota = jnp.arange(v)[None, :]
  prefix = lambda i: jnp.sum(jnp.where(iota <= i[:, None], weights, 0.0), axis=-1)
  total = prefix(jnp.full((b,), v - 1))
  target = jnp.minimum(uniforms * total, jnp.nextafter(total, 0.0))  # u * total may round to total
  lo, hi = jnp.full((b,), -1), jnp.full((b,), v - 1)  # prefix(lo) <= target < prefix(hi)

  def body(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    above = prefix(mid) > target
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

  _, hi = jax.lax.fori_loop(0, max(1, v.bit_length()), body, (lo, hi))
  return hi.astype(jnp.int32)


def _argmax(logits: jax.Array) -> jax.Array:
  """First index of the row maximum: `jnp.argmax` as two plain reductions (XLA's CPU variadic
  argmax reduction costs more than a whole decoder layer at small sizes)."""
  iota = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  is_max = logits == jnp.max(logits, axis=-1, keepdims=True)
  return jnp.min(jnp.where(is_max, iota, logits.shape[-1] - 1), axis=-1)


def _chosen_logprob(scaled_logits: jax.Array, tokens: jax.Array) -> jax.Array:
  logprobs = jax.nn.log_softmax(scaled_logits, axis=-1)
  return jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]


@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding; logprobs are those of the untempered (temperature 1) distribution."""

  temperature = 1.0  # of the log-probs (not a field: every Greedy() is the same method)

  def sample(self, logits: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    del keys
    tokens = _argmax(logits)
    return tokens, _chosen_logprob(logits, tokens)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Ancestral sampling: temperature, then top-k (0 = off), then top-p (1.0 = off)."""

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(
          f"Sampling needs temperature > 0, got {self.temperature}; use Greedy() "
          "(temperature=0 in generate) for argmax decoding."
      )
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}.")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p}.")

  def kept_weights(self, scaled_logits: jax.Array) -> jax.Array:
    """Unnormalised probabilities [B, V] of the tokens surviving top-k and top-p (0 elsewhere)."""
    probs = jax.nn.softmax(scaled_logits, axis=-1)
    if 0 < self.top_k < probs.shape[-1]:
      probs = jnp.where(probs >= top_k_threshold(probs, self.top_k), probs, 0.0)
    if self.top_p < 1:
      probs = jnp.where(probs >= top_p_threshold(probs, self.top_p), probs, 0.0)
    return probs

  def sample(self, logits: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    scaled = logits / self.temperature
    uniforms = jax.vmap(jax.random.uniform)(keys)
    tokens = inverse_cdf(self.kept_weights(scaled), uniforms)
    return tokens, _chosen_logprob(scaled, tokens)


Method = Greedy | Sampling


def make_method(
    temperature: float = 1.0, top_p: float | None = 1.0, top_k: int | None = 0
) -> Method:
  """`Greedy()` for temperature 0 (top-k/top-p ignored), else `Sampling(...)` with plain Python
  numbers, so equal settings hash equal and share one compiled program. `top_k` None or 0 and
  `top_p` None or 1 disable those cuts."""
  top_k = 0 if top_k is None else top_k
  top_p = 1.0 if top_p is None else top_p
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
  if temperature == 0:
    return Greedy()
  return Sampling(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
