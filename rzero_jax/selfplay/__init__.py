"""What both self-play loops (R-Zero, Absolute Zero) share.

`roles`: a trained role (train state + compiled train step and log-prob function), batched
sampling, and the policy update from per-sequence advantages (GRPO groups or TRR++ baselines).
`runner`: the run directory (model, tokenizer, mesh, checkpoints with the loop position, metrics,
HF export, summary), deterministic seeds and one-line run errors.
"""

from rzero_jax.selfplay.roles import Completions, Role, make_role, sample, update
from rzero_jax.selfplay.runner import (RunError, Runner, derive_seed, resolve_callable)

__all__ = [
    "Completions",
    "Role",
    "make_role",
    "sample",
    "update",
    "RunError",
    "Runner",
    "derive_seed",
    "resolve_callable",
]
