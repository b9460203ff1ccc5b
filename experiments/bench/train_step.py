"""GRPO train-step throughput and peak memory: `make_train_step` vs an equivalent PyTorch step.

Both sides run one full update on the same random weights and batch: forward, token log-probs, the
GRPO loss (clip 0.2/0.28, k3 KL to a reference, token-mean over the global token count, micro-batch
accumulation), backward, global-norm clipping and AdamW. Each side runs in its own subprocess so
its memory is its own. Memory columns (MB): peak RSS of the process; +compile, RSS growth while XLA
compiles the step; +steps, peak RSS above the RSS just before the first step (after compiling for
jax, after setup for torch), i.e. the step's working memory; XLA temp, the compiled step's scratch
buffers; dev peak, the accelerator allocator's peak (GPU). Times exclude compilation (reported
separately); tokens/s counts every position of the batch (B x T), from the median of --steps timed
steps. MFU uses 6 x (matmul params) + 12 x layers x heads x head_dim x T FLOPs per token (PaLM's
count) over the device's peak (--peak_tflops; on CPU the measured f32 matmul rate).

  python -m experiments.bench.train_step                    # CPU: tiny-4m, both sides
  python -m experiments.bench.train_step --device_kind=gpu --model_shape=qwen3-0.6b \\
      --dtype=bfloat16 --batch=16 --seq_len=1024 --micro_batch_size=4 --remat --side=jax
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from experiments.bench import models

PEAK_TFLOPS = {
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v4": 275.0,
    "TPU v6": 918.0,
}  # dense bf16


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  models.add_model_args(
      parser,
      "compute dtype; master weights stay float32 (default: float32 on cpu, bfloat16 elsewhere)",
  )
  parser.add_argument("--batch", type=int, default=8, help="sequences per step")
  parser.add_argument("--seq_len", "--seq-len", type=int, default=256)
  parser.add_argument("--micro_batch_size", "--micro-batch-size", type=int, default=None)
  parser.add_argument("--remat", action="store_true", help="rematerialise each layer in backward")
  parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
  parser.add_argument(
      "--side",
      default=None,
      choices=("both", "jax", "torch"),
      help="default: both on cpu, jax elsewhere",
  )
  parser.add_argument("--peak_tflops", "--peak-tflops", type=float, default=None)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def model_config(args):
  return models.model_config(args.model_shape, models.default_dtype(args), remat=args.remat)


def train_config(args):
  from rzero_jax.training import TrainConfig

  return TrainConfig(learning_rate=1e-5, kl_coef=1e-2, micro_batch_size=args.micro_batch_size)


def host_batch(cfg, batch: int, length: int):
  """Random tokens; the second half of every row is the trained completion; advantages random."""
  import numpy as np

  rng = np.random.default_rng(0)
  loss_mask = np.zeros((batch, length), np.float32)
  loss_mask[:, length // 2 :] = 1
  return {
      "tokens": rng.integers(0, cfg.vocab_size, (batch, length)).astype(np.int32),
      "attention_mask": np.ones((batch, length), np.int32),
      "loss_mask": loss_mask,
      "advantages": rng.normal(size=batch).astype(np.float32),
  }


def flops_per_token(cfg, length: int) -> float:
  matmul_params = cfg.num_params() - cfg.vocab_size * cfg.hidden_size * (not cfg.tie_embeddings)
  return 6 * matmul_params + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * length


def run_jax(args) -> dict:
  import jax
  import jax.numpy as jnp
  from rzero_jax.models import init_params
  from rzero_jax.training import init_train_state, make_logprob_fn, make_train_step

  cfg, train_cfg = model_config(args), train_config(args)
  batch = host_batch(cfg, args.batch, args.seq_len)
  params = init_params(cfg, jax.random.key(0))
  old = make_logprob_fn(cfg, train_cfg)(params, batch["tokens"], batch["attention_mask"])
  batch = {
      **{k: jnp.asarray(v) for k, v in batch.items()},
      "old_logprobs": old,
      "ref_logprobs": old,
  }
  state = init_train_state(cfg, train_cfg, params)
  del params
  setup_rss = rss_bytes()
  step = make_train_step(cfg, train_cfg)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  compiled_rss = rss_bytes()
  analysis = compiled.memory_analysis()
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  return {
      "step_s": statistics.median(times),
      "compile_s": compile_s,
      "setup_rss": setup_rss,
      "compiled_rss": compiled_rss,
      "xla_temp": analysis and analysis.temp_size_in_bytes,
      "device_peak": stats.get("peak_bytes_in_use"),
      "loss": float(metrics["loss"]),
      "device": jax.devices()[0].device_kind,
      "params": cfg.num_params(),
      "flops_per_token": flops_per_token(cfg, args.seq_len),
  }


def run_torch(args) -> dict:
  import numpy as np
  import torch
  import transformers
  from rzero_jax.models import init_params
  from rzero_jax.models.hf_io import hf_state_dict
  import jax

  cfg, train_cfg = model_config(args), train_config(args)
  device = "cuda" if args.device_kind == "gpu" else "cpu"
  model = transformers.AutoModelForCausalLM.from_config(
      transformers.AutoConfig.for_model(**cfg.to_hf_dict()), dtype=torch.float32
  )
  state = hf_state_dict(cfg, init_params(cfg, jax.random.key(0)))
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
  model.to(device).train()
  batch = {
      k: torch.as_tensor(v, device=device)
      for k, v in host_batch(cfg, args.batch, args.seq_len).items()
  }
  tokens = batch["tokens"].long()
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

  def token_logprobs(ids):
    with autocast:
      logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[:, :-1] / train_cfg.temperature, -1)
    return logp.gather(-1, ids[:, 1:, None])[..., 0]

  with torch.no_grad():
    old = token_logprobs(tokens)
  optimizer = torch.optim.AdamW(
      model.parameters(),
      lr=train_cfg.learning_rate,
      betas=(train_cfg.b1, train_cfg.b2),
      eps=train_cfg.eps,
      weight_decay=train_cfg.weight_decay,
  )
  micro = train_cfg.micro_batch_size or args.batch
  mask = batch["loss_mask"][:, 1:]
  num_tokens = mask.sum()

  def step():
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for s in range(0, args.batch, micro):
      rows = slice(s, s + micro)
      logp = token_logprobs(tokens[rows])
      adv = batch["advantages"][rows, None]
      ratio = torch.exp(torch.clamp(logp - old[rows], -20, 20))
      pg = torch.maximum(
          -adv * ratio, -adv * torch.clamp(ratio, 1 - train_cfg.clip_low, 1 + train_cfg.clip_high)
      )
      diff = old[rows] - logp
      kl = torch.exp(diff) - diff - 1
      loss = ((pg + train_cfg.kl_coef * kl) * mask[rows]).sum() / num_tokens
      loss.backward()
      total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
    optimizer.step()
    return total

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  setup_rss = rss_bytes()
  loss = step()
  times = []
  for _ in range(args.steps):
    sync()
    start = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - start)
  return {
      "step_s": statistics.median(times),
      "compile_s": None,
      "setup_rss": setup_rss,
      "compiled_rss": setup_rss,
      "xla_temp": None,
      "device_peak": torch.cuda.max_memory_allocated() if device == "cuda" else None,
      "loss": loss,
      "device": device,
      "params": cfg.num_params(),
      "flops_per_token": flops_per_token(cfg, args.seq_len),
  }


def rss_bytes() -> int:
  """Current resident set size of this process."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_matmul_flops() -> float:
  import jax
  import jax.numpy as jnp

  x = jnp.ones((1024, 1024), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  start = time.perf_counter()
  for _ in range(10):
    y = f(x)
  y.block_until_ready()
  return 2 * 1024**3 * 10 / (time.perf_counter() - start)


def child(args) -> None:
  os.environ.setdefault("JAX_PLATFORMS", {"gpu": "cuda"}.get(args.device_kind, args.device_kind))
  result = run_jax(args) if args.side == "jax" else run_torch(args)
  result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
  args = parse_args()
  if args.child:
    return child(args)
  sides = {
      "both": ["jax", "torch"],
      None: ["jax", "torch"] if args.device_kind == "cpu" else ["jax"],
  }
  sides = sides.get(args.side, [args.side])
  results = {}
  for side in sides:
    argv = [a for a in sys.argv[1:] if not a.startswith("--side")]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.bench.train_step", *argv, f"--side={side}", "--child"],
        capture_output=True,
        text=True,
    )
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode or not lines:
      sys.exit(f"{side} side failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    results[side] = json.loads(lines[-1][len("RESULT ") :])
  first = next(iter(results.values()))
  peak = args.peak_tflops
  if peak is None and args.device_kind == "cpu":
    peak = measure_matmul_flops() / 1e12
  elif peak is None:
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in first["device"]), None)
  tokens = args.batch * args.seq_len
  print(
      f"model {args.model_shape}: {first['params'] / 1e6:.2f}M params, compute "
      f"{models.default_dtype(args)}, float32 master "
      f"weights; batch {args.batch} x {args.seq_len} tokens, micro-batch "
      f"{args.micro_batch_size or args.batch}, remat {args.remat}; device {first['device']}; "
      f"peak {'%.3f' % peak if peak else '?'} TFLOP/s"
  )
  print(
      f"{'side':>6} {'tokens/s':>9} {'step s':>7} {'compile s':>9} {'MFU':>6} {'peak RSS':>8} "
      f"{'+compile':>8} {'+steps':>7} {'XLA temp':>8} {'dev peak':>8} {'loss':>8}   (memory in MB)"
  )
  mb = lambda x, w: f"{x / 2**20:{w}.0f}" if x is not None else f"{'-':>{w}}"
  for side, r in results.items():
    rate = tokens / r["step_s"]
    mfu = f"{100 * rate * r['flops_per_token'] / (peak * 1e12):5.1f}%" if peak else "?"
    compile_s = f"{r['compile_s']:9.2f}" if r["compile_s"] is not None else f"{'-':>9}"
    compile_rss = r["compiled_rss"] - r["setup_rss"] if side == "jax" else None
    print(
        f"{side:>6} {rate:9.0f} {r['step_s']:7.3f} {compile_s} {mfu:>6} {mb(r['peak_rss'], 8)} "
        f"{mb(compile_rss, 8)} {mb(max(r['peak_rss'] - r['compiled_rss'], 0), 7)} "
        f"{mb(r['xla_temp'], 8)} {mb(r['device_peak'], 8)} {r['loss']:8.4f}"
    )


if __name__ == "__main__":
  main()
