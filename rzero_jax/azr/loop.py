"""The Absolute Zero loop (spec/azr.md): one model proposes and solves its own code tasks.

`run()` reads top to bottom as the algorithm: held-out evaluation of the base model, seeding of the
three task buffers (proposals without updates), then training steps (`AZRRun.train_step`), each

  1. propose   - deduction/abduction proposals from K buffer references, induction inputs and a
                 message for programs drawn from the buffers (`prompts_per_step` per type);
  2. validate  - in the sandboxed executor; valid proposals are solved `learnability_rollouts`
                 times (one batched sampler call) to get their solve rate;
  3. buffers   - every valid proposal joins its type's buffer;
  4. solve     - the solver's batch per type: this step's new tasks, filled up from the buffer;
                 deduction answers compared with the output that validation stored, abduction
                 and induction answers run by the executor;
  5. rewards   - learnability for proposals (-1 if invalid), 1 / -0.5 / -1 for answers;
  6. update    - TRR++ advantages over the six (task type x role) sub-batches and one policy
                 update (`updates_per_step` optimizer steps) over all of them;

with held-out evaluation at `eval.every_steps` and at the end. The machinery (the role, sampling,
the update, checkpoints with the loop position, metrics, export) is `rzero_jax.selfplay`'s. The
buffers are JSON inside each checkpoint's loop position, so a killed run resumes to exactly the
result of an uninterrupted one. Every executor decision runs once on process 0 and is shared
(`Runner.grading`); the executor (a persistent sandbox pool) lives only there.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, NamedTuple, Sequence

import ml_collections
import numpy as np

from rzero_jax.azr import rewards, trr
from rzero_jax.azr.buffers import SEED_STEP, TaskBuffers, task_from_dict, task_to_dict
from rzero_jax.azr.config import validate_config
from rzero_jax.azr.tasks import (
    TASK_TYPES,
    Task,
    check_answers,
    identity_triplet,
    parse_proposal,
    parse_solution,
    validate_proposals,
)
from rzero_jax.io import natural_key
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.selfplay.roles import Completions
from rzero_jax.selfplay.runner import Runner, fmt, format_rows
from rzero_jax.selfplay.util import RunError, copy_tree, derive_seed, resolve_callable
from rzero_jax.verify.executor import Executor

__all__ = ["run", "AZRRun", "validate_config", "make_summary"]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) an Absolute Zero run in `workdir`; returns the summary (summary.json)."""
  r = AZRRun(config, workdir)
  try:
    # The loop position: the latest checkpoint's, or seeded buffers and the base model's held-out
    # evaluation.
    meta = r.resume_or_start()
    buffers = TaskBuffers.from_state(meta["buffers"])
    # 1. Seeding: the base model proposes, no updates, until every buffer holds enough tasks.
    r.seed(meta, buffers)
    # 2. Training steps: propose -> validate + learnability -> buffers -> solve -> rewards ->
    #    update (`AZRRun.train_step`), each step filed in `meta` with the held-out evaluation at
    #    the evaluation points; checkpoints every `checkpoint_every_steps` and after the last.
    r.run_steps(
        "step",
        config.steps,
        lambda step: r.train_step(buffers, step),
        meta=meta,
        record=lambda step, metrics: r.record_step(meta, buffers, step, metrics),
        show=lambda metrics: _progress_info(metrics, buffers),
        save_last=True,
    )
    # 3. Export and summary.
    r.export("final", (r.actor,))
    summary = make_summary(config, meta)
    return r.finish(summary, format_table(summary))
  finally:
    r.close_executor()


# Per-step numbers kept in the summary (the rest goes to TensorBoard).
_RECORDED = (
    "valid_rate",
    "learnability",
    "proposer_reward",
    "solver_accuracy",
    "solver_reward",
    *(f"{t}/valid_rate" for t in TASK_TYPES),
    *(f"{t}/solver_accuracy" for t in TASK_TYPES),
    *(f"{t}/buffer_size" for t in TASK_TYPES),
)


def _fresh_meta(buffers: TaskBuffers) -> dict:
  return {
      "phase": "seeding",
      "step": 0,
      "save_count": 0,
      "seeding": {"rounds": 0, "valid_rate": [], "buffer_sizes": None},
      "buffers": buffers.to_state(),
      "heldout": {},
      "steps": [],
  }


def make_summary(config: ml_collections.ConfigDict, meta: dict) -> dict:
  """The deterministic part of summary.json (everything but `timing`)."""
  steps = meta["steps"]
  last = steps[-1] if steps else {}
  return {
      "heldout_accuracy": _in_step_order(meta["heldout"]),
      "points": _points(meta),
      "seeding": meta["seeding"],
      "steps": steps,
      "valid_proposal_rate": {t: _mean(s[f"{t}/valid_rate"] for s in steps) for t in TASK_TYPES},
      "mean_learnability": _mean(s["learnability"] for s in steps),
      "buffer_sizes": {t: last.get(f"{t}/buffer_size") for t in TASK_TYPES},
      "benchmarks": meta.get("benchmarks") if any((meta.get("benchmarks") or {}).values()) else {},
      "config": json.loads(config.to_json()),
  }


def _in_step_order(by_point: dict) -> dict:
  """ "base" first, then the evaluation points by step (a restored meta may hold them sorted as
  text, "step_16" before "step_8")."""
  return {k: by_point[k] for k in sorted(by_point, key=natural_key)}


def _mean(values) -> float | None:
  values = list(values)
  return float(np.mean(values)) if values else None


def _points(meta: dict) -> dict:
  """Per evaluation point: valid-proposal rate and mean learnability over the steps since the
  previous point, and the buffer sizes."""
  points, previous = {}, 0
  for point in _in_step_order(meta["heldout"]):
    if not point.startswith("step_"):
      continue
    done = int(point[len("step_") :])
    window = meta["steps"][previous:done]
    points[point] = {
        "valid_rate": _mean(s["valid_rate"] for s in window),
        "learnability": _mean(s["learnability"] for s in window),
        "solver_accuracy": _mean(s["solver_accuracy"] for s in window),
        "buffer_sizes": {t: window[-1][f"{t}/buffer_size"] for t in TASK_TYPES} if window else None,
    }
    previous = done
  return points


def format_table(summary: dict) -> str:
  """Held-out accuracy per task type at each evaluation point, with the valid-proposal rate,
  mean learnability and solver accuracy over the steps before it, and the buffer sizes."""
  rows = [("point", *TASK_TYPES, "mean", "valid", "learnability", "train solve", "buffers")]
  for point, acc in summary["heldout_accuracy"].items():
    extra = summary["points"].get(point)
    sizes = summary["seeding"]["buffer_sizes"] if extra is None else extra["buffer_sizes"]
    rows.append(
        (
            point,
            *(fmt(acc.get(k)) for k in (*TASK_TYPES, "mean")),
            *(
                ("-", "-", "-")
                if extra is None
                else (
                    fmt(extra["valid_rate"]),
                    fmt(extra["learnability"]),
                    fmt(extra["solver_accuracy"]),
                )
            ),
            "/".join(str(sizes[t]) for t in TASK_TYPES) if sizes else "-",
        )
    )
  return format_rows(rows)


def _fmt_acc(acc: dict) -> str:
  return " ".join(f"{k}={fmt(v)}" for k, v in acc.items())


def _progress_info(metrics: dict, buffers: TaskBuffers) -> dict:
  """The numbers on a training step's progress line."""
  return dict(
      valid=metrics["valid_rate"],
      learnability=metrics["learnability"],
      solve=metrics["solver_accuracy"],
      **{f"buf_{k[:3]}": v for k, v in buffers.sizes().items()},
  )


# ----- what the config names: the prompts module, held-out and seed tasks -----------------------


def _prompt_module(name: str) -> Any:
  try:
    module = importlib.import_module(name)
  except ImportError as e:
    raise RunError(f"config.tasks.prompts: cannot import {name!r}: {e}") from e
  for fn in ("proposer_messages", "solver_messages"):
    if not callable(getattr(module, fn, None)):
      raise RunError(f"config.tasks.prompts: {name!r} has no function {fn}().")
  return module


def _tasks_by_type(spec: str, field: str) -> dict[str, list[Task]]:
  """The {task type: [tasks]} returned by the "module:function" `spec` (tasks or their dicts)."""
  raw = resolve_callable(spec)()
  if not isinstance(raw, dict) or not set(raw) <= set(TASK_TYPES):
    raise RunError(f"{field} must return a dict with keys among {TASK_TYPES}.")
  return {
      t: [x if not isinstance(x, dict) else task_from_dict(x) for x in tasks]
      for t, tasks in raw.items()
  }


# ----- a step's batches ----------------------------------------------------------------------


class Proposals(NamedTuple):
  """A batch of proposals: task types, prompt ids, completions and the validated task dicts (None
  for an invalid proposal)."""

  types: list[str]
  ids: list[list[int]]
  out: Completions
  tasks: list[dict | None]

  @property
  def valid(self) -> list[bool]:
    return [d is not None for d in self.tasks]


class Solutions(NamedTuple):
  """Solver responses in task-major order: prompt ids, completions, whether each answer is right
  and whether it is well formed."""

  ids: list[list[int]]
  out: Completions
  correct: list[bool]
  well_formed: list[bool]


class AZRRun(Runner):
  """One Absolute Zero run: one role ("actor") that proposes and solves, and the loop's stages."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    self.prompts = _prompt_module(config.tasks.prompts)
    super().__init__(config, workdir, ("actor",))
    self.actor = self.make_role("actor", donate=True)
    self.ref_params = None
    if self.keeps_reference():  # only with KL (the paper uses none)
      self.ref_params, self.ref_role = copy_tree(self.actor.state.params), "actor"
    self.heldout = self._heldout()
    self._executor: Executor | None = None

  def keeps_reference(self) -> bool:
    return bool(self.config.actor.train.kl_coef)

  def trees(self) -> dict:
    trees = {"actor": self.actor.state}
    if self.ref_params is not None:
      trees["ref"] = self.ref_params
    return trees

  def set_trees(self, trees: dict) -> None:
    self.actor.state = trees["actor"]
    self.ref_params = trees.get("ref")

  def is_eval_point(self, done: int) -> bool:
    every = self.config.eval.every_steps
    return done == self.config.steps or bool(every and done % every == 0)

  @property
  def executor(self) -> Executor:
    """The sandbox pool, started on first use (only process 0 runs executor decisions)."""
    if self._executor is None:
      self._executor = Executor(workers=self.config.tasks.executor_workers)
    return self._executor

  def close_executor(self) -> None:
    if self._executor is not None:
      self._executor.close()
      self._executor = None

  def _heldout(self) -> dict[str, list[Task]]:
    if not self.config.eval.heldout:
      return {}
    return _tasks_by_type(self.config.eval.heldout, "config.eval.heldout")

  def seed_buffers(self) -> TaskBuffers:
    """The buffers at the start: the identity triplet in each (the spec), or the tasks of
    `config.tasks.seed_tasks` (for a toy model that never saw the identity's input)."""
    cap = self.config.tasks.buffer_cap
    if not self.config.tasks.seed_tasks:
      return TaskBuffers(cap=cap)
    buffers = TaskBuffers(cap=cap, seed=False)
    for t, tasks in _tasks_by_type(self.config.tasks.seed_tasks, "config.tasks.seed_tasks").items():
      buffers[t].extend(tasks, SEED_STEP)
    if not all(len(buffers[t]) for t in TASK_TYPES):
      raise RunError("config.tasks.seed_tasks must give at least one task of every type.")
    return buffers

  # ----- prompts ---------------------------------------------------------------------------------

  def _encode(self, messages: list[dict]) -> list[int] | None:
    ids = encode_chat(self.tokenizer, messages)
    return ids if len(ids) <= self.config.actor.max_prompt_tokens else None

  def solver_prompt(self, task_type: str, task: Task) -> list[int] | None:
    return self._encode(self.prompts.solver_messages(task_type, task))

  def _proposer_prompts(
      self, buffers: TaskBuffers, rng: np.random.Generator, n: int
  ) -> tuple[list[str], list[list[int]], list[str | None]]:
    """n proposer prompts per type: (task types, prompt ids, induction programs or None).
    References are dropped, oldest pick last, until a prompt fits `max_prompt_tokens`; an
    induction program whose prompt does not fit is replaced by the identity program."""
    types, ids, programs = [], [], []
    k, num_inputs = self.config.tasks.references, self.config.tasks.induction_inputs
    for task_type in TASK_TYPES:
      if task_type == "induction":
        for program in buffers.sample_programs(rng, n):
          prompt = self._encode(
              self.prompts.proposer_messages("induction", program=program, num_inputs=num_inputs)
          )
          if prompt is None:
            program = identity_triplet().program
            prompt = self._encode(
                self.prompts.proposer_messages("induction", program=program, num_inputs=num_inputs)
            )
          types.append(task_type), ids.append(prompt), programs.append(program)
        continue
      for _ in range(n):
        refs = buffers[task_type].references(rng, k)
        prompt = self._encode(self.prompts.proposer_messages(task_type, refs))
        while prompt is None and refs:
          refs = refs[:-1]
          prompt = self._encode(self.prompts.proposer_messages(task_type, refs))
        types.append(task_type), ids.append(prompt), programs.append(None)
    if any(p is None for p in ids):
      raise RunError(
          "A proposer prompt without references is longer than " "config.actor.max_prompt_tokens."
      )
    return types, ids, programs

  # ----- proposing: sample, then validate in the executor --------------------------------------

  def propose(self, buffers: TaskBuffers, seed: int) -> Proposals:
    """Samples `prompts_per_step` proposals per type and validates them."""
    rng = np.random.default_rng(derive_seed(seed, 0))
    types, ids, programs = self._proposer_prompts(buffers, rng, self.config.actor.prompts_per_step)
    out = self.sample(self.actor, ids, seed=derive_seed(seed, 1))
    texts = [self.decode(t) for t in out.tokens]
    parsed = [parse_proposal(t, text) for t, text in zip(types, texts)]
    jobs = [
        None
        if p is None
        else {
            "type": t,
            "program": prog if t == "induction" else p.program,
            "inputs": list(p.inputs),
            "message": p.message,
        }
        for t, p, prog in zip(types, parsed, programs)
    ]
    tasks = self.grading(lambda: self._validate(jobs))
    # a task whose solver prompt would not fit is invalid (tokenizing is deterministic)
    tasks = [
        d if d is not None and self.solver_prompt(t, task_from_dict(d)) is not None else None
        for t, d in zip(types, tasks)
    ]
    return Proposals(types, ids, out, tasks)

  def _validate(self, jobs: list[dict | None]) -> list[dict | None]:
    """On process 0: each proposal's buffer entry (as a dict) if valid, else None."""
    t = self.config.tasks
    tasks = validate_proposals(
        jobs, self.executor, num_inputs=t.induction_inputs, timeout_s=t.timeout_s
    )
    return [None if task is None else task_to_dict(task) for task in tasks]

  # ----- solving: sample, then check in the executor -------------------------------------------

  def solve(
      self,
      task_types: Sequence[str],
      tasks: Sequence[Task],
      *,
      num_samples: int,
      seed: int,
      greedy: bool = False,
      max_new_tokens: int | None = None,
  ) -> Solutions:
    """`num_samples` solver responses per task in one sampler call, checked by the executor."""
    a = self.config.actor
    ids = [self.solver_prompt(t, task) for t, task in zip(task_types, tasks)]
    if any(i is None for i in ids):
      raise RunError(
          "A held-out or buffer task's solver prompt is longer than "
          "config.actor.max_prompt_tokens."
      )
    out = self.sample(
        self.actor,
        ids,
        num_samples=num_samples,
        seed=seed,
        temperature=0.0 if greedy else a.temperature,
        top_p=1.0 if greedy else a.top_p,
        max_new_tokens=max_new_tokens or a.max_new_tokens,
    )
    seq_types = [t for t in task_types for _ in range(num_samples)]
    seq_tasks = [task for task in tasks for _ in range(num_samples)]
    answers = [parse_solution(t, self.decode(tokens)) for t, tokens in zip(seq_types, out.tokens)]
    jobs = [(t, task_to_dict(task), ans) for t, task, ans in zip(seq_types, seq_tasks, answers)]
    correct = self.grading(lambda: self._check(jobs))
    return Solutions(ids, out, correct, [a is not None for a in answers])

  def _check(self, jobs: list[tuple[str, dict, str | None]]) -> list[bool]:
    """On process 0: whether each answer solves its task (`tasks.check_answers`)."""
    items = [(t, task_from_dict(task), answer) for t, task, answer in jobs]
    return check_answers(items, self.executor, timeout_s=self.config.tasks.timeout_s)

  # ----- the loop's stages ----------------------------------------------------------------------

  def resume_or_start(self) -> dict:
    """The latest checkpoint's loop position, or a fresh one: the seed buffers and the base
    model's held-out accuracy (and benchmark scores)."""
    meta = self.restore()
    if meta is not None:
      self.log(
          f"resuming from checkpoint: phase {meta['phase']}, seeding round "
          f"{meta['seeding']['rounds']}, step {meta['step']}"
      )
      return meta
    meta = _fresh_meta(self.seed_buffers())
    meta["heldout"]["base"] = self.evaluate()
    meta["benchmarks"] = {"base": self.benchmark_scores(self.actor, 0)}
    self.log(f"base model held-out accuracy: {_fmt_acc(meta['heldout']['base'])}")
    return meta

  def seed(self, meta: dict, buffers: TaskBuffers) -> None:
    """Seeding rounds (`seed_round`) until every buffer holds `tasks.seed_buffer_size` tasks or
    `tasks.max_seeding_rounds` rounds have run; then the training phase starts."""
    if meta["phase"] != "seeding":
      return
    t, seeding = self.config.tasks, meta["seeding"]
    while not buffers.seeded(t.seed_buffer_size) and seeding["rounds"] < t.max_seeding_rounds:
      done = seeding["rounds"] + 1
      stats = self.seed_round(buffers, done - 1)
      seeding["rounds"] = done
      seeding["valid_rate"].append(stats)
      meta["buffers"] = buffers.to_state()
      self.log(f"seeding round {done}: valid {_fmt_acc(stats)}, buffer sizes {buffers.sizes()}")
      if done % self.config.checkpoint_every_steps == 0:
        self.save(meta)
    seeding["buffer_sizes"] = buffers.sizes()
    self.end_stage(
        meta,
        log=f"seeding done after {seeding['rounds']} rounds: buffer sizes {buffers.sizes()}",
        phase="train",
    )

  def seed_round(self, buffers: TaskBuffers, round_: int) -> dict:
    """One seeding round: proposals from the current model, valid ones join the buffers; returns
    the valid rate per type."""
    proposals = self.propose(buffers, derive_seed(self.config.seed, "seeding", round_))
    _add_valid(buffers, proposals, SEED_STEP)
    return _rate_per_type(proposals.valid, proposals.types)

  def train_step(self, buffers: TaskBuffers, step: int) -> dict:
    """One training step of the six stages (module docstring); returns its metrics."""
    seed = derive_seed(self.config.seed, "train", step)
    # 1. propose + validate
    proposals = self.propose(buffers, seed)
    # 2. learnability: n solver rollouts of every valid proposal
    rates = self.solve_rates(proposals, seed)
    # 3. buffers: every valid proposal joins its type's buffer
    _add_valid(buffers, proposals, step)
    # 4. solve: per type, this step's new tasks filled up uniformly from the buffer
    s_types, solutions = self.solve_from_buffers(buffers, step, seed)
    # 5. rewards
    valid = proposals.valid
    proposer_r = rewards.proposer_rewards(valid, rates, variant=self.config.reward_variant)
    solver_r = rewards.solver_rewards(solutions.correct, solutions.well_formed)
    # 6. TRR++ advantages over the six (task type x role) groups, one update over all of them
    metrics = self.update_actor(proposals, s_types, solutions, proposer_r, solver_r)
    learn = rewards.learnability(rates[valid]) if any(valid) else np.zeros(0)
    metrics.update(
        valid_rate=float(np.mean(valid)),
        learnability=float(learn.mean()) if learn.size else 0.0,
        proposer_reward=float(proposer_r.mean()),
        solver_accuracy=float(np.mean(solutions.correct)),
        solver_reward=float(solver_r.mean()),
        tokens_per_s=self.tokens_per_s,
    )
    valid_rates = _rate_per_type(valid, proposals.types)
    solver_accuracies = _rate_per_type(solutions.correct, s_types)
    for t in TASK_TYPES:
      metrics[f"{t}/valid_rate"] = valid_rates[t]
      metrics[f"{t}/solver_accuracy"] = solver_accuracies[t]
      metrics[f"{t}/buffer_size"] = len(buffers[t])
      rt = [r for r, tt, ok in zip(rates, proposals.types, valid) if tt == t and ok]
      metrics[f"{t}/solve_rate"] = float(np.mean(rt)) if rt else 0.0
    return metrics

  def solve_rates(self, proposals: Proposals, seed: int) -> np.ndarray:
    """Each valid proposal's solve rate over `tasks.learnability_rollouts` solver rollouts (one
    batched sampler call); NaN for an invalid one."""
    n = self.config.tasks.learnability_rollouts
    rates = np.full(len(proposals.tasks), np.nan)
    where = [k for k, ok in enumerate(proposals.valid) if ok]
    if where:
      solutions = self.solve(
          [proposals.types[k] for k in where],
          [task_from_dict(proposals.tasks[k]) for k in where],
          num_samples=n,
          seed=derive_seed(seed, 2),
      )
      rates[where] = np.asarray(solutions.correct, np.float64).reshape(len(where), n).mean(axis=1)
    return rates

  def solve_from_buffers(
      self, buffers: TaskBuffers, step: int, seed: int
  ) -> tuple[list[str], Solutions]:
    """The solver's batch: per type, `prompts_per_step` tasks (this step's new ones filled up
    uniformly from the buffer), one response each; returns (task types, solutions)."""
    rng = np.random.default_rng(derive_seed(seed, 3))
    types, tasks = [], []
    for t in TASK_TYPES:
      batch = buffers[t].solver_batch(rng, self.config.actor.prompts_per_step, step)
      types += [t] * len(batch)
      tasks += batch
    return types, self.solve(types, tasks, num_samples=1, seed=derive_seed(seed, 4))

  def update_actor(
      self,
      proposals: Proposals,
      s_types: list[str],
      solutions: Solutions,
      proposer_r: np.ndarray,
      solver_r: np.ndarray,
  ) -> dict:
    """One policy update (`updates_per_step` optimizer steps) over proposals and solutions with
    TRR++ advantages over the six (task type x role) groups; returns its metrics."""
    types = proposals.types + s_types
    roles = ["propose"] * len(proposals.types) + ["solve"] * len(s_types)
    advantages = trr.task_relative_advantages(np.concatenate([proposer_r, solver_r]), types, roles)
    p_out, s_out = proposals.out, solutions.out
    out = Completions(
        p_out.tokens + s_out.tokens,
        p_out.logprobs + s_out.logprobs,
        p_out.finished + s_out.finished,
    )
    return self.update(
        self.actor,
        proposals.ids + solutions.ids,
        out,
        advantages,
        mini_batch_size=len(types) // self.config.actor.updates_per_step,
    )

  def record_step(self, meta: dict, buffers: TaskBuffers, step: int, metrics: dict) -> None:
    """Files a training step in `meta` (its `_RECORDED` numbers and the buffers), with the
    held-out evaluation (and benchmark scores) at an evaluation point."""
    meta["steps"].append({k: metrics[k] for k in _RECORDED})
    if self.is_eval_point(step + 1):
      meta["heldout"][f"step_{step + 1}"] = acc = self.evaluate()
      meta.setdefault("benchmarks", {})[f"step_{step + 1}"] = self.benchmark_scores(
          self.actor, step
      )
      self.writer.scalars(step, {f"heldout/{k}": v for k, v in acc.items()})
      self.log(f"[step {step + 1}] held-out accuracy: {_fmt_acc(acc)}")
    meta["buffers"] = buffers.to_state()

  def evaluate(self) -> dict[str, float]:
    """Greedy held-out accuracy per task type (executor-graded) and their mean; {} without a
    held-out set."""
    if not self.heldout:
      return {}
    types = [t for t in TASK_TYPES for _ in self.heldout.get(t, [])]
    tasks = [task for t in TASK_TYPES for task in self.heldout.get(t, [])]
    correct = self.solve(
        types,
        tasks,
        num_samples=1,
        seed=0,
        greedy=True,
        max_new_tokens=self.config.eval.max_new_tokens,
    ).correct
    acc = {
        t: float(np.mean([c for c, tt in zip(correct, types) if tt == t]))
        for t in TASK_TYPES
        if self.heldout.get(t)
    }
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc


def _add_valid(buffers: TaskBuffers, proposals: Proposals, step: int) -> None:
  """Every valid proposal joins its type's buffer, tagged with `step`."""
  for t, d in zip(proposals.types, proposals.tasks):
    if d is not None:
      buffers[t].add(task_from_dict(d), step)


def _rate_per_type(flags: Sequence[bool], types: Sequence[str]) -> dict[str, float]:
  """The mean of `flags` per task type."""
  return {t: float(np.mean([f for f, tt in zip(flags, types) if tt == t])) for t in TASK_TYPES}
