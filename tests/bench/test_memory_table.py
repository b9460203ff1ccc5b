"""The memory table's per-device bytes agree with real sharded arrays and with the parameter count."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax import sharding
from rzero_jax.bench import memory_table
from rzero_jax.models import functional
from tests.support import STRATEGY_MESHES
from tests.support.hf_fixtures import tiny_config

# Indivisible dims on purpose (vocab 97, 2 kv heads), so the fallbacks are counted too.
TINY = tiny_config()


@pytest.mark.parametrize("strategy, spec", STRATEGY_MESHES)
@pytest.mark.parametrize("tied", [True, False])
def test_counts_match_placed_arrays(strategy, spec, tied):
  cfg = dataclasses.replace(TINY, tie_embeddings=tied)
  mesh = sharding.make_mesh(spec)
  host = jax.tree.map(
      lambda shape: np.zeros(shape, np.float32),
      functional.param_shapes(cfg),
      is_leaf=lambda x: isinstance(x, tuple),
  )
  params = functional.shard_params(cfg, host, sharding.make_plan(mesh, strategy))
  cache_shape = functional.cache_shape(cfg, 8, 16)
  cache = jax.device_put(
      np.zeros(cache_shape, jnp.bfloat16),
      sharding.make_plan(mesh, strategy).sharding(functional.CACHE_AXES, cache_shape),
  )
  counted = memory_table.device_bytes(
      cfg, strategy, dict(mesh.shape), batch=8, length=16, param_bytes=4
  )
  for device in mesh.devices.flat:
    assert counted.weights == sharding.bytes_on_device(params, device)
    assert counted.kv_cache == 2 * sharding.bytes_on_device(cache, device)  # k and v


def test_qwen3_8b_numbers():
  cfg = memory_table.MODELS["Qwen3-8B"]
  sizes = lambda spec: sharding.parse_mesh_spec(spec, 8)  # noqa: E731
  dp = memory_table.device_bytes(cfg, "dp", sizes("data:8"), batch=64, length=6144)
  fsdp = memory_table.device_bytes(cfg, "fsdp", sizes("fsdp:8"), batch=64, length=6144)
  assert dp.weights == 2 * cfg.num_params() and dp.adam == 8 * cfg.num_params()
  norms = (
      cfg.hidden_size * (2 * cfg.num_layers + 1) + 2 * cfg.head_dim * cfg.num_layers
  )  # replicated
  assert fsdp.weights == 2 * ((cfg.num_params() - norms) // 8 + norms)
  kv_total = 2 * 2 * cfg.num_layers * 64 * 6144 * cfg.num_kv_heads * cfg.head_dim
  assert dp.kv_cache == fsdp.kv_cache == kv_total // 8
  assert len(memory_table.table(64, 6144).splitlines()) == 2 + len(memory_table.MODELS) * len(
      memory_table.LAYOUTS
  )


def test_lora_rows_count_adapters_and_one_shared_base():
  cfg = memory_table.MODELS["Qwen3-4B"]
  sizes = sharding.parse_mesh_spec("data:8", 8)
  full = memory_table.rzero_bytes(cfg, "dp", sizes, lora_rank=0)
  lora = memory_table.rzero_bytes(cfg, "dp", sizes, lora_rank=64)
  n = cfg.num_params()
  assert full["sampler"] == 2 * 2 * n  # each role's bf16 sampler copy
  assert full["total"] == 2 * 12 * n + 2 * 2 * n + 4 * n
  d, f, hd, h, kv, layers = (
      cfg.hidden_size,
      cfg.intermediate_size,
      cfg.head_dim,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.num_layers,
  )
  adapters = layers * 64 * ((d + h * hd) * 2 + (d + kv * hd) * 2 + 3 * (d + f))  # q, o, k, v, mlp
  assert lora["base"] == 2 * n and lora["total"] == 2 * n + 2 * 12 * adapters + 4 * adapters
  assert lora["total"] < full["total"] / 4
  assert len(memory_table.rzero_table(64).splitlines()) == 2 + len(memory_table.MODELS) * len(
      memory_table.RZERO_LAYOUTS
  )
