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

from rzero_jax import sharding
from rzero_jax.metrics import Progress
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.rzero import dataset as ds
from rzero_jax.rzero import prompts, rewards
from rzero_jax.selfplay.roles import Role
from rzero_jax.selfplay.runner import Runner, fmt, format_rows, validate_benchmarks
from rzero_jax.selfplay.util import (PHASE_IDS, RunError, copy_tree, derive_seed, resolve_callable)
from rzero_jax.training.grpo import group_advantages
from rzero_jax.verify.answers import extract_boxed, grade
from rzero_jax.verify.voting import Vote, majority_votes

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
        ds.write_jsonl(os.path.join(r.workdir, "data", f"iter_{it + 1}.jsonl"), kept)
      r.log(
          f"{tag} dataset: {stats['unique_questions']} unique questions, kept {stats['kept']}, "
          f"mean p_hat {stats['mean_p_hat']}, pseudo-label accuracy "
          f"{stats.get('pseudo_label_accuracy')}"
      )
      if not kept:
        r.log(
            f"{tag} no question fell inside the p_hat band; the Solver phase of this iteration "
            "is skipped (try more candidates or a wider config.dataset.delta)."
        )
      r.writer.scalars(
          r.tb_step(it, "dataset", 0),
          {f"dataset/{k}": v for k, v in stats.items() if v is not None},
      )
      meta["current"]["dataset"] = stats
      meta["phase"], meta["step"] = "solver", 0
      r.save(meta)
    # 3. Solver phase: kept questions -> answers graded against the pseudo-labels -> GRPO update.
    if meta["phase"] == "solver":
      if kept is None:  # resumed here: process 0 reads the file it wrote, the others receive it
        path = os.path.join(r.workdir, "data", f"iter_{it + 1}.jsonl")
        kept = sharding.decided_on_main(lambda: ds.read_jsonl(path))
      if meta["step"] == 0:
        r.start_phase(r.solver)
      steps = config.solver.steps if kept else 0
      progress = Progress(f"{tag} solver step", steps, start=meta["step"], enabled=r.main)
      while meta["step"] < steps:
        m = r.solver_step(it, meta["step"], kept)
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
          **meta["current"],
      }
      record.pop("dataset")
      meta["iterations"].append(record)
      r.log(f"{tag} Solver held-out accuracy: {acc}")
      r.export(f"iter_{it + 1}", (r.challenger, r.solver))
      meta.update(iteration=it + 1, phase="challenger", step=0, current=_iteration_record())
      r.save(meta)
  summary = make_summary(config, meta)
  return r.finish(summary, format_table(summary))


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
  for name in ("challenger", "solver"):
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
  validate_benchmarks(config)
  if config.dataset.votes < 1 or config.dataset.num_candidates < 1:
    raise RunError("config.dataset.votes and config.dataset.num_candidates must be >= 1.")
  if config.iterations < 1 or config.checkpoint_every_steps < 1:
    raise RunError("config.iterations and config.checkpoint_every_steps must be >= 1.")


class RZeroRun(Runner):
  """One R-Zero run: the Challenger and Solver roles and the stages of the loop."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    super().__init__(config, workdir, ("challenger", "solver"))
    # Straight onto the mesh in the Challenger's layout, tensor by tensor; the Solver gets its own
    # copy, the Challenger's state takes over the loaded buffers: two copies plus the reference.
    self.solver = self.make_role("solver", donate=False)
    self.challenger = self.make_role("challenger", donate=True)
    self.ref_params, self.ref_role = copy_tree(self.challenger.state.params), "challenger"
    self.heldout = self._heldout()
    self.oracle = resolve_callable(config.eval.oracle) if config.eval.oracle else None
    self.challenger_prompt = encode_chat(self.tokenizer, prompts.challenger_messages())

  def trees(self) -> dict:
    return {
        "challenger": self.challenger.state,
        "solver": self.solver.state,
        "ref": self.ref_params,
    }

  def set_trees(self, trees: dict) -> None:
    self.challenger.state, self.solver.state = trees["challenger"], trees["solver"]
    self.ref_params = trees["ref"]

  def tb_step(self, iteration: int, phase: str, step: int) -> int:
    c, s = self.config.challenger.steps, self.config.solver.steps
    return iteration * (c + s + 1) + {"challenger": 0, "dataset": c, "solver": c + 1}[phase] + step

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
    votes, _ = self._vote(
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
        p_hat, [q is not None for q in questions], rep, variant=self.config.reward_variant
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
    questions = ds.unique_questions(self._parse_questions(out.tokens))
    votes, answers = self._vote(questions, seed + 1, d.votes, d.temperature, d.top_p)
    kept = ds.select_questions(
        questions,
        [v.label for v in votes],
        [v.p_hat for v in votes],
        answers,
        delta=d.delta,
        filter=d.filter,
    )
    stats = {
        "candidates": d.num_candidates,
        "unique_questions": len(questions),
        "kept": len(kept),
        "mean_p_hat": float(np.mean([r["p_hat"] for r in kept])) if kept else None,
        "all_abstained": int(sum(v.label is None for v in votes)),
    }
    if self.oracle is not None and kept:
      truths, ok = self.grading(lambda: self._judge_labels(kept))
      for r, t in zip(kept, truths):
        r["true_answer"] = t
      stats["pseudo_label_accuracy"] = float(np.mean(ok)) if ok else None
    return kept, stats

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
    # grade against the pseudo-labels, reward
    texts = [self.decode(t) for t in out.tokens]
    labels = [r["label"] for r in picks for _ in range(s.group_size)]
    correct = self.grading(lambda: grade(texts, labels, timeout_s=self.config.grade_timeout_s))
    variant = self.config.reward_variant
    formatted = [rewards.solver_well_formed(t, variant=variant) for t in texts]
    r = rewards.solver_rewards(correct, formatted, variant=variant)
    # advantages + update
    metrics = self._grpo_update(self.solver, prompt_ids, out, r)
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
      self, role: Role, prompt_ids: list[list[int]], out, rewards_: np.ndarray
  ) -> dict:
    """GRPO: advantages normalised within each prompt's group of samples, then the shared update
    over mini-batches of `prompts_per_update` prompts."""
    s = role.settings
    advantages = np.asarray(group_advantages(rewards_, s.group_size))
    seq_prompts = [p for p in prompt_ids for _ in range(s.group_size)]
    return self.update(
        role, seq_prompts, out, advantages, mini_batch_size=s.prompts_per_update * s.group_size
    )

  def _solver_prompt(self, question: str) -> list[int] | None:
    ids = encode_chat(self.tokenizer, prompts.solver_messages(question))
    return ids if len(ids) <= self.config.solver.max_prompt_tokens else None

  def _vote(
      self, questions: list[str], seed: int, votes: int, temperature: float, top_p: float
  ) -> tuple[list, list[list[str | None]]]:
    """The Solver's `votes` answers per question, batched over all questions, and their votes."""
    if not questions:
      return [], []
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
    answers = [extract_boxed(self.decode(t)) for t in out.tokens]
    grouped = [answers[i * votes : (i + 1) * votes] for i in range(len(questions))]
    decided = self.grading(
        lambda: [
            dataclasses.astuple(v)
            for v in majority_votes(grouped, timeout_s=self.config.grade_timeout_s)
        ]
    )
    result = [Vote(label, p_hat, [tuple(g) for g in groups]) for label, p_hat, groups in decided]
    return result, grouped

  def _parse_questions(self, completions: Sequence[Sequence[int]]) -> list[str | None]:
    parsed = [prompts.parse_question(self.decode(t)) for t in completions]
    return [q if q is not None and self._solver_prompt(q) is not None else None for q in parsed]
