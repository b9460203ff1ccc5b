"""Comparing the completions of the same rows under two schedules (`max_batch_size`, mesh, cap).

What holds across schedules is that row r draws its token t with the same uniform
(`fold_in(fold_in(key(seed), r), t)`); the logits it is applied to differ in their last bits
between batch shapes, so a draw next to a token boundary may take the neighbouring token. Exact
equality of the completions is therefore not asserted: two completions of a row must be equal, or
equal up to a first differing token where the row's uniform sits within `tol` of the boundary
between the two tokens under a teacher-forced float32 forward pass (greedy: both tokens within
`tol` of the top logit). A different random stream fails that check (a uniform lands that close
to a given boundary with probability ~2 tol).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rzero_jax.models import forward
from rzero_jax.sampling import Greedy, make_method


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(lambda p, t, m: forward(cfg, p, t, m))


def _next_token_logits(cfg, params, seq: list[int]) -> np.ndarray:
  """float32 logits [V] after `seq` (right-padded to a power of two, so few shapes compile)."""
  width = 1 << (len(seq) - 1).bit_length()
  tokens = np.zeros((1, width), np.int32)
  mask = np.zeros((1, width), np.int32)
  tokens[0, : len(seq)], mask[0, : len(seq)] = seq, 1
  return np.asarray(_forward(cfg)(params, tokens, mask))[0, len(seq) - 1].astype(np.float64)


def row_uniform(seed: int, row: int, t: int) -> float:
  """The uniform row `row` draws its token `t` with (the sampler's stream)."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(np.uint32(seed)), row), t)
  return float(jax.random.uniform(key))


def assert_same_draws(
    cfg,
    params,
    row_prompts,
    got,
    want,
    *,
    seed: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    tol: float = 1e-4,
    atol: float = 1e-4,
) -> int:
  """`got` and `want` (with `.tokens` and `.logprobs` per row; row r's prompt is `row_prompts[r]`
  and r is its random stream) are equal, or each row differs first at a near tie; the log-probs of
  the common prefix agree within `atol`. Returns the number of rows that differ."""
  method = make_method(temperature, top_p, top_k)
  assert len(got.tokens) == len(want.tokens) == len(row_prompts)
  differ = 0
  for row, (a, b) in enumerate(zip(got.tokens, want.tokens)):
    a, b = list(a), list(b)
    n = min(len(a), len(b))
    d = next((i for i in range(n) if a[i] != b[i]), n)
    np.testing.assert_allclose(
        got.logprobs[row][:d], want.logprobs[row][:d], atol=atol, err_msg=f"row {row}"
    )
    if a == b:
      continue
    differ += 1
    assert d < n, f"row {row}: one completion ({len(a)} / {len(b)} tokens) is a prefix of the other"
    seq = list(row_prompts[row]) + a[:d]
    logits = _next_token_logits(cfg, params, seq)
    if isinstance(method, Greedy):
      gaps = logits.max() - logits[[a[d], b[d]]]
      assert gaps.max() < tol, f"row {row}, token {d}: {a[d]} vs {b[d]}, logit gaps {gaps}"
      continue
    scaled = jnp.asarray(logits[None] / method.temperature, jnp.float32)
    weights = np.asarray(method.kept_weights(scaled)[0], np.float64)
    cdf = np.cumsum(weights) / weights.sum()
    u = row_uniform(seed, row, d)
    lo, hi = sorted((a[d], b[d]))
    # lo is drawn for u just below cdf[lo], hi for u at or above cdf[hi - 1] >= cdf[lo].
    off = max(abs(u - cdf[lo]), abs(u - cdf[hi - 1]))
    assert off < tol, (
        f"row {row}, token {d}: {a[d]} vs {b[d]} with uniform {u:.6f}, {off:.2e} from their "
        "boundary: not a near tie, the random streams differ"
    )
  return differ
