"""R-Zero building blocks: question parsing, rewards, dataset selection, batch layout."""

import json

import numpy as np
import pytest

from experiments import demo
from rzero_jax.io import read_jsonl, write_jsonl
from rzero_jax.rzero import dataset, loop, prompts, rewards
from rzero_jax.selfplay.util import RunError


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<question>What is 2+3?</question> \\boxed{5}", "What is 2+3?"),
        ("think...\n<question>\n  Find x.\n</question>", "Find x."),
        ("no block here \\boxed{3}", None),
        ("<question></question>", None),
        ("<question>a</question><question>b</question>", "b"),
        (
            "<question>draft</question> on reflection: <question> final </question> \\boxed{1}",
            "final",
        ),
        ("<question>a</question><question></question>", None),
        ("<question>a <question>b</question>", "b"),
        ("<question>ok</question> then <question>unterminated", "ok"),
        ("<question>unterminated", None),
        ("<question>" + "x" * 4001 + "</question>", None),
    ],
)
def test_parse_question(text, expected):
  assert prompts.parse_question(text) == expected


def test_prompts_meet_the_spec():
  system = prompts.challenger_messages()[0]["content"]
  assert "<question>" in system and "\\boxed" in system
  assert prompts.solver_messages("Q?") == [
      {"role": "system", "content": prompts.SOLVER_SYSTEM},
      {"role": "user", "content": "Q?"},
  ]
  assert "\\boxed{}" in prompts.SOLVER_SYSTEM


def test_uncertainty_reward_values():
  np.testing.assert_allclose(
      rewards.uncertainty_reward([0.0, 0.3, 0.5, 0.7, 1.0]), [0.0, 0.6, 1.0, 0.6, 0.0]
  )


def test_uncertainty_reward_peak():
  p = [0.0, 0.3, 0.5, 0.75, 0.9, 1.0]
  np.testing.assert_allclose(
      rewards.uncertainty_reward(p, peak=0.75), [0.0, 0.4, 2 / 3, 1.0, 0.4, 0.0]
  )
  np.testing.assert_allclose(
      rewards.uncertainty_reward(p, peak=0.5), 1 - 2 * np.abs(np.array(p) - 0.5)
  )
  rep = [0.0, 0.1, 0.0, 0.5, 0.0, 0.0]
  ok = [True] * 5 + [False]
  np.testing.assert_allclose(
      rewards.challenger_rewards(p, ok, rep, peak=0.75), [0.0, 0.3, 2 / 3, 0.5, 0.4, 0.0]
  )
  np.testing.assert_allclose(
      rewards.challenger_rewards(p, ok, rep, variant="released", peak=0.75),
      [0.0, 0.1, 1 / 3, 0.0, 0.2, -1.0],
  )


def test_challenger_reward_paper_and_released():
  p = [0.5, 0.9, 0.3, 0.5]
  ok = [True, True, True, False]
  rep = [0.25, 0.5, 0.9, 0.25]
  np.testing.assert_allclose(rewards.challenger_rewards(p, ok, rep), [0.75, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(
      rewards.challenger_rewards(p, ok, rep, variant="released"), [0.25, -0.4, -0.6, -1.25]
  )
  with pytest.raises(ValueError, match="reward_variant"):
    rewards.challenger_rewards(p, ok, rep, variant="papr")


def test_solver_rewards():
  np.testing.assert_allclose(rewards.solver_rewards([1, 0, 0], [1, 1, 0]), [1, 0, 0])
  np.testing.assert_allclose(
      rewards.solver_rewards([1, 0, 0], [1, 1, 0], variant="released"), [1.0, 0.1, 0.0]
  )


def test_released_solver_format_needs_think_then_boxed():
  ok = "<think>2 + 2 = 4</think> so the answer is \\boxed{4}"
  assert rewards.solver_well_formed(ok, variant="released")
  assert rewards.solver_well_formed(ok)
  for text in [
      "\\boxed{4}",
      "\\boxed{4} <think>late</think>",
      "<think>no answer</think>",
      "<think>unclosed \\boxed{4}",
  ]:
    assert not rewards.solver_well_formed(text, variant="released"), text
  assert rewards.solver_well_formed("\\boxed{4}") and not rewards.solver_well_formed("4")
  formats = [rewards.solver_well_formed(t, variant="released") for t in (ok, "\\boxed{4}")]
  np.testing.assert_allclose(
      rewards.solver_rewards([1, 1], formats, variant="released"), [1.0, 0.9]
  )


def test_repetition_penalty_denominators():
  qs = [
      "what is 2 plus 3 now",
      None,
      "what is 2 plus 3 now",
      "compute the area of a circle of radius 4",
      None,
  ]
  ours, clusters = rewards.repetition_penalties(qs, tau=0.5, lam=1.0)
  np.testing.assert_allclose(ours, [2 / 3, 0, 2 / 3, 1 / 3, 0])
  assert clusters == 2
  reference, _ = rewards.repetition_penalties(qs, denominator="batch")
  np.testing.assert_allclose(reference, [2 / 5, 0, 2 / 5, 1 / 5, 0])
  assert rewards.repetition_penalties([None, None])[1] == 0
  with pytest.raises(ValueError, match="denominator"):
    rewards.repetition_penalties(qs, denominator="rollouts")


def test_released_dataset_filter_counts_only_non_empty_answers():
  # 10 votes: 4 agree, 5 abstain -> p_hat 0.4 (paper band keeps it), 4/5 = 0.8 of the answers.
  answers = [
      ["7"] * 4 + ["8"] + [None] * 5,
      ["7"] * 4 + ["8"] * 6,
      ["7"] * 9 + ["8"],
      ["7"] * 2 + ["8", "9"] + [None] * 6,
  ]
  p_hats = [0.4, 0.6, 0.9, 0.2]
  labels = ["7", "8", "7", "7"]
  qs = ["q1", "q2", "q3", "q4"]
  paper = dataset.select_questions(qs, labels, p_hats, answers, delta=0.25)
  released = dataset.select_questions(qs, labels, p_hats, answers, delta=0.25, filter="released")
  assert [r["question"] for r in paper] == ["q1", "q2"]
  assert [r["question"] for r in released] == ["q1", "q2", "q4"]  # q4: 2 of 4 answers = 0.5
  assert dataset.answered_share(0.4, answers[0]) == pytest.approx(0.8)
  assert dataset.answered_share(0.0, [None] * 3) == 0.0
  with pytest.raises(ValueError, match="filter"):
    dataset.keeps(0.5, ["1"], delta=0.25, filter="strict")


def test_released_variant_config():
  from rzero_jax.rzero.config import default_config, released_variant

  c = released_variant(default_config())
  assert (
      c.reward_variant,
      c.dataset.votes,
      c.dataset.filter,
      c.challenger.repetition_denominator,
      c.fresh_optimizer_each_phase,
  ) == ("released", 9, "released", "batch", True)


def test_dataset_band_and_duplicates(tmp_path):
  qs = dataset.unique_questions(["A  b", None, "A b", "C"])
  assert qs == ["A  b", "C"]
  kept = dataset.select_questions(
      ["q1", "q2", "q3", "q4", "q5"],
      ["1", "2", None, "4", "5"],
      [0.3, 0.8, 0.5, 0.75, 0.2],
      [["1"] * 3, ["2"], [None], ["4"], ["5"]],
      delta=0.25,
  )
  assert [r["question"] for r in kept] == ["q1", "q4"]
  path = str(tmp_path / "d" / "iter_1.jsonl")
  write_jsonl(path, kept)
  assert read_jsonl(path) == json.loads(json.dumps(kept))


def test_band_matches_spec_for_ten_votes():
  kept = [k for k in range(11) if dataset.in_band(k / 10, 0.25)]
  assert kept == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("peak", [0.0, 1.0, 1.5])
def test_reward_peak_outside_unit_interval_is_a_config_error(peak):
  c = demo.get_config("smoke")
  c.challenger.reward_peak = peak
  with pytest.raises(RunError, match="reward_peak must be in"):
    loop.validate_config(c)


def test_role_train_sections_are_train_config_defaults_but_micro_batches():
  from rzero_jax.rzero.config import default_config
  from rzero_jax.selfplay.config import TRAIN_FIELDS, train_section
  from rzero_jax.training import TrainConfig

  c = default_config()
  for role in ("challenger", "solver", "verifier"):
    section = json.loads(c[role].train.to_json())  # in the config's order
    assert list(section) == list(TRAIN_FIELDS)
    assert section == {f: getattr(TrainConfig(), f) for f in TRAIN_FIELDS} | {"micro_batch_size": 8}
    TrainConfig(**section)  # every field is one of TrainConfig's
  assert list(json.loads(train_section(entropy_coef=0.1).to_json()))[-1] == "entropy_coef"
  with pytest.raises(ValueError, match="entropy_coeff"):
    train_section(entropy_coeff=0.1)


def test_tis_cap_is_a_role_train_field_but_not_the_verifiers():
  from rzero_jax.selfplay.roles import train_config

  c = demo.get_config("smoke")
  c.solver.train.tis_cap = 2.0  # listed in every role's train section (default None: off)
  loop.validate_config(c)
  assert train_config(c.solver, "solver", "float32").tis_cap == 2.0
  c.verifier.update(enabled=True, prompts_per_update=c.verifier.prompts_per_step)
  loop.validate_config(c)
  c.verifier.train.tis_cap = 2.0
  with pytest.raises(RunError, match="verifier.train.tis_cap must be None"):
    loop.validate_config(c)
