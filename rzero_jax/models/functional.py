"""The functional API over the Flax `Decoder` (`rzero_jax.models.modules`): pure functions of
(config, params, inputs), all running the module's one forward path.

`forward` is a full-sequence pass (training, log-probs), `forward_with_cache` the cached pass the
sampler uses for prefill and decode (`hidden=True`: hidden states instead of logits); both are
`build_model(cfg, plan).apply({"params": params}, ...)`.
`param_axes` / `param_shapes` read the module's own weight declarations (`nn.with_logical_partitioning`),
so a sharding strategy is only a table from logical names to mesh axes (see `rzero_jax.sharding`).
LoRA helpers: `init_lora`, `split_lora`, `combine_params`, `merge_lora`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rzero_jax.models.config import ModelConfig, resolve_dtype
from rzero_jax.models.modules import (
    CACHE_AXES,
    LORA_TARGETS,
    Decoder,
    build_model,
    default_positions,
    map_row_tiles,
)
from rzero_jax.sharding import ShardingPlan, tree_shardings

Params = dict[str, Any]


@functools.lru_cache(maxsize=64)
def _abstract(cfg: ModelConfig) -> Any:
  """The module's boxed abstract params (shapes and logical axes, nothing allocated)."""
  model = build_model(dataclasses.replace(cfg, remat=False))
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  return jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]


def param_axes(cfg: ModelConfig) -> Params:
  """Logical axis names of every parameter, in the params' tree structure (from the module)."""
  specs = nn.get_partition_spec(_abstract(cfg))
  return jax.tree.map(
      lambda spec: tuple(spec), specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )


def param_shapes(cfg: ModelConfig) -> Params:
  """Shapes of every parameter, in the params' tree structure."""
  return jax.tree.map(lambda x: tuple(x.shape), nn.unbox(_abstract(cfg)))


def init_params(
    cfg: ModelConfig, key: jax.Array, *, dtype: str = "float32", std: float = 0.02
) -> Params:
  """Random params from the module's initializers (normal(std) matrices, unit norms, zero biases,
  LoRA A normal(fan_in^-1/2) and B zero), e.g. for tests or pretraining."""
  model = build_model(dataclasses.replace(cfg, remat=False), init_std=std)
  params = nn.unbox(model.init(key, jnp.zeros((1, 1), jnp.int32))["params"])
  return jax.tree.map(lambda p: p.astype(resolve_dtype(dtype)), params)


def forward(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    attention_mask: jax.Array | None = None,
    positions: jax.Array | None = None,
    *,
    plan: ShardingPlan | None = None,
    hidden: bool = False,
) -> jax.Array:
  """Logits [B, T, V] in float32, or with `hidden=True` the last-layer hidden states [B, T, D]
  (before the final norm).

  tokens [B, T] int; attention_mask [B, T] (1 = real token, 0 = padding; default all ones);
  positions [B, T] (default: counts real tokens, so left padding gets the right positions).
  """
  return build_model(cfg, plan).apply(
      {"params": params}, tokens, attention_mask, positions, hidden=hidden
  )


def unembed(
    cfg: ModelConfig, params: Params, x: jax.Array, plan: ShardingPlan | None = None
) -> jax.Array:
  """Final norm and output projection of hidden states [B, T, D]; float32 logits."""
  return build_model(cfg, plan).apply({"params": params}, x, method="unembed")


def chosen_logprobs(
    cfg: ModelConfig | None,
    logits: jax.Array,
    tokens: jax.Array,
    temperature: float = 1.0,
    plan: ShardingPlan | None = None,
) -> jax.Array:
  """log softmax(logits / temperature)[tokens] in float32, by `jax.nn.log_softmax`'s expression
  ((x - max) - log sum exp(x - max)) without the [B, T, V] result; logits [B, T, V], tokens [B, T].
  The sampler and the trainer both take their log-probs from here; with `cfg.batch_invariant` in
  fixed-shape tiles, so equal logits give equal log-probs bit for bit."""

  def logprob(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    scaled = logits.astype(jnp.float32) / temperature
    shifted = scaled - jax.lax.stop_gradient(jnp.max(scaled, axis=-1, keepdims=True))
    picked = jnp.take_along_axis(shifted, tokens[..., None], axis=-1)[..., 0]
    return picked - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))

  if cfg is not None and cfg.batch_invariant:
    return map_row_tiles(logprob, (logits, tokens), plan)
  return logprob(logits, tokens)


# ---------------------------------------------------------------------------------------------
# KV cache: a preallocated [layers, batch, kv_heads, length, head_dim] buffer per "k" and "v".


def cache_shape(cfg: ModelConfig, batch: int, length: int) -> tuple[int, ...]:
  """Shape of each of the cache's "k" and "v" arrays (logical axes `CACHE_AXES`)."""
  return (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> Params:
  """A zeroed KV cache {"k", "v"}: [layers, batch, kv_heads, length, head_dim]."""
  dtype = cfg.compute_dtype if dtype is None else resolve_dtype(dtype)
  shape = cache_shape(cfg, batch, length)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def unstack_layers(params: Params) -> Params:
  """Params with `layers` as a list of per-layer dicts: slice once before a loop that reuses the
  weights every iteration (XLA would otherwise copy each layer's slice on every decode step)."""
  stacked = params["layers"]
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  return {**params, "layers": [jax.tree.map(lambda p: p[i], stacked) for i in range(num_layers)]}


def unstack_cache(cache: Params) -> Params:
  """The cache as per-layer lists {"k": [[B, Hkv, S, hd]] * layers, "v": ...}: in a decode loop each
  layer's buffer is then updated in place and read once, with no copy of the whole cache."""
  return {name: list(value) for name, value in cache.items()}


def forward_with_cache(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    cache: Params,
    index: jax.Array,
    kv_valid: jax.Array,
    *,
    plan: ShardingPlan | None = None,
    hidden: bool = False,
) -> tuple[jax.Array, Params]:
  """Runs T new tokens per row, writing their keys/values at cache slots [index, index + T)
  (index a scalar, or one per row [B]). Returns (float32 logits [B, T, V], cache), or with
  `hidden=True` (last-layer hidden states [B, T, D] before the final norm, cache).

  kv_valid [B, S] marks cache slots that hold real (non-padding) tokens once this call has written;
  query t attends to slot s when kv_valid[b, s] and s <= index + t. A narrower kv_valid [B, W]
  (W <= S) makes attention read only the first W slots. `params["layers"]` and the
  cache may be stacked or per-layer lists (`unstack_layers`, `unstack_cache`, with
  `cfg.scan_layers` off); the cache comes back in the form it came in.
  """
  return build_model(cfg, plan).apply(
      {"params": params},
      tokens,
      None,
      positions,
      cache=cache,
      index=index,
      kv_valid=kv_valid,
      hidden=hidden,
  )


# ---------------------------------------------------------------------------------------------
# Shardings of the params, from the module's axis declarations.


def param_shardings(cfg: ModelConfig, plan: ShardingPlan) -> Params:
  """NamedSharding of every parameter of `cfg` (LoRA adapters included) under `plan`."""
  return tree_shardings(param_axes(cfg), param_shapes(cfg), plan)


def shard_params(cfg: ModelConfig, params: Params, plan: ShardingPlan) -> Params:
  """Moves params already in memory (host or device) onto their shardings under `plan`; a
  params tree without LoRA adapters takes the base model's shardings."""
  shardings = param_shardings(cfg, plan)
  if not any(is_lora_name(n) for n in params.get("layers", {})):
    shardings = split_lora(shardings)[0]
  return jax.device_put(params, shardings)


# ---------------------------------------------------------------------------------------------
# LoRA: adapters are leaves `layers/{target}_lora_a` and `layers/{target}_lora_b` of the params.


def is_lora_name(name: str) -> bool:
  return "_lora_" in name


def base_config(cfg: ModelConfig) -> ModelConfig:
  """The config without adapters (what HF checkpoints hold)."""
  return dataclasses.replace(cfg, lora_rank=0)


def split_lora(params: Params) -> tuple[Params, Params]:
  """(base params, adapters {"layers": {name: ...}}) of a params tree (adapters may be empty)."""
  layers = params.get("layers", {})
  base = {**params, "layers": {n: v for n, v in layers.items() if not is_lora_name(n)}}
  return base, {"layers": {n: v for n, v in layers.items() if is_lora_name(n)}}


def combine_params(base: Params, adapters: Params | None) -> Params:
  """The params tree of the adapted model: the base's leaves plus the adapters (no copies). With
  no base, `adapters` is taken to be the whole params tree (full fine-tuning)."""
  if base is None:
    return adapters
  if not adapters:
    return base
  return {**base, "layers": {**base["layers"], **adapters.get("layers", {})}}


def init_lora(cfg: ModelConfig, key: jax.Array, *, dtype: str = "float32") -> Params:
  """Fresh adapters {"layers": {...}} for `cfg.lora_rank` > 0: A ~ normal(fan_in^-1/2), B = 0."""
  if not cfg.lora_rank:
    raise ValueError("init_lora needs cfg.lora_rank > 0.")
  shapes = split_lora(param_shapes(cfg))[1]["layers"]
  keys = jax.random.split(key, len(shapes))
  out = {}
  for k, (name, shape) in zip(keys, sorted(shapes.items())):
    if name.endswith("_a"):
      fan_in = 1
      for size in shape[1:-1]:
        fan_in *= size
      out[name] = (jax.random.normal(k, shape) * fan_in**-0.5).astype(resolve_dtype(dtype))
    else:
      out[name] = jnp.zeros(shape, resolve_dtype(dtype))
  return {"layers": out}


def merge_lora(cfg: ModelConfig, params: Params) -> Params:
  """Base params with every adapter folded in, W + (alpha / rank) A B, in W's dtype (float32
  arithmetic): the plain model that computes what the adapted one does (for HF export)."""
  base, adapters = split_lora(params)
  if not adapters["layers"]:
    return base
  scale = cfg.lora_alpha / cfg.lora_rank
  layers = dict(base["layers"])
  for target in LORA_TARGETS:
    if f"{target}_lora_a" not in adapters["layers"]:
      continue
    a = adapters["layers"][f"{target}_lora_a"].astype(jnp.float32)  # [L, *in, r]
    b = adapters["layers"][f"{target}_lora_b"].astype(jnp.float32)  # [L, r, *out]
    w = layers[target]
    a2 = a.reshape(a.shape[0], -1, a.shape[-1])
    b2 = b.reshape(b.shape[0], b.shape[1], -1)
    delta = jnp.einsum("lir,lro->lio", a2, b2).reshape(w.shape)
    layers[target] = (w.astype(jnp.float32) + scale * delta).astype(w.dtype)
  return {**base, "layers": layers}
