"""Tests for rzero_jax.verify.voting."""

import pytest

from rzero_jax.verify import answers
from rzero_jax.verify.voting import Vote, majority_vote, majority_votes


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
