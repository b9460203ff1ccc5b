"""An evaluation's results as TensorBoard scalars, as a table, and as files in an output directory."""

from __future__ import annotations

import math
import os
import tempfile

from rzero_jax.io import atomic_json, write_jsonl


def flat_metrics(result: dict, prefix: str = "eval/") -> dict[str, float]:
  """Scalars for TensorBoard / summary.json: ``eval/<benchmark>`` (and ``eval/<benchmark>/pass@k``),
  ``eval/math_average`` and ``eval/overall``, as fractions in [0, 1]."""
  out = {}
  for name, entry in result["benchmarks"].items():
    out[f"{prefix}{name}"] = entry["score"]
    if "pass@k" in entry:
      out[f"{prefix}{name}/pass@{entry['samples']}"] = entry["pass@k"]
  for key in ("math_average", "overall"):
    if result.get(key) is not None:
      out[prefix + key] = result[key]
  return out


def _pct(x: float | None) -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def format_table(result: dict, model: str = "model") -> str:
  """The papers' layout: one row per model, a column per benchmark, then math avg and overall."""
  names = list(result["benchmarks"])
  header = ["model"] + names + ["math avg", "overall"]
  row = (
      [model]
      + [_pct(result["benchmarks"][n]["score"]) for n in names]
      + [_pct(result.get("math_average")), _pct(result.get("overall"))]
  )
  lines = [
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
      "| " + " | ".join(row) + " |",
  ]
  passes = [n for n in names if "pass@k" in result["benchmarks"][n]]
  if passes:
    k = result["benchmarks"][passes[0]]["samples"]
    lines.append(
        f"(avg@{k}; pass@{k}: "
        + ", ".join(f"{n} {_pct(result['benchmarks'][n]['pass@k'])}" for n in passes)
        + ")"
    )
  return "\n".join(lines)


def check_out_dir(out_dir: str) -> None:
  """Raises ValueError unless ``write_results`` can write to ``out_dir``: a directory that exists
  or can be created, and can be written. Checked by making (and removing) a temporary file in it or
  in its nearest existing parent, so that a bad directory fails before a run, leaving nothing."""
  target = os.path.abspath(out_dir)
  probe = target
  while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    if probe == target:
      raise ValueError(f"{out_dir!r} exists and is not a directory")
    raise ValueError(f"{out_dir!r} cannot be created: {probe!r} is not a directory")
  try:
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    where = "written" if probe == target else f"created in {probe!r}"
    raise ValueError(f"{out_dir!r} cannot be {where}: {e.strerror or e}") from None


def write_results(out_dir: str, result: dict, extra: dict | None = None) -> None:
  """``results.json`` (scores and settings) and one ``<benchmark>.jsonl`` of per-item records,
  each written atomically (temp file, then ``os.replace``)."""
  for name, records in result.get("records", {}).items():
    write_jsonl(os.path.join(out_dir, f"{name}.jsonl"), records)
  summary = {k: v for k, v in result.items() if k != "records"}
  summary.update(extra or {})
  atomic_json(os.path.join(out_dir, "results.json"), summary, newline=True)
