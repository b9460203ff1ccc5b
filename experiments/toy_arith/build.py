"""Builds the toy arithmetic base model: data, tokenizer, a small Qwen3 pretrained from scratch.

  python -m experiments.toy_arith.build --out DIR [--steps N]

The result is a Hugging Face model directory (config.json, model.safetensors, tokenizer files,
`toy_arith_build.json` with the build settings) that `rzero_jax.models.load_pretrained` and
`load_tokenizer` read. Everything derives from `BuildConfig.seed`, so a build is reproducible.
`ensure_base_model(cache_dir)` builds once and reuses the cached directory afterwards; the cache
key covers the build settings and the R-Zero prompt texts, so changing either rebuilds.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np
import optax

from experiments.toy_arith import data
from experiments.toy_arith.tokenizer import train_tokenizer
from rzero_jax.models import ModelConfig, encode_chat, init_params, save_pretrained
from rzero_jax.rzero import prompts
from rzero_jax.training.sft import make_sft_batch, make_sft_step

BUILD_INFO = "toy_arith_build.json"
LENGTH_BUCKET = 16  # batches are padded to a multiple of this (a few compiled shapes)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """Everything that determines the base model."""

  seed: int = 0
  vocab_size: int = 512
  tokenizer_problems: int = 4000
  hidden_size: int = 128
  intermediate_size: int = 384
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  steps: int = 900
  batch_size: int = 64
  learning_rate: float = 3e-3
  warmup_steps: int = 100
  weight_decay: float = 0.01
  challenger_fraction: float = 0.2
  # The model first learns to work problems out step by step; over the last `direct_steps`
  # steps its Solver text answers directly (`\boxed{}` only) with probability `direct_rate`, and
  # steps slip now and then (`data.digit_slip`). It ends with a habit of guessing in one shot
  # (its greedy first move), which only works on one-step problems, while its sampled answers
  # that work it out agree with each other: the majority vote is right more often than the
  # model's first move, so training on the vote can teach it to show its work.
  direct_rate: float = 0.6
  direct_steps: int = 200
  slip_per_digit: float = 0.02
  solver_weights: tuple[tuple[int, float], ...] = (
      (1, 0.15),
      (2, 0.2),
      (3, 0.2),
      (4, 0.2),
      (5, 0.15),
      (6, 0.1),
  )
  challenger_weights: tuple[tuple[int, float], ...] = tuple((k, 1.0) for k in data.LEVELS)

  def fingerprint(self) -> str:
    """A short hash of these settings and the prompt texts the model is trained on."""
    text = json.dumps(
        [
            dataclasses.asdict(self),
            prompts.challenger_messages(),
            prompts.solver_messages("{question}"),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def example(
    rng: random.Random, cfg: BuildConfig, direct_rate: float
) -> tuple[list[dict[str, str]], str]:
  """One training example: (prompt messages, assistant completion) of either role; a Solver
  completion answers directly with probability `direct_rate`."""
  if rng.random() < cfg.challenger_fraction:
    question, answer, _ = data.sample_problems(rng, dict(cfg.challenger_weights), 1)[0]
    return prompts.challenger_messages(), data.challenger_completion(question, answer)
  question, answer, _ = data.sample_problems(rng, dict(cfg.solver_weights), 1)[0]
  if rng.random() < direct_rate:
    return prompts.solver_messages(question), data.direct_completion(answer)
  slip = data.digit_slip(rng, cfg.slip_per_digit)
  return prompts.solver_messages(question), data.solver_completion(question, slip)


def tokenizer_corpus(cfg: BuildConfig) -> list[str]:
  """Texts the BPE is trained on: every message, role header and completion, without the
  special tokens (those are never merged)."""
  rng = random.Random(cfg.seed)
  texts = ["assistant\n"]
  for _ in range(cfg.tokenizer_problems):
    messages, completion = example(rng, cfg, cfg.direct_rate)
    texts += [f"{m['role']}\n{m['content']}" for m in messages] + [completion]
  return texts


def model_config(cfg: BuildConfig, tokenizer: Any) -> ModelConfig:
  return ModelConfig(
      model_type="qwen3",
      vocab_size=len(tokenizer),
      hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size,
      num_layers=cfg.num_layers,
      num_heads=cfg.num_heads,
      num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
      qk_norm=True,
      tie_embeddings=True,
      rope_theta=10000.0,
      max_position_embeddings=512,
      eos_token_id=(tokenizer.convert_tokens_to_ids("<|im_end|>"),),
      pad_token_id=tokenizer.pad_token_id,
  )


def training_batch(
    rng: random.Random,
    cfg: BuildConfig,
    tokenizer: Any,
    cache: dict[str, list[int]],
    direct_rate: float,
) -> dict[str, np.ndarray]:
  """A batch of fresh examples, padded to a multiple of LENGTH_BUCKET; targets are the
  completion and its `<|im_end|>`. Prompt and completion are tokenized apart, as at sampling."""
  im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  prompt_ids, completion_ids = [], []
  for _ in range(cfg.batch_size):
    messages, completion = example(rng, cfg, direct_rate)
    key = json.dumps(messages)
    if key not in cache:
      cache[key] = encode_chat(tokenizer, messages)
    prompt_ids.append(cache[key])
    completion_ids.append(tokenizer.encode(completion, add_special_tokens=False) + [im_end])
  longest = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
  length = -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET
  return make_sft_batch(prompt_ids, completion_ids, length, tokenizer.pad_token_id)


def pretrain(cfg: BuildConfig, model_cfg: ModelConfig, tokenizer: Any, *, log_every: int = 100):
  """Trains from random init for `cfg.steps`; returns (params, final metrics)."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.learning_rate, cfg.warmup_steps, cfg.steps, cfg.learning_rate * 0.1
  )
  optimizer = optax.chain(
      optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=cfg.weight_decay)
  )
  params = init_params(model_cfg, jax.random.PRNGKey(cfg.seed))
  opt_state = optimizer.init(params)
  step_fn = make_sft_step(model_cfg, optimizer)
  rng, cache = random.Random(cfg.seed + 1), {}
  start, window = time.perf_counter(), []
  metrics: dict[str, Any] = {}
  for step in range(1, cfg.steps + 1):
    direct_rate = cfg.direct_rate if step > cfg.steps - cfg.direct_steps else 0.0
    batch = training_batch(rng, cfg, tokenizer, cache, direct_rate)
    params, opt_state, m = step_fn(params, opt_state, batch)
    window.append(m)
    if step % log_every == 0 or step == cfg.steps:
      metrics = {k: float(np.mean([x[k] for x in jax.device_get(window)])) for k in m}
      window = []
      elapsed = time.perf_counter() - start
      rate = step / elapsed
      print(
          f"step {step}/{cfg.steps}  loss {metrics['loss']:.4f}  token acc "
          f"{metrics['accuracy']:.3f}  {rate:.2f} steps/s  elapsed {elapsed:.0f}s  "
          f"eta {(cfg.steps - step) / rate:.0f}s",
          flush=True,
      )
  return params, metrics


def build(out: str, cfg: BuildConfig = BuildConfig()) -> str:
  """Builds the base model into `out` (written atomically) and returns its path."""
  t0 = time.perf_counter()
  tokenizer = train_tokenizer(tokenizer_corpus(cfg), cfg.vocab_size)
  model_cfg = model_config(cfg, tokenizer)
  print(
      f"tokenizer: {len(tokenizer)} tokens ({time.perf_counter() - t0:.1f}s); model: "
      f"{model_cfg.num_params():,} params",
      flush=True,
  )
  params, metrics = pretrain(cfg, model_cfg, tokenizer)
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer.save_pretrained(tmp)
    info = {
        "fingerprint": cfg.fingerprint(),
        "config": dataclasses.asdict(cfg),
        "final_metrics": metrics,
        "build_seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(tmp, BUILD_INFO), "w") as f:
      json.dump(info, f, indent=2)
    save_pretrained(
        model_cfg,
        params,
        out,
        extra_files={name: os.path.join(tmp, name) for name in os.listdir(tmp)},
    )
  print(f"saved {out} ({time.perf_counter() - t0:.0f}s)", flush=True)
  return out


COMMITTED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base_model")


def _fingerprint_of(path: str) -> str | None:
  info = os.path.join(path, BUILD_INFO)
  if not os.path.exists(info):
    return None
  with open(info) as f:
    return json.load(f).get("fingerprint")


def ensure_base_model(cache_dir: str, cfg: BuildConfig = BuildConfig()) -> str:
  """The base model directory for `cfg`: the committed one (`base_model/`, built by this script
  with the default settings) when its fingerprint matches, else a cached build, made when missing.
  """
  if _fingerprint_of(COMMITTED_MODEL) == cfg.fingerprint():
    return COMMITTED_MODEL
  path = os.path.join(os.path.abspath(cache_dir), f"toy_arith-{cfg.fingerprint()}")
  if _fingerprint_of(path) is not None:
    return path
  print(
      f"Building the toy arithmetic base model into {path} (once; cached afterwards).", flush=True
  )
  return build(path, cfg)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="model directory to write")
  scalar_types = {"int": int, "float": float}
  for field in dataclasses.fields(BuildConfig):
    if field.type in scalar_types:
      parser.add_argument(f"--{field.name}", type=scalar_types[field.type], default=field.default)
  args = parser.parse_args(argv)
  overrides = {
      f.name: getattr(args, f.name)
      for f in dataclasses.fields(BuildConfig)
      if hasattr(args, f.name)
  }
  build(args.out, BuildConfig(**overrides))


if __name__ == "__main__":
  main(sys.argv[1:])
