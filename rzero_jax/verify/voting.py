"""Majority voting over final answers, and the one rule for "the same answer" that both the vote
and the Solver's reward use.

Answers (``answer_key``): an answer abstains when it is None, blank, or empty once canonicalised
(``answers.canonical``, e.g. ``"$ $"``); otherwise its key is its canonical string (answers over
``answers.MAX_ANSWER_CHARS``: the stripped text, never parsed).

Two answers are the same (``same_answers``) when their keys are equal, or when the keys are
mathematically equivalent in either direction (``answers.equivalent_many(symmetric=True)``, or a
given ``equivalent(a, b) or equivalent(b, a)``). Comparisons see only keys, so two answers with
one key compare alike with everything.

Grouping, for one question's ``m`` answers:
1. Abstentions count in ``m`` but form no group.
2. Answers with the same key form one group (its text: the first such answer, stripped).
3. Groups, largest first (ties: first occurrence), are merged greedily: a group joins the first
   existing cluster whose representative (its largest group's answer) is the same answer as it
   (equivalence is neither symmetric nor transitive, so clusters are built against
   representatives, never chains).
4. The majority is the largest cluster (ties: the cluster formed first). It then takes every
   group that is the same answer as its representative, including one that step 3 had put in an
   earlier cluster whose representative it also matches (the majority only grows, the others
   only shrink, so it stays the majority).

So an answer counts for the majority exactly when ``same_answers`` says it is the same answer as
the label: the Solver's reward (``rzero.loop``, answers graded against the label) gives 1 to
every answer the vote counted for the majority and to no other.

``p_hat`` is the majority's size over ``m``; the label is its representative. All abstain: label
None, ``p_hat`` 0.
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
  groups: list of ``(representative, count)`` per cluster, the majority first, then largest first
    (ties: the cluster formed first); abstentions excluded, so the counts sum to m - abstentions.
  """

  label: str | None
  p_hat: float
  groups: list[tuple[str, int]]


def answer_key(answer: str | None) -> str | None:
  """The string an answer is grouped and compared by; None when it abstains (not a string,
  blank, or nothing left after canonicalisation)."""
  if not isinstance(answer, str):
    return None
  text = answer.strip()
  if not text:
    return None
  key = answer_text.canonical(text) if len(text) <= answer_text.MAX_ANSWER_CHARS else text
  return key or None


def final_answers(texts: Sequence[str | None]) -> list[str | None]:
  """The final answer of each completion: its last ``\\boxed{}`` (None without a balanced one,
  or for a text over ``answers.MAX_RESPONSE_CHARS``), as both the vote and the reward read it."""
  return [
      answer_text.extract_boxed(t)
      if isinstance(t, str) and len(t) <= answer_text.MAX_RESPONSE_CHARS
      else None
      for t in texts
  ]


def _keys_same(
    pairs: Sequence[tuple[str, str]], equivalent: Equivalence | None, timeout_s: float
) -> list[bool]:
  """For pairs of distinct non-abstaining keys: equivalent in either direction (the pool, each
  pair killed at ``timeout_s``, or ``equivalent`` here)."""
  if not pairs:
    return []
  if equivalent is None:
    return answer_text.equivalent_many(pairs, symmetric=True, timeout_s=timeout_s)
  return [bool(equivalent(a, b) or equivalent(b, a)) for a, b in pairs]


def same_answers(
    answer_list: Sequence[str | None],
    labels: Sequence[str | None],
    *,
    equivalent: Equivalence | None = None,
    timeout_s: float = 5.0,
) -> list[bool]:
  """Whether each answer is the same answer as its label (see the module docstring): False when
  either abstains, True for equal keys, else equivalence of the keys in either direction. With a
  vote's label, True exactly for the answers the vote would count for that label's cluster."""
  if len(answer_list) != len(labels):
    raise ValueError(f"same_answers: got {len(answer_list)} answers but {len(labels)} labels")
  keys = [(answer_key(a), answer_key(b)) for a, b in zip(answer_list, labels)]
  out = [a is not None and a == b for a, b in keys]
  todo = [i for i, (a, b) in enumerate(keys) if a is not None and b is not None and a != b]
  for i, verdict in zip(todo, _keys_same([keys[i] for i in todo], equivalent, timeout_s)):
    out[i] = verdict
  return out


def _string_groups_and_members(
    answer_list: Sequence[str | None],
) -> tuple[list[tuple[str, int]], list[str], list[int]]:
  """(first answer, count) per key, largest first, ties by first occurrence; the groups' keys;
  and for each answer the index of its group (-1: abstention)."""
  groups: dict[str, list] = {}
  keys: list[str | None] = []
  for answer in answer_list:
    key = answer_key(answer)
    keys.append(key)
    if key is not None:
      groups.setdefault(key, [answer.strip(), 0])[1] += 1
  ranked = sorted(groups.items(), key=lambda kv: -kv[1][1])
  rank = {key: i for i, (key, _) in enumerate(ranked)}
  members = [-1 if k is None else rank[k] for k in keys]
  return [(g[0], g[1]) for _, g in ranked], [k for k, _ in ranked], members


def _cluster_and_map(
    groups: list[tuple[str, int]], same: dict[tuple[int, int], bool], m: int
) -> tuple[Vote, list[int]]:
  """The vote, and for each string group the index of its cluster in `Vote.groups`.
  `same[i, j]` (i < j): whether string groups i and j are the same answer."""

  def alike(i: int, j: int) -> bool:
    return i == j or same[min(i, j), max(i, j)]

  rep: list[int] = []  # cluster -> its representative's string group
  of_group: list[int] = []  # string group -> cluster
  for i in range(len(groups)):
    c = next((c for c, r in enumerate(rep) if alike(r, i)), None)
    if c is None:
      c = len(rep)
      rep.append(i)
    of_group.append(c)
  if not rep:
    return Vote(None, 0.0, []), []
  size = [0] * len(rep)
  for i, c in enumerate(of_group):
    size[c] += groups[i][1]
  major = max(range(len(rep)), key=lambda c: (size[c], -c))
  # the majority takes every group that is the same answer as its representative
  of_group = [major if alike(rep[major], i) else c for i, c in enumerate(of_group)]
  size = [0] * len(rep)
  for i, c in enumerate(of_group):
    size[c] += groups[i][1]
  order = [major] + sorted((c for c in range(len(rep)) if c != major), key=lambda c: (-size[c], c))
  rank = {c: r for r, c in enumerate(order)}
  vote = Vote(groups[rep[major]][0], size[major] / m, [(groups[rep[c]][0], size[c]) for c in order])
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
  (-1 for an abstention): who voted for what, e.g. to re-weight the clusters. Index 0, the
  majority, holds exactly the answers ``same_answers`` matches with the label."""
  split = [_string_groups_and_members(a) for a in answer_lists]
  pairs = [
      (q, i, j)
      for q, (groups, _, _) in enumerate(split)
      for i, j in itertools.combinations(range(len(groups)), 2)
  ]
  verdicts = _keys_same(
      [(split[q][1][i], split[q][1][j]) for q, i, j in pairs], equivalent, timeout_s
  )
  same: list[dict[tuple[int, int], bool]] = [{} for _ in split]
  for (q, i, j), verdict in zip(pairs, verdicts):
    same[q][i, j] = verdict
  out = []
  for q, (groups, _, members) in enumerate(split):
    vote, of_group = _cluster_and_map(groups, same[q], len(answer_lists[q]))
    out.append((vote, [-1 if g < 0 else of_group[g] for g in members]))
  return out


def majority_vote(
    answers: Sequence[str | None], *, equivalent: Equivalence | None = None, timeout_s: float = 5.0
) -> Vote:
  """Majority vote over one question's answers (see the module docstring)."""
  return majority_votes([answers], equivalent=equivalent, timeout_s=timeout_s)[0]
