"""Supervised next-token step: the loss against a numpy reference, learning a tiny task, the
chunked cross-entropy against the full-vocabulary one, and exact micro-batch accumulation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rzero_jax.models import forward, init_lora, init_params
from rzero_jax.training import TrainConfig, init_train_state
from rzero_jax.training.logprobs import target_logprobs_from_hidden
from rzero_jax.training.sft import make_sft_batch, make_sft_step, sft_grads, sft_loss
from tests.support.hf_fixtures import tiny_config

CFG = tiny_config(vocab_size=23, intermediate_size=64, head_dim=8, tie_embeddings=True)
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
  train_cfg = TrainConfig(learning_rate=1e-2, weight_decay=0.0, max_grad_norm=None)  # Adam
  step = make_sft_step(CFG, train_cfg)
  state, metrics = step(init_train_state(CFG, train_cfg, params), batch)
  np.testing.assert_allclose(float(metrics["loss"]), first, rtol=1e-5)
  assert float(metrics["grad_norm"]) > 0 and float(metrics["learning_rate"]) == pytest.approx(1e-2)
  for _ in range(60):
    state, metrics = step(state, batch)
  assert int(state.step) == 61 and float(metrics["loss"]) < 0.1 * first
  assert float(metrics["accuracy"]) == 1.0


# --- Chunked cross-entropy and micro-batches (issue #26, item 10) ----------------------------


def _padded_batch():
  """Rows of different lengths, right-padded, targets on the completions only: 4, 3, 3 and 0
  targets, so two (strided) micro-batches hold 7 (rows 0, 2) and 3 (rows 1, 3)."""
  prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [3, 1]]
  completions = [[10, 11, 12, 2], [13, 14, 2], [15, 2, 16], [4]]
  batch = make_sft_batch(prompts, completions, 12, pad_id=0)
  batch["loss_mask"][3] = 0  # a row with no target at all
  return batch


def _plain_loss(cfg, params, batch):
  """The full-vocabulary reference: [B, T, V] float32 log-softmax (the step before the change)."""
  logits = forward(cfg, params, batch["tokens"][:, :-1], batch["attention_mask"][:, :-1])
  targets = batch["tokens"][:, 1:]
  mask = jnp.asarray(batch["loss_mask"][:, 1:], jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  count = jnp.maximum(mask.sum(), 1.0)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return (nll * mask).sum() / count, (correct * mask).sum() / count


def _assert_trees_close(actual, expected, rtol):
  """Leaf by leaf, within `rtol` of each element or of the leaf's largest entry (float32 sums in
  another order differ by a few ulps of the largest terms, so near-zero entries need the latter)."""

  def check(a, e):
    a, e = np.asarray(a), np.asarray(e)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * float(np.abs(e).max()))

  jax.tree.map(check, actual, expected)


@pytest.mark.parametrize(
    "cfg,chunks", [(CFG, (4, 256)), (dataclasses.replace(CFG, tie_embeddings=False), (4,))]
)
@pytest.mark.slow
def test_chunked_loss_and_grads_equal_the_full_vocab_computation(cfg, chunks):
  params = init_params(cfg, jax.random.PRNGKey(2), std=0.5)
  batch = _padded_batch()  # 11 predicted positions: chunks of 4 leave a partial last chunk
  expected = jax.jit(jax.value_and_grad(lambda p: _plain_loss(cfg, p, batch), has_aux=True))
  (expected_loss, expected_acc), expected_grads = expected(params)
  for chunk in chunks:  # 256: one chunk longer than the sequence
    grad_fn = jax.value_and_grad(
        lambda p: sft_loss(cfg, p, batch, loss_chunk_size=chunk), has_aux=True
    )
    (loss, metrics), grads = jax.jit(grad_fn)(params)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["accuracy"]), float(expected_acc), rtol=1e-6)
    assert float(metrics["tokens"]) == 10
    _assert_trees_close(grads, expected_grads, rtol=1e-5)


def test_target_logprobs_from_hidden_match_the_logits():
  params = init_params(CFG, jax.random.PRNGKey(3), std=0.5)
  tokens = jax.random.randint(jax.random.PRNGKey(4), (3, 9), 0, CFG.vocab_size)
  targets = jnp.roll(tokens, -1, axis=1)

  @jax.jit
  def both(p):
    logits = forward(CFG, p, tokens) / 0.7
    chunked = target_logprobs_from_hidden(
        CFG, p, forward(CFG, p, tokens, hidden=True), targets, chunk_size=4, temperature=0.7
    )
    return logits, chunked

  logits, (logprobs, hits) = both(params)
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(logprobs), np.asarray(expected), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(hits, jnp.argmax(logits, -1) == targets)


def test_loss_gradient_never_holds_batch_by_length_by_vocab_logits():
  """The compiled loss + gradient needs less scratch memory than one [B, T, V] float32 array (the
  full log-softmax needed several), and micro-batches shrink it further."""
  cfg = dataclasses.replace(CFG, vocab_size=32768)
  b, t = 2, 256
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  shape = jax.ShapeDtypeStruct((b, t), jnp.int32)
  batch = {"tokens": shape, "loss_mask": shape, "attention_mask": shape}
  logits_bytes = b * (t - 1) * cfg.vocab_size * 4  # 64 MiB

  def temp_bytes(fn):
    return jax.jit(fn).lower(params, batch).compile().memory_analysis().temp_size_in_bytes

  loss = lambda p, batch: sft_loss(cfg, p, batch, loss_chunk_size=32)[0]  # noqa: E731
  whole = temp_bytes(jax.grad(loss))
  assert whole < logits_bytes, (whole, logits_bytes)  # 27 MiB here; the old loss took 266 MiB
  micro = temp_bytes(
      lambda p, batch: sft_grads(cfg, p, batch, micro_batch_size=1, loss_chunk_size=32)[0]
  )
  assert micro < whole, (micro, whole)  # 18 MiB


@pytest.mark.slow
def test_micro_batched_gradients_equal_the_whole_batch():
  """`sft_grads` (the step's gradient): micro-batches of 1 and 2 rows, whose target counts differ
  (4, 3, 3, 0 rows; 7 and 3 per half), give the whole batch's gradient and metrics, as each
  micro-batch loss is divided by the whole batch's count."""
  batch = _padded_batch()
  params = init_params(CFG, jax.random.PRNGKey(5), std=0.5)
  halves = [{k: v[rows] for k, v in batch.items()} for rows in ([0, 2], [1, 3])]
  half_loss = jax.jit(lambda p, half: sft_loss(CFG, p, half)[0])
  naive = np.mean([float(half_loss(params, half)) for half in halves])
  results = {
      size: jax.jit(
          lambda p, b, size=size: sft_grads(CFG, p, b, micro_batch_size=size, loss_chunk_size=4)
      )(params, batch)
      for size in (None, 1, 2)
  }
  full, full_metrics = results[None]
  assert abs(naive - float(full_metrics["loss"])) > 1e-2  # a mean of micro-batch means is wrong
  assert float(full_metrics["tokens"]) == 10 and float(optax.tree.norm(full)) > 0
  for size in (1, 2):
    grads, metrics = results[size]
    _assert_trees_close(grads, full, rtol=1e-6)
    for k in ("loss", "accuracy", "tokens"):
      np.testing.assert_allclose(float(metrics[k]), float(full_metrics[k]), rtol=1e-6)
  train_cfg = TrainConfig(micro_batch_size=3)
  with pytest.raises(ValueError, match="not a multiple of micro_batch_size=3"):
    make_sft_step(CFG, train_cfg)(init_train_state(CFG, train_cfg, params), batch)


@pytest.mark.slow
def test_train_step_micro_batches_with_lora():
  """The step (`make_sft_step`: clipping + AdamW, TrainConfig.micro_batch_size), LoRA
  adapters over a frozen base: micro-batches give the whole batch's update."""
  cfg = dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0)
  base = init_params(CFG, jax.random.PRNGKey(7), std=0.5)
  batch = _padded_batch()
  states = []
  for size in (None, 2):
    train_cfg = TrainConfig(learning_rate=1e-2, kl_coef=0.0, micro_batch_size=size)
    state = init_train_state(cfg, train_cfg, init_lora(cfg, jax.random.PRNGKey(8)))
    state, metrics = make_sft_step(cfg, train_cfg)(state, batch, base)
    states.append((state, metrics))
  (full, full_metrics), (micro, micro_metrics) = states
  assert int(micro.step) == 1
  # AdamW's first step is ~lr * sign(grad): where a gradient entry is ~0, rounding may flip it.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), micro.params, full.params)
  for k in ("loss", "accuracy", "tokens", "grad_norm"):
    np.testing.assert_allclose(float(micro_metrics[k]), float(full_metrics[k]), rtol=1e-5)
