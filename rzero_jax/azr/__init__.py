"""Absolute Zero (spec/azr.md): tasks, prompts, buffers, rewards and TRR++ advantages.

`tasks` (the three task types, response parsing, proposal validation and answer checks in the
sandboxed executor), `prompts` (the proposer's and solver's messages), `buffers` (per-type task
buffers), `rewards` (learnability and solver rewards) and `trr` (Task-Relative REINFORCE++
advantages).
"""

from rzero_jax.azr import buffers, prompts, rewards, tasks, trr

__all__ = ["buffers", "prompts", "rewards", "tasks", "trr"]
