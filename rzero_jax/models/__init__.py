"""Qwen3 / Qwen2 / Llama-3 decoders as Flax linen modules with a functional API, LoRA adapters,
HF checkpoint I/O and tokenizer helpers."""

from rzero_jax.models.config import ModelConfig, config_from_hf_dict, load_config
from rzero_jax.models.functional import (
    base_config,
    combine_params,
    forward,
    forward_with_cache,
    init_cache,
    init_lora,
    init_params,
    merge_lora,
    param_axes,
    param_shapes,
    param_shardings,
    shard_params,
    split_lora,
)
from rzero_jax.models.hf_io import load_pretrained, save_pretrained
from rzero_jax.models.modules import Decoder, DecoderLayer, build_model
from rzero_jax.models.tokenizer import (
    encode_chat,
    load_tokenizer,
    pad_token_id,
    render_chat,
    stop_token_ids,
)

__all__ = [
    "ModelConfig",
    "config_from_hf_dict",
    "load_config",
    "Decoder",
    "DecoderLayer",
    "build_model",
    "forward",
    "forward_with_cache",
    "init_cache",
    "init_params",
    "param_axes",
    "param_shapes",
    "param_shardings",
    "shard_params",
    "base_config",
    "init_lora",
    "split_lora",
    "combine_params",
    "merge_lora",
    "load_pretrained",
    "save_pretrained",
    "encode_chat",
    "load_tokenizer",
    "pad_token_id",
    "render_chat",
    "stop_token_ids",
]
