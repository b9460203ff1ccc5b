"""Absolute Zero (spec/azr.md): tasks and prompts, buffers, rewards and TRR++ advantages.

`tasks` (the three task types, prompts, parsing, proposal validation and answer checks in the
sandboxed executor), `buffers` (per-type task buffers), `rewards` (learnability and solver
rewards) and `trr` (Task-Relative REINFORCE++ advantages).
"""

from rzero_jax.azr import buffers, rewards, tasks, trr

__all__ = ["buffers", "rewards", "tasks", "trr"]
