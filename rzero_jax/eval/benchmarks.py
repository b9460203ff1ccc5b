"""Benchmark registry and loaders: hub ids, local files, and one item layout for all.

Every item has ``id`` (str), ``question`` (str), ``benchmark`` (its canonical name) and, for math,
``answer`` (the gold as text); other kinds keep what their scorer needs (``options`` and
``answer`` letter; EvalPlus fields; CRUXEval ``code``/``input``/``output``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable

from rzero_jax.io import read_jsonl
from rzero_jax.verify.answers import extract_boxed

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
EXTENSIONS = (".jsonl", ".json", ".parquet")


class BenchmarkError(ValueError):
  """A bad benchmark name, file or format (one line, for the CLI)."""


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  kind: str  # math | choice | bbeh | code | crux_o | crux_i
  hub_id: str
  hub_config: str | None
  split: str
  files: tuple[str, ...]  # file stems looked for in a data directory
  fields: str  # what the item is built from (docs/evaluation.md table)
  normalize: Callable[[dict, int], dict]


# ---------------------------------------------------------------- field helpers


def _first(row: dict, *keys: str, default: Any = None) -> Any:
  for k in keys:
    if row.get(k) is not None:
      return row[k]
  return default


def _id(row: dict, index: int, *keys: str) -> str:
  value = _first(row, *keys, "id", "unique_id", "task_id", "question_id", "idx", "uuid")
  return str(index if value is None else value)


def gold_text(value: Any) -> str:
  """A gold answer as text: integral floats lose their ``.0`` (AMC's ``27.0``)."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value).strip()


def _question(row: dict) -> str:
  q = _first(row, "problem", "question", "Question", "input")
  if not isinstance(q, str):
    raise BenchmarkError(f"row has no question text (fields: {sorted(row)})")
  return q


def _math(answer_of: Callable[[dict], Any]) -> Callable[[dict, int], dict]:
  def normalize(row: dict, index: int) -> dict:
    answer = answer_of(row)
    if answer is None:
      raise BenchmarkError(f"row {index} has no gold answer (fields: {sorted(row)})")
    return {"id": _id(row, index), "question": _question(row), "answer": gold_text(answer)}

  return normalize


def _plain_answer(row: dict) -> Any:
  answer = _first(row, "answer", "Answer", "final_answer", "target")
  if answer is None and isinstance(row.get("solution"), str):
    answer = extract_boxed(row["solution"])
  return answer


def _gsm8k_answer(row: dict) -> Any:
  answer = _first(row, "answer", "Answer")
  if isinstance(answer, str) and "####" in answer:
    answer = answer.split("####")[-1]
  return None if answer is None else str(answer).strip().replace(",", "")


def _minerva_answer(row: dict) -> Any:
  if isinstance(row.get("solution"), str) and extract_boxed(row["solution"]) is not None:
    return extract_boxed(row["solution"])  # the AZR file: the last boxed answer of the solution
  return _first(row, "answer")


def _olympiad_answer(row: dict) -> Any:
  answer = _first(row, "final_answer", "answer")
  if isinstance(answer, (list, tuple)):
    answer = answer[0] if answer else None
  return None if answer is None else str(answer).strip().strip("$").strip()


def _choice(row: dict, index: int) -> dict:
  options = _first(row, "options", "choices")
  if isinstance(options, str):
    options = json.loads(options)
  if not isinstance(options, (list, tuple)) or not options or len(options) > len(LETTERS):
    raise BenchmarkError(f"row {index} has no options list (fields: {sorted(row)})")
  answer = _first(row, "answer_letter", "answer")
  if not (isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha()):
    position = _first(row, "answer_index")
    answer = LETTERS[int(position)] if position is not None else None
  if answer is None:
    raise BenchmarkError(f"row {index} has no answer letter (fields: {sorted(row)})")
  item = {
      "id": _id(row, index),
      "question": _question(row),
      "options": [str(o) for o in options],
      "answer": answer.strip().upper(),
  }
  category = _first(row, "category", "discipline", "field", "subfield")
  if category is not None:
    item["category"] = str(category)
  return item


def _bbeh(row: dict, index: int) -> dict:
  answer = _first(row, "answer", "target")
  if answer is None:
    raise BenchmarkError(f"row {index} has no answer (fields: {sorted(row)})")
  item = {"id": _id(row, index), "question": _question(row), "answer": str(answer)}
  if row.get("task") is not None:
    item["category"] = str(row["task"])
  return item


_CODE_FIELDS = (
    "task_id",
    "prompt",
    "entry_point",
    "canonical_solution",
    "base_input",
    "plus_input",
    "atol",
    "test",
    "test_list",
    "test_imports",
    "code",
)


def tests_from_script(test: str) -> tuple[list, list, float] | None:
  """(inputs, expected outputs, atol) read from a hub EvalPlus ``test`` script, whose ``check``
  holds ``inputs = [...]``, ``results = [...]`` and ``assertion(candidate(*inp), exp, ATOL)``;
  None when the script does not have that shape (it is then run as a whole)."""
  import ast

  try:
    tree = ast.parse(test)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return None
  found: dict[str, Any] = {}
  for node in ast.walk(tree):
    if (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("inputs", "results")
    ):
      try:
        found[node.targets[0].id] = ast.literal_eval(node.value)
      except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "assertion"
        and len(node.args) == 3
    ):
      try:
        found["atol"] = float(ast.literal_eval(node.args[2]))
      except (ValueError, TypeError, SyntaxError):
        return None
  inputs, results = found.get("inputs"), found.get("results")
  if not isinstance(inputs, list) or not isinstance(results, list) or len(inputs) != len(results):
    return None
  if not all(isinstance(i, (list, tuple)) for i in inputs):
    return None
  return [list(i) for i in inputs], results, found.get("atol", 0.0)


def _evalplus(prefix: str) -> Callable[[dict, int], dict]:
  def normalize(row: dict, index: int) -> dict:
    item = {k: row[k] for k in _CODE_FIELDS if k in row}
    task = row.get("task_id", index)
    if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
      task = f"{prefix}/{task}"
    item["task_id"] = str(task)
    if "canonical_solution" not in item and isinstance(row.get("code"), str):
      item["canonical_solution"] = row["code"]  # the hub's MBPP+ layout
    if "entry_point" not in item and isinstance(item.get("canonical_solution"), str):
      names = re.findall(r"^def\s+(\w+)", item["canonical_solution"], re.M)
      if names:
        item["entry_point"] = names[-1]
    if not isinstance(item.get("prompt"), str) or "entry_point" not in item:
      raise BenchmarkError(f"row {index} is not an EvalPlus task (fields: {sorted(row)})")
    if "base_input" not in item and isinstance(item.get("test"), str):
      parsed = tests_from_script(item["test"])
      if parsed is not None:  # the hub layout: tests as literals inside the script
        item["base_input"], item["expected_output"], item["atol"] = parsed
        item["plus_input"] = []
        del item["test"]
    if "base_input" not in item and not isinstance(item.get("test"), str):
      raise BenchmarkError(f"row {index} has neither base_input/plus_input nor a test script")
    item.update(id=item["task_id"], question=item["prompt"])
    return item

  return normalize


def _crux(row: dict, index: int) -> dict:
  for key in ("code", "input", "output"):
    if not isinstance(row.get(key), str):
      raise BenchmarkError(f"row {index} has no CRUXEval {key!r} (fields: {sorted(row)})")
  return {
      "id": _id(row, index),
      "question": row["code"],
      "code": row["code"],
      "input": row["input"],
      "output": row["output"],
  }


def _crux_o(row: dict, index: int) -> dict:
  item = _crux(row, index)
  item["answer"] = item["output"]
  return item


def _crux_i(row: dict, index: int) -> dict:
  item = _crux(row, index)
  item["answer"] = item["input"]
  return item


# ---------------------------------------------------------------- registry


def _b(name, kind, hub_id, config, split, files, fields, normalize) -> Benchmark:
  return Benchmark(name, kind, hub_id, config, split, tuple(files), fields, normalize)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        _b(
            "math500",
            "math",
            "HuggingFaceH4/MATH-500",
            None,
            "test",
            ["math500", "math_500"],
            "problem; gold `answer`",
            _math(_plain_answer),
        ),
        _b(
            "gsm8k",
            "math",
            "openai/gsm8k",
            "main",
            "test",
            ["gsm8k"],
            "question; gold after `####` in `answer`, commas removed",
            _math(_gsm8k_answer),
        ),
        _b(
            "amc23",
            "math",
            "zwhe99/amc23",
            None,
            "test",
            ["amc23"],
            "problem/question; gold `answer` (27.0 -> 27)",
            _math(_plain_answer),
        ),
        _b(
            "aime24",
            "math",
            "HuggingFaceH4/aime_2024",
            None,
            "train",
            ["aime24", "aime_2024"],
            "problem; gold `answer`",
            _math(_plain_answer),
        ),
        _b(
            "aime25",
            "math",
            "yentinglin/aime_2025",
            "default",
            "train",
            ["aime25", "aime_2025"],
            "problem; gold `answer`",
            _math(_plain_answer),
        ),
        _b(
            "minerva_math",
            "math",
            "zwhe99/simplerl-minerva-math",
            None,
            "test",
            ["minerva_math", "minerva"],
            "problem; gold = last `\\boxed{}` of `solution` (else `answer`)",
            _math(_minerva_answer),
        ),
        _b(
            "olympiadbench",
            "math",
            "zwhe99/simplerl-OlympiadBench",
            None,
            "test",
            ["olympiadbench", "olympiad_bench"],
            "question; gold `final_answer[0]` without `$`",
            _math(_olympiad_answer),
        ),
        _b(
            "mmlu_pro",
            "choice",
            "TIGER-Lab/MMLU-Pro",
            None,
            "test",
            ["mmlu_pro", "mmlupro"],
            "question, options (<= 10); gold letter `answer`",
            _choice,
        ),
        _b(
            "supergpqa",
            "choice",
            "m-a-p/SuperGPQA",
            None,
            "train",
            ["supergpqa"],
            "question, options; gold `answer_letter`",
            _choice,
        ),
        _b(
            "bbeh",
            "bbeh",
            "MrLight/bbeh-eval",
            None,
            "train",
            ["bbeh"],
            "question; gold `answer` (BBEH fuzzy match)",
            _bbeh,
        ),
        _b(
            "humaneval_plus",
            "code",
            "evalplus/humanevalplus",
            None,
            "test",
            ["humaneval_plus", "humanevalplus", "HumanEvalPlus"],
            "prompt, entry_point, canonical_solution, base_input + plus_input, atol (or hub `test`)",
            _evalplus("HumanEval"),
        ),
        _b(
            "mbpp_plus",
            "code",
            "evalplus/mbppplus",
            None,
            "test",
            ["mbpp_plus", "mbppplus", "MbppPlus"],
            "prompt, entry_point, canonical_solution, base_input + plus_input, atol (or hub `test`)",
            _evalplus("Mbpp"),
        ),
        _b(
            "cruxeval_o",
            "crux_o",
            "cruxeval-org/cruxeval",
            None,
            "test",
            ["cruxeval_o", "cruxeval"],
            "code, input; gold `output`",
            _crux_o,
        ),
        _b(
            "cruxeval_i",
            "crux_i",
            "cruxeval-org/cruxeval",
            None,
            "test",
            ["cruxeval_i", "cruxeval"],
            "code, output; any input with f(input) == output",
            _crux_i,
        ),
    ]
}

ALIASES = {
    "mbppplus": "mbpp_plus",
    "humanevalplus": "humaneval_plus",
    "minerva": "minerva_math",
    "olympiad": "olympiadbench",
    "math_500": "math500",
    "mmlupro": "mmlu_pro",
    "aime_2024": "aime24",
    "aime_2025": "aime25",
    "cruxeval": "cruxeval_o",
}
MATH_BENCHMARKS = tuple(n for n, b in BENCHMARKS.items() if b.kind == "math")


def resolve(name: str) -> Benchmark:
  """The benchmark called ``name`` (or an alias); BenchmarkError for an unknown name."""
  key = str(name).strip().lower().replace("-", "_")
  key = ALIASES.get(key, key)
  if key == "livecodebench":
    raise BenchmarkError(
        "benchmark 'livecodebench' is not supported yet (optional in issue 16); "
        f"choose from {', '.join(BENCHMARKS)}"
    )
  if key not in BENCHMARKS:
    raise BenchmarkError(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
  return BENCHMARKS[key]


# ---------------------------------------------------------------- reading


def find_file(bench: Benchmark, directory: str) -> str | None:
  """``<stem>.jsonl|json|parquet`` for the benchmark's file stems in ``directory``, if any."""
  for stem in bench.files:
    for ext in EXTENSIONS:
      path = os.path.join(directory, stem + ext)
      if os.path.isfile(path):
        return path
  return None


def read_rows(path: str) -> list[dict]:
  """Rows of a jsonl / json / parquet file, in file order.

  JSON is read with the standard library (not Arrow): Arrow would unify mixed types, and EvalPlus
  inputs mix ints, floats, strings and lists.
  """
  lower = path.lower()
  try:
    if lower.endswith(".parquet"):
      import datasets

      rows = datasets.load_dataset("parquet", data_files=path, split="train").to_list()
    elif lower.endswith(".jsonl"):
      rows = read_jsonl(path)
    elif lower.endswith(".json"):
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      if isinstance(data, dict):  # {"examples": [...]} (BBEH task files) or {split: [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
          raise BenchmarkError(f"{path}: expected a list of rows or one list inside an object")
        data = lists[0]
      rows = data
    else:
      raise BenchmarkError(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")
  except json.JSONDecodeError as e:
    raise BenchmarkError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
    raise BenchmarkError(f"{path}: expected rows that are JSON objects")
  return rows


def _hub_rows(bench: Benchmark) -> list[dict]:
  how = (
      f"benchmark {bench.name!r} needs {bench.hub_id} from the Hugging Face Hub, which is not "
      f'reachable: on a connected machine run python -c "import datasets; datasets.load_dataset('
      f"'{bench.hub_id}'{', ' + repr(bench.hub_config) if bench.hub_config else ''}, "
      f"split='{bench.split}').to_json('DIR/{bench.files[0]}.jsonl')\" and pass --data_dir=DIR"
  )
  if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
      "HF_DATASETS_OFFLINE", "0"
  ) not in ("", "0"):
    raise BenchmarkError(how)
  try:
    import datasets

    args = (bench.hub_id, bench.hub_config) if bench.hub_config else (bench.hub_id,)
    return datasets.load_dataset(*args, split=bench.split).to_list()
  except Exception as e:  # noqa: BLE001 - network, auth or format: one line either way
    raise BenchmarkError(f"{how} ({type(e).__name__})") from None


def load_benchmark(name: str, path: str | None = None) -> list[dict]:
  """Items of benchmark ``name`` in file order.

  ``path`` is a file (jsonl / json / parquet, in the hub's or the references' own layout) or a
  directory holding ``<name>.jsonl`` (or the references' file name, e.g. ``mbppplus.jsonl``,
  ``cruxeval.jsonl``); without it the Hugging Face hub id is loaded through ``datasets``.
  Raises BenchmarkError (a ValueError) with one line for a bad name, file or row.
  """
  bench = resolve(name)
  if path is None:
    rows = _hub_rows(bench)
  else:
    if os.path.isdir(path):
      found = find_file(bench, path)
      if found is None:
        names = ", ".join(s + e for s in bench.files[:2] for e in EXTENSIONS)
        raise BenchmarkError(f"no file for benchmark {bench.name!r} in {path} (looked for {names})")
      path = found
    elif not os.path.isfile(path):
      raise BenchmarkError(f"benchmark file {path!r} does not exist")
    rows = read_rows(path)
  items = []
  for index, row in enumerate(rows):
    item = bench.normalize(row, index)
    item["benchmark"] = bench.name
    items.append(item)
  return items
