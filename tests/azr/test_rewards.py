"""Absolute Zero rewards: learnability, proposer (paper / released) and solver rewards."""

import numpy as np
import pytest

from rzero_jax.azr import rewards


def test_learnability():
  np.testing.assert_allclose(
      rewards.learnability([0.0, 0.125, 0.5, 0.875, 1.0]), [0.0, 0.875, 0.5, 0.125, 0.0]
  )
  assert rewards.learnability([]).shape == (0,)
  assert rewards.learnability(0.25) == 0.75 and rewards.learnability([[0.5, 1.0]]).shape == (1, 2)


def test_solve_rates():
  np.testing.assert_allclose(
      rewards.solve_rates([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]), [0.5, 0.0, 1.0]
  )
  with pytest.raises(ValueError, match=r"\[tasks, rollouts\]"):
    rewards.solve_rates([1, 0])


def test_proposer_rewards_paper_and_released():
  valid = [True, True, True, False, False]
  rates = [0.25, 0.0, 1.0, 0.5, np.nan]
  np.testing.assert_allclose(rewards.proposer_rewards(valid, rates), [0.75, 0, 0, -1, -1])
  np.testing.assert_allclose(
      rewards.proposer_rewards(valid, rates, variant="released"), [0.75, -0.5, -0.5, -1, -1]
  )
  with pytest.raises(ValueError, match="Unknown reward_variant 'paperr'"):
    rewards.proposer_rewards(valid, rates, variant="paperr")
  np.testing.assert_allclose(
      rewards.proposer_rewards(valid, rates, "released"), [0.75, -0.5, -0.5, -1, -1]
  )
  with pytest.raises(ValueError, match="differ in shape"):
    rewards.proposer_rewards([True], [0.5, 0.5])
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    rewards.proposer_rewards([True, True], [0.5, np.nan])


def test_solver_rewards():
  np.testing.assert_allclose(
      rewards.solver_rewards([True, False, False], [True, True, False]), [1.0, -0.5, -1.0]
  )
  np.testing.assert_allclose(rewards.solver_rewards([True], [False]), [-1.0])  # malformed wins
  np.testing.assert_allclose(rewards.solver_rewards([[True, False]], [[True, True]]), [[1, -0.5]])
  with pytest.raises(ValueError, match="differ in shape"):
    rewards.solver_rewards([True, False], [True])
