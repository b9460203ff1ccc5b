"""Majority voting over final answers grouped by mathematical equivalence.

Grouping, for one question's ``m`` answers:
1. ``None`` (and blank) answers abstain: they count in ``m`` but form no group.
2. Answers with the same canonical string (``answers.canonical``) form one group.
3. Groups, largest first (ties: first occurrence), are merged greedily: a group joins
   the first existing cluster whose representative (its largest group's answer) is
   equivalent to it in either direction (equivalence is neither symmetric nor
   transitive, so clusters are built against representatives, never chains).

``p_hat`` is the largest cluster's size over ``m``; the label is its representative
(ties: the cluster formed first). All abstain: label None, ``p_hat`` 0.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Sequence

from rzero_jax.verify import answers as answer_text

Equivalence = Callable[[str, str], bool]


@dataclasses.dataclass(frozen=True)
class Vote:
  """Outcome of one vote.

  label: the majority answer (a representative string), or None when all abstain.
  p_hat: size of the largest cluster / number of answers (abstentions included).
  groups: list of ``(representative, count)`` per cluster, largest first (ties: the
    cluster formed first); abstentions excluded, so the counts sum to m - abstentions.
  """

  label: str | None
  p_hat: float
  groups: list[tuple[str, int]]


def _string_groups(answer_list: Sequence[str | None]) -> list[tuple[str, int]]:
  """(first answer, count) per canonical string, largest first, ties by first occurrence."""
  groups: dict[str, list] = {}
  for answer in answer_list:
    if answer is None or not answer.strip():
      continue
    key = answer_text.canonical(answer) if len(answer) <= answer_text.MAX_ANSWER_CHARS else answer
    groups.setdefault(key, [answer.strip(), 0])[1] += 1
  return sorted((tuple(g) for g in groups.values()), key=lambda g: -g[1])


def _cluster(groups: list[tuple[str, int]], same: dict[tuple[int, int], bool], m: int) -> Vote:
  clusters: list[list] = []  # [index of the representative group, representative, size]
  for i, (answer, count) in enumerate(groups):
    for cluster in clusters:
      if same[cluster[0], i]:
        cluster[2] += count
        break
    else:
      clusters.append([i, answer, count])
  if not clusters:
    return Vote(None, 0.0, [])
  ranked = sorted(clusters, key=lambda c: -c[2])
  return Vote(ranked[0][1], ranked[0][2] / m, [(c[1], c[2]) for c in ranked])


def majority_votes(
    answer_lists: Sequence[Sequence[str | None]],
    *,
    equivalent: Equivalence | None = None,
    timeout_s: float = 5.0,
) -> list[Vote]:
  """One ``Vote`` per list of answers.

  With ``equivalent=None`` every needed comparison of every question is sent to the
  grading pool in one batch (both directions, each pair killed at ``timeout_s``);
  otherwise ``equivalent(a, b) or equivalent(b, a)`` is called in this process.
  """
  grouped = [_string_groups(a) for a in answer_lists]
  pairs = [
      (q, i, j)
      for q, groups in enumerate(grouped)
      for i, j in itertools.combinations(range(len(groups)), 2)
  ]
  texts = [(grouped[q][i][0], grouped[q][j][0]) for q, i, j in pairs]
  if equivalent is None:
    verdicts = answer_text.equivalent_many(texts, symmetric=True, timeout_s=timeout_s)
  else:
    verdicts = [bool(equivalent(a, b) or equivalent(b, a)) for a, b in texts]
  same: list[dict[tuple[int, int], bool]] = [{} for _ in grouped]
  for (q, i, j), verdict in zip(pairs, verdicts):
    same[q][i, j] = verdict
  return [_cluster(groups, same[q], len(answer_lists[q])) for q, groups in enumerate(grouped)]


def majority_vote(
    answers: Sequence[str | None], *, equivalent: Equivalence | None = None, timeout_s: float = 5.0
) -> Vote:
  """Majority vote over one question's answers (see the module docstring)."""
  return majority_votes([answers], equivalent=equivalent, timeout_s=timeout_s)[0]
