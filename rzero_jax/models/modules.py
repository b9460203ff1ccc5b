"""The Qwen3 / Qwen2 / Llama-3 decoder as Flax linen modules, with one forward path.

`Decoder` serves training, prefill and decode: the KV cache is an optional input and output. Every
weight is declared once, in `DecoderLayer` or `Decoder`, with its shape, initializer and logical
axes (`nn.with_logical_partitioning`); activations are constrained by logical names. The params
tree is plain nested dicts, the layers stacked on a leading axis (what `load_pretrained` returns):

  embed [vocab, embed]            final_norm [embed]        lm_head [embed, vocab] (untied only)
  layers/attn_norm [L, embed]     layers/q [L, embed, heads, head_dim]  (+ q_bias [L, heads, head_dim])
  layers/k, v [L, embed, kv_heads, head_dim] (+ k_bias, v_bias)         layers/o [L, heads, head_dim, embed]
  layers/q_norm, k_norm [L, head_dim] (Qwen3)   layers/mlp_norm [L, embed]
  layers/gate, up [L, embed, mlp]   layers/down [L, mlp, embed]   (+ o_bias, gate_bias, up_bias, down_bias)
  LoRA (cfg.lora_rank > 0): layers/{target}_lora_a [L, <input axes>, lora_rank] and
    layers/{target}_lora_b [L, lora_rank, <output axes>] for each target in cfg.lora_targets.

Layers. `cfg.scan_layers` runs the layers with `nn.scan` (one compiled layer, params and cache
scanned over the stacked axis); otherwise a Python loop applies the same `DecoderLayer` to each
layer's slice (static slices; `params["layers"]` and the cache may also come as per-layer lists,
which a decode loop prepares once so it neither slices weights nor copies the cache per step; those
always run the loop).
`cfg.remat` rematerialises each layer in the backward pass (`nn.remat` / `jax.checkpoint`).

Cache layout [layers, batch, kv_heads, length, head_dim]: each (row, head) attends over one
contiguous [length, head_dim] block, so decode reads it once with no transposed copy. Without a
cache, the keys and values of the call's own tokens are attended in the same layout, so the
training forward and the cached decode compute the same products in the same order.

LoRA (adapters in the params tree, the math of qwix's LoRA: y = x W + (alpha / rank) (x A) B, with
B initialised to zero). Why not qwix itself: its provider finds a weight by identity among the
module's params at the matmul, but ours are cast to the compute dtype first (float32 master weights,
bfloat16 compute), and the R-Zero loop needs the frozen base and each role's adapters as separate
trees (one base shared by both roles, only adapters in the optimizer), which plain leaves give.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rzero_jax.models.config import ModelConfig, rope_inv_freq
from rzero_jax.sharding import ShardingPlan, constrain

Params = dict[str, Any]
NEG_INF = -1e30  # finite, so fully masked (padding) rows give no NaNs
CACHE_AXES = ("layers", "batch", "kv_heads", "cache_length", "head_dim")

# Per-layer weights: logical axes (without the stacked "layers" axis) and initializer kind.
# "act_embed" names an embed-sized vector that is never split (norm scales, output biases).
LAYER_WEIGHTS: dict[str, tuple[tuple[str, ...], str]] = {
    "attn_norm": (("act_embed",), "ones"),
    "q": (("embed", "heads", "head_dim"), "normal"),
    "k": (("embed", "kv_heads", "head_dim"), "normal"),
    "v": (("embed", "kv_heads", "head_dim"), "normal"),
    "o": (("heads", "head_dim", "embed"), "normal"),
    "q_bias": (("heads", "head_dim"), "zeros"),
    "k_bias": (("kv_heads", "head_dim"), "zeros"),
    "v_bias": (("kv_heads", "head_dim"), "zeros"),
    "o_bias": (("act_embed",), "zeros"),
    "q_norm": (("head_dim",), "ones"),
    "k_norm": (("head_dim",), "ones"),
    "mlp_norm": (("act_embed",), "ones"),
    "gate": (("embed", "mlp"), "normal"),
    "up": (("embed", "mlp"), "normal"),
    "down": (("mlp", "embed"), "normal"),
    "gate_bias": (("mlp",), "zeros"),
    "up_bias": (("mlp",), "zeros"),
    "down_bias": (("act_embed",), "zeros"),
}
# LoRA targets: how many leading axes of the weight are its input (the rest are its output).
LORA_TARGETS = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}


def layer_weight_names(cfg: ModelConfig) -> tuple[str, ...]:
  """The per-layer weights a config has (base weights, then LoRA adapters)."""
  names = ["attn_norm", "q", "k", "v", "o", "mlp_norm", "gate", "up", "down"]
  if cfg.qkv_bias:
    names += ["q_bias", "k_bias", "v_bias"]
  if cfg.o_bias:
    names.append("o_bias")
  if cfg.mlp_bias:
    names += ["gate_bias", "up_bias", "down_bias"]
  if cfg.qk_norm:
    names += ["q_norm", "k_norm"]
  for target in (cfg.lora_targets if cfg.lora_rank else ()):
    names += [f"{target}_lora_a", f"{target}_lora_b"]
  return tuple(names)


def layer_weight_axes(name: str) -> tuple[str, ...]:
  """Logical axes of one per-layer weight (LoRA adapters included), without the "layers" axis."""
  if "_lora_" in name:
    target, part = name.split("_lora_")
    axes, split = LAYER_WEIGHTS[target][0], LORA_TARGETS[target]
    return axes[:split] + ("lora_rank",) if part == "a" else ("lora_rank",) + axes[split:]
  return LAYER_WEIGHTS[name][0]


def axis_sizes(cfg: ModelConfig) -> dict[str, int]:
  return {
      "layers": cfg.num_layers,
      "embed": cfg.hidden_size,
      "act_embed": cfg.hidden_size,
      "heads": cfg.num_heads,
      "kv_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "mlp": cfg.intermediate_size,
      "vocab": cfg.vocab_size,
      "lora_rank": cfg.lora_rank,
  }


def _initializer(kind: str, std: float):
  if kind == "ones":
    return nn.initializers.ones
  if kind == "zeros":
    return nn.initializers.zeros
  return nn.initializers.normal(std)


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


def round_to(x: jax.Array, dtype: Any) -> jax.Array:
  """`x.astype(dtype)`, the rounding made explicit (`lax.reduce_precision`) when it narrows: XLA's
  excess-precision rewrites may drop a plain convert feeding a matmul in one program and keep it
  in another; they keep this one, so every program multiplies the same values."""
  dtype = jnp.dtype(dtype)
  if jnp.finfo(x.dtype).bits <= jnp.finfo(dtype).bits:
    return x.astype(dtype)
  info = jnp.finfo(dtype)
  return jax.lax.reduce_precision(x, info.nexp, info.nmant).astype(dtype)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    dtype: Any = None,
    out_dtype: Any = None,
) -> jax.Array:
  """Grouped-query attention in the cache layout: q [B, T, H, hd], k/v [B, Hkv, S, hd], mask
  [B, T, S] (True = attend). The products take inputs in `dtype` (default q's) and accumulate in
  float32; softmax in float32; the output is in `out_dtype` (default `dtype`)."""
  dtype = q.dtype if dtype is None else dtype
  b, t, h, hd = q.shape
  kv_heads = k.shape[1]
  q = round_to(q, dtype).reshape(b, t, kv_heads, h // kv_heads, hd)
  scores = jnp.einsum(
      "btkgd,bksd->bkgts", q, round_to(k, dtype), preferred_element_type=jnp.float32
  ) * (hd**-0.5)
  scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
  probs = round_to(jax.nn.softmax(scores, axis=-1), dtype)
  out = jnp.einsum(  # probs as the left operand
      "bkgts,bksd->bkgtd", probs, round_to(v, dtype), preferred_element_type=out_dtype or dtype
  )
  return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, h, hd)


# Batch-invariant mode (`cfg.batch_invariant`): every reduction runs on a fixed-shape block.
TILE_ROWS = 16  # tokens per tile of the per-token computations (norms, projections, MLP, logits)
QUERY_ROWS = 8  # query rows (a token's heads of one KV group) per attention tile
KEY_BLOCK = 64  # keys per block of the online softmax; blocks are visited in position order


def _pad_to(x: jax.Array, axis: int, multiple: int, value: Any = 0) -> jax.Array:
  pad = (-x.shape[axis]) % multiple
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths, constant_values=value)


def map_row_tiles(fn, arrays: tuple[jax.Array, ...], plan: ShardingPlan | None):
  """`fn` over [B, T, ...] arrays, applied to tiles of TILE_ROWS tokens one after another.

  The B * T tokens of each batch shard are cut into tiles of TILE_ROWS rows (padded); iteration i
  of a `lax.map` hands `fn` the i-th tile of every shard as arrays [shards, TILE_ROWS, ...]. On each
  device `fn` therefore always computes on TILE_ROWS tokens, whatever the batch, sequence length or
  mesh: the products it runs have one shape, hence one reduction order. Returns `fn`'s outputs
  (a tuple of arrays, or one array) reassembled to [B, T, ...].
  """
  b, t = arrays[0].shape[:2]
  shards = 1 if plan is None else plan.shards("batch", b)
  local = b // shards * t

  def to_tiles(x: jax.Array) -> jax.Array:
    x = _pad_to(x.reshape(shards, local, *x.shape[2:]), 1, TILE_ROWS)
    x = jnp.swapaxes(x.reshape(shards, -1, TILE_ROWS, *x.shape[2:]), 0, 1)
    return constrain(x, (None, "batch") + (None,) * (x.ndim - 2), plan)

  def from_tiles(x: jax.Array) -> jax.Array:
    x = jnp.swapaxes(x, 0, 1).reshape(shards, -1, *x.shape[3:])[:, :local]
    return x.reshape(b, t, *x.shape[2:])

  out = jax.lax.map(lambda tile: fn(*tile), tuple(to_tiles(x) for x in arrays))
  return jax.tree.map(from_tiles, out)


def blocked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype: Any, out_dtype: Any
) -> jax.Array:
  """`attention` with a reduction order that depends on nothing but the token's own keys.

  Query rows (a token's heads of one KV group) go in tiles of QUERY_ROWS; keys in blocks of
  KEY_BLOCK slots, folded in slot order by an online softmax (float32 running max and output, the
  softmax's sum a column of the output). A block that is entirely masked leaves the running values bit for bit unchanged, so
  trailing padding, a longer cache window or a longer batch add nothing; keys must sit at slots in
  position order from slot 0 (the sampler's cache; `Decoder` rolls left-padded rows).
  """
  b, t, h, hd = q.shape
  kv_heads, groups = k.shape[1], h // k.shape[1]
  rows = t * groups
  q = round_to(q, dtype).reshape(b, t, kv_heads, groups, hd).transpose(0, 2, 1, 3, 4)
  q = _pad_to(q.reshape(b, kv_heads, rows, hd), 2, QUERY_ROWS)
  query_mask = _pad_to(jnp.repeat(mask, groups, axis=1), 1, QUERY_ROWS, False)  # [B, rows', S]
  blocks = lambda x, axis: jnp.moveaxis(  # noqa: E731
      x.reshape(*x.shape[:axis], -1, KEY_BLOCK, *x.shape[axis + 1 :]), axis, 0
  )
  k_blocks = blocks(_pad_to(round_to(k, dtype), 2, KEY_BLOCK), 2)  # [nb, B, Hkv, KB, hd]
  # A column of ones after the values: the products then also give the softmax's sum (a dot's
  # accumulation order depends only on its own shape; a reduction's, on XLA's choice for its size).
  v = jnp.concatenate([round_to(v, dtype), jnp.ones(v.shape[:-1] + (1,), dtype)], axis=-1)
  v_blocks = blocks(_pad_to(v, 2, KEY_BLOCK), 2)
  query_mask = _pad_to(query_mask, 2, KEY_BLOCK, False)
  tiles = lambda x, axis: jnp.moveaxis(  # noqa: E731
      x.reshape(*x.shape[:axis], -1, QUERY_ROWS, *x.shape[axis + 1 :]), axis, 0
  )

  def query_tile(tile):
    qt, mt = tile  # [B, Hkv, R, hd], [B, R, S']

    def fold(carry, block):
      m, acc = carry
      kj, vj, mj = block
      s = jnp.einsum("bhrd,bhkd->bhrk", qt, kj, preferred_element_type=jnp.float32) * (hd**-0.5)
      live = mj[:, None]
      s = jnp.where(live, s, NEG_INF)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      scale = jnp.exp(m - m_new)
      p = jnp.where(live, jnp.exp(s - m_new[..., None]), 0.0)
      pv = jnp.einsum("bhrk,bhkd->bhrd", round_to(p, dtype), vj, preferred_element_type=jnp.float32)
      return (m_new, acc * scale[..., None] + pv), None  # acc[..., -1]: the sum of p

    init = (
        jnp.full(qt.shape[:3], NEG_INF, jnp.float32),
        jnp.zeros(qt.shape[:3] + (hd + 1,), jnp.float32),
    )
    (_, acc), _ = jax.lax.scan(fold, init, (k_blocks, v_blocks, blocks(mt, 2)))
    l = acc[..., -1:]
    return jnp.where(l > 0, acc[..., :-1] / jnp.maximum(l, 1e-30), 0.0)

  out = jax.lax.map(query_tile, (tiles(q, 2), tiles(query_mask, 1)))  # [nq, B, Hkv, R, hd]
  out = jnp.moveaxis(out, 0, 2).reshape(b, kv_heads, -1, hd)[:, :, :rows]
  out = out.reshape(b, kv_heads, t, groups, hd).transpose(0, 2, 1, 3, 4)
  return out.reshape(b, t, h, hd).astype(out_dtype)


def write_cache(cache: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """Writes new [B, Hkv, T, hd] into cache [B, Hkv, S, hd] at slots [index, index + T): one index
  for every row (a scalar), or one per row (index [B], continuous batching)."""
  new = new.astype(cache.dtype)
  if jnp.ndim(index) == 0:
    return jax.lax.dynamic_update_slice(cache, new, (0, 0, index, 0))
  # One slot range per row: a scatter XLA does in place, row-parallel. Indexed [B, T, Hkv, hd].
  b, _, t, _ = new.shape
  slots = index[:, None] + jnp.arange(t)
  return cache.at[jnp.arange(b)[:, None], :, slots, :].set(
      jnp.swapaxes(new, 1, 2), indices_are_sorted=True, unique_indices=True
  )


def default_positions(attention_mask: jax.Array) -> jax.Array:
  """Positions that skip left padding: cumulative count of real tokens minus one (0 on padding)."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def _no_constraint(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
  del axes
  return x


def _proj(cfg: ModelConfig, w: Params, name: str, spec: str, x: jax.Array) -> jax.Array:
  """`einsum(spec, x, W)` plus the LoRA term when `name` is adapted: inputs in the compute dtype,
  float32 accumulation, output in the activation dtype."""
  dt, out = cfg.compute_dtype, cfg.activation_dtype
  x = round_to(x, dt)
  y = jnp.einsum(spec, x, round_to(w[name], dt), preferred_element_type=out)
  if f"{name}_lora_a" in w:
    inputs, result = spec.split("->")
    x_axes, w_axes = inputs.split(",")
    split = LORA_TARGETS[name]
    contracted = w_axes[:split]
    rest = x_axes[: len(x_axes) - len(contracted)]
    a, b = round_to(w[f"{name}_lora_a"], dt), round_to(w[f"{name}_lora_b"], dt)
    low = jnp.einsum(f"{x_axes},{contracted}r->{rest}r", x, a, preferred_element_type=out)
    scale = cfg.lora_alpha / cfg.lora_rank
    lora = jnp.einsum(
        f"{rest}r,r{w_axes[split:]}->{result}", round_to(low, dt), b, preferred_element_type=out
    )
    y = y + scale * lora
  return y


def _elementwise_weight(cfg: ModelConfig, w: Params, name: str) -> jax.Array:
  """A norm scale or bias as the matmuls see weights (rounded to the compute dtype), in the
  activation dtype: float32 master weights and a bfloat16 sampler copy give the same values."""
  return round_to(w[name], cfg.compute_dtype).astype(cfg.activation_dtype)


def _bias(cfg: ModelConfig, w: Params, name: str, x: jax.Array) -> jax.Array:
  return x + _elementwise_weight(cfg, w, name) if name in w else x


def _qkv(cfg: ModelConfig, w: Params, x: jax.Array, positions: jax.Array) -> tuple:
  """Queries [B, T, H, hd], keys and values [B, T, Hkv, hd] of tokens x [B, T, D] (normed,
  projected, Qwen3's q/k norms, rotary embeddings)."""
  eps = cfg.rms_norm_eps
  h = rms_norm(x, _elementwise_weight(cfg, w, "attn_norm"), eps)
  q = _bias(cfg, w, "q_bias", _proj(cfg, w, "q", "btd,dhk->bthk", h))
  k = _bias(cfg, w, "k_bias", _proj(cfg, w, "k", "btd,dhk->bthk", h))
  v = _bias(cfg, w, "v_bias", _proj(cfg, w, "v", "btd,dhk->bthk", h))
  if cfg.qk_norm:
    q = rms_norm(q, _elementwise_weight(cfg, w, "q_norm"), eps)
    k = rms_norm(k, _elementwise_weight(cfg, w, "k_norm"), eps)
  inv_freq = rope_inv_freq(cfg)
  return rope(q, positions, inv_freq), rope(k, positions, inv_freq), v


def _out_and_mlp(cfg: ModelConfig, w: Params, x: jax.Array, attn: jax.Array, c) -> jax.Array:
  """The residual stream after the attention output projection and the SwiGLU MLP."""
  x = x + _bias(cfg, w, "o_bias", _proj(cfg, w, "o", "bthk,hkd->btd", attn))
  x = c(x, ("batch", "length", "embed"))
  h = rms_norm(x, _elementwise_weight(cfg, w, "mlp_norm"), cfg.rms_norm_eps)
  gate = _bias(cfg, w, "gate_bias", _proj(cfg, w, "gate", "btd,df->btf", h))
  up = _bias(cfg, w, "up_bias", _proj(cfg, w, "up", "btd,df->btf", h))
  act = c(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
  x = x + _bias(cfg, w, "down_bias", _proj(cfg, w, "down", "btf,fd->btd", act))
  return c(x, ("batch", "length", "embed"))


def replicated(tree: Any, plan: ShardingPlan | None) -> Any:
  """`tree` constrained to be whole on every device (a no-op without a plan)."""
  return jax.tree.map(lambda x: constrain(x, (None,) * x.ndim, plan), tree)


class DecoderLayer(nn.Module):
  """One pre-norm transformer layer (attention + SwiGLU MLP), optionally over a KV cache.

  `__call__(x, cache, positions, mask, index)`: x [B, T, D]; cache None or {"k", "v"} of this
  layer [B, Hkv, S, hd], into which the new keys/values are written at slots [index, index + T);
  mask [B, T, S] over the attended slots (the cache's, or the call's own T tokens without one).
  Returns (x, cache), cache None when none was given. With `cfg.batch_invariant` the per-token
  parts run in fixed-shape tiles (`map_row_tiles`, weights whole on every device) and attention is
  `blocked_attention`.
  """

  cfg: ModelConfig
  plan: ShardingPlan | None = None
  init_std: float = 0.02

  def _w(self, name: str) -> jax.Array:
    if name in LAYER_WEIGHTS:
      axes, kind = LAYER_WEIGHTS[name]
      init = _initializer(kind, self.init_std)
    else:  # LoRA: A random, B zero (the adapted model starts as the base model)
      axes = layer_weight_axes(name)
      fan_in = int(np.prod([axis_sizes(self.cfg)[a] for a in axes[:-1]]))
      init = nn.initializers.normal(fan_in**-0.5) if name.endswith("_a") else nn.initializers.zeros
    shape = tuple(axis_sizes(self.cfg)[a] for a in axes)
    return self.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)

  def _c(self, x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    return constrain(x, axes, self.plan)

  @nn.compact
  def __call__(self, x, cache, positions, mask, index):
    cfg = self.cfg
    w = {name: self._w(name) for name in layer_weight_names(cfg)}
    if cfg.batch_invariant:
      w = replicated(w, self.plan)
      q, k, v = map_row_tiles(lambda x, p: _qkv(cfg, w, x, p), (x, positions), self.plan)
    else:
      q, k, v = _qkv(cfg, w, x, positions)
    q = self._c(q, ("batch", "length", "heads", "head_dim"))
    k = self._c(jnp.swapaxes(k, 1, 2), ("batch", "kv_heads", "length", "head_dim"))
    v = self._c(jnp.swapaxes(v, 1, 2), ("batch", "kv_heads", "length", "head_dim"))
    if cache is not None:
      cache = {
          name: self._c(write_cache(cache[name], new, index), CACHE_AXES[1:])
          for name, new in (("k", k), ("v", v))
      }
      window = mask.shape[-1]  # attention reads the cache's first `window` slots only
      k, v = cache["k"][:, :, :window], cache["v"][:, :, :window]
    dt, out = cfg.compute_dtype, cfg.activation_dtype
    if cfg.batch_invariant:
      attn = blocked_attention(q, k, v, mask, dt, out)
      rest = lambda x, a: _out_and_mlp(cfg, w, x, a, _no_constraint)  # noqa: E731
      return self._c(map_row_tiles(rest, (x, attn), self.plan), ("batch", "length", "embed")), cache
    attn = attention(q, k, v, mask, dt, out)
    return _out_and_mlp(cfg, w, x, attn, self._c), cache


class Decoder(nn.Module):
  """Embedding, `cfg.num_layers` `DecoderLayer`s, final norm and output projection.

  `__call__(tokens, attention_mask=None, positions=None, *, cache=None, index=0, kv_valid=None)`:
  - without a cache: float32 logits [B, T, V] of a full-sequence pass (what `forward` returns);
    attention_mask [B, T] (1 = real token; default all ones), positions default to counting real
    tokens, so left padding gets the right positions.
  - with a cache {"k", "v"} (stacked [L, B, Hkv, S, hd] or per-layer lists): the T new tokens'
    keys/values are written at slots [index, index + T) (index: a scalar, or one per row [B]),
    query t attends to slot s when kv_valid[b, s] and s <= index + t; kv_valid [B, W] may cover
    only the cache's first W slots, which are then all that attention reads (the sampler's window
    over the filled part); returns (logits, cache), the cache in the form it came in.
  `hidden=True` returns the last layer's hidden states (before the final norm) instead of logits.
  """

  cfg: ModelConfig
  plan: ShardingPlan | None = None
  init_std: float = 0.02

  def _layer_module(self):
    layer = DecoderLayer
    if self.cfg.remat:
      layer = nn.remat(
          layer,
          policy=jax.checkpoint_policies.nothing_saveable,
          prevent_cse=not self.cfg.scan_layers,
      )
    return layer

  def _per_layer(self, cache) -> bool:
    """Per-layer lists (params or cache) always run the unrolled loop, whatever `scan_layers`."""
    return isinstance(self.variables["params"]["layers"], list) or (
        cache is not None and isinstance(cache["k"], list)
    )

  def _run_layers(self, x, cache, positions, mask, index):
    cfg = self.cfg
    if self.is_initializing() or (cfg.scan_layers and not self._per_layer(cache)):
      # nn.scan: params and the (stacked) cache are scanned over their leading layer axis.
      x, cache = self.layers(x, cache, positions, mask, index)
      if cache is not None:
        cache = {n: constrain(v, CACHE_AXES, self.plan) for n, v in cache.items()}
      return x, cache
    # The same layer module applied to each layer's params in a Python loop (unrolled).
    stacked_params = self.variables["params"]["layers"]
    layer = DecoderLayer(cfg, self.plan, self.init_std, parent=None)

    def apply_layer(p, x, c):
      return layer.apply({"params": p}, x, c, positions, mask, index)

    if cfg.remat:
      apply_layer = jax.checkpoint(apply_layer, policy=jax.checkpoint_policies.nothing_saveable)
    per_layer_cache = cache is not None and isinstance(cache["k"], list)
    outs = {"k": [], "v": []}
    for i in range(cfg.num_layers):
      p = (
          stacked_params[i]
          if isinstance(stacked_params, list)
          else jax.tree.map(lambda w: w[i], stacked_params)
      )
      c = None if cache is None else {n: v[i] for n, v in cache.items()}
      x, c = apply_layer(p, x, c)
      if c is not None:
        for n in outs:
          outs[n].append(c[n])
    if cache is None:
      return x, None
    if per_layer_cache:
      return x, outs
    return x, {n: constrain(jnp.stack(v), CACHE_AXES, self.plan) for n, v in outs.items()}

  def setup(self):
    cfg = self.cfg
    init = lambda kind, axes: nn.with_logical_partitioning(_initializer(kind, self.init_std), axes)
    self.embed = self.param(
        "embed", init("normal", ("vocab", "embed")), (cfg.vocab_size, cfg.hidden_size), jnp.float32
    )
    self.final_norm = self.param(
        "final_norm", init("ones", ("act_embed",)), (cfg.hidden_size,), jnp.float32
    )
    if not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head",
          init("normal", ("embed", "vocab")),
          (cfg.hidden_size, cfg.vocab_size),
          jnp.float32,
      )
    self.layers = nn.scan(
        self._layer_module(),
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg, self.plan, self.init_std)

  def unembed(self, x: jax.Array) -> jax.Array:
    """Final norm and output projection: inputs in the compute dtype, float32 logits."""
    cfg = self.cfg
    w = {"final_norm": self.final_norm, "out": self.embed if cfg.tie_embeddings else self.lm_head}
    spec = "btd,vd->btv" if cfg.tie_embeddings else "btd,dv->btv"

    def logits(x: jax.Array) -> jax.Array:
      x = rms_norm(x, _elementwise_weight(cfg, w, "final_norm"), cfg.rms_norm_eps)
      dt = cfg.compute_dtype
      return jnp.einsum(
          spec, round_to(x, dt), round_to(w["out"], dt), preferred_element_type=jnp.float32
      )

    if cfg.batch_invariant:
      w = replicated(w, self.plan)
      return map_row_tiles(logits, (x,), self.plan)
    return constrain(logits(x), ("batch", "length", "vocab"), self.plan)

  def __call__(
      self,
      tokens,
      attention_mask=None,
      positions=None,
      *,
      cache=None,
      index=0,
      kv_valid=None,
      hidden: bool = False,
  ):
    cfg = self.cfg
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError(
          f"tokens must be a [batch, length] array of ids, got shape {tokens.shape}: "
          "wrap a single sequence as [ids]."
      )
    b, t = tokens.shape
    if attention_mask is None:
      attention_mask = jnp.ones((b, t), dtype=bool)
    attention_mask = jnp.asarray(attention_mask).astype(bool)
    if positions is None:
      positions = default_positions(attention_mask)
    if cfg.batch_invariant and cache is None:  # keys in position order from slot 0
      return _unrolled(self._run, tokens, attention_mask, positions, hidden)
    return self._run(tokens, attention_mask, positions, cache, index, kv_valid, hidden)

  def _run(self, tokens, attention_mask, positions, cache, index, kv_valid, hidden):
    cfg = self.cfg
    t = tokens.shape[1]
    if cache is None:  # the call's own tokens are the attended slots
      index, kv_valid = 0, attention_mask
    query_slots = jnp.reshape(index, (-1, 1)) + jnp.arange(t)  # [1 or B, T]
    slots = jnp.arange(kv_valid.shape[1])
    mask = (slots[None, None, :] <= query_slots[:, :, None]) & kv_valid[:, None, :]
    # The table is used whole along `embed` (gathered like any FSDP weight): looking rows up in an
    # embed-split table gives embed-split rows, which XLA can only move to batch-split by replicating.
    table = constrain(self.embed, ("vocab", None), self.plan)
    x = round_to(jnp.take(table, tokens, axis=0), cfg.compute_dtype).astype(cfg.activation_dtype)
    x = constrain(x, ("batch", "length", "embed"), self.plan)
    x, cache = self._run_layers(x, cache, positions, mask, index)
    out = x if hidden else self.unembed(x)
    return out if cache is None else (out, cache)


def _unrolled(call, tokens, attention_mask, positions, hidden):
  """`call` (a cache-less `Decoder` pass) on rows rolled left so that each row's first real token
  sits at slot 0, as in the sampler's cache; its output rolled back."""
  t = tokens.shape[1]
  first = jnp.argmax(attention_mask, axis=1)  # leading padding per row (0 when none)
  order = (jnp.arange(t)[None, :] + first[:, None]) % t
  back = (jnp.arange(t)[None, :] - first[:, None]) % t
  roll = lambda x, idx: jnp.take_along_axis(  # noqa: E731
      x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1
  )
  out = call(
      roll(tokens, order),
      roll(attention_mask, order),
      roll(positions, order),
      None,
      0,
      None,
      hidden,
  )
  return roll(out, back)


def build_model(
    cfg: ModelConfig, plan: ShardingPlan | None = None, *, init_std: float = 0.02
) -> Decoder:
  """The Flax module of `cfg`: `build_model(cfg).apply({"params": params}, tokens, attention_mask)`
  returns what `forward(cfg, params, tokens, attention_mask)` returns."""
  return Decoder(cfg, plan, init_std)
