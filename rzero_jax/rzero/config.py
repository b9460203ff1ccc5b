"""The R-Zero run configuration (ml_collections) with the paper's defaults.

Experiment files in `experiments/` start from `default_config()` and override fields; every field
can also be overridden on the command line as `--config.a.b=value`.
"""

from __future__ import annotations

import ml_collections


def _train(**overrides) -> ml_collections.ConfigDict:
  """Optimizer and GRPO loss settings of one role (fields of `rzero_jax.training.TrainConfig`)."""
  base = dict(
      learning_rate=1e-6,
      weight_decay=1e-2,
      max_grad_norm=1.0,
      warmup_steps=0,
      schedule="constant",
      clip_low=0.2,
      clip_high=0.28,
      kl_coef=1e-2,
      kl_estimator="k3",
      agg="token-mean",
      micro_batch_size=8,
  )
  base.update(overrides)
  return ml_collections.ConfigDict(base)


def _lora(**overrides) -> ml_collections.ConfigDict:
  """LoRA adapters of one role: rank 0 = full fine-tuning (the paper's setting); with rank > 0 both
  roles share one frozen base and only adapters (scale alpha / rank) and their AdamW state are
  trained and checkpointed; exports merge them."""
  base = dict(rank=0, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
  base.update(overrides)
  return ml_collections.ConfigDict(base)


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale defaults (spec/rzero.md); `model_path` must be set by the experiment."""
  c = ml_collections.ConfigDict()
  c.model_path = ""  # local HF checkpoint directory of the base model
  c.base_model_builder = ""  # or "module:function", called with a cache dir, returns a path
  c.tokenizer_path = ""  # defaults to the model directory
  c.dtype = "bfloat16"  # compute dtype
  c.param_dtype = "float32"  # master weights and AdamW state (bfloat16 loses lr-1e-6 updates)
  c.seed = 0
  c.iterations = 3
  c.mesh = "data:-1"
  c.checkpoint_every_steps = 5  # besides the end of every phase
  c.export_hf = True  # write both roles in HF format after every iteration
  c.reward_variant = "paper"  # or "released" (the reference code's rewards)
  c.grade_timeout_s = 5.0
  c.wandb_project = ""  # also log metrics to this Weights & Biases project (optional)
  c.max_sample_batch = 512  # rows in flight in the sampler (generate's max_batch_size)
  c.recompute_old_logprobs = True  # old policy = the training forward pass before the update (as
  # veRL), not the sampler's log-probs (logged as logprob_mismatch)
  c.fresh_optimizer_each_phase = True  # AdamW state and schedule restart at every phase start (the
  # reference runs each phase as a new training job)

  c.challenger = ml_collections.ConfigDict(
      dict(
          strategy="fsdp",
          sampler_strategy="",  # decode layout of the bf16 sampler copy; "" = strategy
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
          # whose majority labels are right more often (a pseudo-label remedy, README).
          reward_peak=0.5,
      )
  )
  c.challenger.train = _train()
  c.challenger.lora = _lora()
  c.solver = ml_collections.ConfigDict(
      dict(
          strategy="fsdp",
          sampler_strategy="",  # decode layout of the bf16 sampler copy; "" = strategy
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
  )
  c.solver.train = _train()
  c.solver.lora = _lora()
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
          # they got then), not only this iteration's (a remedy, README "Pseudo-label quality").
          replay=False,
      )
  )
  # The Verifier (issue 18): a third role from the same base judging the Solver's answers
  # (rzero_jax/rzero/verifier.py). Off by default: the paper has no Verifier.
  c.verifier = ml_collections.ConfigDict(
      dict(
          enabled=False,
          strategy="fsdp",
          sampler_strategy="",  # decode layout of the bf16 sampler copy; "" = strategy
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
  )
  c.verifier.train = _train()
  c.verifier.lora = _lora()
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
