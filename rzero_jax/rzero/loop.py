"""The R-Zero co-evolution loop: iterations x (Challenger phase -> dataset -> Solver phase).

All randomness is derived from (seed, iteration, phase, step), and the loop position is saved with
both roles' train states, so a killed run resumes to exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import tempfile
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from rzero_jax import sharding
from rzero_jax.checkpoint import RunCheckpointer
from rzero_jax.metrics import MetricWriter, Progress
from rzero_jax.models import load_pretrained, load_tokenizer, save_pretrained
from rzero_jax.models.tokenizer import encode_chat, pad_token_id, stop_token_ids
from rzero_jax.rzero import dataset as ds
from rzero_jax.rzero import prompts, rewards
from rzero_jax.rzero.rollout import build_batch, split_minibatches
from rzero_jax.sampling import generate
from rzero_jax.training import (TrainConfig, init_train_state, make_logprob_fn,
                                make_train_step)
from rzero_jax.training.grpo import group_advantages
from rzero_jax.verify.answers import extract_boxed, grade
from rzero_jax.verify.voting import Vote, majority_votes

PHASES = ("challenger", "dataset", "solver", "done")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt", "generation_config.json")


class RunError(RuntimeError):
  """A configuration or environment problem, reported to the user without a traceback."""


def derive_seed(seed: int, *parts: Any) -> int:
  """A 31-bit seed derived from the run seed and a loop position, e.g. (iteration, phase, step)."""
  words = [seed] + [PHASES.index(p) if isinstance(p, str) and p in PHASES else int(p)
                    for p in parts]
  return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_callable(spec: str) -> Callable[..., Any]:
  """Imports "package.module:function"."""
  module, _, name = spec.partition(":")
  if not module or not name:
    raise RunError(f"Bad callable reference {spec!r}: write it as 'package.module:function'.")
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise RunError(f"Cannot import {spec!r}: {e}") from e


class Completions(NamedTuple):
  """Sampled completions of several sampler calls, in prompt order."""

  tokens: list[list[int]]
  logprobs: list[list[float]]
  finished: list[bool]


@dataclasses.dataclass
class Role:
  """One trained role: its train state, compiled functions and sampling settings."""

  name: str
  settings: ml_collections.ConfigDict
  strategy: str
  plan: sharding.ShardingPlan
  train_cfg: TrainConfig
  state: Any
  train_step: Callable
  logprob_fn: Callable

  @property
  def params(self):
    return self.state.params


def _train_config(role_cfg: ml_collections.ConfigDict, role: str, param_dtype: str) -> TrainConfig:
  fields = dict(role_cfg.train.to_dict(), temperature=float(role_cfg.temperature),
                param_dtype=param_dtype)
  try:
    return TrainConfig(**fields)
  except TypeError as e:
    valid = sorted(f.name for f in dataclasses.fields(TrainConfig))
    raise RunError(f"Bad config.{role}.train: {e}. Valid fields: {valid}.") from e


def _copy(tree: Any) -> Any:
  """A copy with its own buffers: train steps donate their state, so nothing may alias it."""
  return jax.tree.map(jnp.copy, tree)


@jax.jit
def _masked_abs_diff(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """[sum of |a - b| over the mask, mask count] (replicated scalars)."""
  mask = mask.astype(jnp.float32)
  return jnp.stack([jnp.sum(jnp.abs(a - b) * mask), jnp.sum(mask)])


def _atomic_json(path: str, data: Any) -> None:
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=os.path.dirname(path))
  with os.fdopen(fd, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


# Smallest allowed value of each role's counts; GRPO compares >= 2 samples per prompt.
ROLE_MINIMUMS = {"steps": 1, "prompts_per_step": 1, "prompts_per_update": 1, "group_size": 2,
                 "votes": 1}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the batch arithmetic up front, so a bad config fails before any work is done."""
  for name in ("challenger", "solver"):
    role = config[name]
    for field, minimum in ROLE_MINIMUMS.items():
      if field in role and role[field] < minimum:
        raise RunError(f"config.{name}.{field} must be >= {minimum}, got {role[field]}.")
    if role.prompts_per_step % role.prompts_per_update:
      raise RunError(f"config.{name}.prompts_per_step ({role.prompts_per_step}) must be a multiple "
                     f"of config.{name}.prompts_per_update ({role.prompts_per_update}).")
    micro = role.train.micro_batch_size
    if micro and (role.prompts_per_update * role.group_size) % micro:
      raise RunError(f"config.{name}.train.micro_batch_size ({micro}) must divide the mini-batch of "
                     f"prompts_per_update x group_size = "
                     f"{role.prompts_per_update * role.group_size} sequences.")
  if config.challenger.repetition_denominator not in rewards.REPETITION_DENOMINATORS:
    raise RunError(f"config.challenger.repetition_denominator must be one of "
                   f"{rewards.REPETITION_DENOMINATORS}, got {config.challenger.repetition_denominator!r}.")
  if config.dataset.filter not in ds.DATASET_FILTERS:
    raise RunError(f"config.dataset.filter must be one of {ds.DATASET_FILTERS}, got "
                   f"{config.dataset.filter!r}.")
  if config.reward_variant not in rewards.REWARD_VARIANTS:
    raise RunError(f"config.reward_variant must be one of {rewards.REWARD_VARIANTS}, got "
                   f"{config.reward_variant!r}.")
  if config.dataset.votes < 1 or config.dataset.num_candidates < 1:
    raise RunError("config.dataset.votes and config.dataset.num_candidates must be >= 1.")
  if config.iterations < 1 or config.checkpoint_every_steps < 1:
    raise RunError("config.iterations and config.checkpoint_every_steps must be >= 1.")


class RZeroRun:
  """Holds the models, tokenizer, mesh and run directory of one R-Zero run."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    self.config, self.workdir = config, os.path.abspath(workdir)
    self.main = sharding.is_main_process()
    self.timing: dict[str, float] = {}
    os.makedirs(self.workdir, exist_ok=True)
    self.model_path = self._model_path()
    self.tokenizer = load_tokenizer(config.tokenizer_path or self.model_path)
    try:
      self.mesh = sharding.make_mesh(config.mesh)
    except ValueError as e:
      raise RunError(f"{e} (set --mesh or config.mesh)") from e
    for name in ("challenger", "solver"):
      try:
        sharding.make_plan(self.mesh, config[name].strategy)
      except ValueError as e:
        raise RunError(f"config.{name}.strategy: {e}") from e
    # Straight onto the mesh in the Challenger's layout, tensor by tensor; the Solver gets its own
    # copy, the Challenger's state takes over the loaded buffers: two copies plus the reference.
    self.cfg, base = load_pretrained(self.model_path, dtype=config.param_dtype, mesh=self.mesh,
                                     strategy=config.challenger.strategy)
    self.cfg = dataclasses.replace(self.cfg, dtype=config.dtype)
    self.stop_ids = stop_token_ids(self.tokenizer, self.cfg.eos_token_id)
    self.pad_id = pad_token_id(self.tokenizer)
    self.solver = self._role("solver", base, donate=False)
    self.challenger = self._role("challenger", base, donate=True)
    del base
    self.ref_params = _copy(self.challenger.params)
    self.writer = MetricWriter(os.path.join(self.workdir, "tb"), enabled=self.main,
                               wandb_project=config.get("wandb_project", ""),
                               wandb_config=config.to_dict())
    self.ckpt = RunCheckpointer(os.path.join(self.workdir, "checkpoints"),
                                ("challenger", "solver", "ref"))
    self.heldout = self._heldout()
    self.oracle = resolve_callable(config.eval.oracle) if config.eval.oracle else None
    self.challenger_prompt = encode_chat(self.tokenizer, prompts.challenger_messages())

  # ----- setup ---------------------------------------------------------------------------------

  def _model_path(self) -> str:
    c = self.config
    if c.model_path:
      if not os.path.exists(c.model_path):
        raise RunError(f"config.model_path {c.model_path!r} does not exist: point it at a local "
                       "HF checkpoint directory (config.json + *.safetensors + tokenizer files).")
      return c.model_path
    if c.base_model_builder:
      cache = os.path.join(os.path.dirname(self.workdir), ".rzero_cache")
      return resolve_callable(c.base_model_builder)(cache)
    raise RunError("No base model: set --config.model_path=/path/to/hf_checkpoint.")

  def _role(self, name: str, base_params: Any, *, donate: bool) -> Role:
    """A role whose train state starts from `base_params` (already on the mesh); with `donate` the
    state takes over their buffers (`base_params` is then unusable)."""
    settings = self.config[name]
    train_cfg = _train_config(settings, name, self.config.param_dtype)
    strategy = settings.strategy
    state = init_train_state(self.cfg, train_cfg, base_params, mesh=self.mesh, strategy=strategy,
                             donate=donate)
    return Role(name, settings, strategy, sharding.make_plan(self.mesh, strategy), train_cfg, state,
                make_train_step(self.cfg, train_cfg, mesh=self.mesh, strategy=strategy),
                make_logprob_fn(self.cfg, train_cfg, mesh=self.mesh, strategy=strategy))

  def _heldout(self) -> list[tuple[str, str]]:
    e = self.config.eval
    if e.heldout:
      return [(q, str(a)) for q, a, *_ in resolve_callable(e.heldout)()]
    if e.heldout_jsonl:
      return [(r["question"], str(r["answer"])) for r in ds.read_jsonl(e.heldout_jsonl)]
    return []

  # ----- sampling helpers ----------------------------------------------------------------------

  def _sample(self, role: Role, prompt_ids: list[list[int]], *, num_samples: int, seed: int,
              temperature: float, top_p: float, max_new_tokens: int) -> Completions:
    """Samples `num_samples` completions per prompt in chunks of at most
    `config.max_sample_batch` sequences (a fixed chunk shape compiles once)."""
    t0 = time.perf_counter()
    per_chunk = max(1, self.config.max_sample_batch // num_samples)
    parts = []
    for k in range(0, len(prompt_ids), per_chunk):
      parts.append(generate(self.cfg, role.params, prompt_ids[k:k + per_chunk],
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            num_samples=num_samples, stop_token_ids=self.stop_ids,
                            seed=derive_seed(seed, k), mesh=self.mesh, strategy=role.strategy))
    out = Completions(tokens=[t for p in parts for t in p.tokens],
                      logprobs=[lp for p in parts for lp in p.logprobs],
                      finished=[f for p in parts for f in p.finished])
    seconds = time.perf_counter() - t0
    self.timing["sampling_s"] = self.timing.get("sampling_s", 0.0) + seconds
    self.tokens_per_s = sum(len(t) for t in out.tokens) / max(seconds, 1e-9)
    return out

  def _decode(self, tokens: Sequence[int]) -> str:
    return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

  def _solver_prompt(self, question: str) -> list[int] | None:
    ids = encode_chat(self.tokenizer, prompts.solver_messages(question))
    return ids if len(ids) <= self.config.solver.max_prompt_tokens else None

  def _vote(self, questions: list[str], seed: int, votes: int, temperature: float,
            top_p: float) -> tuple[list, list[list[str | None]]]:
    """The Solver's `votes` answers per question, batched over all questions, and their votes."""
    if not questions:
      return [], []
    ids = [self._solver_prompt(q) for q in questions]
    out = self._sample(self.solver, ids, num_samples=votes, seed=seed,
                          temperature=temperature, top_p=top_p,
                          max_new_tokens=self.config.solver.max_new_tokens)
    answers = [extract_boxed(self._decode(t)) for t in out.tokens]
    grouped = [answers[i * votes:(i + 1) * votes] for i in range(len(questions))]
    decided = self._grading(lambda: [dataclasses.astuple(v) for v in majority_votes(
        grouped, timeout_s=self.config.grade_timeout_s)])
    result = [Vote(label, p_hat, [tuple(g) for g in groups]) for label, p_hat, groups in decided]
    return result, grouped

  def _grading(self, decide: Callable[[], Any]) -> Any:
    """Runs a grading decision (deadlines make it timing-dependent) once, on process 0, and shares
    its result with every process; timed as grading."""
    t0 = time.perf_counter()
    result = sharding.decided_on_main(decide)
    self.timing["grading_s"] = self.timing.get("grading_s", 0.0) + time.perf_counter() - t0
    return result

  def _parse_questions(self, completions: Sequence[Sequence[int]]) -> list[str | None]:
    parsed = [prompts.parse_question(self._decode(t)) for t in completions]
    return [q if q is not None and self._solver_prompt(q) is not None else None for q in parsed]

  # ----- GRPO update of one role ----------------------------------------------------------------

  def _update(self, role: Role, prompt_ids: list[list[int]], out, rewards_: np.ndarray) -> dict:
    """GRPO update of `role` on one rollout step: mini-batches go to the devices as global arrays
    (each process feeds its rows), old and reference log-probs are computed there before the
    first update, and only replicated scalars come back."""
    s = role.settings
    advantages = np.asarray(group_advantages(rewards_, s.group_size))
    seq_prompts = [p for p in prompt_ids for _ in range(s.group_size)]
    batch = build_batch(seq_prompts, out.tokens, out.logprobs, advantages,
                        prompt_len=s.max_prompt_tokens, completion_len=s.max_new_tokens,
                        pad_id=self.pad_id)
    t0 = time.perf_counter()
    minis = []
    for mini in split_minibatches(batch, s.prompts_per_update * s.group_size):
      rows = sharding.process_rows(role.plan, len(mini["tokens"]))
      minis.append(sharding.host_to_global({k: v[rows] for k, v in mini.items()}, role.plan))
    mismatch = []
    for mini in minis:  # every old log-prob is taken before the first update changes the params
      if self.config.recompute_old_logprobs:
        recomputed = role.logprob_fn(role.params, mini["tokens"], mini["attention_mask"])
        mismatch.append(_masked_abs_diff(mini["old_logprobs"], recomputed, mini["loss_mask"]))
        mini["old_logprobs"] = recomputed
      if role.train_cfg.kl_coef:
        mini["ref_logprobs"] = role.logprob_fn(self.ref_params, mini["tokens"],
                                               mini["attention_mask"])
    metrics: list[dict] = []
    for mini in minis:
      role.state, m = role.train_step(role.state, mini)
      metrics.append(m)
    metrics, mismatch = jax.device_get((metrics, mismatch))
    self.timing["training_s"] = self.timing.get("training_s", 0.0) + time.perf_counter() - t0
    summary = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
    summary["skipped"] = float(np.sum([m["skipped"] for m in metrics]))
    if mismatch:
      total, count = np.sum(mismatch, axis=0)
      summary["logprob_mismatch"] = float(total / max(count, 1.0))
    return summary

  def challenger_step(self, iteration: int, step: int) -> dict:
    c = self.config.challenger
    seed = derive_seed(self.config.seed, iteration, "challenger", step)
    prompt_ids = [self.challenger_prompt] * c.prompts_per_step
    out = self._sample(self.challenger, prompt_ids, num_samples=c.group_size, seed=seed,
                              temperature=c.temperature, top_p=c.top_p,
                              max_new_tokens=c.max_new_tokens)
    questions = self._parse_questions(out.tokens)
    valid = [i for i, q in enumerate(questions) if q is not None]
    votes, _ = self._vote([questions[i] for i in valid], seed + 1, c.votes,
                          self.config.dataset.temperature, self.config.dataset.top_p)
    p_hat = np.zeros(len(questions))
    p_hat[valid] = [v.p_hat for v in votes]
    rep, clusters = rewards.repetition_penalties(questions, tau=c.tau, lam=c.lam,
                                                 denominator=c.repetition_denominator)
    r = rewards.challenger_rewards(p_hat, [q is not None for q in questions], rep,
                                   variant=self.config.reward_variant)
    metrics = self._update(self.challenger, prompt_ids, out, r)
    metrics.update(reward=float(r.mean()), well_formed=len(valid) / len(questions),
                   p_hat_mean=float(p_hat[valid].mean()) if valid else 0.0,
                   repetition_clusters=clusters, tokens_per_s=self.tokens_per_s,
                   completion_len=float(np.mean([len(t) for t in out.tokens])))
    self.writer.histogram(self._tb_step(iteration, "challenger", step), "challenger/p_hat",
                          p_hat[valid])
    return metrics

  def solver_step(self, iteration: int, step: int, kept: list[dict]) -> dict:
    s = self.config.solver
    seed = derive_seed(self.config.seed, iteration, "solver", step)
    order = np.random.default_rng(seed).permutation(len(kept))
    picks = [kept[order[i % len(kept)]] for i in range(s.prompts_per_step)]
    prompt_ids = [self._solver_prompt(r["question"]) for r in picks]
    out = self._sample(self.solver, prompt_ids, num_samples=s.group_size, seed=seed,
                              temperature=s.temperature, top_p=s.top_p,
                              max_new_tokens=s.max_new_tokens)
    texts = [self._decode(t) for t in out.tokens]
    labels = [r["label"] for r in picks for _ in range(s.group_size)]
    correct = self._grading(lambda: grade(texts, labels, timeout_s=self.config.grade_timeout_s))
    variant = self.config.reward_variant
    formatted = [rewards.solver_well_formed(t, variant=variant) for t in texts]
    r = rewards.solver_rewards(correct, formatted, variant=variant)
    metrics = self._update(self.solver, prompt_ids, out, r)
    metrics.update(reward=float(r.mean()), tokens_per_s=self.tokens_per_s,
                   completion_len=float(np.mean([len(t) for t in out.tokens])))
    return metrics

  # ----- dataset and evaluation -----------------------------------------------------------------

  def build_dataset(self, iteration: int) -> tuple[list[dict], dict]:
    d = self.config.dataset
    seed = derive_seed(self.config.seed, iteration, "dataset", 0)
    out = self._sample(self.challenger, [self.challenger_prompt] * d.num_candidates, num_samples=1,
                       seed=seed, temperature=self.config.challenger.temperature,
                       top_p=self.config.challenger.top_p,
                       max_new_tokens=self.config.challenger.max_new_tokens)
    questions = ds.unique_questions(self._parse_questions(out.tokens))
    votes, answers = self._vote(questions, seed + 1, d.votes, d.temperature, d.top_p)
    kept = ds.select_questions(questions, [v.label for v in votes], [v.p_hat for v in votes],
                               answers, delta=d.delta, filter=d.filter)
    stats = {"candidates": d.num_candidates, "unique_questions": len(questions),
             "kept": len(kept),
             "mean_p_hat": float(np.mean([r["p_hat"] for r in kept])) if kept else None,
             "all_abstained": int(sum(v.label is None for v in votes))}
    if self.oracle is not None and kept:
      truths, ok = self._grading(lambda: self._judge_labels(kept))
      for r, t in zip(kept, truths):
        r["true_answer"] = t
      stats["pseudo_label_accuracy"] = float(np.mean(ok)) if ok else None
    return kept, stats

  def _judge_labels(self, kept: list[dict]) -> tuple[list, list[bool]]:
    """The oracle's answer to each kept question, and whether each judged pseudo-label is right."""
    truths = [self.oracle(r["question"]) for r in kept]
    judged = [(r["label"], t) for r, t in zip(kept, truths) if t is not None]
    ok = grade([f"\\boxed{{{l}}}" for l, _ in judged], [str(t) for _, t in judged],
               timeout_s=self.config.grade_timeout_s) if judged else []
    return truths, ok

  def heldout_accuracy(self) -> float | None:
    if not self.heldout:
      return None
    ids = [self._solver_prompt(q) for q, _ in self.heldout]
    if any(i is None for i in ids):
      raise RunError("A held-out question is longer than config.solver.max_prompt_tokens.")
    out = self._sample(self.solver, ids, num_samples=1, seed=0, temperature=0.0, top_p=1.0,
                          max_new_tokens=self.config.eval.max_new_tokens)
    texts = [self._decode(t) for t in out.tokens]
    golds = [a for _, a in self.heldout]
    return self._grading(
        lambda: float(np.mean(grade(texts, golds, timeout_s=self.config.grade_timeout_s))))

  def log(self, message: str) -> None:
    """Prints a progress line on process 0 (one copy per run, however many processes)."""
    if self.main:
      print(message, flush=True)

  def start_phase(self, role: Role) -> None:
    """The KL reference becomes the role's current weights; with
    `config.fresh_optimizer_each_phase` the role's AdamW state and schedule start over."""
    self.ref_params = None  # free the previous phase's reference before copying
    self.ref_params = _copy(role.params)
    if self.config.fresh_optimizer_each_phase:
      role.state = init_train_state(self.cfg, role.train_cfg, role.params, mesh=self.mesh,
                                    strategy=role.strategy, donate=True)

  # ----- checkpoints ---------------------------------------------------------------------------

  def _tb_step(self, iteration: int, phase: str, step: int) -> int:
    c, s = self.config.challenger.steps, self.config.solver.steps
    return iteration * (c + s + 1) + {"challenger": 0, "dataset": c, "solver": c + 1}[phase] + step

  def save(self, meta: dict) -> None:
    """Checkpoints both roles, the KL reference and the loop position (`meta`, updated in place)."""
    meta["save_count"] += 1
    self.ckpt.save(meta["save_count"], {"challenger": self.challenger.state,
                                        "solver": self.solver.state, "ref": self.ref_params}, meta)

  def restore(self) -> dict | None:
    step = self.ckpt.latest_step()
    if step is None:
      return None
    trees, meta = self.ckpt.restore(step, {"challenger": self.challenger.state,
                                           "solver": self.solver.state, "ref": self.ref_params})
    self.challenger.state, self.solver.state = trees["challenger"], trees["solver"]
    self.ref_params = trees["ref"]
    return meta

  def export(self, iteration: int) -> None:
    """Writes both roles in HF format (every process gathers, process 0 writes)."""
    if not self.config.export_hf:
      return
    files = {f: os.path.join(self.model_path, f) for f in TOKENIZER_FILES
             if os.path.exists(os.path.join(self.model_path, f))}
    for role in (self.challenger, self.solver):
      host_params = jax.tree.map(
          lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), role.params)
      if self.main:
        save_pretrained(self.cfg, host_params,
                        os.path.join(self.workdir, "export", f"iter_{iteration + 1}", role.name),
                        extra_files=files)


def _iteration_record() -> dict:
  return {"challenger_reward": [], "solver_reward": [], "skipped_steps": 0}


def _fresh_meta() -> dict:
  return {"iteration": 0, "phase": "challenger", "step": 0, "save_count": 0,
          "iterations": [], "base_heldout_accuracy": None, "current": _iteration_record()}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) an R-Zero run in `workdir`; returns the summary written to summary.json."""
  t_start = time.perf_counter()
  r = RZeroRun(config, workdir)
  meta = r.restore()
  if meta is None:
    meta = _fresh_meta()
    meta["base_heldout_accuracy"] = r.heldout_accuracy()
    r.log(f"base model held-out accuracy: {meta['base_heldout_accuracy']}")
  else:
    r.log(f"resuming from checkpoint: iteration {meta['iteration'] + 1}, phase {meta['phase']}, "
          f"step {meta['step']}")
  iterations = config.iterations
  while meta["iteration"] < iterations:
    it = meta["iteration"]
    kept = None
    tag = f"[iter {it + 1}/{iterations}]"
    if meta["phase"] == "challenger":
      if meta["step"] == 0:
        r.start_phase(r.challenger)
      progress = Progress(f"{tag} challenger step", config.challenger.steps, start=meta["step"],
                          enabled=r.main)
      while meta["step"] < config.challenger.steps:
        m = r.challenger_step(it, meta["step"])
        r.writer.scalars(r._tb_step(it, "challenger", meta["step"]),
                         {f"challenger/{k}": v for k, v in m.items()})
        meta["current"]["challenger_reward"].append(m["reward"])
        meta["current"]["skipped_steps"] += int(m["skipped"])
        meta["step"] += 1
        progress.update(reward=m["reward"], well_formed=m["well_formed"], p_hat=m["p_hat_mean"])
        if meta["step"] < config.challenger.steps and meta["step"] % config.checkpoint_every_steps == 0:
          r.save(meta)
      meta["phase"], meta["step"] = "dataset", 0
      r.save(meta)
    if meta["phase"] == "dataset":
      kept, stats = r.build_dataset(it)
      if r.main:
        ds.write_jsonl(os.path.join(r.workdir, "data", f"iter_{it + 1}.jsonl"), kept)
      r.log(f"{tag} dataset: {stats['unique_questions']} unique questions, kept {stats['kept']}, "
            f"mean p_hat {stats['mean_p_hat']}, pseudo-label accuracy "
            f"{stats.get('pseudo_label_accuracy')}")
      if not kept:
        r.log(f"{tag} no question fell inside the p_hat band; the Solver phase of this iteration "
              "is skipped (try more candidates or a wider config.dataset.delta).")
      r.writer.scalars(r._tb_step(it, "dataset", 0),
                       {f"dataset/{k}": v for k, v in stats.items() if v is not None})
      meta["current"]["dataset"] = stats
      meta["phase"], meta["step"] = "solver", 0
      r.save(meta)
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
        r.writer.scalars(r._tb_step(it, "solver", meta["step"]),
                         {f"solver/{k}": v for k, v in m.items()})
        meta["current"]["solver_reward"].append(m["reward"])
        meta["current"]["skipped_steps"] += int(m["skipped"])
        meta["step"] += 1
        progress.update(reward=m["reward"])
        if meta["step"] < steps and meta["step"] % config.checkpoint_every_steps == 0:
          r.save(meta)
      acc = r.heldout_accuracy()
      stats = meta["current"]["dataset"]
      record = {"iteration": it + 1, "kept": stats["kept"], "mean_p_hat": stats["mean_p_hat"],
                "pseudo_label_accuracy": stats.get("pseudo_label_accuracy"),
                "heldout_accuracy": acc,
                **meta["current"]}
      record.pop("dataset")
      meta["iterations"].append(record)
      r.log(f"{tag} Solver held-out accuracy: {acc}")
      r.export(it)
      meta.update(iteration=it + 1, phase="challenger", step=0, current=_iteration_record())
      r.save(meta)
  summary = make_summary(config, meta)
  summary["timing"] = dict(r.timing, total_s=time.perf_counter() - t_start)
  if r.main:
    _atomic_json(os.path.join(r.workdir, "summary.json"), summary)
    r.log(format_table(summary))
  r.writer.close()
  r.ckpt.close()
  return summary


def make_summary(config: ml_collections.ConfigDict, meta: dict) -> dict:
  """The deterministic part of summary.json (everything but `timing`)."""
  heldout = {"base": meta["base_heldout_accuracy"]}
  heldout.update({f"iter_{r['iteration']}": r["heldout_accuracy"] for r in meta["iterations"]})
  return {"iterations": meta["iterations"], "heldout_accuracy": heldout,
          "pseudo_label_accuracy": {f"iter_{r['iteration']}": r["pseudo_label_accuracy"]
                                    for r in meta["iterations"]},
          "config": json.loads(config.to_json())}


def format_table(summary: dict) -> str:
  """The per-iteration table printed at the end of a run."""
  def fmt(x):
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)
  rows = [("iteration", "kept", "mean p_hat", "pseudo-label acc", "held-out acc"),
          ("base", "-", "-", "-", fmt(summary["heldout_accuracy"]["base"]))]
  for r in summary["iterations"]:
    rows.append((str(r["iteration"]), fmt(r["kept"]), fmt(r["mean_p_hat"]),
                 fmt(r["pseudo_label_accuracy"]), fmt(r["heldout_accuracy"])))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
  return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])
