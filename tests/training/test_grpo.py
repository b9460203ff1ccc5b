"""GRPO math against an independent numpy reference."""

import jax
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
    entropy=None,
    sampler=None,
    tis_cap=None
):
  """Loop-per-token reference (float64)."""
  b, t = logp.shape
  pg = np.zeros((b, t))
  kl = np.zeros((b, t))
  clipped = np.zeros((b, t))
  weight = np.ones((b, t))
  for i in range(b):
    for j in range(t):
      if tis_cap is not None:
        weight[i, j] = min(np.exp(np.clip(old[i, j] - sampler[i, j], -20, 20)), tis_cap)
      ratio = np.exp(np.clip(logp[i, j] - old[i, j], -20, 20))
      a = adv[i]
      unclipped_loss = -a * ratio
      clipped_loss = -a * min(max(ratio, 1 - clip_low), 1 + clip_high)
      pg[i, j] = max(unclipped_loss, clipped_loss)
      clipped[i, j] = clipped_loss > unclipped_loss
      if dual_clip is not None and a < 0:
        pg[i, j] = min(pg[i, j], -a * dual_clip)
      pg[i, j] *= weight[i, j]
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
  if tis_cap is not None:
    metrics["tis_weight"] = (weight * mask).sum() / mask.sum()
    metrics["tis_clip_frac"] = ((weight == tis_cap) * mask).sum() / mask.sum()
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


def tis_inputs(seed):
  logp, old, ref, adv, mask, entropy = random_inputs(seed)
  rng = np.random.default_rng(seed + 100)
  sampler = (old + rng.normal(0, 0.5, old.shape)).astype(np.float32)
  return logp, old, ref, adv, mask, entropy, sampler


def np_loss_grad(
    logp, old, ref, adv, mask, sampler, *, clip_low, clip_high, dual_clip, kl_coef, agg, tis_cap
):
  """Analytic d loss / d logp (float64): the TIS-weighted pg term plus the unweighted k3 KL."""
  ratio = np.exp(logp.astype(np.float64) - old)
  a = adv[:, None].astype(np.float64)
  unclipped, clipped = -a * ratio, -a * np.clip(ratio, 1 - clip_low, 1 + clip_high)
  active = unclipped >= clipped  # else the clipped branch: constant in logp
  if dual_clip is not None:
    active &= ~((a < 0) & (-a * dual_clip < unclipped))
  weight = np.minimum(np.exp(old.astype(np.float64) - sampler), tis_cap)
  d = ref.astype(np.float64) - logp
  per_token = np.where(active, -a * ratio, 0.0) * weight + kl_coef * (1.0 - np.exp(d))
  if agg == "token-mean":
    scale = mask / mask.sum()
  else:
    rows = mask.sum(axis=1, keepdims=True)
    scale = mask / np.maximum(rows, 1) / (rows > 0).sum()
  return per_token * scale


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_tis_loss_and_gradient_match_reference(agg, dual_clip):
  logp, old, ref, adv, mask, entropy, sampler = tis_inputs(4)
  kwargs = dict(clip_low=0.2, clip_high=0.28, kl_coef=0.05, agg=agg, dual_clip=dual_clip)
  tis = dict(sampler_logprobs=sampler, tis_cap=1.5)
  loss, metrics = grpo.policy_loss(logp, old, ref, adv, mask, entropy=entropy, **tis, **kwargs)
  want_loss, want = np_policy_loss(
      logp,
      old,
      ref,
      adv,
      mask,
      kl_estimator="k3",
      entropy=entropy,
      sampler=sampler,
      tis_cap=1.5,
      **kwargs
  )
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-6)
  for key, value in want.items():
    np.testing.assert_allclose(float(metrics[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert 0.0 < float(metrics["tis_clip_frac"]) < 1.0  # the cap bites on some tokens only
  grad = jax.grad(lambda lp: grpo.policy_loss(lp, old, ref, adv, mask, **tis, **kwargs)[0])(logp)
  np.testing.assert_allclose(
      np.asarray(grad),
      np_loss_grad(logp, old, ref, adv, mask, sampler, tis_cap=1.5, **kwargs),
      rtol=1e-4,
      atol=1e-7,
  )


def test_tis_weights_get_no_gradient_through_old_or_sampler():
  logp, old, ref, adv, mask, _, sampler = tis_inputs(5)
  loss = lambda o, s: grpo.policy_loss(logp, o, ref, adv, mask, sampler_logprobs=s, tis_cap=2.0)[0]
  assert not np.any(np.asarray(jax.grad(loss, argnums=1)(old, sampler)))


def test_tis_off_is_bitwise_the_plain_loss():
  logp, old, ref, adv, mask, entropy, sampler = tis_inputs(6)
  kwargs = dict(kl_coef=0.05, entropy=entropy, agg="seq-mean-token-mean", dual_clip=3.0)
  plain, plain_m = grpo.policy_loss(logp, old, ref, adv, mask, **kwargs)
  off, off_m = grpo.policy_loss(logp, old, ref, adv, mask, sampler_logprobs=sampler, **kwargs)
  same, same_m = grpo.policy_loss(  # sampler == trainer: every weight is exactly 1
      logp, old, ref, adv, mask, sampler_logprobs=old, tis_cap=2.0, **kwargs
  )
  assert float(off) == float(plain) and float(same) == float(plain)
  assert off_m.keys() == plain_m.keys() and all(float(off_m[k]) == float(plain_m[k]) for k in off_m)
  assert float(same_m["tis_weight"]) == 1.0 and float(same_m["tis_clip_frac"]) == 0.0


@pytest.mark.parametrize(
    "cap, sampler, match",
    [
        (0.0, True, "tis_cap must be > 0"),
        (-2.0, True, "tis_cap must be > 0"),
        (2.0, False, "sampler_logprobs"),
    ],
)
def test_tis_bad_settings_fail(cap, sampler, match):
  logp, old, ref, adv, mask, _, sampler_logp = tis_inputs(7)
  with pytest.raises(ValueError, match=match):
    grpo.policy_loss(
        logp, old, ref, adv, mask, sampler_logprobs=sampler_logp if sampler else None, tis_cap=cap
    )
