"""bfloat16 numerics of the precision modes side by side (docs/numerics.md).

Model: a random Qwen3 of --model_shape with its matrices doubled ("sharpened": peaked next-token
distributions, as trained models have), float32 master weights for the trainer and, in the
bfloat16 modes, a bfloat16 copy for the sampler. Modes (each in its own process, so the XLA flag
can be set before jax starts):
  f32:        dtype="float32";
  before:     dtype="bfloat16", residual_dtype=None (bfloat16 residual stream, the old default);
  flag:       `before` with XLA_FLAGS=--xla_allow_excess_precision=false;
  policy:     dtype="bfloat16" (float32 residual stream, explicitly rounded bfloat16 matmul inputs);
  invariant:  dtype="bfloat16", batch_invariant=True (fixed-shape tiles).
Columns:
  (a) trainer vs itself: one rollout's log-probs (--agree_prompts x 4 samples, --agree_tokens
      tokens at temperature 0.7) recomputed with `make_logprob_fn` in several (prompt bucket, rows
      per chunk) layouts, eager (`jax.disable_jit`) and jitted: the largest mean |diff| of a pair
      of layouts, and the largest |diff|;
  (b) sampler vs trainer: log(p_trainer / p_sampler) per completion token (mean, RMS, max |.|,
      share with |.| <= 1e-3), the first completion token of each row (its logits come from the
      prefill) apart from the others (decode);
  (c) the long tail of bench.rollout (--prompts prompts of 8-64 tokens, temperature 1, --stop_ids
      stop ids, cap --cap): the share of completions identical to the max_batch_size=None run for
      max_batch_size 1, 7 and 64;
  (d) generate tokens/s on that workload with 64 rows in flight (compilation excluded: the timed
      call repeats an untimed one) and the slowdown vs `policy`.

  python -m experiments.bench.numerics                  # CPU: tiny-4m, all modes
  python -m experiments.bench.numerics --modes=policy,invariant --prompts=256 --cap=256
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time

from experiments.bench.models import SHAPES, random_model

TEMPERATURE = 0.7
SAMPLES = 4
LAYOUTS = ((16, 64), (16, 8), (24, 4), (16, 1))  # (prompt bucket, rows per chunk); 64: all rows
BATCH_SIZES = (1, 7, 64)
MODES = {
    "f32": dict(dtype="float32"),
    "before": dict(dtype="bfloat16", residual_dtype=None),
    "flag": dict(dtype="bfloat16", residual_dtype=None),
    "policy": dict(dtype="bfloat16"),
    "invariant": dict(dtype="bfloat16", batch_invariant=True),
}
NO_EXCESS_PRECISION = "--xla_allow_excess_precision=false"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--device_kind", default="cpu", choices=("cpu", "gpu", "tpu"))
  parser.add_argument("--model_shape", default="tiny-4m", choices=sorted(SHAPES))
  parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
  parser.add_argument("--agree_prompts", type=int, default=8, help="(a), (b): prompts x 4")
  parser.add_argument("--agree_tokens", type=int, default=24, help="(a), (b): new tokens")
  parser.add_argument("--prompts", type=int, default=128, help="(c), (d): long-tail prompts")
  parser.add_argument("--cap", type=int, default=128, help="(c), (d): max_new_tokens")
  parser.add_argument("--stop_ids", type=int, default=32, help="(c), (d): ids that stop a row")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def sharpened_model(shape: str):
  """(float32 config, float32 params) of `shape` with every matrix doubled."""
  import jax

  cfg, params = random_model(shape, "float32", max_position_embeddings=8192)
  return cfg, jax.tree.map(lambda p: p * 2.0 if p.ndim >= 2 else p, params)


def layout_logprobs(cfg, params, prompts, out, prompt_len, chunk):
  """Trainer log-probs [N, completion] of the rollout in one batch layout, and the sampler's."""
  import numpy as np
  from rzero_jax.training import make_logprob_fn
  from rzero_jax.training.batch import build_batch

  width = max(map(len, out.tokens))
  batch = build_batch(
      prompts,
      out.tokens,
      out.logprobs,
      np.zeros(len(prompts)),
      prompt_len=prompt_len,
      completion_len=width,
      pad_id=0,
  )
  logprobs = make_logprob_fn(cfg, TEMPERATURE, chunk_size=chunk)(
      params, batch["tokens"], batch["attention_mask"]
  )
  return np.asarray(logprobs)[:, prompt_len:], batch["old_logprobs"][:, prompt_len:]


def self_floor(runs, mask) -> tuple[float, float]:
  """(largest mean |diff|, largest |diff|) over pairs of layouts."""
  import numpy as np

  diffs = [np.abs(runs[a] - runs[b])[mask] for a, b in itertools.combinations(runs, 2)]
  return max(float(d.mean()) for d in diffs), max(float(d.max()) for d in diffs)


def ratio_stats(log_ratio) -> dict[str, float]:
  import numpy as np

  return dict(
      mean=float(log_ratio.mean()),
      rms=float(np.sqrt((log_ratio**2).mean())),
      max=float(np.abs(log_ratio).max()),
      close=float((np.abs(log_ratio) <= 1e-3).mean()),
  )


def measure(mode: str, args: argparse.Namespace) -> dict:
  """All columns of one mode, in this process."""
  import dataclasses

  import jax
  import numpy as np
  from rzero_jax.sampling import generate

  base, params = sharpened_model(args.model_shape)
  cfg = dataclasses.replace(base, **MODES[mode])
  sampler_params = jax.tree.map(lambda p: p.astype(cfg.compute_dtype), params)
  result: dict = {}

  start = time.perf_counter()
  # (a), (b): one rollout at temperature 0.7, recomputed by the trainer in several layouts.
  rng = np.random.RandomState(args.seed)
  prompts = [
      rng.randint(1, cfg.vocab_size, rng.randint(3, 12)).tolist() for _ in range(args.agree_prompts)
  ]
  out = generate(
      cfg,
      sampler_params,
      prompts,
      max_new_tokens=args.agree_tokens,
      temperature=TEMPERATURE,
      num_samples=SAMPLES,
      seed=args.seed,
  )
  rows = [p for p in prompts for _ in range(SAMPLES)]
  layouts = [(p, min(c, len(rows))) for p, c in LAYOUTS]
  jitted = {s: layout_logprobs(cfg, params, rows, out, *s) for s in layouts}
  with jax.disable_jit():
    eager = {s: layout_logprobs(cfg, params, rows, out, *s)[0] for s in layouts}
  trainer, sampler = jitted[layouts[0]]
  mask = np.zeros_like(trainer, bool)
  for i, tokens in enumerate(out.tokens):
    mask[i, : len(tokens)] = True
  result["floor_eager"] = self_floor(eager, mask)
  result["floor_jit"] = self_floor({s: v[0] for s, v in jitted.items()}, mask)
  log_ratio = trainer - sampler
  first = np.zeros_like(mask)
  first[:, 0] = True
  result["prefill"] = ratio_stats(log_ratio[mask & first])
  result["decode"] = ratio_stats(log_ratio[mask & ~first])
  result["bitwise"] = bool(np.array_equal(trainer[mask], sampler[mask]))

  result["agree_seconds"] = time.perf_counter() - start
  # (c), (d): the long tail of bench.rollout.
  rng = np.random.RandomState(0)
  tail = [rng.randint(1, cfg.vocab_size, size=rng.randint(8, 65)).tolist() for _ in range(256)]
  tail = (tail * (args.prompts // 256 + 1))[: args.prompts]
  stops = list(range(cfg.vocab_size - args.stop_ids, cfg.vocab_size))
  run = lambda batch: generate(  # noqa: E731
      cfg,
      sampler_params,
      tail,
      max_new_tokens=args.cap,
      temperature=1.0,
      stop_token_ids=stops,
      seed=args.seed,
      max_batch_size=batch,
  )
  reference = run(None).tokens
  result["same"] = {}
  for batch in BATCH_SIZES:
    tokens = run(batch).tokens
    if batch == 64:  # the call above compiled every program: time a repeat
      start = time.perf_counter()
      tokens = run(batch).tokens
      seconds = time.perf_counter() - start
      result["tok_s"] = sum(map(len, tokens)) / seconds
      result["mean_len"] = sum(map(len, tokens)) / len(tokens)
    result["same"][batch] = float(np.mean([a == b for a, b in zip(tokens, reference)]))
  return result


def run_mode(mode: str, argv: list[str]) -> dict:
  """`measure(mode)` in a fresh process (the flag mode sets XLA_FLAGS before jax starts)."""
  env = dict(os.environ)
  if mode == "flag":
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {NO_EXCESS_PRECISION}".strip()
  cmd = [sys.executable, "-m", "experiments.bench.numerics", *argv, f"--worker={mode}"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{mode} failed:\n{proc.stderr[-4000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result["seconds"] = time.perf_counter() - start
  return result


def print_table(results: dict[str, dict]) -> None:
  modes = [m for m in MODES if m in results]
  policy_rate = results.get("policy", {}).get("tok_s")
  rows = [
      ("(a) eager: max mean|d|", lambda r: f"{r['floor_eager'][0]:.2e}"),
      ("(a) eager: max |d|", lambda r: f"{r['floor_eager'][1]:.2e}"),
      ("(a) jit: max mean|d|", lambda r: f"{r['floor_jit'][0]:.2e}"),
      ("(a) jit: max |d|", lambda r: f"{r['floor_jit'][1]:.2e}"),
  ]
  for part in ("prefill", "decode"):
    rows += [
        (f"(b) {part}: mean", lambda r, p=part: f"{r[p]['mean']:+.1e}"),
        (f"(b) {part}: RMS", lambda r, p=part: f"{r[p]['rms']:.2e}"),
        (f"(b) {part}: max", lambda r, p=part: f"{r[p]['max']:.2e}"),
        (f"(b) {part}: |d|<=1e-3", lambda r, p=part: f"{r[p]['close']:.1%}"),
    ]
  rows.append(("(b) bitwise equal", lambda r: "yes" if r["bitwise"] else "no"))
  rows += [(f"(c) same, batch {b}", lambda r, b=b: f"{r['same'][str(b)]:.1%}") for b in BATCH_SIZES]
  rows += [
      ("(d) mean length", lambda r: f"{r['mean_len']:.1f}"),
      ("(d) tokens/s", lambda r: f"{r['tok_s']:.0f}"),
      (
          "(d) slowdown vs policy",
          lambda r: f"{policy_rate / r['tok_s']:.2f}x" if policy_rate else "-",
      ),
      ("process seconds", lambda r: f"{r['seconds']:.0f}"),
  ]
  print(f"{'':<24}" + "".join(f"{m:>11}" for m in modes))
  for name, fmt in rows:
    print(f"{name:<24}" + "".join(f"{fmt(results[m]):>11}" for m in modes), flush=True)


def main() -> None:
  args = parse_args()
  os.environ.setdefault("JAX_PLATFORMS", args.device_kind)
  if args.worker:
    print(json.dumps(measure(args.worker, args)))
    return
  argv = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("modes", "worker")]
  print("command: python -m experiments.bench.numerics " + shlex.join(sys.argv[1:]))
  print(
      f"{args.model_shape} with matrices x2, seed {args.seed}; (a, b): {args.agree_prompts} prompts "
      f"x {SAMPLES} samples x {args.agree_tokens} tokens at T={TEMPERATURE}, layouts {LAYOUTS}; "
      f"(c, d): {args.prompts} prompts, T=1, {args.stop_ids} stop ids, cap {args.cap}",
      flush=True,
  )
  results = {}
  for mode in args.modes.split(","):
    results[mode] = run_mode(mode, argv)
    print(f"  {mode}: {json.dumps(results[mode])}", flush=True)
  print_table(results)


if __name__ == "__main__":
  main()
