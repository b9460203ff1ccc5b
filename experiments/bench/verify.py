"""Throughput of the host-side verification module on this machine.

  python -m experiments.bench.verify                 # everything, default sizes
  python -m experiments.bench.verify --json out.json

Reports (pools are started and warmed before timing):
  grading     items/s of `answers.grade` on a mix of responses: 80% plain numbers (decided in
              this process) and 20% symbolic answers (graded by the worker pool); the
              symbolic-only rate is reported separately.
  voting      questions/s of `voting.majority_votes` with 10 answers per question.
  executor    programs/s of `Executor.run_many` (one sandbox server per core) on short benign
              programs, and of `Executor.validate_many` (one run per hash seed: three per program).
  repetition  seconds for `repetition_penalty` on 2048 questions (best of 3).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from rzero_jax.verify import answers, repetition, voting
from rzero_jax.verify.executor import Executor


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--items", type=int, default=2000, help="graded responses")
  parser.add_argument("--questions", type=int, default=256, help="voted questions")
  parser.add_argument("--programs", type=int, default=1000, help="executed programs")
  parser.add_argument(
      "--workers",
      type=int,
      default=os.cpu_count() or 1,
      help="grading processes and sandbox servers",
  )
  parser.add_argument("--json", default=None, help="also write the numbers to this file")
  return parser.parse_args()


def numeric_item(rng: random.Random) -> tuple[str, str]:
  a, b = rng.randint(1, 999), rng.randint(2, 60)
  gold = rng.choice([str(a), f"\\frac{{{a}}}{{{b}}}", f"{a / 8:g}"])
  pred = rng.choice([gold, str(a + rng.randint(1, 3)), f"{a:,}", f"{a}.0", f"{a}/{b}"])
  return f"Let me compute. ... so the answer is \\boxed{{{pred}}}.", gold


def symbolic_item(rng: random.Random) -> tuple[str, str]:
  a, b = rng.randint(1, 9), rng.randint(1, 9)
  gold = f"x^2+{2 * a * b}x+{b * b}" if a == 1 else f"{a * a}x^2+{2 * a * b}x+{b * b}"
  pred = rng.choice(
      [
          f"({a}x+{b})^2",
          f"({a}x+{b + 1})^2",
          f"{b * b}+{2 * a * b}x+{a * a}x^2",
          f"\\left({a}x+{b}\\right)^{{2}}",
          f"[{a},{b}]",
      ]
  )
  return f"Expanding, \\boxed{{{pred}}}", gold


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench_grading(rng: random.Random, n: int) -> dict:
  answers.grade([symbolic_item(rng)[0]], ["x"])  # start and warm the pool
  items = [symbolic_item(rng) if rng.random() < 0.2 else numeric_item(rng) for _ in range(n)]
  symbolic = [symbolic_item(rng) for _ in range(n // 5)]
  mixed_s = timed(lambda: answers.grade([r for r, _ in items], [g for _, g in items]))
  symbolic_s = timed(lambda: answers.grade([r for r, _ in symbolic], [g for _, g in symbolic]))
  return {
      "grading_items_per_s": n / mixed_s,
      "grading_symbolic_items_per_s": len(symbolic) / symbolic_s,
  }


def bench_voting(rng: random.Random, n: int) -> dict:
  def answer_list():
    truth = rng.randint(1, 50)
    pool = [
        str(truth),
        f"{truth}.0",
        f"\\frac{{{2 * truth}}}{{2}}",
        str(truth + 1),
        None,
        f"({truth}x+1)^2",
        f"{truth * truth}x^2+{2 * truth}x+1",
    ]
    return [rng.choice(pool) for _ in range(10)]

  lists = [answer_list() for _ in range(n)]
  seconds = timed(lambda: voting.majority_votes(lists))
  return {"voting_questions_per_s": n / seconds}


def bench_executor(rng: random.Random, n: int, workers: int) -> dict:
  programs = [
      "def f(n):\n  return sum(i * i for i in range(n))",
      "def f(s):\n  return ''.join(sorted(s))[::-1]",
      "from collections import Counter\ndef f(xs):\n  return Counter(xs).most_common(1)",
      "def f(n):\n  a, b = 0, 1\n  for _ in range(n):\n    a, b = b, a + b\n  return a",
  ]
  inputs = [
      lambda: str(rng.randint(1, 500)),
      lambda: repr("".join(rng.sample("abcdefgh", 5))),
      lambda: repr([rng.randint(0, 3) for _ in range(8)]),
      lambda: str(rng.randint(1, 90)),
  ]
  jobs = [(programs[k], inputs[k]()) for k in (rng.randrange(4) for _ in range(n))]
  with Executor(workers=workers) as executor:
    executor.run_many(jobs[: workers * 4])
    run_s = timed(lambda: executor.run_many(jobs))
    validate_s = timed(lambda: executor.validate_many(jobs[: n // 2]))
    isolation = executor.isolation
  return {
      "executor_programs_per_s": n / run_s,
      "executor_validated_per_s": (n // 2) / validate_s,
      "executor_isolation": isolation,
  }


def bench_repetition(rng: random.Random) -> dict:
  words = (
      "Express your answer as a common fraction in simplest form round to the nearest tenth "
      "prime digits circle radius angle triangle sequence sum product"
  ).split()
  templates = [
      "What is the value of {a} times {b} plus {c} ?",
      "Find all real x such that x^2 + {a}x + {b} = 0 .",
      "Let f(x) = {a}x^3 - {b}x + {c} . Compute f({a}) .",
      "How many positive integers less than {a} are divisible by {b} or {c} ?",
  ]
  questions = [
      rng.choice(templates).format(a=rng.randint(1, 99), b=rng.randint(1, 99), c=rng.randint(1, 99))
      + " "
      + " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
      for _ in range(2048)
  ]
  best = min(timed(lambda: repetition.repetition_penalty(questions)) for _ in range(3))
  return {"repetition_penalty_2048_s": best}


def main() -> None:
  args = parse_args()
  rng = random.Random(0)
  answers.grading_pool(args.workers).wait_ready()
  results = {"cpu_count": os.cpu_count(), "workers": args.workers}
  results.update(bench_grading(rng, args.items))
  results.update(bench_voting(rng, args.questions))
  results.update(bench_executor(rng, args.programs, args.workers))
  results.update(bench_repetition(rng))
  for key, value in results.items():
    print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
