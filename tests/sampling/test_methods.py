"""Sampling methods against the exactly renormalised distribution (statistical, fixed seed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax.sampling import Greedy, Sampling, make_method

LOGITS = np.array([2.0, 1.6, 1.5, 0.9, 0.3, 0.0, -0.4, -1.0, -2.5, -6.0], np.float32)
DRAWS = 40_000


def reference(logits, temperature, top_k, top_p):
  """Temperature, then top-k, then top-p (the smallest most-likely set with mass >= top_p),
  renormalised."""
  probs = np.exp(logits / temperature - np.max(logits / temperature))
  probs /= probs.sum()
  order = np.argsort(-probs)
  keep = np.zeros_like(probs, bool)
  keep[order[: top_k or len(probs)]] = True
  kept = np.where(keep, probs, 0.0)
  mass = np.cumsum(kept[order]) / kept.sum()
  nucleus = order[: int(np.searchsorted(mass, top_p - 1e-9)) + 1]
  out = np.zeros_like(probs)
  out[nucleus] = kept[nucleus]
  return out / out.sum()


def draw(method, logits, n=DRAWS, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  batch = jnp.broadcast_to(jnp.asarray(logits), (n, len(logits)))
  tokens, logprobs = jax.jit(method.sample)(batch, keys)
  return np.asarray(tokens), np.asarray(logprobs)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [
        (0.7, 0, 1.0),  # temperature only
        (1.0, 3, 1.0),  # top-k
        (1.0, 0, 0.8),  # top-p
        (1.5, 6, 0.75),  # all three: the nucleus is taken within the top-k set
    ],
)
def test_frequencies_match_renormalised_distribution(temperature, top_k, top_p):
  want = reference(LOGITS, temperature, top_k, top_p)
  tokens, logprobs = draw(make_method(temperature, top_p, top_k), LOGITS)
  freq = np.bincount(tokens, minlength=len(LOGITS)) / DRAWS
  assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(want))  # nothing outside the kept set
  sigma = np.sqrt(want * (1 - want) / DRAWS)
  np.testing.assert_array_less(np.abs(freq - want), 5 * sigma + 1e-12)
  full = jax.nn.log_softmax(LOGITS / temperature)  # the full (not renormalised) distribution
  np.testing.assert_allclose(logprobs, np.asarray(full)[tokens], atol=1e-6)


def test_top_p_keeps_the_top_token_and_breaks_no_ties_away():
  tokens, _ = draw(Sampling(top_p=1e-6), LOGITS, n=2000)
  assert set(tokens) == {0}
  tied = np.array([1.0, 1.0, 1.0, -3.0], np.float32)  # top-2 of three equal logits keeps all three
  tokens, _ = draw(Sampling(top_k=2), tied, n=3000)
  assert set(tokens) == {0, 1, 2}


def test_greedy_takes_argmax_with_untempered_logprob():
  logits = np.stack([LOGITS, LOGITS[::-1]])
  tokens, logprobs = jax.jit(Greedy().sample)(logits, jax.random.split(jax.random.key(0), 2))
  np.testing.assert_array_equal(tokens, [0, len(LOGITS) - 1])
  np.testing.assert_allclose(logprobs, jax.nn.log_softmax(LOGITS)[0], atol=1e-6)


def test_make_method_and_invalid_settings():
  assert make_method(temperature=0.0, top_p=0.5, top_k=3) == Greedy()
  assert make_method(0.9, 0.95, 20) == Sampling(temperature=0.9, top_k=20, top_p=0.95)
  for kwargs in (
      dict(temperature=-1.0),
      dict(temperature=1.0, top_p=0.0),
      dict(temperature=1.0, top_p=1.5),
      dict(temperature=1.0, top_k=-2),
  ):
    with pytest.raises(ValueError):
      make_method(**kwargs)
