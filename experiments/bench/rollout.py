"""Rollout throughput on a long tail of completion lengths: continuous batching vs fixed-shape
chunks vs `transformers` generate.

The workload of RL rollouts: --prompts prompts of 8-64 tokens, one sample each at temperature 1 on
a random Qwen3 (near-uniform next-token distribution) with --stop_ids of its ids stopping a row, so
completion lengths are geometric (mean ~ vocab / stop_ids tokens, a long tail up to several times
that), capped at --caps. Three ways to run it, --max_batch_size rows at a time:
  ours:   one `generate(..., max_batch_size=M)` call: a row that stops frees its slot for the next
          waiting row (continuous batching), attention over the filled part of the cache only;
  chunks: one `generate` call per M prompts (a static batch: every row steps until the chunk's
          longest row stops), what the loop did before;
  HF:     `model.generate` per M prompts (sampling, eos = the stop ids).
Useful tokens/s counts the tokens of the completions (through the stop token); `live` is the share
of decode row-steps spent on rows that had not stopped. Compilation is excluded (a first untimed
run); times are wall clock.

  python -m experiments.bench.rollout --hf              # CPU: tiny-4m, 256 prompts, caps 1024, 4096
  python -m experiments.bench.rollout --device_kind=gpu --model_shape=qwen3-0.6b --dtype=bfloat16 \
      --prompts=1024 --max_batch_size=256 --hf
"""

from __future__ import annotations

import argparse
import os
import time

from experiments.bench.models import add_model_args, default_dtype, hf_model, random_model


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  add_model_args(parser, "default: float32 on cpu, else bfloat16")
  parser.add_argument("--prompts", type=int, default=256)
  parser.add_argument("--max_batch_size", type=int, default=64, help="rows in flight")
  parser.add_argument("--stop_ids", type=int, default=32, help="how many ids stop a row")
  parser.add_argument("--caps", default="1024,4096", help="max_new_tokens values")
  parser.add_argument("--modes", default="ours,chunks", help="ours and/or chunks")
  parser.add_argument("--hf", action="store_true", help="also time transformers generate")
  parser.add_argument("--hf_cap", type=int, default=1024, help="max_new_tokens for HF")
  parser.add_argument(
      "--hf_prompts", type=int, default=64, help="HF runs the first N prompts (batches are alike)"
  )
  parser.add_argument("--seed", type=int, default=1)
  return parser.parse_args()


def run_ours(generate, cfg, params, prompts, cap, stops, batch, seed):
  """One call, `batch` rows in flight: (useful tokens, row-steps)."""
  out = generate(
      cfg,
      params,
      prompts,
      max_new_tokens=cap,
      temperature=1.0,
      stop_token_ids=stops,
      seed=seed,
      max_batch_size=batch,
  )
  return int(out.lengths.sum()), getattr(out, "decode_row_steps", 0)


def run_chunks(generate, cfg, params, prompts, cap, stops, batch, seed):
  """One static call per `batch` prompts: (useful tokens, row-steps)."""
  tokens = steps = 0
  for start in range(0, len(prompts), batch):
    out = generate(
        cfg,
        params,
        prompts[start : start + batch],
        max_new_tokens=cap,
        temperature=1.0,
        stop_token_ids=stops,
        seed=seed + start,
    )
    tokens += int(out.lengths.sum())
    steps += getattr(out, "decode_row_steps", 0)
  return tokens, steps


def run_hf(model, prompts, cap, stops, batch, device):
  """`model.generate` per `batch` left-padded prompts: useful tokens (through the first stop)."""
  import torch

  tokens = 0
  with torch.no_grad():
    for start in range(0, len(prompts), batch):
      chunk = prompts[start : start + batch]
      width = max(map(len, chunk))
      ids = torch.zeros((len(chunk), width), dtype=torch.long)
      mask = torch.zeros_like(ids)
      for i, p in enumerate(chunk):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
      out = model.generate(
          ids.to(device),
          attention_mask=mask.to(device),
          do_sample=True,
          temperature=1.0,
          top_p=1.0,
          top_k=0,
          max_new_tokens=cap,
          eos_token_id=list(stops),
          pad_token_id=0,
      )
      stop_set = set(stops)
      for row in out[:, width:].tolist():
        n = next((i + 1 for i, t in enumerate(row) if t in stop_set), len(row))
        tokens += n
  return tokens


def timed(fn):
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def main() -> None:
  args = parse_args()
  os.environ.setdefault("JAX_PLATFORMS", args.device_kind)
  import jax
  import numpy as np
  from rzero_jax.sampling import generate

  dtype = default_dtype(args)
  cfg, params = random_model(args.model_shape, dtype, max_position_embeddings=8192)
  rng = np.random.RandomState(0)
  prompts = [rng.randint(1, cfg.vocab_size, size=rng.randint(8, 65)).tolist() for _ in range(256)]
  prompts = (prompts * (args.prompts // 256 + 1))[: args.prompts]
  stops = list(range(cfg.vocab_size - args.stop_ids, cfg.vocab_size))
  print(
      f"device: {jax.devices()[0].device_kind}; {args.model_shape} {dtype}; {args.prompts} prompts, "
      f"{args.stop_ids} stop ids of {cfg.vocab_size}, {args.max_batch_size} rows in flight"
  )
  header = f"{'run':<12} {'prompts':>7} {'cap':>5} {'tokens':>7} {'mean len':>8} {'seconds':>8}"
  print(header + f" {'tok/s':>8} {'live':>6}", flush=True)
  rates = []

  def report(name, n, cap, tokens, seconds, row_steps):
    rates.append((f"{name} {cap}", tokens / seconds))
    live = f"{tokens / row_steps:6.2f}" if row_steps else f"{'-':>6}"
    print(
        f"{name:<12} {n:>7} {cap:>5} {tokens:>7} {tokens / n:>8.1f} {seconds:>8.2f} "
        f"{tokens / seconds:>8.0f} {live}",
        flush=True,
    )

  if args.hf:  # first: the reference rate
    device = "cuda" if args.device_kind == "gpu" else "cpu"
    model = hf_model(cfg, params, device)
    subset = prompts[: args.hf_prompts]
    run_hf(model, subset[: args.max_batch_size], 8, stops, args.max_batch_size, device)
    tokens, seconds = timed(
        lambda: run_hf(model, subset, args.hf_cap, stops, args.max_batch_size, device)
    )
    report("HF generate", len(subset), args.hf_cap, tokens, seconds, 0)
  runners = {"ours": run_ours, "chunks": run_chunks}
  for mode in args.modes.split(","):
    for cap in (int(c) for c in args.caps.split(",")):
      call = lambda: runners[mode](
          generate, cfg, params, prompts, cap, stops, args.max_batch_size, args.seed
      )
      call()  # compiles every program the timed run needs
      (tokens, row_steps), seconds = timed(call)
      report(mode, len(prompts), cap, tokens, seconds, row_steps)
  if args.hf:
    hf_rate = rates[0][1]
    print("useful tok/s vs HF: " + ", ".join(f"{n}: {r / hf_rate:.2f}x" for n, r in rates[1:]))


if __name__ == "__main__":
  main()
