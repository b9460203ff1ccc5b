"""Training configuration, the optimizer (AdamW with schedule and global-norm clipping) and TrainState."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from rzero_jax.models.config import ModelConfig, resolve_dtype
from rzero_jax.models.functional import Params, param_shapes, param_shardings, split_lora
from rzero_jax.sharding import ShardingPlan
from rzero_jax.training.grpo import AGGREGATIONS, KL_ESTIMATORS, check_tis_cap

SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Static hyperparameters of one role's GRPO step (hashable, so jit-static).

  Defaults are the R-Zero paper's: AdamW lr 1e-6, weight decay 1e-2, constant schedule, grad-norm
  clip 1.0, clip 0.2 / 0.28, k3 KL with coefficient 1e-2, token-mean aggregation.

  schedule: "constant" (after a linear warmup of `warmup_steps`), "cosine" or "linear" (warmup, then
    decay to `min_lr_ratio * learning_rate` at `total_steps`, which they require).
  max_grad_norm: global-norm clip; None disables it.
  micro_batch_size: sequences per micro-batch for gradient accumulation inside the step (the batch
    size must be a multiple); None = the whole batch at once.
  temperature: the sampler's temperature; log-probs for the ratio use softmax(logits / temperature).
  tis_cap: truncated importance sampling between the sampler's and the trainer's log-probs (batch
    key "sampler_logprobs"), each token's pg term weighted by min(pi_old / pi_sampler, tis_cap);
    None (default) = off, 2.0 is typical (`grpo.policy_loss`).
  param_dtype: dtype of the stored (master) weights, "float32" by default.
  compute_dtype: activation/matmul dtype, e.g. "bfloat16" with float32 master weights; None keeps
    the model config's `dtype`.
  """

  learning_rate: float = 1e-6
  weight_decay: float = 1e-2
  warmup_steps: int = 0
  schedule: str = "constant"
  total_steps: int = 0
  min_lr_ratio: float = 0.0
  max_grad_norm: float | None = 1.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_low: float = 0.2
  clip_high: float = 0.28
  dual_clip: float | None = None
  kl_coef: float = 1e-2
  kl_estimator: str = "k3"
  agg: str = "token-mean"
  entropy_coef: float = 0.0
  tis_cap: float | None = None
  micro_batch_size: int | None = None
  temperature: float = 1.0
  param_dtype: str = "float32"
  compute_dtype: str | None = None

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"Unknown schedule {self.schedule!r}: choose one of {SCHEDULES}.")
    if self.schedule != "constant" and self.total_steps <= self.warmup_steps:
      raise ValueError(
          f"schedule={self.schedule!r} decays until total_steps, which must exceed "
          f"warmup_steps ({self.warmup_steps}); got total_steps={self.total_steps}."
      )
    if self.kl_estimator not in KL_ESTIMATORS:
      raise ValueError(
          f"Unknown kl_estimator {self.kl_estimator!r}: choose one of {KL_ESTIMATORS}."
      )
    if self.agg not in AGGREGATIONS:
      raise ValueError(f"Unknown agg {self.agg!r}: choose one of {AGGREGATIONS}.")
    if self.dual_clip is not None and self.dual_clip <= 1.0:
      raise ValueError(f"dual_clip must be > 1 (e.g. 3.0) or None; got {self.dual_clip}.")
    check_tis_cap(self.tis_cap)
    if self.micro_batch_size is not None and self.micro_batch_size < 1:
      raise ValueError(f"micro_batch_size must be positive or None; got {self.micro_batch_size}.")
    if self.temperature <= 0:
      raise ValueError(
          f"temperature must be > 0 (the sampler's temperature); got {self.temperature}."
      )
    resolve_dtype(self.param_dtype)
    if self.compute_dtype is not None:
      resolve_dtype(self.compute_dtype)


def compute_config(model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelConfig:
  """The model config with the training compute dtype applied."""
  if train_cfg.compute_dtype is None:
    return model_cfg
  return dataclasses.replace(model_cfg, dtype=train_cfg.compute_dtype)


def make_schedule(train_cfg: TrainConfig) -> optax.Schedule:
  """Learning rate as a function of the number of applied updates."""
  lr, warmup = train_cfg.learning_rate, train_cfg.warmup_steps
  if train_cfg.schedule == "constant":
    if not warmup:
      return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
    )
  end = lr * train_cfg.min_lr_ratio
  if train_cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, train_cfg.total_steps, end)
  return optax.join_schedules(
      [
          optax.linear_schedule(0.0, lr, warmup),
          optax.linear_schedule(lr, end, train_cfg.total_steps - warmup),
      ],
      [warmup],
  )


def make_optimizer(train_cfg: TrainConfig) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (decoupled weight decay on every parameter, as torch AdamW)."""
  adamw = optax.adamw(
      make_schedule(train_cfg),
      b1=train_cfg.b1,
      b2=train_cfg.b2,
      eps=train_cfg.eps,
      weight_decay=train_cfg.weight_decay,
  )
  if train_cfg.max_grad_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(train_cfg.max_grad_norm), adamw)


@flax.struct.dataclass
class TrainState:
  """params (master weights), optimizer state, and `step` = number of updates applied so far
  (a skipped non-finite step does not count, so `step` always matches the optimizer's schedule)."""

  params: Params
  opt_state: optax.OptState
  step: jax.Array


def trainable(model_cfg: ModelConfig, tree: Params) -> Params:
  """The trained part of a params-shaped tree: the LoRA adapters when `model_cfg.lora_rank` > 0
  (the base stays frozen), else the whole tree (full fine-tuning)."""
  return split_lora(tree)[1] if model_cfg.lora_rank else split_lora(tree)[0]


def optimizer_state_shardings(
    optimizer: optax.GradientTransformation,
    params: Params,
    shardings: Params,
    mesh: jax.sharding.Mesh,
) -> Any:
  """Shardings of `optimizer`'s state for `params` (arrays or shapes): every leaf that mirrors a
  parameter (AdamW's moments) takes that parameter's sharding, everything else (counts) is
  replicated (`optax.tree_map_params`)."""
  replicated = NamedSharding(mesh, PartitionSpec())
  return optax.tree_map_params(
      optimizer,
      lambda _, sharding: sharding,
      jax.eval_shape(optimizer.init, params),
      shardings,
      transform_non_params=lambda _: replicated,
  )


def state_shardings(
    model_cfg: ModelConfig, train_cfg: TrainConfig, plan: ShardingPlan
) -> TrainState:
  """Shardings of a TrainState: the trained params (all, or the LoRA adapters) by their logical
  axes, optimizer moments like their params, counters replicated."""
  params = trainable(model_cfg, param_shardings(model_cfg, plan))
  shapes = jax.tree.map(
      lambda shape: jax.ShapeDtypeStruct(shape, resolve_dtype(train_cfg.param_dtype)),
      trainable(model_cfg, param_shapes(model_cfg)),
      is_leaf=lambda x: isinstance(x, tuple),
  )
  opt_state = optimizer_state_shardings(make_optimizer(train_cfg), shapes, params, plan.mesh)
  return TrainState(
      params=params, opt_state=opt_state, step=NamedSharding(plan.mesh, PartitionSpec())
  )


def warn_low_precision_master_weights(param_dtype: str, learning_rate: float) -> None:
  """Warns about 16-bit master weights: bfloat16 keeps 8 significant bits, so an update smaller
  than ~0.4% of a weight is rounded away, and AdamW steps are about `learning_rate` in size."""
  dtype = jnp.dtype(resolve_dtype(param_dtype))
  if dtype.itemsize < 4:
    warnings.warn(
        f"param_dtype={dtype.name}: master weights and AdamW state in {dtype.name} round away "
        f"updates below ~{2.0 ** -(jnp.finfo(dtype).nmant + 1):.1e} of a weight, so at "
        f"learning_rate={learning_rate:g} most updates are lost. Use param_dtype='float32' (the "
        "default) unless memory forces it.",
        RuntimeWarning,
        stacklevel=2,
    )


def init_train_state(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    params: Params,
    plan: ShardingPlan | None = None,
    *,
    donate: bool = False,
) -> TrainState:
  """A fresh TrainState over the trained params (the whole model, or with `model_cfg.lora_rank` > 0
  only the adapters `{"layers": {..._lora_a/b}}`, e.g. from `init_lora`; the frozen base is passed
  to the train step separately): params cast to `param_dtype` (float32 master weights by default) and, with
  a `plan`, placed by their logical axes; optimizer state (AdamW moments in `param_dtype` too) sharded
  like the params. `donate=True` lets the state reuse the buffers of `params` (which are then
  deleted), so no second copy of the weights is made."""
  warn_low_precision_master_weights(train_cfg.param_dtype, train_cfg.learning_rate)
  dtype = resolve_dtype(train_cfg.param_dtype)
  optimizer = make_optimizer(train_cfg)

  def init(params):
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    return TrainState(
        params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32)
    )

  out_shardings = None if plan is None else state_shardings(model_cfg, train_cfg, plan)
  return jax.jit(init, out_shardings=out_shardings, donate_argnums=(0,) if donate else ())(params)
