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

import dataclasses
import hashlib
import json
import random
import sys
from typing import Any

from experiments import toy_build
from experiments.toy_arith.tokenizer import train_tokenizer
from experiments.toy_code import data, prompts

NUM_REFERENCES = 2
INDUCTION_INPUTS = 4


@dataclasses.dataclass(frozen=True)
class BuildConfig(toy_build.BuildSettings):
  """Everything that determines the base model."""

  vocab_size: int = 640
  tokenizer_examples: int = 3000
  # letters inside quoted strings are single tokens (so 'abc'[::-1] can be traced letter by letter)
  isolate: str = "[a-zA-Z](?=[a-zA-Z]*')"
  steps: int = 1000
  batch_size: int = 48
  warmup_steps: int = 60
  # mix of example kinds: proposer (deduction/abduction, induction), solver (three types)
  mix: tuple[tuple[str, float], ...] = (
      ("propose_triplet", 0.1),
      ("propose_induction", 0.06),
      ("deduction", 0.3),
      ("abduction", 0.3),
      ("induction", 0.24),
  )

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


def build_tokenizer(cfg: BuildConfig) -> Any:
  return train_tokenizer(tokenizer_corpus(cfg), cfg.vocab_size, cfg.isolate)


# Batches padded to multiples of 32 tokens (a few compiled shapes), a log line every 50 steps.
WORLD = toy_build.ToyWorld("toy_code", "toy program", example, build_tokenizer, 32, 50)
COMMITTED_MODEL = WORLD.committed_model


def ensure_base_model(cache_dir: str, cfg: BuildConfig = BuildConfig()) -> str:
  """The committed `base_model/` when its fingerprint matches `cfg`, else a cached build."""
  return toy_build.ensure_base_model(WORLD, cache_dir, cfg)


if __name__ == "__main__":
  toy_build.main(WORLD, BuildConfig, __doc__.splitlines()[0], sys.argv[1:])
