"""Builds the toy program-world base model for the Absolute Zero demo (no downloads).

  python -m experiments.toy_code.build --out DIR [--steps N]

A small Qwen3 pretrained from scratch on synthetic proposer and solver text of
`experiments.toy_code.data` in the prompts of `experiments.toy_code.prompts`, with the toy
arithmetic world's tokenizer recipe (BPE, single-digit tokens, Qwen chat template) plus
single-letter tokens inside quoted strings (`BuildConfig.isolate`), so that string steps can be
traced letter by letter. Solver texts are worked out step by step early in training and mostly
direct guesses over the last `direct_steps` (see `data`): the model ends up guessing greedily,
while its sampled worked answers are right more often than its guesses (`check_room.py`), the room
that self-play can use. `ensure_base_model(cache_dir)` returns the committed `base_model/` when its
fingerprint matches the settings, else builds once into the cache.
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

from experiments.toy_arith.build import model_config
from experiments.toy_arith.tokenizer import train_tokenizer
from experiments.toy_code import data, prompts
from rzero_jax.models import encode_chat, init_params, save_pretrained
from rzero_jax.training.sft import make_sft_batch, make_sft_step

BUILD_INFO = "toy_code_build.json"
LENGTH_BUCKET = 32
NUM_REFERENCES = 2
INDUCTION_INPUTS = 4


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """Everything that determines the base model."""

  seed: int = 0
  vocab_size: int = 640
  tokenizer_examples: int = 3000
  hidden_size: int = 128
  intermediate_size: int = 384
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  # letters inside quoted strings are single tokens (so 'abc'[::-1] can be traced letter by letter)
  isolate: str = "[a-zA-Z](?=[a-zA-Z]*')"
  steps: int = 1000
  batch_size: int = 48
  learning_rate: float = 3e-3
  warmup_steps: int = 60
  weight_decay: float = 0.01
  # mix of example kinds: proposer (deduction/abduction, induction), solver (three types)
  mix: tuple[tuple[str, float], ...] = (
      ("propose_triplet", 0.1),
      ("propose_induction", 0.06),
      ("deduction", 0.3),
      ("abduction", 0.3),
      ("induction", 0.24),
  )
  direct_rate: float = 0.6
  direct_steps: int = 200

  def fingerprint(self) -> str:
    probe = data.Program("int", ((0, 3),))
    t = data.triplet(probe, 5)
    text = json.dumps(
        [
            dataclasses.asdict(self),
            prompts.proposer_messages("deduction", [t]),
            prompts.solver_messages("abduction", t),
            data.deduction_text(probe, 5, True),
            data.abduction_text(probe, 5, True),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def example(
    rng: random.Random, cfg: BuildConfig, direct_rate: float
) -> tuple[list[dict[str, str]], str]:
  """One (prompt messages, completion) of the training partition."""
  kinds, weights = zip(*cfg.mix)
  kind = rng.choices(kinds, weights)[0]
  program = data.sample_program(rng)
  value = data.random_input(rng, program.arg_type)
  if kind == "propose_triplet":
    task_type = rng.choice(("deduction", "abduction"))
    refs = [
        data.triplet(p, data.random_input(rng, p.arg_type))
        for p in (data.sample_program(rng) for _ in range(rng.randint(1, NUM_REFERENCES)))
    ]
    return prompts.proposer_messages(task_type, refs), data.propose_text(program, value)
  if kind == "propose_induction":
    values = data.distinct_inputs(rng, program, INDUCTION_INPUTS)
    return (
        prompts.proposer_messages("induction", program=program.text, num_inputs=INDUCTION_INPUTS),
        data.induction_propose_text(program, values),
    )
  if kind == "induction":
    task = data.induction_task(rng, program, INDUCTION_INPUTS)
    return prompts.solver_messages("induction", task), data.induction_text(program)
  worked = rng.random() >= direct_rate
  task = data.triplet(program, value)
  if kind == "deduction":
    return prompts.solver_messages("deduction", task), data.deduction_text(program, value, worked)
  return prompts.solver_messages("abduction", task), data.abduction_text(program, value, worked)


def tokenizer_corpus(cfg: BuildConfig) -> list[str]:
  rng = random.Random(cfg.seed)
  texts = ["assistant\n", "user\n"]
  for _ in range(cfg.tokenizer_examples):
    messages, completion = example(rng, cfg, 0.3)
    texts += [f"{m['role']}\n{m['content']}" for m in messages] + [completion]
  return texts


def training_batch(
    rng: random.Random, cfg: BuildConfig, tokenizer: Any, direct_rate: float
) -> dict[str, np.ndarray]:
  im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  prompt_ids, completion_ids = [], []
  for _ in range(cfg.batch_size):
    messages, completion = example(rng, cfg, direct_rate)
    prompt_ids.append(encode_chat(tokenizer, messages))
    completion_ids.append(tokenizer.encode(completion, add_special_tokens=False) + [im_end])
  longest = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
  length = -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET
  return make_sft_batch(prompt_ids, completion_ids, length, tokenizer.pad_token_id)


def pretrain(cfg: BuildConfig, model_cfg: Any, tokenizer: Any, *, log_every: int = 50):
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.learning_rate, cfg.warmup_steps, cfg.steps, cfg.learning_rate * 0.1
  )
  optimizer = optax.chain(
      optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=cfg.weight_decay)
  )
  params = init_params(model_cfg, jax.random.PRNGKey(cfg.seed))
  opt_state = optimizer.init(params)
  step_fn = make_sft_step(model_cfg, optimizer)
  rng = random.Random(cfg.seed + 1)
  start, window, metrics = time.perf_counter(), [], {}
  for step in range(1, cfg.steps + 1):
    direct_rate = cfg.direct_rate if step > cfg.steps - cfg.direct_steps else 0.0
    params, opt_state, m = step_fn(
        params, opt_state, training_batch(rng, cfg, tokenizer, direct_rate)
    )
    window.append(m)
    if step % log_every == 0 or step == cfg.steps:
      metrics = {k: float(np.mean([x[k] for x in jax.device_get(window)])) for k in m}
      window = []
      elapsed = time.perf_counter() - start
      print(
          f"step {step}/{cfg.steps}  loss {metrics['loss']:.4f}  token acc "
          f"{metrics['accuracy']:.3f}  elapsed {elapsed:.0f}s  "
          f"eta {(cfg.steps - step) * elapsed / step:.0f}s",
          flush=True,
      )
  return params, metrics


def build(out: str, cfg: BuildConfig = BuildConfig()) -> str:
  """Builds the base model into `out` and returns its path."""
  t0 = time.perf_counter()
  tokenizer = train_tokenizer(tokenizer_corpus(cfg), cfg.vocab_size, cfg.isolate)
  model_cfg = model_config(cfg, tokenizer)
  print(f"tokenizer: {len(tokenizer)} tokens; model: {model_cfg.num_params():,} params", flush=True)
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
  """The committed `base_model/` when its fingerprint matches `cfg`, else a cached build."""
  if _fingerprint_of(COMMITTED_MODEL) == cfg.fingerprint():
    return COMMITTED_MODEL
  path = os.path.join(os.path.abspath(cache_dir), f"toy_code-{cfg.fingerprint()}")
  if _fingerprint_of(path) is not None:
    return path
  print(f"Building the toy program base model into {path} (once; cached afterwards).", flush=True)
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
