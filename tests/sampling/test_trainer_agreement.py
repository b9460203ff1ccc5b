"""Sampler and trainer numerics in bfloat16 (the policy mode): the sampler's log-probs are within
twice the training pass's own noise floor (how far it moves across batch shapes), the cached decode
path equals the training forward on the same tokens, and old log-probs recomputed with another
batch shape give ratio 1 exactly in batch-invariant mode, within twice the floor otherwise."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax.models import functional, load_pretrained
from rzero_jax.training.batch import build_batch
from rzero_jax.sampling import generate
from rzero_jax.training import TrainConfig, init_train_state, make_logprob_fn, make_train_step

TEMPERATURE = 0.7
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def sharp_bf16_model(tiny_qwen3_dir):
  """The tiny Qwen3 with its matrices doubled (peaked distributions, as trained models have), run
  in bfloat16 on float32 master weights."""
  cfg, params = load_pretrained(tiny_qwen3_dir, dtype="float32")
  params = jax.tree.map(
      lambda p: p * 2.0 if p.ndim >= 3 or p.shape[0] == cfg.vocab_size else p, params
  )
  return dataclasses.replace(cfg, dtype="bfloat16"), params


@pytest.fixture(scope="module")
def rollout(sharp_bf16_model):
  cfg, params = sharp_bf16_model
  rng = np.random.RandomState(0)
  prompts = [rng.randint(1, cfg.vocab_size, rng.randint(3, 12)).tolist() for _ in range(8)]
  out = generate(
      cfg,
      params,
      prompts,
      max_new_tokens=NEW_TOKENS,
      temperature=TEMPERATURE,
      num_samples=4,
      seed=0,
  )
  return [p for p in prompts for _ in range(4)], out


def _training_logprobs(cfg, params, prompts, out, prompt_len, chunk):
  batch = build_batch(
      prompts,
      out.tokens,
      out.logprobs,
      np.zeros(len(prompts)),
      prompt_len=prompt_len,
      completion_len=NEW_TOKENS,
      pad_id=0,
  )
  logprobs = make_logprob_fn(cfg, TEMPERATURE, chunk_size=chunk)(
      params, batch["tokens"], batch["attention_mask"]
  )
  mask = batch["loss_mask"][:, prompt_len:] > 0
  return np.asarray(logprobs)[:, prompt_len:], batch["old_logprobs"][:, prompt_len:], mask


@pytest.fixture(scope="module")
def training_runs(sharp_bf16_model, rollout):
  """The training pass's log-probs of the rollout, with the sampler's, per (prompt length, rows per
  chunk), the completion mask, and the floor: the largest mean and max |difference| between two
  batch shapes."""
  cfg, params = sharp_bf16_model
  prompts, out = rollout
  shapes = [(16, 32), (16, 8), (24, 4), (16, 1)]
  runs = {s: _training_logprobs(cfg, params, prompts, out, *s) for s in shapes}
  mask = runs[shapes[0]][2]
  diffs = [np.abs(runs[a][0] - runs[b][0])[mask] for a, b in itertools.combinations(shapes, 2)]
  return runs, mask, max(d.mean() for d in diffs), max(d.max() for d in diffs)


def test_sampler_logprobs_within_the_training_pass_noise_floor(training_runs):
  runs, mask, floor_mean, floor_max = training_runs
  diffs = [np.abs(sampler - trainer)[mask] for trainer, sampler, _ in runs.values()]
  mismatch_mean, mismatch_max = max(d.mean() for d in diffs), max(d.max() for d in diffs)
  numbers = dict(mean=(mismatch_mean, floor_mean), max=(mismatch_max, floor_max))
  assert 0 < floor_mean and mismatch_mean <= 2 * floor_mean, numbers


def test_cached_decode_equals_the_training_forward_in_bfloat16(sharp_bf16_model):
  cfg, params = sharp_bf16_model
  tokens = np.random.RandomState(1).randint(1, cfg.vocab_size, (4, 20)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[1, :5] = 0
  full = jax.jit(lambda p, t, m: functional.forward(cfg, p, t, m))(params, tokens, mask)
  positions = functional.default_positions(jnp.asarray(mask))
  kv_valid = jnp.asarray(np.pad(mask, ((0, 0), (0, 12))) > 0)
  step = jax.jit(
      lambda p, t, pos, c, i: functional.forward_with_cache(cfg, p, t, pos, c, i, kv_valid)
  )
  cache, steps = functional.init_cache(cfg, 4, 32), []
  for t in range(tokens.shape[1]):
    logits, cache = step(params, tokens[:, t : t + 1], positions[:, t : t + 1], cache, t)
    steps.append(np.asarray(logits)[:, 0])
  real = mask > 0
  np.testing.assert_allclose(np.stack(steps, 1)[real], np.asarray(full)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_recomputed_old_logprobs_give_ratio_one(
    sharp_bf16_model, rollout, training_runs, batch_invariant
):
  """Old log-probs from a whole-batch pass, micro-batches of 8 in the step, identical params."""
  cfg, params = sharp_bf16_model
  cfg = dataclasses.replace(cfg, batch_invariant=batch_invariant)
  prompts, out = rollout
  advantages = np.linspace(-1.0, 1.0, len(prompts)).astype(np.float32)
  batch = build_batch(
      prompts,
      out.tokens,
      out.logprobs,
      advantages,
      prompt_len=16,
      completion_len=NEW_TOKENS,
      pad_id=0,
  )
  train_cfg = TrainConfig(
      learning_rate=1e-3, kl_coef=0.0, micro_batch_size=8, temperature=TEMPERATURE
  )
  batch["old_logprobs"] = np.asarray(
      make_logprob_fn(cfg, train_cfg, chunk_size=len(prompts))(
          params, batch["tokens"], batch["attention_mask"]
      )
  )
  state = init_train_state(cfg, train_cfg, params)
  _, metrics = make_train_step(cfg, train_cfg)(state, batch)
  assert float(metrics["clip_frac"]) == 0.0
  log_ratio_max, floor_max = float(metrics["log_ratio_max"]), training_runs[3]
  if batch_invariant:
    assert log_ratio_max == 0.0
  else:
    assert log_ratio_max <= 2 * floor_max, (log_ratio_max, floor_max)
