"""The Flax module: one forward path (apply == forward == cached decode), declared axes, LoRA, and
one-line errors for broken checkpoints."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax.models import (
    build_model,
    combine_params,
    forward,
    init_lora,
    init_params,
    load_pretrained,
    merge_lora,
    param_axes,
    save_pretrained,
    split_lora,
)
from rzero_jax.models.functional import (
    default_positions,
    forward_with_cache,
    init_cache,
    unstack_cache,
    unstack_layers,
)
from rzero_jax.training import TrainConfig, init_train_state, make_train_step
from tests.support import hf_fixtures

CFG = hf_fixtures.tiny_config(vocab_size=61, head_dim=8)
TOKENS = np.random.RandomState(1).randint(0, 61, size=(2, 10)).astype(np.int32)
MASK = np.ones_like(TOKENS)
MASK[0, :3] = 0  # left padding


def test_apply_equals_forward_for_every_family(tmp_path):
  for family in ("qwen3", "qwen2", "llama"):
    cfg, params = load_pretrained(
        hf_fixtures.save_tiny_model(tmp_path / family, family), dtype="float32"
    )
    out = build_model(cfg).apply({"params": params}, TOKENS, MASK)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(forward(cfg, params, TOKENS, MASK)))


def test_param_axes_come_from_the_module_declarations():
  axes = param_axes(CFG)
  assert axes["embed"] == ("vocab", "embed") and axes["lm_head"] == ("embed", "vocab")
  assert axes["layers"]["q"] == ("layers", "embed", "heads", "head_dim")
  assert axes["layers"]["attn_norm"] == ("layers", "act_embed")
  lora = param_axes(dataclasses.replace(CFG, lora_rank=4, lora_targets=("q", "o")))
  assert lora["layers"]["q_lora_a"] == ("layers", "embed", "lora_rank")
  assert lora["layers"]["o_lora_a"] == ("layers", "heads", "head_dim", "lora_rank")
  assert lora["layers"]["o_lora_b"] == ("layers", "lora_rank", "embed")


def test_sharding_does_not_import_the_model():
  import rzero_jax.sharding as sharding

  source = open(sharding.__file__).read()
  assert "rzero_jax.models" not in source


def _decode_logits(cfg, params, scan):
  """Prefill 4 tokens, then decode the rest one token at a time through the cache."""
  cfg = dataclasses.replace(cfg, scan_layers=scan)
  positions = default_positions(jnp.asarray(MASK))
  kv_valid = jnp.asarray(MASK, bool)
  cache = init_cache(cfg, 2, TOKENS.shape[1])
  p = params
  if not scan:
    p, cache = unstack_layers(params), unstack_cache(cache)
  step = jax.jit(lambda p, t, pos, c, i: forward_with_cache(cfg, p, t, pos, c, i, kv_valid))
  logits, cache = step(p, TOKENS[:, :4], positions[:, :4], cache, 0)
  out = [logits]
  for i in range(4, TOKENS.shape[1]):
    logits, cache = step(p, TOKENS[:, i : i + 1], positions[:, i : i + 1], cache, i)
    out.append(logits)
  return np.concatenate([np.asarray(o) for o in out], axis=1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.slow
def test_training_forward_equals_cached_decode(dtype):
  cfg = dataclasses.replace(CFG, dtype=dtype)
  params = init_params(cfg, jax.random.key(0), std=0.2, dtype=dtype)
  full = np.asarray(jax.jit(lambda p: forward(cfg, p, TOKENS, MASK))(params))
  keep = MASK.astype(bool)
  for scan in (False, True):
    cached = _decode_logits(cfg, params, scan)
    diff = np.abs(full[keep] - cached[keep]).max()
    if dtype == "float32":
      assert diff <= 1e-5, (scan, diff)
    elif not scan:  # the trainer's and the sampler's layout: the same products, measured bitwise
      assert diff <= 1e-6, diff
    else:  # scanned layers fuse differently: within a couple of bfloat16 ulps (0.016 at 4)
      assert diff <= 1e-2 * np.abs(full[keep]).max(), diff


# --- LoRA ------------------------------------------------------------------------------------

LORA_CFG = dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0)


def _random_adapters(cfg, seed):
  adapters = init_lora(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32), adapters)


@pytest.mark.slow
def test_fresh_adapters_leave_the_model_unchanged():
  base = init_params(CFG, jax.random.key(0), std=0.2)
  adapters = init_lora(LORA_CFG, jax.random.key(1))
  assert all(np.all(np.asarray(v) == 0) for k, v in adapters["layers"].items() if k.endswith("_b"))
  np.testing.assert_allclose(
      forward(LORA_CFG, combine_params(base, adapters), TOKENS, MASK),
      forward(CFG, base, TOKENS, MASK),
      atol=1e-6,
  )


def test_merged_adapters_compute_the_adapted_model():
  base = init_params(CFG, jax.random.key(0), std=0.2)
  params = combine_params(base, _random_adapters(LORA_CFG, 2))
  adapted = np.asarray(forward(LORA_CFG, params, TOKENS, MASK))
  merged = np.asarray(forward(CFG, merge_lora(LORA_CFG, params), TOKENS, MASK))
  assert np.abs(adapted - np.asarray(forward(CFG, base, TOKENS, MASK))).max() > 1e-2
  np.testing.assert_allclose(merged, adapted, atol=2e-5)


@pytest.mark.slow
def test_lora_train_step_changes_only_adapters():
  base = init_params(CFG, jax.random.key(0), std=0.2)
  base_host = jax.tree.map(np.asarray, base)
  adapters = _random_adapters(LORA_CFG, 3)
  train_cfg = TrainConfig(learning_rate=1e-2, kl_coef=0.0)
  state = init_train_state(LORA_CFG, train_cfg, adapters)
  assert set(state.params["layers"]) == set(split_lora(param_axes(LORA_CFG))[1]["layers"])
  before = jax.tree.map(np.asarray, state.params)
  rng = np.random.default_rng(0)
  batch = {
      "tokens": TOKENS,
      "attention_mask": MASK,
      "loss_mask": MASK * (np.arange(10) >= 5),
      "advantages": rng.normal(size=2).astype(np.float32),
  }
  step = make_train_step(LORA_CFG, train_cfg)
  state, metrics = step(state, batch, base)
  assert float(metrics["skipped"]) == 0
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state.params, before)
  assert all(jax.tree.leaves(changed))
  jax.tree.map(np.testing.assert_array_equal, base, base_host)  # the base is never written
  with pytest.raises(ValueError, match="frozen base"):
    step(state, batch)


@pytest.mark.slow
def test_merged_export_loads_in_transformers_with_the_adapted_logits(tmp_path, tiny_qwen3_dir):
  cfg, base = load_pretrained(tiny_qwen3_dir, dtype="float32")
  cfg = dataclasses.replace(cfg, lora_rank=4, lora_alpha=8.0)
  params = combine_params(base, _random_adapters(cfg, 4))
  ours = np.asarray(forward(cfg, params, TOKENS, MASK))
  save_pretrained(cfg, params, str(tmp_path / "export"))
  with open(tmp_path / "export" / "config.json") as f:
    assert "lora" not in json.dumps(json.load(f))
  ref = hf_fixtures.hf_logits(str(tmp_path / "export"), TOKENS, MASK)
  keep = MASK.astype(bool)
  assert np.abs(ours[keep] - ref[keep]).max() <= 1e-4


# --- broken checkpoints: one line naming the file ----------------------------------------------


def _one_line_error(path, match):
  with pytest.raises(Exception) as info:
    load_pretrained(path)
  message = str(info.value)
  assert "\n" not in message and match in message, message


def test_truncated_safetensors_names_the_file(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  file = os.path.join(path, "model.safetensors")
  data = open(file, "rb").read()
  with open(file, "wb") as f:
    f.write(data[: len(data) // 2])
  _one_line_error(path, "model.safetensors")


def test_corrupt_header_names_the_file(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  file = os.path.join(path, "model.safetensors")
  with open(file, "r+b") as f:
    f.write(b"\xff" * 16)
  _one_line_error(path, "model.safetensors")


def test_missing_shard_names_the_file(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3", max_shard_size="20KB")
  shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  assert len(shards) > 1
  os.remove(os.path.join(path, shards[-1]))
  _one_line_error(path, shards[-1])


def test_wrong_shape_names_the_file(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  config["intermediate_size"] += 8
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  _one_line_error(path, "model.safetensors")


@pytest.mark.slow
def test_per_layer_params_run_the_loop_even_with_scan_layers():
  cfg = dataclasses.replace(CFG, scan_layers=True)
  params = init_params(cfg, jax.random.key(0), std=0.2)
  kv_valid = jnp.asarray(MASK, bool)
  positions = default_positions(kv_valid)
  stacked, _ = forward_with_cache(
      cfg, params, TOKENS, positions, init_cache(cfg, 2, 10), 0, kv_valid
  )
  lists, cache = forward_with_cache(
      cfg,
      unstack_layers(params),
      TOKENS,
      positions,
      unstack_cache(init_cache(cfg, 2, 10)),
      0,
      kv_valid,
  )
  assert isinstance(cache["k"], list)
  keep = MASK.astype(bool)
  np.testing.assert_allclose(np.asarray(lists)[keep], np.asarray(stacked)[keep], atol=1e-5)
