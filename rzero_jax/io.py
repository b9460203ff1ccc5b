"""Files written atomically (a temporary file in the same directory, renamed over the target, so a
reader or a killed run never sees a partial file) and jsonl records."""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Iterable


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically, creating its directory; on any error the
  temporary file is removed and `path` is left as it was."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def natural_key(key: Any) -> list:
  """Sort key that orders the numbers inside names by value: "step_8" before "step_16"."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(key))]


def _naturally_sorted(data: Any) -> Any:
  if isinstance(data, dict):
    return {k: _naturally_sorted(data[k]) for k in sorted(data, key=natural_key)}
  if isinstance(data, (list, tuple)):
    return [_naturally_sorted(v) for v in data]
  return data


def atomic_json(
    path: str,
    data: Any,
    *,
    indent: int | None = 2,
    natural_order: bool = False,
    newline: bool = False,
) -> None:
  """Writes `data` as JSON to `path` atomically: `json.dumps` with `indent`, a final newline when
  `newline`. With `natural_order` the keys of every dict are sorted by `natural_key` (the same
  bytes whatever order the dicts were built in; evaluation points in step order)."""
  data = _naturally_sorted(data) if natural_order else data
  atomic_write_text(path, json.dumps(data, indent=indent) + ("\n" if newline else ""))


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
  """Writes records as jsonl (one JSON object a line, non-ASCII kept as is) atomically."""
  atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str, *, partial: bool = False) -> list[dict[str, Any]]:
  """Records of a jsonl file, blank lines skipped. With `partial` (a file that may be being
  written), lines that do not parse (a torn last line) are skipped and a missing or unreadable
  file reads as no records; otherwise both are errors."""
  records = []
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if not line.strip():
          continue
        try:
          records.append(json.loads(line))
        except ValueError:
          if not partial:
            raise
  except OSError:
    if not partial:
      raise
  return records
