"""Absolute Zero rewards: the proposer's learnability reward and the solver's correctness reward."""

from __future__ import annotations

from typing import Sequence

import numpy as np

REWARD_VARIANTS = ("paper", "released")
INVALID = -1.0       # invalid (or malformed) proposal; malformed solver response
WRONG = -0.5         # well-formed but wrong solver response
TRIVIAL_RELEASED = -0.5  # released code: a valid proposal that is always or never solved


def _check_variant(variant: str) -> None:
  if variant not in REWARD_VARIANTS:
    raise ValueError(f"Unknown reward_variant {variant!r}: use 'paper' (default) or 'released'.")


def _vector(values: Sequence, dtype, name: str) -> np.ndarray:
  array = np.asarray(values, dtype)
  if array.ndim != 1:
    raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}.")
  return array


def solve_rates(correct: Sequence[Sequence[bool]]) -> np.ndarray:
  """Mean correctness per task of [tasks, rollouts] solver results (the learnability `r_bar`)."""
  c = np.asarray(correct, np.float64)
  if c.ndim != 2 or c.shape[1] == 0:
    raise ValueError(f"correct must be [tasks, rollouts] with rollouts >= 1, got shape {c.shape}.")
  return c.mean(axis=1)


def learnability(solve_rates: Sequence[float]) -> np.ndarray:
  """`1 - r` where `0 < r < 1`, else 0: tasks always or never solved teach nothing."""
  r = _vector(solve_rates, np.float64, "solve_rates")
  return np.where((r > 0.0) & (r < 1.0), 1.0 - r, 0.0)


def proposer_rewards(valid: Sequence[bool], solve_rates: Sequence[float], *,
                     variant: str = "paper") -> np.ndarray:
  """Per-proposal rewards: -1 for an invalid (or malformed) proposal, else the learnability of
  its solve rate. released: a valid proposal with a solve rate of 0 or 1 gets -0.5 instead of 0.
  Solve rates of invalid proposals are ignored (they may be NaN)."""
  _check_variant(variant)
  ok = _vector(valid, bool, "valid")
  r = _vector(solve_rates, np.float64, "solve_rates")
  if ok.shape != r.shape:
    raise ValueError(f"valid and solve_rates differ in length: {ok.size} vs {r.size}.")
  r = np.where(ok, r, 0.5)
  reward = learnability(r)
  if variant == "released":
    reward = np.where((r <= 0.0) | (r >= 1.0), TRIVIAL_RELEASED, reward)
  return np.where(ok, reward, INVALID)


def solver_rewards(correct: Sequence[bool], well_formed: Sequence[bool]) -> np.ndarray:
  """1 for a correct answer, -0.5 for a well-formed wrong one, -1 for a malformed response."""
  c = _vector(correct, bool, "correct")
  ok = _vector(well_formed, bool, "well_formed")
  if c.shape != ok.shape:
    raise ValueError(f"correct and well_formed differ in length: {c.size} vs {ok.size}.")
  return np.where(ok, np.where(c, 1.0, WRONG), INVALID)
