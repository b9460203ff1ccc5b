"""The Verifier's host side (issue 18): label-free targets, its reward, calibration, and how its
judgements enter the pseudo-labels; plus the cheaper remedies (band, margin). Hand-made inputs,
expected values worked out by hand."""

import ml_collections
import numpy as np
import pytest

from rzero_jax.rzero import dataset as ds
from rzero_jax.rzero import verifier as V
from rzero_jax.verify.voting import Vote, majority_votes_with_members


def _same_int(a, b):
  return int(a) == int(b)


def test_vote_members_say_who_voted_for_which_cluster():
  # "07" and "7" are one cluster (equivalent), largest first; None abstains.
  [(vote, members)] = majority_votes_with_members(
      [["9", "7", None, "07", "7", "9", "3", "7"]], equivalent=_same_int
  )
  assert vote == Vote("7", 4 / 8, [("7", 4), ("9", 2), ("3", 1)])
  assert members == [1, 0, -1, 0, 0, 1, 2, 0]


def test_training_targets_use_only_confident_votes():
  members = [
      [0, 0, 0, 0, 1],  # p_hat 0.8: four right, one wrong
      [0, 0, 1, 1, -1],  # p_hat 0.4: below `confident`, no targets
      [0, 0, 0, 0, -1],  # p_hat 0.8 with an abstention: four right
  ]
  targets = V.training_targets(members, [0.8, 0.4, 0.8], confident=0.8)
  assert [(t.question, t.answer, t.right) for t in targets] == [
      (0, 0, True),
      (0, 1, True),
      (0, 2, True),
      (0, 3, True),
      (0, 4, False),
      (2, 0, True),
      (2, 1, True),
      (2, 2, True),
      (2, 3, True),
  ]


def test_verdict_rewards_pay_agreement_with_the_target():
  targets = [V.Target(0, 0, True), V.Target(0, 1, False)]
  # per target: (\boxed{1}, \boxed{0})
  np.testing.assert_array_equal(V.verdict_rewards(targets), [1.0, 0.0, 0.0, 1.0])
  assert V.VERDICTS == ("\\boxed{1}", "\\boxed{0}")


def test_verdict_group_advantages_are_opposite():
  from rzero_jax.training.grpo import group_advantages

  adv = np.asarray(group_advantages(V.verdict_rewards([V.Target(0, 0, False)]), 2))
  # (r - mean) / std with ddof=1: std of (0, 1) is 1 / sqrt(2)
  np.testing.assert_allclose(adv, [-np.sqrt(0.5), np.sqrt(0.5)], atol=1e-5)


def test_balanced_pairs_draw_half_right_half_wrong():
  targets = [V.Target(0, i, True) for i in range(9)] + [V.Target(0, 9, False)]
  picks = V.balanced_pairs(targets, 8, np.random.default_rng(0))
  assert len(picks) == 8 and sum(t.right for t in picks) == 4
  only_right = V.balanced_pairs(targets[:9], 4, np.random.default_rng(0))
  assert len(only_right) == 4 and all(t.right for t in only_right)
  assert V.balanced_pairs([], 4, np.random.default_rng(0)) == []


def test_score_is_the_normalised_probability_of_the_right_verdict():
  right, wrong = np.log([0.3, 0.01]), np.log([0.1, 0.04])
  np.testing.assert_allclose(V.score_from_logprobs(right, wrong), [0.75, 0.2])


def test_judged_vote_relabels_by_the_sum_of_scores():
  # answers 7 7 7 9 9 (abstain): cluster 7 weighs 0.1 + 0.2 + 0.1 = 0.4, cluster 9 0.9 + 0.8 = 1.7
  groups, members = [("7", 3), ("9", 2)], [0, 0, 0, 1, 1, -1]
  scores = [0.1, 0.2, 0.1, 0.9, 0.8, 0.0]
  j = V.judged_vote(groups, members, scores, 6)
  assert (j.label, j.p_hat, j.changed) == ("9", 2 / 6, True)
  assert j.score == pytest.approx(0.85)
  # without relabelling the majority stays, with its voters' mean score
  k = V.judged_vote(groups, members, scores, 6, relabel=False)
  assert (k.label, k.p_hat, k.changed) == ("7", 3 / 6, False)
  assert k.score == pytest.approx(0.4 / 3)
  # equal weights: the larger cluster wins
  tie = V.judged_vote([("1", 2), ("2", 1)], [0, 0, 1], [0.3, 0.3, 0.6], 3)
  assert tie.label == "1" and not tie.changed
  assert V.judged_vote([], [-1, -1], [0.5, 0.5], 2) == V.Judged(None, 0.0, 0.0, False)


def test_calibrated_threshold_and_auc():
  scores, right = [0.9, 0.7, 0.4, 0.2, 0.7], [True, True, False, False, False]
  # mean right 0.8, mean wrong (0.4 + 0.2 + 0.7) / 3 = 1.3 / 3
  assert V.calibrated_threshold(scores, right, 0.5) == pytest.approx((0.8 + 1.3 / 3) / 2)
  assert V.calibrated_threshold([0.9], [True], 0.5) == 0.5
  # pairs (right, wrong): 0.9 beats all 3; 0.7 beats 0.4, 0.2 and ties 0.7 -> (3 + 2.5) / 6
  assert V.auc(scores, right) == pytest.approx(5.5 / 6)
  assert V.auc([0.1], [True]) is None


def test_question_folds_keep_judged_questions_out_of_their_verifiers_training():
  # the `:verifier` shape: confident questions 0-9 have targets, the band (3, 4, 5, 6, 7) is a
  # subset of them (band 0.8-0.9 inside confident >= 0.8), question 12 is judged without targets
  targets = [V.Target(q, a, a < 8) for q in range(10) for a in range(10)]
  band = [3, 4, 5, 6, 7, 12]
  folds = V.question_folds(band, [t.question for t in targets], np.random.default_rng(0))
  assert set(folds) == set(range(10)) | {12} and set(folds.values()) == {0, 1}
  assert sorted(sum(folds[q] == k for q in band) for k in (0, 1)) == [3, 3]  # half the band each
  for k in range(V.FOLDS):
    trained_on = {t.question for t in targets if folds[t.question] != k}
    judged = {q for q in band if folds[q] == k}
    assert judged and not judged & trained_on  # by construction, in every fold
    assert trained_on  # and each fold's Verifier has targets of the other questions
  again = V.question_folds(band, [t.question for t in targets], np.random.default_rng(0))
  assert again == folds  # seeded: every process deals the same folds


def test_check_targets_are_half_right_half_wrong():
  targets = [V.Target(0, i, i < 6) for i in range(9)]
  check = V.check_targets(targets, 4)
  assert [t.answer for t in check] == [0, 1, 6, 7]
  # too few wrong ones: a smaller check; too few right ones: wrong ones fill it
  assert [t.answer for t in V.check_targets(targets[:7], 4)] == [0, 1, 6]
  assert [t.answer for t in V.check_targets(targets[5:], 4)] == [5, 6, 7, 8]


def test_asymmetric_band_and_minimum_margin():
  answers = [["1"] * 10] * 4
  p_hats = [0.3, 0.6, 0.8, 0.9]
  kept = ds.select_questions(
      ["a", "b", "c", "d"], ["1"] * 4, p_hats, answers, delta=0.25, filter="band", band=(0.6, 0.8)
  )
  assert [r["question"] for r in kept] == ["b", "c"]
  # counts 5/3/2 -> margin 0.2; 4/4 -> 0; a single cluster of 6 -> 0.6
  assert ds.group_margin([5, 3, 2], 10) == pytest.approx(0.2)
  assert ds.group_margin([4, 4], 10) == 0.0
  assert ds.group_margin([6], 10) == pytest.approx(0.6)
  kept = ds.select_questions(
      ["a", "b", "c"],
      ["1"] * 3,
      [0.5, 0.4, 0.6],
      answers[:3],
      delta=0.25,
      margins=[0.2, 0.0, 0.6],
      min_margin=0.2,
  )
  assert [r["question"] for r in kept] == ["a", "c"]


def test_challenger_answer_is_the_box_after_the_question():
  from rzero_jax.rzero.prompts import parse_challenger_answer

  assert parse_challenger_answer("<question>What is 1 + 2?</question> \\boxed{3}") == "3"
  # a box inside the question does not count; no box or no question block: None
  assert parse_challenger_answer("<question>\\boxed{9}</question> then 4") is None
  assert parse_challenger_answer("\\boxed{3}") is None


def test_gate_uses_a_fold_only_when_its_auc_reaches_the_minimum():
  settings = ml_collections.ConfigDict(dict(min_score=0.5, calibrate=True, min_auc=0.8))
  used, threshold, auc = V.gate([0.9, 0.7, 0.4, 0.8], [True, True, False, False], settings)
  assert (used, threshold, auc) == (False, pytest.approx(0.7), 0.75)  # 3 of 4 pairs in order
  settings.update(calibrate=False, min_auc=0.5)
  assert V.gate([0.9, 0.2], [True, False], settings) == (True, 0.5, 1.0)
  assert V.gate([0.9], [True], settings) == (False, 0.5, None)  # no AUC: not used


def test_judged_records_keep_the_judged_label_and_drop_doubtful_ones():
  m = 4
  groups = [("1", 3), ("2", 1)]
  ballot = ds.SolverVotes(
      questions=["q0", "q1"],
      votes=[Vote("1", 0.75, groups)] * 2,
      answers=[["1", "1", "1", "2"]] * 2,
      texts=[["t"] * m] * 2,
      members=[[0, 0, 0, 1]] * 2,
  )
  # q0: the lone "2" voter is trusted, the majority not: relabelled; q1: everyone doubtful
  score_of = {(0, 0): 0.1, (0, 1): 0.1, (0, 2): 0.1, (0, 3): 0.9}
  score_of.update({(1, a): 0.2 for a in range(m)})
  kept, dropped, relabelled = V.judged_records(
      [0, 1], ballot, score_of, [(True, 0.5), (True, 0.5)], m=m, relabel=True
  )
  assert (dropped, relabelled) == (1, 1)
  [r] = kept
  assert (r["question"], r["label"], r["majority"], r["p_hat"]) == ("q0", "2", "1", 0.25)
  assert r["verifier_scores"] == [0.1, 0.1, 0.1, 0.9]
  # a fold whose judgements are not used keeps the plain majority and drops nothing
  kept, dropped, _ = V.judged_records(
      [0, 1], ballot, score_of, [(False, 0.5), (False, 0.5)], m=m, relabel=True
  )
  assert [r["label"] for r in kept] == ["1", "1"] and dropped == 0
