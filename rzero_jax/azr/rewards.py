"""Absolute Zero rewards: the proposer's learnability reward and the solver's correctness reward."""

from __future__ import annotations

from typing import Sequence

import numpy as np

REWARD_VARIANTS = ("paper", "released")
INVALID = -1.0  # invalid (or malformed) proposal; malformed solver response
WRONG = -0.5  # well-formed but wrong solver response
TRIVIAL_RELEASED = -0.5  # released code: a valid proposal that is always or never solved


def _check_variant(variant: str) -> None:
  if variant not in REWARD_VARIANTS:
    raise ValueError(f"Unknown reward_variant {variant!r}: use 'paper' (default) or 'released'.")


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{names} differ in shape: {a.shape} vs {b.shape}.")


def solve_rates(correct: Sequence[Sequence[bool]]) -> np.ndarray:
  """Mean correctness per task of [tasks, rollouts] solver results (the learnability `r_bar`)."""
  c = np.asarray(correct, np.float64)
  if c.ndim != 2 or c.shape[1] == 0:
    raise ValueError(f"correct must be [tasks, rollouts] with rollouts >= 1, got shape {c.shape}.")
  return c.mean(axis=1)


def learnability(solve_rates: Sequence[float]) -> np.ndarray:
  """`1 - r` where `0 < r < 1`, else 0 (any shape): tasks always or never solved teach
  nothing."""
  r = np.asarray(solve_rates, np.float64)
  return np.where((r > 0.0) & (r < 1.0), 1.0 - r, 0.0)


def proposer_rewards(
    valid: Sequence[bool], solve_rates: Sequence[float], variant: str = "paper"
) -> np.ndarray:
  """Per-proposal rewards: -1 for an invalid (or malformed) proposal, else the learnability of
  its solve rate. released: a valid proposal with a solve rate of 0 or 1 gets -0.5 instead of 0.
  Solve rates of invalid proposals are ignored (they may be NaN)."""
  _check_variant(variant)
  ok = np.asarray(valid, bool)
  r = np.asarray(solve_rates, np.float64)
  _same_shape(ok, r, "valid and solve_rates")
  if np.any(ok & ~((r >= 0.0) & (r <= 1.0))):
    raise ValueError("solve_rates of valid proposals must lie in [0, 1].")
  r = np.where(ok, r, 0.5)
  reward = learnability(r)
  if variant == "released":
    reward = np.where((r <= 0.0) | (r >= 1.0), TRIVIAL_RELEASED, reward)
  return np.where(ok, reward, INVALID)


def solver_rewards(correct: Sequence[bool], well_formed: Sequence[bool]) -> np.ndarray:
  """1 for a correct answer, -0.5 for a well-formed wrong one, -1 for a malformed response."""
  c = np.asarray(correct, bool)
  ok = np.asarray(well_formed, bool)
  _same_shape(c, ok, "correct and well_formed")
  return np.where(ok, np.where(c, 1.0, WRONG), INVALID)
