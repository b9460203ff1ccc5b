"""Hugging Face checkpoint import and export (safetensors, single file or sharded with an index)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from rzero_jax.models.config import ModelConfig, load_config, resolve_dtype
from rzero_jax.models.functional import Params, base_config, merge_lora, param_axes, param_shapes
from rzero_jax.sharding import ShardingPlan, make_plan

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Our layer param name -> (HF name inside `model.layers.{i}.`, HF -> ours transform kind).
_LAYER_KEYS = {
    "attn_norm": ("input_layernorm.weight", "copy"),
    "q": ("self_attn.q_proj.weight", "in_heads"),
    "k": ("self_attn.k_proj.weight", "in_heads"),
    "v": ("self_attn.v_proj.weight", "in_heads"),
    "o": ("self_attn.o_proj.weight", "out_heads"),
    "q_bias": ("self_attn.q_proj.bias", "bias_heads"),
    "k_bias": ("self_attn.k_proj.bias", "bias_heads"),
    "v_bias": ("self_attn.v_proj.bias", "bias_heads"),
    "o_bias": ("self_attn.o_proj.bias", "copy"),
    "q_norm": ("self_attn.q_norm.weight", "copy"),
    "k_norm": ("self_attn.k_norm.weight", "copy"),
    "mlp_norm": ("post_attention_layernorm.weight", "copy"),
    "gate": ("mlp.gate_proj.weight", "transpose"),
    "up": ("mlp.up_proj.weight", "transpose"),
    "down": ("mlp.down_proj.weight", "transpose"),
    "gate_bias": ("mlp.gate_proj.bias", "copy"),
    "up_bias": ("mlp.up_proj.bias", "copy"),
    "down_bias": ("mlp.down_proj.bias", "copy"),
}
_TOP_KEYS = {
    "embed": ("model.embed_tokens.weight", "copy"),
    "final_norm": ("model.norm.weight", "copy"),
    "lm_head": ("lm_head.weight", "transpose"),
}


def _hf_to_ours(kind: str, x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """Converts one HF tensor to our layout (`shape` is our target shape)."""
  if kind == "copy":
    return x
  if kind == "bias_heads":
    return x.reshape(shape)
  if kind == "transpose":
    return x.T
  if kind == "in_heads":  # [H * hd, D] -> [D, H, hd]
    return x.T.reshape(shape)
  if kind == "out_heads":  # [D, H * hd] -> [H, hd, D]
    return x.T.reshape(shape)
  raise AssertionError(kind)


def _ours_to_hf(kind: str, x: np.ndarray) -> np.ndarray:
  """Inverse of `_hf_to_ours`."""
  if kind == "copy":
    return x
  if kind == "bias_heads":
    return x.reshape(-1)
  if kind == "transpose":
    return x.T
  if kind == "in_heads":  # [D, H, hd] -> [H * hd, D]
    return x.reshape(x.shape[0], -1).T
  if kind == "out_heads":  # [H, hd, D] -> [D, H * hd]
    return x.reshape(-1, x.shape[-1]).T
  raise AssertionError(kind)


def _hf_shape(kind: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The HF tensor shape that converts to our `shape`."""
  return tuple(_ours_to_hf(kind, np.empty(shape, dtype=np.int8)).shape)


class MissingTensorError(ValueError, KeyError):
  """A tensor that config.json implies is not in the checkpoint (a KeyError for older callers)."""

  def __str__(self) -> str:  # KeyError would quote the message
    return str(self.args[0])


class _TensorSource:
  """Reads tensors one at a time from a safetensors file or an indexed set of shards (mmapped)."""

  def __init__(self, path: str):
    self._where = path
    if os.path.isdir(path):
      index_path = os.path.join(path, INDEX_FILE)
      single = os.path.join(path, SINGLE_FILE)
      if os.path.exists(index_path):
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
        self._files = {name: os.path.join(path, fname) for name, fname in weight_map.items()}
      elif os.path.exists(single):
        self._files = self._keys_of(single)
      else:
        found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not found:
          raise FileNotFoundError(
              f"No safetensors weights in {path!r}: expected {SINGLE_FILE} or {INDEX_FILE} with its "
              "shards. Convert .bin checkpoints with transformers' save_pretrained(safe_serialization=True)."
          )
        self._files = {}
        for fname in found:
          self._files.update(self._keys_of(os.path.join(path, fname)))
    else:
      if not os.path.exists(path):
        raise FileNotFoundError(
            f"Checkpoint path {path!r} does not exist: give a HF model directory "
            "or a .safetensors file."
        )
      self._files = self._keys_of(path)
    self._handles: dict[str, Any] = {}

  @staticmethod
  def _open(file: str):
    try:
      return safe_open(file, framework="numpy")
    except Exception as e:  # safetensors raises its own error types (truncated / corrupt header)
      raise ValueError(
          f"Cannot read safetensors file {file!r} ({type(e).__name__}: "
          f"{str(e).splitlines()[0] if str(e) else 'unreadable'}): it is truncated or "
          "corrupt; re-download or re-export the checkpoint."
      ) from None

  @classmethod
  def _keys_of(cls, file: str) -> dict[str, str]:
    with cls._open(file) as f:
      return {k: file for k in f.keys()}

  def __contains__(self, name: str) -> bool:
    return name in self._files

  def get(self, name: str, expected_shape: Sequence[int]) -> np.ndarray:
    if name not in self._files:
      raise MissingTensorError(
          f"Checkpoint {self._where!r} is missing tensor {name!r}: it does not match "
          "its config.json (wrong family, layer count or bias/tying flags?). Re-export it."
      )
    file = self._files[name]
    if file not in self._handles:
      if not os.path.exists(file):
        raise FileNotFoundError(
            f"Shard {file!r} named in {INDEX_FILE} is missing: re-download or "
            "re-export the checkpoint."
        )
      self._handles[file] = self._open(file)
    try:
      array = self._handles[file].get_tensor(name)
    except Exception as e:
      raise ValueError(
          f"Cannot read tensor {name!r} from {file!r} ({type(e).__name__}): the file "
          "is truncated or corrupt; re-download or re-export the checkpoint."
      ) from None
    if tuple(array.shape) != tuple(expected_shape):
      raise ValueError(
          f"Tensor {name!r} in {file!r} has shape {tuple(array.shape)}, but config.json implies "
          f"{tuple(expected_shape)}: the weights and config.json disagree; fix the config "
          "(hidden_size, heads, head_dim, intermediate_size, vocab_size) or the weights."
      )
    return array

  def close(self) -> None:
    self._handles.clear()


def _placer(plan: ShardingPlan | None, axes: tuple[str, ...]) -> Callable[[np.ndarray], jax.Array]:
  """Moves a host array to its devices: whole onto the default device, or shard by shard (each
  process reads only the slices its own devices hold)."""
  if plan is None:
    return jax.device_put

  def place(x: np.ndarray) -> jax.Array:
    sharding = plan.sharding(axes, x.shape, weight=True)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return place


def load_pretrained(
    path: str,
    *,
    dtype: str = "bfloat16",
    mesh: jax.sharding.Mesh | None = None,
    strategy: Any = None,
    plan: ShardingPlan | None = None,
) -> tuple[ModelConfig, Params]:
  """Loads a HF Qwen3/Qwen2/Llama checkpoint into (ModelConfig, params).

  Tensors are read one at a time (memory-mapped), converted to `dtype` and placed straight onto
  their sharding when a `plan` (or a `mesh` and `strategy`) is given, so the model is never held
  twice.
  """
  target = resolve_dtype(dtype)
  cfg = load_config(path, dtype=jax.numpy.dtype(target).name)
  cfg = base_config(cfg)
  plan = plan or make_plan(mesh, strategy)
  shapes, axes = param_shapes(cfg), param_axes(cfg)
  source = _TensorSource(path)
  params: Params = {"layers": {}}
  try:
    for name, (hf_name, kind) in _TOP_KEYS.items():
      if name not in shapes:
        continue
      host = _hf_to_ours(kind, source.get(hf_name, _hf_shape(kind, shapes[name])), shapes[name])
      params[name] = _placer(plan, axes[name])(np.ascontiguousarray(host.astype(target)))
    if cfg.tie_embeddings and "lm_head.weight" in source:
      stored = source.get("lm_head.weight", shapes["embed"])
      if not np.array_equal(stored, source.get("model.embed_tokens.weight", shapes["embed"])):
        raise ValueError(
            "config.json says tie_word_embeddings=true but the stored lm_head.weight "
            "differs from embed_tokens: set tie_word_embeddings to false in config.json."
        )
    for name, shape in shapes["layers"].items():
      hf_name, kind = _LAYER_KEYS[name]
      stacked = np.empty(shape, dtype=target)
      for i in range(cfg.num_layers):
        raw = source.get(f"model.layers.{i}.{hf_name}", _hf_shape(kind, shape[1:]))
        stacked[i] = _hf_to_ours(kind, raw, shape[1:]).astype(target)
      params["layers"][name] = _placer(plan, axes["layers"][name])(stacked)
      del stacked
  finally:
    source.close()
  return cfg, params


def hf_state_dict(cfg: ModelConfig, params: Params) -> dict[str, np.ndarray]:
  """Our params as a flat HF-named dict of host numpy arrays (LoRA adapters merged in)."""
  if cfg.lora_rank:
    params = jax.tree.map(np.asarray, merge_lora(cfg, jax.device_get(params)))
  out = {}
  for name, (hf_name, kind) in _TOP_KEYS.items():
    if name in params:
      out[hf_name] = _ours_to_hf(kind, np.asarray(jax.device_get(params[name])))
  for name, value in params["layers"].items():
    hf_name, kind = _LAYER_KEYS[name]
    host = np.asarray(jax.device_get(value))
    for i in range(cfg.num_layers):
      out[f"model.layers.{i}.{hf_name}"] = _ours_to_hf(kind, host[i])
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _sharded_files(path: str) -> list[str]:
  """The index and shard file names of a sharded safetensors checkpoint in `path` (or [])."""
  index_path = os.path.join(path, INDEX_FILE)
  if not os.path.exists(index_path):
    return []
  with open(index_path) as f:
    shards = set(json.load(f).get("weight_map", {}).values())
  return [INDEX_FILE] + sorted(s for s in shards if os.path.exists(os.path.join(path, s)))


def save_pretrained(
    cfg: ModelConfig, params: Params, path: str, *, extra_files: dict[str, str] | None = None
) -> None:
  """Writes config.json + model.safetensors that `transformers` loads to the same logits (a LoRA
  model is written with its adapters merged into the weights).

  Files are written to a temporary directory next to `path` first, so a crash leaves no partial
  checkpoint. A new `path` is renamed into place whole; into an existing directory only the written
  files are moved (each rename atomic) and a previous sharded checkpoint's index and shards are
  removed: other files there (tokenizer, notes) are kept. `extra_files` maps file names to source
  paths to copy along (e.g. tokenizer files).
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(f"save_pretrained needs a directory path, but {path!r} is a file.")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  state = hf_state_dict(cfg, params)
  dtype_name = jax.numpy.dtype(next(iter(state.values())).dtype).name
  hf_config = {**base_config(cfg).to_hf_dict(), "torch_dtype": dtype_name}
  tmp = tempfile.mkdtemp(prefix=".tmp_" + os.path.basename(path), dir=parent)
  try:
    save_file(state, os.path.join(tmp, SINGLE_FILE), metadata={"format": "pt"})
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=2)
    for fname, src in (extra_files or {}).items():
      shutil.copyfile(src, os.path.join(tmp, fname))
    if not os.path.exists(path):
      os.replace(tmp, path)
      return
    written = os.listdir(tmp)
    stale = [f for f in _sharded_files(path) if f not in written]
    for fname in written:
      os.replace(os.path.join(tmp, fname), os.path.join(path, fname))
    for fname in stale:
      os.remove(os.path.join(path, fname))
    os.rmdir(tmp)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
