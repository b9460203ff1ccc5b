"""The Verifier: its prompt, label-free training targets, reward, how its judgements enter the
pseudo-labels, and its stage of the R-Zero loop (`config.verifier.*`, off by default).

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

`VerifierStage` is the stage of the R-Zero loop that does all this with the Verifier role: the
dataset stage hands it the band and the votes, it returns the kept records with judged labels.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Sequence

from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from scipy import stats

from rzero_jax import multihost
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.rzero.dataset import SolverVotes
from rzero_jax.selfplay.roles import MISMATCH_METRICS, Completions, Role
from rzero_jax.selfplay.util import copy_tree, derive_seed
from rzero_jax.training.batch import build_batch

if TYPE_CHECKING:
  from rzero_jax.rzero.loop import RZeroRun

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


def gate(
    check_scores: Sequence[float], rights: Sequence[bool], settings: ml_collections.ConfigDict
) -> tuple[bool, float, float | None]:
  """Whether a fold's judgements are used, the threshold they must reach, and the Verifier's AUC
  on the fold's held-out targets: a Verifier whose AUC is below `settings.min_auc` is not used;
  the threshold is `settings.min_score`, or with `settings.calibrate` `calibrated_threshold`."""
  threshold = settings.min_score
  if settings.get("calibrate", False):
    threshold = calibrated_threshold(check_scores, rights, settings.min_score)
  check_auc = auc(check_scores, rights)
  min_auc = settings.get("min_auc", 0.0)
  used = min_auc <= 0 or (check_auc is not None and check_auc + 1e-12 >= min_auc)
  return used, threshold, check_auc


def judged_records(
    band: Sequence[int],
    ballot: SolverVotes,
    score_of: dict[tuple[int, int], float],
    gates: Sequence[tuple[bool, float]],
    *,
    m: int,
    relabel: bool,
) -> tuple[list[dict], int, int]:
  """The kept records of the band's questions (indices in `ballot`) with their judged labels
  (`judged_vote`; `score_of[q, a]`: P(right) of answer a of question q, 0.5 when unjudged;
  `gates[i]`: whether the judgements of band question i's fold are used, and the threshold), and
  how many questions were dropped and relabelled."""
  kept, dropped, relabelled = [], 0, 0
  members = ballot.members
  for q, (used, threshold) in zip(band, gates):
    vote = ballot.votes[q]
    qs = [score_of.get((q, a), 0.5) for a in range(len(members[q]))]
    j = judged_vote(vote.groups, members[q], qs, m, relabel=relabel and used)
    relabelled += int(j.changed)
    if j.label is None or (used and j.score + 1e-12 < threshold):
      dropped += 1
      continue
    kept.append(
        {
            "question": ballot.questions[q],
            "label": j.label,
            "p_hat": float(j.p_hat),
            "answers": list(ballot.answers[q]),
            "majority": vote.label,
            "verifier_score": j.score,
            "verifier_scores": [float(x) for x in qs],
        }
    )
  return kept, dropped, relabelled


class VerifierStage:
  """The Verifier stage of an R-Zero run (`config.verifier.enabled`): holds the Verifier role,
  trains it on the Solver's confident votes and judges the band's answers, cross-fitted.

  `run` is the `RZeroRun` it belongs to (its config, tokenizer, the policy update, TensorBoard
  and the stage bookkeeping)."""

  def __init__(self, run: RZeroRun, role: Role):
    self.run, self.role = run, role
    self.settings = run.config.verifier
    # Token ids of the verdicts (`VERDICTS`), each ending with the end-of-turn id.
    vocab = run.tokenizer.get_vocab()
    end = vocab.get("<|im_end|>", run.stop_ids[0] if run.stop_ids else run.pad_id)
    self.verdicts = [run.tokenizer.encode(x, add_special_tokens=False) + [end] for x in VERDICTS]

  def verify_labels(
      self,
      iteration: int,
      ballot: SolverVotes,
      band: list[int],
  ) -> tuple[list[dict], dict]:
    """Trains the Verifier on the Solver's confident votes (no labels), judges every answer of
    the band's questions (`band`: their indices in `ballot`), and returns the kept records with
    the judged labels, and figures.

    Cross-fitted (`question_folds`): for each fold the Verifier starts again from its state at
    the stage's start, trains on the other fold's targets only, is checked (AUC, threshold,
    gate) on this fold's targets and judges this fold's band questions. The role keeps the last
    fold's weights."""
    v, run, members = self.settings, self.run, ballot.members
    prompt = self._prompts(ballot.questions, ballot.texts)
    targets = training_targets(members, [x.p_hat for x in ballot.votes], confident=v.confident)
    targets = [t for t in targets if prompt(t.question, t.answer) is not None]
    rng = np.random.default_rng(
        derive_seed(run.config.seed, iteration, "verifier", FOLDS * v.steps)
    )
    fold_of = question_folds(band, [t.question for t in targets], rng)
    start = copy_tree(self.role.state)  # every fold starts from the stage's start
    score_of: dict[tuple[int, int], float] = {}
    gates: dict[int, tuple[bool, float]] = {}  # fold -> (judgements used, threshold)
    aucs, agreement, all_scores, checked = [], [], [], 0
    for fold in range(FOLDS):
      if fold:
        self.role.state = start if fold == FOLDS - 1 else copy_tree(start)
      check = check_targets([t for t in targets if fold_of[t.question] == fold], v.prompts_per_step)
      self.train_fold(iteration, fold, [t for t in targets if fold_of[t.question] != fold], prompt)
      # judge: P(right) of every answer of this fold's band questions (and of its check targets)
      pairs = [
          (q, a) for q in band if fold_of[q] == fold for a, c in enumerate(members[q]) if c >= 0
      ]
      judged_pairs = [p for p in pairs if prompt(*p) is not None]
      scores = self.judge(
          [prompt(*p) for p in judged_pairs + [(t.question, t.answer) for t in check]]
      )
      all_scores.append(scores)
      score_of.update(zip(judged_pairs, scores[: len(judged_pairs)]))
      check_scores, rights = scores[len(judged_pairs) :], [t.right for t in check]
      agreement += [s if r else 1.0 - s for r, s in zip(rights, check_scores)]
      checked += len(check)
      used, threshold, check_auc = gate(check_scores, rights, v)
      if check_auc is not None:
        aucs.append(check_auc)
      gates[fold] = (used, threshold)
    # labels: the heaviest cluster by P(right); doubtful labels are dropped
    kept, dropped, relabelled = judged_records(
        band,
        ballot,
        score_of,
        [gates[fold_of[q]] for q in band],
        m=run.config.dataset.votes,
        relabel=v.relabel,
    )
    stats = {
        "verifier_targets": len(targets),
        "verifier_target_agreement": float(np.mean(agreement)) if agreement else None,
        "verifier_auc": float(np.mean(aucs)) if aucs else None,  # mean over the folds
        "verifier_used": float(np.mean([u for u, _ in gates.values()])),  # share of the folds
        "verifier_threshold": float(np.mean([t for _, t in gates.values()])),
        "verifier_check_targets": checked,
        "verifier_dropped": dropped,
        "verifier_relabelled": relabelled,
    }
    run.writer.histogram(
        run.tb_step(iteration, "dataset", 0), "verifier/score", np.concatenate(all_scores)
    )
    return kept, stats

  def train_fold(
      self, iteration: int, fold: int, train: list[Target], prompt: Callable[[int, int], Any]
  ) -> None:
    """GRPO over both verdicts of each pair of `train`, `verifier.steps` steps from a phase start
    (steps logged like the other roles' steps; none without targets)."""
    v, run = self.settings, self.run
    run.start_phase(self.role)
    offset = fold * v.steps
    run.run_steps(
        f"{run.tag(iteration)} verifier fold {fold + 1}/{FOLDS} step",
        v.steps if train else 0,
        lambda step: self.step(iteration, offset + step, train, prompt),
        tb_prefix="verifier",
        tb_step=lambda step: run.tb_step(iteration, "verifier", offset + step),
        show=lambda metrics: {"loss": metrics.get("loss", 0.0)},
    )

  def step(
      self, iteration: int, step: int, targets: list[Target], prompt: Callable[[int, int], Any]
  ) -> dict:
    """One Verifier update: `prompts_per_step` (question, answer) pairs, half right, half wrong
    by the confident votes; each pair's group is its two verdicts, rewarded by agreement."""
    v, run = self.settings, self.run
    rng = np.random.default_rng(derive_seed(run.config.seed, iteration, "verifier", step))
    picks = balanced_pairs(targets, v.prompts_per_step, rng)
    prompt_ids = [prompt(t.question, t.answer) for t in picks]
    out = Completions(
        tokens=[list(x) for _ in picks for x in self.verdicts],
        logprobs=[[0.0] * len(x) for _ in picks for x in self.verdicts],
        finished=[True] * (len(self.verdicts) * len(picks)),
    )
    metrics = run.grpo_update(self.role, prompt_ids, out, verdict_rewards(picks), recompute=True)
    for key in MISMATCH_METRICS:  # the verdicts were not sampled: nothing to compare
      metrics.pop(key, None)
    metrics.update(right_share=float(np.mean([t.right for t in picks])))
    return metrics

  def judge(self, prompt_ids: list[list[int]]) -> np.ndarray:
    """The Verifier's P(right) for each prompt: both verdicts' sequence log-probs, in mini-batches
    of the training shape (the last one padded with repeats)."""
    if not prompt_ids:
      return np.zeros(0)
    v, role = self.settings, self.role
    seq_prompts = [p for p in prompt_ids for _ in self.verdicts]
    seq_tokens = [list(x) for _ in prompt_ids for x in self.verdicts]
    size = v.prompts_per_update * len(self.verdicts)
    sums = []
    for start in range(0, len(seq_prompts), size):
      chunk_p = seq_prompts[start : start + size]
      chunk_t = seq_tokens[start : start + size]
      real = len(chunk_p)
      chunk_p += [chunk_p[-1]] * (size - real)
      chunk_t += [chunk_t[-1]] * (size - real)
      batch = build_batch(
          chunk_p,
          chunk_t,
          [[0.0] * len(t) for t in chunk_t],
          np.zeros(size),
          prompt_len=v.max_prompt_tokens,
          completion_len=v.max_new_tokens,
          pad_id=self.run.pad_id,
      )
      rows = multihost.process_rows(role.plan, size)
      g = multihost.host_to_global(
          {k: batch[k][rows] for k in ("tokens", "attention_mask")}, role.plan
      )
      lp = role.logprob_fn(role.params, g["tokens"], g["attention_mask"])
      lp = np.asarray(multihost_utils.process_allgather(lp, tiled=True))
      sums.append((lp * batch["loss_mask"]).sum(axis=1)[:real])
    seq = np.concatenate(sums).reshape(len(prompt_ids), len(self.verdicts))
    return score_from_logprobs(seq[:, 0], seq[:, 1])

  def _prompts(
      self, questions: list[str], texts: list[list[str]]
  ) -> Callable[[int, int], list[int] | None]:
    """(question, answer) -> the Verifier's prompt ids (None: longer than its prompt length),
    each encoded once."""
    prompts_of: dict[tuple[int, int], list[int] | None] = {}

    def prompt(q: int, a: int) -> list[int] | None:
      if (q, a) not in prompts_of:
        ids = encode_chat(self.run.tokenizer, verifier_messages(questions[q], texts[q][a]))
        prompts_of[q, a] = ids if len(ids) <= self.settings.max_prompt_tokens else None
      return prompts_of[q, a]

    return prompt
