"""A trained role, batched sampling and the policy update, shared by both self-play loops.

The update takes one advantage per sequence, so it serves GRPO (advantages normalised within each
prompt's group) and TRR++ (within each task type x role) alike. It keeps the loops multi-host
safe: each process feeds its rows of every global mini-batch, old and reference log-probs are
recomputed on device before the first optimizer step, and only replicated scalars come back.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import weakref
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rzero_jax import multihost
from rzero_jax.models import combine_params, init_lora
from rzero_jax.models.functional import base_config, merge_lora, param_shardings, split_lora
from rzero_jax.sampling import generate
from rzero_jax.selfplay.util import RunError, derive_seed, name_id
from rzero_jax.sharding import ShardingPlan, make_plan
from rzero_jax.training import (TrainConfig, init_train_state, make_logprob_fn, make_train_step)
from rzero_jax.training.batch import build_batch, split_minibatches
from rzero_jax.training.grpo import LOG_RATIO_CLAMP, kl_penalty


class Completions(NamedTuple):
  """Sampled completions of several sampler calls, in prompt order."""

  tokens: list[list[int]]
  logprobs: list[list[float]]
  finished: list[bool]


@dataclasses.dataclass
class Role:
  """One trained role: its train state, compiled functions and sampling settings.

  `plan` lays out the training (train state, train step, log-probs), `sampler_plan` the sampler's
  weights and rows (None: unsharded). With LoRA (`model_cfg.lora_rank` > 0) the state holds only
  the role's adapters and `base` is the frozen base params the roles share; with full fine-tuning
  `base` is None.
  """

  name: str
  settings: ml_collections.ConfigDict
  plan: ShardingPlan | None
  sampler_plan: ShardingPlan | None
  train_cfg: TrainConfig
  state: Any
  train_step: Callable
  logprob_fn: Callable
  model_cfg: Any
  base: Any = None
  _sampler_copy: Any = dataclasses.field(default=None, repr=False)  # (weakref to state, params)

  def full(self, trained: Any) -> Any:
    """The model's params tree for trained params (adapters, or the whole model) of this role."""
    return combine_params(self.base, trained)

  @property
  def params(self):
    return self.full(self.state.params)

  def sampler_params(self) -> tuple[Any, Any]:
    """(model config, params) the sampler runs, in `sampler_plan`'s layout.

    When the trained params are already in the compute dtype and the sampler layout they are used
    as they are. Otherwise the sampler gets its own copy in the compute dtype (LoRA adapters
    merged into it), made on device from the current train state whenever it has changed: float32
    master weights are not converted at every decode step, and decoding does not run in the
    training layout (under `fsdp`, weights gathered for every token)."""
    dtype = jax.numpy.dtype(self.model_cfg.compute_dtype)
    weights = split_lora(self.params)[0]  # adapters are small: cast at use, never copied
    if self.sampler_plan == self.plan and all(x.dtype == dtype for x in jax.tree.leaves(weights)):
      return self.model_cfg, self.params
    made_from = self._sampler_copy[0]() if self._sampler_copy else None
    if made_from is not self.state:
      self._sampler_copy = None  # free the previous copy first
      copy = sampler_copy_fn(self.model_cfg, self.sampler_plan)
      self._sampler_copy = (weakref.ref(self.state), copy(self.state.params, self.base))
    return base_config(self.model_cfg), self._sampler_copy[1]


@functools.lru_cache(maxsize=16)
def sampler_copy_fn(model_cfg: Any, plan: ShardingPlan | None) -> Callable:
  """Jitted (trained params, frozen base or None) -> the model's params in the compute dtype,
  LoRA merged, placed by `plan` (on device: no host round trip)."""
  sampler_cfg = base_config(model_cfg)
  shardings = None if plan is None else param_shardings(sampler_cfg, plan)
  dtype = model_cfg.compute_dtype

  @functools.partial(jax.jit, out_shardings=shardings)
  def copy(trained: Any, base: Any) -> Any:
    merged = merge_lora(model_cfg, combine_params(base, trained))
    return jax.tree.map(lambda p: p.astype(dtype), merged)

  return copy


LORA_SEED_TAG = 7  # lora_seed: each role's initial adapters


def lora_seed(seed: int, name: str) -> int:
  """The seed of role `name`'s initial LoRA adapters; any role name works (`name_id`), and the
  names in `PHASE_IDS` (challenger, solver, verifier) keep the seeds they always had."""
  return derive_seed(seed, LORA_SEED_TAG, name_id(name))


def lora_rank(settings: ml_collections.ConfigDict) -> int:
  """`config.<role>.lora.rank` (0 = full fine-tuning, also when there is no `lora` section)."""
  lora = settings.get("lora")
  return int(lora.rank) if lora is not None else 0


def train_config(role_cfg: ml_collections.ConfigDict, role: str, param_dtype: str) -> TrainConfig:
  """The TrainConfig of `config.<role>` (its `train` fields plus temperature and dtype)."""
  fields = dict(
      role_cfg.train.to_dict(), temperature=float(role_cfg.temperature), param_dtype=param_dtype
  )
  try:
    return TrainConfig(**fields)
  except TypeError as e:
    valid = sorted(f.name for f in dataclasses.fields(TrainConfig))
    raise RunError(f"Bad config.{role}.train: {e}. Valid fields: {valid}.") from e


def role_plans(
    mesh: Any, name: str, settings: ml_collections.ConfigDict
) -> tuple[ShardingPlan | None, ShardingPlan | None]:
  """The training and sampler plans of role `name` on `mesh`, from `config.<name>.strategy` and
  `sampler_strategy` ("" or absent: the training strategy)."""
  plans = []
  for field in ("strategy", "sampler_strategy"):
    try:
      plans.append(make_plan(mesh, settings.get(field) or settings.strategy))
    except ValueError as e:
      raise RunError(f"config.{name}.{field}: {e}") from e
  return plans[0], plans[1]


def make_role(
    name: str,
    settings: ml_collections.ConfigDict,
    model_cfg: Any,
    base_params: Any,
    *,
    plans: tuple[ShardingPlan | None, ShardingPlan | None],
    param_dtype: str,
    donate: bool,
    seed: int = 0,
) -> Role:
  """A role whose train state starts from `base_params` (already on the mesh), laid out by
  `plans` (training, sampler: `role_plans`); with `donate` the state takes over their buffers
  (`base_params` is then unusable). With `config.<name>.lora.rank`
  > 0 the state holds fresh adapters (from `seed`) over the shared, frozen `base_params`."""
  train_cfg = train_config(settings, name, param_dtype)
  plan, sampler_plan = plans
  model_cfg = dataclasses.replace(model_cfg, batch_invariant=bool(settings.batch_invariant))
  base, trained = None, base_params
  if lora_rank(settings) < 0:
    raise RunError(
        f"config.{name}.lora.rank must be >= 0 (0 = full fine-tuning), got {settings.lora.rank}."
    )
  if lora_rank(settings):
    lora = settings.lora
    model_cfg = dataclasses.replace(
        model_cfg,
        lora_rank=int(lora.rank),
        lora_alpha=float(lora.alpha),
        lora_targets=tuple(lora.targets),
    )
    base, donate = base_params, False
    key = jax.random.key(lora_seed(seed, name))
    trained = init_lora(model_cfg, key, dtype=param_dtype)
  return Role(
      name,
      settings,
      plan,
      sampler_plan,
      train_cfg,
      init_train_state(model_cfg, train_cfg, trained, plan, donate=donate),
      make_train_step(model_cfg, train_cfg, plan),
      make_logprob_fn(model_cfg, train_cfg, plan),
      model_cfg,
      base,
  )


def sample(
    role: Role,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_batch: int,
    stop_ids: Any,
    **sampling: Any,
) -> Completions:
  """Completions of `prompt_ids` by `role` (its sampler config and params, in its sampler plan's
  layout) in one `generate` call with at most `max_batch` rows in flight. `sampling`: generate's
  num_samples, seed, temperature, top_p and max_new_tokens; a completion's random stream depends
  only on (seed, prompt, sample, token)."""
  sampler_cfg, params = role.sampler_params()
  out = generate(
      sampler_cfg,
      params,
      list(prompt_ids),
      stop_token_ids=stop_ids,
      plan=role.sampler_plan,
      max_batch_size=max_batch,
      **sampling,
  )
  return Completions(tokens=out.tokens, logprobs=out.logprobs, finished=out.finished)


# Sampler-vs-trainer log-prob mismatch, per update (`mismatch_metrics`).
MISMATCH_METRICS = (
    "logprob_mismatch",
    "mismatch_kl",
    "mismatch_max_ratio",
    "mismatch_share_close",
)
MISMATCH_CLOSE = 1e-3  # |trainer - sampler| log-prob difference counted as close


@jax.jit
def _mismatch_sums(trainer: jax.Array, sampler: jax.Array, mask: jax.Array) -> jax.Array:
  """[sum abs(d), sum k3, max abs(d), count abs(d) <= MISMATCH_CLOSE, count] over the mask, with
  d = trainer - sampler per token (replicated scalars)."""
  mask = mask.astype(jnp.float32)
  diff = jnp.abs(trainer - sampler)
  k3 = kl_penalty(sampler, trainer, "k3")
  close = (diff <= MISMATCH_CLOSE).astype(jnp.float32)
  sums = [jnp.sum(x * mask) for x in (diff, k3, close, mask)]
  return jnp.stack([sums[0], sums[1], jnp.max(jnp.where(mask > 0, diff, 0.0)), *sums[2:]])


def mismatch_metrics(sums: Sequence[np.ndarray]) -> dict[str, float]:
  """`MISMATCH_METRICS` over all loss-masked tokens of an update from the `_mismatch_sums` of its
  mini-batches (d = trainer - sampler log-prob): logprob_mismatch = mean abs(d); mismatch_kl = mean
  k3 estimate exp(d) - d - 1 of KL(sampler || trainer) (veRL's mismatch_k3_kl); mismatch_max_ratio
  = max exp(abs(d)) (abs(d) clamped to 20); mismatch_share_close = share of tokens with abs(d) <= 1e-3.
  """
  total, k3, _, close, count = np.sum(sums, axis=0)
  count = max(count, 1.0)
  top = min(float(np.max([s[2] for s in sums])), LOG_RATIO_CLAMP)
  return {
      "logprob_mismatch": float(total / count),
      "mismatch_kl": float(k3 / count),
      "mismatch_max_ratio": float(np.exp(top)),
      "mismatch_share_close": float(close / count),
  }


def update(
    role: Role,
    seq_prompts: Sequence[Sequence[int]],
    out: Completions,
    advantages: np.ndarray,
    *,
    mini_batch_size: int,
    prompt_len: int,
    completion_len: int,
    pad_id: int,
    ref_params: Any = None,
    recompute_old_logprobs: bool = True,
) -> dict:
  """One policy update of `role` over a rollout step: sequence i is `seq_prompts[i]` followed by
  `out.tokens[i]` with advantage `advantages[i]`; consecutive mini-batches of `mini_batch_size`
  sequences, one optimizer step each. Returns the mean of the train-step metrics, the number of
  skipped steps and (with `recompute_old_logprobs`) the sampler-vs-trainer log-prob mismatch
  (`mismatch_metrics`). With `tis_cap` in the role's TrainConfig, the sampler's log-probs go to the
  train step as "sampler_logprobs" (truncated importance sampling), which needs the recomputation.
  """
  if role.train_cfg.tis_cap is not None and not recompute_old_logprobs:
    raise RunError(
        f"config.{role.name}.train.tis_cap needs config.recompute_old_logprobs=True: without it "
        "the old log-probs are the sampler's and there is no mismatch to correct."
    )
  batch = build_batch(
      seq_prompts,
      out.tokens,
      out.logprobs,
      np.asarray(advantages),
      prompt_len=prompt_len,
      completion_len=completion_len,
      pad_id=pad_id,
  )
  minis = []
  for mini in split_minibatches(batch, mini_batch_size):
    rows = multihost.process_rows(role.plan, len(mini["tokens"]))
    minis.append(multihost.host_to_global({k: v[rows] for k, v in mini.items()}, role.plan))
  mismatch = []
  for mini in minis:  # every old log-prob is taken before the first update changes the params
    if recompute_old_logprobs:
      recomputed = role.logprob_fn(role.params, mini["tokens"], mini["attention_mask"])
      mismatch.append(_mismatch_sums(recomputed, mini["old_logprobs"], mini["loss_mask"]))
      if role.train_cfg.tis_cap is not None:
        mini["sampler_logprobs"] = mini["old_logprobs"]
      mini["old_logprobs"] = recomputed
    if role.train_cfg.kl_coef:
      mini["ref_logprobs"] = role.logprob_fn(
          role.full(ref_params), mini["tokens"], mini["attention_mask"]
      )
  metrics: list[dict] = []
  for mini in minis:
    role.state, m = role.train_step(role.state, mini, role.base)
    metrics.append(m)
  metrics, mismatch = jax.device_get((metrics, mismatch))
  summary = {  # maxima ("*_max") over the mini-batches, means of the rest
      k: float((np.max if k.endswith("_max") else np.mean)([m[k] for m in metrics]))
      for k in metrics[0]
  }
  summary["skipped"] = float(np.sum([m["skipped"] for m in metrics]))
  if mismatch:
    summary.update(mismatch_metrics(mismatch))
  return summary


def timed(timing: dict[str, float], key: str, fn: Callable[[], Any]) -> Any:
  """Runs `fn` and adds its wall time to `timing[key]`."""
  t0 = time.perf_counter()
  result = fn()
  timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0
  return result
