"""The base-model build both toy worlds share (`experiments/toy_arith/build.py`,
`experiments/toy_code/build.py`): a small Qwen3 pretrained from scratch on SFT batches of a world's
synthetic examples, written as a Hugging Face directory (config.json, model.safetensors, tokenizer
files and `<name>_build.json` with the build settings), and reused while its fingerprint matches.

A world's `BuildConfig` extends `BuildSettings` with its own settings and a `fingerprint()` of
everything its model depends on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np

from rzero_jax.models import ModelConfig, encode_chat, init_params, save_pretrained
from rzero_jax.training import TrainConfig, init_train_state
from rzero_jax.training.sft import make_sft_batch, make_sft_step

Example = tuple[list[dict[str, str]], str]  # (prompt messages, assistant completion)


@dataclasses.dataclass(frozen=True)
class BuildSettings:
  """The settings every toy world's build has (a world may change the defaults)."""

  seed: int = 0
  vocab_size: int = 512
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
  # Examples are drawn with `direct_rate` (the share of the Solver's direct answers) over the last
  # `direct_steps` steps, with 0 before.
  direct_rate: float = 0.6
  direct_steps: int = 200


@dataclasses.dataclass(frozen=True)
class ToyWorld:
  """What a toy world's build supplies."""

  name: str  # the world's folder under experiments/; names the build-info file and the cache
  title: str  # for the build message
  example: Callable[[random.Random, Any, float], Example]  # (rng, BuildConfig, direct_rate)
  tokenizer: Callable[[Any], Any]  # BuildConfig -> trained tokenizer
  length_bucket: int  # batches are padded to a multiple of this (a few compiled shapes)
  log_every: int

  @property
  def build_info(self) -> str:
    return f"{self.name}_build.json"

  @property
  def committed_model(self) -> str:
    """experiments/<name>/base_model: the build with the default settings, committed."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), self.name, "base_model")


def model_config(cfg: BuildSettings, tokenizer: Any) -> ModelConfig:
  """The Qwen3 of `cfg`'s dims over `tokenizer`'s vocabulary (tied embeddings, qk-norm)."""
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
    world: ToyWorld,
    rng: random.Random,
    cfg: Any,
    tokenizer: Any,
    cache: dict[str, list[int]],
    direct_rate: float,
) -> dict[str, np.ndarray]:
  """A batch of fresh examples, padded to a multiple of the world's length bucket; targets are the
  completion and its `<|im_end|>`. Prompt and completion are tokenized apart, as at sampling;
  `cache` keeps the prompts' ids."""
  im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  prompt_ids, completion_ids = [], []
  for _ in range(cfg.batch_size):
    messages, completion = world.example(rng, cfg, direct_rate)
    key = json.dumps(messages)
    if key not in cache:
      cache[key] = encode_chat(tokenizer, messages)
    prompt_ids.append(cache[key])
    completion_ids.append(tokenizer.encode(completion, add_special_tokens=False) + [im_end])
  longest = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
  length = -(-longest // world.length_bucket) * world.length_bucket
  return make_sft_batch(prompt_ids, completion_ids, length, tokenizer.pad_token_id)


def pretrain(world: ToyWorld, cfg: Any, model_cfg: ModelConfig, tokenizer: Any):
  """Trains from random init for `cfg.steps`; returns (params, the last log window's metrics)."""
  # Clipping at 1.0, AdamW, linear warmup, then cosine decay to a tenth.
  train_cfg = TrainConfig(
      learning_rate=cfg.learning_rate,
      weight_decay=cfg.weight_decay,
      warmup_steps=cfg.warmup_steps,
      schedule="cosine",
      total_steps=cfg.steps,
      min_lr_ratio=0.1,
  )
  state = init_train_state(
      model_cfg, train_cfg, init_params(model_cfg, jax.random.PRNGKey(cfg.seed)), donate=True
  )
  step_fn = make_sft_step(model_cfg, train_cfg)
  rng, cache = random.Random(cfg.seed + 1), {}
  start, window = time.perf_counter(), []
  metrics: dict[str, Any] = {}
  for step in range(1, cfg.steps + 1):
    direct_rate = cfg.direct_rate if step > cfg.steps - cfg.direct_steps else 0.0
    batch = training_batch(world, rng, cfg, tokenizer, cache, direct_rate)
    state, m = step_fn(state, batch)
    window.append(m)
    if step % world.log_every == 0 or step == cfg.steps:
      metrics = {
          k: float(np.mean([x[k] for x in jax.device_get(window)]))
          for k in m
          if k != "learning_rate"
      }
      window = []
      elapsed = time.perf_counter() - start
      rate = step / elapsed
      print(
          f"step {step}/{cfg.steps}  loss {metrics['loss']:.4f}  token acc "
          f"{metrics['accuracy']:.3f}  {rate:.2f} steps/s  elapsed {elapsed:.0f}s  "
          f"eta {(cfg.steps - step) / rate:.0f}s",
          flush=True,
      )
  return state.params, metrics


def build(world: ToyWorld, out: str, cfg: Any) -> str:
  """Builds the world's base model for `cfg` into `out` (written atomically); returns its path."""
  t0 = time.perf_counter()
  tokenizer = world.tokenizer(cfg)
  model_cfg = model_config(cfg, tokenizer)
  print(
      f"tokenizer: {len(tokenizer)} tokens ({time.perf_counter() - t0:.1f}s); model: "
      f"{model_cfg.num_params():,} params",
      flush=True,
  )
  params, metrics = pretrain(world, cfg, model_cfg, tokenizer)
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer.save_pretrained(tmp)
    info = {
        "fingerprint": cfg.fingerprint(),
        "config": dataclasses.asdict(cfg),
        "final_metrics": metrics,
        "build_seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(tmp, world.build_info), "w") as f:
      json.dump(info, f, indent=2)
    save_pretrained(
        model_cfg,
        params,
        out,
        extra_files={name: os.path.join(tmp, name) for name in os.listdir(tmp)},
    )
  print(f"saved {out} ({time.perf_counter() - t0:.0f}s)", flush=True)
  return out


def fingerprint_of(world: ToyWorld, path: str) -> str | None:
  """The fingerprint of the build in `path`, None when there is none."""
  info = os.path.join(path, world.build_info)
  if not os.path.exists(info):
    return None
  with open(info) as f:
    return json.load(f).get("fingerprint")


def ensure_base_model(world: ToyWorld, cache_dir: str, cfg: Any) -> str:
  """The base model directory for `cfg`: the committed one when its fingerprint matches, else a
  build cached under `cache_dir`, made when missing."""
  if fingerprint_of(world, world.committed_model) == cfg.fingerprint():
    return world.committed_model
  path = os.path.join(os.path.abspath(cache_dir), f"{world.name}-{cfg.fingerprint()}")
  if fingerprint_of(world, path) is not None:
    return path
  print(f"Building the {world.title} base model into {path} (once; cached afterwards).", flush=True)
  return build(world, path, cfg)


def main(world: ToyWorld, config_class: type, description: str, argv: list[str]) -> None:
  """`--out DIR` and a flag per int/float field of `config_class`: builds into DIR."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--out", required=True, help="model directory to write")
  scalar_types = {"int": int, "float": float}
  for field in dataclasses.fields(config_class):
    if field.type in scalar_types:
      parser.add_argument(f"--{field.name}", type=scalar_types[field.type], default=field.default)
  args = parser.parse_args(argv)
  overrides = {
      f.name: getattr(args, f.name)
      for f in dataclasses.fields(config_class)
      if hasattr(args, f.name)
  }
  build(world, args.out, config_class(**overrides))
