"""Batched generation: one jitted prefill, then one jitted `lax.while_loop` decode over a
preallocated KV cache (donated), stopping early once every row is done.

Layout. Prompts are left-padded to a bucketed length P; the cache has P + N slots, N the bucketed
`max_new_tokens`; the j-th generated token is fed back at slot P + j with position len(prompt) + j.
Each distinct prompt is prefilled once; its cache rows are then gathered `num_samples` times
(samples of a prompt are contiguous), so prefill costs do not grow with `num_samples`.

Buckets. P and N are powers of two (at least 16); row counts are powers of two rounded up to a
multiple of the mesh's batch shards. A long run thus compiles a handful of programs per
(config, sampling method, mesh); `max_new_tokens`, the seed and the stop ids (padded to 4, 8, ...)
are traced. The prefill does not depend on the sampling method: greedy and sampled calls share it.

Randomness. Row r (= prompt index x num_samples + sample index) draws its token t from
`fold_in(fold_in(key(seed), r), t)`: the same seed gives the same output, and a row's draws depend
neither on the batch padding nor on how `max_batch_size` splits the rows into calls.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rzero_jax.models.config import ModelConfig, resolve_dtype
from rzero_jax.models.decoder import (
    CACHE_AXES,
    default_positions,
    forward_with_cache,
    hidden_with_cache,
    init_cache,
    shard_params,
    unembed,
    unstack_cache,
    unstack_layers,
)
from rzero_jax.sampling.methods import Method, make_method
from rzero_jax.sharding import ShardingPlan, constrain, make_plan

Params = dict[str, Any]
MIN_LENGTH_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Completions in prompt order, `num_samples` contiguous samples per prompt.

  tokens: generated ids per sample, through the stop token when one was emitted.
  logprobs: per token, log-softmax of the temperature-scaled full distribution (greedy: T = 1).
  finished: True when the sample ended with a stop token, False when it hit `max_new_tokens`.
  token_array / logprob_array: the same, padded to the longest completion [num, T] (pad id / 0.0).
  lengths: number of tokens per sample [num].
  """

  tokens: list[list[int]]
  logprobs: list[list[float]]
  finished: list[bool]
  token_array: np.ndarray
  logprob_array: np.ndarray
  lengths: np.ndarray


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
  """Loop state; every array has a leading batch axis B except `step`."""

  step: jax.Array  # [] tokens generated so far
  tokens: jax.Array  # [B, N] generated tokens (pad once a row is done)
  logprobs: jax.Array  # [B, N] float32
  lengths: jax.Array  # [B] tokens kept (through the stop token)
  done: jax.Array  # [B] stop token emitted (padding rows start done)
  logits: jax.Array  # [B, V] float32 next-token logits
  position: jax.Array  # [B] position id of the next token
  pad: jax.Array  # [B] left padding of the prompt: cache slots below it are never attended
  cache: Params  # {"k", "v"}: per-layer lists of [B, kv_heads, P + N, head_dim]


def _bucket(n: int, minimum: int = 1, multiple: int = 1) -> int:
  """The next power of two >= max(n, minimum), rounded up to a multiple of `multiple`."""
  size = 1 << (max(n, minimum) - 1).bit_length()
  return -(-size // multiple) * multiple


def _batch_shards(plan: ShardingPlan | None) -> int:
  if plan is None:
    return 1
  axes = plan.spec(("batch",))[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(plan.mesh.shape[a] for a in axes)


@functools.partial(jax.jit, static_argnames=("cfg", "plan", "new_len", "cache_dtype"))
def _prefill(
    params: Params,
    tokens: jax.Array,
    prompt_lens: jax.Array,
    source: jax.Array,
    valid: jax.Array,
    *,
    cfg: ModelConfig,
    plan: ShardingPlan | None,
    new_len: int,
    cache_dtype: str,
) -> DecodeState:
  """Prefills the distinct left-padded prompts [Bp, P] and gathers the sample rows (`source` [B]
  indexes prompts; rows with `valid` False are batch padding)."""
  rows, prompt_len = tokens.shape
  tokens = constrain(tokens, ("batch", "length"), plan)
  mask = jnp.arange(prompt_len)[None, :] >= (prompt_len - prompt_lens)[:, None]
  cache = unstack_cache(init_cache(cfg, rows, prompt_len, cache_dtype))
  x, cache = hidden_with_cache(
      cfg, params, tokens, default_positions(mask), cache, 0, mask, plan=plan
  )
  logits = unembed(cfg, params, x[:, -1:], plan)[source, 0]
  widen = ((0, 0), (0, 0), (0, new_len), (0, 0))
  cache = jax.tree.map(lambda c: constrain(jnp.pad(c[source], widen), CACHE_AXES[1:], plan), cache)
  batch = source.shape[0]
  by_row = lambda x, axes=("batch",): constrain(x, axes, plan)
  return DecodeState(
      step=jnp.zeros((), jnp.int32),
      tokens=by_row(jnp.zeros((batch, new_len), jnp.int32), ("batch", "length")),
      logprobs=by_row(jnp.zeros((batch, new_len), jnp.float32), ("batch", "length")),
      lengths=by_row(jnp.zeros((batch,), jnp.int32)),
      done=by_row(~valid),
      logits=by_row(logits, ("batch", "vocab")),
      position=by_row(prompt_lens[source]),
      pad=by_row(prompt_len - prompt_lens[source]),
      cache=cache,
  )


@functools.partial(
    jax.jit, static_argnames=("cfg", "method", "plan", "pad_id"), donate_argnames=("state",)
)
def _decode(
    params: Params,
    state: DecodeState,
    seed: jax.Array,
    max_new_tokens: jax.Array,
    stop_ids: jax.Array,
    row_offset: jax.Array,
    *,
    cfg: ModelConfig,
    method: Method,
    plan: ShardingPlan | None,
    pad_id: int,
) -> DecodeState:
  """Samples a token from the state's logits and feeds it, until every row is done or
  `max_new_tokens` tokens exist (the last iteration's forward pass goes unused). `stop_ids` is
  padded with -1."""
  new_len = state.tokens.shape[1]
  prompt_len = state.cache["k"][0].shape[2] - new_len
  slots = jnp.arange(prompt_len + new_len)
  params = unstack_layers(params)
  row_keys = jax.vmap(jax.random.fold_in, (None, 0))(
      jax.random.key(seed), row_offset + jnp.arange(state.done.shape[0])
  )

  def cond(s: DecodeState) -> jax.Array:
    return (s.step < max_new_tokens) & ~jnp.all(s.done)

  def body(s: DecodeState) -> DecodeState:
    keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, s.step)
    token, logprob = method.sample(s.logits, keys)
    token = jnp.where(s.done, pad_id, token)
    write = lambda buf, x: jax.lax.dynamic_update_slice(buf, x[:, None], (0, s.step))
    kv_valid = slots[None, :] >= s.pad[:, None]
    logits, cache = forward_with_cache(
        cfg,
        params,
        token[:, None],
        s.position[:, None],
        s.cache,
        prompt_len + s.step,
        kv_valid,
        plan=plan,
    )
    stopped = jnp.any(token[:, None] == stop_ids[None, :], axis=1)
    return DecodeState(
        step=s.step + 1,
        tokens=write(s.tokens, token),
        logprobs=write(s.logprobs, jnp.where(s.done, 0.0, logprob)),
        lengths=jnp.where(s.done, s.lengths, s.step + 1),
        done=s.done | stopped,
        logits=logits[:, 0],
        position=s.position + 1,
        pad=s.pad,
        cache=cache,
    )

  return jax.lax.while_loop(cond, body, state)


def _place_params(cfg: ModelConfig, params: Params, plan: ShardingPlan | None) -> Params:
  """Params on the plan's mesh: kept as they are when already there, else sharded by the plan."""
  if plan is None:
    return params
  devices = set(plan.mesh.devices.flat)
  if all(
      isinstance(x, jax.Array) and x.sharding.device_set == devices for x in jax.tree.leaves(params)
  ):
    return params
  return shard_params(cfg, params, plan.mesh, plan.rules)


def _to_host(x: jax.Array) -> np.ndarray:
  if not x.is_fully_addressable:  # multi-host: every process receives the whole array
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def _validate(
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    num_samples: int,
    seed: int,
) -> None:
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(
          f"Prompt {i} is empty: every prompt needs at least one token (e.g. BOS or "
          "the chat template's prefix)."
      )
    if len(prompt) > cfg.max_position_embeddings:
      raise ValueError(
          f"Prompt {i} has {len(prompt)} tokens, more than the model's context of "
          f"{cfg.max_position_embeddings}: truncate it (keep the end) first."
      )
    ids = np.asarray(prompt)
    if (
        ids.ndim != 1
        or not np.issubdtype(ids.dtype, np.integer)
        or ids.min() < 0
        or (ids.max() >= cfg.vocab_size)
    ):
      raise ValueError(f"Prompt {i} must be a flat list of token ids in [0, {cfg.vocab_size}).")


def generate(
    cfg: ModelConfig,
    params: Params,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    stop_token_ids: Sequence[int] | int = (),
    seed: int = 0,
    mesh: Mesh | None = None,
    strategy: str | Sequence | None = None,
    cache_dtype: str | None = None,
    max_batch_size: int | None = None,
) -> SampleOutput:
  """Samples `num_samples` completions per prompt (greedy when temperature == 0).

  Generation stops at any of `stop_token_ids` (one id or several; kept in the output) or after
  `max_new_tokens`.
  With a `mesh`, rows are sharded over the strategy's batch axes and heads/cache over its tensor
  axis; params already on the mesh are used as they are, others are sharded by the strategy.
  `cache_dtype` ("bfloat16", ...) defaults to the config's compute dtype.
  `max_batch_size`: at most this many rows per device call (None: all at once). Calls take the
  (prompt, sample) rows in order; a row's random stream depends only on (seed, prompt index,
  sample index, token index), so completions do not depend on `max_batch_size`.
  """
  method = make_method(temperature, top_p, top_k)
  _validate(cfg, prompts, max_new_tokens, num_samples, seed)
  num = len(prompts) * num_samples
  pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
  if num == 0:
    empty = np.zeros((0, 0))
    return SampleOutput(
        [], [], [], empty.astype(np.int32), empty.astype(np.float32), np.zeros((0,), np.int32)
    )
  if max_batch_size is not None and (
      not isinstance(max_batch_size, (int, np.integer)) or max_batch_size < 1
  ):
    raise ValueError(f"max_batch_size must be a positive int or None, got {max_batch_size!r}.")
  plan = make_plan(mesh, strategy)
  params = _place_params(cfg, params, plan)
  shards = _batch_shards(plan)
  lens = np.asarray([len(p) for p in prompts], np.int32)
  prompt_len = _bucket(int(lens.max()), MIN_LENGTH_BUCKET)
  if isinstance(stop_token_ids, (int, np.integer)):
    stop_token_ids = (stop_token_ids,)
  stops = [int(t) for t in stop_token_ids]
  stop_ids = np.full((_bucket(len(stops), 4),), -1, np.int32)
  stop_ids[: len(stops)] = stops
  per_call = num if max_batch_size is None else int(max_batch_size)
  rows_of_prompt = np.repeat(np.arange(len(prompts)), num_samples)
  parts = []
  for start in range(0, num, per_call):  # rows [start, stop) in one prefill + decode
    stop = min(start + per_call, num)
    chunk_prompts, source_local = np.unique(rows_of_prompt[start:stop], return_inverse=True)
    rows = stop - start
    prompt_rows = _bucket(len(chunk_prompts), multiple=shards)
    batch = _bucket(min(per_call, num), multiple=shards)
    tokens = np.zeros((prompt_rows, prompt_len), np.int32)
    for k, i in enumerate(chunk_prompts):
      tokens[k, prompt_len - len(prompts[i]) :] = prompts[i]
    prompt_lens = np.ones((prompt_rows,), np.int32)  # padding rows: one token, never read
    prompt_lens[: len(chunk_prompts)] = lens[chunk_prompts]
    source = np.zeros((batch,), np.int32)
    source[:rows] = source_local
    state = _prefill(
        params,
        tokens,
        prompt_lens,
        source,
        np.arange(batch) < rows,
        cfg=cfg,
        plan=plan,
        new_len=_bucket(max_new_tokens, MIN_LENGTH_BUCKET),
        cache_dtype=jnp.dtype(resolve_dtype(cache_dtype or cfg.dtype)).name,
    )
    state = _decode(
        params,
        state,
        np.uint32(seed),
        np.int32(max_new_tokens),
        stop_ids,
        np.int32(start),
        cfg=cfg,
        method=method,
        plan=plan,
        pad_id=pad_id,
    )
    parts.append(
        [_to_host(x)[:rows] for x in (state.lengths, state.tokens, state.logprobs, state.done)]
    )

  lengths = np.concatenate([p[0] for p in parts])
  width = int(lengths.max())
  token_array = np.concatenate([p[1][:, :width] for p in parts])
  logprob_array = np.concatenate([p[2][:, :width] for p in parts])
  finished = np.concatenate([p[3] for p in parts])
  return SampleOutput(
      tokens=[row[:n].tolist() for row, n in zip(token_array, lengths)],
      logprobs=[row[:n].tolist() for row, n in zip(logprob_array, lengths)],
      finished=finished.tolist(),
      token_array=token_array,
      logprob_array=logprob_array,
      lengths=lengths,
  )
