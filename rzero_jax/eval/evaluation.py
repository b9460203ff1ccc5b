"""A model on benchmarks: chat prompts, one continuous-batching `generate` call for every item and
sample, scoring shared out over the processes, scores per benchmark and per-item records."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from rzero_jax.eval.benchmarks import BENCHMARKS, MATH_BENCHMARKS, load_benchmark, resolve
from rzero_jax.eval.prompts import messages
from rzero_jax.eval.scoring import extract, score_many

DEFAULT_SAMPLE_TEMPERATURE = 0.6
STREAM_STRIDE = 64  # room for 64 benchmarks in `item_streams`
assert len(BENCHMARKS) <= STREAM_STRIDE, "item_streams would give two benchmarks one stream"


def load_all(
    names: Sequence[str], data_dir: str | None = None, limit: int | None = None
) -> dict[str, list[dict]]:
  """Items of every named benchmark (first ``limit`` of each), loaded before anything runs so that a
  bad name or missing file fails first. Canonical names, duplicates dropped."""
  if limit is not None and limit < 1:
    raise ValueError(f"limit must be a positive number of items, got {limit}")
  loaded: dict[str, list[dict]] = {}
  for name in names:
    bench = resolve(name)
    if bench.name not in loaded:
      loaded[bench.name] = load_benchmark(bench.name, data_dir)[:limit]
  return loaded


def item_streams(name: str, count: int) -> range:
  """The random stream ids of the first ``count`` items of benchmark ``name``: item i of the b-th
  benchmark of ``BENCHMARKS`` samples from stream i * STREAM_STRIDE + b, so an item's draws depend
  only on the seed and the item, not on the other benchmarks, --limit or the rows in flight."""
  b = list(BENCHMARKS).index(name)
  return range(b, b + count * STREAM_STRIDE, STREAM_STRIDE)


# ---------------------------------------------------------------- multi-host


def process_shard(n: int, index: int | None = None, count: int | None = None) -> range:
  """This process's contiguous share of ``n`` scoring jobs (deterministic, balanced)."""
  if index is None or count is None:
    import jax

    index, count = jax.process_index(), jax.process_count()
  return range(n * index // count, n * (index + 1) // count)


def _gather_scores(local: np.ndarray, shard: range, n: int) -> np.ndarray:
  """Every process's scores, on every process (NaN marks rows another process scored)."""
  import jax

  full = np.full((n,), np.nan, np.float32)
  full[shard.start : shard.stop] = local
  if jax.process_count() == 1:
    return full
  from jax.experimental import multihost_utils

  every = np.asarray(multihost_utils.process_allgather(full))
  return np.nanmax(np.where(np.isnan(every), -np.inf, every), axis=0)


# ---------------------------------------------------------------- stages


def _prompt_ids(
    tokenizer,
    name: str,
    items: list[dict],
    context: int,
    messages_fn: Callable[[str, dict], list[dict]],
) -> list[list[int]]:
  from rzero_jax.models.tokenizer import encode_chat

  ids = []
  for item in items:
    tokens = encode_chat(tokenizer, messages_fn(name, item))
    ids.append(tokens[-(context - 1) :] if len(tokens) > context - 1 else tokens)
  return ids


def _complete(
    cfg,
    params,
    tokenizer,
    prompts: dict[str, list[list[int]]],
    *,
    samples: int,
    max_new_tokens: int,
    batch_size: int,
    progress: bool,
    **sampling: Any,
) -> dict[str, list[list[str]]]:
  """Every item's ``samples`` responses, per benchmark, from one `generate` call with at most
  ``batch_size`` rows in flight; each item samples from its own streams (`item_streams`).
  ``sampling``: generate's temperature, top_p, stop_token_ids, seed, mesh, strategy and plan."""
  from rzero_jax.metrics import Progress
  from rzero_jax.sampling import generate

  flat = [p for ids in prompts.values() for p in ids]
  longest = max(map(len, flat), default=0)
  bar = Progress(
      "eval completions",
      len(flat) * samples,
      enabled=progress,
      stream=sys.stderr,
      min_interval_s=5.0,
  )
  out = generate(
      cfg,
      params,
      flat,
      max_new_tokens=max(1, min(max_new_tokens, cfg.max_position_embeddings - longest)),
      num_samples=samples,
      max_batch_size=batch_size,
      streams=[s for name, ids in prompts.items() for s in item_streams(name, len(ids))],
      on_rows_done=bar.update,
      **sampling,
  )
  texts = iter(tokenizer.decode(t, skip_special_tokens=True) for t in out.tokens)
  return {
      name: [[next(texts) for _ in range(samples)] for _ in ids] for name, ids in prompts.items()
  }


def _scores(
    items: dict[str, list[dict]], responses: dict[str, list[list[str]]], samples: int
) -> dict[str, np.ndarray]:
  """Every response's score, [items, samples] per benchmark. Each process scores its share of all
  the responses; the scores are gathered so that every process has them all."""
  jobs = [(name, i, s) for name in items for i in range(len(items[name])) for s in range(samples)]
  shard = process_shard(len(jobs))
  local = np.zeros((len(shard),), np.float32)
  for name in items:
    mine = [k for k in shard if jobs[k][0] == name]
    if mine:
      local[mine[0] - shard.start : mine[-1] + 1 - shard.start] = score_many(
          name,
          [items[name][jobs[k][1]] for k in mine],
          [responses[name][jobs[k][1]][jobs[k][2]] for k in mine],
      )
  gathered = _gather_scores(local, shard, len(jobs))
  out, start = {}, 0
  for name, bench_items in items.items():
    n = len(bench_items) * samples
    out[name] = gathered[start : start + n].reshape(len(bench_items), samples)
    start += n
  return out


def evaluate(
    cfg,
    params,
    tokenizer,
    benchmarks: Sequence[str],
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    samples: int = 1,
    temperature: float | None = None,
    top_p: float = 1.0,
    max_new_tokens: int = 4096,
    batch_size: int = 64,
    mesh=None,
    strategy=None,
    plan=None,
    seed: int = 0,
    items: dict[str, list[dict]] | None = None,
    progress: bool = False,
    keep_records: bool = True,
    messages_fn: Callable[[str, dict], list[dict]] | None = None,
) -> dict:
  """Evaluates one model on ``benchmarks``; every process calls it with the same arguments.

  Items come from ``items`` (name -> ``load_benchmark`` items) or are loaded from ``data_dir`` / the
  hub, first ``limit`` of each. Prompts go through the tokenizer's chat template; every (item,
  sample) of every benchmark goes through one continuous-batching ``generate`` call with at most
  ``batch_size`` rows in flight, greedy unless ``samples`` > 1 (then ``temperature``, default 0.6).
  Each item samples from its own random streams (``seed``, benchmark, item index, sample): the
  draws do not depend on ``batch_size``, the number of processes, the other benchmarks or
  ``limit``. ``plan`` (a ``ShardingPlan``), or ``mesh`` and ``strategy``, shard the sampler as in
  ``generate``. The generation budget is ``max_new_tokens``, capped so that the longest prompt plus
  its completion fits the model's context. Each process scores its share of the responses; the
  scores are gathered so that every process returns the same result:

    {"benchmarks": {name: {"score": mean over items of the mean over samples (avg@k; pass@1 when
                            k == 1), "pass@k": share of items with any sample scoring 1 (only
                            when k > 1), "items": n, "samples": k}},
     "math_average": mean score of the math benchmarks evaluated (None if none),
     "overall": mean score of all benchmarks evaluated,
     "items_per_s": items / wall seconds, "seconds": wall seconds,
     "records": {name: [per-item dicts: id, prompt, response(s), extracted, gold, score]}}

  Scores are fractions in [0, 1]; ``format_table`` prints them as percentages. ``records`` is
  left out when ``keep_records`` is False. ``messages_fn(name, item)`` replaces the references'
  prompts (``prompts.messages``), e.g. for a model trained on another instruction. ``progress``
  reports completions on stderr. Raises ValueError / BenchmarkError for bad arguments before
  generating anything.
  """
  from rzero_jax.models.tokenizer import stop_token_ids

  if samples < 1:
    raise ValueError(f"samples must be >= 1, got {samples}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {top_p}")
  if temperature is None:
    temperature = 0.0 if samples == 1 else DEFAULT_SAMPLE_TEMPERATURE
  if samples > 1 and temperature <= 0:
    raise ValueError("samples > 1 needs a temperature > 0 (greedy samples would all be equal)")
  if items is None:
    items = load_all(benchmarks, data_dir, limit)
  else:
    items = {resolve(n).name: v[:limit] for n, v in items.items()}
  start = time.perf_counter()
  prompts = {
      name: _prompt_ids(
          tokenizer, name, bench_items, cfg.max_position_embeddings, messages_fn or messages
      )
      for name, bench_items in items.items()
  }
  responses = _complete(
      cfg,
      params,
      tokenizer,
      prompts,
      samples=samples,
      max_new_tokens=max_new_tokens,
      batch_size=batch_size,
      progress=progress,
      temperature=temperature,
      top_p=top_p,
      stop_token_ids=stop_token_ids(tokenizer, cfg.eos_token_id),
      seed=seed,
      mesh=mesh,
      strategy=strategy,
      plan=plan,
  )
  scores = _scores(items, responses, samples)
  result: dict[str, Any] = {"benchmarks": {}, "records": {}}
  for name, bench_items in items.items():
    entry: dict[str, Any] = {
        "score": float(scores[name].mean(axis=1).mean()) if bench_items else 0.0,
        "items": len(bench_items),
        "samples": samples,
    }
    if samples > 1:
      entry["pass@k"] = float((scores[name].max(axis=1) >= 1).mean()) if bench_items else 0.0
    result["benchmarks"][name] = entry
    if keep_records:
      result["records"][name] = [
          _record(name, item, tokenizer, prompts[name][i], responses[name][i], scores[name][i])
          for i, item in enumerate(bench_items)
      ]
  seconds = time.perf_counter() - start
  values = {n: e["score"] for n, e in result["benchmarks"].items()}
  math_values = [v for n, v in values.items() if n in MATH_BENCHMARKS]
  result["math_average"] = float(np.mean(math_values)) if math_values else None
  result["overall"] = float(np.mean(list(values.values()))) if values else None
  result["seconds"] = seconds
  result["items_per_s"] = sum(map(len, items.values())) / max(seconds, 1e-9)
  result["settings"] = {
      "samples": samples,
      "temperature": temperature,
      "top_p": top_p,
      "max_new_tokens": max_new_tokens,
      "limit": limit,
      "seed": seed,
  }
  if not keep_records:
    result.pop("records")
  return result


def _record(
    name: str, item: dict, tokenizer, prompt: list[int], responses: list[str], scores: np.ndarray
) -> dict:
  kind = BENCHMARKS[name].kind
  gold = item.get("answer")
  if kind == "code":
    gold = item.get("canonical_solution")
  record = {"id": item["id"], "prompt": tokenizer.decode(prompt, skip_special_tokens=False)}
  extracted = [extract(name, item, r) for r in responses]
  if len(responses) == 1:
    record.update(response=responses[0], extracted=extracted[0], score=float(scores[0]))
  else:
    record.update(
        responses=responses,
        extracted=extracted,
        scores=[float(s) for s in scores],
        score=float(np.mean(scores)),
    )
  record["gold"] = gold
  return record
