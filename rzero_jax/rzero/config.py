"""The R-Zero run configuration (ml_collections) with the paper's defaults.

Experiment files in `experiments/` start from `default_config()` and override fields; every field
can also be overridden on the command line as `--config.a.b=value`.
"""

from __future__ import annotations

import ml_collections

from rzero_jax.rzero import dataset, rewards
from rzero_jax.rzero.verifier import VERDICTS
from rzero_jax.selfplay import config as selfplay_config
from rzero_jax.selfplay.util import RunError


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale defaults (spec/rzero.md); `model_path` must be set by the experiment."""
  c = selfplay_config.run_config()
  c.iterations = 3
  c.checkpoint_every_steps = 5  # besides the end of every phase
  c.reward_variant = "paper"  # or "released" (the reference code's rewards)
  c.grade_timeout_s = 5.0
  c.wandb_project = ""  # also log metrics to this Weights & Biases project (optional)
  c.fresh_optimizer_each_phase = True  # AdamW state and schedule restart at every phase start (the
  # reference runs each phase as a new training job)

  c.challenger = selfplay_config.role_section(
      group_size=4,
      prompts_per_step=512,
      prompts_per_update=16,
      steps=5,
      votes=10,
      max_prompt_tokens=512,
      max_new_tokens=4096,
      temperature=1.0,
      top_p=0.99,
      tau=0.5,
      lam=1.0,
      repetition_denominator="well_formed",  # or "batch" (the reference: all rollouts)
      # Where the uncertainty reward peaks: 0.5 (the paper) rewards questions that split the
      # Solver's votes; e.g. 0.8 rewards questions its majority mostly agrees on, the ones
      # whose majority labels are right more often (a pseudo-label remedy, docs/rzero.md).
      reward_peak=0.5,
  )
  c.challenger.train = selfplay_config.train_section(micro_batch_size=8)
  c.challenger.lora = selfplay_config.lora_section()
  c.solver = selfplay_config.role_section(
      group_size=5,
      prompts_per_step=512,
      prompts_per_update=128,
      steps=15,
      max_prompt_tokens=2048,
      max_new_tokens=4096,
      temperature=1.0,
      top_p=0.99,
      # Scale each question's GRPO advantages by the confidence of its pseudo-label: "" (off,
      # the paper), "p_hat" (the label's share of the votes) or "verifier" (the Verifier's
      # mean P(right) of the label's voters; needs config.verifier.enabled). Scaling the
      # rewards instead would cancel in the group normalisation.
      confidence_weight="",
  )
  c.solver.train = selfplay_config.train_section(micro_batch_size=8)
  c.solver.lora = selfplay_config.lora_section()
  c.dataset = ml_collections.ConfigDict(
      dict(
          num_candidates=8000,
          votes=10,
          delta=0.25,
          temperature=1.0,
          top_p=0.99,
          filter="paper",  # or "released": 0.3 <= majority share of non-empty answers <= 0.8,
          # or "band": band_low <= p_hat <= band_high (an asymmetric band)
          band_low=0.25,
          band_high=0.75,
          min_margin=0.0,  # keep only when (largest - second largest cluster) / m >= this
          challenger_agreement=False,  # keep only labels equal to the Challenger's own answer
          save_all_votes=False,  # also write data/votes_iter_<i>.jsonl: every question's votes
          # The Solver also trains on the earlier iterations' kept questions (with the labels
          # they got then), not only this iteration's (a remedy, docs/rzero.md).
          replay=False,
      )
  )
  # The Verifier (issue 18): a third role from the same base judging the Solver's answers
  # (rzero_jax/rzero/verifier.py). Off by default: the paper has no Verifier.
  c.verifier = selfplay_config.role_section(
      enabled=False,
      steps=10,  # training steps per cross-fitting fold (2 folds per iteration)
      prompts_per_step=128,  # (question, answer) pairs per step, half right, half wrong
      prompts_per_update=64,
      group_size=2,  # both verdicts of a pair (fixed)
      max_prompt_tokens=6144,  # question + the Solver's working
      max_new_tokens=8,  # a verdict
      temperature=1.0,
      confident=0.8,  # p_hat at or above which the Solver's majority is the target
      relabel=True,  # label = the cluster with the largest sum of P(right)
      min_score=0.5,  # drop a kept question whose label's voters average P(right) below
      calibrate=True,  # the threshold is instead the midpoint between the mean P(right) of
      # held-out right and wrong targets (cross-fitting: each iteration the Verifier is trained
      # twice, each time on one half of the questions' targets, and is checked on and judges
      # the other half's)
      min_auc=0.0,  # judgements are used only when the Verifier's AUC on those held-out
      # targets reaches this (a label-free check of whether it can tell right from wrong)
  )
  c.verifier.train = selfplay_config.train_section(micro_batch_size=8)
  c.verifier.lora = selfplay_config.lora_section()
  c.eval = ml_collections.ConfigDict(
      dict(
          heldout="",  # "module:function" returning [(question, answer)], or
          heldout_jsonl="",  # a jsonl file of {"question", "answer"}
          oracle="",  # optional "module:function(question) -> answer | None" (true labels)
          max_new_tokens=4096,
          benchmarks="",  # e.g. "math500,gsm8k": rzero_jax.eval after each iteration (Solver)
          data_dir="",  # local benchmark files (else the Hugging Face hub)
          limit=0,
      )
  )  # first N items of each benchmark (0 = all)
  return c


def released_variant(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The reference code's choices where they differ from the paper (spec/rzero.md): its rewards
  (incl. the Solver's `<think>` + boxed format term), 9 dataset votes with its 0.3-0.8 filter over
  non-empty answers, and the repetition penalty over the whole rollout batch."""
  c.reward_variant = "released"
  c.dataset.votes = 9
  c.dataset.filter = "released"
  c.challenger.repetition_denominator = "batch"
  c.fresh_optimizer_each_phase = True
  return c


# Smallest allowed value of each role's counts; GRPO compares >= 2 samples per prompt.
ROLE_MINIMUMS = {
    "steps": 1,
    "prompts_per_step": 1,
    "prompts_per_update": 1,
    "group_size": 2,
    "votes": 1,
}
CONFIDENCE_WEIGHTS = ("", "p_hat", "verifier")


def verifier_enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run has a Verifier role (`config.verifier.enabled`; older configs: no)."""
  return "verifier" in config and bool(config.verifier.enabled)


def role_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The config sections of the trained roles, in checkpoint and export order."""
  return ("challenger", "solver") + (("verifier",) if verifier_enabled(config) else ())


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the batch arithmetic up front, so a bad config fails before any work is done."""
  for name in role_names(config):
    _validate_role(name, config[name])
  c = config.challenger
  selfplay_config.require_one_of(
      "config.challenger.repetition_denominator",
      c.repetition_denominator,
      rewards.REPETITION_DENOMINATORS,
  )
  selfplay_config.require_one_of(
      "config.dataset.filter", config.dataset.filter, dataset.DATASET_FILTERS
  )
  selfplay_config.require_one_of(
      "config.reward_variant", config.reward_variant, rewards.REWARD_VARIANTS
  )
  if not 0.0 < c.reward_peak < 1.0:
    raise RunError(f"config.challenger.reward_peak must be in (0, 1), got {c.reward_peak}.")
  d = config.dataset
  if not 0.0 <= d.get("band_low", 0.25) <= d.get("band_high", 0.75) <= 1.0:
    raise RunError(
        "config.dataset.band_low and band_high must satisfy 0 <= band_low <= band_high <= 1."
    )
  weight = config.solver.get("confidence_weight", "")
  selfplay_config.require_one_of("config.solver.confidence_weight", weight, CONFIDENCE_WEIGHTS)
  if weight == "verifier" and not verifier_enabled(config):
    raise RunError('config.solver.confidence_weight="verifier" needs config.verifier.enabled=True.')
  if verifier_enabled(config) and config.verifier.train.get("tis_cap") is not None:
    raise RunError(
        "config.verifier.train.tis_cap must be None: the Verifier's verdicts are not sampled, "
        "so there are no sampler log-probs to correct for."
    )
  if verifier_enabled(config) and config.verifier.group_size != len(VERDICTS):
    raise RunError(
        "config.verifier.group_size must be 2: a pair's group is its two verdicts, got "
        f"{config.verifier.group_size}."
    )
  selfplay_config.validate_benchmarks(config)
  if d.votes < 1 or d.num_candidates < 1:
    raise RunError("config.dataset.votes and config.dataset.num_candidates must be >= 1.")
  if config.iterations < 1 or config.checkpoint_every_steps < 1:
    raise RunError("config.iterations and config.checkpoint_every_steps must be >= 1.")


def _validate_role(name: str, role: ml_collections.ConfigDict) -> None:
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
        f"config.{name}.lora.rank must be >= 0 (0 = full fine-tuning), got {role.lora.rank}."
    )
  micro = role.train.micro_batch_size
  if micro and (role.prompts_per_update * role.group_size) % micro:
    raise RunError(
        f"config.{name}.train.micro_batch_size ({micro}) must divide the mini-batch of "
        f"prompts_per_update x group_size = "
        f"{role.prompts_per_update * role.group_size} sequences."
    )
