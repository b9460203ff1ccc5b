"""Qwen3 / Qwen2 / Llama-3 decoders as pure functions, HF checkpoint I/O and tokenizer helpers."""

from rzero_jax.models.config import ModelConfig, config_from_hf_dict, load_config
from rzero_jax.models.decoder import (forward, forward_with_cache, hidden_states, init_cache,
                                      init_params, param_axes, param_shapes)
from rzero_jax.models.hf_io import load_pretrained, save_pretrained
from rzero_jax.models.tokenizer import (encode_chat, load_tokenizer, pad_token_id, render_chat,
                                        stop_token_ids)

__all__ = [
    "ModelConfig", "config_from_hf_dict", "load_config", "forward", "forward_with_cache",
    "hidden_states", "init_cache", "init_params", "param_axes", "param_shapes", "load_pretrained",
    "save_pretrained", "encode_chat", "load_tokenizer", "pad_token_id", "render_chat",
    "stop_token_ids",
]
