"""Tests for rzero_jax.verify.voting."""

import pytest

from rzero_jax.verify import answers
from rzero_jax.verify.voting import (
    Vote,
    answer_key,
    final_answers,
    majority_vote,
    majority_votes,
    majority_votes_with_members,
    same_answers,
)


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
  answers.grading_pool().wait_ready()


def test_groups_by_string_then_equivalence():
  vote = majority_vote(["1/2", "0.5", "\\frac{1}{2}", "3", "3", None, "\\dfrac12", "7"])
  assert vote.label == "1/2"
  assert vote.p_hat == pytest.approx(4 / 8)
  assert vote.groups == [("1/2", 4), ("3", 2), ("7", 1)]


def test_symbolic_equivalence_merges_groups():
  vote = majority_vote(["(x+1)^2", "x^2+2x+1", "x^2+2x+1", "x^2-1"])
  assert vote.p_hat == pytest.approx(3 / 4)
  assert vote.label == "x^2+2x+1"
  assert dict(vote.groups)["x^2-1"] == 1


def test_abstentions_count_in_m_but_form_no_group():
  vote = majority_vote(answers=["5", None, None, "", "5"])
  assert vote == Vote("5", 2 / 5, [("5", 2)])
  assert majority_vote([None, None, "  "]) == Vote(None, 0.0, [])
  assert majority_vote([]) == Vote(None, 0.0, [])


def test_ties_break_by_first_occurrence():
  assert majority_vote(["2", "1", "1", "2"]).label == "2"
  assert majority_vote(["1", "2", "2", "1"]).label == "1"


def test_both_directions_are_tried():
  def one_way(pred, gold):
    return (pred, gold) == ("b", "a")

  vote = majority_vote(["a", "a", "b"], equivalent=one_way)
  assert vote.groups == [("a", 3)]
  vote = majority_vote(["b", "b", "a"], equivalent=one_way)
  assert vote.groups == [("b", 3)]


def test_clusters_against_representatives_not_chains():
  links = {frozenset("ab"), frozenset("bc")}

  def linked(pred, gold):
    return frozenset((pred, gold)) in links

  vote = majority_vote(["a", "a", "b", "c"], equivalent=linked)
  assert vote.groups == [("a", 3), ("c", 1)]


def test_asymmetric_pooled_equivalence_merges():
  vote = majority_vote(["1 < x < 2", "(1, 2)", "(1, 2)"])
  assert vote.groups == [("(1, 2)", 3)]


def test_batched_votes_match_single_votes():
  lists = [["1", "1.0", "2"], [None, "x", "X"], ["\\{1,2\\}", "\\{2,1\\}", "1, 2", "3"], [None]]
  assert majority_votes(lists) == [majority_vote(a) for a in lists]


def test_hanging_answers_do_not_hang_the_vote():
  vote = majority_vote([r"5^{5^{5^{5^5}}}", "1", "1", r"(10^{100})!"], timeout_s=1.0)
  assert vote.label == "1" and vote.p_hat == 0.5


# Answer pairs on which `answers.grade` (the Solver's reward before) and the vote's clustering
# disagreed: an asymmetric equivalence (grade tried only answer -> label), canonical strings too
# long or too deep to parse (grouped by the vote, refused by grade), and answers empty once
# canonicalised (a group, even the majority, for the vote; never right for grade).
DISAGREED = [
    ["(1, 2)", "(1, 2)", "1 < x < 2", "3"],
    ["9" * 401, "9" * 401, "1"],
    ["{" * 30 + "1" + "}" * 30] * 2 + ["1"],
    ["$ $", "$ $", "$ $", "5", "\\,"],
    ["\\frac12", "0.5", "1/2", " 0.5 ", "x"],
    [None, "", "  ", "4", "4.0", "four"],
]


@pytest.mark.parametrize("answer_list", DISAGREED)
def test_same_answers_is_exactly_the_majority_membership(answer_list):
  [(vote, members)] = majority_votes_with_members([answer_list], timeout_s=2.0)
  same = same_answers(answer_list, [vote.label] * len(answer_list), timeout_s=2.0)
  assert same == [m == 0 for m in members]
  assert vote.p_hat == pytest.approx(sum(same) / len(answer_list))


def test_answers_empty_once_canonicalised_abstain():
  assert answer_key("$ $") is None and answer_key("\\,") is None and answer_key(None) is None
  vote = majority_vote(["$ $", "$ $", "$ $", "5"])
  assert vote == Vote("5", 1 / 4, [("5", 1)])
  assert same_answers(["$ $", "5"], ["$ $", "$ $"]) == [False, False]


def test_the_majority_takes_every_answer_that_matches_its_representative():
  # y matches y2, y3, y4 and g; x matches g only. Greedily g joins x (formed first), then y
  # (2 + 3 more) outgrows x (3 + 1); the majority y then takes g too: the Solver's reward against
  # the label y pays g, so the vote must count g for y.
  links = {frozenset(p) for p in [("y", "y2"), ("y", "y3"), ("y", "y4"), ("y", "g"), ("x", "g")]}

  def linked(a, b):
    return frozenset((a, b)) in links

  answer_list = ["x", "x", "x", "y", "y", "g", "y2", "y3", "y4"]
  [(vote, members)] = majority_votes_with_members([answer_list], equivalent=linked)
  assert vote == Vote("y", 6 / 9, [("y", 6), ("x", 3)])
  assert members == [1, 1, 1, 0, 0, 0, 0, 0, 0]
  same = same_answers(answer_list, ["y"] * 9, equivalent=linked)
  assert same == [m == 0 for m in members]


def test_same_answers_compares_keys_in_either_direction():
  def one_way(pred, gold):
    return (pred, gold) == ("b", "a")

  assert same_answers(
      ["a", "b", " a ", "c", None], ["b", "a", "a", "a", "a"], equivalent=one_way
  ) == [
      True,
      True,
      True,
      False,
      False,
  ]
  with pytest.raises(ValueError, match="2 answers but 1 labels"):
    same_answers(["1", "2"], ["1"])


def test_final_answers_read_the_last_box():
  texts = ["so \\boxed{3}", "\\boxed{1} then \\boxed{2}", "no box", None, "\\boxed{" + "1" * 10]
  assert final_answers(texts) == ["3", "2", None, None, None]
  assert final_answers(["\\boxed{5}" + " " * answers.MAX_RESPONSE_CHARS]) == [None]
