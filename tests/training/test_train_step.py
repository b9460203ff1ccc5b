"""The GRPO train step: exact against PyTorch, exact under micro-batching and FSDP, skips non-finite
updates, and learns a synthetic reward from the sampler's samples."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax.models import param_shapes
from rzero_jax.models.hf_io import hf_state_dict
from rzero_jax.sharding import make_mesh, make_plan
from rzero_jax.training import (
    TrainConfig,
    compute_grads,
    group_advantages,
    init_train_state,
    make_logprob_fn,
    make_train_step,
)
from tests.support.hf_fixtures import tiny_config

TINY = tiny_config(
    vocab_size=32, intermediate_size=64, num_layers=1, head_dim=8, tie_embeddings=True
)
# Every feature on: accumulation, clip-higher, dual clip, k3 KL, temperature, active grad clipping.
STEP_CFG = TrainConfig(
    learning_rate=1e-2,
    weight_decay=0.1,
    max_grad_norm=0.05,
    eps=1e-6,
    clip_low=0.2,
    clip_high=0.28,
    dual_clip=1.5,
    kl_coef=0.1,
    kl_estimator="k3",
    micro_batch_size=8,
    temperature=0.7,
)
grads_fn = jax.jit(compute_grads, static_argnums=(0, 1))  # one compile per (model, train) config


def random_params(cfg, seed, std=0.2):
  """Random params in numpy (quicker than compiling jax.random for each shape), norms randomised
  around 1 so that a wrong norm convention would show."""
  rng = np.random.default_rng(seed)
  is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)

  def init(path, shape):
    if "norm" in jax.tree_util.keystr(path):
      return (1.0 + 0.3 * rng.normal(size=shape)).astype(np.float32)
    return (std * rng.normal(size=shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(init, param_shapes(cfg), is_leaf=is_shape)


def grpo_batch(cfg, params, batch_size=8, length=12, seed=0, temperature=STEP_CFG.temperature):
  """A batch in the step's format: left-padded prompts, right-padded completions, off-policy
  old log-probs (current ones plus noise, so clipping is active), a reference and advantages."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, (batch_size, length)).astype(np.int32)
  attention = np.ones((batch_size, length), np.int32)
  loss_mask = np.zeros((batch_size, length), np.float32)
  for i in range(batch_size):
    prompt_pad, prompt_len = rng.integers(0, 3), rng.integers(2, 5)
    completion_len = rng.integers(1, length - prompt_pad - prompt_len + 1)
    attention[i, :prompt_pad] = 0
    end = prompt_pad + prompt_len + completion_len
    attention[i, end:] = 0
    loss_mask[i, prompt_pad + prompt_len : end] = 1
  current = np.asarray(make_logprob_fn(cfg, temperature)(params, tokens, attention))
  noise = lambda scale: (scale * rng.normal(size=current.shape)).astype(np.float32)
  return {
      "tokens": tokens,
      "attention_mask": attention,
      "loss_mask": loss_mask,
      "old_logprobs": (current + noise(0.3)) * attention,
      "ref_logprobs": (current + noise(0.5)) * attention,
      "advantages": rng.normal(size=batch_size).astype(np.float32),
  }


@pytest.fixture(scope="module")
def tiny():
  params = random_params(TINY, 0)
  return params, grpo_batch(TINY, params)


@pytest.fixture(scope="module")
def unsharded_step():
  return make_train_step(TINY, STEP_CFG)


# ---------------------------------------------------------------------------------------------
# Against PyTorch: the transformers model with the same weights, the GRPO loss written in torch.


def torch_model(cfg, params):
  import torch
  import transformers

  config = transformers.AutoConfig.for_model(**cfg.to_hf_dict())
  model = transformers.AutoModelForCausalLM.from_config(
      config, dtype=torch.float32, attn_implementation="eager"
  )
  state = {k: torch.from_numpy(v) for k, v in hf_state_dict(cfg, params).items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embedding
  return model


def torch_grpo_loss(model, batch, cfg):
  """Full-batch GRPO loss (token-mean, dual clip, k3 KL) in torch, written independently."""
  import torch

  t = lambda k: torch.as_tensor(batch[k])
  tokens = t("tokens").long()
  positions = torch.clamp(torch.cumsum(t("attention_mask"), -1) - 1, min=0)
  logits = model(
      input_ids=tokens, attention_mask=t("attention_mask"), position_ids=positions
  ).logits
  logp = torch.log_softmax(logits[:, :-1] / cfg.temperature, -1)
  logp = logp.gather(-1, tokens[:, 1:, None])[..., 0]
  mask, old, ref = t("loss_mask")[:, 1:], t("old_logprobs")[:, 1:], t("ref_logprobs")[:, 1:]
  adv = t("advantages")[:, None]
  ratio = torch.exp(torch.clamp(logp - old, -20, 20))
  pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - cfg.clip_low, 1 + cfg.clip_high))
  pg = torch.where(adv < 0, torch.minimum(pg, -adv * cfg.dual_clip), pg)
  kl = torch.exp(ref - logp) - (ref - logp) - 1
  return ((pg + cfg.kl_coef * kl) * mask).sum() / mask.sum()


@pytest.fixture(scope="module")
def torch_reference(tiny):
  params, batch = tiny
  model = torch_model(TINY, params)
  loss = torch_grpo_loss(model, batch, STEP_CFG)
  loss.backward()
  grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
  return model, loss.item(), grads


def test_loss_and_grads_match_pytorch(tiny, torch_reference):
  params, batch = tiny
  _, want_loss, want_grads = torch_reference
  cfg = dataclasses.replace(STEP_CFG, micro_batch_size=1)  # 8 micro-batches vs torch's full batch
  loss, grads, metrics = grads_fn(TINY, cfg, params, batch)
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-6)
  assert 0 < float(metrics["clip_frac"]) < 1 and float(metrics["dual_clip_frac"]) > 0
  got = hf_state_dict(TINY, grads)
  assert set(got) == set(want_grads)
  for name, want in want_grads.items():
    np.testing.assert_allclose(got[name], want, atol=1e-6 + 1e-4 * np.abs(want).max(), err_msg=name)


def test_step_matches_pytorch_adamw(tiny, torch_reference, unsharded_step):
  import torch

  params, batch = tiny
  model, _, want_grads = torch_reference
  state, metrics = unsharded_step(init_train_state(TINY, STEP_CFG, params), batch)
  grad_norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in want_grads.values()))
  np.testing.assert_allclose(float(metrics["grad_norm"]), grad_norm, rtol=1e-4)
  assert grad_norm > STEP_CFG.max_grad_norm  # clipping is exercised
  torch.nn.utils.clip_grad_norm_(model.parameters(), STEP_CFG.max_grad_norm)
  optimizer = torch.optim.AdamW(
      model.parameters(),
      lr=STEP_CFG.learning_rate,
      betas=(STEP_CFG.b1, STEP_CFG.b2),
      eps=STEP_CFG.eps,
      weight_decay=STEP_CFG.weight_decay,
  )
  optimizer.step()
  got = hf_state_dict(TINY, state.params)
  for name, p in model.named_parameters():
    np.testing.assert_allclose(
        got[name], p.detach().numpy(), atol=1e-2 * STEP_CFG.learning_rate, err_msg=name
    )
  assert int(state.step) == 1 and int(metrics["skipped"]) == 0


# ---------------------------------------------------------------------------------------------
# Exactness of accumulation and sharding; non-finite skip; bf16 compute.


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_one_by_eight_equals_eight_by_one(tiny, agg):
  params, batch = tiny
  (loss8, grads8, m8), (loss1, grads1, m1) = (
      grads_fn(TINY, dataclasses.replace(STEP_CFG, agg=agg, micro_batch_size=micro), params, batch)
      for micro in (8, 1)
  )
  np.testing.assert_allclose(float(loss1), float(loss8), rtol=1e-5, atol=1e-6)
  for key in ("pg_loss", "kl", "clip_frac", "entropy", "num_tokens"):
    np.testing.assert_allclose(float(m1[key]), float(m8[key]), rtol=1e-5, err_msg=key)
  for g1, g8 in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads8)):
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g8), atol=1e-6 + 1e-4 * np.abs(g8).max())


def test_fsdp_on_eight_devices_equals_unsharded(tiny, unsharded_step):
  params, batch = tiny
  batch = {k: np.concatenate([v, v[::-1]]) for k, v in batch.items()}  # 16 rows: 2 micro-batches
  plan = make_plan(make_mesh("fsdp:8"), "fsdp")
  runs = []
  for step, plan_ in ((unsharded_step, None), (make_train_step(TINY, STEP_CFG, plan), plan)):
    state = init_train_state(TINY, STEP_CFG, params, plan_)
    metrics = []
    for _ in range(2):
      state, m = step(state, batch)
      metrics.append(m)
    runs.append((state, metrics))
  (plain, plain_metrics), (sharded, sharded_metrics) = runs
  assert "fsdp" in sharded.params["layers"]["q"].sharding.spec
  assert (
      sharded.opt_state[1][0].mu["layers"]["q"].sharding == sharded.params["layers"]["q"].sharding
  )
  for a, b in zip(plain_metrics, sharded_metrics):
    for key in ("loss", "grad_norm", "kl", "clip_frac"):
      np.testing.assert_allclose(float(b[key]), float(a[key]), rtol=1e-4, err_msg=key)
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(sharded.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-2 * STEP_CFG.learning_rate)


def test_non_finite_step_is_skipped(tiny, unsharded_step):
  params, batch = tiny
  state = init_train_state(TINY, STEP_CFG, params)
  state, metrics = unsharded_step(state, batch)
  assert int(metrics["skipped"]) == 0 and int(state.step) == 1
  before = jax.tree.map(np.asarray, (state.params, state.opt_state))
  bad = dict(batch, advantages=batch["advantages"].copy())
  bad["advantages"][3] = np.nan
  state, metrics = unsharded_step(state, bad)
  assert int(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 1  # skipped updates do not count
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_array_equal(a, np.asarray(b))
  state, metrics = unsharded_step(state, batch)  # training continues after a skipped step
  assert int(metrics["skipped"]) == 0 and int(state.step) == 2


def test_bfloat16_compute_keeps_float32_master_weights(tiny, unsharded_step):
  params, batch = tiny
  cfg = dataclasses.replace(STEP_CFG, compute_dtype="bfloat16")
  state = init_train_state(TINY, cfg, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  _, want = unsharded_step(init_train_state(TINY, STEP_CFG, params), batch)
  state, got = make_train_step(TINY, cfg)(state, batch)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert int(got["skipped"]) == 0
  np.testing.assert_allclose(float(got["loss"]), float(want["loss"]), rtol=0.05, atol=0.02)


# ---------------------------------------------------------------------------------------------
# A real learning test: sample with the sampler, reward the share of a target token, train.


def tis_batch(batch, seed=1):
  """`batch` with the sampler's log-probs: the old (trainer) ones plus noise, so the cap bites."""
  noise = np.random.default_rng(seed).normal(0, 0.5, batch["old_logprobs"].shape)
  sampler = (batch["old_logprobs"] + noise.astype(np.float32)) * batch["attention_mask"]
  return dict(batch, sampler_logprobs=sampler)


def test_tis_step_equals_the_weighted_reference_loss(tiny):
  from tests.training.test_grpo import np_policy_loss

  params, batch = tiny
  batch = tis_batch(batch)
  cfg = dataclasses.replace(STEP_CFG, tis_cap=1.5, micro_batch_size=2)
  current = np.asarray(
      make_logprob_fn(TINY, cfg.temperature)(params, batch["tokens"], batch["attention_mask"])
  )
  fields = ("clip_low", "clip_high", "dual_clip", "kl_coef", "kl_estimator", "agg", "tis_cap")
  want_loss, want = np_policy_loss(
      current.astype(np.float64),
      *(batch[k] for k in ("old_logprobs", "ref_logprobs", "advantages", "loss_mask")),
      sampler=batch["sampler_logprobs"],
      **{k: getattr(cfg, k) for k in fields},
  )
  state, metrics = make_train_step(TINY, cfg)(init_train_state(TINY, cfg, params), batch)
  np.testing.assert_allclose(float(metrics["loss"]), want_loss, rtol=1e-5, atol=1e-6)
  for key in ("pg_loss", "tis_weight", "tis_clip_frac"):
    np.testing.assert_allclose(float(metrics[key]), want[key], rtol=1e-5, atol=1e-6, err_msg=key)
  assert 0 < float(metrics["tis_clip_frac"]) < 1 and int(state.step) == 1
  plain, _, _ = grads_fn(TINY, STEP_CFG, params, batch)  # tis_cap None ignores sampler_logprobs
  assert float(plain) == float(grads_fn(TINY, STEP_CFG, params, dict(tiny[1]))[0])


def test_tis_step_needs_sampler_logprobs(tiny):
  params, batch = tiny
  with pytest.raises(ValueError, match="sampler_logprobs"):
    compute_grads(TINY, dataclasses.replace(STEP_CFG, tis_cap=2.0), params, batch)
  with pytest.raises(ValueError, match="tis_cap must be > 0"):
    dataclasses.replace(STEP_CFG, tis_cap=0.0)


def test_grpo_learns_to_emit_a_target_token():
  from rzero_jax.sampling import generate

  cfg = dataclasses.replace(TINY, vocab_size=16)
  prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
  group, new_tokens, target = 8, 8, 13
  train_cfg = TrainConfig(learning_rate=1e-2, kl_coef=0.0, max_grad_norm=1.0)
  step = make_train_step(cfg, train_cfg)
  state = init_train_state(cfg, train_cfg, random_params(cfg, 1, std=0.02))
  rewards_per_step = []
  for i in range(40):
    out = generate(
        cfg,
        state.params,
        prompts,
        max_new_tokens=new_tokens,
        temperature=1.0,
        num_samples=group,
        seed=i,
    )
    rewards = np.array([np.mean(np.asarray(c) == target) for c in out.tokens], np.float32)
    rewards_per_step.append(rewards.mean())
    if rewards.mean() > 0.6:
      break
    rows = [p for p in prompts for _ in range(group)]
    tokens = np.array([p + c for p, c in zip(rows, out.tokens)], np.int32)  # no stop: equal lengths
    loss_mask = np.zeros(tokens.shape, np.float32)
    loss_mask[:, len(prompts[0]) :] = 1
    old = np.zeros(tokens.shape, np.float32)
    old[:, len(prompts[0]) :] = np.asarray(out.logprobs)
    batch = {
        "tokens": tokens,
        "attention_mask": np.ones_like(tokens),
        "loss_mask": loss_mask,
        "old_logprobs": old,
        "advantages": np.asarray(group_advantages(rewards, group)),
    }
    state, metrics = step(state, batch)
    if i == 0:  # the sampler's log-probs are the trainer's: the ratio starts at exactly ~1
      assert float(metrics["clip_frac"]) == 0.0 and abs(float(metrics["pg_loss"])) < 1e-4
  assert rewards_per_step[0] < 0.2, rewards_per_step
  assert rewards_per_step[-1] > 0.5, rewards_per_step
