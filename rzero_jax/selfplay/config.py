"""The config sections every self-play role has (ml_collections), one copy for both algorithms.

`config.<role>.train` holds fields of `rzero_jax.training.TrainConfig` (their defaults are
TrainConfig's; an algorithm states where it differs), `config.<role>.lora` the role's adapters.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from rzero_jax.selfplay.util import RunError
from rzero_jax.training import TrainConfig

# The TrainConfig fields a role's `train` section lists, in the order it lists them.
TRAIN_FIELDS = (
    "learning_rate",
    "weight_decay",
    "max_grad_norm",
    "warmup_steps",
    "schedule",
    "clip_low",
    "clip_high",
    "kl_coef",
    "kl_estimator",
    "agg",
    "tis_cap",
    "micro_batch_size",
)
# Listed fields whose default is None: a typed placeholder keeps them settable by a command-line
# override (`--config.solver.train.tis_cap=2.0`; a plain None field is not).
OPTIONAL_FLOATS = ("tis_cap",)


def run_config(**overrides) -> ml_collections.ConfigDict:
  """The run-level fields both algorithms share (model, dtypes, seed, mesh, sampler, export), then
  `overrides`; each algorithm's `default_config` adds its own fields after them."""
  c = ml_collections.ConfigDict()
  c.model_path = ""  # local HF checkpoint directory of the base model
  c.base_model_builder = ""  # or "module:function", called with a cache dir, returns a path
  c.tokenizer_path = ""  # defaults to the model directory
  c.dtype = "bfloat16"  # compute dtype
  c.param_dtype = "float32"  # master weights and AdamW state (bfloat16 loses lr-1e-6 updates)
  c.seed = 0
  c.mesh = "data:-1"
  c.export_hf = True  # write the trained roles in HF format (R-Zero: every iteration; AZR: end)
  c.max_sample_batch = 512  # rows in flight in the sampler (generate's max_batch_size)
  c.recompute_old_logprobs = True  # old policy = the training forward pass before the update (as
  # veRL), not the sampler's log-probs (the difference is logged: logprob_mismatch, mismatch_*)
  c.update(overrides)
  return c


def role_section(**fields) -> ml_collections.ConfigDict:
  """A trained role's settings: its training layout (`strategy`), the decode layout of its bf16
  sampler copy (`sampler_strategy`, "" = strategy), `batch_invariant` (the model's bitwise
  on-policy mode for this role: sampler and trainer log-probs equal bit for bit; slower, see
  docs/numerics.md), then the algorithm's `fields`."""
  return ml_collections.ConfigDict(
      dict(strategy="fsdp", sampler_strategy="", batch_invariant=False, **fields)
  )


def train_section(**overrides) -> ml_collections.ConfigDict:
  """A role's optimizer and GRPO loss settings: `TRAIN_FIELDS` at TrainConfig's defaults, then
  `overrides` (which may add other TrainConfig fields, e.g. `entropy_coef`)."""
  defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
  unknown = set(overrides) - set(defaults)
  if unknown:
    raise ValueError(f"Not TrainConfig fields: {sorted(unknown)}.")
  section = {
      name: config_dict.placeholder(float) if name in OPTIONAL_FLOATS else defaults[name]
      for name in TRAIN_FIELDS
  }
  section.update(overrides)
  return ml_collections.ConfigDict(section)


def lora_section(**overrides) -> ml_collections.ConfigDict:
  """A role's LoRA adapters: rank 0 = full fine-tuning (the papers' setting); with rank > 0 only
  adapters (scale alpha / rank) over the frozen base, loaded in the compute dtype, and their AdamW
  state are trained and checkpointed; exports merge them."""
  section = dict(rank=0, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
  section.update(overrides)
  return ml_collections.ConfigDict(section)


def require_one_of(name: str, value: object, choices: tuple) -> None:
  """Fails (one line) unless `value` of config field `name` is one of `choices`."""
  if value not in choices:
    raise RunError(f"{name} must be one of {choices}, got {value!r}.")


def benchmark_names(config: ml_collections.ConfigDict) -> list[str]:
  """The names in `config.eval.benchmarks` ("math500,gsm8k"; empty or missing: none)."""
  return [n.strip() for n in config.eval.get("benchmarks", "").split(",") if n.strip()]


def validate_benchmarks(config: ml_collections.ConfigDict) -> None:
  """Fails up front (one line) on an unknown name in `config.eval.benchmarks`."""
  from rzero_jax.eval import BenchmarkError, resolve

  for name in benchmark_names(config):
    try:
      resolve(name)
    except BenchmarkError as e:
      raise RunError(f"config.eval.benchmarks: {e}") from e
