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
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) * (hd ** -0.5)
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
  x = jnp.take(params["embed"], tokens, axis=0).astype(cfg.compute_dtype)
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

def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> Params:
  """A zeroed KV cache {"k", "v"}: [layers, batch, length, kv_heads, head_dim]."""
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  dtype = cfg.compute_dtype if dtype is None else resolve_dtype(dtype)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


CACHE_AXES = ("layers", "batch", "cache_length", "kv_heads", "head_dim")


def forward_with_cache(cfg: ModelConfig, params: Params, tokens: jax.Array, positions: jax.Array,
                       cache: Params, index: jax.Array, kv_valid: jax.Array,
                       *, plan: ShardingPlan | None = None) -> tuple[jax.Array, Params]:
  """Runs T new tokens per row, writing their keys/values at cache slots [index, index + T).

  kv_valid [B, S] marks cache slots that hold real (non-padding) tokens once this call has written;
  query t attends to slot s when kv_valid[b, s] and s <= index + t. Returns (logits [B, T, V], cache).
  """
  b, t = tokens.shape
  slots = jnp.arange(cache["k"].shape[2])
  query_slots = index + jnp.arange(t)
  mask = (slots[None, None, :] <= query_slots[None, :, None]) & kv_valid[:, None, :]
  inv_freq = rope_inv_freq(cfg)
  x = embed_tokens(cfg, params, tokens, plan)
  new_k, new_v = cache["k"], cache["v"]
  for i in range(cfg.num_layers):
    layer = jax.tree.map(lambda p: p[i], params["layers"])
    h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _project_qkv(cfg, layer, h, positions, inv_freq, plan)
    new_k = jax.lax.dynamic_update_slice(new_k, k[None].astype(new_k.dtype), (i, 0, index, 0, 0))
    new_v = jax.lax.dynamic_update_slice(new_v, v[None].astype(new_v.dtype), (i, 0, index, 0, 0))
    attn = attention(q, new_k[i].astype(x.dtype), new_v[i].astype(x.dtype), mask)
    x = _attn_out_and_mlp(cfg, layer, x, attn, plan)
  cache = {"k": constrain(new_k, CACHE_AXES, plan), "v": constrain(new_v, CACHE_AXES, plan)}
  return unembed(cfg, params, x, plan), cache
