"""Answer extraction and scoring per benchmark kind; every score is in [0, 1].

* math: the last ``\\boxed{}`` against the gold through ``verify.answers`` (hard deadlines).
* multiple choice: the last boxed letter, else an "answer is (X)" / "Final Answer: X" line (the
  letter bare, in parentheses or in quotes); a response without a letter scores 0 (R-Zero's
  script guesses a random letter instead).
* BBEH: BBEH's own normalisation and fuzzy match, on the last boxed answer when there is one.
* code: EvalPlus's sanitizer (the definitions the entry point needs, from every python block, with
  their imports; usage examples and tests dropped) through the sandboxed EvalPlus tests.
* CRUXEval: the completed assertion from the last python block, checked by execution in the
  sandbox (output mode compares values; input mode runs ``f`` on the proposed input).
"""

from __future__ import annotations

import ast
import codeop
import functools
import re
import symtable
import textwrap
import warnings
from typing import Sequence

from rzero_jax.eval import codeeval
from rzero_jax.eval.benchmarks import LETTERS, resolve
from rzero_jax.verify.answers import (
    CHOICE_LETTER,
    MAX_RESPONSE_CHARS,
    equivalent_many,
    extract_boxed,
)

GRADE_TIMEOUT_S = 5.0


# ---------------------------------------------------------------- extraction

_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_ANSWER_LINE = re.compile(
    r"(?:answer\s*(?:is|:)|final\s+answer\s*(?:is|:)?)\s*:?\s*"
    rf"(?:\*\*|\$|\\\(|\s)*{CHOICE_LETTER}(?![A-Za-z])",
    re.I,
)


def choice_letter(response: str, num_options: int = 10) -> str | None:
  """The chosen option letter: from the last ``\\boxed{}``, else the last "answer is (X)" line
  (the letter bare, in parentheses or in quotes: ``'X'``, ``"X"``, ``“X”``); None when there is
  none (such a response scores 0)."""
  if not isinstance(response, str):
    return None
  valid = LETTERS[: max(1, min(num_options, len(LETTERS)))]
  boxed = extract_boxed(response[-MAX_RESPONSE_CHARS:])
  if boxed is not None:
    text = _TEXT.sub(r"\1", boxed).strip()
    m = re.fullmatch(CHOICE_LETTER + r"(?:[.:)]\s*.*)?", text, re.S)
    letter = (m.group(1) or m.group(2)).upper() if m else ""
    if letter and letter in valid:
      return letter
    m = re.search(rf"(?<![A-Za-z])([{valid}])(?![a-z])", text)
    if m:
      return m.group(1)
  for m in reversed(list(_ANSWER_LINE.finditer(response[-MAX_RESPONSE_CHARS:]))):
    letter, quoted = m.group(1) or m.group(2), m.group(1) is not None
    # a lower-case letter only when delimited, "(b)" or 'b' (a bare "a" may be the article)
    if letter.upper() in valid and (letter.isupper() or quoted or "(" in m.group(0)):
      return letter.upper()
  return None


def _bbeh_strip_latex(text: str) -> str:
  if text.startswith("$") and text.endswith("$"):
    text = text[1:-1]
  for wrapper in ("boxed{", "text{", "texttt{"):
    if wrapper in text and text.endswith("}"):
      text = text[:-1].split(wrapper)[1]
  return text


def bbeh_prediction(response: str) -> str:
  """BBEH's normalised prediction: the answer after "The answer is" (or the last boxed answer),
  lower-cased, LaTeX wrappers, ``**`` and a final period removed, first line only."""
  boxed = extract_boxed(response)
  answer = boxed if boxed is not None else response.strip()
  for prefix in (
      "The answer is:",
      "The final answer is ",
      "The final answer is: ",
      "The answer is ",
  ):
    if prefix in answer:
      answer = answer.split(prefix)[-1].strip()
  if answer.endswith("."):
    answer = answer[:-1]
  prediction = _bbeh_strip_latex(answer).lower()
  prediction = prediction.replace(", ", ",").replace("**", "").split("\n")[0]
  return prediction[:-1] if prediction.endswith(".") else prediction


def bbeh_match(prediction: str, reference: str) -> bool:
  """BBEH's ``fuzzy_match`` on a normalised prediction and reference."""
  reference = reference.strip().lower().replace(", ", ",")
  if prediction == reference:
    return True
  if len(prediction) == 3 and prediction[0] == "(" and prediction[-1] == ")":
    return prediction[1] == reference
  if len(reference) == 3 and reference[0] == "(" and reference[-1] == ")":
    return reference[1] == prediction
  try:
    if float(prediction) == float(reference):
      return True
  except ValueError:
    pass
  if prediction.replace("'", "") == reference.replace("'", ""):
    return True
  if f"[{reference}]" == prediction or f"[{prediction}]" == reference:
    return True
  return prediction.endswith("?") and prediction[:-1] == reference


def _quietly(fn):
  """``fn`` with warnings off: parsing model text warns about it (invalid escapes, ``is 1``)."""

  @functools.wraps(fn)
  def quiet(*args, **kwargs):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return fn(*args, **kwargs)

  return quiet


_BLOCK = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
_OPEN_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(?!.*```)(.*)$", re.S)
_PYTHON_TAGS = ("python", "py", "python3", "")


def _python_blocks(response: str) -> list[str]:
  """The fenced python (or untagged) blocks in order, then an unterminated final one."""
  blocks, end = [], 0
  for m in _BLOCK.finditer(response):
    if m.group(1).lower() in _PYTHON_TAGS:
      blocks.append(m.group(2))
    end = m.end()
  tail = _OPEN_BLOCK.search(response, end)
  return blocks + ([tail.group(1)] if tail else [])


@_quietly
def code_block(response: str) -> str | None:
  """The last fenced python (or untagged) block; an unterminated final block counts when no
  block is complete; else the whole response when it parses as Python; else None."""
  if not isinstance(response, str) or not response.strip():
    return None
  blocks = [(lang.lower(), body) for lang, body in _BLOCK.findall(response)]
  python = [b for lang, b in blocks if lang in _PYTHON_TAGS]
  if python:
    return python[-1]
  tail = _OPEN_BLOCK.search(response)
  if tail:
    return tail.group(1)
  return response if _parse(response) is not None else None


# ---------------------------------------------------------------- code sanitizer (EvalPlus's)

# Parse attempts and characters parsed, per response, looking for the largest parseable range.
MAX_SANITIZE_PARSES, MAX_SANITIZE_CHARS = 64, 1 << 20
_DEFINITION = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# What a line that begins a program looks like: a statement keyword, a decorator, a comment or a
# docstring, or a name that is called, indexed or assigned ("Here is the code:" is not).
_CODE_START = re.compile(
    r"[@#]|\"\"\"|'''|(?:async\s+)?def\s|(?:class|import|from|if|for|while|with|try|assert)\b"
    r"|[A-Za-z_][\w.]*\s*(?:[\[(,]|[-+*/%&|^@<>]*=)"
)


def _parse(source: str) -> ast.Module | None:
  try:
    return ast.parse(source)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return None


def _may_start(line: str) -> bool:
  """Whether a program can begin with ``line``: top-level Python, complete or not (``def f(x):``
  can, "Here is the code:" cannot); a cheap test on the line alone."""
  if not _CODE_START.match(line):
    return False
  try:
    codeop.compile_command(line, "<line>", "exec")
    return True
  except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
    return False


def _largest_parseable(text: str, budget: list[int]) -> tuple[str, ast.Module] | None:
  """(source, tree) of ``text`` when it parses, else of its longest run of whole lines that parses
  (EvalPlus's ``code_extract``), found from each line that may start a program by cutting at the
  reported syntax error; ``budget`` ([parses, characters] left) is shared by a response's calls."""
  tree = _parse(text)
  if tree is not None:
    return text, tree
  lines = text.split("\n")
  best, best_size, i = None, 0, 0
  while i < len(lines) and min(budget) > 0:
    if not _may_start(lines[i]):
      i += 1
      continue
    end, found = len(lines), None
    while end > i and min(budget) > 0:
      chunk = "\n".join(lines[i:end])
      budget[0] -= 1
      budget[1] -= len(chunk) + 1
      try:
        found = chunk, ast.parse(chunk)
        break
      except SyntaxError as e:
        bad = i + (e.lineno or end - i) - 1  # the line the parser stopped at
        end = min(end - 1, max(bad, i))
      except (ValueError, RecursionError, MemoryError):
        end -= 1
    if found is None:
      i += 1
      continue
    size = sum(1 for line in lines[i:end] if line.strip())
    if size > best_size:
      best, best_size = found, size
    i = end
  return best


def _reads(source: str) -> set[str]:
  """The module-level names that ``source`` reads: at its top level, and the globals that its
  functions, classes, lambdas and comprehensions use (their own locals are not names here)."""
  try:
    top = symtable.symtable(source, "<solution>", "exec")
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return set()
  names, tables = set(), [top]
  while tables:
    table = tables.pop()
    inner = table is not top  # inside a function or class: only what it takes from the module
    names.update(
        sym.get_name()
        for sym in table.get_symbols()
        if (sym.is_global() if inner else sym.is_referenced())
    )
    tables.extend(table.get_children())
  return names


def _segment(lines: list[str], node: ast.stmt) -> str:
  """``node``'s source text (``ast.get_source_segment`` on lines split once); a definition as
  whole lines, its decorators included."""
  if isinstance(node, _DEFINITION):
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return "\n".join(lines[first - 1 : node.end_lineno])
  start, end = node.lineno - 1, node.end_lineno - 1
  if start == end:
    return lines[start].encode()[node.col_offset : node.end_col_offset].decode()
  head = lines[start].encode()[node.col_offset :].decode()
  tail = lines[end].encode()[: node.end_col_offset].decode()
  return "\n".join([head, *lines[start + 1 : end], tail])


def _target_names(target: ast.expr) -> list[str]:
  if isinstance(target, ast.Name):
    return [target.id]
  if isinstance(target, ast.Starred):
    return _target_names(target.value)
  if isinstance(target, (ast.Tuple, ast.List)):
    return [name for t in target.elts for name in _target_names(t)]
  return []  # an attribute or item: a mutation, not a definition


def _bound_names(node: ast.stmt) -> list[str]:
  """The names that a top-level definition, assignment or import binds (``*``: a star import);
  none for any other statement."""
  if isinstance(node, _DEFINITION):
    return [node.name]
  if isinstance(node, (ast.Import, ast.ImportFrom)):
    return [(a.asname or a.name).split(".")[0] for a in node.names]
  if isinstance(node, ast.Assign):
    return [name for t in node.targets for name in _target_names(t)]
  if isinstance(node, ast.AnnAssign) and node.value is not None:
    return _target_names(node.target)
  return []


@_quietly
def sanitize(blocks: Sequence[str], entry_point: str) -> str | None:
  """EvalPlus's sanitizer on Python's ``ast``: the top-level definitions (functions, classes,
  assignments; a later one replaces an earlier one of the same name) that ``entry_point`` needs,
  found across all ``blocks`` (each its largest parseable part), in their order, after the
  imports that they use. Usage and test code (calls, ``print``, ``assert``, ``if __name__``
  blocks, loops) is dropped. None when no block defines ``entry_point``."""
  budget = [MAX_SANITIZE_PARSES, MAX_SANITIZE_CHARS]
  defined: dict[str, tuple[tuple[int, int, int], str]] = {}  # name -> (where, source text)
  imports: list[tuple[tuple[int, int, int], str, list[str]]] = []
  for b, block in enumerate(blocks):
    text = textwrap.dedent(block.replace("\r\n", "\n").replace("\r", "\n"))
    parsed = _largest_parseable(text, budget)
    if parsed is None:
      continue
    lines = parsed[0].split("\n")
    for node in parsed[1].body:
      names = _bound_names(node)
      if isinstance(node, (ast.Import, ast.ImportFrom)):  # __future__ ones first, always kept
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        imports.append(((0 if future else 1, b, node.lineno), _segment(lines, node), names))
      elif names:
        defined.update(dict.fromkeys(names, ((2, b, node.lineno), _segment(lines, node))))
  if entry_point not in defined:
    return None
  needed, read, todo = {entry_point}, set(), [entry_point]
  while todo:
    names = _reads(defined[todo.pop()][1])
    read |= names
    for name in names & defined.keys() - needed:
      needed.add(name)
      todo.append(name)
  kept = {defined[name] for name in needed} | {
      (where, text)
      for where, text, names in imports
      if where[0] == 0 or "*" in names or any(n in read and n not in defined for n in names)
  }
  return "\n".join(dict.fromkeys(text for _, text in sorted(kept))) + "\n"


def solution_code(response: str, entry_point: str | None) -> str | None:
  """The code that a code benchmark runs: ``sanitize`` over the response's python blocks, else
  over the whole response (its largest parseable part); when nothing defines ``entry_point``
  (e.g. a bare function body, which runs after the prompt), ``code_block``'s choice."""
  if not isinstance(response, str) or not response.strip():
    return None
  if entry_point:
    blocks = _python_blocks(response)
    code = sanitize(blocks, entry_point) if blocks else None
    code = code if code is not None else sanitize([response], entry_point)
    if code is not None:
      return code
  return code_block(response)


def _split_assertion(text: str) -> tuple[str, str] | None:
  """(call arguments, expected) of the last ``[assert] f(ARGS) == EXPECTED`` line in ``text``."""
  import ast

  for line in reversed(text.strip().splitlines()):
    line = line.strip()
    if not line.startswith(("assert", "f(")):
      continue
    try:
      node = ast.parse(line).body[0]
    except (SyntaxError, ValueError, RecursionError, MemoryError, IndexError):
      continue
    test = node.test if isinstance(node, ast.Assert) else getattr(node, "value", None)
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.left, ast.Call)
        and not test.left.keywords
    ):
      args = ", ".join(ast.get_source_segment(line, a) or "" for a in test.left.args)
      return args, ast.get_source_segment(line, test.comparators[0]) or ""
  return None


def crux_answer(response: str, mode: str) -> str | None:
  """The model's CRUXEval answer, as text: the right side (output mode) or the arguments inside
  ``f(...)`` (input mode) of the last ``assert f(..) == X`` line; without one, the last boxed
  answer, else the last line of the python block (or of the response), ``f(...)`` unwrapped."""
  if not isinstance(response, str) or not response.strip():
    return None
  block = code_block(response) or response
  parts = _split_assertion(block) or _split_assertion(response)
  if parts is not None:
    return parts[1 if mode == "o" else 0]
  answer = extract_boxed(response)
  if answer is None:
    lines = [line for line in block.strip().splitlines() if line.strip()]
    if not lines:
      return None
    answer = lines[-1].strip()
  m = re.fullmatch(r"f\((.*)\)", answer.strip(), re.S)
  if mode == "i" and m:
    return m.group(1)
  return answer


def extract(name: str, item: dict, response: str) -> str | None:
  """The answer that ``score`` judges, as text (for the per-item records)."""
  kind = resolve(name).kind
  if not isinstance(response, str):
    return None
  if kind == "math":
    return extract_boxed(response[-MAX_RESPONSE_CHARS:])
  if kind == "choice":
    return choice_letter(response, len(item.get("options") or LETTERS))
  if kind == "bbeh":
    return bbeh_prediction(response[-MAX_RESPONSE_CHARS:])
  if kind == "code":
    return solution_code(response, item.get("entry_point"))
  return crux_answer(response, "o" if kind == "crux_o" else "i")


# ---------------------------------------------------------------- scoring


def _as_item(name: str, item: dict) -> dict:
  """``item`` as ``load_benchmark`` returns it (a raw file row is normalised first)."""
  bench = resolve(name)
  if item.get("benchmark") == bench.name:
    return item
  normalized = bench.normalize(item, 0)
  if "id" in item:
    normalized["id"] = str(item["id"])
  normalized["benchmark"] = bench.name
  return normalized


def score_many(name: str, items: Sequence[dict], responses: Sequence[str]) -> list[float]:
  """``score`` for many (item, response) pairs at once (grading and sandbox runs are batched)."""
  if len(items) != len(responses):
    raise ValueError(f"score_many: {len(items)} items but {len(responses)} responses")
  kind = resolve(name).kind
  items = [_as_item(name, it) for it in items]
  answers = [extract(name, it, r) for it, r in zip(items, responses)]
  if kind == "math":
    ok = equivalent_many(
        [(a, it["answer"]) for a, it in zip(answers, items)], timeout_s=GRADE_TIMEOUT_S
    )
    return [float(x) for x in ok]
  if kind == "choice":
    return [float(a is not None and a == it["answer"]) for a, it in zip(answers, items)]
  if kind == "bbeh":
    return [float(a is not None and bbeh_match(a, it["answer"])) for a, it in zip(answers, items)]
  if kind == "code":
    return _code_scores(items, answers)
  if kind == "crux_o":
    return _crux_o_scores(items, answers)
  return _crux_i_scores(items, answers)


def _code_scores(items: list[dict], codes: list[str | None]) -> list[float]:
  diff = [i for i, it in enumerate(items) if "base_input" in it or "plus_input" in it]
  script = [i for i in range(len(items)) if i not in set(diff)]
  scores = [0.0] * len(items)
  for indices, fn in ((diff, codeeval.evalplus_scores), (script, codeeval.test_script_scores)):
    if indices:
      for i, s in zip(indices, fn([items[i] for i in indices], [codes[i] for i in indices])):
        scores[i] = s
  return scores


def _crux_o_scores(items: list[dict], answers: list[str | None]) -> list[float]:
  scores = [0.0] * len(items)
  exprs, where = [], []
  for i, (item, answer) in enumerate(zip(items, answers)):
    if answer is None:
      continue
    ok, gold = codeeval.literal_value(item["output"])
    if not ok:
      continue
    is_literal, value = codeeval.literal_value(answer)
    if is_literal:
      scores[i] = float(_same(value, gold))
    else:  # an expression (the official check evaluates it): evaluated in the sandbox
      exprs.append(answer)
      where.append((i, gold))
  for (i, gold), (ok, value) in zip(where, codeeval.expression_values(exprs)):
    scores[i] = float(ok and _same(value, gold))
  return scores


def _crux_i_scores(items: list[dict], answers: list[str | None]) -> list[float]:
  jobs, where = [], []
  for i, (item, answer) in enumerate(zip(items, answers)):
    args = codeeval.parse_call_args(answer) if answer is not None else None
    ok, gold = codeeval.literal_value(item["output"])
    if args is not None and ok:
      jobs.append((item["code"], "f", args))
      where.append((i, gold))
  scores = [0.0] * len(items)
  for (i, gold), (ok, value) in zip(where, codeeval.call_outputs(jobs)):
    scores[i] = float(ok and _same(value, gold))
  return scores


def _same(a, b) -> bool:
  """``a == b`` on plain decoded data (the official check is ``assert gold == answer``)."""
  try:
    return bool(a == b)
  except Exception:  # noqa: BLE001
    return False


def score(name: str, item: dict, response: str) -> float:
  """The score in [0, 1] of ``response`` to ``item`` of benchmark ``name`` (see module doc)."""
  return score_many(name, [item], [response])[0]


__all__ = [
    "score",
    "score_many",
    "extract",
    "choice_letter",
    "bbeh_match",
    "bbeh_prediction",
    "code_block",
    "sanitize",
    "solution_code",
    "crux_answer",
]
