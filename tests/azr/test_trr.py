"""TRR++ advantages against an independent numpy reference."""

import itertools

import numpy as np
import pytest

from rzero_jax.azr.trr import task_relative_advantages

TYPES = ("deduction", "abduction", "induction")
ROLES = ("propose", "solve")


def reference(rewards, types, roles, eps=1e-6):
  """Masks per (type, role) pair; population std via the second moment."""
  rewards, types, roles = np.asarray(rewards, float), np.asarray(types), np.asarray(roles)
  out = np.zeros_like(rewards)
  for t, r in itertools.product(np.unique(types), np.unique(roles)):
    mask = (types == t) & (roles == r)
    n = mask.sum()
    if n < 2:
      continue
    values = rewards[mask]
    mean = values.sum() / n
    std = np.sqrt(((values - mean) ** 2).sum() / n)
    if np.ptp(values) == 0:
      continue
    out[mask] = (values - mean) / (std + eps)
  return out


def test_matches_reference_on_random_batches():
  rng = np.random.default_rng(0)
  for trial in range(20):
    n = int(rng.integers(1, 60))
    types = rng.choice(TYPES, n)
    roles = rng.choice(ROLES, n)
    rewards = rng.choice([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0], n) if trial % 2 else rng.normal(size=n)
    eps = [1e-6, 0.0, 0.1][trial % 3]
    np.testing.assert_allclose(
        task_relative_advantages(rewards, types, roles, eps),
        reference(rewards, types, roles, eps),
        atol=1e-12,
    )


def test_groups_are_separate():
  rewards = [1.0, 0.0, 5.0, 7.0, 3.0]
  types = ["deduction", "deduction", "deduction", "deduction", "abduction"]
  roles = ["solve", "solve", "propose", "propose", "solve"]
  adv = task_relative_advantages(rewards, types, roles, eps=0.0)
  np.testing.assert_allclose(adv, [1.0, -1.0, -1.0, 1.0, 0.0])


def test_single_and_constant_groups_get_zero():
  adv = task_relative_advantages([0.1, 0.1, 0.1, 4.0], [0, 0, 0, 1], ["s"] * 4)
  assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]
  assert task_relative_advantages([], [], []).shape == (0,)


def test_population_std():
  adv = task_relative_advantages([0.0, 1.0, 2.0], ["d"] * 3, ["s"] * 3, eps=0.0)
  np.testing.assert_allclose(adv, np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0 / 3.0))


def test_bad_inputs_give_one_line_errors():
  with pytest.raises(ValueError, match="differ in length"):
    task_relative_advantages([1.0, 2.0], ["d"], ["s", "s"])
  with pytest.raises(ValueError, match="finite"):
    task_relative_advantages([np.nan, 1.0], ["d", "d"], ["s", "s"])
  with pytest.raises(ValueError, match="one-dimensional"):
    task_relative_advantages([[1.0]], ["d"], ["s"])
  with pytest.raises(ValueError, match="eps"):
    task_relative_advantages([1.0], ["d"], ["s"], eps=-1.0)
