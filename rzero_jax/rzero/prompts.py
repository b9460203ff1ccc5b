"""R-Zero prompts (our own wording of the spec's requirements) and Challenger output parsing."""

from __future__ import annotations

import re

CHALLENGER_SYSTEM = (
    "You are an expert problem setter for mathematics competitions. Think privately about a "
    "brand-new, non-trivial problem from any area of mathematics that only a few strong high-school "
    "students could solve, and work out its answer. Then output exactly one block of the form "
    "<question>...</question> containing the problem statement, followed by \\boxed{answer} with "
    "its final answer, and nothing else."
)
CHALLENGER_USER = (
    "Write one new, hard math question now, as <question>...</question> followed by "
    "\\boxed{answer}."
)
SOLVER_SYSTEM = "Solve the problem. Reason step by step, then put your final answer in \\boxed{}."

MAX_QUESTION_CHARS = 4000
_QUESTION_RE = re.compile(r"<question>(.*?)</question>", re.DOTALL)


def challenger_messages() -> list[dict[str, str]]:
  """The fixed Challenger chat prompt."""
  return [
      {"role": "system", "content": CHALLENGER_SYSTEM},
      {"role": "user", "content": CHALLENGER_USER},
  ]


def solver_messages(question: str) -> list[dict[str, str]]:
  """The Solver chat prompt for one question."""
  return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": question}]


def parse_question(completion: str) -> str | None:
  """The question inside the Challenger's last complete `<question>...</question>` block (a draft
  block followed by a final one gives the final one, as in the reference), or None when there is
  no complete block or the last one is empty or absurdly long (a format failure)."""
  blocks = _QUESTION_RE.findall(completion)
  if not blocks:
    return None
  question = blocks[-1].rpartition("<question>")[2].strip()
  if not question or len(question) > MAX_QUESTION_CHARS:
    return None
  return question


def parse_challenger_answer(completion: str) -> str | None:
  """The Challenger's own boxed answer after its last `</question>` (None when there is none)."""
  from rzero_jax.verify.answers import extract_boxed

  head, sep, tail = completion.rpartition("</question>")
  return extract_boxed(tail) if sep else None
