"""Model parity with transformers (PyTorch CPU), HF import/export, and clear errors."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rzero_jax.models import (
    ModelConfig,
    config_from_hf_dict,
    forward,
    load_pretrained,
    save_pretrained,
)
from tests.support import hf_fixtures

TOKENS = np.random.RandomState(0).randint(0, 97, size=(2, 24))


def _max_diff(path, tokens=TOKENS, attention_mask=None, dtype="float32"):
  cfg, params = load_pretrained(path, dtype=dtype)
  ours = np.asarray(forward(cfg, params, tokens, attention_mask), np.float32)
  ref = hf_fixtures.hf_logits(path, tokens, attention_mask)
  if attention_mask is not None:
    keep = np.asarray(attention_mask, bool)
    ours, ref = ours[keep], ref[keep]
  return np.abs(ours - ref).max(), ref


VARIANTS = {
    "qwen3_tied": ("qwen3", {}),
    "qwen3_untied_theta": ("qwen3", dict(tie_word_embeddings=False, rope_theta=5e6, head_dim=8)),
    "qwen3_mqa_bias": ("qwen3", dict(num_key_value_heads=1, attention_bias=True)),
    "qwen2_bias": ("qwen2", {}),
    "qwen2_tied_gqa4": (
        "qwen2",
        dict(
            tie_word_embeddings=True, num_key_value_heads=1, hidden_size=64, num_attention_heads=4
        ),
    ),
    "llama3_scaling": ("llama", {}),
    "llama_linear": ("llama", dict(rope_scaling=dict(rope_type="linear", factor=2.0))),
    "llama_plain_mlp_bias": (
        "llama",
        dict(rope_scaling=None, mlp_bias=True, attention_bias=True, tie_word_embeddings=True),
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_logits_match_transformers_float32(tmp_path, name):
  family, overrides = VARIANTS[name]
  path = hf_fixtures.save_tiny_model(tmp_path, family, **overrides)
  diff, ref = _max_diff(path)
  assert np.abs(ref).max() > 1.0  # the reference is not trivially small
  assert diff <= 1e-4, f"{name}: max |ours - HF| = {diff}"


def test_left_padded_batch_matches_transformers(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  mask = np.ones_like(TOKENS)
  mask[0, :7] = 0
  diff, _ = _max_diff(path, attention_mask=mask)
  assert diff <= 1e-4


def test_bfloat16_close_to_float32(tiny_qwen3_dir):
  cfg32, p32 = load_pretrained(tiny_qwen3_dir, dtype="float32")
  cfg16, p16 = load_pretrained(tiny_qwen3_dir, dtype="bfloat16")
  assert p16["embed"].dtype == jnp.bfloat16 and cfg16.dtype == "bfloat16"
  l32 = np.asarray(forward(cfg32, p32, TOKENS))
  l16 = np.asarray(forward(cfg16, p16, TOKENS))
  assert l16.dtype == np.float32  # logits always float32
  rel = np.abs(l16 - l32).max() / np.abs(l32).max()
  assert rel < 0.05, rel
  assert (l16.argmax(-1) == l32.argmax(-1)).mean() > 0.9


@pytest.mark.parametrize("family", ["qwen3", "qwen2", "llama"])
def test_save_then_transformers_load_same_logits(tmp_path, family):
  src = hf_fixtures.save_tiny_model(tmp_path / "src", family)
  cfg, params = load_pretrained(src, dtype="float32")
  out = str(tmp_path / "exported")
  save_pretrained(cfg, params, out)
  ours = np.asarray(forward(cfg, params, TOKENS))
  np.testing.assert_allclose(hf_fixtures.hf_logits(out, TOKENS), ours, atol=1e-4)
  cfg2, params2 = load_pretrained(out, dtype="float32")
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_sharded_index_checkpoint(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen2", max_shard_size="20KB")
  assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
  assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) > 1
  diff, _ = _max_diff(path)
  assert diff <= 1e-4


def test_single_file_path(tiny_qwen3_dir):
  cfg, params = load_pretrained(os.path.join(tiny_qwen3_dir, "model.safetensors"), dtype="float32")
  assert cfg.model_type == "qwen3" and params["embed"].shape == (97, 32)


def test_tied_lm_head_duplicate_is_checked_and_dropped(tmp_path):
  from safetensors.numpy import load_file, save_file

  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  file = os.path.join(path, "model.safetensors")
  state = load_file(file)
  state["lm_head.weight"] = state["model.embed_tokens.weight"].copy()
  save_file(state, file, metadata={"format": "pt"})
  cfg, params = load_pretrained(path, dtype="float32")
  assert cfg.tie_embeddings and "lm_head" not in params
  state["lm_head.weight"] = state["lm_head.weight"] + 1.0
  save_file(state, file, metadata={"format": "pt"})
  with pytest.raises(ValueError, match="tie_word_embeddings"):
    load_pretrained(path, dtype="float32")


def test_remat_and_scan_layers_same_logits(tiny_qwen3_dir):
  cfg, params = load_pretrained(tiny_qwen3_dir, dtype="float32")
  base = forward(cfg, params, TOKENS)
  for flags in (dict(scan_layers=True), dict(remat=True), dict(scan_layers=True, remat=True)):
    other = jax.jit(forward, static_argnums=0)(dataclasses.replace(cfg, **flags), params, TOKENS)
    np.testing.assert_allclose(np.asarray(other), np.asarray(base), atol=1e-5)


@pytest.mark.slow
def test_gradients_through_scan_and_remat_agree(tiny_qwen3_dir):
  cfg, params = load_pretrained(tiny_qwen3_dir, dtype="float32")

  def loss(p, c):
    return jnp.mean(jax.nn.log_softmax(forward(c, p, TOKENS))[..., 3])

  g0 = jax.grad(loss)(params, cfg)
  g1 = jax.grad(loss)(params, dataclasses.replace(cfg, scan_layers=True, remat=True))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


# ----- errors -------------------------------------------------------------------------------


def test_missing_config_json(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_pretrained(str(tmp_path))


def test_unsupported_family(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  cfg_file = os.path.join(path, "config.json")
  data = json.load(open(cfg_file))
  data["model_type"] = "gpt2"
  json.dump(data, open(cfg_file, "w"))
  with pytest.raises(ValueError, match="Unsupported model_type 'gpt2'"):
    load_pretrained(path)


def test_unsupported_rope_scaling():
  hf = hf_fixtures.hf_config("llama").to_dict()
  hf["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
  hf.pop("rope_parameters", None)
  with pytest.raises(ValueError, match="rope scaling type 'yarn'"):
    config_from_hf_dict(hf)


def test_dtype_typo(tiny_qwen3_dir):
  with pytest.raises(ValueError, match="Unknown dtype 'bfloat61'"):
    load_pretrained(tiny_qwen3_dir, dtype="bfloat61")


def test_missing_tensor(tmp_path):
  from safetensors.numpy import load_file, save_file

  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  file = os.path.join(path, "model.safetensors")
  state = load_file(file)
  del state["model.layers.1.mlp.up_proj.weight"]
  save_file(state, file, metadata={"format": "pt"})
  with pytest.raises(KeyError, match="model.layers.1.mlp.up_proj.weight"):
    load_pretrained(path)


def test_misshapen_tensor(tmp_path):
  from safetensors.numpy import load_file, save_file

  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  file = os.path.join(path, "model.safetensors")
  state = load_file(file)
  state["model.layers.0.self_attn.q_proj.weight"] = np.zeros((8, 32), np.float32)
  save_file(state, file, metadata={"format": "pt"})
  with pytest.raises(ValueError, match="q_proj.weight.*shape"):
    load_pretrained(path)


def test_missing_weights_file(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path, "qwen3")
  os.remove(os.path.join(path, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="safetensors"):
    load_pretrained(path)


def test_config_round_trip_through_hf_dict():
  for family in ("qwen3", "qwen2", "llama"):
    cfg = config_from_hf_dict(hf_fixtures.hf_config(family).to_dict())
    again = config_from_hf_dict(cfg.to_hf_dict())
    assert again == cfg
  assert isinstance(hash(cfg), int) and isinstance(cfg, ModelConfig)


def test_save_is_atomic_on_failure(tmp_path, tiny_qwen3_dir):
  cfg, params = load_pretrained(tiny_qwen3_dir, dtype="float32")
  out = tmp_path / "out"
  save_pretrained(cfg, params, str(out))
  before = sorted(os.listdir(out))
  with pytest.raises(FileNotFoundError):  # fails after the weights are written
    save_pretrained(cfg, params, str(out), extra_files={"tokenizer.json": str(tmp_path / "nope")})
  assert os.listdir(tmp_path) == ["out"] and sorted(os.listdir(out)) == before


@pytest.mark.parametrize("family", ["qwen3", "qwen2", "llama"])
def test_missing_optional_keys_default_like_transformers(tmp_path, family):
  """config.json without `tie_word_embeddings` / `head_dim`: transformers' defaults apply."""
  head_dim = {"qwen3": dict(head_dim=128)}.get(family, {})
  path = hf_fixtures.save_tiny_model(tmp_path, family, tie_word_embeddings=False, **head_dim)
  cfg_file = os.path.join(path, "config.json")
  data = json.load(open(cfg_file))
  for key in ("tie_word_embeddings", "head_dim"):
    data.pop(key, None)
  json.dump(data, open(cfg_file, "w"))
  cfg = load_pretrained(path, dtype="float32")[0]
  assert not cfg.tie_embeddings and cfg.head_dim == (128 if family == "qwen3" else 8)
  diff, _ = _max_diff(path)
  assert diff <= 1e-4


def test_qwen3_sliding_window_is_rejected():
  hf = hf_fixtures.hf_config("qwen3").to_dict()
  hf["use_sliding_window"] = True
  with pytest.raises(ValueError, match="use_sliding_window=false"):
    config_from_hf_dict(hf)


def test_save_into_existing_directory_keeps_other_files(tmp_path):
  path = hf_fixtures.save_tiny_model(tmp_path / "model", "qwen2", max_shard_size="20KB")
  (tmp_path / "model" / "notes.txt").write_text("keep me")
  cfg, params = load_pretrained(path, dtype="float32")
  params = jax.tree.map(lambda p: p * 2, params)
  save_pretrained(cfg, params, path)
  assert sorted(os.listdir(path)) == [
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "notes.txt",
  ]
  assert (tmp_path / "model" / "notes.txt").read_text() == "keep me"
  jax.tree.map(np.testing.assert_array_equal, load_pretrained(path, dtype="float32")[1], params)
  assert os.listdir(tmp_path) == ["model"]
  with pytest.raises(NotADirectoryError, match="is a file"):
    save_pretrained(cfg, params, os.path.join(path, "notes.txt"))


def test_forward_takes_lists_and_rejects_a_flat_sequence(tiny_qwen3_dir):
  cfg, params = load_pretrained(tiny_qwen3_dir, dtype="float32")
  np.testing.assert_array_equal(
      np.asarray(forward(cfg, params, TOKENS.tolist())), np.asarray(forward(cfg, params, TOKENS))
  )
  with pytest.raises(ValueError, match=r"\[batch, length\]"):
    forward(cfg, params, TOKENS[0])
