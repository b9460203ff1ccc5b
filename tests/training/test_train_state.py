"""TrainConfig validation, learning-rate schedules and the optimizer."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax.training import TrainConfig, make_optimizer, make_schedule


def test_defaults_are_the_papers():
  cfg = TrainConfig()
  assert (cfg.learning_rate, cfg.weight_decay, cfg.schedule, cfg.max_grad_norm) == (
      1e-6,
      1e-2,
      "constant",
      1.0,
  )
  assert (cfg.clip_low, cfg.clip_high, cfg.kl_estimator, cfg.kl_coef) == (0.2, 0.28, "k3", 1e-2)
  hash(cfg)  # jit-static


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(schedule="step"), "constant"),
        (dict(schedule="cosine", total_steps=0), "total_steps"),
        (dict(kl_estimator="kl"), "k3"),
        (dict(agg="mean"), "token-mean"),
        (dict(dual_clip=0.5), "dual_clip"),
        (dict(micro_batch_size=0), "micro_batch_size"),
        (dict(temperature=0.0), "temperature"),
        (dict(compute_dtype="fp8"), "dtype"),
    ],
)
def test_bad_settings_are_rejected(bad, message):
  with pytest.raises(ValueError, match=message):
    TrainConfig(**bad)


def test_schedules():
  lr = 1e-3
  constant = make_schedule(TrainConfig(learning_rate=lr, warmup_steps=4))
  np.testing.assert_allclose(
      [float(constant(s)) for s in (0, 2, 4, 100)], [0, lr / 2, lr, lr], rtol=1e-6
  )
  cosine = make_schedule(
      TrainConfig(
          learning_rate=lr, schedule="cosine", warmup_steps=2, total_steps=12, min_lr_ratio=0.1
      )
  )
  np.testing.assert_allclose(
      [float(cosine(s)) for s in (2, 7, 12)], [lr, 0.55 * lr, 0.1 * lr], rtol=1e-5
  )
  linear = make_schedule(TrainConfig(learning_rate=lr, schedule="linear", total_steps=10))
  np.testing.assert_allclose([float(linear(s)) for s in (0, 5, 10)], [lr, lr / 2, 0.0], atol=1e-9)


def test_optimizer_clips_then_applies_adamw():
  # A large eps makes Adam's first step lr * g / (|g| + eps), so the clipping is visible.
  cfg = TrainConfig(learning_rate=0.1, weight_decay=0.5, max_grad_norm=1.0, eps=10.0)
  params = {"w": jnp.array([2.0, -1.0])}
  grads = {"w": jnp.array([30.0, -40.0])}  # global norm 50 -> clipped to [0.6, -0.8]
  for max_norm, g in ((1.0, np.array([0.6, -0.8])), (None, np.array([30.0, -40.0]))):
    opt = make_optimizer(dataclasses.replace(cfg, max_grad_norm=max_norm))
    updates, _ = opt.update(grads, opt.init(params), params)
    want = -0.1 * (g / (np.abs(g) + 10.0) + 0.5 * np.array([2.0, -1.0]))  # decoupled weight decay
    np.testing.assert_allclose(updates["w"], want, rtol=1e-5)
