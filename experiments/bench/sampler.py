"""Decode throughput of `rzero_jax.sampling.generate`, side by side with `transformers` `generate`.

Both run the same random weights (ours are converted to a HF model), without stop tokens so every
row generates exactly --new_tokens tokens. Times exclude compilation (reported separately) and are
the best of --repeats (--hf_repeats) runs. Rooflines:
  compute:   measured matmul FLOP/s / (2 x params) tokens/s;
  bandwidth: measured HBM/DRAM copy bandwidth x batch / (bytes of params + the cache read per step)
             (on CPU the tiny model's weights stay in cache, so this "bound" can exceed 100%).

  python -m experiments.bench.sampler --hf                      # CPU: 4.2M Qwen3, batch 32 and 128
  python -m experiments.bench.sampler --device_kind=gpu --model_shape=qwen3-0.6b --dtype=bfloat16 \
      --batch=64,256 --hf
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
  add_model_args(parser, "params/compute dtype (default: float32 on cpu, bfloat16 elsewhere)")
  parser.add_argument("--cache_dtype", "--cache-dtype", default=None)
  parser.add_argument("--batch", default="32,128", help="comma-separated batch sizes")
  parser.add_argument("--new_tokens", "--new-tokens", type=int, default=128)
  parser.add_argument("--prompt_len", "--prompt-len", type=int, default=32)
  parser.add_argument("--methods", default="greedy,top_p", help="greedy and/or top_p (0.95)")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best is kept)")
  parser.add_argument("--hf", action="store_true", help="also time transformers generate")
  parser.add_argument("--hf_repeats", "--hf-repeats", type=int, default=1)
  return parser.parse_args()


def measure_matmul_flops(jax, jnp, dtype, n: int) -> float:
  x = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  start, reps = time.perf_counter(), 10
  for _ in range(reps):
    y = f(x)
  y.block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - start)


def measure_bandwidth(jax, jnp, num_bytes: int) -> float:
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  f = jax.jit(lambda a: a * 2)
  f(x).block_until_ready()
  start, reps = time.perf_counter(), 10
  for _ in range(reps):
    y = f(x)
  y.block_until_ready()
  return 2 * num_bytes * reps / (time.perf_counter() - start)  # one read + one write


def time_hf(model, prompts, new_tokens: int, method: str, repeats: int, device: str) -> float:
  import torch

  ids = torch.tensor(prompts, device=device)
  kwargs = (
      dict(do_sample=False)
      if method == "greedy"
      else dict(do_sample=True, top_p=0.95, top_k=0, temperature=1.0)
  )
  run = lambda n: model.generate(
      ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, pad_token_id=0, **kwargs
  )
  with torch.no_grad():
    run(4)
    best = float("inf")
    for _ in range(repeats):
      if device == "cuda":
        torch.cuda.synchronize()
      start = time.perf_counter()
      out = run(new_tokens)
      if device == "cuda":
        torch.cuda.synchronize()
      best = min(best, time.perf_counter() - start)
  assert out.shape[1] == len(prompts[0]) + new_tokens
  return best


def main() -> None:
  args = parse_args()
  os.environ.setdefault("JAX_PLATFORMS", args.device_kind)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from rzero_jax.sampling import generate

  dtype = default_dtype(args)
  cfg, params = random_model(args.model_shape, dtype)
  n_params = cfg.num_params()
  itemsize = jnp.dtype(dtype).itemsize
  flops = measure_matmul_flops(jax, jnp, dtype, 1024 if args.device_kind == "cpu" else 8192)
  bandwidth = measure_bandwidth(jax, jnp, (64 << 20) if args.device_kind == "cpu" else (2 << 30))
  torch_device = "cuda" if args.device_kind == "gpu" else "cpu"
  model = hf_model(cfg, params, torch_device) if args.hf else None
  print(
      f"device: {jax.devices()[0].device_kind} ({args.device_kind}); model {args.model_shape}: "
      f"{n_params / 1e6:.2f}M params, {dtype}; prompt {args.prompt_len}, "
      f"{args.new_tokens} new tokens; matmul {flops / 1e9:.1f} GFLOP/s, "
      f"copy bandwidth {bandwidth / 1e9:.1f} GB/s"
  )
  print(
      f"{'batch':>5} {'method':>7} {'ours tok/s':>11} {'compile s':>9} {'HF tok/s':>9} "
      f"{'ratio':>6} {'%compute':>8} {'%bandwidth':>10}"
  )
  rng = np.random.RandomState(0)
  for batch in (int(b) for b in args.batch.split(",")):
    prompts = rng.randint(1, cfg.vocab_size, size=(batch, args.prompt_len)).tolist()
    for method in args.methods.split(","):
      sampling = dict(temperature=0.0) if method == "greedy" else dict(temperature=1.0, top_p=0.95)
      run = lambda: generate(
          cfg,
          params,
          prompts,
          max_new_tokens=args.new_tokens,
          seed=1,
          cache_dtype=args.cache_dtype,
          **sampling,
      )
      start = time.perf_counter()
      run()
      first = time.perf_counter() - start
      best = float("inf")
      for _ in range(args.repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
      assert int(out.lengths.min()) == args.new_tokens
      ours = batch * args.new_tokens / best
      hf = (
          batch
          * args.new_tokens
          / time_hf(model, prompts, args.new_tokens, method, args.hf_repeats, torch_device)
          if args.hf
          else None
      )
      cache_bytes = (
          2
          * cfg.num_layers
          * (args.prompt_len + args.new_tokens)
          * cfg.num_kv_heads
          * cfg.head_dim
          * jnp.dtype(args.cache_dtype or dtype).itemsize
      )
      bandwidth_tok_s = bandwidth * batch / (n_params * itemsize + batch * cache_bytes)
      hf_text = f"{hf:9.0f} {ours / hf:6.2f}" if hf else f"{'-':>9} {'-':>6}"
      print(
          f"{batch:5d} {method:>7} {ours:11.0f} {first - best:9.2f} {hf_text} "
          f"{100 * ours * 2 * n_params / flops:7.1f}% {100 * ours / bandwidth_tok_s:9.1f}%",
          flush=True,
      )


if __name__ == "__main__":
  main()
