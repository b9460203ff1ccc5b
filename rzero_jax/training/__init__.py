"""GRPO math, the train state and optimizer, log-probabilities, and the per-role jitted train step."""

from rzero_jax.training.grpo import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    group_advantages,
    kl_penalty,
    loss_denominators,
    policy_loss,
)
from rzero_jax.training.logprobs import (
    entropy_from_logits,
    logprobs_from_logits,
    make_logprob_fn,
    token_logprobs,
)
from rzero_jax.training.train_state import (
    TrainConfig,
    TrainState,
    init_train_state,
    make_optimizer,
    make_schedule,
    state_shardings,
)
from rzero_jax.training.train_step import compute_grads, make_train_step
from rzero_jax.training.sft import make_sft_batch, make_sft_step

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "group_advantages",
    "kl_penalty",
    "loss_denominators",
    "policy_loss",
    "entropy_from_logits",
    "logprobs_from_logits",
    "make_logprob_fn",
    "token_logprobs",
    "TrainConfig",
    "TrainState",
    "init_train_state",
    "make_optimizer",
    "make_schedule",
    "state_shardings",
    "compute_grads",
    "make_train_step",
    "make_sft_batch",
    "make_sft_step",
]
