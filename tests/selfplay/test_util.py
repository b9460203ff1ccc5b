"""The shared machinery's small pieces: seeds stay what they were, run errors, tables."""

import json

import numpy as np
import pytest

from rzero_jax.rzero import loop as rzero_loop
from rzero_jax.selfplay import runner, util


def test_seeds_are_stable():
  # R-Zero's phases keep their indices (every earlier run's random numbers depend on them).
  assert [util.PHASE_IDS[p] for p in rzero_loop.PHASES] == [0, 1, 2, 3]
  expected = int(np.random.SeedSequence([7, 1, 2, 3]).generate_state(1)[0] & 0x7FFFFFFF)
  assert util.derive_seed(7, 1, "solver", 3) == expected
  assert util.derive_seed(7, "train", 0) != util.derive_seed(7, "seeding", 0)
  with pytest.raises(ValueError, match="unknown phase 'trian'"):  # a typo is no silent new seed
    util.derive_seed(7, "trian", 0)


def test_any_name_has_a_fixed_seed_word():
  # Names in the table keep their index (R-Zero's roles keep their LoRA seeds); any other name
  # gets a word from its SHA-256: fixed across processes and versions (not the salted `hash()`).
  assert [util.name_id(n) for n in ("challenger", "solver", "verifier")] == [0, 2, 8]
  assert util.name_id("actor") == 5821400252272040736
  assert util.name_id("critic_7") == 2562165754452007190
  ids = [util.name_id(n) for n in ("actor", "critic", "critic_7", "Actor", "", "é")]
  assert len(set(ids)) == len(ids) and min(ids) >= 2**32 > max(util.PHASE_IDS.values())
  assert util.derive_seed(0, 7, util.name_id("actor")) != util.derive_seed(0, 7, 0)


def test_resolve_callable_errors():
  assert util.resolve_callable("json:dumps") is json.dumps
  with pytest.raises(util.RunError, match="package.module:function"):
    util.resolve_callable("json.dumps")
  with pytest.raises(util.RunError, match="Cannot import"):
    util.resolve_callable("no_such_module_xyz:f")


def test_table():
  table = runner.format_rows([("a", "bb"), ("ccc", runner.fmt(0.5)), ("d", runner.fmt(None))])
  assert table.splitlines()[0] == "  a     bb" and table.splitlines()[2] == "ccc  0.500"
