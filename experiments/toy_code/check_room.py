"""How much room the toy program model leaves for self-play, per task type.

  python -m experiments.toy_code.check_room [--model DIR] [--samples 8]

On the demo's held-out tasks: greedy accuracy (what the demo reports), sampled accuracy, the share
of sampled answers that work the task out (non-empty <think>) and the accuracy of those vs direct
answers, and pass@k (any of k samples right). Rewarding correct answers can only raise greedy
accuracy where sampled answers are right more often than the greedy one, e.g. where worked answers
beat direct guesses (the R-Zero demo's arithmetic model) or pass@k is well above greedy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from experiments import azr_demo
from rzero_jax.azr import loop
from rzero_jax.azr.tasks import TASK_TYPES


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="", help="model directory (default: the demo's)")
  parser.add_argument("--samples", type=int, default=8)
  args = parser.parse_args(argv)
  config = azr_demo.get_config()
  config.model_path = args.model
  with tempfile.TemporaryDirectory() as tmp:
    r = loop.AZRRun(config, tmp)
    try:
      greedy = r.evaluate()
      for t in TASK_TYPES:
        tasks = r.heldout[t]
        _, out, correct, well_formed = r.solve(
            [t] * len(tasks), tasks, num_samples=args.samples, seed=5
        )
        correct = np.asarray(correct)
        worked = np.asarray([not r.decode(x).startswith("<think></think>") for x in out.tokens])

        def acc(mask):
          return f"{correct[mask].mean():.3f}" if mask.any() else "-"

        print(
            f"{t:9s} greedy {greedy[t]:.3f}  sampled {correct.mean():.3f}  worked share "
            f"{worked.mean():.2f} (acc {acc(worked)}, direct {acc(~worked)})  pass@"
            f"{args.samples} {correct.reshape(len(tasks), -1).any(axis=1).mean():.3f}  "
            f"well-formed {np.mean(well_formed):.2f}",
            flush=True,
        )
    finally:
      r.close_executor()
      r.close()


if __name__ == "__main__":
  main(sys.argv[1:])
