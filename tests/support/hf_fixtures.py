"""Tiny models for tests: random Hugging Face checkpoints built with transformers (PyTorch CPU), the
test reference, and `tiny_config`, a tiny `ModelConfig`."""

from __future__ import annotations

import os
from typing import Any

BASE = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

FAMILIES: dict[str, dict[str, Any]] = {
    "qwen3": dict(
        model_type="qwen3",
        head_dim=16,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    ),
    "qwen2": dict(
        model_type="qwen2", rope_theta=10_000.0, tie_word_embeddings=False, rms_norm_eps=1e-6
    ),
    "llama": dict(
        model_type="llama",
        rope_theta=500_000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
    ),
}


def tiny_config(**overrides: Any):
  """A tiny Qwen3 `ModelConfig` with BASE's dims (vocab 97, 4 heads over 2 kv heads: indivisible
  on purpose), head_dim 16 and qk-norm; `overrides` replace any field."""
  from rzero_jax.models.config import ModelConfig

  fields = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4)
  return ModelConfig(
      "qwen3", **{**fields, "num_kv_heads": 2, "head_dim": 16, "qk_norm": True, **overrides}
  )


def hf_config(family: str, **overrides: Any):
  """A transformers config object for a tiny model of `family`."""
  import transformers

  kwargs = {**BASE, **FAMILIES[family], **overrides}
  model_type = kwargs.pop("model_type")
  cls = {
      "qwen3": transformers.Qwen3Config,
      "qwen2": transformers.Qwen2Config,
      "llama": transformers.LlamaConfig,
  }[model_type]
  return cls(**kwargs)


def build_hf_model(config, seed: int = 0):
  """A random transformers model with norm weights and biases randomised too (so a `(1 + w)` or a
  dropped bias would show), in float32 eval mode."""
  import torch
  import transformers

  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.2 * torch.randn_like(p))
      else:
        p.copy_(0.15 * torch.randn_like(p))
  return model


def save_tiny_model(
    directory, family: str, seed: int = 0, max_shard_size: str | None = None, **overrides: Any
) -> str:
  """Builds and saves a tiny HF checkpoint; returns its directory."""
  try:
    import torch  # noqa: F401
  except ModuleNotFoundError:
    return _save_tiny_model_without_torch(directory, family, seed, max_shard_size, **overrides)
  model = build_hf_model(hf_config(family, **overrides), seed=seed)
  path = os.fspath(directory)
  kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(path, safe_serialization=True, **kwargs)
  return path


def hf_logits(path: str, tokens, attention_mask=None):
  """Logits of the saved checkpoint computed by transformers in float32."""
  import numpy as np
  import torch
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  with torch.no_grad():
    ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask))
    return model(input_ids=ids, attention_mask=mask).logits.numpy()


def _save_tiny_model_without_torch(
    directory, family: str, seed: int, max_shard_size: str | None, **overrides: Any
) -> str:
  """Without PyTorch (installed for Python < 3.12 only): the same config, random weights drawn with
  numpy (norm weights and biases randomised too), written by our own `save_pretrained`, so tests
  that only need a checkpoint still run; those comparing with transformers' outputs are skipped."""
  import jax
  import numpy as np
  import pytest
  from rzero_jax.models import config_from_hf_dict, init_params, save_pretrained

  if max_shard_size:
    pytest.skip("sharded checkpoints are written by transformers, which needs PyTorch")
  cfg = config_from_hf_dict(hf_config(family, **overrides).to_dict())
  rng = np.random.default_rng(seed)

  def randomise(path, x):
    name = jax.tree_util.keystr(path)
    scale, offset = (0.3, 1.0) if "norm" in name else (0.2, 0.0) if "bias" in name else (0.15, 0.0)
    return (offset + scale * rng.standard_normal(x.shape)).astype(np.float32)

  params = jax.tree_util.tree_map_with_path(randomise, init_params(cfg, jax.random.key(seed)))
  path = os.fspath(directory)
  save_pretrained(cfg, params, path)
  return path
