"""Final-answer extraction and mathematical equivalence, graded in a killable pool.

Pipeline for one (pred, gold) pair:
1. Refuse oversized or dangerous inputs outright (length, bracket depth, long digit
   runs, power towers, huge factorials/binomials): False, no parsing.
2. Parent-side fast paths with no symbolic algebra: canonical-string equality,
   exact rational comparison of plain numbers (thousands commas, decimals, fractions,
   percent as a sign, word or abbreviation, scientific notation, units/degrees
   stripped; "32, 349" is a list, not 32,349), choice letters (bare, in parentheses
   or in quotes), ``\\text{}`` words.
3. Everything else goes to a persistent pool of worker processes running
   Math-Verify (LaTeX -> SymPy via an ANTLR grammar; model text is never passed to
   ``sympify``/``parse_expr``). Each item has a soft in-worker alarm and a hard
   parent-side SIGKILL at ``timeout_s``; a killed worker is replaced.

``equivalent`` is asymmetric like Math-Verify (a gold inequality accepts a predicted
interval, not the reverse); ``symmetric=True`` in ``equivalent_many`` ORs both ways.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import sys
import threading
from fractions import Fraction
from typing import Sequence

from rzero_jax.verify import _pool

MAX_RESPONSE_CHARS = 1 << 18
MAX_ANSWER_CHARS = 1000
MAX_DEPTH = 24
MAX_DIGITS = 400
MAX_EXPONENT_NESTING = 2
MAX_RESULT_DIGITS = 1e6

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)


def extract_boxed(text: str | None) -> str | None:
  """Content of the last ``\\boxed{...}``/``\\fbox{...}`` (stripped); None if absent or unbalanced.

  Braces nest; escaped braces ``\\{``/``\\}`` do not count.
  """
  if not text:
    return None
  last = None
  for last in _BOX.finditer(text):
    pass
  if last is None:
    return None
  depth = 1
  for token in _BRACE_TOKEN.finditer(text, last.end()):
    if token.group() == "{":
      depth += 1
    elif token.group() == "}":
      depth -= 1
      if depth == 0:
        return text[last.end() : token.start()].strip()
  return None


# ---------------------------------------------------------------- refusal screen


def _bracket_depth(s: str) -> int:
  depth = best = 0
  for c in s:
    if c in "{([":
      depth += 1
      best = max(best, depth)
    elif c in "})]":
      depth -= 1
  return best


def _exponent_nesting(s: str) -> int:
  """Deepest nesting of exponents, e.g. 2 for ``e^{x^2}``."""
  stack: list[bool] = []
  best = 0
  i = 0
  while i < len(s):
    c = s[i]
    if c == "^":
      j = i + 1
      while j < len(s) and s[j].isspace():
        j += 1
      best = max(best, sum(stack) + 1)
      if j < len(s) and s[j] in "{(":
        stack.append(True)
        i = j
    elif c in "{(":
      stack.append(False)
    elif c in "})" and stack:
      stack.pop()
    i += 1
  return best


def _strip_group(t: str) -> str:
  t = re.sub(r"\\(?:left|right)\b", "", t).strip()
  while len(t) >= 2 and t[0] + t[-1] in ("{}", "()") and _balanced(t[1:-1]):
    t = t[1:-1].strip()
  return t


def _balanced(t: str) -> bool:
  depth = 0
  for c in t:
    depth += c in "{("
    depth -= c in "})"
    if depth < 0:
      return False
  return depth == 0


def _log10_value(t: str) -> float | None:
  """log10 of a pure integer power tower such as ``5^{5^5}``; None if not one."""
  t = _strip_group(t)
  if t.isdigit():
    n = t.lstrip("0")
    return math.log10(int(n[:18])) + max(0, len(n) - 18) if n else 0.0
  m = re.fullmatch(r"(\d+)\s*\^\s*(.+)", t, re.S)
  if not m:
    return None
  exponent = _log10_value(m.group(2))
  base = int(m.group(1)[:18])
  if exponent is None or base <= 1:
    return None if exponent is None else 0.0
  return math.inf if exponent > 15 else 10.0**exponent * math.log10(base)


def _operand_before(s: str, end: int) -> str:
  """The digit run or bracketed group that ends just before ``end``."""
  i = end
  while i > 0 and s[i - 1].isspace():
    i -= 1
  j = i
  if j > 0 and s[j - 1] in "})":
    depth = 0
    while j > 0:
      j -= 1
      depth += s[j] in "})"
      depth -= s[j] in "{("
      if depth == 0:
        break
  else:
    while j > 0 and s[j - 1].isdigit():
      j -= 1
  return s[j:i]


def _operand_after(s: str, start: int) -> str:
  """The bracketed group or digit run/character that starts at ``start``."""
  i = start
  while i < len(s) and s[i].isspace():
    i += 1
  if i < len(s) and s[i] in "{(":
    depth = 0
    for j in range(i, len(s)):
      depth += s[j] in "{("
      depth -= s[j] in "})"
      if depth == 0:
        return s[i : j + 1]
    return s[i:]
  m = re.match(r"\d+|.", s[i:], re.S)
  return m.group() if m else ""


def _too_big(s: str) -> bool:
  """Powers, factorials or binomials whose value would have absurdly many digits."""
  for m in re.finditer(r"\^", s):
    base = _operand_before(s, m.start())
    value = _log10_value(base + "^" + _operand_after(s, m.end())) if base else None
    if value is not None and value > MAX_RESULT_DIGITS:
      return True
  for m in re.finditer(r"!", s):
    value = _log10_value(_operand_before(s, m.start()))
    if value is not None and value > 4:
      return True
  for m in re.finditer(r"\\binom\s*", s):
    value = _log10_value(_operand_after(s, m.end()))
    if value is not None and value > 6:
      return True
  return False


_DOUBLE_SUPERSCRIPT = re.compile(r"\^\s*(?:\d+|[A-Za-z]|\\[A-Za-z]+)\s*\^")  # a^b^c: a tower


def refuse(answer: str) -> bool:
  """True for answers that are never parsed: oversized, too nested, or astronomically large."""
  if len(answer) > MAX_ANSWER_CHARS:
    return True
  s = answer.replace("**", "^")
  return (
      _bracket_depth(s) > MAX_DEPTH
      or re.search(r"\d{%d}" % (MAX_DIGITS + 1), s) is not None
      or _DOUBLE_SUPERSCRIPT.search(s) is not None
      or _exponent_nesting(s) > MAX_EXPONENT_NESTING
      or _too_big(s)
  )


# ---------------------------------------------------------------- normalisation

_SPACING = re.compile(r"(?<!\\)(?:\\[,;:> ]|~|\\q?quad\b|\\(?:displaystyle|textstyle)\b)")
_NEGATIVE_SPACE = re.compile(r"\s*(?<!\\)\\!\s*")  # ``10,\! 000``: glued, a thousands comma
_DELIMS = re.compile(r"\\(?:left|right|mleft|mright|big|Big|bigg|Bigg)[lr]?\b\.?")
_PERCENT_UNIT = r"(?:percent(?:age)?|per[\s-]?cent|pct)s?\.?"
# A percent unit after a number (or a closing brace/bracket): a word or abbreviation, bare,
# in ``\text{}``, or after the closing ``$`` of "$28$ percent"; not one followed by more words.
_PERCENT_WORD = re.compile(
    rf"(?<=[\d}})])\s*\$?\s*(?:\\(?:text|textrm|mbox|mathrm)\s*\{{\s*(?:{_PERCENT_UNIT}|\\?%)\s*\}}"
    rf"|{_PERCENT_UNIT}(?!\s*[A-Za-z]))",
    re.I,
)
_GAP = re.compile(r"\s+")
_THOUSANDS_GROUP = re.compile(r"\d{3}(?!\d)")


def _gap(m: re.Match) -> str:
  """What a run of whitespace becomes: one space between two letters ("no solution") and after a
  number's comma that a three-digit group follows ("32, 349" is the list 32 and 349, unlike the
  number 32,349), else nothing."""
  s, a, b = m.string, m.start(), m.end()
  before = s[a - 1 : a]
  if before.isascii() and before.isalpha() and s[b : b + 1].isascii() and s[b : b + 1].isalpha():
    return " "
  if before == "," and s[a - 2 : a - 1].isdigit() and _THOUSANDS_GROUP.match(s, b):
    return " "
  return ""


def canonical(answer: str) -> str:
  """A meaning-preserving canonical string: the key for exact-match grouping."""
  s = answer.strip()
  s = re.sub(r"^\$+|\$+$", "", s).strip()
  s = re.sub(r"^\\\(|\\\)$", "", s)
  s = _DELIMS.sub("", s)
  s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s).replace("{,}", ",")
  s = re.sub(r"\\varnothing(?![A-Za-z])|\\\{\s*\\\}", r"\\emptyset", s)
  s = _PERCENT_WORD.sub(r"\\%", _NEGATIVE_SPACE.sub("", s))
  s = _GAP.sub(_gap, _SPACING.sub(" ", s))
  return s.rstrip(".")


_TEXT_WRAP = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox)" r"\{([^{}]*)\}"
)
_NUM = r"(?:\d{1,3}(?:[,']\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_SNUM = rf"[-+]?(?:{_NUM})"
_NUMBER_FORMS = [
    (re.compile(rf"({_SNUM})"), lambda m: _dec(m[1])),
    (
        re.compile(rf"({_SNUM})(?:\\times|\\cdot|\*)10\^\{{?([-+]?\d{{1,4}})\}}?"),
        lambda m: _dec(m[1]) * Fraction(10) ** int(m[2]),
    ),
    (
        re.compile(rf"({_SNUM})[eE]([-+]?\d{{1,4}})"),
        lambda m: _dec(m[1]) * Fraction(10) ** int(m[2]),
    ),
    (re.compile(rf"10\^\{{?([-+]?\d{{1,4}})\}}?"), lambda m: Fraction(10) ** int(m[1])),
    (
        re.compile(rf"([-+]?)\\frac\{{({_SNUM})\}}\{{({_SNUM})\}}"),
        lambda m: _sign(m[1]) * _div(_dec(m[2]), _dec(m[3])),
    ),
    (re.compile(r"([-+]?)\\frac(\d)(\d)"), lambda m: _sign(m[1]) * _div(_dec(m[2]), _dec(m[3]))),
    (re.compile(rf"({_SNUM})/({_SNUM})"), lambda m: _div(_dec(m[1]), _dec(m[2]))),
    (
        re.compile(r"([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}"),
        lambda m: _sign(m[1]) * (int(m[2]) + _div(Fraction(int(m[3])), Fraction(int(m[4])))),
    ),
    (
        re.compile(r"([-+]?)(\d*)\.(\d*)\\overline\{(\d{1,50})\}"),
        lambda m: _sign(m[1]) * _repeating(m[2], m[3], m[4]),
    ),
]


def _repeating(whole: str, fixed: str, period: str) -> Fraction:
  """Value of whole.fixed(period) with the period repeating, e.g. 0.1(6) = 1/6."""
  head = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
  return head + Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))


def _dec(t: str) -> Fraction:
  return Fraction(t.replace(",", "").replace("'", ""))


def _sign(t: str) -> int:
  return -1 if t == "-" else 1


def _div(a: Fraction, b: Fraction) -> Fraction:
  if b == 0:
    raise ZeroDivisionError
  return a / b


def _strip_decorations(s: str) -> str:
  """Drops a variable prefix (``x=``), currency, trailing units and degree marks."""
  s = re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?(?:=|\\approx)", "", s)
  s = re.sub(r"^(?:\\\$|\$|\\text\{\$\})", "", s)
  s = re.sub(r"(?:\\text|\\mbox|\\mathrm)\{\s*[A-Za-z][A-Za-z\s./]*\}(?:\^\{?\d\}?)?$", "", s)
  s = re.sub(r"(?:\^\{?\\circ\}?|\\circ|°|\\degree)$", "", s)
  return s


def _number(answer: str) -> tuple[Fraction, bool, bool] | None:
  """(value, is_percent, has_decimal_point) for a plain number, else None."""
  s = _strip_decorations(canonical(answer))
  percent = s.endswith("%")
  s = re.sub(r"\\?%$", "", s)
  s = re.sub(r"^\{(.*)\}$", r"\1", s)
  for pattern, value in _NUMBER_FORMS:
    m = pattern.fullmatch(s)
    if m:
      try:
        return value(m), percent, "." in s
      except (ZeroDivisionError, ValueError):
        return None
  return None


def _numbers_equal(a: str, b: str) -> bool | None:
  x, y = _number(a), _number(b)
  if x is None or y is None:
    return None
  xs = {x[0], x[0] / 100} if x[1] else {x[0]}
  ys = {y[0], y[0] / 100} if y[1] else {y[0]}
  if xs & ys:
    return True
  return None if x[2] or y[2] else False


QUOTES = "\"'`\u2018\u2019\u201c\u201d"  # ASCII, backtick and curly quotes
# One option letter: in parentheses (either may be missing: "B)"), in quotes ('B', "B", “B”, with
# an optional period inside) or bare; the letter is group 1 when quoted, else group 2.
CHOICE_LETTER = rf"(?:[{QUOTES}]([A-Za-z])\.?[{QUOTES}]|\(?([A-Za-z])\)?)"


def _choice(answer: str) -> str | None:
  s = _TEXT_WRAP.sub(r"\1", canonical(answer))
  m = re.fullmatch(CHOICE_LETTER + r"\.?", s.strip())
  return (m.group(1) or m.group(2)).upper() if m else None


def _text(answer: str) -> str | None:
  """Lower-cased words of an answer that is a single ``\\text{...}``, else None."""
  m = _TEXT_WRAP.fullmatch(answer.strip().strip("$").strip())
  if not m or not re.fullmatch(r"[A-Za-z][A-Za-z\s'-]*", m.group(1).strip()):
    return None
  return " ".join(m.group(1).lower().split())


def _words(answer: str) -> str:
  return " ".join(answer.strip().lower().split())


def quick_equivalent(pred: str, gold: str) -> bool | None:
  """Decides the pairs that need no symbolic algebra; None when undecided."""
  if refuse(pred) or refuse(gold):
    return False
  cp, cg = canonical(pred), canonical(gold)
  if not cp or not cg:
    return False
  if cp == cg:
    return True
  numeric = _numbers_equal(cp, cg)
  if numeric is not None:
    return numeric
  x, y = _choice(cp), _choice(cg)
  if x is not None and y is not None:
    return x == y
  tp, tg = _text(pred), _text(gold)
  if tp is not None and tg is not None:
    return tp == tg
  if (tp is not None or tg is not None) and (tp or _words(pred)) == (tg or _words(gold)):
    return True
  return None


# ---------------------------------------------------------------- worker-side engine


def engine_equivalent(pred: str, gold: str, symmetric: bool) -> bool:
  """Math-Verify comparison (runs inside a grading worker; may be slow)."""
  from math_verify import verify

  p, g = _mv_parse(canonical(pred)), _mv_parse(canonical(gold))
  if not p or not g or _numerically_different(p[0], g[0]):
    return False
  return bool(
      verify(g, p, timeout_seconds=None) or (symmetric and verify(p, g, timeout_seconds=None))
  )


def _numerically_different(a, b) -> bool:
  """True when two plain SymPy expressions differ by more than 1e-6 (relative to max(1, |.|))
  at two random positive points: then Math-Verify, whose loosest numeric test rounds to 6
  decimals, would answer False too, only after a slow ``simplify``. False means "unknown".
  """
  import sympy
  from sympy.core.function import AppliedUndef

  if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)) or a.is_Symbol or b.is_Symbol:
    return False
  if a.atoms(AppliedUndef) or b.atoms(AppliedUndef):
    return False
  symbols = sorted(a.free_symbols | b.free_symbols, key=str)
  for seed in (0.6180339887, 1.2360679775):
    point = {s: sympy.Rational(str(round(seed + 0.1 * k, 10))) for k, s in enumerate(symbols)}
    try:
      x, y = complex(a.evalf(30, subs=point)), complex(b.evalf(30, subs=point))
    except (TypeError, ValueError, ArithmeticError):
      return False
    if not (math.isfinite(abs(x)) and math.isfinite(abs(y))):
      return False
    if abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y)):
      return False
  return True


def _mv_parse(answer: str) -> list:
  from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

  config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
  return parse("\\boxed{" + answer + "}", extraction_config=config, parsing_timeout=None)


# ---------------------------------------------------------------- pooled grading

_POOL: _pool.WorkerPool | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def default_workers() -> int:
  """One grading process per core, at most 8."""
  return max(1, min(os.cpu_count() or 1, 8))


def grading_pool(workers: int | None = None) -> _pool.WorkerPool:
  """The module's persistent grading pool, started on first use with ``workers`` processes
  (default ``default_workers()``); a forked child starts its own."""
  global _POOL, _POOL_PID
  with _POOL_LOCK:
    if _POOL is None or _POOL.closed or _POOL_PID != os.getpid():
      root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
      boot = (
          "import sys; sys.path.insert(0, sys.argv[1]); "
          "from rzero_jax.verify._grade_worker import main; main()"
      )
      env = {"PATH": os.defpath, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
      _POOL = _pool.WorkerPool(
          [sys.executable, "-I", "-c", boot, root], workers or default_workers(), env=env
      )
      _POOL_PID = os.getpid()
    return _POOL


def shutdown() -> None:
  """Stops the grading pool (it restarts on next use)."""
  with _POOL_LOCK:
    if _POOL is not None and _POOL_PID == os.getpid():
      _POOL.close()


atexit.register(shutdown)


def _as_text(answer) -> str | None:
  """Strings as they are, plain numbers (e.g. a dataset's integer gold) as text, else None."""
  if isinstance(answer, str):
    return answer
  if isinstance(answer, (int, float, Fraction)) and not isinstance(answer, bool):
    return str(answer)
  return None


def equivalent_many(
    pairs: Sequence[tuple[str, str]], *, symmetric: bool = False, timeout_s: float = 5.0
) -> list[bool]:
  """``equivalent`` for many (pred, gold) pairs at once; ``symmetric`` ORs both directions.

  Undecided pairs are deduplicated and graded in parallel in the pool, each killed
  at ``timeout_s`` (counted from when a worker picks it up).
  """
  if timeout_s <= 0:
    raise ValueError(f"timeout_s must be positive, got {timeout_s}")
  results: list[bool | None] = []
  todo: dict[tuple[str, str], list[int]] = {}
  for i, (pred, gold) in enumerate(pairs):
    pred, gold = _as_text(pred), _as_text(gold)
    if pred is None or gold is None:
      results.append(False)
      continue
    quick = quick_equivalent(pred, gold)
    results.append(quick)
    if quick is None:
      todo.setdefault((pred, gold), []).append(i)
  if todo:
    requests = [
        {"pred": p, "gold": g, "symmetric": symmetric, "soft_s": 0.8 * timeout_s} for p, g in todo
    ]
    replies = grading_pool().map(requests, [timeout_s] * len(requests))
    for indices, reply in zip(todo.values(), replies):
      for i in indices:
        results[i] = reply.get("equal") is True
  return [bool(r) for r in results]


def equivalent(pred: str, gold: str, *, timeout_s: float = 5.0) -> bool:
  """Whether the final answer ``pred`` is mathematically equivalent to ``gold``."""
  return equivalent_many([(pred, gold)], timeout_s=timeout_s)[0]


def _answer_of(text: str | None) -> str | None:
  if not isinstance(text, str) or len(text) > MAX_RESPONSE_CHARS:
    return None
  return extract_boxed(text)


def grade(responses: Sequence[str], golds: Sequence[str], *, timeout_s: float = 5.0) -> list[bool]:
  """Extracts each response's last boxed answer and compares it with its gold answer.

  A gold that itself contains ``\\boxed{}`` is reduced to its content. Responses over
  ``MAX_RESPONSE_CHARS`` or without a balanced box grade False.
  """
  if len(responses) != len(golds):
    raise ValueError(f"grade: got {len(responses)} responses but {len(golds)} golds")
  preds = [_answer_of(r) for r in responses]
  gold_answers = [_answer_of(g) if isinstance(g, str) and _BOX.search(g) else g for g in golds]
  return equivalent_many(list(zip(preds, gold_answers)), timeout_s=timeout_s)
