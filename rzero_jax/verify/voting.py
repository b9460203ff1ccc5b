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
  return _string_groups_and_members(answer_list)[0]


def _string_groups_and_members(
    answer_list: Sequence[str | None],
) -> tuple[list[tuple[str, int]], list[int]]:
  """`_string_groups`, and for each answer the index of its group there (-1: abstention)."""
  groups: dict[str, list] = {}
  keys: list[str | None] = []
  for answer in answer_list:
    if answer is None or not answer.strip():
      keys.append(None)
      continue
    key = answer_text.canonical(answer) if len(answer) <= answer_text.MAX_ANSWER_CHARS else answer
    keys.append(key)
    groups.setdefault(key, [answer.strip(), 0, len(groups)])[1] += 1
  ranked = sorted(groups.items(), key=lambda kv: -kv[1][1])
  rank = {key: i for i, (key, _) in enumerate(ranked)}
  members = [-1 if k is None else rank[k] for k in keys]
  return [(g[0], g[1]) for _, g in ranked], members


def _cluster(groups: list[tuple[str, int]], same: dict[tuple[int, int], bool], m: int) -> Vote:
  return _cluster_and_map(groups, same, m)[0]


def _cluster_and_map(
    groups: list[tuple[str, int]], same: dict[tuple[int, int], bool], m: int
) -> tuple[Vote, list[int]]:
  """The vote, and for each string group the index of its cluster in `Vote.groups`."""
  clusters: list[list] = []  # [index of the representative group, representative, size]
  of_group: list[int] = []  # string group -> index into clusters
  for i, (answer, count) in enumerate(groups):
    for c, cluster in enumerate(clusters):
      if same[cluster[0], i]:
        cluster[2] += count
        of_group.append(c)
        break
    else:
      of_group.append(len(clusters))
      clusters.append([i, answer, count])
  if not clusters:
    return Vote(None, 0.0, []), []
  order = sorted(range(len(clusters)), key=lambda c: -clusters[c][2])
  rank = {c: r for r, c in enumerate(order)}
  ranked = [clusters[c] for c in order]
  vote = Vote(ranked[0][1], ranked[0][2] / m, [(c[1], c[2]) for c in ranked])
  return vote, [rank[c] for c in of_group]


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
  return [
      v
      for v, _ in majority_votes_with_members(
          answer_lists, equivalent=equivalent, timeout_s=timeout_s
      )
  ]


def majority_votes_with_members(
    answer_lists: Sequence[Sequence[str | None]],
    *,
    equivalent: Equivalence | None = None,
    timeout_s: float = 5.0,
) -> list[tuple[Vote, list[int]]]:
  """`majority_votes`, and for each answer the index of its cluster in ``Vote.groups``
  (-1 for an abstention): who voted for what, e.g. to re-weight the clusters."""
  split = [_string_groups_and_members(a) for a in answer_lists]
  grouped = [g for g, _ in split]
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
  out = []
  for q, (groups, members) in enumerate(split):
    vote, of_group = _cluster_and_map(groups, same[q], len(answer_lists[q]))
    out.append((vote, [-1 if g < 0 else of_group[g] for g in members]))
  return out


def majority_vote(
    answers: Sequence[str | None], *, equivalent: Equivalence | None = None, timeout_s: float = 5.0
) -> Vote:
  """Majority vote over one question's answers (see the module docstring)."""
  return majority_votes([answers], equivalent=equivalent, timeout_s=timeout_s)[0]
