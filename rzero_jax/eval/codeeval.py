"""Code execution for evaluation: EvalPlus-style differential tests and CRUXEval, in the sandbox.

Every program runs in ``verify.Executor``'s sandbox (fresh process, namespaces, seccomp, rlimits,
wall-clock kill); the AST policy is skipped because benchmark code legitimately imports modules
outside the self-play allowlist. Model text is never pasted into harness code: the harness
(``_harness.py``) receives the solution and the inputs as JSON data, and sends outputs back as
tagged JSON that this process decodes and compares (``outputs_match``), EvalPlus's rules:
exact equality, else ``atol`` (1e-6 for float outputs) with ``numpy.testing.assert_allclose``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import pathlib
import re
import threading
from typing import Any, Sequence

import numpy as np

from rzero_jax.eval import _harness

_HARNESS = pathlib.Path(__file__).with_name("_harness.py").read_text()
MIN_TEST_S = 1.0  # per-test CPU-time limit floor (EvalPlus --min-time-limit)
TIME_FACTOR = 8.0  # per-test limit = max(MIN_TEST_S, TIME_FACTOR * canonical time)
MAX_RUN_S = 60.0  # one sandboxed run (all tests of a task) is killed after this
MEMORY_MB = 2048
OUTPUT_LIMIT = 1 << 24

# EvalPlus special cases (evalplus/evaluate.py): these MBPP tasks only check "not None".
OUTPUT_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})

_EXECUTOR = None
_EXECUTOR_PID = 0
_LOCK = threading.Lock()
_EXPECTED: dict[str, tuple[list, list[float]]] = {}


def executor():
  """The module's sandbox pool (started on first use; one per process)."""
  global _EXECUTOR, _EXECUTOR_PID
  with _LOCK:
    if _EXECUTOR is None or _EXECUTOR_PID != os.getpid():
      import warnings
      from rzero_jax.verify.executor import Executor

      workers = max(1, min(os.cpu_count() or 1, 8))
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degraded isolation is logged once
        _EXECUTOR = Executor(workers, memory_mb=MEMORY_MB, output_limit=OUTPUT_LIMIT)
      _EXECUTOR_PID = os.getpid()
    return _EXECUTOR


def shutdown() -> None:
  """Stops the sandbox pool (it restarts on next use)."""
  global _EXECUTOR
  with _LOCK:
    if _EXECUTOR is not None and _EXECUTOR_PID == os.getpid():
      _EXECUTOR.close()
    _EXECUTOR = None


atexit.register(shutdown)


def _program(job: dict) -> str:
  return (
      _HARNESS + "\n\nJOB = " + repr(json.dumps(job)) + "\n\n" "def f(*_):\n  return main(JOB)\n"
  )  # any inputs convention calls it


def run_jobs(jobs: Sequence[dict], timeouts: Sequence[float]) -> list[list | None]:
  """Runs harness jobs in the sandbox; each result is the harness's row list, or None when the
  run itself failed (killed at its deadline, crashed, output too large)."""
  results: list[list | None] = [None] * len(jobs)
  groups: dict[float, list[int]] = {}
  for i, t in enumerate(timeouts):
    groups.setdefault(min(MAX_RUN_S, max(1.0, math.ceil(t))), []).append(i)
  ex = executor()
  for timeout, indices in groups.items():
    replies = ex.run_many(
        [(_program(jobs[i]), "()") for i in indices], timeout_s=timeout, static_checks=False
    )
    for i, reply in zip(indices, replies):
      if reply.ok:
        try:
          results[i] = json.loads(_literal_str(reply.output))
        except ValueError:
          results[i] = None
  return results


def _literal_str(text: str) -> str:
  import ast

  value = ast.literal_eval(text)
  if not isinstance(value, str):
    raise ValueError("harness output is not a string")
  return value


# ---------------------------------------------------------------- EvalPlus


def _to_tuples(value: Any) -> Any:
  return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def _restore_mbpp(number: int, inp: list) -> list:
  """Python types that MBPP+'s JSON lost (tuples, sets, complex), for the tasks that use them;
  the same per-task table as EvalPlus's loader."""
  tuples = lambda xs: [tuple(x) for x in xs]  # noqa: E731
  if number in (
      2,
      116,
      132,
      143,
      222,
      261,
      273,
      394,
      399,
      421,
      424,
      429,
      470,
      560,
      579,
      596,
      616,
      630,
      726,
      740,
      744,
      809,
  ):
    return tuples(inp)
  if number in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
    return [tuples(arg) for arg in inp]
  if number in (75, 413, 444, 753):
    return [tuples(inp[0]), inp[1]]
  if number in (106, 750):
    return [inp[0], tuple(inp[1])]
  if number == 115:
    return [[set(x) if isinstance(x, list) and x else {} for x in inp[0]]]
  if number == 124:
    return [float(inp[0]), complex(inp[1])]
  if number in (250, 405, 446, 617, 720, 763, 808):
    return [tuple(inp[0]), *inp[1:]]
  if number in (259, 401, 445):
    return [tuple(tuples(arg)) for arg in inp]
  if number == 278:
    return [tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])]
  if number == 307:
    return [tuple(inp[0]), inp[1], inp[2]]
  if number == 722:
    return [{k: tuple(v) for k, v in inp[0].items()}, *inp[1:]]
  if number == 252:
    return [complex(inp[0])]
  if number in (580, 615, 791):
    return list(_to_tuples(inp))
  return inp


def task_inputs(item: dict) -> list[list]:
  """Base then plus inputs of an EvalPlus task, as argument lists with their Python types."""
  inputs = list(item.get("base_input") or []) + list(item.get("plus_input") or [])
  task = str(item.get("task_id", item.get("id", "")))
  if task.startswith("Mbpp/") and "expected_output" not in item:  # JSON lost the types
    number = int(task.split("/")[-1])
    inputs = [_restore_mbpp(number, inp) for inp in inputs]
  return inputs


def _is_floats(x: Any) -> bool:
  if isinstance(x, float):
    return True
  if isinstance(x, (list, tuple)):
    return all(isinstance(i, float) for i in x)
  return False


def _poly(xs: Sequence[float], x: float) -> float:
  return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def outputs_match(
    out: Any, expected: Any, *, atol: float, entry_point: str, args: Sequence[Any]
) -> bool:
  """EvalPlus's per-test oracle on decoded values (both already plain Python data)."""
  try:
    if entry_point == "find_zero":  # HumanEval/32: any root is right
      return abs(_poly(*args, out)) <= max(atol, 1e-6)
    exact = out == expected
    if entry_point == "are_equivalent":  # Mbpp/164
      return True
    if entry_point == "sum_div":  # Mbpp/295
      exact = exact or out == 0
    elif entry_point in OUTPUT_NOT_NONE:
      return expected == (out is not None)
    if exact is True:
      return True
    if atol == 0 and _is_floats(expected):
      atol = 1e-6
    if atol == 0 or type(out) is not type(expected):
      return False
    if isinstance(expected, (list, tuple)) and len(out) != len(expected):
      return False
    np.testing.assert_allclose(out, expected, atol=atol)
    return True
  except BaseException:  # noqa: BLE001 - a mismatch of any kind
    return False


def _key(item: dict, inputs: list) -> str:
  h = hashlib.sha1()
  for part in (
      str(item.get("id")),
      item.get("prompt", ""),
      item.get("canonical_solution", ""),
      item.get("entry_point", ""),
      len(inputs),
  ):
    h.update(repr(part).encode())
  return h.hexdigest()


def reference_program(item: dict) -> str:
  """The canonical program: EvalPlus runs ``prompt + canonical_solution`` (for MBPP+ the prompt
  is a docstring and the solution complete; for HumanEval+ the solution is the body)."""
  return (item.get("prompt", "") or "") + (item.get("canonical_solution", "") or "")


def _call_job(
    program: str, entry: str, inputs: Sequence[list], limits=None, stop_on_failure: bool = True
) -> dict:
  job = {
      "call": program,
      "entry": entry,
      "inputs": [_harness.encode(list(a)) for a in inputs],
      "stop_on_failure": stop_on_failure,
  }
  if limits is not None:
    job["limits"] = list(limits)
  return job


def _reference_rows(items: Sequence[dict], spans: list[tuple[int, int, int]]) -> dict:
  """Canonical rows for (item index, start, stop) spans; a span whose run is killed is split in
  halves and retried, down to single inputs (which then count as a timeout)."""
  rows: dict[tuple[int, int, int], list] = {}
  while spans:
    jobs = [
        _call_job(
            reference_program(items[i]),
            items[i]["entry_point"],
            task_inputs(items[i])[a:b],
            stop_on_failure=False,
        )
        for i, a, b in spans
    ]
    retry = []
    for span, result in zip(spans, run_jobs(jobs, [MAX_RUN_S] * len(jobs))):
      i, a, b = span
      if result is not None and len(result) == b - a:
        rows[span] = result
      elif b - a > 1:
        retry += [(i, a, (a + b) // 2), (i, (a + b) // 2, b)]
      else:
        rows[span] = [["timeout", "reference run killed", MAX_RUN_S]]
    spans = retry
  return rows


def expected_outputs(items: Sequence[dict]) -> list[tuple[list, list[float]]]:
  """For each EvalPlus task: (expected outputs, canonical seconds per test), cached per process.
  An input on which the canonical solution fails gets an opaque expected value (never matched)."""
  keys = [_key(item, task_inputs(item)) for item in items]
  todo = {}
  for i, key in enumerate(keys):
    if "expected_output" in items[i]:  # given by the hub's test script
      outs = list(items[i]["expected_output"])
      if items[i]["entry_point"] in OUTPUT_NOT_NONE:
        outs = [o if isinstance(o, bool) else o is not None for o in outs]
      _EXPECTED[key] = (outs, [0.0] * len(outs))
    elif key not in _EXPECTED and key not in todo:
      todo[key] = i
  spans = [(i, 0, len(task_inputs(items[i]))) for i in todo.values()]
  rows = _reference_rows(items, spans)
  for key, i in todo.items():
    item = items[i]
    got = sorted((a, r) for (j, a, _), r in rows.items() if j == i)
    flat = [row for _, r in got for row in r]
    outs = [
        (_harness.decode(v) if s == "ok" else _harness.Opaque("error: " + str(v)))
        for s, v, _ in flat
    ]
    if item["entry_point"] in OUTPUT_NOT_NONE:  # EvalPlus keeps only "is not None"
      outs = [o if _failed(o) else o is not None for o in outs]
    _EXPECTED[key] = (outs, [float(t) for _, _, t in flat])
  return [_EXPECTED[k] for k in keys]


def _failed(expected: Any) -> bool:
  """Whether an expected output stands for a canonical run that failed (error or timeout)."""
  return isinstance(expected, _harness.Opaque) and str(expected.name).startswith("error")


def _chunks(seconds: Sequence[float], budget_s: float) -> list[tuple[int, int]]:
  """Consecutive input ranges whose canonical time sums to at most ``budget_s`` (at least one
  input each), so that even a slower correct solution finishes within one run's deadline."""
  spans, start, total = [], 0, 0.0
  for k, t in enumerate(seconds):
    if k > start and total + t > budget_s:
      spans.append((start, k))
      start, total = k, 0.0
    total += t
  if start < len(seconds) or not spans:
    spans.append((start, len(seconds)))
  return spans


def _candidate_program(item: dict, code: str) -> str:
  """The response's code; with the prompt's imports, or the whole prompt when the response is
  only a function body (a completion)."""
  prompt = item.get("prompt", "") or ""
  entry = item["entry_point"]
  if f"def {entry}" not in code and f"def {entry}" in prompt:
    return prompt + code
  imports = [line for line in prompt.splitlines() if line.startswith(("import ", "from "))]
  future = re.match(r"(?:from __future__ import [^\n]*\n)*", code).group()  # must stay first
  return future + "\n".join(imports + [code[len(future) :]])


def evalplus_scores(items: Sequence[dict], codes: Sequence[str | None]) -> list[float]:
  """1.0 for each (task, code) whose outputs match the canonical ones on every base and plus
  input (EvalPlus's "plus" pass; per-test limit max(MIN_TEST_S, TIME_FACTOR x canonical time)),
  else 0.0."""
  expected = expected_outputs(items)
  jobs, timeouts, where = [], [], []
  for i, (item, code) in enumerate(zip(items, codes)):
    if not code:
      continue
    outs, seconds = expected[i]
    if any(_failed(o) for o in outs):
      continue  # the canonical solution failed on an input: nothing can match it
    limits = [max(MIN_TEST_S, TIME_FACTOR * t) for t in seconds]
    inputs = task_inputs(item)
    program = _candidate_program(item, code)
    for a, b in _chunks(seconds, MAX_RUN_S / (2 * TIME_FACTOR)):
      jobs.append(_call_job(program, item["entry_point"], inputs[a:b], limits[a:b]))
      timeouts.append(sum(limits[a:b]) + 2.0)
      where.append((i, a, b))
  passed = {i: True for i, _, _ in where}
  for (i, a, b), rows in zip(where, run_jobs(jobs, timeouts)):
    if passed[i] and not _all_pass(items[i], expected[i][0][a:b], task_inputs(items[i])[a:b], rows):
      passed[i] = False
  return [float(passed.get(i, False)) for i in range(len(items))]


def _all_pass(item: dict, expected: list, inputs: list, rows: list | None) -> bool:
  if rows is None or len(rows) != len(expected):
    return False
  atol = float(item.get("atol") or 0)
  entry = item["entry_point"]
  for (status, value, _), exp, args in zip(rows, expected, inputs):
    if status != "ok":
      return False
    if not outputs_match(_harness.decode(value), exp, atol=atol, entry_point=entry, args=args):
      return False
  return True


def test_script_scores(
    items: Sequence[dict], codes: Sequence[str | None], timeout_s: float = 30.0
) -> list[float]:
  """For the hub's script format (a ``test`` field with ``check(candidate)``): 1.0 when the
  solution followed by the test script runs without error in the sandbox."""
  jobs, where = [], []
  for i, (item, code) in enumerate(zip(items, codes)):
    if not code:
      continue
    entry = item.get("entry_point")
    script = _candidate_program(item, code) if entry else code
    script += "\n\n" + item["test"] + "\n"
    if entry and "def check(" in item["test"]:
      script += f"\ncheck({entry})\n"
    jobs.append(
        {
            "call": script + "\ndef __passed__():\n  return True\n",
            "entry": "__passed__",
            "inputs": [[]],
        }
    )
    where.append(i)
  scores = [0.0] * len(items)
  for i, rows in zip(where, run_jobs(jobs, [timeout_s] * len(jobs))):
    scores[i] = float(bool(rows) and rows[0][0] == "ok" and rows[0][1] is True)
  return scores


# ---------------------------------------------------------------- CRUXEval


def parse_call_args(text: str) -> tuple | list[str] | None:
  """The positional arguments written inside ``f(...)`` (``"1, 2"`` is two, ``"(1, 2)"`` one): a
  tuple of values when all are literals, else the list of argument expressions (evaluated later
  in the sandbox); None when ``text`` is not an argument list or has keywords or starred args."""
  import ast

  text = (text or "").strip()
  if not text:
    return ()
  source = f"f({text})"
  try:
    node = ast.parse(source, mode="eval").body
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return None
  if (
      not isinstance(node, ast.Call)
      or node.keywords
      or any(isinstance(a, ast.Starred) for a in node.args)
  ):
    return None
  try:
    return tuple(ast.literal_eval(a) for a in node.args)
  except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
    return [ast.get_source_segment(source, a) for a in node.args]


def literal_value(text: str) -> tuple[bool, Any]:
  """(True, value) when ``text`` is a Python literal, else (False, None)."""
  import ast

  try:
    return True, ast.literal_eval((text or "").strip())
  except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
    return False, None


def call_outputs(
    jobs: Sequence[tuple[str, str, tuple | list[str]]], timeout_s: float = 3.0
) -> list[tuple[bool, Any]]:
  """For each (program, entry, args): (ran, decoded output) of ``entry(*args)`` in the sandbox;
  ``args`` is a tuple of values or a list of argument expressions (``parse_call_args``)."""
  harness_jobs = []
  for program, entry, args in jobs:
    job = _call_job(program, entry, [list(args)] if isinstance(args, tuple) else [])
    if isinstance(args, list):
      job.update(arg_exprs=list(args), inputs=[])
    harness_jobs.append(job)
  out = []
  for rows in run_jobs(harness_jobs, [timeout_s] * len(harness_jobs)):
    if rows and rows[0][0] == "ok":
      out.append((True, _harness.decode(rows[0][1])))
    else:
      out.append((False, None))
  return out


def expression_values(texts: Sequence[str], timeout_s: float = 3.0) -> list[tuple[bool, Any]]:
  """For each Python expression: (ok, decoded value), evaluated in the sandbox."""
  out = []
  for rows in run_jobs([{"expr": t} for t in texts], [timeout_s] * len(texts)):
    if rows and rows[0][0] == "ok":
      out.append((True, _harness.decode(rows[0][1])))
    else:
      out.append((False, None))
  return out
