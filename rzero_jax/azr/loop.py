"""The Absolute Zero loop (spec/azr.md): one model proposes and solves its own code tasks.

`run()` reads top to bottom as the algorithm: held-out evaluation of the base model, seeding of the
three task buffers (proposals without updates), then training steps, each

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
from typing import Any, Sequence

import ml_collections
import numpy as np

from rzero_jax.azr import rewards, trr
from rzero_jax.azr.buffers import SEED_STEP, TaskBuffers, task_from_dict, task_to_dict
from rzero_jax.azr.tasks import (
    ROLES,
    TASK_TYPES,
    Task,
    check_abductions,
    check_deduction_outputs,
    check_inductions,
    identity_triplet,
    parse_proposal,
    parse_solution,
    validate_induction,
    validate_triplets,
)
from rzero_jax.metrics import Progress
from rzero_jax.models.tokenizer import encode_chat
from rzero_jax.selfplay.roles import Completions
from rzero_jax.selfplay.runner import Runner, fmt, format_rows, validate_benchmarks
from rzero_jax.selfplay.util import RunError, copy_tree, derive_seed, natural_key, resolve_callable
from rzero_jax.verify.executor import Executor

__all__ = ["run", "AZRRun", "validate_config", "make_summary"]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) an Absolute Zero run in `workdir`; returns the summary (summary.json)."""
  r = AZRRun(config, workdir)
  try:
    meta = r.restore()
    if meta is None:
      meta = _fresh_meta(config, r.seed_buffers())
      meta["heldout"]["base"] = r.evaluate()
      meta["benchmarks"] = {"base": r.benchmark_scores(r.actor, 0)}
      r.log(f"base model held-out accuracy: {_fmt_acc(meta['heldout']['base'])}")
    else:
      r.log(
          f"resuming from checkpoint: phase {meta['phase']}, seeding round "
          f"{meta['seeding']['rounds']}, step {meta['step']}"
      )
    buffers = TaskBuffers.from_state(meta["buffers"])
    t = config.tasks
    # 1. Seeding: the base model proposes, no updates, until every buffer holds enough tasks.
    while meta["phase"] == "seeding":
      rounds = meta["seeding"]["rounds"]
      if buffers.seeded(t.seed_buffer_size) or rounds >= t.max_seeding_rounds:
        meta["phase"] = "train"
        meta["seeding"]["buffer_sizes"] = buffers.sizes()
        r.log(f"seeding done after {rounds} rounds: buffer sizes {buffers.sizes()}")
        r.save(meta)
        break
      stats = r.seed_round(buffers, rounds)
      meta["seeding"]["rounds"] = rounds + 1
      meta["seeding"]["valid_rate"].append(stats)
      meta["buffers"] = buffers.to_state()
      r.log(
          f"seeding round {rounds + 1}: valid {_fmt_acc(stats)}, buffer sizes " f"{buffers.sizes()}"
      )
      if (rounds + 1) % config.checkpoint_every_steps == 0:
        r.save(meta)
    # 2. Training: propose -> validate + learnability -> buffers -> solve -> rewards -> update.
    progress = Progress("step", config.steps, start=meta["step"], enabled=r.main)
    while meta["step"] < config.steps:
      step = meta["step"]
      m = r.train_step(buffers, step)
      r.writer.scalars(step, m)
      meta["steps"].append({k: m[k] for k in _RECORDED})
      meta["step"] = step + 1
      # 3. Held-out evaluation at the evaluation points.
      if r.is_eval_point(step + 1):
        meta["heldout"][f"step_{step + 1}"] = acc = r.evaluate()
        meta.setdefault("benchmarks", {})[f"step_{step + 1}"] = r.benchmark_scores(r.actor, step)
        r.writer.scalars(step, {f"heldout/{k}": v for k, v in acc.items()})
        r.log(f"[step {step + 1}] held-out accuracy: {_fmt_acc(acc)}")
      meta["buffers"] = buffers.to_state()
      progress.update(
          valid=m["valid_rate"],
          learnability=m["learnability"],
          solve=m["solver_accuracy"],
          **{f"buf_{k[:3]}": v for k, v in buffers.sizes().items()},
      )
      if meta["step"] % config.checkpoint_every_steps == 0 or meta["step"] == config.steps:
        r.save(meta)
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


def _fresh_meta(config: ml_collections.ConfigDict, buffers: TaskBuffers) -> dict:
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


# ----- configuration ----------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks counts and the batch arithmetic up front: a bad config fails before any work."""
  validate_benchmarks(config)
  a, t = config.actor, config.tasks
  minimums = {
      "config.steps": (config.steps, 1),
      "config.checkpoint_every_steps": (config.checkpoint_every_steps, 1),
      "config.actor.prompts_per_step": (a.prompts_per_step, 1),
      "config.actor.updates_per_step": (a.updates_per_step, 1),
      "config.tasks.references": (t.references, 0),
      "config.tasks.learnability_rollouts": (t.learnability_rollouts, 1),
      "config.tasks.induction_inputs": (t.induction_inputs, 1),
      "config.tasks.buffer_cap": (t.buffer_cap, 1),
      "config.tasks.seed_buffer_size": (t.seed_buffer_size, 0),
      "config.tasks.max_seeding_rounds": (t.max_seeding_rounds, 0),
      "config.tasks.executor_workers": (t.executor_workers, 1),
      "config.eval.every_steps": (config.eval.every_steps, 0),
      "config.actor.lora.rank": (a.lora.rank, 0),
  }
  for name, (value, minimum) in minimums.items():
    if value < minimum:
      raise RunError(f"{name} must be >= {minimum}, got {value}.")
  sequences = len(TASK_TYPES) * len(ROLES) * a.prompts_per_step
  if sequences % a.updates_per_step:
    raise RunError(
        f"config.actor.updates_per_step ({a.updates_per_step}) must divide the "
        f"{sequences} sequences of a step (6 x prompts_per_step)."
    )
  micro = a.train.micro_batch_size
  if micro and (sequences // a.updates_per_step) % micro:
    raise RunError(
        f"config.actor.train.micro_batch_size ({micro}) must divide the mini-batch of "
        f"{sequences // a.updates_per_step} sequences (6 x prompts_per_step / "
        "updates_per_step)."
    )
  if config.reward_variant not in rewards.REWARD_VARIANTS:
    raise RunError(
        f"config.reward_variant must be one of {rewards.REWARD_VARIANTS}, got "
        f"{config.reward_variant!r}."
    )
  if t.timeout_s <= 0:
    raise RunError(f"config.tasks.timeout_s must be > 0, got {t.timeout_s}.")


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

  # ----- 1. propose + validate ------------------------------------------------------------------

  def propose(self, buffers: TaskBuffers, seed: int) -> tuple[list, Completions, list]:
    """Samples proposals and validates them: (task types, prompt ids, completions, validated
    task dicts or None)."""
    rng = np.random.default_rng(derive_seed(seed, 0))
    types, ids, programs = self._proposer_prompts(buffers, rng, self.config.actor.prompts_per_step)
    a = self.config.actor
    out = self.sample(
        self.actor,
        ids,
        num_samples=1,
        seed=derive_seed(seed, 1),
        temperature=a.temperature,
        top_p=a.top_p,
        max_new_tokens=a.max_new_tokens,
    )
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
    return types, ids, out, tasks

  def _validate(self, jobs: list[dict | None]) -> list[dict | None]:
    """On process 0: each proposal's buffer entry (as a dict) if valid, else None."""
    t = self.config.tasks
    results: list[dict | None] = [None] * len(jobs)
    triplets = [(k, j) for k, j in enumerate(jobs) if j is not None and j["type"] != "induction"]
    checks = validate_triplets(
        [(j["program"], j["inputs"][0]) for _, j in triplets], self.executor, timeout_s=t.timeout_s
    )
    for (k, _), v in zip(triplets, checks):
      results[k] = task_to_dict(v.task) if v.valid else None
    for k, j in enumerate(jobs):
      if j is not None and j["type"] == "induction":
        v = validate_induction(
            j["program"],
            j["inputs"],
            j["message"],
            self.executor,
            num_inputs=t.induction_inputs,
            timeout_s=t.timeout_s,
        )
        results[k] = task_to_dict(v.task) if v.valid else None
    return results

  # ----- 2. solve + check ---------------------------------------------------------------------

  def solve(
      self,
      task_types: Sequence[str],
      tasks: Sequence[Task],
      *,
      num_samples: int,
      seed: int,
      greedy: bool = False,
      max_new_tokens: int | None = None,
  ) -> tuple[list[list[int]], Completions, list[bool], list[bool]]:
    """`num_samples` solver responses per task in one sampler call, checked by the executor:
    (prompt ids, completions, correct, well_formed), responses in task-major order."""
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
    return ids, out, correct, [a is not None for a in answers]

  def _check(self, jobs: list[tuple[str, dict, str | None]]) -> list[bool]:
    """On process 0: whether each answer solves its task. Deduction answers are compared with
    the task's stored output (validation ran the program); the executor runs the abduction
    inputs and induction programs."""
    timeout = self.config.tasks.timeout_s
    correct = [False] * len(jobs)
    for task_type in TASK_TYPES:
      where = [k for k, (t, _, _) in enumerate(jobs) if t == task_type]
      if not where:
        continue
      items = []
      for k in where:
        _, task, answer = jobs[k]
        task = task_from_dict(task)
        if task_type == "deduction":
          items.append((task.output, answer))
        elif task_type == "abduction":
          items.append((task.program, task.output, answer))
        else:
          items.append((answer, task.hidden))
      if task_type == "deduction":
        results = check_deduction_outputs(items)
      else:
        check = check_abductions if task_type == "abduction" else check_inductions
        results = check(items, self.executor, timeout_s=timeout)
      for k, ok in zip(where, results):
        correct[k] = bool(ok)
    return correct

  # ----- the loop's stages ----------------------------------------------------------------------

  def seed_round(self, buffers: TaskBuffers, round_: int) -> dict:
    """One seeding round: proposals from the current model, valid ones join the buffers."""
    types, _, _, tasks = self.propose(buffers, derive_seed(self.config.seed, "seeding", round_))
    for t, d in zip(types, tasks):
      if d is not None:
        buffers[t].add(task_from_dict(d), SEED_STEP)
    return {
        t: float(np.mean([d is not None for tt, d in zip(types, tasks) if tt == t]))
        for t in TASK_TYPES
    }

  def train_step(self, buffers: TaskBuffers, step: int) -> dict:
    seed = derive_seed(self.config.seed, "train", step)
    a, n_roll = self.config.actor, self.config.tasks.learnability_rollouts
    # 1. propose + validate
    p_types, p_ids, p_out, p_tasks = self.propose(buffers, seed)
    valid = [d is not None for d in p_tasks]
    # 2. learnability: n solver rollouts of every valid proposal, one batched sampler call
    rates = np.full(len(p_tasks), np.nan)
    where = [k for k, ok in enumerate(valid) if ok]
    if where:
      _, _, correct, _ = self.solve(
          [p_types[k] for k in where],
          [task_from_dict(p_tasks[k]) for k in where],
          num_samples=n_roll,
          seed=derive_seed(seed, 2),
      )
      rates[where] = np.asarray(correct, np.float64).reshape(len(where), n_roll).mean(axis=1)
    proposer_r = rewards.proposer_rewards(valid, rates, variant=self.config.reward_variant)
    # 3. buffers: every valid proposal joins its type's buffer
    for t, d in zip(p_types, p_tasks):
      if d is not None:
        buffers[t].add(task_from_dict(d), step)
    # 4. solve: per type, this step's new tasks filled up uniformly from the buffer
    rng = np.random.default_rng(derive_seed(seed, 3))
    s_types, s_tasks = [], []
    for t in TASK_TYPES:
      batch = buffers[t].solver_batch(rng, a.prompts_per_step, step)
      s_types += [t] * len(batch)
      s_tasks += batch
    s_ids, s_out, correct, well_formed = self.solve(
        s_types, s_tasks, num_samples=1, seed=derive_seed(seed, 4)
    )
    # 5. rewards
    solver_r = rewards.solver_rewards(correct, well_formed)
    # 6. TRR++ advantages over the six (task type x role) groups, one update over all of them
    all_r = np.concatenate([proposer_r, solver_r])
    types = p_types + s_types
    roles = ["propose"] * len(p_types) + ["solve"] * len(s_types)
    advantages = trr.task_relative_advantages(all_r, types, roles)
    out = Completions(
        p_out.tokens + s_out.tokens,
        p_out.logprobs + s_out.logprobs,
        p_out.finished + s_out.finished,
    )
    metrics = self.update(
        self.actor, p_ids + s_ids, out, advantages, mini_batch_size=len(types) // a.updates_per_step
    )
    # metrics
    learn = rewards.learnability(rates[where]) if where else np.zeros(0)
    metrics.update(
        valid_rate=float(np.mean(valid)),
        learnability=float(learn.mean()) if learn.size else 0.0,
        proposer_reward=float(proposer_r.mean()),
        solver_accuracy=float(np.mean(correct)),
        solver_reward=float(solver_r.mean()),
        tokens_per_s=self.tokens_per_s,
    )
    for t in TASK_TYPES:
      metrics[f"{t}/valid_rate"] = float(np.mean([v for v, tt in zip(valid, p_types) if tt == t]))
      metrics[f"{t}/solver_accuracy"] = float(
          np.mean([c for c, tt in zip(correct, s_types) if tt == t])
      )
      metrics[f"{t}/buffer_size"] = len(buffers[t])
      rt = [r for r, tt, ok in zip(rates, p_types, valid) if tt == t and ok]
      metrics[f"{t}/solve_rate"] = float(np.mean(rt)) if rt else 0.0
    return metrics

  def evaluate(self) -> dict[str, float]:
    """Greedy held-out accuracy per task type (executor-graded) and their mean; {} without a
    held-out set."""
    if not self.heldout:
      return {}
    types = [t for t in TASK_TYPES for _ in self.heldout.get(t, [])]
    tasks = [task for t in TASK_TYPES for task in self.heldout.get(t, [])]
    _, _, correct, _ = self.solve(
        types,
        tasks,
        num_samples=1,
        seed=0,
        greedy=True,
        max_new_tokens=self.config.eval.max_new_tokens,
    )
    acc = {
        t: float(np.mean([c for c, tt in zip(correct, types) if tt == t]))
        for t in TASK_TYPES
        if self.heldout.get(t)
    }
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc
