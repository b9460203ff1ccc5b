"""Generation with continuous batching: a fixed set of slots decodes on device while the host
refills the slots whose rows stopped with the next waiting (prompt, sample) rows.

Slots. `max_batch_size` rows are in flight (all rows when None). Each slot owns one row of a
preallocated KV cache of P + N entries (P, N: the prompt and `max_new_tokens` buckets). A row's
prompt sits at the start of its slot (right-padded) and its j-th generated token is written at
len(prompt) + j, so the filled part of every slot is a prefix and the position id of the next
token is the slot's fill. Inserting rows prefills each distinct prompt token sequence once (the
samples of a prompt, and prompts repeated at other indices, share the prefill) and copies its cache
into its slots (`_insert`).

Decode. One jitted `lax.while_loop` (`_decode`) samples and feeds a token for every slot, for many
steps per host visit: it returns when enough slots are done to be worth refilling (an eighth of
them while rows wait), when every slot is done, or when the filled prefix reaches the attention
window. Once no rows wait and at most a quarter of the slots still run, those stragglers move to
a smaller slot array (`_compact`: at least 16 slots, a multiple of the batch shards, and only when
that is fewer slots than before). Attention reads only the cache's first `window` entries, a power
of two just above the longest live fill: decode cost follows the filled cache, not the cap, and a
handful of windows compile per cache size.

Buckets. P, N and the window are powers of two (at least 16 / 32); slot and prefill row counts are
powers of two rounded up to a multiple of the mesh's batch shards, so the slot axis is always split
over them (never replicated). `max_new_tokens`, the seed and the stop ids (padded to 4, 8, ...) are
traced. The prefill does not depend on the sampling method.

Randomness. Row r (= prompt index x num_samples + sample index; `streams` may renumber them)
draws its token t with the uniform of `fold_in(fold_in(key(seed), r), t)`: the random streams are
the same whatever `max_batch_size`, the slot a row lands in, the batch padding or the mesh. Whether
the tokens are too depends on the model config (docs/numerics.md). With `cfg.batch_invariant`
every token's logits are computed in fixed-shape tiles, so they, the log-probs and the completions
are bit for bit the same for any `max_batch_size`, cap, mesh and strategy, and the log-probs equal
the training forward's (`models.chosen_logprobs`, the expression both use). Otherwise other batch
shapes and shardings sum in another order, the logits differ in their last bits, and a draw that
falls that close to a token boundary (or a greedy near-tie) takes the neighbouring token, after
which the completion goes its own way: rare in float32 (a 256-prompt long tail with 64 and 256
rows in flight already differs), more common in bfloat16. The same call repeated on the same
devices gives the same completions.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rzero_jax.models.config import ModelConfig, resolve_dtype
from rzero_jax.models.functional import (
    CACHE_AXES,
    chosen_logprobs,
    map_row_tiles,
    forward_with_cache,
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
MIN_WINDOW = 32
MIN_STEPS_PER_VISIT = 16
REFILL_FRACTION = 8  # while rows wait, the host refills once 1/8 of the slots are free
MIN_COMPACT_SLOTS = 16  # once no rows wait, stragglers in <= 1/4 of the slots move to fewer slots

_log = logging.getLogger(__name__)
_warned: set[tuple] = set()


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Completions in prompt order, `num_samples` contiguous samples per prompt.

  tokens: generated ids per sample, through the stop token when one was emitted.
  logprobs: per token, log-softmax of the temperature-scaled full distribution (greedy: T = 1).
  finished: True when the sample ended with a stop token, False when it hit `max_new_tokens`.
  token_array / logprob_array: the same, padded to the longest completion [num, T] (pad id / 0.0).
  lengths: number of tokens per sample [num].
  decode_row_steps: slots x decode steps the device ran (sum(lengths) / decode_row_steps is the
    share of decode work spent on live rows).
  prefill_rows: prompts prefilled, summed over the inserts (each distinct prompt token sequence
    once per insert that starts rows of it; bucket padding not counted).
  """

  tokens: list[list[int]]
  logprobs: list[list[float]]
  finished: list[bool]
  token_array: np.ndarray
  logprob_array: np.ndarray
  lengths: np.ndarray
  decode_row_steps: int = 0
  prefill_rows: int = 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotState:
  """Decode state; every array has a leading slot axis S."""

  tokens: jax.Array  # [S, N] tokens of the slot's row so far
  logprobs: jax.Array  # [S, N] float32
  count: jax.Array  # [S] tokens generated by the slot's row
  done: jax.Array  # [S] the row stopped (or the slot is free)
  row: jax.Array  # [S] global row id of the slot's row (its random stream)
  fill: jax.Array  # [S] cache entries filled: where the next token is written, and its position
  logits: jax.Array  # [S, V] float32 next-token logits
  cache: Params  # {"k", "v"}: per-layer lists of [S, kv_heads, P + N, head_dim]


def _bucket(n: int, minimum: int = 1, multiple: int = 1) -> int:
  """The next power of two >= max(n, minimum), rounded up to a multiple of `multiple`."""
  size = 1 << (max(n, minimum) - 1).bit_length()
  return -(-size // multiple) * multiple


def _compacted_slots(live: int, shards: int) -> int:
  """Slots for `live` stragglers: a power of two >= MIN_COMPACT_SLOTS, rounded up to a multiple of
  the batch shards (the slot axis stays split over them)."""
  return _bucket(live, MIN_COMPACT_SLOTS, multiple=shards)


def _batch_shards(plan: ShardingPlan | None) -> int:
  return 1 if plan is None else plan.shards("batch")


SLOT_AXES = {
    "tokens": ("batch", "length"),
    "logprobs": ("batch", "length"),
    "logits": ("batch", "vocab"),
}


def _laid_out(state: SlotState, plan: ShardingPlan | None) -> SlotState:
  """`state` constrained to its layout: slots over the batch axes (`SLOT_AXES` for the 2-D
  fields), the cache by `CACHE_AXES`."""
  fields = {
      f.name: constrain(getattr(state, f.name), SLOT_AXES.get(f.name, ("batch",)), plan)
      for f in dataclasses.fields(state)
      if f.name != "cache"
  }
  cache = jax.tree.map(lambda c: constrain(c, CACHE_AXES[1:], plan), state.cache)
  return SlotState(**fields, cache=cache)


@functools.partial(
    jax.jit, static_argnames=("cfg", "plan", "slots", "new_len", "cache_len", "cache_dtype")
)
def _empty_state(
    *,
    cfg: ModelConfig,
    plan: ShardingPlan | None,
    slots: int,
    new_len: int,
    cache_len: int,
    cache_dtype: str,
) -> SlotState:
  """Every slot free (done), the cache zeroed."""
  zeros = lambda dtype, *shape: jnp.zeros((slots, *shape), dtype)
  state = SlotState(
      tokens=zeros(jnp.int32, new_len),
      logprobs=zeros(jnp.float32, new_len),
      count=zeros(jnp.int32),
      done=jnp.ones((slots,), bool),
      row=zeros(jnp.int32),
      fill=zeros(jnp.int32),
      logits=zeros(jnp.float32, cfg.vocab_size),
      cache=unstack_cache(init_cache(cfg, slots, cache_len, cache_dtype)),
  )
  return _laid_out(state, plan)


@functools.partial(jax.jit, static_argnames=("cfg", "plan"), donate_argnames=("state",))
def _insert(
    params: Params,
    state: SlotState,
    tokens: jax.Array,
    prompt_lens: jax.Array,
    source: jax.Array,
    rows: jax.Array,
    *,
    cfg: ModelConfig,
    plan: ShardingPlan | None,
) -> SlotState:
  """Prefills the distinct right-padded prompts [Bp, P] and starts row `rows[s]` in every slot s
  with `source[s] >= 0` (the index of its prompt); other slots are left as they are."""
  prefill_rows, prompt_len = tokens.shape
  tokens = constrain(tokens, ("batch", "length"), plan)
  mask = jnp.arange(prompt_len)[None, :] < prompt_lens[:, None]
  positions = jnp.broadcast_to(jnp.arange(prompt_len), tokens.shape)
  dtype = state.cache["k"][0].dtype
  cache = unstack_cache(init_cache(cfg, prefill_rows, prompt_len, dtype))
  x, cache = forward_with_cache(
      cfg, params, tokens, positions, cache, 0, mask, plan=plan, hidden=True
  )
  last = jnp.take_along_axis(x, (prompt_lens - 1)[:, None, None], axis=1)  # [Bp, 1, D]
  logits = unembed(cfg, params, last, plan)[:, 0]
  inserted = source >= 0
  source = jnp.maximum(source, 0)

  def put(slot_cache: jax.Array, prompt_cache: jax.Array) -> jax.Array:
    head = jnp.where(
        inserted[:, None, None, None], prompt_cache[source], slot_cache[:, :, :prompt_len]
    )
    return slot_cache.at[:, :, :prompt_len].set(head)

  pick = lambda new, old: jnp.where(inserted.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
  state = SlotState(
      tokens=state.tokens,
      logprobs=state.logprobs,
      count=pick(0, state.count),
      done=pick(False, state.done),
      row=pick(rows, state.row),
      fill=pick(prompt_lens[source], state.fill),
      logits=pick(logits[source], state.logits),
      cache={n: [put(c, p) for c, p in zip(state.cache[n], cache[n])] for n in state.cache},
  )
  return _laid_out(state, plan)


@functools.partial(jax.jit, static_argnames=("plan",))
def _compact(state: SlotState, keep: jax.Array, *, plan: ShardingPlan | None) -> SlotState:
  """The state of the slots `keep` only (the stragglers of a call, once no rows wait): decode
  steps then cost what the rows still running need."""
  return _laid_out(jax.tree.map(lambda x: jnp.take(x, keep, axis=0), state), plan)


@functools.partial(
    jax.jit,
    static_argnames=("cfg", "method", "plan", "pad_id", "window"),
    donate_argnames=("state",),
)
def _decode(
    params: Params,
    state: SlotState,
    seed: jax.Array,
    max_new_tokens: jax.Array,
    stop_ids: jax.Array,
    min_done: jax.Array,
    max_steps: jax.Array,
    *,
    cfg: ModelConfig,
    method: Method,
    plan: ShardingPlan | None,
    pad_id: int,
    window: int,
) -> tuple[SlotState, jax.Array]:
  """Samples a token for every slot from its logits and feeds it, for up to `max_steps` steps,
  until at least `min_done` slots are done. Attention reads the cache's first `window` entries
  (every live slot's fill stays below it for `max_steps` steps). `stop_ids` is padded with -1.
  Returns the state and the number of steps run."""
  slots, new_len = state.tokens.shape
  params = unstack_layers(params)
  key = jax.random.key(seed)
  rows = jnp.arange(slots)
  kv_valid = jnp.ones((slots, window), bool)  # the causal bound (slot <= fill) does the masking
  stream = jax.vmap(lambda row, t: jax.random.fold_in(jax.random.fold_in(key, row), t))

  def cond(carry: tuple[jax.Array, SlotState]) -> jax.Array:
    step, s = carry
    return (step < max_steps) & (jnp.sum(s.done) < min_done)

  def body(carry: tuple[jax.Array, SlotState]) -> tuple[jax.Array, SlotState]:
    step, s = carry

    def draw(logits: jax.Array, row: jax.Array, count: jax.Array) -> jax.Array:
      flat = lambda x: x.reshape(-1, *x.shape[row.ndim :])  # noqa: E731
      return method.sample(flat(logits), stream(flat(row), flat(count)))[0].reshape(row.shape)

    if cfg.batch_invariant:  # the draws' softmax sums in fixed-shape tiles too
      per_row = (s.logits[:, None], s.row[:, None], s.count[:, None])
      token = map_row_tiles(draw, per_row, plan)[:, 0]
    else:
      token = draw(s.logits, s.row, s.count)
    logprob = chosen_logprobs(cfg, s.logits[:, None], token[:, None], method.temperature, plan)
    logprob = logprob[:, 0]  # the trainer's expression (bit for bit in batch-invariant mode)
    token = jnp.where(s.done, pad_id, token)
    at = jnp.minimum(s.count, new_len - 1)[:, None]  # done slots rewrite what is there

    def record(buf: jax.Array, x: jax.Array) -> jax.Array:
      x = jnp.where(s.done, jnp.take_along_axis(buf, at, axis=1)[:, 0], x)
      return buf.at[rows, at[:, 0]].set(x, indices_are_sorted=True, unique_indices=True)

    logits, cache = forward_with_cache(
        cfg, params, token[:, None], s.fill[:, None], s.cache, s.fill, kv_valid, plan=plan
    )
    count = jnp.where(s.done, s.count, s.count + 1)
    stopped = jnp.any(token[:, None] == stop_ids[None, :], axis=1) | (count >= max_new_tokens)
    return step + 1, _laid_out(
        SlotState(
            tokens=record(s.tokens, token),
            logprobs=record(s.logprobs, logprob),
            count=count,
            done=s.done | stopped,
            row=s.row,
            fill=jnp.where(s.done, s.fill, s.fill + 1),
            logits=logits[:, 0],
            cache=cache,
        ),
        plan,
    )

  steps, state = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state))
  return state, steps


def _place_params(cfg: ModelConfig, params: Params, plan: ShardingPlan | None) -> Params:
  """Params on the plan's mesh: kept as they are when already there, else sharded by the plan."""
  if plan is None:
    return params
  devices = set(plan.mesh.devices.flat)
  if all(
      isinstance(x, jax.Array) and x.sharding.device_set == devices for x in jax.tree.leaves(params)
  ):
    return params
  return shard_params(cfg, params, plan)


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
    plan: ShardingPlan | None = None,
    cache_dtype: str | None = None,
    max_batch_size: int | None = None,
    streams: Sequence[int] | None = None,
    on_rows_done: Callable[[int], None] | None = None,
) -> SampleOutput:
  """Samples `num_samples` completions per prompt (greedy when temperature == 0).

  Generation stops at any of `stop_token_ids` (one id or several; kept in the output) or after
  `max_new_tokens`.
  `max_batch_size`: rows in flight (None: every row at once). When a row stops, the next waiting
  (prompt, sample) row takes its slot (continuous batching). A row's random stream depends only on
  (seed, prompt index, sample index, token index), not on `max_batch_size` or the mesh. The
  completions match across those bit for bit with `cfg.batch_invariant`; otherwise usually but not
  always: other batch shapes change the logits' last bits, which flips a draw that lands next to a
  token boundary (see the module docstring).
  With a `plan` (or a `mesh` and `strategy`), rows are sharded over its batch axes and heads/cache
  over its tensor axis; params already on the mesh are used as they are, others are sharded by it.
  `cache_dtype` ("bfloat16", ...) defaults to the config's compute dtype.
  `streams`: each prompt's random stream id (default: its index); sample s of prompt i draws from
  row stream streams[i] * num_samples + s, so a caller can key a prompt's draws to the prompt
  itself rather than its place in the list. `on_rows_done(n)` is called each time n rows finish.
  Prompts with the same tokens are prefilled once, whatever their indices. A completion may run past
  the model's context (`max_position_embeddings`); that is logged once per context size.
  """
  method = make_method(temperature, top_p, top_k)
  _validate(cfg, prompts, max_new_tokens, num_samples, seed)
  if max_batch_size is not None and (
      not isinstance(max_batch_size, (int, np.integer)) or max_batch_size < 1
  ):
    raise ValueError(f"max_batch_size must be a positive int or None, got {max_batch_size!r}.")
  num = len(prompts) * num_samples
  pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
  if num == 0:
    empty = np.zeros((0, 0))
    return SampleOutput(
        [], [], [], empty.astype(np.int32), empty.astype(np.float32), np.zeros((0,), np.int32)
    )
  plan = plan or make_plan(mesh, strategy)
  params = _place_params(cfg, params, plan)
  shards = _batch_shards(plan)
  if isinstance(stop_token_ids, (int, np.integer)):
    stop_token_ids = (stop_token_ids,)
  stops = [int(t) for t in stop_token_ids]
  stop_ids = np.full((_bucket(len(stops), 4),), -1, np.int32)
  stop_ids[: len(stops)] = stops

  lens = np.asarray([len(p) for p in prompts], np.int32)
  prompt_len = _bucket(int(lens.max()), MIN_LENGTH_BUCKET)
  new_len = _bucket(max_new_tokens, MIN_LENGTH_BUCKET)
  cache_len = prompt_len + new_len
  slots = _bucket(min(num, max_batch_size or num), multiple=shards)
  prompt_of_row = np.repeat(np.arange(len(prompts)), num_samples)
  stream_of_row = _row_streams(streams, len(prompts), num_samples)
  prefill_of_row = _first_of_each_prompt(prompts)[prompt_of_row]  # identical prompts: one prefill
  state = _empty_state(
      cfg=cfg,
      plan=plan,
      slots=slots,
      new_len=new_len,
      cache_len=cache_len,
      cache_dtype=jnp.dtype(resolve_dtype(cache_dtype or cfg.dtype)).name,
  )
  decode = functools.partial(
      _decode,
      params,
      seed=np.uint32(seed),
      max_new_tokens=np.int32(max_new_tokens),
      stop_ids=stop_ids,
      cfg=cfg,
      method=method,
      plan=plan,
      pad_id=pad_id,
  )
  slot_row = np.full((slots,), -1)  # the row each slot holds (-1: free)
  fill = np.zeros((slots,), np.int64)
  next_row, row_steps, prefill_rows, compacted = 0, 0, 0, False
  tokens, logprobs = [None] * num, [None] * num
  while True:
    free = np.flatnonzero(slot_row < 0)[: num - next_row]
    if len(free):  # the next waiting rows take the free slots
      new_rows = np.arange(next_row, next_row + len(free))
      state, prefilled = _insert_rows(
          cfg, params, state, prompts, prefill_of_row, stream_of_row, new_rows, free, shards, plan
      )
      prefill_rows += prefilled
      slot_row[free], fill[free] = new_rows, lens[prompt_of_row[new_rows]]
      next_row += len(free)
    live = slot_row >= 0
    if not live.any():
      break
    waiting = next_row < num
    # Compaction only where it shrinks the slot array (it never does at the floor, e.g. 16 slots,
    # or as many slots as batch shards).
    may_compact = not waiting and not compacted and _compacted_slots(slots // 4, shards) < slots
    if waiting:  # back once there is a batch of slots to refill
      min_done = min(slots, int(np.sum(~live)) + max(1, slots // REFILL_FRACTION))
    elif may_compact and live.sum() > slots // 4:  # back to move the stragglers
      min_done = slots - slots // 4
    else:
      min_done = slots
    window = min(cache_len, _bucket(int(fill[live].max()) + MIN_STEPS_PER_VISIT, MIN_WINDOW))
    max_steps = window - int(fill[live].max())
    state, steps = decode(
        state, min_done=np.int32(min_done), max_steps=np.int32(max_steps), window=window
    )
    row_steps += int(steps) * slots
    done, count = _to_host(state.done), _to_host(state.count)
    fill[live] = lens[prompt_of_row[slot_row[live]]] + count[live]
    finished = np.flatnonzero(live & done)
    if len(finished):
      slot_tokens, slot_logprobs = _to_host(state.tokens), _to_host(state.logprobs)
      for j in finished:
        tokens[slot_row[j]] = slot_tokens[j, : count[j]]
        logprobs[slot_row[j]] = slot_logprobs[j, : count[j]]
      slot_row[finished] = -1
      if on_rows_done is not None:
        on_rows_done(len(finished))
    live_now = int(np.sum(slot_row >= 0))
    if may_compact and 0 < live_now <= slots // 4:  # none left: the loop ends, nothing to move
      compacted = True  # once per call: each slot count compiles its own programs
      slots = _compacted_slots(live_now, shards)  # fewer slots than before (`may_compact`)
      keep = np.argsort(slot_row < 0, kind="stable")[:slots]  # live slots first
      state = _compact(state, keep, plan=plan)
      slot_row, fill = slot_row[keep], fill[keep]
  _warn_past_context(cfg, lens[prompt_of_row], tokens)
  return _assemble(tokens, logprobs, stops, pad_id, row_steps, prefill_rows)


def _row_streams(streams: Sequence[int] | None, num_prompts: int, num_samples: int) -> np.ndarray:
  """Each row's random stream id: streams[prompt] * num_samples + sample (default streams: the
  prompt indices, so row r draws from stream r)."""
  base = np.arange(num_prompts) if streams is None else np.asarray(streams, np.int64)
  if base.shape != (num_prompts,) or (num_prompts and base.min() < 0):
    raise ValueError(f"streams must be {num_prompts} non-negative ints, one per prompt.")
  rows = (base[:, None] * num_samples + np.arange(num_samples)).reshape(-1)
  if num_prompts and rows.max() >= 2**31:
    raise ValueError(f"streams * num_samples must stay below 2**31, got {int(rows.max())}.")
  return rows


def _first_of_each_prompt(prompts: Sequence[Sequence[int]]) -> np.ndarray:
  """For each prompt, the index of the first prompt with the same tokens."""
  first: dict[tuple[int, ...], int] = {}
  return np.asarray([first.setdefault(tuple(map(int, p)), i) for i, p in enumerate(prompts)])


def _warn_past_context(cfg: ModelConfig, prompt_lens: np.ndarray, tokens: list[np.ndarray]) -> None:
  """Logs (once per context size) when a prompt + completion is longer than the model's context:
  its last tokens sat at positions the model was not trained for."""
  context = cfg.max_position_embeddings
  total = prompt_lens + np.asarray([len(t) for t in tokens])
  over = int(np.sum(total > context))
  if over and context not in _warned:
    _warned.add(context)
    _log.warning(
        "generate: %d of %d completions ran past the model's context of %d positions (prompt + "
        "completion up to %d tokens); tokens past it come from positions the model was not "
        "trained for. Lower max_new_tokens or shorten the prompts. (Logged once.)",
        over,
        len(tokens),
        context,
        int(total.max()),
    )


def _insert_rows(
    cfg: ModelConfig,
    params: Params,
    state: SlotState,
    prompts: Sequence[Sequence[int]],
    prefill_of_row: np.ndarray,
    stream_of_row: np.ndarray,
    rows: np.ndarray,
    slot_ids: np.ndarray,
    shards: int,
    plan: ShardingPlan | None,
) -> tuple[SlotState, int]:
  """Starts `rows` in the slots `slot_ids`, prefilling each distinct prompt once: rows with the
  same `prefill_of_row` (the index of a prompt with their tokens) share a prefill row. Returns the
  state and the number of prompts prefilled."""
  distinct, source_of_row = np.unique(prefill_of_row[rows], return_inverse=True)
  prompt_len = state.cache["k"][0].shape[2] - state.tokens.shape[1]  # the call's prompt bucket
  # At least a refill's worth of prefill rows: fewer programs to compile, little extra work.
  prefill_rows = _bucket(len(distinct), len(state.row) // REFILL_FRACTION, multiple=shards)
  tokens = np.zeros((prefill_rows, prompt_len), np.int32)
  prompt_lens = np.ones((len(tokens),), np.int32)  # padding rows: one token, never read
  for k, i in enumerate(distinct):
    tokens[k, : len(prompts[i])] = prompts[i]
    prompt_lens[k] = len(prompts[i])
  source = np.full((len(state.row),), -1, np.int32)
  source[slot_ids] = source_of_row
  row_ids = np.zeros((len(state.row),), np.int32)
  row_ids[slot_ids] = stream_of_row[rows]
  state = _insert(params, state, tokens, prompt_lens, source, row_ids, cfg=cfg, plan=plan)
  return state, len(distinct)


def _assemble(
    tokens: list[np.ndarray],
    logprobs: list[np.ndarray],
    stops: list[int],
    pad_id: int,
    row_steps: int,
    prefill_rows: int,
) -> SampleOutput:
  """The rows' completions as a `SampleOutput` (arrays padded with `pad_id` / 0.0)."""
  lengths = np.asarray([len(t) for t in tokens], np.int32)
  token_array = np.full((len(tokens), int(lengths.max())), pad_id, np.int32)
  logprob_array = np.zeros(token_array.shape, np.float32)
  for i, (row_tokens, row_logprobs) in enumerate(zip(tokens, logprobs)):
    token_array[i, : len(row_tokens)] = row_tokens
    logprob_array[i, : len(row_logprobs)] = row_logprobs
  return SampleOutput(
      tokens=[t.tolist() for t in tokens],
      logprobs=[lp.tolist() for lp in logprobs],
      finished=[len(t) > 0 and int(t[-1]) in stops for t in tokens],
      token_array=token_array,
      logprob_array=logprob_array,
      lengths=lengths,
      decode_row_steps=row_steps,
      prefill_rows=prefill_rows,
  )
