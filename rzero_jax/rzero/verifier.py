"""The Verifier role's host side: its prompt, label-free training targets, reward, and how its
judgements enter the pseudo-labels (`config.verifier.*`, off by default).

The Verifier is a third model from the same base. Given a question and one of the Solver's
answers with its working, it answers `\\boxed{1}` (right) or `\\boxed{0}` (wrong); its judgement
of an answer is `P(right) = p(1) / (p(1) + p(0))`, from the two verdicts' sequence log-probs.

Training signal, with no human or oracle label (`training_targets`): on questions where the
Solver's votes agree strongly (`p_hat >= config.verifier.confident`; they may include questions
of the band the dataset keeps, which the cross-fitting below keeps out of the training of the
Verifier that judges them), the majority's answer is the target "right" for every vote in the
majority cluster and "wrong" for every vote in another cluster. The Solver's strong agreement
is the only evidence used; it is right far more often than the in-band majorities are (the demo
measures it), and the Verifier learns what distinguishes a confident majority's working from a
stray answer's (a slipped step, a box that does not follow from the lines) to apply it where the
vote is close. Positives and negatives are drawn in equal numbers each step (`balanced_pairs`).

Reward (`verdict_rewards`): a verdict scores 1 when it matches the target, else 0. The verdict
space has two elements, so each (question, answer) pair's GRPO group is both verdicts: rewards
(1, 0) give advantages (+1/sqrt(2), -1/sqrt(2)): no sampling is needed.

How judgements enter the labels (`judged_vote`): among the questions the count band keeps, each
answer cluster weighs the sum of its voters' P(right); the label is the heaviest cluster (which
may differ from the plain majority), and the question is dropped when the mean P(right) of the
label's voters is below a threshold: `config.verifier.min_score`, or with
`config.verifier.calibrate` the midpoint between the Verifier's mean P(right) on held-out right
and wrong targets (`calibrated_threshold`), and the judgements are used only when its label-free
AUC on those held-out targets (`auc`) reaches `config.verifier.min_auc`.

Training and judged questions are kept apart by construction (cross-fitting, `question_folds`):
the questions are dealt into two folds, and each iteration the Verifier is trained twice from
the same start, once per fold: the Verifier of fold k trains on the targets of the other fold's
questions only, is checked and calibrated on fold k's targets, and judges fold k's band
questions. So no band question is judged by a Verifier trained on its answers, even when the
band reaches into the confident votes (the `:verifier` demo keeps 0.8-0.9 with `confident` 0.8).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats

VERIFIER_SYSTEM = "Is the solution right? \\boxed{1}: right, \\boxed{0}: wrong."
VERDICTS = ("\\boxed{1}", "\\boxed{0}")  # right, wrong (the GRPO group of every pair)


def verifier_messages(question: str, solution: str) -> list[dict[str, str]]:
  """The Verifier's chat prompt: the question, then the candidate answer with its working."""
  return [
      {"role": "system", "content": VERIFIER_SYSTEM},
      {"role": "user", "content": f"{question}\n\nSolution:\n{solution}"},
  ]


@dataclasses.dataclass(frozen=True)
class Target:
  """One label-free training example: answer `answer` of question `question` is judged `right`."""

  question: int
  answer: int
  right: bool


def training_targets(
    members: Sequence[Sequence[int]], p_hats: Sequence[float], *, confident: float
) -> list[Target]:
  """Targets from the Solver's own confident votes: on a question with `p_hat >= confident`,
  an answer in the majority cluster (member index 0) is right, one in another cluster wrong;
  abstentions (-1) and questions below `confident` give none."""
  out = []
  for q, (m, p) in enumerate(zip(members, p_hats)):
    if p + 1e-12 < confident:
      continue
    out += [Target(q, a, c == 0) for a, c in enumerate(m) if c >= 0]
  return out


def balanced_pairs(targets: Sequence[Target], count: int, rng: np.random.Generator) -> list[Target]:
  """`count` targets, half right and half wrong (drawn with replacement when a side is short;
  all from one side when the other has none), in a random order."""
  right = [t for t in targets if t.right]
  wrong = [t for t in targets if not t.right]
  if not right and not wrong:
    return []
  if not right or not wrong:
    side = right or wrong
    return [side[i] for i in rng.integers(0, len(side), count)]
  half = count // 2
  picks = [right[i] for i in rng.integers(0, len(right), count - half)]
  picks += [wrong[i] for i in rng.integers(0, len(wrong), half)]
  return [picks[i] for i in rng.permutation(len(picks))]


def verdict_rewards(targets: Sequence[Target]) -> np.ndarray:
  """Per verdict completion, in `VERDICTS` order per target: 1 when the verdict matches the
  target (`\\boxed{1}` for right, `\\boxed{0}` for wrong), else 0. Shape [2 * len(targets)]."""
  return np.asarray([[float(t.right), float(not t.right)] for t in targets]).reshape(-1)


def score_from_logprobs(right: np.ndarray, wrong: np.ndarray) -> np.ndarray:
  """P(right) = p(right) / (p(right) + p(wrong)) from the two verdicts' sequence log-probs."""
  return 1.0 / (1.0 + np.exp(np.asarray(wrong, np.float64) - np.asarray(right, np.float64)))


FOLDS = 2  # the Verifier is trained twice per iteration, once per fold of the questions


def question_folds(
    judged: Sequence[int], others: Sequence[int], rng: np.random.Generator
) -> dict[int, int]:
  """Fold (0 or 1) of every question: the `judged` questions (the band's) and the `others` (the
  remaining questions with targets) are each shuffled and dealt alternately, so each fold gets
  half of each. The Verifier of fold k trains only on the other fold's targets and judges only
  fold k's questions: no question it judges was one of its training targets."""
  folds: dict[int, int] = {}
  for group in (sorted(set(judged)), sorted(set(others) - set(judged))):
    for i, j in enumerate(rng.permutation(len(group))):
      folds[group[j]] = i % FOLDS
  return folds


def check_targets(targets: Sequence[Target], count: int) -> list[Target]:
  """Up to `count` held-out targets to check and calibrate a Verifier: half right (fewer when
  short), the rest wrong, in the targets' order."""
  check = [t for t in targets if t.right][: count // 2]
  return check + [t for t in targets if not t.right][: count - len(check)]


def calibrated_threshold(scores: Sequence[float], right: Sequence[bool], default: float) -> float:
  """The midpoint between the mean P(right) of held-out right and wrong targets (a threshold
  that does not depend on the Verifier's bias); `default` when either side is missing."""
  s, r = np.asarray(scores, np.float64), np.asarray(right, bool)
  if not r.any() or r.all():
    return default
  return float((s[r].mean() + s[~r].mean()) / 2)


def auc(scores: Sequence[float], right: Sequence[bool]) -> float | None:
  """P(a right target scores above a wrong one), ties counted half: how well the Verifier
  separates them (0.5: not at all); None when either side is missing."""
  s, r = np.asarray(scores, np.float64), np.asarray(right, bool)
  pos, neg = s[r], s[~r]
  if not len(pos) or not len(neg):
    return None
  # The Mann-Whitney U statistic counts exactly those pairs (ties as half).
  return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


@dataclasses.dataclass(frozen=True)
class Judged:
  """A vote after the Verifier: the label, its cluster's share of the m votes (p_hat of that
  cluster), the mean P(right) of its voters, and whether it differs from the plain majority."""

  label: str | None
  p_hat: float
  score: float
  changed: bool


def judged_vote(
    groups: Sequence[tuple[str, int]],
    members: Sequence[int],
    scores: Sequence[float],
    m: int,
    *,
    relabel: bool = True,
) -> Judged:
  """The label after the Verifier's judgements of one question's answers.

  `groups`: the vote's clusters (representative, count), largest first; `members[k]`: the
  cluster of answer k (-1 abstains); `scores[k]`: the Verifier's P(right) of answer k (ignored for
  abstentions). With `relabel`, the label is the cluster with the largest sum of scores (ties:
  the larger, then earlier cluster); otherwise the plain majority.
  """
  if not groups:
    return Judged(None, 0.0, 0.0, False)
  k = len(groups)
  weight, size = np.zeros(k), np.zeros(k)
  for c, s in zip(members, scores):
    if c >= 0:
      weight[c] += s
      size[c] += 1
  best = 0
  if relabel:
    best = max(range(k), key=lambda c: (weight[c], groups[c][1], -c))
  score = float(weight[best] / size[best]) if size[best] else 0.0
  return Judged(groups[best][0], groups[best][1] / m, score, best != 0)
