"""Figures from a run directory: `python -m rzero_jax.report --workdir=DIR [--out=DIR/report]`.

Writes PNG figures and a page embedding them (`index.md` and `index.html`) under `DIR/report/`.
It reads, in this order of preference, whatever the run has written so far:

- `summary.json` (a finished run: per-iteration records, held-out accuracy, timing);
- the `meta` record of the newest complete checkpoint (a run that is still going: the finished
  iterations plus the rewards of the one in progress);
- TensorBoard scalars under `tb/` (anything the two above lack, e.g. before the first checkpoint);
- `data/iter_<i>.jsonl` (the p_hat of every kept question).

R-Zero figures: held-out and pseudo-label accuracy per iteration, reward per step per role, p_hat of
kept questions, kept counts, the time split sampling / training / grading. Absolute Zero runs
(summary keys `steps`, `seeding`, `heldout_accuracy` per task type): accuracy per task type,
valid-proposal rate, buffer sizes, rewards. A figure whose numbers the run does not have yet is
left out; the page says which.
"""

from __future__ import annotations

import glob
import html
import json
import os
import re
import struct
import sys
from typing import Any, Iterable

from rzero_jax.io import read_jsonl

TASK_TYPES = ("deduction", "abduction", "induction")
ROLE_COLORS = {"challenger": "tab:orange", "solver": "tab:blue", "proposer": "tab:orange"}
TYPE_COLORS = {
    "deduction": "tab:blue",
    "abduction": "tab:green",
    "induction": "tab:purple",
    "mean": "black",
}


# ----- reading a run directory -------------------------------------------------------------------


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def latest_checkpoint_meta(workdir: str) -> dict | None:
  """The JSON loop position saved with the newest complete checkpoint (orbax writes a step to a
  temporary directory and renames it when complete, so numeric names are complete)."""
  root = os.path.join(workdir, "checkpoints")
  try:
    steps = sorted((int(d) for d in os.listdir(root) if d.isdigit()), reverse=True)
  except OSError:
    return None
  for step in steps:
    for path in sorted(glob.glob(os.path.join(root, str(step), "meta", "*"))):
      data = _read_json(path) if os.path.isfile(path) else None
      if isinstance(data, dict) and ("iterations" in data or "steps" in data):
        return data
  return None


def read_tb_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} from the TensorBoard event files under `logdir` (tensorboardX's
  protos, no TensorFlow). A file still being written is read up to its last complete record."""
  try:
    from tensorboardX.proto import event_pb2
  except ImportError:
    return {}
  scalars: dict[str, dict[int, float]] = {}
  for path in sorted(
      glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)
  ):
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError:
      continue
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      start, end = pos + 12, pos + 12 + length
      if end + 4 > len(data):
        break
      event = event_pb2.Event()
      try:
        event.ParseFromString(data[start:end])
      except Exception:  # a corrupt record: stop reading this file
        break
      pos = end + 4
      for value in event.summary.value:
        if value.WhichOneof("value") == "simple_value":
          scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
  return {tag: sorted(points.items()) for tag, points in scalars.items()}


def load_run(workdir: str) -> dict:
  """Everything the figures need, from whatever the run directory holds now."""
  summary = _read_json(os.path.join(workdir, "summary.json"))
  meta = None if isinstance(summary, dict) else latest_checkpoint_meta(workdir)
  tb = read_tb_scalars(os.path.join(workdir, "tb"))
  source = (
      "summary.json"
      if isinstance(summary, dict)
      else "checkpoint meta"
      if meta
      else "TensorBoard events"
      if tb
      else None
  )
  run: dict[str, Any] = {
      "workdir": os.path.abspath(workdir),
      "source": source,
      "finished": isinstance(summary, dict),
      "tb": tb,
      "timing": (summary or {}).get("timing") or {},
  }
  record = summary if isinstance(summary, dict) else meta or {}
  run["algorithm"] = (
      "azr"
      if "steps" in record
      or "seeding" in record
      or any(k.startswith(("proposer/", "seeding/")) or "valid_rate" in k for k in tb)
      else "rzero"
  )
  if run["algorithm"] == "azr":
    run.update(_azr(summary, meta, tb))
  else:
    run.update(_rzero(workdir, summary, meta, tb))
  return run


def _rzero(workdir: str, summary: dict | None, meta: dict | None, tb: dict[str, list]) -> dict:
  iterations: list[dict] = []
  current: dict | None = None
  if summary:
    iterations = list(summary.get("iterations") or [])
    base = (summary.get("heldout_accuracy") or {}).get("base")
  elif meta:
    iterations = list(meta.get("iterations") or [])
    base = meta.get("base_heldout_accuracy")
    cur = meta.get("current") or {}
    if cur.get("challenger_reward") or cur.get("solver_reward"):
      current = dict(cur, iteration=int(meta.get("iteration", len(iterations))) + 1)
  else:
    base = None
  if not iterations and current is None and tb:  # nothing checkpointed yet: TensorBoard only
    current = {
        "iteration": 1,
        "challenger_reward": [v for _, v in tb.get("challenger/reward", [])],
        "solver_reward": [v for _, v in tb.get("solver/reward", [])],
    }
    dataset = {k.split("/", 1)[1]: v[-1][1] for k, v in tb.items() if k.startswith("dataset/")}
    if dataset:
      current["dataset"] = dataset
  kept_p_hat = {}
  for path in glob.glob(os.path.join(workdir, "data", "iter_*.jsonl")):
    m = re.search(r"iter_(\d+)\.jsonl$", path)
    if m:
      kept_p_hat[int(m.group(1))] = [
          float(r["p_hat"]) for r in read_jsonl(path, partial=True) if "p_hat" in r
      ]
  return {
      "base_heldout_accuracy": base,
      "iterations": iterations,
      "current": current,
      "kept_p_hat": dict(sorted(kept_p_hat.items())),
  }


def _azr(summary: dict | None, meta: dict | None, tb: dict[str, list]) -> dict:
  record = summary or meta or {}
  steps = list(record.get("steps") or [])
  if not steps and tb:
    by_step: dict[int, dict] = {}
    for tag, points in tb.items():
      for step, value in points:
        by_step.setdefault(step, {})[tag] = value
    steps = [by_step[s] for s in sorted(by_step)]
  heldout = record.get("heldout_accuracy") or record.get("heldout") or {}
  return {"steps": steps, "heldout": heldout, "seeding": record.get("seeding") or {}}


# ----- figures -----------------------------------------------------------------------------------


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, out_dir: str, name: str) -> str:
  path = os.path.join(out_dir, name)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  _pyplot().close(fig)
  return path


def _reward_series(run: dict) -> dict[str, tuple[list[float], list[int]]]:
  """Per role: rewards of every step in run order, and the step index where each iteration
  starts."""
  series = {}
  records = [*run["iterations"], *([run["current"]] if run["current"] else [])]
  for role in ("challenger", "solver"):
    values, starts = [], []
    for r in records:
      starts.append(len(values))
      values.extend(float(v) for v in r.get(f"{role}_reward") or [])
    series[role] = (values, starts)
  return series


def rzero_figures(run: dict, out_dir: str) -> dict[str, str]:
  """{title: png path} for an R-Zero run; figures without data are left out."""
  plt = _pyplot()
  from matplotlib.ticker import MaxNLocator

  figures: dict[str, str] = {}
  its = run["iterations"]

  held = [("base", run["base_heldout_accuracy"])] + [
      (str(r["iteration"]), r.get("heldout_accuracy")) for r in its
  ]
  pseudo = [(str(r["iteration"]), r.get("pseudo_label_accuracy")) for r in its]
  running = ((run["current"] or {}).get("dataset") or {}).get("pseudo_label_accuracy")
  if running is not None:  # the iteration in progress has its kept set already
    held.append((f"{run['current']['iteration']} (running)", None))
    pseudo.append((held[-1][0], running))
  if any(v is not None for _, v in held + pseudo):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = list(range(len(held)))
    pts = [(x, v) for x, (_, v) in zip(xs, held) if v is not None]
    if pts:
      ax.plot(*zip(*pts), "o-", color="tab:blue", label="Solver held-out accuracy (greedy)")
    pts = [(x + 1, v) for x, (_, v) in enumerate(pseudo) if v is not None]
    if pts:
      ax.plot(*zip(*pts), "s--", color="tab:red", label="pseudo-label accuracy (kept set)")
    ax.set_xticks(xs, [label for label, _ in held])
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Accuracy per iteration")
    figures["Held-out and pseudo-label accuracy"] = _save(fig, out_dir, "accuracy.png")

  series = _reward_series(run)
  if any(values for values, _ in series.values()):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, role in zip(axes, ("challenger", "solver")):
      values, starts = series[role]
      if values:
        ax.plot(range(1, len(values) + 1), values, "o-", ms=3, color=ROLE_COLORS[role])
      for k, s in enumerate(starts):
        if k:
          ax.axvline(s + 0.5, color="gray", ls=":", lw=1)
      ax.set_title(f"{role.capitalize()} reward per step")
      ax.set_xlabel("step (dotted lines: iteration boundaries)")
      ax.set_ylabel("mean reward")
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
      ax.grid(alpha=0.3)
    figures["Rewards per step"] = _save(fig, out_dir, "rewards.png")

  kept_p_hat = {i: v for i, v in run["kept_p_hat"].items() if v}
  if kept_p_hat:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.axvspan(0.25, 0.75, color="gray", alpha=0.12, label="band |p_hat - 1/2| <= 1/4")
    levels = sorted({round(v, 6) for values in kept_p_hat.values() for v in values})
    if len(levels) <= 25:  # m votes give p_hat in multiples of 1/m: one bar group per value
      gap = min([b - a for a, b in zip(levels, levels[1:])] or [0.1])
      width = 0.8 * gap / len(kept_p_hat)
      for k, (i, values) in enumerate(kept_p_hat.items()):
        counts = [sum(1 for v in values if abs(v - level) < 1e-6) for level in levels]
        offset = (k - (len(kept_p_hat) - 1) / 2) * width
        ax.bar(
            [level + offset for level in levels],
            counts,
            width=width,
            alpha=0.9,
            label=f"iteration {i}",
        )
    else:
      ax.hist(
          list(kept_p_hat.values()),
          bins=[i / 20 for i in range(21)],
          label=[f"iteration {i}" for i in kept_p_hat],
          histtype="bar",
          alpha=0.85,
      )
    ax.set_xlabel("p_hat (share of votes for the majority answer)")
    ax.set_ylabel("kept questions")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("p_hat of kept questions")
    figures["p_hat of kept questions"] = _save(fig, out_dir, "p_hat.png")

  kept = [(r["iteration"], r.get("kept")) for r in its if r.get("kept") is not None]
  cur = (run["current"] or {}).get("dataset") or {}
  if cur.get("kept") is not None:
    kept.append((run["current"]["iteration"], int(cur["kept"])))
  if kept:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs = [str(i) for i, _ in kept]
    bars = ax.bar(xs, [k for _, k in kept], color="tab:green")
    ax.bar_label(bars, fontsize=8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("questions kept")
    ax.set_title("Kept questions per iteration")
    figures["Kept questions"] = _save(fig, out_dir, "kept.png")

  return {**figures, **timing_figure(run.get("timing") or {}, out_dir)}


def timing_figure(timing: dict, out_dir: str) -> dict[str, str]:
  """{"Time split": path} of one horizontal bar (sampling / training / grading / other seconds
  of the whole run); empty without timings."""
  parts = [
      (k, float(timing[f"{k}_s"]))
      for k in ("sampling", "training", "grading")
      if timing.get(f"{k}_s") is not None
  ]
  if not parts:
    return {}
  total = float(timing.get("total_s") or sum(v for _, v in parts))
  other = total - sum(v for _, v in parts)
  if other > 0:
    parts.append(("other (setup, compiling, checkpoints, export)", other))
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 1.8))
  left = 0.0
  colors = ["tab:blue", "tab:orange", "tab:green", "tab:gray"]
  for (name, seconds), color in zip(parts, colors):
    ax.barh(
        [0],
        [seconds],
        left=left,
        color=color,
        label=f"{name}: {seconds:.0f} s ({100 * seconds / max(total, 1e-9):.0f}%)",
    )
    left += seconds
  ax.set_yticks([])
  ax.set_xlabel("seconds")
  ax.set_title(f"Where the time went (total {total:.0f} s)")
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
  return {"Time split": _save(fig, out_dir, "timing.png")}


def azr_figures(run: dict, out_dir: str) -> dict[str, str]:
  """{title: png path} for an Absolute Zero run; keys the run lacks are skipped."""
  plt = _pyplot()
  figures: dict[str, str] = {}
  heldout = {k: v for k, v in run["heldout"].items() if isinstance(v, dict)}
  if heldout:
    points = list(heldout)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for t in (*TASK_TYPES, "mean"):
      pts = [(x, heldout[p][t]) for x, p in enumerate(points) if heldout[p].get(t) is not None]
      if pts:
        ax.plot(*zip(*pts), "o-" if t != "mean" else "--", color=TYPE_COLORS[t], label=t)
    ax.set_xticks(range(len(points)), points, rotation=30, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy per task type")
    figures["Accuracy per task type"] = _save(fig, out_dir, "azr_accuracy.png")

  steps = run["steps"]

  def per_type_plot(
      key: str, title: str, ylabel: str, name: str, overall: str | None = None, ylim=None
  ):
    lines = {
        t: [
            (i + 1, s[f"{t}/{key}"]) for i, s in enumerate(steps) if s.get(f"{t}/{key}") is not None
        ]
        for t in TASK_TYPES
    }
    if overall:
      lines["mean"] = [
          (i + 1, s[overall]) for i, s in enumerate(steps) if s.get(overall) is not None
      ]
    if not any(lines.values()):
      return
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for t, pts in lines.items():
      if pts:
        ax.plot(
            *zip(*pts),
            "o-" if t != "mean" else "--",
            ms=3,
            color=TYPE_COLORS[t],
            label=t if t != "mean" else "all types",
        )
    if ylim:
      ax.set_ylim(*ylim)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    figures[title] = _save(fig, out_dir, name)

  per_type_plot(
      "valid_rate",
      "Valid-proposal rate",
      "share of proposals valid",
      "azr_valid_rate.png",
      overall="valid_rate",
      ylim=(0, 1.02),
  )
  per_type_plot("buffer_size", "Buffer sizes", "tasks in buffer", "azr_buffers.png")
  per_type_plot(
      "solver_accuracy",
      "Solver accuracy on proposed tasks",
      "accuracy",
      "azr_solver_accuracy.png",
      overall="solver_accuracy",
      ylim=(0, 1.02),
  )
  rewards = {
      role: [
          (i + 1, s[f"{role}_reward"])
          for i, s in enumerate(steps)
          if s.get(f"{role}_reward") is not None
      ]
      for role in ("proposer", "solver")
  }
  if any(rewards.values()):
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for role, pts in rewards.items():
      if pts:
        ax.plot(*zip(*pts), "o-", ms=3, color=ROLE_COLORS[role], label=role)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Rewards per step")
    figures["Rewards per step"] = _save(fig, out_dir, "azr_rewards.png")
  return {**figures, **timing_figure(run.get("timing") or {}, out_dir)}


# ----- the page ----------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
  return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def table_rows(run: dict) -> list[tuple[str, ...]]:
  """The run's table (header first): R-Zero per iteration, AZR per evaluation point."""
  if run["algorithm"] == "azr":
    rows = [("point", *TASK_TYPES, "mean")]
    for point, acc in run["heldout"].items():
      if isinstance(acc, dict):
        rows.append((point, *(_fmt(acc.get(k)) for k in (*TASK_TYPES, "mean"))))
    return rows
  rows = [
      ("iteration", "kept", "mean p_hat", "pseudo-label acc", "held-out acc"),
      ("base", "-", "-", "-", _fmt(run["base_heldout_accuracy"])),
  ]
  for r in run["iterations"]:
    rows.append(
        (
            str(r["iteration"]),
            _fmt(r.get("kept")),
            _fmt(r.get("mean_p_hat")),
            _fmt(r.get("pseudo_label_accuracy")),
            _fmt(r.get("heldout_accuracy")),
        )
    )
  if run.get("current"):
    d = run["current"].get("dataset") or {}
    rows.append(
        (
            f"{run['current']['iteration']} (running)",
            _fmt(d.get("kept")),
            _fmt(d.get("mean_p_hat")),
            _fmt(d.get("pseudo_label_accuracy")),
            "-",
        )
    )
  return rows


def _markdown(run: dict, figures: dict[str, str], out_dir: str) -> str:
  rows = table_rows(run)
  status = (
      "finished"
      if run["finished"]
      else "in progress (read from the " f"{run['source'] or 'nothing yet'})"
  )
  lines = [
      f"# Run report: `{run['workdir']}`",
      "",
      f"Algorithm: {'Absolute Zero' if run['algorithm'] == 'azr' else 'R-Zero'}; "
      f"status: {status}.",
      "",
      "| " + " | ".join(rows[0]) + " |",
      "|" + "---|" * len(rows[0]),
  ]
  lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
  timing = run.get("timing") or {}
  if timing:
    lines += [
        "",
        "Timing: "
        + ", ".join(
            f"{k[:-2]} {v:.1f} s" for k, v in timing.items() if isinstance(v, (int, float))
        ),
    ]
  for title, path in figures.items():
    lines += ["", f"## {title}", "", f"![{title}]({os.path.relpath(path, out_dir)})"]
  if not figures:
    lines += ["", "No figures yet: the run has not recorded any numbers."]
  return "\n".join(lines) + "\n"


def _html(run: dict, figures: dict[str, str], out_dir: str) -> str:
  rows = table_rows(run)
  esc = html.escape
  table = (
      "<table>"
      + "<tr>"
      + "".join(f"<th>{esc(c)}</th>" for c in rows[0])
      + "</tr>"
      + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
      + "</table>"
  )
  body = "".join(
      f"<h2>{esc(t)}</h2><img src='{esc(os.path.relpath(p, out_dir))}' alt='{esc(t)}'>"
      for t, p in figures.items()
  )
  status = "finished" if run["finished"] else f"in progress ({esc(run['source'] or 'no data')})"
  return (
      "<!doctype html><html><head><meta charset='utf-8'><title>Run report</title><style>"
      "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
      "text-align:right}img{max-width:100%}</style></head><body>"
      f"<h1>Run report</h1><p><code>{esc(run['workdir'])}</code>: {status}</p>"
      f"{table}{body}</body></html>\n"
  )


def make_report(workdir: str, out_dir: str | None = None) -> dict:
  """Writes the figures and the page; returns {"figures": {title: path}, "page": path of
  index.md, "html": path of index.html, "run": the numbers read}."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"No run directory {workdir!r}.")
  out_dir = out_dir or os.path.join(workdir, "report")
  os.makedirs(out_dir, exist_ok=True)
  run = load_run(workdir)
  figures = azr_figures(run, out_dir) if run["algorithm"] == "azr" else rzero_figures(run, out_dir)
  page = os.path.join(out_dir, "index.md")
  with open(page, "w") as f:
    f.write(_markdown(run, figures, out_dir))
  page_html = os.path.join(out_dir, "index.html")
  with open(page_html, "w") as f:
    f.write(_html(run, figures, out_dir))
  return {"figures": figures, "page": page, "html": page_html, "run": run}


def main(argv: Iterable[str] | None = None) -> int:
  import argparse

  parser = argparse.ArgumentParser(
      prog="python -m rzero_jax.report", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--workdir", required=True, help="the run directory (finished or running)")
  parser.add_argument("--out", default=None, help="output folder (default WORKDIR/report)")
  args = parser.parse_args(None if argv is None else list(argv))
  try:
    result = make_report(args.workdir, args.out)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for title, path in result["figures"].items():
    print(f"{title}: {path}")
  print(f"page: {result['page']} (and {os.path.basename(result['html'])})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
