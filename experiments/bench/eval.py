"""Evaluation throughput (items/s) of `rzero_jax.eval.evaluate` on the committed toy model.

  python -m experiments.bench.eval                     # toy arithmetic items, gsm8k layout
  python -m experiments.bench.eval --items 128 --max_new_tokens 64 --json out.json
  python -m experiments.bench.eval --data_dir ../shared/data/benchmarks --benchmarks gsm8k,mbppplus

Reports, after one warm-up pass that compiles every shape:
  end to end    items/s of `evaluate` (prompting, batched greedy generation, decoding, scoring)
  scoring only  items/s of `score_many` on the responses just generated
  scorers       items/s of `score_many` per benchmark kind on gold-style responses (the fixture
                files in tests/eval/data, repeated to --items)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(REPO, "experiments", "toy_arith", "base_model")
FIXTURES = os.path.join(REPO, "tests", "eval", "data")


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--model", default=TOY, help="HF checkpoint directory")
  parser.add_argument("--items", type=int, default=64, help="items per benchmark")
  parser.add_argument("--batch_size", type=int, default=32, help="rows in flight")
  parser.add_argument("--max_new_tokens", type=int, default=48)
  parser.add_argument("--benchmarks", default="gsm8k", help="comma-separated names")
  parser.add_argument(
      "--data_dir",
      default=None,
      help="benchmark files; default: toy arithmetic items written to a temp dir",
  )
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--json", default=None, help="also write the numbers to this file")
  return parser.parse_args()


def toy_items(directory: str, n: int) -> None:
  """n toy arithmetic questions in GSM8K's layout (the toy model can answer these)."""
  sys.path.insert(0, REPO)
  from experiments.toy_arith import data

  rng = random.Random(0)
  with open(os.path.join(directory, "gsm8k.jsonl"), "w") as f:
    for i in range(n):
      question, answer = data.make_problem(rng, 1 + i % 4)
      f.write(json.dumps({"question": question, "answer": f"#### {answer}", "idx": i}) + "\n")


def toy_messages(name: str, item: dict) -> list[dict]:
  from rzero_jax.eval.prompts import messages
  from rzero_jax.rzero.prompts import SOLVER_SYSTEM

  if name != "gsm8k":
    return messages(name, item)
  return [
      {"role": "system", "content": SOLVER_SYSTEM},
      {"role": "user", "content": item["question"]},
  ]


def scorer_rates(n: int) -> dict[str, float]:
  from rzero_jax.eval import load_benchmark, score_many

  cases = {
      "math (gsm8k)": ("gsm8k", lambda it: f"so \\boxed{{{it['answer']}}}"),
      "choice (mmlu_pro)": ("mmlu_pro", lambda it: f"\\boxed{{{it['answer']}}}"),
      "bbeh": ("bbeh", lambda it: f"The answer is {it['answer']}"),
      "code (humaneval_plus)": (
          "humaneval_plus",
          lambda it: "```python\n" + it["prompt"] + it["canonical_solution"] + "```",
      ),
      "cruxeval_o": (
          "cruxeval_o",
          lambda it: f"```python\nassert f({it['input']}) == " f"{it['output']}\n```",
      ),
  }
  rates = {}
  for label, (name, respond) in cases.items():
    base = load_benchmark(name, FIXTURES)
    items = [dict(base[i % len(base)], id=f"{base[i % len(base)]['id']}#{i}") for i in range(n)]
    responses = [respond(it) for it in items]
    score_many(name, items[:2], responses[:2])  # start the pools
    t0 = time.perf_counter()
    scores = score_many(name, items, responses)
    rates[label] = n / (time.perf_counter() - t0)
    assert min(scores) == 1.0, (label, scores)
  return rates


def main() -> None:
  args = parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from rzero_jax.eval import evaluate, load_benchmark, score_many
  from rzero_jax.models import load_pretrained, load_tokenizer

  tokenizer = load_tokenizer(args.model)
  cfg, params = load_pretrained(args.model, dtype=args.dtype)
  names = args.benchmarks.split(",")
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    if args.data_dir is None:
      toy_items(tmp, args.items)
    kwargs = dict(
        data_dir=data_dir,
        limit=args.items,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        messages_fn=toy_messages,
    )
    evaluate(cfg, params, tokenizer, names, **kwargs)  # warm-up: compile every shape
    result = evaluate(cfg, params, tokenizer, names, **kwargs)
    t0 = time.perf_counter()
    for name, records in result["records"].items():
      score_many(
          name, load_benchmark(name, data_dir)[: args.items], [r["response"] for r in records]
      )
    scoring_s = time.perf_counter() - t0
  items = sum(e["items"] for e in result["benchmarks"].values())
  numbers = {
      "device": __import__("jax").devices()[0].platform,
      "items": items,
      "end_to_end_items_per_s": result["items_per_s"],
      "scoring_only_items_per_s": items / max(scoring_s, 1e-9),
      "scores": {n: e["score"] for n, e in result["benchmarks"].items()},
      "scorer_items_per_s": scorer_rates(args.items),
  }
  print(
      f"end to end   {numbers['end_to_end_items_per_s']:8.2f} items/s  "
      f"({items} items, max_new_tokens={args.max_new_tokens}, batch {args.batch_size}, "
      f"{numbers['device']})"
  )
  print(f"scoring only {numbers['scoring_only_items_per_s']:8.2f} items/s")
  for label, rate in numbers["scorer_items_per_s"].items():
    print(f"  {label:<22} {rate:8.1f} items/s")
  print("scores:", {k: round(v, 3) for k, v in numbers["scores"].items()})
  if args.json:
    with open(args.json, "w") as f:
      json.dump(numbers, f, indent=2)


if __name__ == "__main__":
  main()
