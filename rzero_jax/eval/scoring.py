"""Answer extraction and scoring per benchmark kind; every score is in [0, 1].

* math: the last ``\\boxed{}`` against the gold through ``verify.answers`` (hard deadlines).
* multiple choice: the last boxed letter, else an "answer is (X)" / "Final Answer: X" line; a
  response without a letter scores 0 (R-Zero's script guesses a random letter instead).
* BBEH: BBEH's own normalisation and fuzzy match, on the last boxed answer when there is one.
* code: the last ```python block (else the whole response) through the sandboxed EvalPlus tests.
* CRUXEval: the completed assertion from the last python block, checked by execution in the
  sandbox (output mode compares values; input mode runs ``f`` on the proposed input).
"""

from __future__ import annotations

import re
from typing import Sequence

from rzero_jax.eval import codeeval
from rzero_jax.eval.benchmarks import LETTERS, resolve
from rzero_jax.verify.answers import MAX_RESPONSE_CHARS, equivalent_many, extract_boxed

GRADE_TIMEOUT_S = 5.0


# ---------------------------------------------------------------- extraction

_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_ANSWER_LINE = re.compile(
    r"(?:answer\s*(?:is|:)|final\s+answer\s*(?:is|:)?)\s*:?\s*"
    r"(?:\*\*|\$|\\\(|\s)*\(?([A-Z])\)?(?![A-Za-z])",
    re.I,
)


def choice_letter(response: str, num_options: int = 10) -> str | None:
  """The chosen option letter: from the last ``\\boxed{}``, else the last "answer is (X)" line;
  None when there is none (such a response scores 0)."""
  if not isinstance(response, str):
    return None
  valid = LETTERS[: max(1, min(num_options, len(LETTERS)))]
  boxed = extract_boxed(response[-MAX_RESPONSE_CHARS:])
  if boxed is not None:
    text = _TEXT.sub(r"\1", boxed).strip()
    m = re.fullmatch(r"\(?([A-Za-z])\)?(?:[.:)]\s*.*)?", text, re.S)
    if m and m.group(1).upper() in valid:
      return m.group(1).upper()
    m = re.search(rf"(?<![A-Za-z])([{valid}])(?![a-z])", text)
    if m:
      return m.group(1)
  for m in reversed(list(_ANSWER_LINE.finditer(response[-MAX_RESPONSE_CHARS:]))):
    if m.group(1).upper() in valid and (m.group(1).isupper() or m.group(0).count("(")):
      return m.group(1).upper()
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


_BLOCK = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)


def code_block(response: str) -> str | None:
  """The last fenced python (or untagged) block; an unterminated final block counts; else the
  whole response when it parses as Python; else None."""
  if not isinstance(response, str) or not response.strip():
    return None
  blocks = [(lang.lower(), body) for lang, body in _BLOCK.findall(response)]
  python = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
  if python:
    return python[-1]
  tail = re.search(r"```(?:python|py)?[ \t]*\n(?!.*```)(.*)$", response, re.S)
  if tail:
    return tail.group(1)
  try:
    compile(response, "<response>", "exec")
    return response
  except (SyntaxError, ValueError):
    return None


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
    return code_block(response)
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
    "crux_answer",
]
