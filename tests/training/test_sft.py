"""Supervised next-token step: the loss against a numpy reference, and learning a tiny task."""

import jax
import numpy as np
import optax
import pytest

from rzero_jax.models import ModelConfig, forward, init_params
from rzero_jax.training.sft import make_sft_batch, make_sft_step, sft_loss

CFG = ModelConfig(
    model_type="qwen3",
    vocab_size=23,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qk_norm=True,
    tie_embeddings=True,
)
PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
COMPLETIONS = [[10, 11, 12, 2], [13, 14, 2], [15, 2]]


def _numpy_loss(logits, tokens, loss_mask):
  logits = np.asarray(logits, np.float64)[:, :-1]
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  mask = loss_mask[:, 1:]
  return (nll * mask).sum() / mask.sum()


def test_make_sft_batch_layout():
  batch = make_sft_batch(PROMPTS, COMPLETIONS, 8, pad_id=0)
  np.testing.assert_array_equal(batch["tokens"][0], [1, 2, 3, 10, 11, 12, 2, 0])
  np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 0, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(batch["attention_mask"][2], [1, 1, 1, 1, 1, 1, 0, 0])
  with pytest.raises(ValueError, match="raise `length`"):
    make_sft_batch(PROMPTS, COMPLETIONS, 6, pad_id=0)
  with pytest.raises(ValueError, match="one completion per prompt"):
    make_sft_batch(PROMPTS, COMPLETIONS[:2], 8, pad_id=0)


def test_loss_matches_numpy_reference():
  params = init_params(CFG, jax.random.PRNGKey(0), std=0.5)
  batch = make_sft_batch(PROMPTS, COMPLETIONS, 8, pad_id=0)
  loss, metrics = sft_loss(CFG, params, batch)
  logits = forward(CFG, params, batch["tokens"], batch["attention_mask"])
  expected = _numpy_loss(logits, batch["tokens"], batch["loss_mask"])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(metrics["tokens"]) == sum(len(c) for c in COMPLETIONS)
  # Padding and prompt tokens carry no loss: changing them leaves the loss unchanged.
  shuffled = dict(batch, tokens=np.where(batch["attention_mask"] == 0, 5, batch["tokens"]))
  np.testing.assert_allclose(float(sft_loss(CFG, params, shuffled)[0]), float(loss), rtol=1e-6)


def test_step_reports_pre_update_loss_and_memorizes():
  params = init_params(CFG, jax.random.PRNGKey(1))
  batch = make_sft_batch(PROMPTS, COMPLETIONS, 8, pad_id=0)
  first = float(sft_loss(CFG, params, batch)[0])
  optimizer = optax.adam(1e-2)
  step = make_sft_step(CFG, optimizer)
  opt_state = optimizer.init(params)
  params, opt_state, metrics = step(params, opt_state, batch)
  np.testing.assert_allclose(float(metrics["loss"]), first, rtol=1e-5)
  assert float(metrics["grad_norm"]) > 0
  for _ in range(60):
    params, opt_state, metrics = step(params, opt_state, batch)
  assert float(metrics["loss"]) < 0.1 * first
  assert float(metrics["accuracy"]) == 1.0
