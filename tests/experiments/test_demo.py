"""Every variant of the embedded R-Zero demo is a valid run config, and a wrong name fails clearly."""

import pytest

from experiments import demo
from rzero_jax.rzero import loop


@pytest.mark.parametrize("variant", demo.VARIANTS)
def test_every_variant_is_a_valid_config(variant):
  loop.validate_config(demo.get_config(variant))


def test_aimed_challenger_aims_at_the_band_it_keeps():
  c = demo.get_config("aimed")
  assert c.dataset.band_low <= c.challenger.reward_peak <= c.dataset.band_high
  assert demo.get_config("").challenger.reward_peak == 0.5  # the paper's default is untouched
  best = demo.get_config("verifier")  # the best configuration builds on it
  assert best.challenger.reward_peak == c.challenger.reward_peak and best.dataset.replay
  assert best.solver.prompts_per_update == best.solver.prompts_per_step  # one update per batch


def test_unknown_variant_names_the_known_ones():
  with pytest.raises(ValueError, match=":verifier"):
    demo.get_config("verifer")
