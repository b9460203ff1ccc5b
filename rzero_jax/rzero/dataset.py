"""Dataset construction: keep the Challenger's questions the Solver is unsure about."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from rzero_jax.verify.voting import Vote, answer_key


@dataclasses.dataclass(frozen=True)
class SolverVotes:
  """The Solver's votes on a list of questions; per question: its `Vote`, the extracted answers,
  the completions' texts and each answer's cluster in the vote (-1: abstained)."""

  questions: list[str]
  votes: list[Vote]
  answers: list[list[str | None]]
  texts: list[list[str]]
  members: list[list[int]]


def normalize_question(question: str) -> str:
  """Whitespace-normalised question text, used to drop exact duplicates."""
  return " ".join(question.split())


def unique_questions(questions: Iterable[str | None]) -> list[str]:
  """Well-formed questions in first-seen order, exact duplicates (up to whitespace) dropped."""
  seen, out = set(), []
  for q in questions:
    if q is None:
      continue
    key = normalize_question(q)
    if key not in seen:
      seen.add(key)
      out.append(q)
  return out


def in_band(p_hat: float, delta: float) -> bool:
  """`|p_hat - 1/2| <= delta` (delta 0.25 keeps 3 to 7 agreeing votes out of 10)."""
  return abs(p_hat - 0.5) <= delta + 1e-12


# The released code's filter: 0.3 <= share of the majority among the non-empty answers <= 0.8.
RELEASED_BAND = (0.3, 0.8)
DATASET_FILTERS = ("paper", "released", "band")


def answered_share(p_hat: float, answers: Sequence[str | None]) -> float:
  """The majority's share among the answers that do not abstain (`voting.answer_key`; `p_hat`
  counts abstentions in m)."""
  answered = sum(answer_key(a) is not None for a in answers)
  return p_hat * len(answers) / answered if answered else 0.0


def keeps(
    p_hat: float,
    answers: Sequence[str | None],
    *,
    delta: float,
    filter: str = "paper",
    band: tuple[float, float] = (0.25, 0.75),
) -> bool:
  """paper: `|p_hat - 1/2| <= delta`; released: 0.3 <= majority share of non-empty answers <= 0.8;
  band: `band[0] <= p_hat <= band[1]` (an asymmetric band, e.g. (0.5, 0.8): keep only questions
  whose majority holds at least half the votes)."""
  if filter == "paper":
    return in_band(p_hat, delta)
  if filter == "band":
    return band[0] - 1e-12 <= p_hat <= band[1] + 1e-12
  if filter == "released":
    low, high = RELEASED_BAND
    return low - 1e-12 <= answered_share(p_hat, answers) <= high + 1e-12
  raise ValueError(f"Unknown dataset filter {filter!r}: use one of {DATASET_FILTERS}.")


def group_margin(counts: Sequence[int], m: int) -> float:
  """(largest cluster - second largest cluster) / m: how clearly the majority won (1 cluster:
  its share)."""
  if not counts or not m:
    return 0.0
  top = sorted(counts, reverse=True) + [0]
  return (top[0] - top[1]) / m


def select_questions(
    questions: Sequence[str],
    labels: Sequence[str | None],
    p_hats: Sequence[float],
    answers: Sequence[Sequence[str | None]],
    *,
    delta: float,
    filter: str = "paper",
    band: tuple[float, float] = (0.25, 0.75),
    margins: Sequence[float] | None = None,
    min_margin: float = 0.0,
) -> list[dict[str, Any]]:
  """Records (question, pseudo-label, p_hat, all extracted answers) of the kept questions: those
  with a pseudo-label that pass `keeps` (paper: `|p_hat - 1/2| <= delta`) and, with `margins`
  (see `group_margin`), whose margin is at least `min_margin`."""
  if not len(questions) == len(labels) == len(p_hats) == len(answers):
    raise ValueError("select_questions: questions, labels, p_hats and answers differ in length.")
  margins = [1.0] * len(questions) if margins is None else margins
  return [
      {"question": q, "label": label, "p_hat": float(p), "answers": list(a)}
      for q, label, p, a, g in zip(questions, labels, p_hats, answers, margins)
      if label is not None
      and keeps(p, a, delta=delta, filter=filter, band=band)
      and g + 1e-12 >= min_margin
  ]
