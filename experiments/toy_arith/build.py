"""Builds the toy arithmetic base model: data, tokenizer, a small Qwen3 pretrained from scratch.

  python -m experiments.toy_arith.build --out DIR [--steps N]

The result is a Hugging Face model directory (config.json, model.safetensors, tokenizer files,
`toy_arith_build.json` with the build settings) that `rzero_jax.models.load_pretrained` and
`load_tokenizer` read. Everything derives from `BuildConfig.seed`, so a build is reproducible.
`ensure_base_model(cache_dir)` builds once and reuses the cached directory afterwards; the cache
key covers the build settings and the R-Zero prompt texts, so changing either rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from typing import Any

from experiments import toy_build
from experiments.toy_arith import data
from experiments.toy_arith.tokenizer import train_tokenizer
from rzero_jax.rzero import prompts


@dataclasses.dataclass(frozen=True)
class BuildConfig(toy_build.BuildSettings):
  """Everything that determines the base model.

  The model first learns to work problems out step by step; over the last `direct_steps` steps
  its Solver text answers directly (`\\boxed{}` only) with probability `direct_rate`, and steps
  slip now and then (`data.digit_slip`). It ends with a habit of guessing in one shot (its greedy
  first move), which only works on one-step problems, while its sampled answers that work it out
  agree with each other: the majority vote is right more often than the model's first move, so
  training on the vote can teach it to show its work.
  """

  tokenizer_problems: int = 4000
  challenger_fraction: float = 0.2
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


def build_tokenizer(cfg: BuildConfig) -> Any:
  return train_tokenizer(tokenizer_corpus(cfg), cfg.vocab_size)


# Batches padded to multiples of 16 tokens (a few compiled shapes), a log line every 100 steps.
WORLD = toy_build.ToyWorld("toy_arith", "toy arithmetic", example, build_tokenizer, 16, 100)
COMMITTED_MODEL = WORLD.committed_model


def ensure_base_model(cache_dir: str, cfg: BuildConfig = BuildConfig()) -> str:
  """The base model directory for `cfg`: the committed one (`base_model/`, built by this script
  with the default settings) when its fingerprint matches, else a cached build, made when missing.
  """
  return toy_build.ensure_base_model(WORLD, cache_dir, cfg)


if __name__ == "__main__":
  toy_build.main(WORLD, BuildConfig, __doc__.splitlines()[0], sys.argv[1:])
