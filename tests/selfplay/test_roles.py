"""A role's sampler copy: bf16 weights in the sampler strategy's layout, made on device from the
train state, refreshed when the state changes, LoRA merged; it samples what the trained params do.
LoRA adapters start from a seed fixed by the role's name, whatever the name.
"""

import dataclasses

import jax
import numpy as np
import pytest

from rzero_jax import sharding
from rzero_jax.models import load_pretrained
from rzero_jax.rzero.config import default_config
from rzero_jax.sampling import generate
from rzero_jax.selfplay import roles
from rzero_jax.selfplay.util import PHASE_IDS, RunError

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
