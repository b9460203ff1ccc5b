"""Toy arithmetic text: well-formed, exact, reproducible, and held-out problems kept apart."""

import random
import re

import pytest

from experiments.toy_arith import data
from rzero_jax.rzero import prompts


@pytest.mark.parametrize("level", sorted(data.LEVELS))
def test_problems_are_exact_and_worked_answers_check_out(level):
  rng = random.Random(level)
  for _ in range(200):
    question, answer = data.make_problem(rng, level)
    expression = data.expression_of(question)
    assert eval(expression) == answer == data.true_answer(question)  # our own text, not model's
    spec = data.LEVELS[level]
    assert len(re.findall(r"\d+", expression)) == spec.operands
    completion = data.solver_completion(question)
    lines = completion.split("\n")
    assert lines[-1] == f"\\boxed{{{answer}}}"
    assert len(lines) == spec.operands  # one line per operation, then the box
    for line in lines[:-1]:
      a, op, b, eq, c = line.split()
      assert eq == "=" and eval(f"{a} {op} {b}") == int(c)
    text = data.challenger_completion(question, answer)
    assert prompts.parse_question(text) == question
    assert text.endswith(f"\\boxed{{{answer}}}")


def test_evaluation_order_follows_precedence_and_parentheses():
  steps, value = data.solution_steps(["(", "12", "+", "3", ")", "*", "4", "-", "5", "*", "2"])
  assert steps == [(12, "+", 3, 15), (15, "*", 4, 60), (5, "*", 2, 10), (60, "-", 10, 50)]
  assert value == 50 and data.expression_text(["(", "1", "+", "2", ")"]) == "(1 + 2)"


def test_generators_are_reproducible():
  weights = {1: 1.0, 3: 2.0, 6: 1.0}
  a = data.sample_problems(random.Random(5), weights, 50)
  assert a == data.sample_problems(random.Random(5), weights, 50)
  assert a != data.sample_problems(random.Random(6), weights, 50)
  assert data.heldout_set(20) == data.heldout_set(20)


def test_heldout_is_disjoint_from_training_text():
  heldout = data.heldout_set(40, levels=(2, 3, 4))
  assert len({q for q, _, _ in heldout}) == 120 and {lvl for _, _, lvl in heldout} == {2, 3, 4}
  training = data.sample_problems(random.Random(0), {k: 1.0 for k in data.LEVELS}, 3000)
  assert all(data.is_heldout(q) for q, _, _ in heldout)
  assert not any(data.is_heldout(q) for q, _, _ in training)
  assert all(data.true_answer(q) == a for q, a, _ in heldout)


@pytest.mark.parametrize(
    "question, expected",
    [
        ("What is 3 + 4 * 2?", 11),
        ("What is -(3 - 10) * (2 + 1)?", 21),
        ("What is 7?", 7),
        ("What is 3 4?", None),
        ("What is 3 + ?", None),
        ("What is 2 ** 3?", None),
        ("What is (1 + 2?", None),
        ("what is 3?", None),
        ("What is __import__('os')?", None),
        ("What is 1234567890 + 1?", None),
        ("What is " + "(" * 150 + "1" + ")" * 150 + "?", None),
    ],
)
def test_true_answer_parses_model_text_safely(question, expected):
  assert data.true_answer(question) == expected


def test_unknown_level_is_rejected():
  with pytest.raises(ValueError, match="difficulty must be one of"):
    data.make_problem(random.Random(0), 9)


def test_digit_slip_changes_one_digit_and_carries_on():
  never, always = data.digit_slip(random.Random(0), 0.0), data.digit_slip(random.Random(0), 1.0)
  assert [never(v) for v in (7, 42, -13)] == [7, 42, -13]
  for value in (7, 42, 90, -13, 5000):
    slipped = always(value)
    a, b = str(abs(value)), str(abs(slipped))
    assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
    assert len(b) == 1 or b[0] != "0"  # no leading zero
    assert (slipped < 0) == (value < 0)
  completion = data.solver_completion("What is 12 + 30 - 5?", data.digit_slip(random.Random(1), 1))
  first, second, box = completion.split("\n")
  a, _, b, _, c = first.split()
  assert (int(a), int(b)) == (12, 30) and int(c) != 42
  assert second.startswith(f"{c} - 5 = ") and int(second.split()[-1]) != int(c) - 5
  assert box == f"\\boxed{{{second.split()[-1]}}}"
  assert data.direct_completion(-4) == "\\boxed{-4}"
