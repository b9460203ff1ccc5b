"""R-Zero rewards: the Challenger's uncertainty-minus-repetition reward and the Solver's reward."""

from __future__ import annotations

from typing import Sequence

import re

import numpy as np

from rzero_jax.verify.answers import extract_boxed
from rzero_jax.verify.repetition import cluster_questions

REWARD_VARIANTS = ("paper", "released")
REPETITION_DENOMINATORS = ("well_formed", "batch")
# The released code's format check: reasoning in <think>...</think>, then a boxed answer.
_THINK_THEN_BOXED = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)


def _check_variant(variant: str) -> None:
  if variant not in REWARD_VARIANTS:
    raise ValueError(f"Unknown reward_variant {variant!r}: use 'paper' (default) or 'released'.")


def uncertainty_reward(p_hat: np.ndarray, peak: float = 0.5) -> np.ndarray:
  """The paper's `1 - 2 |p_hat - 1/2|` (peak 1/2): 1 when the Solver's votes split half and half,
  0 when unanimous. Another `peak` in (0, 1) moves the top of the triangle there (`p_hat / peak`
  below it, `(1 - p_hat) / (1 - peak)` above), still 0 at p_hat = 0 and 1."""
  p = np.asarray(p_hat, np.float64)
  return np.where(p <= peak, p / peak, (1.0 - p) / (1.0 - peak))


def repetition_penalties(
    questions: Sequence[str | None],
    *,
    tau: float = 0.5,
    lam: float = 1.0,
    denominator: str = "well_formed",
) -> tuple[np.ndarray, int]:
  """Per-completion repetition penalty `lam * |cluster| / B` and the number of clusters.

  Well-formed questions (not None) are clustered by BLEU distance (average linkage, merging below
  `tau`); malformed completions get 0. B is the number of well-formed questions ("well_formed",
  ours: a batch with many format failures does not dilute the penalty) or of all completions of
  the step ("batch", the reference code's choice).
  """
  if denominator not in REPETITION_DENOMINATORS:
    raise ValueError(
        f"Unknown repetition denominator {denominator!r}: use one of " f"{REPETITION_DENOMINATORS}."
    )
  valid = [i for i, q in enumerate(questions) if q is not None]
  penalty = np.zeros(len(questions))
  if not valid:
    return penalty, 0
  labels = np.asarray(cluster_questions([questions[i] for i in valid], tau))
  size = len(valid) if denominator == "well_formed" else len(questions)
  penalty[valid] = lam * np.bincount(labels)[labels] / size
  return penalty, len(set(labels.tolist()))


def challenger_rewards(
    p_hat: Sequence[float],
    well_formed: Sequence[bool],
    repetition: Sequence[float],
    *,
    variant: str = "paper",
    peak: float = 0.5,
) -> np.ndarray:
  """Per-completion Challenger rewards.

  paper:    `max(0, r_unc - r_rep)`, and 0 for a completion without a well-formed question.
  released: the reference code's `min(p, 1 - p) - r_rep` (no clip), and `-1 - r_rep` for a
            format failure.
  `p_hat` entries of malformed completions are ignored. `peak` moves the uncertainty reward's
  top (`uncertainty_reward`; the released `min(p, 1 - p)` is half of it).
  """
  _check_variant(variant)
  ok = np.asarray(well_formed, bool)
  p = np.where(ok, np.asarray(p_hat, np.float64), peak)
  rep = np.asarray(repetition, np.float64)
  if variant == "paper":
    return np.where(ok, np.maximum(0.0, uncertainty_reward(p, peak) - rep), 0.0)
  return np.where(ok, 0.5 * uncertainty_reward(p, peak) - rep, -1.0 - rep)


def solver_well_formed(completion: str, *, variant: str = "paper") -> bool:
  """The Solver's format: paper: a `\\boxed{}` answer; released: `<think>...</think>` and then a
  `\\boxed{}` answer (the reference code's format term)."""
  _check_variant(variant)
  if variant == "paper":
    return extract_boxed(completion) is not None
  return _THINK_THEN_BOXED.fullmatch(completion) is not None


def solver_rewards(
    correct: Sequence[bool], well_formed: Sequence[bool], *, variant: str = "paper"
) -> np.ndarray:
  """paper: 1 when the answer is the pseudo-label's answer by the vote's own rule
  (`voting.same_answers`: exactly the answers the vote would count for that label), else 0.
  released: `0.9 * correct + 0.1 * format` (format: see `solver_well_formed`)."""
  _check_variant(variant)
  c = np.asarray(correct, np.float64)
  if variant == "paper":
    return c
  return 0.9 * c + 0.1 * np.asarray(well_formed, np.float64)
