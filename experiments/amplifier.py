"""Self-play as a pre-training step: SFT from the base model vs from the R-Zero Solver.

  python -m experiments.amplifier --rzero_workdir=runs/demo --out=runs/amplifier [--seeds=0,1,2]

On the toy-arithmetic world: one labeled set (worked solutions from `experiments/toy_arith/data.py`
for training-partition problems, disjoint from the held-out set), and the same supervised
fine-tuning (`python -m rzero_jax.sft`, same steps and settings) from three starting points: the
base model, the R-Zero Solver after iteration 1 and after iteration 3 (the exports of a finished
`python -m rzero_jax.main --workdir=RZERO_WORKDIR` demo run, which this script runs first when they
are missing). Prints held-out greedy accuracy before and after SFT for each start and SFT seed,
and writes `OUT/amplifier.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from experiments import demo  # noqa: E402
from experiments.toy_arith import data, heldout_eval  # noqa: E402
from experiments.toy_arith.build import ensure_base_model  # noqa: E402


def write_labeled_set(path: str, count: int, seed: int) -> None:
  """`count` distinct training-partition problems with worked solutions, as SFT jsonl."""
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in data.labeled_set(count, seed))


def heldout_accuracy(model_dir: str) -> float:
  """Greedy accuracy on the demo's held-out problems (integer answers graded exactly: the same
  number the loop's grader gives, tests/experiments/toy_arith/test_heldout_eval.py)."""
  return heldout_eval.greedy_accuracy(model_dir, demo.heldout_problems())[heldout_eval.ALL]


def _run(args: list[str], env: dict[str, str]) -> None:
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f"{' '.join(args[:3])} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rzero_workdir", required=True, help="a finished (or to-run) demo run")
  parser.add_argument("--out", required=True)
  parser.add_argument("--seeds", default="0,1,2", help="SFT data-order seeds")
  parser.add_argument("--labeled", type=int, default=300, help="labeled problems")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--lr", type=float, default=1e-4)
  args = parser.parse_args(argv)
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  os.makedirs(args.out, exist_ok=True)

  exports = {i: os.path.join(args.rzero_workdir, "export", f"iter_{i}", "solver") for i in (1, 3)}
  if not all(os.path.exists(p) for p in exports.values()):
    print(f"running the R-Zero demo into {args.rzero_workdir} first", flush=True)
    _run(["-m", "rzero_jax.main", f"--workdir={args.rzero_workdir}"], env)
  starts = {
      "base": ensure_base_model(os.path.join(REPO, ".cache")),
      "rzero_iter_1": exports[1],
      "rzero_iter_3": exports[3],
  }
  labeled = os.path.join(args.out, "labeled.jsonl")
  write_labeled_set(labeled, args.labeled, seed=7)

  results = {"settings": vars(args), "runs": []}
  for name, start in starts.items():
    before = heldout_accuracy(start)
    for seed in [int(s) for s in args.seeds.split(",")]:
      run_dir = os.path.join(args.out, f"{name}_seed{seed}")
      t0 = time.perf_counter()
      _run(
          [
              "-m",
              "rzero_jax.sft",
              f"--model={start}",
              f"--data={labeled}",
              f"--out={run_dir}",
              f"--steps={args.steps}",
              f"--batch_size={args.batch_size}",
              f"--lr={args.lr}",
              "--max_len=128",
              "--dtype=float32",
              f"--seed={seed}",
              "--mesh=data:1",
          ],
          env,
      )
      after = heldout_accuracy(os.path.join(run_dir, "export"))
      results["runs"].append(
          {
              "start": name,
              "seed": seed,
              "before_sft": before,
              "after_sft": after,
              "sft_seconds": time.perf_counter() - t0,
          }
      )
      print(f"{name:14s} seed {seed}: held-out {before:.3f} -> {after:.3f} after SFT", flush=True)
  summary = {}
  for name in starts:
    after = [r["after_sft"] for r in results["runs"] if r["start"] == name]
    summary[name] = {"mean_after_sft": float(np.mean(after)), "std": float(np.std(after))}
    print(f"{name:14s} mean after SFT {np.mean(after):.3f} +- {np.std(after):.3f}", flush=True)
  results["summary"] = summary
  with open(os.path.join(args.out, "amplifier.json"), "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
