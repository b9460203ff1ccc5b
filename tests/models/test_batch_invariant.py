"""Batch-invariant mode (`ModelConfig.batch_invariant`) in bfloat16, jitted, on sharpened tiny
models: the sampler's log-probs equal the training forward's bit for bit whatever the padding,
chunking, rows in flight, length cap or mesh, and a GRPO step on old log-probs from another batch
shape is exactly on-policy. The policy mode (the bfloat16 default) gives none of this."""

import dataclasses

import jax
import numpy as np
import pytest

from rzero_jax.models import functional
from rzero_jax.sampling import generate
from rzero_jax.sharding import make_mesh, make_plan
from rzero_jax.training import TrainConfig, init_train_state, make_logprob_fn, make_train_step
from rzero_jax.training.batch import build_batch
from tests.support.hf_fixtures import tiny_config

TEMPERATURE = 0.7
NEW_TOKENS = 12
SAMPLES = 2
STOP = (5, 17, 42)  # stop tokens, so rows finish at different steps
MODELS = {
    "qwen3": dict(tie_embeddings=True),
    "qwen2": dict(model_type="qwen2", qkv_bias=True, qk_norm=False),  # untied, qkv bias
    "qwen3_lora": dict(tie_embeddings=True, lora_rank=4),
}


def sharp_model(name: str, **mode):
  """(config, float32 params) of a tiny model with large weights (peaked distributions, as trained
  models have) in bfloat16, batch-invariant unless `mode` says otherwise; LoRA adapters nonzero."""
  cfg = dataclasses.replace(tiny_config(max_position_embeddings=128), **MODELS[name])
  params = functional.init_params(cfg, jax.random.key(0), std=0.3)
  if cfg.lora_rank:
    base, adapters = functional.split_lora(params)
    keys = iter(jax.random.split(jax.random.key(1), len(adapters["layers"])))
    adapters = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(next(keys), a.shape), adapters)
    params = functional.combine_params(base, adapters)
  mode = {"dtype": "bfloat16", "batch_invariant": True, **mode}
  return dataclasses.replace(cfg, **mode), params


def sample(cfg, params, prompts, **kw):
  kw = {"max_new_tokens": NEW_TOKENS, **kw}
  return generate(
      cfg,
      params,
      prompts,
      temperature=TEMPERATURE,
      num_samples=SAMPLES,
      stop_token_ids=STOP,
      seed=0,
      **kw,
  )


# LoRA rollouts cost ~3x the plain ones: end-to-end (slow) runs only.
LORA = pytest.param("qwen3_lora", marks=pytest.mark.slow)


@pytest.fixture(scope="module", params=["qwen3", "qwen2", LORA])
def rollout(request):
  """(cfg, params, prompts, sampler output) with all rows in flight, unsharded."""
  cfg, params = sharp_model(request.param)
  rng = np.random.RandomState(0)
  prompts = [rng.randint(1, cfg.vocab_size, rng.randint(3, 11)).tolist() for _ in range(8)]
  return cfg, params, prompts, sample(cfg, params, prompts)


only_qwen3 = pytest.mark.parametrize("rollout", ["qwen3"], indirect=True)


def _batch(prompts, out, prompt_len: int, advantages=None):
  """The left-padded training batch of the rollout (`build_batch`)."""
  rows = [p for p in prompts for _ in range(SAMPLES)]
  advantages = np.zeros(len(rows)) if advantages is None else advantages
  return build_batch(
      rows,
      out.tokens,
      out.logprobs,
      advantages,
      prompt_len=prompt_len,
      completion_len=NEW_TOKENS,
      pad_id=0,
  )


def _assert_same_rollout(a, b):
  assert a.tokens == b.tokens
  for x, y in zip(a.logprobs, b.logprobs):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("prompt_len, chunk", [(12, None), (20, 4), (12, 1)])
def test_sampler_logprobs_equal_the_training_pass(rollout, prompt_len, chunk):
  cfg, params, prompts, out = rollout
  batch = _batch(prompts, out, prompt_len)
  logprobs = make_logprob_fn(cfg, TEMPERATURE, chunk_size=chunk)(
      params, batch["tokens"], batch["attention_mask"]
  )
  mask = batch["loss_mask"] > 0
  assert mask.sum() > 50
  np.testing.assert_array_equal(np.asarray(logprobs)[mask], batch["old_logprobs"][mask])


@only_qwen3
@pytest.mark.parametrize("max_batch_size", [1, 5])
def test_rollout_independent_of_rows_in_flight(rollout, max_batch_size):
  cfg, params, prompts, out = rollout
  _assert_same_rollout(sample(cfg, params, prompts, max_batch_size=max_batch_size), out)


@only_qwen3
def test_shorter_length_cap_gives_the_prefix(rollout):
  cfg, params, prompts, out = rollout
  short = sample(cfg, params, prompts, max_new_tokens=5)
  assert any(len(s) < len(t) for s, t in zip(short.tokens, out.tokens))
  for s, t, s_lp, t_lp in zip(short.tokens, out.tokens, short.logprobs, out.logprobs):
    assert t[: len(s)] == s
    np.testing.assert_array_equal(t_lp[: len(s)], s_lp)


@pytest.mark.slow
@only_qwen3
@pytest.mark.parametrize(
    "strategy, spec",
    [
        ("dp", "data:4"),
        ("fsdp", "fsdp:4"),
        ("tp", "data:2,tensor:2"),
        ("fsdp_tp", "fsdp:2,tensor:2"),
    ],
)
def test_rollout_and_training_pass_independent_of_mesh(rollout, strategy, spec):
  cfg, params, prompts, out = rollout
  mesh = make_mesh(spec, jax.devices()[:4])
  sharded = sample(cfg, params, prompts, mesh=mesh, strategy=strategy, max_batch_size=7)
  _assert_same_rollout(sharded, out)
  batch = _batch(prompts, out, 12)
  logprobs = make_logprob_fn(cfg, TEMPERATURE, make_plan(mesh, strategy), chunk_size=8)(
      params, batch["tokens"], batch["attention_mask"]
  )
  mask = batch["loss_mask"] > 0
  np.testing.assert_array_equal(np.asarray(logprobs)[mask], batch["old_logprobs"][mask])


@pytest.mark.parametrize("rollout", ["qwen3", LORA], indirect=True)
def test_train_step_on_recomputed_old_logprobs_is_exactly_on_policy(rollout):
  cfg, params, prompts, out = rollout
  advantages = np.linspace(-1.0, 1.0, len(out.tokens)).astype(np.float32)
  batch = _batch(prompts, out, 16, advantages)
  train_cfg = TrainConfig(
      learning_rate=1e-3, kl_coef=0.0, micro_batch_size=4, temperature=TEMPERATURE
  )
  base, trained = functional.split_lora(params) if cfg.lora_rank else (None, params)
  step = make_train_step(cfg, train_cfg)
  recomputed = make_logprob_fn(cfg, train_cfg, chunk_size=len(out.tokens))(
      params, batch["tokens"], batch["attention_mask"]
  )
  for old in (batch["old_logprobs"], np.asarray(recomputed)):  # the sampler's, the trainer's
    _, metrics = step(
        init_train_state(cfg, train_cfg, trained), {**batch, "old_logprobs": old}, base
    )
    assert float(metrics["log_ratio_max"]) == 0.0
    assert float(metrics["clip_frac"]) == 0.0


@pytest.mark.parametrize("rollout", ["qwen3", LORA], indirect=True)
def test_scanned_and_rematerialised_forward_equal_the_unrolled_one(rollout):
  cfg, params, prompts, out = rollout
  batch = _batch(prompts, out, 12)
  tokens, mask = batch["tokens"], batch["attention_mask"]

  def logits(**layout):
    c = dataclasses.replace(cfg, **layout)
    return np.asarray(jax.jit(lambda p: functional.forward(c, p, tokens, mask))(params))

  unrolled = logits()
  real = mask > 0
  for layout in (dict(scan_layers=True), dict(remat=True), dict(scan_layers=True, remat=True)):
    np.testing.assert_array_equal(logits(**layout)[real], unrolled[real], err_msg=str(layout))


@pytest.mark.parametrize("batch_invariant", [True, False])
def test_training_pass_across_chunkings(batch_invariant):
  """Whole batch vs one row at a time: bitwise equal in batch-invariant mode; in the policy mode
  the products' accumulation order follows the batch shape, so the last bits differ."""
  cfg, params = sharp_model("qwen3", batch_invariant=batch_invariant)
  rng = np.random.RandomState(0)
  tokens = rng.randint(1, cfg.vocab_size, (8, 24)).astype(np.int32)
  mask = np.ones_like(tokens)
  for i, pad in enumerate(rng.randint(0, 16, 8)):
    tokens[i, :pad], mask[i, :pad] = 0, 0
  whole, rows = (
      np.asarray(make_logprob_fn(cfg, TEMPERATURE, chunk_size=c)(params, tokens, mask))
      for c in (8, 1)
  )
  if batch_invariant:
    np.testing.assert_array_equal(whole, rows)
  elif np.array_equal(whole, rows):
    pytest.skip("this XLA build happens to compute both batch shapes alike")


def test_forward_of_a_few_rows_equals_the_whole_batch():
  """Small batches are where XLA picks other code for a reduction of the same length (a softmax
  sum over one block differed for 1-2 rows of 16, head_dim 64, before the sums became products)."""
  cfg = tiny_config(hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=64, vocab_size=256)
  params = functional.init_params(cfg, jax.random.key(0), std=0.3)
  cfg = dataclasses.replace(cfg, dtype="bfloat16", batch_invariant=True)
  tokens = np.random.RandomState(0).randint(1, cfg.vocab_size, (16, 40)).astype(np.int32)
  forward = jax.jit(lambda p, t: functional.forward(cfg, p, t))
  whole = np.asarray(forward(params, tokens))
  for rows in (1, 2):
    np.testing.assert_array_equal(forward(params, tokens[:rows]), whole[:rows], err_msg=str(rows))
