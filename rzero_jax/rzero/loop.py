"""The R-Zero co-evolution loop: iterations x (Challenger phase -> dataset -> Solver phase).

`run()` reads top to bottom as the algorithm; each stage (sample -> grade -> reward -> advantages
-> update) is a method of `RZeroRun` below it. The machinery (roles, batched sampling, the policy
update, checkpoints with the loop position, metrics, export, the run directory) is shared with
Absolute Zero in `rzero_jax.selfplay`. All randomness is derived from (seed, iteration, phase,
step), and the loop position is saved with both roles' train states, so a killed run resumes to
exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import ml_collections
import numpy as np

from jax.experimental import multihost_utils

from rzero_jax import sharding
from rzero_jax.metrics import Progress
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.rzero import dataset as ds
from rzero_jax.rzero import prompts, rewards
from rzero_jax.rzero import verifier as verifier_lib
from rzero_jax.rzero.rollout import build_batch
from rzero_jax.selfplay.roles import Completions, Role
from rzero_jax.selfplay.runner import Runner, fmt, format_rows, validate_benchmarks
from rzero_jax.selfplay.util import (PHASE_IDS, RunError, copy_tree, derive_seed, resolve_callable)
from rzero_jax.training.grpo import group_advantages
from rzero_jax.verify.answers import grade
from rzero_jax.verify.voting import Vote, final_answers, majority_votes_with_members, same_answers

PHASES = ("challenger", "dataset", "solver", "done")
assert all(PHASE_IDS[p] == i for i, p in enumerate(PHASES))  # seeds depend on these indices

__all__ = ["run", "RZeroRun", "RunError", "derive_seed", "validate_config", "make_summary"]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) an R-Zero run in `workdir`; returns the summary written to summary.json."""
  r = RZeroRun(config, workdir)
  meta = r.restore()
  if meta is None:
    meta = _fresh_meta()
    meta["base_heldout_accuracy"] = r.heldout_accuracy()
    meta["base_benchmarks"] = r.benchmark_scores(r.solver, 0)
    r.log(f"base model held-out accuracy: {meta['base_heldout_accuracy']}")
  else:
    r.log(
        f"resuming from checkpoint: iteration {meta['iteration'] + 1}, phase {meta['phase']}, "
        f"step {meta['step']}"
    )
  iterations = config.iterations
  while meta["iteration"] < iterations:
    it = meta["iteration"]
    kept = None
    tag = f"[iter {it + 1}/{iterations}]"
    # 1. Challenger phase: questions sampled -> Solver votes -> uncertainty - repetition rewards
    #    -> GRPO update of the Challenger.
    if meta["phase"] == "challenger":
      if meta["step"] == 0:
        r.start_phase(r.challenger)
      progress = Progress(
          f"{tag} challenger step", config.challenger.steps, start=meta["step"], enabled=r.main
      )
      while meta["step"] < config.challenger.steps:
        m = r.challenger_step(it, meta["step"])
        r.writer.scalars(
            r.tb_step(it, "challenger", meta["step"]), {f"challenger/{k}": v for k, v in m.items()}
        )
        meta["current"]["challenger_reward"].append(m["reward"])
        meta["current"]["skipped_steps"] += int(m["skipped"])
        meta["step"] += 1
        progress.update(reward=m["reward"], well_formed=m["well_formed"], p_hat=m["p_hat_mean"])
        if (
            meta["step"] < config.challenger.steps
            and meta["step"] % config.checkpoint_every_steps == 0
        ):
          r.save(meta)
      meta["phase"], meta["step"] = "dataset", 0
      r.save(meta)
    # 2. Dataset: candidate questions -> majority-vote pseudo-labels -> keep the uncertain band.
    if meta["phase"] == "dataset":
      kept, stats = r.build_dataset(it)
      if r.main:
        ds.write_jsonl(r.dataset_path(it), kept)
      r.log(
          f"{tag} dataset: {stats['unique_questions']} unique questions, kept {stats['kept']}, "
          f"mean p_hat {stats['mean_p_hat']}, pseudo-label accuracy "
          f"{stats.get('pseudo_label_accuracy')}"
      )
      if not kept and not config.dataset.replay:
        r.log(
            f"{tag} no question fell inside the p_hat band; the Solver phase of this iteration "
            "is skipped (try more candidates or a wider config.dataset.delta)."
        )
      r.writer.scalars(
          r.tb_step(it, "dataset", 0),
          {f"dataset/{k}": v for k, v in stats.items() if isinstance(v, (int, float))},
      )
      meta["current"]["dataset"] = stats
      meta["phase"], meta["step"] = "solver", 0
      r.save(meta)
    # 3. Solver phase: kept questions -> answers graded against the pseudo-labels -> GRPO update.
    if meta["phase"] == "solver":
      if kept is None:  # resumed here: process 0 reads the file it wrote, the others receive it
        kept = sharding.decided_on_main(lambda: ds.read_jsonl(r.dataset_path(it)))
      if meta["step"] == 0:
        r.start_phase(r.solver)
      train_set = kept + (r.earlier_datasets(it) if config.dataset.replay else [])
      steps = config.solver.steps if train_set else 0
      progress = Progress(f"{tag} solver step", steps, start=meta["step"], enabled=r.main)
      while meta["step"] < steps:
        m = r.solver_step(it, meta["step"], train_set)
        r.writer.scalars(
            r.tb_step(it, "solver", meta["step"]), {f"solver/{k}": v for k, v in m.items()}
        )
        meta["current"]["solver_reward"].append(m["reward"])
        meta["current"]["skipped_steps"] += int(m["skipped"])
        meta["step"] += 1
        progress.update(reward=m["reward"])
        if meta["step"] < steps and meta["step"] % config.checkpoint_every_steps == 0:
          r.save(meta)
      # 4. Evaluation and export at the end of the iteration.
      acc = r.heldout_accuracy()
      meta["current"]["benchmarks"] = r.benchmark_scores(
          r.solver, r.tb_step(it + 1, "challenger", 0)
      )
      stats = meta["current"]["dataset"]
      record = {
          "iteration": it + 1,
          "kept": stats["kept"],
          "mean_p_hat": stats["mean_p_hat"],
          "pseudo_label_accuracy": stats.get("pseudo_label_accuracy"),
          "heldout_accuracy": acc,
          **{k: stats[k] for k in EXTRA_DATASET_FIGURES if k in stats},
          **meta["current"],
      }
      record.pop("dataset")
      meta["iterations"].append(record)
      r.log(f"{tag} Solver held-out accuracy: {acc}")
      r.export(f"iter_{it + 1}", r.roles())
      meta.update(iteration=it + 1, phase="challenger", step=0, current=_iteration_record())
      r.save(meta)
  summary = make_summary(config, meta)
  return r.finish(summary, format_table(summary))


# Dataset figures copied into the iteration's record of summary.json when present (Verifier and
# remedies; with an oracle, the accuracy the plain majority would have had on the same band).
EXTRA_DATASET_FIGURES = (
    "band_questions",
    "band_majority_accuracy",
    "verifier_dropped",
    "verifier_relabelled",
    "verifier_target_agreement",
    "verifier_targets",
    "verifier_auc",
    "verifier_threshold",
    "verifier_used",
    "challenger_disagreed",
)


def _iteration_record() -> dict:
  return {"challenger_reward": [], "solver_reward": [], "skipped_steps": 0}


def _fresh_meta() -> dict:
  return {
      "iteration": 0,
      "phase": "challenger",
      "step": 0,
      "save_count": 0,
      "iterations": [],
      "base_heldout_accuracy": None,
      "current": _iteration_record(),
  }


def make_summary(config: ml_collections.ConfigDict, meta: dict) -> dict:
  """The deterministic part of summary.json (everything but `timing`)."""
  heldout = {"base": meta["base_heldout_accuracy"]}
  heldout.update({f"iter_{r['iteration']}": r["heldout_accuracy"] for r in meta["iterations"]})
  benchmarks = {}
  if meta.get("base_benchmarks"):
    benchmarks = {"base": meta["base_benchmarks"]}
    benchmarks.update({f"iter_{r['iteration']}": r.get("benchmarks") for r in meta["iterations"]})
  return {
      "iterations": meta["iterations"],
      "heldout_accuracy": heldout,
      "benchmarks": benchmarks,
      "pseudo_label_accuracy": {
          f"iter_{r['iteration']}": r["pseudo_label_accuracy"] for r in meta["iterations"]
      },
      "config": json.loads(config.to_json()),
  }


def format_table(summary: dict) -> str:
  """The per-iteration table printed at the end of a run."""
  rows = [
      ("iteration", "kept", "mean p_hat", "pseudo-label acc", "held-out acc"),
      ("base", "-", "-", "-", fmt(summary["heldout_accuracy"]["base"])),
  ]
  for r in summary["iterations"]:
    rows.append(
        (
            str(r["iteration"]),
            fmt(r["kept"]),
            fmt(r["mean_p_hat"]),
            fmt(r["pseudo_label_accuracy"]),
            fmt(r["heldout_accuracy"]),
        )
    )
  return format_rows(rows)


# Smallest allowed value of each role's counts; GRPO compares >= 2 samples per prompt.
ROLE_MINIMUMS = {
    "steps": 1,
    "prompts_per_step": 1,
    "prompts_per_update": 1,
    "group_size": 2,
    "votes": 1,
}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the batch arithmetic up front, so a bad config fails before any work is done."""
  names = ("challenger", "solver") + (("verifier",) if verifier_enabled(config) else ())
  for name in names:
    role = config[name]
    for field, minimum in ROLE_MINIMUMS.items():
      if field in role and role[field] < minimum:
        raise RunError(f"config.{name}.{field} must be >= {minimum}, got {role[field]}.")
    if role.prompts_per_step % role.prompts_per_update:
      raise RunError(
          f"config.{name}.prompts_per_step ({role.prompts_per_step}) must be a multiple "
          f"of config.{name}.prompts_per_update ({role.prompts_per_update})."
      )
    if "lora" in role and role.lora.rank < 0:
      raise RunError(
          f"config.{name}.lora.rank must be >= 0 (0 = full fine-tuning), got " f"{role.lora.rank}."
      )
    micro = role.train.micro_batch_size
    if micro and (role.prompts_per_update * role.group_size) % micro:
      raise RunError(
          f"config.{name}.train.micro_batch_size ({micro}) must divide the mini-batch of "
          f"prompts_per_update x group_size = "
          f"{role.prompts_per_update * role.group_size} sequences."
      )
  if config.challenger.repetition_denominator not in rewards.REPETITION_DENOMINATORS:
    raise RunError(
        f"config.challenger.repetition_denominator must be one of "
        f"{rewards.REPETITION_DENOMINATORS}, got {config.challenger.repetition_denominator!r}."
    )
  if config.dataset.filter not in ds.DATASET_FILTERS:
    raise RunError(
        f"config.dataset.filter must be one of {ds.DATASET_FILTERS}, got "
        f"{config.dataset.filter!r}."
    )
  if config.reward_variant not in rewards.REWARD_VARIANTS:
    raise RunError(
        f"config.reward_variant must be one of {rewards.REWARD_VARIANTS}, got "
        f"{config.reward_variant!r}."
    )
  if not 0.0 < config.challenger.reward_peak < 1.0:
    raise RunError(
        f"config.challenger.reward_peak must be in (0, 1), got {config.challenger.reward_peak}."
    )
  d = config.dataset
  if not 0.0 <= d.get("band_low", 0.25) <= d.get("band_high", 0.75) <= 1.0:
    raise RunError(
        "config.dataset.band_low and band_high must satisfy 0 <= band_low <= band_high <= 1."
    )
  weight = config.solver.get("confidence_weight", "")
  if weight not in CONFIDENCE_WEIGHTS:
    raise RunError(
        f"config.solver.confidence_weight must be one of {CONFIDENCE_WEIGHTS}, got {weight!r}."
    )
  if weight == "verifier" and not verifier_enabled(config):
    raise RunError('config.solver.confidence_weight="verifier" needs config.verifier.enabled=True.')
  if verifier_enabled(config) and config.verifier.group_size != len(verifier_lib.VERDICTS):
    raise RunError(
        "config.verifier.group_size must be 2: a pair's group is its two verdicts, got "
        f"{config.verifier.group_size}."
    )
  validate_benchmarks(config)
  if config.dataset.votes < 1 or config.dataset.num_candidates < 1:
    raise RunError("config.dataset.votes and config.dataset.num_candidates must be >= 1.")
  if config.iterations < 1 or config.checkpoint_every_steps < 1:
    raise RunError("config.iterations and config.checkpoint_every_steps must be >= 1.")


CONFIDENCE_WEIGHTS = ("", "p_hat", "verifier")


def verifier_enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run has a Verifier role (`config.verifier.enabled`; older configs: no)."""
  return "verifier" in config and bool(config.verifier.enabled)


class RZeroRun(Runner):
  """One R-Zero run: the Challenger and Solver roles (and, with `config.verifier.enabled`, the
  Verifier) and the stages of the loop."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    self.has_verifier = verifier_enabled(config)
    super().__init__(config, workdir, self.role_names())
    # The Challenger's one prompt must fit its prompt length (checked before the roles are built).
    self.challenger_prompt = encode_chat(self.tokenizer, prompts.challenger_messages())
    limit = config.challenger.max_prompt_tokens
    if len(self.challenger_prompt) > limit:
      self.close()
      raise RunError(
          f"The Challenger prompt is {len(self.challenger_prompt)} tokens, longer than "
          f"config.challenger.max_prompt_tokens ({limit}): raise it to at least "
          f"{len(self.challenger_prompt)}."
      )
    # Straight onto the mesh in the Challenger's layout, tensor by tensor; the Solver (and the
    # Verifier) get their own copies, the Challenger's state takes over the loaded buffers.
    self.solver = self.make_role("solver", donate=False)
    self.verifier = self.make_role("verifier", donate=False) if self.has_verifier else None
    self.challenger = self.make_role("challenger", donate=True)
    if self.keeps_reference():  # only when some role's loss has a KL term
      self.ref_params, self.ref_role = copy_tree(self.challenger.state.params), "challenger"
    self.heldout = self._heldout()
    self.oracle = resolve_callable(config.eval.oracle) if config.eval.oracle else None

  def keeps_reference(self) -> bool:
    """A KL reference is held only when some role's loss has a KL term (`train.kl_coef`); it is
    then the phase-start weights of the role being trained. With every kl_coef 0, none is kept
    (one copy of the weights less) and checkpoints hold no "ref" tree."""
    return any(bool(self.config[name].train.kl_coef) for name in self.role_names())

  def role_names(self) -> tuple[str, ...]:
    """The config sections of the trained roles, in checkpoint and export order."""
    return ("challenger", "solver") + (("verifier",) if self.has_verifier else ())

  def roles(self) -> tuple[Role, ...]:
    """The trained roles, in checkpoint and export order."""
    return (self.challenger, self.solver) + ((self.verifier,) if self.has_verifier else ())

  def trees(self) -> dict:
    trees = {role.name: role.state for role in self.roles()}
    if self.keeps_reference():
      trees["ref"] = self.ref_params
    return trees

  def set_trees(self, trees: dict) -> None:
    for role in self.roles():
      role.state = trees[role.name]
    self.ref_params = trees.get("ref")

  def tb_step(self, iteration: int, phase: str, step: int) -> int:
    """TensorBoard step: per iteration the Challenger's steps, the dataset, the Verifier's steps
    (none without it), then the Solver's."""
    c, s = self.config.challenger.steps, self.config.solver.steps
    v = verifier_lib.FOLDS * self.config.verifier.steps if self.has_verifier else 0
    offset = {"challenger": 0, "dataset": c, "verifier": c + 1, "solver": c + 1 + v}[phase]
    return iteration * (c + v + s + 1) + offset + step

  def _heldout(self) -> list[tuple[str, str]]:
    e = self.config.eval
    if e.heldout:
      return [(q, str(a)) for q, a, *_ in resolve_callable(e.heldout)()]
    if e.heldout_jsonl:
      return [(r["question"], str(r["answer"])) for r in ds.read_jsonl(e.heldout_jsonl)]
    return []

  # ----- 1. the Challenger phase ---------------------------------------------------------------

  def challenger_step(self, iteration: int, step: int) -> dict:
    c = self.config.challenger
    seed = derive_seed(self.config.seed, iteration, "challenger", step)
    # sample
    prompt_ids = [self.challenger_prompt] * c.prompts_per_step
    out = self.sample(
        self.challenger,
        prompt_ids,
        num_samples=c.group_size,
        seed=seed,
        temperature=c.temperature,
        top_p=c.top_p,
        max_new_tokens=c.max_new_tokens,
    )
    # grade: the Solver's votes on each well-formed question
    questions = self._parse_questions(out.tokens)
    valid = [i for i, q in enumerate(questions) if q is not None]
    votes, _, _, _ = self._vote(
        [questions[i] for i in valid],
        seed + 1,
        c.votes,
        self.config.dataset.temperature,
        self.config.dataset.top_p,
    )
    p_hat = np.zeros(len(questions))
    p_hat[valid] = [v.p_hat for v in votes]
    rep, clusters = rewards.repetition_penalties(
        questions, tau=c.tau, lam=c.lam, denominator=c.repetition_denominator
    )
    r = rewards.challenger_rewards(
        p_hat,
        [q is not None for q in questions],
        rep,
        variant=self.config.reward_variant,
        peak=c.reward_peak,
    )
    # advantages + update
    metrics = self._grpo_update(self.challenger, prompt_ids, out, r)
    metrics.update(
        reward=float(r.mean()),
        well_formed=len(valid) / len(questions),
        p_hat_mean=float(p_hat[valid].mean()) if valid else 0.0,
        repetition_clusters=clusters,
        tokens_per_s=self.tokens_per_s,
        completion_len=float(np.mean([len(t) for t in out.tokens])),
    )
    self.writer.histogram(
        self.tb_step(iteration, "challenger", step), "challenger/p_hat", p_hat[valid]
    )
    return metrics

  # ----- 2. the dataset --------------------------------------------------------------------------

  def build_dataset(self, iteration: int) -> tuple[list[dict], dict]:
    """Candidates -> the Solver's votes -> the questions in the band (and above the minimum
    margin); with the Verifier: it trains on the confident votes, then its judgements pick each
    kept question's label and drop the doubtful ones."""
    d = self.config.dataset
    seed = derive_seed(self.config.seed, iteration, "dataset", 0)
    out = self.sample(
        self.challenger,
        [self.challenger_prompt] * d.num_candidates,
        num_samples=1,
        seed=seed,
        temperature=self.config.challenger.temperature,
        top_p=self.config.challenger.top_p,
        max_new_tokens=self.config.challenger.max_new_tokens,
    )
    parsed = self._parse_questions(out.tokens)
    questions = ds.unique_questions(parsed)
    votes, answers, texts, members = self._vote(
        questions, seed + 1, d.votes, d.temperature, d.top_p
    )
    p_hats = [v.p_hat for v in votes]
    margins = [ds.group_margin([n for _, n in v.groups], d.votes) for v in votes]
    band = ds.select_questions(
        questions,
        [v.label for v in votes],
        p_hats,
        answers,
        delta=d.delta,
        filter=d.filter,
        band=(d.get("band_low", 0.25), d.get("band_high", 0.75)),
        margins=margins,
        min_margin=d.get("min_margin", 0.0),
    )
    if d.get("save_all_votes", False) and self.main:  # every question's votes, for analysis
      ds.write_jsonl(
          os.path.join(self.workdir, "data", f"votes_iter_{iteration + 1}.jsonl"),
          (
              {"question": q, "label": v.label, "p_hat": v.p_hat, "answers": a, "texts": t}
              for q, v, a, t in zip(questions, votes, answers, texts)
          ),
      )
    stats = {"candidates": d.num_candidates, "unique_questions": len(questions)}
    kept = band
    if self.has_verifier:
      index = {q: i for i, q in enumerate(questions)}
      kept, vstats = self.verify_labels(
          iteration,
          questions,
          votes,
          answers,
          texts,
          members,
          [index[r["question"]] for r in band],
      )
      stats.update(vstats, band_questions=len(band))
    if d.get("challenger_agreement", False) and kept:
      # a label-free consistency check: the Challenger's own answer to its question (the first
      # completion that wrote it) must agree with the label
      own: dict[str, str | None] = {}
      for q, t in zip(parsed, out.tokens):
        if q is not None:
          own.setdefault(ds.normalize_question(q), prompts.parse_challenger_answer(self.decode(t)))
      mine = [own.get(ds.normalize_question(r["question"])) for r in kept]
      agree = self.grading(
          lambda: same_answers(
              mine, [r["label"] for r in kept], timeout_s=self.config.grade_timeout_s
          )
      )
      stats["challenger_disagreed"] = int(sum(not (a and m) for a, m in zip(agree, mine)))
      kept = [r | {"challenger_answer": m} for r, a, m in zip(kept, agree, mine) if a and m]
    stats.update(
        kept=len(kept),
        mean_p_hat=float(np.mean([r["p_hat"] for r in kept])) if kept else None,
        all_abstained=int(sum(v.label is None for v in votes)),
    )
    if self.oracle is not None and kept:
      truths, ok = self.grading(lambda: self._judge_labels(kept))
      for r, t in zip(kept, truths):
        r["true_answer"] = t
      stats["pseudo_label_accuracy"] = float(np.mean(ok)) if ok else None
    if self.oracle is not None and self.has_verifier and band:
      _, ok = self.grading(lambda: self._judge_labels(band))
      stats["band_majority_accuracy"] = float(np.mean(ok)) if ok else None
    return kept, stats

  # ----- 2b. the Verifier (config.verifier.enabled) ------------------------------------------------

  def verify_labels(
      self,
      iteration: int,
      questions: list[str],
      votes: list[Vote],
      answers: list[list[str | None]],
      texts: list[list[str]],
      members: list[list[int]],
      band: list[int],
  ) -> tuple[list[dict], dict]:
    """Trains the Verifier on the Solver's confident votes (no labels), judges every answer of
    the band's questions, and returns the kept records with the judged labels, and figures.

    Cross-fitted (`verifier.question_folds`): the questions are dealt into two folds, and for
    each fold the Verifier starts again from its state at the stage's start, trains on the other
    fold's targets only, is checked (AUC, threshold, gate) on this fold's targets and judges this
    fold's band questions. So no question is judged by a Verifier that trained on it, even where
    the band and the confident votes overlap (`:verifier`: band 0.8-0.9, confident 0.8). The role
    keeps the last fold's weights."""
    v = self.config.verifier
    m = self.config.dataset.votes
    prompts_of = {}  # (question, answer) -> the Verifier's prompt ids (None: too long)

    def prompt(q: int, a: int) -> list[int] | None:
      if (q, a) not in prompts_of:
        ids = encode_chat(self.tokenizer, verifier_lib.verifier_messages(questions[q], texts[q][a]))
        prompts_of[q, a] = ids if len(ids) <= v.max_prompt_tokens else None
      return prompts_of[q, a]

    targets = verifier_lib.training_targets(
        members, [x.p_hat for x in votes], confident=v.confident
    )
    targets = [t for t in targets if prompt(t.question, t.answer) is not None]
    rng = np.random.default_rng(
        derive_seed(self.config.seed, iteration, "verifier", verifier_lib.FOLDS * v.steps)
    )
    fold_of = verifier_lib.question_folds(band, [t.question for t in targets], rng)
    tag = f"[iter {iteration + 1}/{self.config.iterations}]"
    start = copy_tree(self.verifier.state)  # every fold starts from the stage's start
    score_of: dict[tuple[int, int], float] = {}
    gate: dict[int, tuple[bool, float]] = {}  # fold -> (judgements used, threshold)
    aucs, agreement, all_scores, checked = [], [], [], 0
    for fold in range(verifier_lib.FOLDS):
      if fold:
        self.verifier.state = start if fold == verifier_lib.FOLDS - 1 else copy_tree(start)
      train = [t for t in targets if fold_of[t.question] != fold]
      check = verifier_lib.check_targets(
          [t for t in targets if fold_of[t.question] == fold], v.prompts_per_step
      )
      # train: GRPO over both verdicts of each pair (steps logged like the other roles' steps)
      self.start_phase(self.verifier)
      steps = v.steps if train else 0
      progress = Progress(
          f"{tag} verifier fold {fold + 1}/{verifier_lib.FOLDS} step", steps, enabled=self.main
      )
      for step in range(steps):
        metrics = self.verifier_step(iteration, fold * v.steps + step, train, prompt)
        self.writer.scalars(
            self.tb_step(iteration, "verifier", fold * v.steps + step),
            {f"verifier/{k}": x for k, x in metrics.items()},
        )
        progress.update(loss=metrics.get("loss", 0.0))
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
      check_scores = scores[len(judged_pairs) :]
      rights = [t.right for t in check]
      agreement += [s if r else 1.0 - s for r, s in zip(rights, check_scores)]
      checked += len(check)
      threshold = v.min_score
      if v.get("calibrate", False):
        threshold = verifier_lib.calibrated_threshold(check_scores, rights, v.min_score)
      # a Verifier that cannot separate held-out right and wrong targets is not used this time
      check_auc = verifier_lib.auc(check_scores, rights)
      if check_auc is not None:
        aucs.append(check_auc)
      min_auc = v.get("min_auc", 0.0)
      used = min_auc <= 0 or (check_auc is not None and check_auc + 1e-12 >= min_auc)
      gate[fold] = (used, threshold)
    # labels: the heaviest cluster by P(right); doubtful labels are dropped
    kept, dropped, relabelled = [], 0, 0
    for q in band:
      vote = votes[q]
      used, threshold = gate[fold_of[q]]
      qs = [score_of.get((q, a), 0.5) for a in range(len(members[q]))]
      j = verifier_lib.judged_vote(vote.groups, members[q], qs, m, relabel=v.relabel and used)
      relabelled += int(j.changed)
      if j.label is None or (used and j.score + 1e-12 < threshold):
        dropped += 1
        continue
      kept.append(
          {
              "question": questions[q],
              "label": j.label,
              "p_hat": float(j.p_hat),
              "answers": list(answers[q]),
              "majority": vote.label,
              "verifier_score": j.score,
              "verifier_scores": [float(x) for x in qs],
          }
      )
    stats = {
        "verifier_targets": len(targets),
        "verifier_target_agreement": float(np.mean(agreement)) if agreement else None,
        "verifier_auc": float(np.mean(aucs)) if aucs else None,  # mean over the folds
        "verifier_used": float(np.mean([u for u, _ in gate.values()])),  # share of the folds
        "verifier_threshold": float(np.mean([t for _, t in gate.values()])),
        "verifier_check_targets": checked,
        "verifier_dropped": dropped,
        "verifier_relabelled": relabelled,
    }
    self.writer.histogram(
        self.tb_step(iteration, "dataset", 0), "verifier/score", np.concatenate(all_scores)
    )
    return kept, stats

  def verifier_step(self, iteration: int, step: int, targets: list, prompt) -> dict:
    """One Verifier update: `prompts_per_step` (question, answer) pairs, half right, half wrong
    by the confident votes; each pair's group is its two verdicts, rewarded by agreement."""
    v = self.config.verifier
    rng = np.random.default_rng(derive_seed(self.config.seed, iteration, "verifier", step))
    picks = verifier_lib.balanced_pairs(targets, v.prompts_per_step, rng)
    prompt_ids = [prompt(t.question, t.answer) for t in picks]
    verdicts = self._verdict_ids()
    out = Completions(
        tokens=[list(x) for _ in picks for x in verdicts],
        logprobs=[[0.0] * len(x) for _ in picks for x in verdicts],
        finished=[True] * (len(verdicts) * len(picks)),
    )
    r = verifier_lib.verdict_rewards(picks)
    metrics = self._grpo_update(self.verifier, prompt_ids, out, r, recompute=True)
    metrics.pop("logprob_mismatch", None)  # the verdicts were not sampled: nothing to compare
    metrics.update(right_share=float(np.mean([t.right for t in picks])))
    return metrics

  def judge(self, prompt_ids: list[list[int]]) -> np.ndarray:
    """The Verifier's P(right) for each prompt: both verdicts' sequence log-probs, in mini-batches
    of the training shape (the last one padded with repeats)."""
    if not prompt_ids:
      return np.zeros(0)
    v, role = self.config.verifier, self.verifier
    verdicts = self._verdict_ids()
    seq_prompts = [p for p in prompt_ids for _ in verdicts]
    seq_tokens = [list(x) for _ in prompt_ids for x in verdicts]
    size = v.prompts_per_update * len(verdicts)
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
          pad_id=self.pad_id,
      )
      rows = sharding.process_rows(role.plan, size)
      g = sharding.host_to_global(
          {k: batch[k][rows] for k in ("tokens", "attention_mask")}, role.plan
      )
      lp = role.logprob_fn(role.params, g["tokens"], g["attention_mask"])
      lp = np.asarray(multihost_utils.process_allgather(lp, tiled=True))
      sums.append((lp * batch["loss_mask"]).sum(axis=1)[:real])
    seq = np.concatenate(sums).reshape(len(prompt_ids), len(verdicts))
    return verifier_lib.score_from_logprobs(seq[:, 0], seq[:, 1])

  def _verdict_ids(self) -> list[list[int]]:
    """Token ids of the verdicts (`verifier.VERDICTS`), each ending with the end-of-turn id."""
    vocab = self.tokenizer.get_vocab()
    end = vocab.get("<|im_end|>", self.stop_ids[0] if self.stop_ids else self.pad_id)
    return [
        self.tokenizer.encode(x, add_special_tokens=False) + [end] for x in verifier_lib.VERDICTS
    ]

  def _judge_labels(self, kept: list[dict]) -> tuple[list, list[bool]]:
    """The oracle's answer to each kept question, and whether each judged pseudo-label is right."""
    truths = [self.oracle(r["question"]) for r in kept]
    judged = [(r["label"], t) for r, t in zip(kept, truths) if t is not None]
    ok = (
        grade(
            [f"\\boxed{{{l}}}" for l, _ in judged],
            [str(t) for _, t in judged],
            timeout_s=self.config.grade_timeout_s,
        )
        if judged
        else []
    )
    return truths, ok

  # ----- 3. the Solver phase -----------------------------------------------------------------------

  def dataset_path(self, iteration: int) -> str:
    """data/iter_<i>.jsonl: the kept questions and labels of `iteration` (0-based)."""
    return os.path.join(self.workdir, "data", f"iter_{iteration + 1}.jsonl")

  def earlier_datasets(self, iteration: int) -> list[dict]:
    """The kept questions of the iterations before `iteration` (0-based) with the labels they got
    then (`dataset.replay`), read by process 0 and shared."""
    paths = [self.dataset_path(i) for i in range(iteration)]
    return sharding.decided_on_main(lambda: [r for path in paths for r in ds.read_jsonl(path)])

  def solver_step(self, iteration: int, step: int, kept: list[dict]) -> dict:
    s = self.config.solver
    seed = derive_seed(self.config.seed, iteration, "solver", step)
    # sample
    order = np.random.default_rng(seed).permutation(len(kept))
    picks = [kept[order[i % len(kept)]] for i in range(s.prompts_per_step)]
    prompt_ids = [self._solver_prompt(r["question"]) for r in picks]
    out = self.sample(
        self.solver,
        prompt_ids,
        num_samples=s.group_size,
        seed=seed,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
    )
    # grade against the pseudo-labels by the vote's own rule (`voting.same_answers`): an answer
    # is right exactly when the vote would have counted it for the label's cluster
    texts = [self.decode(t) for t in out.tokens]
    labels = [r["label"] for r in picks for _ in range(s.group_size)]
    correct = self.grading(
        lambda: same_answers(final_answers(texts), labels, timeout_s=self.config.grade_timeout_s)
    )
    variant = self.config.reward_variant
    formatted = [rewards.solver_well_formed(t, variant=variant) for t in texts]
    r = rewards.solver_rewards(correct, formatted, variant=variant)
    # advantages (scaled by the labels' confidence with solver.confidence_weight) + update
    scale = None
    weight = s.get("confidence_weight", "")
    if weight:
      key = "p_hat" if weight == "p_hat" else "verifier_score"
      mean = float(np.mean([x[key] for x in kept]))
      scale = np.asarray([x[key] / max(mean, 1e-9) for x in picks])
    metrics = self._grpo_update(self.solver, prompt_ids, out, r, scale=scale)
    metrics.update(
        reward=float(r.mean()),
        tokens_per_s=self.tokens_per_s,
        completion_len=float(np.mean([len(t) for t in out.tokens])),
    )
    return metrics

  # ----- 4. evaluation -------------------------------------------------------------------------

  def heldout_accuracy(self) -> float | None:
    if not self.heldout:
      return None
    ids = [self._solver_prompt(q) for q, _ in self.heldout]
    if any(i is None for i in ids):
      raise RunError("A held-out question is longer than config.solver.max_prompt_tokens.")
    out = self.sample(
        self.solver,
        ids,
        num_samples=1,
        seed=0,
        temperature=0.0,
        top_p=1.0,
        max_new_tokens=self.config.eval.max_new_tokens,
    )
    texts = [self.decode(t) for t in out.tokens]
    golds = [a for _, a in self.heldout]
    return self.grading(
        lambda: float(np.mean(grade(texts, golds, timeout_s=self.config.grade_timeout_s)))
    )

  # ----- helpers -------------------------------------------------------------------------------

  def _grpo_update(
      self,
      role: Role,
      prompt_ids: list[list[int]],
      out,
      rewards_: np.ndarray,
      *,
      scale: np.ndarray | None = None,
      recompute: bool | None = None,
  ) -> dict:
    """GRPO: advantages normalised within each prompt's group of samples (times `scale[i]` for
    prompt i when given), then the shared update over mini-batches of `prompts_per_update`
    prompts (`recompute`: old log-probs from the training pass, default the config's)."""
    s = role.settings
    advantages = np.asarray(group_advantages(rewards_, s.group_size))
    if scale is not None:
      advantages = advantages * np.repeat(np.asarray(scale, np.float64), s.group_size)
    seq_prompts = [p for p in prompt_ids for _ in range(s.group_size)]
    return self.update(
        role,
        seq_prompts,
        out,
        advantages,
        mini_batch_size=s.prompts_per_update * s.group_size,
        recompute_old_logprobs=recompute,
    )

  def _solver_prompt(self, question: str) -> list[int] | None:
    ids = encode_chat(self.tokenizer, prompts.solver_messages(question))
    return ids if len(ids) <= self.config.solver.max_prompt_tokens else None

  def _vote(
      self, questions: list[str], seed: int, votes: int, temperature: float, top_p: float
  ) -> tuple[list, list[list[str | None]], list[list[str]], list[list[int]]]:
    """The Solver's `votes` answers per question, batched over all questions: the votes, the
    extracted answers, the completions' texts and each answer's cluster (-1: abstained)."""
    if not questions:
      return [], [], [], []
    ids = [self._solver_prompt(q) for q in questions]
    out = self.sample(
        self.solver,
        ids,
        num_samples=votes,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=self.config.solver.max_new_tokens,
    )
    texts = [self.decode(t) for t in out.tokens]
    answers = final_answers(texts)
    grouped = [answers[i * votes : (i + 1) * votes] for i in range(len(questions))]
    decided = self.grading(
        lambda: [
            (dataclasses.astuple(v), members)
            for v, members in majority_votes_with_members(
                grouped, timeout_s=self.config.grade_timeout_s
            )
        ]
    )
    result = [
        Vote(label, p_hat, [tuple(g) for g in groups]) for (label, p_hat, groups), _ in decided
    ]
    members = [list(mem) for _, mem in decided]
    per_question = [texts[i * votes : (i + 1) * votes] for i in range(len(questions))]
    return result, grouped, per_question, members

  def _parse_questions(self, completions: Sequence[Sequence[int]]) -> list[str | None]:
    parsed = [prompts.parse_question(self.decode(t)) for t in completions]
    return [q if q is not None and self._solver_prompt(q) is not None else None for q in parsed]
