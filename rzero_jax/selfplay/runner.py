"""The run directory and machinery both self-play loops share.

A `Runner` holds one run: the config, the base model (loaded straight onto the mesh), tokenizer,
mesh, roles, the KL reference, TensorBoard metrics, orbax checkpoints of the train states plus a
JSON `meta` (the loop position and everything the loop accumulates), HF export and summary.json.
The loops subclass it and add their algorithm's stages. Multi-host rules it keeps: every process
runs the same calls; host decisions go through `grading` (`multihost.decided_on_main`); only
process 0 writes files; no process reads a file another is writing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from rzero_jax import multihost, sharding
from rzero_jax.checkpoint import RunCheckpointer
from rzero_jax.io import atomic_json
from rzero_jax.metrics import MetricWriter, Progress
from rzero_jax.models import load_pretrained, load_tokenizer, save_pretrained
from rzero_jax.models.tokenizer import pad_token_id, stop_token_ids
from rzero_jax.selfplay import roles as roles_lib
from rzero_jax.selfplay.config import benchmark_names
from rzero_jax.selfplay.roles import Completions, Role
from rzero_jax.selfplay.util import (
    RunError,
    copy_tree,
    derive_seed,
    resolve_callable,
)
from rzero_jax.training import init_train_state

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)

__all__ = ["Runner", "RunError", "derive_seed", "resolve_callable"]


class Runner:
  """One run's model, mesh, roles, checkpoints, metrics and run directory.

  `role_names` are the config sections of the trained roles (`config.<name>` holds `strategy`,
  `temperature`, `max_prompt_tokens`, `max_new_tokens` and `train`). The base parameters are
  loaded onto the mesh in the first role's layout and kept in `self.base` until the subclass
  turns them into roles with `make_role` (the last one should donate them).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, role_names: Sequence[str]):
    self.config, self.workdir = config, os.path.abspath(workdir)
    self.main = multihost.is_main_process()
    self.timing: dict[str, float] = {}
    self.tokens_per_s = 0.0
    self.t_start = time.perf_counter()
    os.makedirs(self.workdir, exist_ok=True)
    self.model_path = self._model_path()
    self.tokenizer = load_tokenizer(config.tokenizer_path or self.model_path)
    try:
      self.mesh = sharding.make_mesh(config.mesh)
    except ValueError as e:
      raise RunError(f"{e} (set --mesh or config.mesh)") from e
    self.plans = {name: roles_lib.role_plans(self.mesh, name, config[name]) for name in role_names}
    # Straight onto the mesh in the first role's layout, tensor by tensor. With LoRA on every role
    # the base stays frozen, so it is kept in the compute dtype.
    lora = [roles_lib.lora_rank(config[name]) > 0 for name in role_names]
    all_lora, self.any_lora = all(lora), any(lora)
    self.cfg, self.base = load_pretrained(
        self.model_path,
        dtype=config.dtype if all_lora else config.param_dtype,
        plan=self.plans[role_names[0]][0],
    )
    self.cfg = dataclasses.replace(self.cfg, dtype=config.dtype)
    self.stop_ids = stop_token_ids(self.tokenizer, self.cfg.eos_token_id)
    self.pad_id = pad_token_id(self.tokenizer)
    self.ref_params, self.ref_role = None, None
    self.writer = MetricWriter(
        os.path.join(self.workdir, "tb"),
        enabled=self.main,
        wandb_project=config.get("wandb_project", ""),
        wandb_config=config.to_dict(),
    )
    self.ckpt: RunCheckpointer | None = None

  def _model_path(self) -> str:
    c = self.config
    if c.model_path:
      if not os.path.exists(c.model_path):
        raise RunError(
            f"config.model_path {c.model_path!r} does not exist: point it at a local "
            "HF checkpoint directory (config.json + *.safetensors + tokenizer files)."
        )
      return c.model_path
    if c.base_model_builder:
      cache = os.path.join(os.path.dirname(self.workdir), ".rzero_cache")
      return resolve_callable(c.base_model_builder)(cache)
    raise RunError("No base model: set --config.model_path=/path/to/hf_checkpoint.")

  # ----- roles ---------------------------------------------------------------------------------

  def make_role(self, name: str, *, donate: bool) -> Role:
    """A role `name` (settings `config.<name>`) starting from the base weights; with `donate`
    it takes over their buffers and the base is dropped (never while a LoRA role shares it)."""
    donate = donate and not self.any_lora
    role = roles_lib.make_role(
        name,
        self.config[name],
        self.cfg,
        self.base,
        plans=self.plans[name],
        param_dtype=self.config.param_dtype,
        donate=donate,
        seed=self.config.seed,
    )
    if donate:
      self.base = None
    return role

  def start_phase(self, role: Role) -> None:
    """The KL reference becomes the role's current weights (when any role uses KL, else none is
    kept; with LoRA only the adapters are copied: the reference is base + phase-start adapters);
    with `config.fresh_optimizer_each_phase` the role's AdamW state and schedule restart."""
    self.ref_params = None  # free the previous reference before copying
    if self.keeps_reference():
      self.ref_params, self.ref_role = copy_tree(role.state.params), role.name
    if self.config.get("fresh_optimizer_each_phase", False):
      role.state = init_train_state(
          role.model_cfg,
          role.train_cfg,
          role.state.params,
          role.plan,
          donate=True,
      )

  def keeps_reference(self) -> bool:
    """Whether a KL reference is held. The loops override it: R-Zero and Absolute Zero keep one
    only when a role's loss has a KL term (`train.kl_coef`), and then checkpoint it as "ref"."""
    return True

  # ----- sampling, grading, update ---------------------------------------------------------------

  def sample(
      self,
      role: Role,
      prompt_ids: Sequence[Sequence[int]],
      *,
      seed: int,
      num_samples: int = 1,
      temperature: float | None = None,
      top_p: float | None = None,
      max_new_tokens: int | None = None,
  ) -> Completions:
    """`roles.sample` with the run's stop tokens and `config.max_sample_batch` rows in flight;
    temperature, top_p and max_new_tokens default to the role's config section. Timed as
    sampling (also sets `tokens_per_s`)."""
    settings = self.config[role.name]
    t0 = time.perf_counter()
    out = roles_lib.sample(
        role,
        prompt_ids,
        num_samples=num_samples,
        seed=seed,
        temperature=settings.temperature if temperature is None else temperature,
        top_p=settings.top_p if top_p is None else top_p,
        max_new_tokens=settings.max_new_tokens if max_new_tokens is None else max_new_tokens,
        max_batch=self.config.max_sample_batch,
        stop_ids=self.stop_ids,
    )
    seconds = time.perf_counter() - t0
    self.timing["sampling_s"] = self.timing.get("sampling_s", 0.0) + seconds
    self.tokens_per_s = sum(len(t) for t in out.tokens) / max(seconds, 1e-9)
    return out

  def decode(self, tokens: Sequence[int]) -> str:
    return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

  def grading(self, decide: Callable[[], Any]) -> Any:
    """Runs a host decision (deadlines make it timing-dependent) once, on process 0, and shares
    its result with every process; timed as grading."""
    return roles_lib.timed(self.timing, "grading_s", lambda: multihost.decided_on_main(decide))

  def update(
      self,
      role: Role,
      seq_prompts: Sequence[Sequence[int]],
      out: Completions,
      advantages: np.ndarray,
      *,
      mini_batch_size: int,
      recompute_old_logprobs: bool | None = None,
  ) -> dict:
    """`roles.update` with the role's prompt/completion lengths, the KL reference and
    `config.recompute_old_logprobs` (unless given: completions that were not sampled have no
    sampler log-probs and must recompute them); timed as training."""
    if recompute_old_logprobs is None:
      recompute_old_logprobs = self.config.recompute_old_logprobs
    s = role.settings
    return roles_lib.timed(
        self.timing,
        "training_s",
        lambda: roles_lib.update(
            role,
            seq_prompts,
            out,
            advantages,
            mini_batch_size=mini_batch_size,
            prompt_len=s.max_prompt_tokens,
            completion_len=s.max_new_tokens,
            pad_id=self.pad_id,
            ref_params=self.ref_params,
            recompute_old_logprobs=recompute_old_logprobs,
        ),
    )

  # ----- checkpoints: train states + the loop position -------------------------------------------

  def trees(self) -> dict[str, Any]:
    """The pytrees a checkpoint holds (subclasses: their roles' states and the reference)."""
    raise NotImplementedError

  def set_trees(self, trees: dict[str, Any]) -> None:
    raise NotImplementedError

  def _checkpointer(self) -> RunCheckpointer:
    if self.ckpt is None:
      self.ckpt = RunCheckpointer(os.path.join(self.workdir, "checkpoints"), tuple(self.trees()))
    return self.ckpt

  def save(self, meta: dict) -> None:
    """Checkpoints `trees()` with the loop position `meta` (JSON; `save_count` is bumped in
    place). Every process calls it."""
    meta["save_count"] = meta.get("save_count", 0) + 1
    meta["ref_role"] = self.ref_role
    self._checkpointer().save(meta["save_count"], self.trees(), meta)

  def restore(self) -> dict | None:
    """Restores the latest checkpoint's trees; returns its meta, or None for a fresh run."""
    ckpt = self._checkpointer()
    step = ckpt.latest_step()
    if step is None:
      return None
    # The reference has the params tree of the role that owned it when saved (with LoRA, roles'
    # adapter trees may differ): restore it onto that role's layout.
    owner = ckpt.restore_meta(step).get("ref_role")
    if owner is not None and owner != self.ref_role and self.ref_params is not None:
      self.ref_params, self.ref_role = getattr(self, owner).state.params, owner
    trees, meta = ckpt.restore(step, self.trees())
    self.set_trees(trees)
    return meta

  # ----- stage bookkeeping: progress, TensorBoard, the loop position, checkpoints ---------------

  def run_steps(
      self,
      label: str,
      steps: int,
      step_fn: Callable[[int], dict],
      *,
      meta: dict | None = None,
      tb_prefix: str = "",
      tb_step: Callable[[int], int] = int,
      record: Callable[[int, dict], None] | None = None,
      show: Callable[[dict], dict] | None = None,
      save_last: bool = False,
  ) -> None:
    """Runs a stage's steps `step_fn(step) -> metrics`, from `meta["step"]` (0 without `meta`) to
    `steps`, with one progress line per step (`label`, the values of `show(metrics)`). Each step's
    metrics go to TensorBoard at `tb_step(step)` (under "`tb_prefix`/"); with `meta`, the step
    advances `meta["step"]`, `record(step, metrics)` files it in `meta`, and a checkpoint is saved
    every `config.checkpoint_every_steps` steps before the last; after the last step always with
    `save_last`, never without it (the stage's end saves)."""
    start = meta["step"] if meta is not None else 0
    progress = Progress(label, steps, start=start, enabled=self.main)
    every = self.config.checkpoint_every_steps
    for step in range(start, steps):
      metrics = step_fn(step)
      _write_scalars(self.writer, tb_step(step), tb_prefix, metrics)
      if meta is not None:
        meta["step"] = step + 1
        if record is not None:
          record(step, metrics)
      progress.update(**(show(metrics) if show else {}))
      last = step + 1 == steps
      if meta is not None and (save_last if last else (step + 1) % every == 0):
        self.save(meta)

  def end_stage(
      self,
      meta: dict,
      *,
      log: str = "",
      tb_step: int = 0,
      tb_prefix: str = "",
      scalars: dict | None = None,
      **position: Any,
  ) -> None:
    """A stage's end: prints `log`, writes the numbers among `scalars` to TensorBoard at
    `tb_step` (under "`tb_prefix`/"), sets `position` in `meta` (e.g. phase="solver", step=0)
    and checkpoints."""
    if log:
      self.log(log)
    if scalars:
      numbers = {k: v for k, v in scalars.items() if isinstance(v, (int, float))}
      _write_scalars(self.writer, tb_step, tb_prefix, numbers)
    meta.update(position)
    self.save(meta)

  # ----- outputs -------------------------------------------------------------------------------

  def export(self, subdir: str, roles: Sequence[Role]) -> None:
    """Writes `roles` in HF format under export/<subdir>/<role>, LoRA adapters merged (every process
    gathers, process 0 writes), with the base model's tokenizer files; off with
    `config.export_hf = False`."""
    if not self.config.export_hf:
      return
    files = {
        f: os.path.join(self.model_path, f)
        for f in TOKENIZER_FILES
        if os.path.exists(os.path.join(self.model_path, f))
    }
    for role in roles:
      host_params = jax.tree.map(
          lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), role.params
      )
      if self.main:
        save_pretrained(
            role.model_cfg,
            host_params,
            os.path.join(self.workdir, "export", subdir, role.name),
            extra_files=files,
        )

  def benchmark_scores(self, role: Role, tb_step: int) -> dict[str, float] | None:
    """`role` on `config.eval.benchmarks` (`rzero_jax.eval`, greedy; `eval.data_dir`,
    `eval.limit`, `eval.max_new_tokens`) as flat scalars (`eval/<benchmark>`,
    `eval/math_average`, `eval/overall`), also written to TensorBoard; None when none are set."""
    e = self.config.eval
    names = benchmark_names(self.config)
    if not names:
      return None
    from rzero_jax import eval as eval_lib

    sampler_cfg, params = role.sampler_params()
    result = eval_lib.evaluate(
        sampler_cfg,
        params,
        self.tokenizer,
        names,
        data_dir=e.get("data_dir") or None,
        limit=e.get("limit") or None,
        max_new_tokens=e.max_new_tokens,
        plan=role.sampler_plan,
        keep_records=False,
    )
    scores = eval_lib.flat_metrics(result)
    self.writer.scalars(tb_step, scores)
    self.log(" ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return scores

  def log(self, message: str) -> None:
    """Prints a progress line on process 0 (one copy per run, however many processes)."""
    if self.main:
      print(message, flush=True)

  def finish(self, summary: dict, table: str) -> dict:
    """Adds timing, writes summary.json and prints `table` (process 0), closes the writers."""
    summary["timing"] = dict(self.timing, total_s=time.perf_counter() - self.t_start)
    if self.main:
      atomic_json(os.path.join(self.workdir, "summary.json"), summary, natural_order=True)
      print(table, flush=True)
    self.close()
    return summary

  def close(self) -> None:
    self.writer.close()
    if self.ckpt is not None:
      self.ckpt.close()


def format_rows(rows: Sequence[Sequence[str]]) -> str:
  """Right-aligned columns with a rule under the header row."""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
  return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def fmt(x: Any) -> str:
  return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _write_scalars(writer: MetricWriter, tb_step: int, prefix: str, values: dict) -> None:
  """`values` to TensorBoard at `tb_step`, their names under "`prefix`/" when one is given."""
  writer.scalars(tb_step, {f"{prefix}/{k}" if prefix else k: v for k, v in values.items()})
