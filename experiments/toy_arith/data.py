"""Synthetic arithmetic text in the R-Zero Challenger and Solver formats, over graded difficulty.

Everything here is a pure function of its arguments (and a `random.Random` for the generators):
the same seed gives the same text. A problem is an integer expression such as `37 + 4 * 2 - 9`
(ops `+ - *`, at most one pair of parentheses); its worked answer evaluates one binary operation
per line, in the usual order (parentheses, then `*`, then `+ -`, left to right), then `\\boxed{}`.

The prompts are the project's own (`rzero_jax.rzero.prompts`), so the base model is trained on
the exact text the R-Zero loop sends. Held-out problems are disjoint from the training text by
construction: a stable hash of the question text puts every question in exactly one of the two
partitions (`is_heldout`).
"""

from __future__ import annotations

import dataclasses
import random
import re
import zlib
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Level:
  """One difficulty level: operand count, digits of the `+ -` operands, parentheses rate."""

  operands: int
  max_digits: int
  paren_rate: float = 0.0


# Graded by the number of operations (1 to 5) and operand size. Every step is kept easy to learn:
# factors of `*` are one digit, and every intermediate value stays within 0..MAX_VALUE.
LEVELS: dict[int, Level] = {
    1: Level(2, 1),
    2: Level(3, 1),
    3: Level(3, 2, 0.3),
    4: Level(4, 2, 0.3),
    5: Level(5, 2, 0.3),
    6: Level(6, 2, 0.3),
}
MAX_VALUE = 99
HELDOUT_MODULUS = 8  # one question in 8 belongs to the held-out partition


def is_heldout(question: str) -> bool:
  """Whether a question belongs to the held-out partition (stable across runs and machines)."""
  return zlib.crc32(question.encode()) % HELDOUT_MODULUS == 0


def _is_easy(items: Sequence[str]) -> bool:
  steps, _ = solution_steps(items)
  return all(0 <= c <= MAX_VALUE and (op != "*" or max(a, b) <= 9) for a, op, b, c in steps)


def make_expression(rng: random.Random, difficulty: int) -> list[str]:
  """A random expression at `difficulty` (a key of LEVELS) as a list of items (numbers, ops,
  parentheses); drawn again until every step is easy (see LEVELS)."""
  if difficulty not in LEVELS:
    raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {difficulty!r}.")
  level = LEVELS[difficulty]
  while True:
    ops = [rng.choice("+-*") for _ in range(level.operands - 1)]
    items: list[str] = []
    for i in range(level.operands):
      factor = "*" in ops[max(i - 1, 0) : i + 1]
      digits = 1 if factor else rng.randint(1, level.max_digits)
      items += [str(rng.randint(1 if digits == 1 else 10, 10**digits - 1))]
      if i < len(ops):
        items.append(ops[i])
    if level.operands > 2 and rng.random() < level.paren_rate:
      left = 2 * rng.randrange(level.operands - 1)  # parenthesise operands left/2 and left/2 + 1
      items = items[:left] + ["("] + items[left : left + 3] + [")"] + items[left + 3 :]
    if _is_easy(items):
      return items


def expression_text(items: Sequence[str]) -> str:
  """`["(", "3", "+", "4", ")", "*", "2"]` -> `"(3 + 4) * 2"`."""
  text = " ".join(items)
  return text.replace("( ", "(").replace(" )", ")")


Slip = Callable[[int], int]


def _reduce_once(
    items: list[str], slip: Slip | None = None
) -> tuple[list[str], tuple[int, str, int, int]]:
  """Evaluates the next binary operation (parentheses first, then `*`, then `+ -`); `slip`
  may replace the result, which then feeds the later steps."""
  if "(" in items:
    lo, hi = items.index("("), items.index(")")
    inner, step = _reduce_once(items[lo + 1 : hi], slip)
    if len(inner) == 1:
      return items[:lo] + inner + items[hi + 1 :], step
    return items[: lo + 1] + inner + items[hi:], step
  i = items.index("*") if "*" in items else 1
  a, op, b = int(items[i - 1]), items[i], int(items[i + 1])
  c = a * b if op == "*" else a + b if op == "+" else a - b
  if slip is not None:
    c = slip(c)
  return items[: i - 1] + [str(c)] + items[i + 2 :], (a, op, b, c)


def solution_steps(
    items: Sequence[str], slip: Slip | None = None
) -> tuple[list[tuple[int, str, int, int]], int]:
  """The (a, op, b, result) steps of evaluating the expression, and the final value."""
  items, steps = list(items), []
  while len(items) > 1:
    items, step = _reduce_once(items, slip)
    steps.append(step)
  return steps, int(items[0])


def digit_slip(rng: random.Random, rate_per_digit: float) -> Slip:
  """A careless calculator: with probability `rate_per_digit` per digit of a result, one of its
  digits (chosen uniformly) is replaced by a different one (no leading zero)."""

  def slip(value: int) -> int:
    digits = list(str(abs(value)))
    if rng.random() >= rate_per_digit * len(digits):
      return value
    i = rng.randrange(len(digits))
    low = 1 if i == 0 and len(digits) > 1 else 0
    digits[i] = rng.choice([d for d in "0123456789"[low:] if d != digits[i]])
    return int("".join(digits)) * (-1 if value < 0 else 1)

  return slip


def make_problem(rng: random.Random, difficulty: int) -> tuple[str, int]:
  """A question text (`What is 37 + 48 * 2?`) and its exact integer answer."""
  items = make_expression(rng, difficulty)
  return f"What is {expression_text(items)}?", solution_steps(items)[1]


def expression_of(question: str) -> str:
  """The expression inside a question made by `make_problem`."""
  if not (question.startswith("What is ") and question.endswith("?")):
    raise ValueError(f"Not a toy arithmetic question: {question!r}.")
  return question[len("What is ") : -1]


_EXPRESSION_RE = re.compile(r"[\d\s+*()-]+")
MAX_ORACLE_CHARS = 200
MAX_ORACLE_DIGITS = 9


def _parse_sum(tokens: list[str], pos: int) -> tuple[int, int]:
  value, pos = _parse_product(tokens, pos)
  while pos < len(tokens) and tokens[pos] in "+-":
    op = tokens[pos]
    rhs, pos = _parse_product(tokens, pos + 1)
    value = value + rhs if op == "+" else value - rhs
  return value, pos


def _parse_product(tokens: list[str], pos: int) -> tuple[int, int]:
  value, pos = _parse_factor(tokens, pos)
  while pos < len(tokens) and tokens[pos] == "*":
    rhs, pos = _parse_factor(tokens, pos + 1)
    value *= rhs
  return value, pos


def _parse_factor(tokens: list[str], pos: int) -> tuple[int, int]:
  if pos >= len(tokens):
    raise ValueError("expression ends early")
  token = tokens[pos]
  if token == "-":
    value, pos = _parse_factor(tokens, pos + 1)
    return -value, pos
  if token == "(":
    value, pos = _parse_sum(tokens, pos + 1)
    if pos >= len(tokens) or tokens[pos] != ")":
      raise ValueError("unclosed parenthesis")
    return value, pos + 1
  if token.isdigit() and len(token) <= MAX_ORACLE_DIGITS:
    return int(token), pos + 1
  raise ValueError(f"unexpected {token!r}")


def true_answer(question: str) -> int | None:
  """The exact value of a `What is <integer expression>?` question (any nesting of `+ - *`,
  parentheses and unary minus), or None for any other text. Parses, never evaluates, the text:
  it is safe on model-written questions (the demo's oracle for pseudo-label accuracy)."""
  question = question.strip()
  if len(question) > MAX_ORACLE_CHARS:
    return None
  try:
    text = expression_of(question)
  except ValueError:
    return None
  if not _EXPRESSION_RE.fullmatch(text):
    return None
  return _parse_all(re.findall(r"\d+|[-+*()]", text))


def _parse_all(tokens: list[str]) -> int | None:
  try:
    value, pos = _parse_sum(tokens, 0)
  except ValueError:
    return None
  return value if pos == len(tokens) else None


def solver_completion(question: str, slip: Slip | None = None) -> str:
  """The worked answer: one `a op b = c` line per operation, then `\\boxed{value}`. With a
  `slip` (e.g. `digit_slip`), results may be wrong and the error carries on to the box."""
  items = expression_of(question).replace("(", "( ").replace(")", " )").split()
  steps, value = solution_steps(items, slip)
  lines = [f"{a} {op} {b} = {c}" for a, op, b, c in steps]
  return "\n".join(lines + [f"\\boxed{{{value}}}"])


def direct_completion(answer: int) -> str:
  """An answer given without working: just `\\boxed{answer}`."""
  return f"\\boxed{{{answer}}}"


def challenger_completion(question: str, answer: int) -> str:
  """The Challenger's output format: the question in tags, then its answer boxed."""
  return f"<question>{question}</question> \\boxed{{{answer}}}"


def sample_problems(
    rng: random.Random, weights: dict[int, float], count: int, *, heldout: bool = False
) -> list[tuple[str, int, int]]:
  """`count` (question, answer, difficulty) triples with difficulties drawn by `weights`, all
  from the training partition (or all from the held-out one when `heldout`)."""
  levels = sorted(weights)
  probs = [weights[k] for k in levels]
  out = []
  while len(out) < count:
    difficulty = rng.choices(levels, probs)[0]
    question, answer = make_problem(rng, difficulty)
    if is_heldout(question) == heldout:
      out.append((question, answer, difficulty))
  return out


def heldout_set(
    per_level: int, levels: Sequence[int] = (3, 4, 5), seed: int = 1234
) -> list[tuple[str, int, int]]:
  """A fixed evaluation set: `per_level` distinct held-out problems at each level in `levels`."""
  rng = random.Random(seed)
  out: list[tuple[str, int, int]] = []
  for level in levels:
    seen: set[str] = set()
    for _ in range(200 * per_level):
      question, answer, _ = sample_problems(rng, {level: 1.0}, 1, heldout=True)[0]
      if question not in seen:
        seen.add(question)
        out.append((question, answer, level))
      if len(seen) == per_level:
        break
    if len(seen) < per_level:
      raise ValueError(
          f"Level {level} has fewer than {per_level} distinct held-out problems: "
          "ask for fewer per level, or use harder levels."
      )
  return out


def labeled_set(count: int, seed: int, levels: Sequence[int] = (2, 3, 4, 5, 6)) -> list[dict]:
  """`count` distinct training-partition problems at `levels` (equally likely) with worked
  solutions, as SFT rows {"question", "response"}."""
  rng, seen, rows = random.Random(seed), set(), []
  while len(rows) < count:
    question, _, _ = sample_problems(rng, {k: 1.0 for k in levels}, 1)[0]
    if question not in seen:
      seen.add(question)
      rows.append({"question": question, "response": solver_completion(question)})
  return rows
