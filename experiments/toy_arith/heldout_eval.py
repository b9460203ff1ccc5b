"""Re-measures finished demo runs' Solvers on the demo's held-out set, per iteration and level.

  python -m experiments.toy_arith.heldout_eval RUN_DIR [RUN_DIR ...] [--per_level 300] [--base]
      [--base_model DIR]

Reads each run's exported Solvers (`export/iter_<i>/solver`, written at the end of every
iteration) and prints their greedy accuracy, the loop's own held-out measurement, on
`experiments.demo`'s held-out problems (`--per_level` per level; default the demo's), and how far
each iteration moved the weights (L2 distance from the previous iteration's Solver, for iteration
1 from the base model: the committed one unless `--base_model` names the run's). It puts runs
made with an earlier, smaller held-out set on the current one. Answers are integers, so grading
is exact integer comparison of the boxed answer (as `check_room.py`). Each checkpoint is loaded
once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np

from experiments import demo
from experiments.toy_arith import data
from experiments.toy_arith.build import COMMITTED_MODEL
from experiments.toy_arith.check_room import Model, boxed_int
from rzero_jax.io import natural_key

ALL = 0  # greedy_accuracy's key for the accuracy over every level


def exported_solvers(run_dir: str) -> list[tuple[str, str]]:
  """(iteration name, Solver path) of every `export/iter_<i>/solver` in `run_dir`, in order."""
  export = os.path.join(run_dir, "export")
  names = os.listdir(export) if os.path.isdir(export) else []
  found = [
      (name, os.path.join(export, name, "solver"))
      for name in sorted(names, key=natural_key)
      if name.startswith("iter_") and os.path.isdir(os.path.join(export, name, "solver"))
  ]
  if not found:
    raise ValueError(
        f"No exported Solver in {export}/iter_<i>/solver: pass the workdir of a demo run "
        "(run with config.export_hf=True, the default)."
    )
  return found


def load_model(model_path: str) -> Model:
  """The checkpoint at `model_path` (float32) with greedy decoding settings of the loop's eval."""
  return Model(model_path, max_new_tokens=demo.get_config().eval.max_new_tokens, batch=1024)


def greedy_accuracy(model_path: str, problems: Sequence[tuple[str, int, int]]) -> dict[int, float]:
  """Greedy accuracy of the model at `model_path` per level, and over all problems (key ALL)."""
  return accuracy_of(load_model(model_path), problems)


def accuracy_of(model: Model, problems: Sequence[tuple[str, int, int]]) -> dict[int, float]:
  """`greedy_accuracy` of a loaded model."""
  texts = [t[0] for t in model.solve([q for q, _, _ in problems], 1, 0.0)]
  right = np.asarray([boxed_int(t) == answer for t, (_, answer, _) in zip(texts, problems)])
  levels = np.asarray([level for _, _, level in problems])
  per_level = {int(l): float(right[levels == l].mean()) for l in sorted(set(levels.tolist()))}
  return {**per_level, ALL: float(right.mean())}


def weight_distance(a: Any, b: Any) -> float:
  """L2 distance between two params trees of the same architecture."""
  if jax.tree.map(np.shape, a) != jax.tree.map(np.shape, b):
    raise ValueError("the two checkpoints are different architectures")
  squares = jax.tree.map(lambda x, y: float(np.sum((np.asarray(x) - np.asarray(y)) ** 2)), a, b)
  return float(np.sqrt(sum(jax.tree.leaves(squares))))


def format_row(name: str, accuracy: dict[int, float], moved: float | None = None) -> str:
  """One output line: the overall accuracy, then each level's, then `moved` when given."""
  levels = "  ".join(f"L{level} {acc:.3f}" for level, acc in accuracy.items() if level != ALL)
  return f"{name:<40} {accuracy[ALL]:.4f}  {levels}" + (
      "" if moved is None else f"  moved {moved:.3f}"
  )


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="demo workdirs (each holds export/iter_<i>/solver)")
  parser.add_argument("--per_level", type=int, default=demo.HELDOUT_PER_LEVEL)
  parser.add_argument("--base", action="store_true", help="also measure the base model")
  parser.add_argument(
      "--base_model", default=COMMITTED_MODEL, help="the runs' base model (default: the committed)"
  )
  args = parser.parse_args(argv)
  if args.per_level < 1:
    parser.error(f"--per_level must be at least 1; got {args.per_level}.")
  try:
    solvers = [(run, exported_solvers(run)) for run in args.runs]
    problems = data.heldout_set(args.per_level)
  except ValueError as e:
    parser.error(str(e))
  print(
      f"greedy accuracy on {len(problems)} held-out problems ({args.per_level} per level); "
      "moved: L2 distance of the weights from the previous iteration's"
  )
  base = load_model(args.base_model)
  if args.base:
    print(format_row("base", accuracy_of(base, problems)), flush=True)
  for run, iterations in solvers:
    previous = base
    for name, path in iterations:
      model = load_model(path)
      try:
        moved = weight_distance(previous.params, model.params)
      except ValueError:
        parser.error(
            f"{path} and the Solver before it have different architectures: pass the run's own "
            "base model with --base_model."
        )
      print(format_row(f"{run} {name}", accuracy_of(model, problems), moved), flush=True)
      previous = model


if __name__ == "__main__":
  main(sys.argv[1:])
