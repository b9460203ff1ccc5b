"""A role's sampler copy: bf16 weights in the sampler strategy's layout, made on device from the
train state, refreshed when the state changes, LoRA merged; it samples what the trained params do.
LoRA adapters start from a seed fixed by the role's name, whatever the name. An update reports the
sampler-vs-trainer mismatch and, with tis_cap, weights the loss by it.
"""

import dataclasses

import jax
import numpy as np
import pytest

from rzero_jax import multihost, sharding
from rzero_jax.models import load_pretrained
from rzero_jax.rzero.config import default_config
from rzero_jax.sampling import generate
from rzero_jax.selfplay import roles
from rzero_jax.selfplay.util import PHASE_IDS, RunError
from rzero_jax.training import make_train_step
from rzero_jax.training.batch import build_batch

PROMPTS = [[5, 17, 3], [8, 1, 44, 90, 2, 61], [12], [3, 3, 9, 70]]
GREEDY = dict(max_new_tokens=12, temperature=0.0, num_samples=2)


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh("data:2,tensor:4")


def make(tiny_qwen3_dir, mesh, *, sampler_strategy, lora_rank=0, name="solver"):
  cfg, base = load_pretrained(tiny_qwen3_dir, dtype="float32", mesh=mesh, strategy="fsdp")
  cfg = dataclasses.replace(cfg, dtype="bfloat16")
  settings = default_config().solver
  settings.update(strategy="fsdp", sampler_strategy=sampler_strategy)
  settings.lora.rank = lora_rank
  plans = roles.role_plans(mesh, name, settings)
  return roles.make_role(
      name, settings, cfg, base, plans=plans, param_dtype="float32", donate=False, seed=1
  )


def test_bf16_sampler_copy_in_tp_layout_samples_what_the_training_params_do(tiny_qwen3_dir, mesh):
  role = make(tiny_qwen3_dir, mesh, sampler_strategy="tp")
  cfg, params = role.sampler_params()
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("bfloat16")}
  q = params["layers"]["q"]  # [layers, embed, heads, head_dim]: heads split over "tensor"
  assert q.sharding.spec[2] == "tensor" and q.sharding.spec[1] is None
  assert role.sampler_params()[1] is params  # unchanged state: no new copy
  trained = generate(role.model_cfg, role.params, PROMPTS, plan=role.plan, **GREEDY)
  copied = generate(cfg, params, PROMPTS, mesh=mesh, strategy="tp", **GREEDY)
  assert copied.tokens == trained.tokens
  # bf16 in two layouts (tensor-split vs batch-split sums): a few bf16 roundings of log-probs
  # near -3 (resolution ~0.012) apart; measured up to 0.03 with jax 0.12.
  np.testing.assert_allclose(copied.logprob_array, trained.logprob_array, atol=6e-2)


def test_sampler_copy_follows_the_train_state(tiny_qwen3_dir, mesh):
  role = make(tiny_qwen3_dir, mesh, sampler_strategy="tp")
  before = role.sampler_params()[1]
  role.state = role.state.replace(params=jax.tree.map(lambda p: p * 0.5, role.state.params))
  after = role.sampler_params()[1]
  np.testing.assert_allclose(
      np.asarray(after["embed"], np.float32),
      np.asarray(before["embed"], np.float32) * 0.5,
      rtol=1e-2,
  )


def test_same_dtype_and_layout_use_the_trained_params(tiny_qwen3_dir, mesh):
  role = make(tiny_qwen3_dir, mesh, sampler_strategy="")
  role.model_cfg = dataclasses.replace(role.model_cfg, dtype="float32")
  cfg, params = role.sampler_params()
  assert cfg is role.model_cfg and jax.tree.leaves(params)[0] is jax.tree.leaves(role.params)[0]


def test_lora_adapters_are_merged_into_the_sampler_copy(tiny_qwen3_dir, mesh):
  role = make(tiny_qwen3_dir, mesh, sampler_strategy="tp", lora_rank=4)
  role.model_cfg = dataclasses.replace(role.model_cfg, dtype="float32")  # exact comparison
  adapters = jax.tree.map(lambda a: a + 0.05, role.state.params)  # B != 0: the adapters act
  role.state = role.state.replace(params=adapters)
  cfg, params = role.sampler_params()
  assert cfg.lora_rank == 0 and not any("lora" in k for k in params["layers"])
  trained = generate(role.model_cfg, role.params, PROMPTS, plan=role.plan, **GREEDY)
  copied = generate(cfg, params, PROMPTS, mesh=mesh, strategy="tp", **GREEDY)
  assert copied.tokens == trained.tokens
  np.testing.assert_allclose(copied.logprob_array, trained.logprob_array, atol=1e-4)


def test_lora_seeds_of_rzero_roles_are_unchanged():
  # derive_seed(seed, LORA_SEED_TAG, <phase index of the role's name>), as before any role name
  # was allowed: R-Zero's LoRA runs (and their resume tests) keep their initial adapters.
  for name in ("challenger", "solver", "verifier"):
    for seed in (0, 1, 17):
      words = [seed, roles.LORA_SEED_TAG, PHASE_IDS[name]]
      old = int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)
      assert roles.lora_seed(seed, name) == old
  assert roles.lora_seed(0, "challenger") == 1369798745
  assert roles.lora_seed(0, "actor") == 1802187549  # fixed in every process


def _lora_a(role):
  return {k: np.asarray(v) for k, v in role.state.params["layers"].items() if k.endswith("_a")}


def test_lora_roles_of_any_name_start_from_their_own_fixed_adapters(tiny_qwen3_dir, mesh):
  made = {}
  for name in ("actor", "critic_7", "actor", "solver"):
    role = make(tiny_qwen3_dir, mesh, sampler_strategy="", lora_rank=4, name=name)
    assert role.name == name and role.base is not None and role.model_cfg.lora_rank == 4
    a = _lora_a(role)
    assert a and all(np.abs(x).sum() > 0 for x in a.values())  # A random, B zero
    if name in made:  # the same name gives the same adapters (deterministic across calls)
      for k in a:
        np.testing.assert_array_equal(a[k], made[name][k])
    made[name] = a
  for x, y in (("actor", "critic_7"), ("actor", "solver"), ("critic_7", "solver")):
    assert not np.array_equal(made[x]["q_lora_a"], made[y]["q_lora_a"])


def test_negative_lora_rank_fails_clearly(tiny_qwen3_dir, mesh):
  with pytest.raises(RunError, match=r"config.critic_7.lora.rank must be >= 0 .*got -1"):
    make(tiny_qwen3_dir, mesh, sampler_strategy="", lora_rank=-1, name="critic_7")


def test_role_plans_default_to_the_training_strategy_and_name_a_bad_field(mesh):
  settings = default_config().solver
  settings.update(strategy="fsdp", sampler_strategy="")
  plan, sampler_plan = roles.role_plans(mesh, "solver", settings)
  assert plan == sampler_plan == sharding.make_plan(mesh, "fsdp")
  settings.sampler_strategy = "diagonal"
  with pytest.raises(RunError, match=r"config.solver.sampler_strategy: Unknown sharding strategy"):
    roles.role_plans(mesh, "solver", settings)


def test_update_reports_the_mismatch_and_weights_by_the_sampler(tiny_qwen3_dir, mesh):
  # The sampler's log-probs are the trainer's plus a known shift per token, so every mismatch
  # metric and the TIS weights (cap 2: a shift of -1 gives e > 2, clipped) are known exactly.
  role = make(tiny_qwen3_dir, mesh, sampler_strategy="")
  settings = role.settings.train
  settings.update(kl_coef=0.0, micro_batch_size=4, tis_cap=2.0)
  role.train_cfg = roles.train_config(role.settings, "solver", "float32")
  role.train_step = make_train_step(role.model_cfg, role.train_cfg, role.plan)
  rng = np.random.default_rng(0)
  prompts = PROMPTS * 2
  completions = [list(rng.integers(1, 97, rng.integers(2, 7))) for _ in prompts]  # vocab 97
  layout = dict(prompt_len=8, completion_len=6, pad_id=0)
  batch = build_batch(
      prompts, completions, [[0.0] * len(c) for c in completions], np.zeros(8), **layout
  )
  batch = multihost.host_to_global(batch, role.plan)
  trainer_all = np.asarray(role.logprob_fn(role.params, batch["tokens"], batch["attention_mask"]))
  trainer = [trainer_all[i, 8 : 8 + len(c)] for i, c in enumerate(completions)]
  shifts = [rng.choice([0.0, 0.1, -0.4, -1.0, 1.2], len(c)).astype(np.float32) for c in completions]
  sampler = [list(t + s) for t, s in zip(trainer, shifts)]
  out = roles.Completions(completions, sampler, [True] * 8)
  advantages = rng.normal(size=8)
  with pytest.raises(RunError, match="tis_cap needs config.recompute_old_logprobs"):
    roles.update(
        role, prompts, out, advantages, mini_batch_size=4, recompute_old_logprobs=False, **layout
    )
  metrics = roles.update(role, prompts, out, advantages, mini_batch_size=4, **layout)
  d = -np.concatenate(shifts).astype(np.float64)  # trainer - sampler
  want = {
      "logprob_mismatch": np.abs(d).mean(),
      "mismatch_kl": (np.exp(d) - d - 1).mean(),
      "mismatch_max_ratio": np.exp(1.2),
      "mismatch_share_close": (d == 0).mean(),
  }
  for key, value in want.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert 0 < want["mismatch_share_close"] < 1
  per_mini = [np.concatenate([-s for s in shifts[k : k + 4]]) for k in (0, 4)]
  weights = [np.minimum(np.exp(x), 2.0) for x in per_mini]
  np.testing.assert_allclose(metrics["tis_weight"], np.mean([w.mean() for w in weights]), rtol=1e-5)
  clipped = np.mean([(x == 1.0).mean() for x in per_mini])
  np.testing.assert_allclose(metrics["tis_clip_frac"], clipped, rtol=1e-6)
  assert clipped > 0 and metrics["skipped"] == 0
