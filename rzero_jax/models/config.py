"""Model configuration read from a Hugging Face `config.json` (Qwen3, Qwen2/2.5, Llama-3)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
LORA_TARGET_NAMES = ("q", "k", "v", "o", "gate", "up", "down")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(name: str | Any) -> Any:
  """Maps a dtype name ("float32", "bfloat16", "float16") to a jnp dtype, with a clear error."""
  if not isinstance(name, str):
    name = jnp.dtype(name).name
  if name not in DTYPES:
    raise ValueError(
        f"Unknown dtype {name!r}: use one of {sorted(DTYPES)} (e.g. dtype='bfloat16')."
    )
  return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static description of a decoder-only transformer; hashable so it can be a jit static argument.

  Precision (docs/numerics.md). `dtype` is the compute dtype: matmul inputs (weights and
  activations are rounded to it; products accumulate in float32) and the KV cache. `residual_dtype`
  is the dtype of everything else: the residual stream, norms, rotary embeddings, the MLP's
  activation, attention outputs; "float32" (the default) keeps that arithmetic exact whatever XLA
  fuses, None runs it in `dtype` too (less memory, but bfloat16 roundings then depend on how XLA
  fuses each program). Softmax, norms' statistics and logits are always float32.
  `batch_invariant` computes every token through fixed-shape tiles (rows of TILE_ROWS tokens,
  attention in blocks of KEY_BLOCK keys in position order), so a token's numbers do not depend on
  the batch, the sequence length, padding or the mesh: the sampler's log-probs equal the training
  forward's bit for bit. Slower; see docs/numerics.md.
  `lora_rank` > 0 adds LoRA adapters (scale `lora_alpha / lora_rank`) to the `lora_targets`
  projections; 0 is the plain model (full fine-tuning).
  """

  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_position: int = 8192
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 32768
  bos_token_id: int | None = None
  eos_token_id: tuple[int, ...] = ()
  pad_token_id: int | None = None
  dtype: str = "float32"
  residual_dtype: str | None = "float32"
  batch_invariant: bool = False
  remat: bool = False
  scan_layers: bool = False
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"Unsupported model_type {self.model_type!r}: rzero_jax supports {SUPPORTED_MODEL_TYPES} "
          "(Qwen3, Qwen2/2.5, Llama-3.x / OctoThinker). Convert the checkpoint to one of these families."
      )
    if self.rope_type not in SUPPORTED_ROPE_TYPES:
      raise ValueError(
          f"Unsupported rope scaling type {self.rope_type!r}: supported are {SUPPORTED_ROPE_TYPES}. "
          "Remove `rope_scaling` from config.json or use a checkpoint with a supported scaling."
      )
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_attention_heads ({self.num_heads}) must be a multiple of "
          f"num_key_value_heads ({self.num_kv_heads})."
      )
    resolve_dtype(self.dtype)
    if self.residual_dtype is not None:
      resolve_dtype(self.residual_dtype)
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank must be >= 0 (0 = no adapters), got {self.lora_rank}.")
    unknown = [t for t in self.lora_targets if t not in LORA_TARGET_NAMES]
    if unknown or (self.lora_rank and not self.lora_targets):
      raise ValueError(
          f"lora_targets {tuple(self.lora_targets)} must be a non-empty subset of "
          f"{LORA_TARGET_NAMES}."
      )

  @property
  def compute_dtype(self):
    """Matmul inputs and KV cache."""
    return resolve_dtype(self.dtype)

  @property
  def activation_dtype(self):
    """Residual stream and elementwise arithmetic (`residual_dtype`, else `dtype`)."""
    return resolve_dtype(self.residual_dtype or self.dtype)

  def num_params(self) -> int:
    """Parameter count (embedding counted once when tied)."""
    d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
    attn = d * hd * (self.num_heads * 2 + self.num_kv_heads * 2)
    if self.qkv_bias:
      attn += hd * (self.num_heads + 2 * self.num_kv_heads)
    if self.o_bias:
      attn += d
    if self.qk_norm:
      attn += 2 * hd
    mlp = 3 * d * f + (2 * f + d if self.mlp_bias else 0)
    layer = attn + mlp + 2 * d
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * layer + emb + d

  def to_hf_dict(self) -> dict[str, Any]:
    """The `config.json` contents that `transformers` reads back to the same architecture."""
    arch = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
    out: dict[str, Any] = {
        "architectures": [arch[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "tie_word_embeddings": self.tie_embeddings,
        "max_position_embeddings": self.max_position_embeddings,
        "torch_dtype": "float32" if self.dtype == "float32" else self.dtype,
    }
    if self.model_type != "qwen2":
      out["attention_bias"] = self.o_bias
    if self.model_type == "llama":
      out["mlp_bias"] = self.mlp_bias
    if self.rope_type != "default":
      scaling: dict[str, Any] = {"rope_type": self.rope_type, "factor": self.rope_factor}
      if self.rope_type == "llama3":
        scaling.update(
            low_freq_factor=self.rope_low_freq_factor,
            high_freq_factor=self.rope_high_freq_factor,
            original_max_position_embeddings=self.rope_original_max_position,
        )
      out["rope_scaling"] = scaling
    for key, value in (("bos_token_id", self.bos_token_id), ("pad_token_id", self.pad_token_id)):
      if value is not None:
        out[key] = value
    if self.eos_token_id:
      out["eos_token_id"] = (
          self.eos_token_id[0] if len(self.eos_token_id) == 1 else list(self.eos_token_id)
      )
    return out


def _rope_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """Reads rope theta and scaling from both the old (`rope_theta`, `rope_scaling`) and the
  transformers-5 (`rope_parameters`) layouts."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  merged = {**params, **scaling}
  theta = merged.get("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
  fields: dict[str, Any] = {"rope_theta": float(theta), "rope_type": rope_type}
  if rope_type in ("linear", "llama3"):
    fields["rope_factor"] = float(merged["factor"])
  if rope_type == "llama3":
    fields.update(
        rope_low_freq_factor=float(merged["low_freq_factor"]),
        rope_high_freq_factor=float(merged["high_freq_factor"]),
        rope_original_max_position=int(merged["original_max_position_embeddings"]),
    )
  return fields


def _as_tuple(value: Any) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


def config_from_hf_dict(hf: dict[str, Any], *, dtype: str = "float32") -> ModelConfig:
  """Builds a `ModelConfig` from the parsed contents of a HF `config.json`."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
        f"Unsupported model_type {model_type!r} in config.json: rzero_jax supports "
        f"{SUPPORTED_MODEL_TYPES} (Qwen3, Qwen2/2.5, Llama-3.x / OctoThinker)."
    )
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(
        f"Unsupported hidden_act {hf['hidden_act']!r}: only 'silu' (SwiGLU) is supported."
    )
  if model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window", False):
    raise ValueError(
        f"{model_type} sliding-window attention is not supported: set "
        "use_sliding_window=false in config.json."
    )
  num_heads = int(hf["num_attention_heads"])
  hidden = int(hf["hidden_size"])
  # transformers' defaults when config.json leaves these out: Qwen3Config.head_dim = 128, and
  # tie_word_embeddings = False for all three families.
  head_dim = hf.get("head_dim") or (128 if model_type == "qwen3" else hidden // num_heads)
  attention_bias = bool(hf.get("attention_bias", False))
  return ModelConfig(
      model_type=model_type,
      vocab_size=int(hf["vocab_size"]),
      hidden_size=hidden,
      intermediate_size=int(hf["intermediate_size"]),
      num_layers=int(hf["num_hidden_layers"]),
      num_heads=num_heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
      head_dim=int(head_dim),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=model_type == "qwen2" or attention_bias,
      o_bias=model_type != "qwen2" and attention_bias,
      mlp_bias=bool(hf.get("mlp_bias", False)),
      qk_norm=model_type == "qwen3",
      max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_id=_as_tuple(hf.get("eos_token_id")),
      pad_token_id=hf.get("pad_token_id"),
      dtype=dtype,
      **_rope_fields(hf),
  )


def load_config(path: str, *, dtype: str = "float32") -> ModelConfig:
  """Reads `config.json` from a model directory (or the directory holding a given file)."""
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(
        f"No config.json in {directory!r}: point at a Hugging Face model directory that holds "
        "config.json next to its *.safetensors files (e.g. the output of save_pretrained)."
    )
  with open(config_path) as f:
    return config_from_hf_dict(json.load(f), dtype=dtype)


def rope_inv_freq(cfg: ModelConfig) -> Any:
  """Inverse rotary frequencies [head_dim // 2] in float32, with the configured scaling applied."""
  import numpy as np

  exponents = np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(np.float32) / cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta**exponents)
  if cfg.rope_type == "linear":
    inv_freq = inv_freq / cfg.rope_factor
  elif cfg.rope_type == "llama3":
    low_wavelen = cfg.rope_original_max_position / cfg.rope_low_freq_factor
    high_wavelen = cfg.rope_original_max_position / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / cfg.rope_factor, inv_freq)
    smooth = (cfg.rope_original_max_position / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  return np.asarray(inv_freq, dtype=np.float32)
