"""The Absolute Zero run configuration (ml_collections) with the paper's defaults (spec/azr.md).

Experiment files start from `default_config()` and override fields; every field can also be
overridden on the command line as `--config.a.b=value`. `config.algorithm = "azr"` makes the
launcher run `rzero_jax.azr.loop`.
"""

from __future__ import annotations

import ml_collections


def _lora(**overrides) -> ml_collections.ConfigDict:
  """LoRA adapters of the actor (as R-Zero's `config.<role>.lora`): rank 0 = full fine-tuning (the
  paper's setting); with rank > 0 only adapters (scale alpha / rank) over the frozen base, loaded
  in the compute dtype, and their AdamW state are trained and checkpointed; exports merge them."""
  base = dict(rank=0, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
  base.update(overrides)
  return ml_collections.ConfigDict(base)


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale defaults; `model_path` must be set by the experiment."""
  c = ml_collections.ConfigDict()
  c.algorithm = "azr"
  c.model_path = ""  # local HF checkpoint directory of the base model
  c.base_model_builder = ""  # or "module:function", called with a cache dir, returns a path
  c.tokenizer_path = ""  # defaults to the model directory
  c.dtype = "bfloat16"  # compute dtype
  c.param_dtype = "float32"  # master weights and AdamW state
  c.seed = 0
  c.steps = 500  # training steps after seeding
  c.mesh = "data:-1"
  c.checkpoint_every_steps = 10
  c.export_hf = True  # write the model in HF format at the end
  c.reward_variant = "paper"  # or "released": -0.5 for valid proposals solved always/never
  c.max_sample_batch = 512  # rows in flight in the sampler (generate's max_batch_size)
  c.recompute_old_logprobs = True  # old policy = the training forward pass before the update

  # One model plays both roles with one train state; `prompts_per_step` prompts per (task type,
  # role) and step: 6 sub-batches, one policy update per step with TRR++ advantages.
  c.actor = ml_collections.ConfigDict(
      dict(
          strategy="fsdp",
          sampler_strategy="",  # decode layout of the bf16 sampler copy; "" = strategy
          prompts_per_step=64,
          updates_per_step=1,
          max_prompt_tokens=4096,
          max_new_tokens=4096,
          temperature=1.0,
          top_p=1.0,
      )
  )
  c.actor.train = ml_collections.ConfigDict(
      dict(
          learning_rate=1e-6,
          weight_decay=0.0,
          max_grad_norm=1.0,
          warmup_steps=0,
          schedule="constant",
          clip_low=0.2,
          clip_high=0.28,
          kl_coef=0.0,
          kl_estimator="k3",
          agg="token-mean",
          micro_batch_size=8,
          entropy_coef=0.0,
      )
  )
  c.actor.lora = _lora()

  c.tasks = ml_collections.ConfigDict(
      dict(
          prompts="rzero_jax.azr.tasks",  # module with proposer_messages / solver_messages
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
