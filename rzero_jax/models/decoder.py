"""The decoder-only transformer of the Qwen3 / Qwen2 / Llama-3 families as pure functions.

Params are a plain nested dict of arrays with the layers stacked on a leading axis:

  embed [vocab, embed]            final_norm [embed]        lm_head [embed, vocab] (untied only)
  layers/attn_norm [L, embed]     layers/q [L, embed, heads, head_dim]  (+ q_bias [L, heads, head_dim])
  layers/k, v [L, embed, kv_heads, head_dim] (+ k_bias, v_bias)         layers/o [L, heads, head_dim, embed]
  layers/q_norm, k_norm [L, head_dim] (Qwen3)   layers/mlp_norm [L, embed]
  layers/gate, up [L, embed, mlp]   layers/down [L, mlp, embed]   (+ o_bias, gate_bias, up_bias, down_bias)

`param_axes(cfg)` gives every weight's logical axis names; activations are constrained by name too,
so a sharding strategy is only a table from logical names to mesh axes (see `rzero_jax.sharding`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rzero_jax.models.config import ModelConfig, resolve_dtype, rope_inv_freq
from rzero_jax.sharding import ShardingPlan, constrain

Params = dict[str, Any]
NEG_INF = -1e30  # finite, so fully masked (padding) rows give no NaNs


def param_axes(cfg: ModelConfig) -> Params:
  """Logical axis names of every parameter, in the same tree structure as the params."""
  layers = {
      "attn_norm": ("layers", "embed_norm"),
      "q": ("layers", "embed", "heads", "head_dim"),
      "k": ("layers", "embed", "kv_heads", "head_dim"),
      "v": ("layers", "embed", "kv_heads", "head_dim"),
      "o": ("layers", "heads", "head_dim", "embed"),
      "mlp_norm": ("layers", "embed_norm"),
      "gate": ("layers", "embed", "mlp"),
      "up": ("layers", "embed", "mlp"),
      "down": ("layers", "mlp", "embed"),
  }
  if cfg.qkv_bias:
    layers.update(q_bias=("layers", "heads", "head_dim"), k_bias=("layers", "kv_heads", "head_dim"),
                  v_bias=("layers", "kv_heads", "head_dim"))
  if cfg.o_bias:
    layers["o_bias"] = ("layers", "embed_norm")
  if cfg.mlp_bias:
    layers.update(gate_bias=("layers", "mlp"), up_bias=("layers", "mlp"),
                  down_bias=("layers", "embed_norm"))
  if cfg.qk_norm:
    layers.update(q_norm=("layers", "head_dim"), k_norm=("layers", "head_dim"))
  params = {"embed": ("vocab", "embed"), "layers": layers, "final_norm": ("embed_norm",)}
  if not cfg.tie_embeddings:
    params["lm_head"] = ("embed", "vocab")
  return params


def param_shapes(cfg: ModelConfig) -> Params:
  """Shapes of every parameter, in the same tree structure as the params."""
  sizes = {"layers": cfg.num_layers, "embed": cfg.hidden_size, "embed_norm": cfg.hidden_size,
           "heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
           "mlp": cfg.intermediate_size, "vocab": cfg.vocab_size}
  return jax.tree.map(lambda axes: tuple(sizes[a] for a in axes), param_axes(cfg),
                      is_leaf=lambda x: isinstance(x, tuple))


def init_params(cfg: ModelConfig, key: jax.Array, *, dtype: str = "float32",
                std: float = 0.02) -> Params:
  """Random params (normal(std) matrices, unit norms, zero biases), e.g. for tests or pretraining."""
  shapes = param_shapes(cfg)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]]
  keys = jax.random.split(key, len(leaves))
  out = []
  for path, shape, k in zip(paths, leaves, keys):
    if "norm" in path:
      value = jnp.ones(shape)
    elif "bias" in path:
      value = jnp.zeros(shape)
    else:
      value = std * jax.random.normal(k, shape)
    out.append(value.astype(resolve_dtype(dtype)))
  return jax.tree.unflatten(treedef, out)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """`weight * x / rms(x)`, statistics in float32 (HF order: normalise, cast back, then scale)."""
  x32 = x.astype(jnp.float32)
  normed = (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)
  return weight.astype(x.dtype) * normed


def rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotate-half rotary embedding; x [B, T, H, hd], positions [B, T]; angles in float32."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


def _bias(layer: Params, name: str, x: jax.Array) -> jax.Array:
  return x + layer[name].astype(x.dtype) if name in layer else x


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Grouped-query attention. q [B, T, H, hd], k/v [B, S, Hkv, hd], mask [B, T, S] (True = attend)."""
  b, t, h, hd = q.shape
  groups = h // k.shape[2]
  q = q.reshape(b, t, k.shape[2], groups, hd)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * (hd ** -0.5)
  scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
  return out.reshape(b, t, h, hd)


def _project_qkv(cfg: ModelConfig, layer: Params, x: jax.Array, positions: jax.Array,
                 inv_freq: np.ndarray, plan: ShardingPlan | None):
  dt = x.dtype
  q = _bias(layer, "q_bias", jnp.einsum("btd,dhk->bthk", x, layer["q"].astype(dt)))
  k = _bias(layer, "k_bias", jnp.einsum("btd,dhk->bthk", x, layer["k"].astype(dt)))
  v = _bias(layer, "v_bias", jnp.einsum("btd,dhk->bthk", x, layer["v"].astype(dt)))
  if cfg.qk_norm:
    q = rms_norm(q, layer["q_norm"], cfg.rms_norm_eps)
    k = rms_norm(k, layer["k_norm"], cfg.rms_norm_eps)
  q, k = rope(q, positions, inv_freq), rope(k, positions, inv_freq)
  q = constrain(q, ("batch", "length", "heads", "head_dim"), plan)
  k = constrain(k, ("batch", "length", "kv_heads", "head_dim"), plan)
  v = constrain(v, ("batch", "length", "kv_heads", "head_dim"), plan)
  return q, k, v


def _attn_out_and_mlp(cfg: ModelConfig, layer: Params, x: jax.Array, attn: jax.Array,
                      plan: ShardingPlan | None) -> jax.Array:
  dt = x.dtype
  x = x + _bias(layer, "o_bias", jnp.einsum("bthk,hkd->btd", attn, layer["o"].astype(dt)))
  x = constrain(x, ("batch", "length", "embed"), plan)
  h = rms_norm(x, layer["mlp_norm"], cfg.rms_norm_eps)
  gate = _bias(layer, "gate_bias", jnp.einsum("btd,df->btf", h, layer["gate"].astype(dt)))
  up = _bias(layer, "up_bias", jnp.einsum("btd,df->btf", h, layer["up"].astype(dt)))
  act = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"), plan)
  x = x + _bias(layer, "down_bias", jnp.einsum("btf,fd->btd", act, layer["down"].astype(dt)))
  return constrain(x, ("batch", "length", "embed"), plan)


def _layer(cfg: ModelConfig, layer: Params, x: jax.Array, positions: jax.Array, mask: jax.Array,
           inv_freq: np.ndarray, plan: ShardingPlan | None) -> jax.Array:
  h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
  q, k, v = _project_qkv(cfg, layer, h, positions, inv_freq, plan)
  return _attn_out_and_mlp(cfg, layer, x, attention(q, k, v, mask), plan)


def embed_tokens(cfg: ModelConfig, params: Params, tokens: jax.Array,
                 plan: ShardingPlan | None = None) -> jax.Array:
  # The table is used whole along `embed` (gathered like any FSDP weight): looking rows up in an
  # embed-split table gives embed-split rows, which XLA can only move to batch-split by replicating.
  table = constrain(params["embed"], ("vocab", None), plan)
  x = jnp.take(table, tokens, axis=0).astype(cfg.compute_dtype)
  return constrain(x, ("batch", "length", "embed"), plan)


def unembed(cfg: ModelConfig, params: Params, x: jax.Array,
            plan: ShardingPlan | None = None) -> jax.Array:
  """Final norm and output projection; logits in float32."""
  x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps).astype(jnp.float32)
  if cfg.tie_embeddings:
    logits = jnp.einsum("btd,vd->btv", x, params["embed"].astype(jnp.float32))
  else:
    logits = jnp.einsum("btd,dv->btv", x, params["lm_head"].astype(jnp.float32))
  return constrain(logits, ("batch", "length", "vocab"), plan)


def default_positions(attention_mask: jax.Array) -> jax.Array:
  """Positions that skip left padding: cumulative count of real tokens minus one (0 on padding)."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def hidden_states(cfg: ModelConfig, params: Params, tokens: jax.Array,
                  attention_mask: jax.Array | None = None, positions: jax.Array | None = None,
                  *, plan: ShardingPlan | None = None) -> jax.Array:
  """Last-layer hidden states [B, T, D] (before the final norm) for a full-sequence pass."""
  tokens = jnp.asarray(tokens)
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be a [batch, length] array of ids, got shape {tokens.shape}: "
                     "wrap a single sequence as [ids].")
  b, t = tokens.shape
  if attention_mask is None:
    attention_mask = jnp.ones((b, t), dtype=bool)
  attention_mask = attention_mask.astype(bool)
  if positions is None:
    positions = default_positions(attention_mask)
  causal = jnp.tril(jnp.ones((t, t), dtype=bool))
  mask = causal[None] & attention_mask[:, None, :]
  inv_freq = rope_inv_freq(cfg)
  x = embed_tokens(cfg, params, tokens, plan)

  def step(x, layer):
    return _layer(cfg, layer, x, positions, mask, inv_freq, plan), None

  if cfg.remat:
    step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)
  if cfg.scan_layers:
    x, _ = jax.lax.scan(step, x, params["layers"])
  else:
    for i in range(cfg.num_layers):
      x, _ = step(x, jax.tree.map(lambda p: p[i], params["layers"]))
  return x


def forward(cfg: ModelConfig, params: Params, tokens: jax.Array,
            attention_mask: jax.Array | None = None, positions: jax.Array | None = None,
            *, plan: ShardingPlan | None = None) -> jax.Array:
  """Logits [B, T, V] in float32.

  tokens [B, T] int; attention_mask [B, T] (1 = real token, 0 = padding; default all ones);
  positions [B, T] (default: counts real tokens, so left padding gets the right positions).
  """
  return unembed(cfg, params, hidden_states(cfg, params, tokens, attention_mask, positions,
                                            plan=plan), plan)


# ---------------------------------------------------------------------------------------------
# KV-cached path (used by the sampler): a preallocated cache, written in place at `index`.
# Cache layout [layers, batch, kv_heads, length, head_dim]: each (row, head) attends over one
# contiguous [length, head_dim] block, so decode reads the cache once with no transposed copy.

def cache_shape(cfg: ModelConfig, batch: int, length: int) -> tuple[int, ...]:
  """Shape of each of the cache's "k" and "v" arrays (logical axes `CACHE_AXES`)."""
  return (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> Params:
  """A zeroed KV cache {"k", "v"}: [layers, batch, kv_heads, length, head_dim]."""
  dtype = cfg.compute_dtype if dtype is None else resolve_dtype(dtype)
  shape = cache_shape(cfg, batch, length)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


CACHE_AXES = ("layers", "batch", "kv_heads", "cache_length", "head_dim")


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


def _layer_params(params: Params, i: int) -> Params:
  layers = params["layers"]
  return layers[i] if isinstance(layers, list) else jax.tree.map(lambda p: p[i], layers)


def cache_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Grouped-query attention over the cache layout: q [B, T, H, hd], k/v [B, Hkv, S, hd] (any
  dtype; used in q's), mask [B, T, S] (True = attend); scores and softmax in float32."""
  b, t, h, hd = q.shape
  kv_heads = k.shape[1]
  q = q.reshape(b, t, kv_heads, h // kv_heads, hd)
  scores = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(q.dtype),
                      preferred_element_type=jnp.float32) * (hd ** -0.5)
  scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
  out = jnp.einsum("bkgts,bksd->bkgtd", probs, v.astype(q.dtype))  # probs as the left operand
  return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, h, hd)


def cache_unembed(cfg: ModelConfig, params: Params, x: jax.Array,
                  plan: ShardingPlan | None = None) -> jax.Array:
  """`unembed` with the output matrix used in its own dtype and float32 accumulation: the same
  products (its input is already rounded to the compute dtype), without converting the whole
  vocab matrix to float32 on every decode step (for bf16 weights: 3x its memory traffic)."""
  x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
  if cfg.tie_embeddings:
    logits = jnp.einsum("btd,vd->btv", x, params["embed"], preferred_element_type=jnp.float32)
  else:
    logits = jnp.einsum("btd,dv->btv", x, params["lm_head"], preferred_element_type=jnp.float32)
  return constrain(logits, ("batch", "length", "vocab"), plan)


def hidden_with_cache(cfg: ModelConfig, params: Params, tokens: jax.Array, positions: jax.Array,
                      cache: Params, index: jax.Array, kv_valid: jax.Array,
                      *, plan: ShardingPlan | None = None) -> tuple[jax.Array, Params]:
  """Runs T new tokens per row, writing their keys/values at cache slots [index, index + T).

  kv_valid [B, S] marks cache slots that hold real (non-padding) tokens once this call has written;
  query t attends to slot s when kv_valid[b, s] and s <= index + t. `params["layers"]` and the
  cache may be stacked or per-layer lists (`unstack_layers`, `unstack_cache`); the cache comes back
  in the form it came in. Returns (last-layer hidden states [B, T, D] before the final norm, cache).
  """
  t = tokens.shape[1]
  stacked = not isinstance(cache["k"], list)
  layer_caches = unstack_cache(cache) if stacked else cache
  slots = jnp.arange(layer_caches["k"][0].shape[2])
  query_slots = index + jnp.arange(t)
  mask = (slots[None, None, :] <= query_slots[None, :, None]) & kv_valid[:, None, :]
  inv_freq = rope_inv_freq(cfg)
  x = embed_tokens(cfg, params, tokens, plan)
  new_cache: Params = {"k": [], "v": []}
  for i in range(cfg.num_layers):
    layer = _layer_params(params, i)
    h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _project_qkv(cfg, layer, h, positions, inv_freq, plan)
    for name, new in (("k", k), ("v", v)):
      buffer = layer_caches[name][i]
      new = jnp.swapaxes(new, 1, 2).astype(buffer.dtype)  # [B, Hkv, T, hd]
      buffer = jax.lax.dynamic_update_slice(buffer, new, (0, 0, index, 0))
      new_cache[name].append(constrain(buffer, CACHE_AXES[1:], plan))
    attn = cache_attention(q, new_cache["k"][i], new_cache["v"][i], mask)
    x = _attn_out_and_mlp(cfg, layer, x, attn, plan)
  if stacked:
    new_cache = {name: constrain(jnp.stack(value), CACHE_AXES, plan)
                 for name, value in new_cache.items()}
  return x, new_cache


def forward_with_cache(cfg: ModelConfig, params: Params, tokens: jax.Array, positions: jax.Array,
                       cache: Params, index: jax.Array, kv_valid: jax.Array,
                       *, plan: ShardingPlan | None = None) -> tuple[jax.Array, Params]:
  """`hidden_with_cache` then `cache_unembed`: returns (float32 logits [B, T, V], cache)."""
  x, cache = hidden_with_cache(cfg, params, tokens, positions, cache, index, kv_valid, plan=plan)
  return cache_unembed(cfg, params, x, plan), cache
