"""Runs a model over benchmarks: prompts, batched generation, scoring, aggregation, output files."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from rzero_jax.eval.benchmarks import BENCHMARKS, MATH_BENCHMARKS, load_benchmark, resolve
from rzero_jax.eval.prompts import messages
from rzero_jax.eval.scoring import extract, score_many

DEFAULT_SAMPLE_TEMPERATURE = 0.6


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


# ---------------------------------------------------------------- progress


class Progress:
  """A one-line progress bar with rate and ETA on stderr (silent when disabled)."""

  def __init__(self, total: int, enabled: bool, stream=None):
    self.total, self.done, self.enabled = max(total, 1), 0, enabled
    self.stream = stream or sys.stderr
    self.start = time.perf_counter()

  def update(self, n: int, label: str) -> None:
    self.done += n
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self.start
    rate = self.done / max(elapsed, 1e-9)
    eta = (self.total - self.done) / rate if rate > 0 else 0.0
    filled = int(30 * self.done / self.total)
    line = (
        f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} items "
        f"{rate:.2f} items/s ETA {_clock(eta)} {label:<16}"
    )
    self.stream.write(line)
    if self.done >= self.total:
      self.stream.write(f"\n")
    self.stream.flush()


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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


# ---------------------------------------------------------------- generation


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


def _generate(
    cfg,
    params,
    tokenizer,
    prompt_ids: list[list[int]],
    *,
    samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    mesh,
    strategy,
    stop_ids,
) -> list[list[str]]:
  from rzero_jax.sampling import generate

  room = max(1, min(max_new_tokens, cfg.max_position_embeddings - max(map(len, prompt_ids))))
  out = generate(
      cfg,
      params,
      prompt_ids,
      max_new_tokens=room,
      temperature=temperature,
      top_p=top_p,
      num_samples=samples,
      stop_token_ids=stop_ids,
      seed=seed,
      mesh=mesh,
      strategy=strategy,
  )
  texts = [tokenizer.decode(t, skip_special_tokens=True) for t in out.tokens]
  return [texts[i * samples : (i + 1) * samples] for i in range(len(prompt_ids))]


# ---------------------------------------------------------------- evaluation


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
    seed: int = 0,
    items: dict[str, list[dict]] | None = None,
    progress: bool = False,
    keep_records: bool = True,
    messages_fn: Callable[[str, dict], list[dict]] | None = None,
) -> dict:
  """Evaluates one model on ``benchmarks``; every process calls it with the same arguments.

  Items come from ``items`` (name -> ``load_benchmark`` items) or are loaded from ``data_dir`` / the
  hub, first ``limit`` of each. Prompts go through the tokenizer's chat template; generation is
  batched (``batch_size`` prompts per ``generate`` call, sorted by length), greedy unless
  ``samples`` > 1 (then ``temperature``, default 0.6). Each process scores its shard of the
  responses; the scores are gathered so that every process returns the same result:

    {"benchmarks": {name: {"score": mean over items of the mean over samples (avg@k; pass@1 when
                            k == 1), "pass@k": share of items with any sample scoring 1 (only
                            when k > 1), "items": n, "samples": k}},
     "math_average": mean score of the math benchmarks evaluated (None if none),
     "overall": mean score of all benchmarks evaluated,
     "items_per_s": items / wall seconds, "seconds": wall seconds,
     "records": {name: [per-item dicts: id, prompt, response(s), extracted, gold, score]}}

  Scores are fractions in [0, 1]; ``format_table`` prints them as percentages. ``records`` is
  left out when ``keep_records`` is False. ``messages_fn(name, item)`` replaces the references'
  prompts (``prompts.messages``), e.g. for a model trained on another instruction. Raises
  ValueError / BenchmarkError for bad arguments
  before generating anything.
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
  stop_ids = stop_token_ids(tokenizer, cfg.eos_token_id)
  total = sum(len(v) for v in items.values())
  bar = Progress(total, progress)
  start = time.perf_counter()
  result: dict[str, Any] = {"benchmarks": {}, "records": {}}
  for b_index, (name, bench_items) in enumerate(items.items()):
    prompts = _prompt_ids(
        tokenizer, name, bench_items, cfg.max_position_embeddings, messages_fn or messages
    )
    order = sorted(range(len(bench_items)), key=lambda i: (len(prompts[i]), i))
    responses: list[list[str]] = [[] for _ in bench_items]
    scores = np.zeros((len(bench_items), samples), np.float32)
    for c, k in enumerate(range(0, len(order), batch_size)):
      chunk = order[k : k + batch_size]
      texts = _generate(
          cfg,
          params,
          tokenizer,
          [prompts[i] for i in chunk],
          samples=samples,
          temperature=temperature,
          top_p=top_p,
          max_new_tokens=max_new_tokens,
          seed=(seed * 1_000_003 + b_index * 10_007 + c) % (2**32),
          mesh=mesh,
          strategy=strategy,
          stop_ids=stop_ids,
      )
      flat = [(i, s) for i in chunk for s in range(samples)]
      for i, t in zip(chunk, texts):
        responses[i] = t
      shard = process_shard(len(flat))
      local = score_many(
          name,
          [bench_items[flat[j][0]] for j in shard],
          [responses[flat[j][0]][flat[j][1]] for j in shard],
      )
      gathered = _gather_scores(np.asarray(local, np.float32), shard, len(flat))
      for (i, s), value in zip(flat, gathered):
        scores[i, s] = value
      bar.update(len(chunk), name)
    per_item = scores.mean(axis=1) if len(bench_items) else np.zeros((0,))
    entry: dict[str, Any] = {
        "score": float(per_item.mean()) if len(bench_items) else 0.0,
        "items": len(bench_items),
        "samples": samples,
    }
    if samples > 1:
      entry["pass@k"] = float((scores.max(axis=1) >= 1).mean()) if len(bench_items) else 0.0
    result["benchmarks"][name] = entry
    if keep_records:
      result["records"][name] = [
          _record(name, item, tokenizer, prompts[i], responses[i], scores[i])
          for i, item in enumerate(bench_items)
      ]
  seconds = time.perf_counter() - start
  values = {n: e["score"] for n, e in result["benchmarks"].items()}
  math_values = [v for n, v in values.items() if n in MATH_BENCHMARKS]
  result["math_average"] = float(np.mean(math_values)) if math_values else None
  result["overall"] = float(np.mean(list(values.values()))) if values else None
  result["seconds"] = seconds
  result["items_per_s"] = total / max(seconds, 1e-9)
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


# ---------------------------------------------------------------- reporting


def flat_metrics(result: dict, prefix: str = "eval/") -> dict[str, float]:
  """Scalars for TensorBoard / summary.json: ``eval/<benchmark>`` (and ``eval/<benchmark>/pass@k``),
  ``eval/math_average`` and ``eval/overall``, as fractions in [0, 1]."""
  out = {}
  for name, entry in result["benchmarks"].items():
    out[f"{prefix}{name}"] = entry["score"]
    if "pass@k" in entry:
      out[f"{prefix}{name}/pass@{entry['samples']}"] = entry["pass@k"]
  for key in ("math_average", "overall"):
    if result.get(key) is not None:
      out[prefix + key] = result[key]
  return out


def _pct(x: float | None) -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def format_table(result: dict, model: str = "model") -> str:
  """The papers' layout: one row per model, a column per benchmark, then math avg and overall."""
  names = list(result["benchmarks"])
  header = ["model"] + names + ["math avg", "overall"]
  row = (
      [model]
      + [_pct(result["benchmarks"][n]["score"]) for n in names]
      + [_pct(result.get("math_average")), _pct(result.get("overall"))]
  )
  lines = [
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
      "| " + " | ".join(row) + " |",
  ]
  passes = [n for n in names if "pass@k" in result["benchmarks"][n]]
  if passes:
    k = result["benchmarks"][passes[0]]["samples"]
    lines.append(
        f"(avg@{k}; pass@{k}: "
        + ", ".join(f"{n} {_pct(result['benchmarks'][n]['pass@k'])}" for n in passes)
        + ")"
    )
  return "\n".join(lines)


def _atomic_write(path: str, text: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def check_out_dir(out_dir: str) -> None:
  """Raises ValueError unless ``write_results`` can write to ``out_dir``: a directory that exists
  or can be created, and can be written. Checked by making (and removing) a temporary file in it or
  in its nearest existing parent, so that a bad directory fails before a run, leaving nothing."""
  target = os.path.abspath(out_dir)
  probe = target
  while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    if probe == target:
      raise ValueError(f"{out_dir!r} exists and is not a directory")
    raise ValueError(f"{out_dir!r} cannot be created: {probe!r} is not a directory")
  try:
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    where = "written" if probe == target else f"created in {probe!r}"
    raise ValueError(f"{out_dir!r} cannot be {where}: {e.strerror or e}") from None


def write_results(out_dir: str, result: dict, extra: dict | None = None) -> None:
  """``results.json`` (scores and settings) and one ``<benchmark>.jsonl`` of per-item records,
  each written atomically (temp file, then ``os.replace``)."""
  os.makedirs(out_dir, exist_ok=True)
  for name, records in result.get("records", {}).items():
    _atomic_write(
        os.path.join(out_dir, f"{name}.jsonl"),
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
    )
  summary = {k: v for k, v in result.items() if k != "records"}
  summary.update(extra or {})
  _atomic_write(os.path.join(out_dir, "results.json"), json.dumps(summary, indent=2) + "\n")
