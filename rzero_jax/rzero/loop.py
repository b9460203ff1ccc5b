"""The R-Zero co-evolution loop: iterations x (Challenger phase -> dataset -> Solver phase).

`run()` reads top to bottom as the algorithm: each iteration names its stages in order, and each
stage (a method of `RZeroRun` below it) does its work and one call of bookkeeping (progress,
TensorBoard, the loop position, checkpoints) through the shared `rzero_jax.selfplay.Runner`,
which also holds the machinery (roles, batched sampling, the policy update, export, the run
directory) shared with Absolute Zero. The Verifier's stage is `rzero.verifier.VerifierStage`.
All randomness is derived from (seed, iteration, phase, step), and the loop position is saved
with the roles' train states, so a killed run resumes to exactly the result of an uninterrupted
one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import ml_collections
import numpy as np

from rzero_jax import multihost
from rzero_jax.io import read_jsonl, write_jsonl
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.rzero import dataset as ds
from rzero_jax.rzero import prompts, rewards
from rzero_jax.rzero import verifier as verifier_lib
from rzero_jax.rzero.config import role_names, validate_config, verifier_enabled
from rzero_jax.selfplay.roles import Role
from rzero_jax.selfplay.runner import Runner, fmt, format_rows
from rzero_jax.selfplay.util import PHASE_IDS, RunError, copy_tree, derive_seed, resolve_callable
from rzero_jax.training.grpo import group_advantages
from rzero_jax.verify.answers import grade
from rzero_jax.verify.voting import Vote, final_answers, majority_votes_with_members, same_answers

PHASES = ("challenger", "dataset", "solver", "done")
assert all(PHASE_IDS[p] == i for i, p in enumerate(PHASES))  # seeds depend on these indices

__all__ = [
    "run",
    "RZeroRun",
    "RunError",
    "derive_seed",
    "validate_config",
    "make_summary",
    "format_table",
]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) an R-Zero run in `workdir`; returns the summary written to summary.json."""
  r = RZeroRun(config, workdir)
  meta = r.restore()
  if meta is None:
    meta = r.evaluate_base()
  else:
    r.log(
        f"resuming from checkpoint: iteration {meta['iteration'] + 1}, phase {meta['phase']}, "
        f"step {meta['step']}"
    )
  while meta["iteration"] < config.iterations:
    kept = None  # this iteration's dataset, when built in this process's lifetime
    # 1. Challenger phase: questions sampled -> Solver votes -> uncertainty - repetition rewards
    #    -> GRPO update of the Challenger.
    if meta["phase"] == "challenger":
      r.challenger_phase(meta)
    # 2. Dataset: candidate questions -> the Solver's majority votes -> the uncertain band
    #    [-> the Verifier's judged labels] -> data/iter_<i>.jsonl.
    if meta["phase"] == "dataset":
      kept = r.dataset_stage(meta)
    # 3. Solver phase: kept questions -> answers graded against the pseudo-labels -> GRPO update.
    if meta["phase"] == "solver":
      r.solver_phase(meta, kept)
      # 4. Evaluation and export at the end of the iteration.
      r.end_iteration(meta)
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


def _record_step(current: dict, key: str, metrics: dict) -> None:
  """Files a phase step's reward (under `key`) and skip in the iteration's record."""
  current[key].append(metrics["reward"])
  current["skipped_steps"] += int(metrics["skipped"])


def _iteration_summary(iteration: int, heldout_accuracy: float | None, current: dict) -> dict:
  """The record of iteration `iteration` (0-based) in summary.json."""
  stats = current["dataset"]
  record = {
      "iteration": iteration + 1,
      "kept": stats["kept"],
      "mean_p_hat": stats["mean_p_hat"],
      "pseudo_label_accuracy": stats.get("pseudo_label_accuracy"),
      "heldout_accuracy": heldout_accuracy,
      **{k: stats[k] for k in EXTRA_DATASET_FIGURES if k in stats},
      **current,
  }
  record.pop("dataset")
  return record


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


class RZeroRun(Runner):
  """One R-Zero run: the Challenger and Solver roles (and, with `config.verifier.enabled`, the
  Verifier's stage) and the stages of the loop."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    self.has_verifier = verifier_enabled(config)
    super().__init__(config, workdir, role_names(config))
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
    self.verifier_stage = (
        verifier_lib.VerifierStage(self, self.verifier) if self.has_verifier else None
    )
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
    return role_names(self.config)

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

  def tag(self, iteration: int) -> str:
    """The progress lines' prefix, "[iter i/n]"."""
    return f"[iter {iteration + 1}/{self.config.iterations}]"

  def _heldout(self) -> list[tuple[str, str]]:
    e = self.config.eval
    if e.heldout:
      return [(q, str(a)) for q, a, *_ in resolve_callable(e.heldout)()]
    if e.heldout_jsonl:
      return [(r["question"], str(r["answer"])) for r in read_jsonl(e.heldout_jsonl)]
    return []

  # ----- 0. the base model -----------------------------------------------------------------------

  def evaluate_base(self) -> dict:
    """A fresh run's loop position, with the base model's held-out accuracy and benchmarks."""
    meta = _fresh_meta()
    meta["base_heldout_accuracy"] = self.heldout_accuracy()
    meta["base_benchmarks"] = self.benchmark_scores(self.solver, 0)
    self.log(f"base model held-out accuracy: {meta['base_heldout_accuracy']}")
    return meta

  # ----- 1. the Challenger phase ---------------------------------------------------------------

  def challenger_phase(self, meta: dict) -> None:
    """The Challenger's steps from the loop position's step; then the dataset is next."""
    it = meta["iteration"]
    if meta["step"] == 0:
      self.start_phase(self.challenger)
    self.run_steps(
        f"{self.tag(it)} challenger step",
        self.config.challenger.steps,
        lambda step: self.challenger_step(it, step),
        meta=meta,
        tb_prefix="challenger",
        tb_step=lambda step: self.tb_step(it, "challenger", step),
        record=lambda _, m: _record_step(meta["current"], "challenger_reward", m),
        show=lambda m: dict(
            reward=m["reward"], well_formed=m["well_formed"], p_hat=m["p_hat_mean"]
        ),
    )
    self.end_stage(meta, phase="dataset", step=0)

  def challenger_step(self, iteration: int, step: int) -> dict:
    c = self.config.challenger
    seed = derive_seed(self.config.seed, iteration, "challenger", step)
    # sample
    prompt_ids = [self.challenger_prompt] * c.prompts_per_step
    out = self.sample(self.challenger, prompt_ids, num_samples=c.group_size, seed=seed)
    # grade: the Solver's votes on each well-formed question
    questions = self._parse_questions(out.tokens)
    valid = [i for i, q in enumerate(questions) if q is not None]
    ballot = self._vote(
        [questions[i] for i in valid],
        seed + 1,
        c.votes,
        self.config.dataset.temperature,
        self.config.dataset.top_p,
    )
    p_hat = np.zeros(len(questions))
    p_hat[valid] = [v.p_hat for v in ballot.votes]
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
    metrics = self.grpo_update(self.challenger, prompt_ids, out, r)
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

  def dataset_stage(self, meta: dict) -> list[dict]:
    """Builds, writes (data/iter_<i>.jsonl) and reports this iteration's dataset; then the Solver
    phase is next. Returns the kept records."""
    it = meta["iteration"]
    kept, stats = self.build_dataset(it)
    if self.main:
      write_jsonl(self.dataset_path(it), kept)
    self.log(
        f"{self.tag(it)} dataset: {stats['unique_questions']} unique questions, kept "
        f"{stats['kept']}, mean p_hat {stats['mean_p_hat']}, pseudo-label accuracy "
        f"{stats.get('pseudo_label_accuracy')}"
    )
    if not kept and not self.config.dataset.replay:
      self.log(
          f"{self.tag(it)} no question fell inside the p_hat band; the Solver phase of this "
          "iteration is skipped (try more candidates or a wider config.dataset.delta)."
      )
    meta["current"]["dataset"] = stats
    self.end_stage(
        meta,
        tb_step=self.tb_step(it, "dataset", 0),
        tb_prefix="dataset",
        scalars=stats,
        phase="solver",
        step=0,
    )
    return kept

  def build_dataset(self, iteration: int) -> tuple[list[dict], dict]:
    """Candidates -> the Solver's votes -> the questions in the band (and above the minimum
    margin); with the Verifier: it trains on the confident votes, then its judgements pick each
    kept question's label and drop the doubtful ones. Returns the kept records and figures."""
    d = self.config.dataset
    seed = derive_seed(self.config.seed, iteration, "dataset", 0)
    parsed, completions = self.propose_candidates(seed)
    ballot = self._vote(ds.unique_questions(parsed), seed + 1, d.votes, d.temperature, d.top_p)
    band = self.band_filter(iteration, ballot)
    stats = {"candidates": d.num_candidates, "unique_questions": len(ballot.questions)}
    kept = band
    if self.verifier_stage is not None:
      index = {q: i for i, q in enumerate(ballot.questions)}
      kept, vstats = self.verifier_stage.verify_labels(
          iteration, ballot, [index[r["question"]] for r in band]
      )
      stats.update(vstats, band_questions=len(band))
    if d.get("challenger_agreement", False) and kept:
      kept = self.challenger_agreement(kept, parsed, completions, stats)
    stats.update(
        kept=len(kept),
        mean_p_hat=float(np.mean([r["p_hat"] for r in kept])) if kept else None,
        all_abstained=int(sum(v.label is None for v in ballot.votes)),
    )
    self.oracle_figures(kept, band, stats)
    return kept, stats

  def propose_candidates(self, seed: int) -> tuple[list[str | None], list[list[int]]]:
    """`dataset.num_candidates` Challenger completions: their questions (None: not a well-formed
    question that fits the Solver's prompt) and the completions' tokens."""
    out = self.sample(
        self.challenger, [self.challenger_prompt] * self.config.dataset.num_candidates, seed=seed
    )
    return self._parse_questions(out.tokens), out.tokens

  def band_filter(self, iteration: int, ballot: ds.SolverVotes) -> list[dict]:
    """The records of the questions `dataset.filter` keeps (and above `dataset.min_margin`);
    with `dataset.save_all_votes` every question's votes go to data/votes_iter_<i>.jsonl."""
    d, votes = self.config.dataset, ballot.votes
    band = ds.select_questions(
        ballot.questions,
        [v.label for v in votes],
        [v.p_hat for v in votes],
        ballot.answers,
        delta=d.delta,
        filter=d.filter,
        band=(d.get("band_low", 0.25), d.get("band_high", 0.75)),
        margins=[ds.group_margin([n for _, n in v.groups], d.votes) for v in votes],
        min_margin=d.get("min_margin", 0.0),
    )
    if d.get("save_all_votes", False) and self.main:  # every question's votes, for analysis
      write_jsonl(
          os.path.join(self.workdir, "data", f"votes_iter_{iteration + 1}.jsonl"),
          (
              {"question": q, "label": v.label, "p_hat": v.p_hat, "answers": a, "texts": t}
              for q, v, a, t in zip(ballot.questions, votes, ballot.answers, ballot.texts)
          ),
      )
    return band

  def challenger_agreement(
      self,
      kept: list[dict],
      parsed: list[str | None],
      completions: Sequence[Sequence[int]],
      stats: dict,
  ) -> list[dict]:
    """A label-free consistency check (`dataset.challenger_agreement`): the records whose label
    agrees with the Challenger's own answer to its question (of the first completion that wrote
    it); counts the others in `stats["challenger_disagreed"]`."""
    own: dict[str, str | None] = {}
    for q, t in zip(parsed, completions):
      if q is not None:
        own.setdefault(ds.normalize_question(q), prompts.parse_challenger_answer(self.decode(t)))
    mine = [own.get(ds.normalize_question(r["question"])) for r in kept]
    agree = self.grading(
        lambda: same_answers(
            mine, [r["label"] for r in kept], timeout_s=self.config.grade_timeout_s
        )
    )
    stats["challenger_disagreed"] = int(sum(not (a and m) for a, m in zip(agree, mine)))
    return [r | {"challenger_answer": m} for r, a, m in zip(kept, agree, mine) if a and m]

  def oracle_figures(self, kept: list[dict], band: list[dict], stats: dict) -> None:
    """With `eval.oracle`: each kept record's true answer, the pseudo-labels' accuracy and (with
    the Verifier) the plain majority's accuracy on the band, in `stats`."""
    if self.oracle is not None and kept:
      truths, ok = self.grading(lambda: self._judge_labels(kept))
      for r, t in zip(kept, truths):
        r["true_answer"] = t
      stats["pseudo_label_accuracy"] = float(np.mean(ok)) if ok else None
    if self.oracle is not None and self.has_verifier and band:
      _, ok = self.grading(lambda: self._judge_labels(band))
      stats["band_majority_accuracy"] = float(np.mean(ok)) if ok else None

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

  def solver_phase(self, meta: dict, kept: list[dict] | None) -> None:
    """The Solver's steps on the iteration's kept questions (`kept`; None: read back from the
    dataset file, process 0 reads, the others receive), plus the earlier iterations' with
    `dataset.replay`; none without questions."""
    it = meta["iteration"]
    if kept is None:
      kept = multihost.decided_on_main(lambda: read_jsonl(self.dataset_path(it)))
    if meta["step"] == 0:
      self.start_phase(self.solver)
    train_set = kept + (self.earlier_datasets(it) if self.config.dataset.replay else [])
    self.run_steps(
        f"{self.tag(it)} solver step",
        self.config.solver.steps if train_set else 0,
        lambda step: self.solver_step(it, step, train_set),
        meta=meta,
        tb_prefix="solver",
        tb_step=lambda step: self.tb_step(it, "solver", step),
        record=lambda _, m: _record_step(meta["current"], "solver_reward", m),
        show=lambda m: dict(reward=m["reward"]),
    )

  def dataset_path(self, iteration: int) -> str:
    """data/iter_<i>.jsonl: the kept questions and labels of `iteration` (0-based)."""
    return os.path.join(self.workdir, "data", f"iter_{iteration + 1}.jsonl")

  def earlier_datasets(self, iteration: int) -> list[dict]:
    """The kept questions of the iterations before `iteration` (0-based) with the labels they got
    then (`dataset.replay`), read by process 0 and shared."""
    paths = [self.dataset_path(i) for i in range(iteration)]
    return multihost.decided_on_main(lambda: [r for path in paths for r in read_jsonl(path)])

  def solver_step(self, iteration: int, step: int, kept: list[dict]) -> dict:
    s = self.config.solver
    seed = derive_seed(self.config.seed, iteration, "solver", step)
    # sample
    order = np.random.default_rng(seed).permutation(len(kept))
    picks = [kept[order[i % len(kept)]] for i in range(s.prompts_per_step)]
    prompt_ids = [self._solver_prompt(r["question"]) for r in picks]
    out = self.sample(self.solver, prompt_ids, num_samples=s.group_size, seed=seed)
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
    metrics = self.grpo_update(self.solver, prompt_ids, out, r, scale=scale)
    metrics.update(
        reward=float(r.mean()),
        tokens_per_s=self.tokens_per_s,
        completion_len=float(np.mean([len(t) for t in out.tokens])),
    )
    return metrics

  # ----- 4. evaluation and export --------------------------------------------------------------

  def end_iteration(self, meta: dict) -> None:
    """The Solver's held-out accuracy and benchmarks, the iteration's record in summary.json,
    both roles exported; then the next iteration's Challenger phase is next."""
    it = meta["iteration"]
    acc = self.heldout_accuracy()
    meta["current"]["benchmarks"] = self.benchmark_scores(
        self.solver, self.tb_step(it + 1, "challenger", 0)
    )
    meta["iterations"].append(_iteration_summary(it, acc, meta["current"]))
    self.log(f"{self.tag(it)} Solver held-out accuracy: {acc}")
    self.export(f"iter_{it + 1}", self.roles())
    self.end_stage(meta, iteration=it + 1, phase="challenger", step=0, current=_iteration_record())

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

  def grpo_update(
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
  ) -> ds.SolverVotes:
    """The Solver's `votes` answers per question, batched over all questions."""
    if not questions:
      return ds.SolverVotes([], [], [], [], [])
    ids = [self._solver_prompt(q) for q in questions]
    out = self.sample(
        self.solver,
        ids,
        num_samples=votes,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
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
    return ds.SolverVotes(
        questions,
        [Vote(label, p_hat, [tuple(g) for g in groups]) for (label, p_hat, groups), _ in decided],
        grouped,
        [texts[i * votes : (i + 1) * votes] for i in range(len(questions))],
        [list(mem) for _, mem in decided],
    )

  def _parse_questions(self, completions: Sequence[Sequence[int]]) -> list[str | None]:
    parsed = [prompts.parse_question(self.decode(t)) for t in completions]
    return [q if q is not None and self._solver_prompt(q) is not None else None for q in parsed]
