"""What the model benchmarks share: the model shapes and their flags, a Qwen3 of a shape with random
weights, and its `transformers` twin (the same weights)."""

from __future__ import annotations

import argparse

SHAPES = {
    # ~4.2M parameters: 4 x 787k layer weights + a tied 4096 x 256 embedding.
    "tiny-4m": dict(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
    ),
    "qwen3-0.6b": dict(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
    ),
}


def add_model_args(parser: argparse.ArgumentParser, dtype_help: str) -> None:
  """--device_kind, --model_shape (a SHAPES key) and --dtype (default: `default_dtype`)."""
  parser.add_argument(
      "--device_kind", "--device-kind", default="cpu", choices=("cpu", "gpu", "tpu")
  )
  parser.add_argument("--model_shape", "--model-shape", default="tiny-4m", choices=sorted(SHAPES))
  parser.add_argument("--dtype", default=None, help=dtype_help)


def default_dtype(args: argparse.Namespace) -> str:
  """--dtype, else float32 on CPU and bfloat16 on accelerators."""
  return args.dtype or ("float32" if args.device_kind == "cpu" else "bfloat16")


def model_config(shape: str, dtype: str, **overrides):
  """A Qwen3 `ModelConfig` of `SHAPES[shape]` (fields replaced by `overrides`)."""
  from rzero_jax.models import ModelConfig

  return ModelConfig(
      model_type="qwen3",
      tie_embeddings=True,
      qk_norm=True,
      rope_theta=1e6,
      dtype=dtype,
      **{**SHAPES[shape], **overrides},
  )


def random_model(shape: str, dtype: str, **overrides):
  """(config, random params) of `model_config(shape, dtype, **overrides)`."""
  import jax
  from rzero_jax.models import init_params

  cfg = model_config(shape, dtype, **overrides)
  return cfg, init_params(cfg, jax.random.key(0), dtype=dtype)


def hf_model(cfg, params, device: str):
  """The `transformers` model of (cfg, params) on `device`, without an end-of-sequence id."""
  import torch
  import transformers
  from rzero_jax.models.hf_io import hf_state_dict

  config = transformers.AutoConfig.for_model(**cfg.to_hf_dict())
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
  state = {k: torch.from_numpy(v.astype("float32")) for k, v in hf_state_dict(cfg, params).items()}
  result = model.load_state_dict(state, strict=False)
  assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
  model.generation_config.eos_token_id = None
  return model.to(device=device, dtype=dtype).eval()
