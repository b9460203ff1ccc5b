"""Short prompts for the toy program world (same functions and signatures as
`rzero_jax.azr.prompts.proposer_messages` / `solver_messages`, selected by
`config.tasks.prompts = "experiments.toy_code.prompts"`). The response format is the project's:
`<think>...</think><answer>` fenced blocks `</answer>`, parsed by `rzero_jax.azr.tasks`."""

from __future__ import annotations

from typing import Sequence

from rzero_jax.azr.tasks import Task, Triplet, check_task_type


def _fence(label: str, body: str) -> str:
  return f"```{label}\n{body}\n```"


def _user(text: str) -> list[dict[str, str]]:
  return [{"role": "user", "content": text}]


def proposer_messages(
    task_type: str,
    references: Sequence[Triplet] = (),
    program: str | None = None,
    num_inputs: int = 4,
) -> list[dict[str, str]]:
  check_task_type(task_type)
  if task_type == "induction":
    if program is None:
      raise ValueError("An induction proposal needs the program to write inputs for.")
    return _user(f"Write {num_inputs} inputs and a message.\n{_fence('python', program)}")
  refs = "\n".join(
      f"{_fence('python', t.program)}\n{_fence('input', t.inputs)}" for t in references
  )
  return _user(f"New {task_type} task.\n{refs}")


def solver_messages(task_type: str, task: Task) -> list[dict[str, str]]:
  check_task_type(task_type)
  if task_type == "deduction":
    return _user(f"Output?\n{_fence('python', task.program)}\n{_fence('input', task.inputs)}")
  if task_type == "abduction":
    return _user(f"Input?\n{_fence('python', task.program)}\n{_fence('output', task.output)}")
  pairs = "\n".join(f"{_fence('input', i)}\n{_fence('output', o)}" for i, o in task.shown)
  return _user(f"Program?\n{pairs}\n{_fence('message', task.message)}")
