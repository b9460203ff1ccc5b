"""Tests for rzero_jax.verify.repetition: BLEU equals nltk, clustering equals scipy."""

import random
import time

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from scipy.cluster.hierarchy import fcluster, linkage

from rzero_jax.verify import repetition
from rzero_jax.verify.repetition import bleu, bleu_matrix, cluster_questions, repetition_penalty

_SMOOTH = SmoothingFunction().method1
_WORDS = "the of a x y z 1 2 3 + = find value if is what sum prime".split()


def nltk_bleu(hyp, ref):
  return sentence_bleu([ref], hyp, smoothing_function=_SMOOTH)


def random_sentence(rng, low=0, high=14):
  return [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]


def question(rng):
  template = rng.choice(
      [
          "What is the value of {a} times {b} plus {c} ?",
          "Find all real x such that x^2 + {a}x + {b} = 0 .",
          "Let f(x) = {a}x^3 - {b}x + {c} . Compute f({a}) .",
          "How many positive integers less than {a} are divisible by {b} or {c} ?",
      ]
  )
  text = template.format(a=rng.randint(1, 99), b=rng.randint(1, 99), c=rng.randint(1, 99))
  words = (
      "Express your answer as a common fraction in simplest form round to the nearest tenth "
      "prime digits circle radius angle"
  ).split()
  tail = [rng.choice(words) for _ in range(rng.randint(0, 40))]
  return " ".join([text] + tail)


def canonical_partition(labels):
  first = {}
  return [first.setdefault(label, len(first)) for label in labels]


EDGE_PAIRS = [
    ([], []),
    ([], ["a"]),
    (["a"], []),
    (["a"], ["a"]),
    (["a", "b"], ["a", "b"]),
    (["a", "b", "c"], ["a", "b", "c", "d"]),
    ("a b c d".split(), "a b c d".split()),
    ("the the the the".split(), "the cat".split()),
    ("a b c d e".split(), "e d c b a".split()),
    ("x y".split(), "p q r s t u v".split()),
    ("α β γ δ".split(), "α β γ δ ε".split()),
]


@pytest.mark.parametrize("hyp, ref", EDGE_PAIRS)
def test_bleu_edge_cases_equal_nltk(hyp, ref):
  assert bleu(hyp, ref) == pytest.approx(nltk_bleu(hyp, ref), abs=1e-12)
  assert bleu_matrix([hyp, ref])[0, 1] == pytest.approx(nltk_bleu(hyp, ref), abs=1e-9)


def test_bleu_equals_nltk_on_random_pairs():
  rng = random.Random(0)
  sentences = [random_sentence(rng) for _ in range(120)]
  matrix = bleu_matrix(sentences)
  for i, hyp in enumerate(sentences):
    for j, ref in enumerate(sentences):
      expected = nltk_bleu(hyp, ref)
      assert abs(bleu(hyp, ref) - expected) < 1e-12
      assert abs(matrix[i, j] - expected) < 1e-9


def test_clustering_equals_scipy_on_nltk_distances():
  rng = random.Random(1)
  questions = [question(rng) for _ in range(60)]
  questions += [q + " again" for q in questions[:20]] + questions[:10]
  tokens = [q.split() for q in questions]
  condensed = np.array(
      [
          1 - nltk_bleu(tokens[i], tokens[j])
          for i in range(len(tokens))
          for j in range(i + 1, len(tokens))
      ]
  )
  reference = fcluster(linkage(condensed, "average"), np.nextafter(0.5, 0), "distance")
  labels = cluster_questions(questions, 0.5)
  assert canonical_partition(labels) == canonical_partition(reference)
  sizes = np.bincount(reference)
  expected = 0.7 * sizes[reference] / len(questions)
  np.testing.assert_allclose(repetition_penalty(questions, tau=0.5, lam=0.7), expected, atol=1e-12)
  assert len(set(labels)) < len(questions)


def test_merge_requires_distance_strictly_below_tau(monkeypatch):
  distances = np.array([[0.0, 0.5, 0.9], [0.5, 0.0, 0.9], [0.9, 0.9, 0.0]])
  monkeypatch.setattr(repetition, "bleu_matrix", lambda tokens: 1.0 - distances)
  assert len(set(cluster_questions(["a", "b", "c"], tau=0.5))) == 3
  distances[0, 1] = distances[1, 0] = 0.4999
  assert len(set(cluster_questions(["a", "b", "c"], tau=0.5))) == 2
  np.testing.assert_allclose(repetition_penalty(["a", "b", "c"]), [2 / 3, 2 / 3, 1 / 3])


def test_penalty_small_batches():
  assert repetition_penalty([]).shape == (0,)
  np.testing.assert_allclose(repetition_penalty(["only one"], lam=1.0), [1.0])
  same = "what is the sum of the first ten primes ?"
  np.testing.assert_allclose(
      repetition_penalty([same, same, "a totally different question here"]), [2 / 3, 2 / 3, 1 / 3]
  )


def test_2048_questions_fast_and_exact():
  rng = random.Random(2)
  questions = [question(rng) for _ in range(2048)]
  timings = []
  for _ in range(2):
    start = time.perf_counter()
    penalty = repetition_penalty(questions)
    timings.append(time.perf_counter() - start)
  assert min(timings) <= 2.0, timings
  assert penalty.shape == (2048,) and np.all(penalty >= 1 / 2048)
  matrix = bleu_matrix([q.split() for q in questions])
  for _ in range(300):
    i, j = rng.randrange(2048), rng.randrange(2048)
    assert abs(matrix[i, j] - nltk_bleu(questions[i].split(), questions[j].split())) < 1e-9
