"""GRPO math against an independent numpy reference."""

import numpy as np
import pytest

from rzero_jax.training import grpo


def np_advantages(rewards, group_size, eps=1e-6, normalize_std=True):
  out = []
  for g in np.asarray(rewards, np.float64).reshape(-1, group_size):
    centered = g - g.mean()
    out.append(centered / (g.std(ddof=1) + eps) if normalize_std else centered)
  return np.concatenate(out)


def np_policy_loss(
    logp,
    old,
    ref,
    adv,
    mask,
    *,
    clip_low,
    clip_high,
    kl_coef,
    kl_estimator,
    agg,
    dual_clip=None,
    entropy=None
):
  """Loop-per-token reference (float64)."""
  b, t = logp.shape
  pg = np.zeros((b, t))
  kl = np.zeros((b, t))
  clipped = np.zeros((b, t))
  for i in range(b):
    for j in range(t):
      ratio = np.exp(np.clip(logp[i, j] - old[i, j], -20, 20))
      a = adv[i]
      unclipped_loss = -a * ratio
      clipped_loss = -a * min(max(ratio, 1 - clip_low), 1 + clip_high)
      pg[i, j] = max(unclipped_loss, clipped_loss)
      clipped[i, j] = clipped_loss > unclipped_loss
      if dual_clip is not None and a < 0:
        pg[i, j] = min(pg[i, j], -a * dual_clip)
      d = ref[i, j] - logp[i, j]
      kl[i, j] = {"k1": -d, "k2": 0.5 * d * d, "k3": np.exp(d) - d - 1}[kl_estimator]

  def reduce(x):
    if agg == "token-mean":
      return (x * mask).sum() / mask.sum()
    rows = [(x[i] * mask[i]).sum() / mask[i].sum() for i in range(b) if mask[i].sum() > 0]
    return np.mean(rows)

  loss = reduce(pg) + kl_coef * reduce(kl)
  metrics = {
      "pg_loss": reduce(pg),
      "kl": reduce(kl),
      "clip_frac": (clipped * mask).sum() / mask.sum(),
  }
  if entropy is not None:
    metrics["entropy"] = reduce(entropy)
  return loss, metrics


def random_inputs(seed, b=6, t=9):
  rng = np.random.default_rng(seed)
  logp = -rng.exponential(2.0, (b, t)).astype(np.float32)
  old = (logp + rng.normal(0, 0.4, (b, t))).astype(np.float32)
  ref = (logp + rng.normal(0, 0.6, (b, t))).astype(np.float32)
  adv = rng.normal(0, 1, b).astype(np.float32)
  mask = (rng.random((b, t)) < 0.7).astype(np.float32)
  mask[2] = 0.0  # a sequence with no trained token: excluded from seq-mean-token-mean
  entropy = rng.exponential(1.0, (b, t)).astype(np.float32)
  return logp, old, ref, adv, mask, entropy


def test_group_advantages_matches_reference():
  rewards = np.random.default_rng(0).random(24).astype(np.float32)
  rewards[8:16] = 0.5  # a constant group
  for normalize_std in (True, False):
    got = np.asarray(grpo.group_advantages(rewards, 8, eps=1e-6, normalize_std=normalize_std))
    np.testing.assert_allclose(
        got, np_advantages(rewards, 8, normalize_std=normalize_std), rtol=1e-5, atol=1e-6
    )
  assert np.all(np.asarray(grpo.group_advantages(rewards, 8))[8:16] == 0.0)


@pytest.mark.parametrize("value, size", [(0.7, 16), (0.1, 3), (123.456, 5), (-2.3, 7)])
def test_constant_group_gives_exactly_zero(value, size):
  rewards = np.concatenate([np.full(size, value), np.arange(size)]).astype(np.float32)
  got = np.asarray(grpo.group_advantages(rewards, size))
  assert np.all(got[:size] == 0.0)
  np.testing.assert_allclose(got[size:], np_advantages(rewards, size)[size:], rtol=1e-5, atol=1e-6)


def test_group_advantages_keeps_a_2d_shape():
  rewards = np.random.default_rng(1).random((3, 4)).astype(np.float32)
  got = np.asarray(grpo.group_advantages(rewards, 4))
  assert got.shape == (3, 4)
  np.testing.assert_allclose(
      got.reshape(-1), np_advantages(rewards.reshape(-1), 4), rtol=1e-5, atol=1e-6
  )


def test_group_advantages_rejects_bad_shapes():
  with pytest.raises(ValueError, match="group_size"):
    grpo.group_advantages(np.zeros(10), 4)


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_policy_loss_matches_reference(kl_estimator, agg, dual_clip):
  logp, old, ref, adv, mask, entropy = random_inputs(1)
  kwargs = dict(clip_low=0.2, clip_high=0.28, kl_coef=0.05, kl_estimator=kl_estimator, agg=agg)
  loss, metrics = grpo.policy_loss(
      logp, old, ref, adv, mask, dual_clip=dual_clip, entropy=entropy, **kwargs
  )
  want_loss, want = np_policy_loss(
      logp, old, ref, adv, mask, dual_clip=dual_clip, entropy=entropy, **kwargs
  )
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-6)
  for key, value in want.items():
    np.testing.assert_allclose(float(metrics[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert 0.0 < float(metrics["clip_frac"]) < 1.0  # the inputs exercise both branches


def test_dual_clip_bounds_negative_advantage_loss():
  logp = np.array([[3.0]], np.float32)  # ratio e^3 ~ 20 with a negative advantage
  old = np.zeros((1, 1), np.float32)
  kwargs = dict(kl_coef=0.0, clip_low=0.2, clip_high=0.28)
  free, _ = grpo.policy_loss(logp, old, None, np.array([-1.0]), np.ones((1, 1)), **kwargs)
  bounded, m = grpo.policy_loss(
      logp, old, None, np.array([-1.0]), np.ones((1, 1)), dual_clip=3.0, **kwargs
  )
  np.testing.assert_allclose(float(free), np.exp(3.0), rtol=1e-6)
  np.testing.assert_allclose(float(bounded), 3.0, rtol=1e-6)
  assert float(m["dual_clip_frac"]) == 1.0


def test_denominators_make_micro_batch_losses_sum_to_full_batch():
  logp, old, ref, adv, mask, _ = random_inputs(2, b=8)
  for agg in ("token-mean", "seq-mean-token-mean"):
    kwargs = dict(kl_coef=0.1, kl_estimator="k3", agg=agg)
    full, _ = grpo.policy_loss(logp, old, ref, adv, mask, **kwargs)
    denominators = grpo.loss_denominators(mask)
    parts = [
        grpo.policy_loss(
            logp[s], old[s], ref[s], adv[s], mask[s], denominators=denominators, **kwargs
        )[0]
        for s in (slice(0, 3), slice(3, 8))
    ]
    np.testing.assert_allclose(float(sum(parts)), float(full), rtol=1e-6)


def test_large_log_ratios_stay_finite():
  logp = np.array([[0.0, -200.0]], np.float32)
  old = np.array([[-200.0, 0.0]], np.float32)
  loss, metrics = grpo.policy_loss(
      logp, old, old, np.array([1.0]), np.ones((1, 2)), kl_coef=1.0, kl_estimator="k3"
  )
  assert np.isfinite(float(loss)) and np.isfinite(float(metrics["kl"]))


def test_unknown_choices_name_the_valid_ones():
  logp, old, ref, adv, mask, _ = random_inputs(3)
  with pytest.raises(ValueError, match="k1"):
    grpo.policy_loss(logp, old, ref, adv, mask, kl_estimator="k4")
  with pytest.raises(ValueError, match="seq-mean-token-mean"):
    grpo.policy_loss(logp, old, ref, adv, mask, agg="seq-sum")
  with pytest.raises(ValueError, match="ref_logprobs"):
    grpo.policy_loss(logp, old, None, adv, mask, kl_coef=0.1)
