"""Measures how much room the toy base model leaves for R-Zero.

  python -m experiments.toy_arith.check_room --model DIR [--per_level 20] [--levels 1,2,3]

1. Solver, per difficulty level on held-out problems: greedy accuracy, temperature-1 accuracy
   (mean over `votes` samples), majority-of-`votes` accuracy, the share of problems whose p_hat
   lies in the R-Zero band (|p_hat - 1/2| <= 1/4), and how often the greedy / sampled answers
   skip the working (answer with `\\boxed{}` at once).
2. Challenger: format rate, operand-count histogram, and the Solver's p_hat on its questions:
   how many a dataset pass keeps, and how often the kept pseudo-labels are true.
All answers are integers, so grading here is exact integer comparison of the boxed answer.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from typing import Sequence

import numpy as np

from experiments.toy_arith import data
from rzero_jax.models import encode_chat, load_pretrained, load_tokenizer, stop_token_ids
from rzero_jax.rzero import prompts
from rzero_jax.rzero.config import default_config
from rzero_jax.rzero.dataset import in_band
from rzero_jax.sampling import generate
from rzero_jax.verify.answers import extract_boxed

DELTA = default_config().dataset.delta  # the band the R-Zero loop keeps


def boxed_int(text: str) -> int | None:
  """The integer in the last `\\boxed{}`, or None."""
  answer = extract_boxed(text)
  try:
    return int(answer) if answer is not None else None
  except ValueError:
    return None


class Model:
  """A loaded model + tokenizer with batched Solver / Challenger sampling."""

  def __init__(self, path: str, max_new_tokens: int = 64, batch: int = 512):
    self.cfg, self.params = load_pretrained(path, dtype="float32")
    self.tok = load_tokenizer(path)
    self.stops = stop_token_ids(self.tok, self.cfg.eos_token_id)
    self.max_new_tokens, self.batch = max_new_tokens, batch

  def sample(
      self, prompt_ids: list[list[int]], num_samples: int, temperature: float, seed: int
  ) -> list[str]:
    per_call = max(1, self.batch // num_samples)
    texts = []
    for k in range(0, len(prompt_ids), per_call):
      out = generate(
          self.cfg,
          self.params,
          prompt_ids[k : k + per_call],
          max_new_tokens=self.max_new_tokens,
          temperature=temperature,
          num_samples=num_samples,
          stop_token_ids=self.stops,
          seed=seed + k,
      )
      texts += [self.tok.decode(t, skip_special_tokens=True) for t in out.tokens]
    return texts

  def solver_prompt(self, question: str) -> list[int]:
    return encode_chat(self.tok, prompts.solver_messages(question))

  def solve(
      self, questions: Sequence[str], num_samples: int, temperature: float, seed: int = 0
  ) -> list[list[str]]:
    """Solver completions, `num_samples` per question."""
    texts = self.sample([self.solver_prompt(q) for q in questions], num_samples, temperature, seed)
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(questions))]


def is_direct(text: str) -> bool:
  """Whether a Solver completion answers without working (starts with the box)."""
  return text.lstrip().startswith("\\boxed")


def vote(answers: Sequence[int | None]) -> tuple[int | None, float]:
  """Majority answer and p_hat (abstentions count in the denominator)."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None, 0.0
  label, n = counts.most_common(1)[0]
  return label, n / len(answers)


COLUMNS = ("greedy", "sampled", "majority", "in_band", "direct_greedy", "direct_sampled")


def solver_report(
    model: Model, problems: Sequence[tuple[str, int, int]], votes: int, seed: int = 0
) -> dict[int, dict[str, float]]:
  """Per level (0 = all): greedy, sampled (mean) and majority-of-votes accuracy, the share of
  problems in the p_hat band, and how often greedy / sampled answers skip the working."""
  questions = [q for q, _, _ in problems]
  greedy = [t[0] for t in model.solve(questions, 1, 0.0)]
  sampled = model.solve(questions, votes, 1.0, seed)
  rows: dict[int, list] = collections.defaultdict(list)
  for (q, truth, level), g, texts in zip(problems, greedy, sampled):
    answers = [boxed_int(t) for t in texts]
    label, p_hat = vote(answers)
    row = (
        boxed_int(g) == truth,
        np.mean([a == truth for a in answers]),
        label == truth,
        in_band(p_hat, DELTA),
        is_direct(g),
        np.mean([is_direct(t) for t in texts]),
    )
    rows[level].append(row)
    rows[0].append(row)
  return {
      level: dict(zip(COLUMNS, np.mean(np.asarray(r, dtype=float), axis=0)))
      for level, r in sorted(rows.items(), key=lambda kv: (kv[0] == 0, kv[0]))
  }


def print_solver_report(title: str, report: dict[int, dict[str, float]]) -> None:
  print(f"\n{title}\nlevel  " + "  ".join(COLUMNS))
  for level, r in report.items():
    name = "all" if level == 0 else str(level)
    print(f"{name:>5}  " + "  ".join(f"{r[c]:>{len(c)}.3f}" for c in COLUMNS))


def challenger_report(model: Model, count: int, votes: int, seed: int) -> None:
  """Samples `count` Challenger questions, votes on each; prints format rate, shape histogram,
  p_hat histogram, kept share and pseudo-label accuracy."""
  prompt = encode_chat(model.tok, prompts.challenger_messages())
  texts = model.sample([prompt], count, 1.0, seed)
  questions = [prompts.parse_question(t) for t in texts]
  valid = [q for q in questions if q is not None and data.true_answer(q) is not None]
  unique = list(dict.fromkeys(valid))
  shapes = collections.Counter(
      len(data.expression_of(q).replace("(", " ").replace(")", " ").split()) // 2 + 1 for q in valid
  )
  print(
      f"\nChallenger: {count} samples, well-formed {len(valid) / count:.3f} "
      f"(tags {sum(q is not None for q in questions) / count:.3f}), unique "
      f"{len(unique)}, held-out partition share "
      f"{np.mean([data.is_heldout(q) for q in unique]):.3f}"
  )
  print("  operands histogram:", dict(sorted(shapes.items())))
  sampled = model.solve(unique, votes, 1.0, seed + 1)
  records = []
  for q, texts in zip(unique, sampled):
    answers = [boxed_int(t) for t in texts]
    label, p_hat = vote(answers)
    records.append(
        dict(question=q, label=label, p_hat=p_hat, answers=answers, truth=data.true_answer(q))
    )
  hist = collections.Counter(round(r["p_hat"] * votes) for r in records)
  kept = [r for r in records if r["label"] is not None and in_band(r["p_hat"], DELTA)]
  print(f"  p_hat histogram (agreeing votes of {votes}: questions):", dict(sorted(hist.items())))
  print(
      f"  kept {len(kept)}/{len(records)}; pseudo-label accuracy of kept "
      f"{np.mean([r['label'] == r['truth'] for r in kept]) if kept else float('nan'):.3f}; "
      f"all questions majority accuracy "
      f"{np.mean([r['label'] == r['truth'] for r in records]):.3f}"
  )


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True)
  parser.add_argument("--per_level", type=int, default=20)
  parser.add_argument("--levels", default="1,2,3,4,5,6")
  parser.add_argument("--votes", type=int, default=10)
  parser.add_argument("--challenger_samples", type=int, default=400)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  model = Model(args.model)
  levels = tuple(int(x) for x in args.levels.split(","))
  problems = data.heldout_set(args.per_level, levels)
  base = solver_report(model, problems, args.votes, args.seed)
  print_solver_report(
      f"Solver on held-out problems ({args.per_level} per level, " f"{args.votes} samples at T=1)",
      base,
  )
  print(f"[{time.perf_counter() - t0:.0f}s]")
  if args.challenger_samples > 0:  # 0 skips the Challenger report
    challenger_report(model, args.challenger_samples, args.votes, args.seed + 7)
    print(f"[{time.perf_counter() - t0:.0f}s]")


if __name__ == "__main__":
  main(sys.argv[1:])
