"""The Absolute Zero run configuration (ml_collections) with the paper's defaults (spec/azr.md).

Experiment files start from `default_config()` and override fields; every field can also be
overridden on the command line as `--config.a.b=value`. `config.algorithm = "azr"` makes the
launcher run `rzero_jax.azr.loop`.
"""

from __future__ import annotations

import ml_collections

from rzero_jax.azr.rewards import REWARD_VARIANTS
from rzero_jax.azr.tasks import ROLES, TASK_TYPES
from rzero_jax.selfplay import config as selfplay_config
from rzero_jax.selfplay.util import RunError


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale defaults; `model_path` must be set by the experiment."""
  c = selfplay_config.run_config()
  c.algorithm = "azr"
  c.steps = 500  # training steps after seeding
  c.checkpoint_every_steps = 10
  c.reward_variant = "paper"  # or "released": -0.5 for valid proposals solved always/never

  # One model plays both roles with one train state; `prompts_per_step` prompts per (task type,
  # role) and step: 6 sub-batches, one policy update per step with TRR++ advantages.
  c.actor = selfplay_config.role_section(
      prompts_per_step=64,
      updates_per_step=1,
      max_prompt_tokens=4096,
      max_new_tokens=4096,
      temperature=1.0,
      top_p=1.0,
  )
  # The paper's optimizer: no weight decay and no KL term (R-Zero's roles keep TrainConfig's).
  c.actor.train = selfplay_config.train_section(
      weight_decay=0.0, kl_coef=0.0, micro_batch_size=8, entropy_coef=0.0
  )
  # LoRA adapters of the actor (as R-Zero's `config.<role>.lora`): rank 0 = full fine-tuning.
  c.actor.lora = selfplay_config.lora_section()

  c.tasks = ml_collections.ConfigDict(
      dict(
          prompts="rzero_jax.azr.prompts",  # module with proposer_messages / solver_messages
          references=6,  # K reference triplets in a proposer prompt
          learnability_rollouts=8,  # n solver rollouts per valid proposal
          induction_inputs=10,  # inputs per induction proposal (half shown, half hidden)
          buffer_cap=16384,
          seed_tasks="",  # "" = the identity triplet in every buffer (the spec), or
          # "module:function" -> {task type: [tasks]} to start from
          seed_buffer_size=256,  # seeding: propose without updates until each buffer holds this
          max_seeding_rounds=64,  # ...or this many rounds have run
          timeout_s=2.0,  # executor time limit per program run
          executor_workers=4,
      )
  )

  c.eval = ml_collections.ConfigDict(
      dict(
          heldout="",  # "module:function" -> {"deduction": [task dicts], "abduction": .., ..}
          every_steps=0,  # held-out evaluation every N steps (0: only at the start and the end)
          max_new_tokens=4096,
          benchmarks="",  # e.g. "humaneval_plus,mbpp_plus,cruxeval_o": rzero_jax.eval at the
          data_dir="",  # same points (local benchmark files, else the Hugging Face hub)
          limit=0,
      )
  )  # first N items of each benchmark (0 = all)
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks counts and the batch arithmetic up front: a bad config fails before any work."""
  selfplay_config.validate_benchmarks(config)
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
  selfplay_config.require_one_of("config.reward_variant", config.reward_variant, REWARD_VARIANTS)
  if t.timeout_s <= 0:
    raise RunError(f"config.tasks.timeout_s must be > 0, got {t.timeout_s}.")
