"""The Absolute Zero prompts (spec/azr.md): the proposer's and the solver's chat messages.

`config.tasks.prompts` names a module with `proposer_messages` and `solver_messages` (this one by
default; a toy world brings its own, e.g. `experiments.toy_code.prompts`). Responses are
`<think>...</think><answer>...</answer>` with fenced blocks, parsed by `rzero_jax.azr.tasks`.
"""

from __future__ import annotations

from typing import Sequence

from rzero_jax.azr.tasks import NUM_INDUCTION_INPUTS, Task, Triplet, check_task_type

SYSTEM = (
    "You are an expert Python programmer. Reason step by step inside <think>...</think>, then "
    "give only your final response inside <answer>...</answer>. Inside the answer, put code and "
    "values in fenced blocks labelled as requested (for example ```python ... ```)."
)

_PROGRAM_RULES = """\
Requirements for the program:
- Define a function named `f` at the top level; helper functions, classes and constants are fine.
- `f` must return a value and do the same thing every time: no randomness, no clocks or dates,
  no reading or writing files, no network, no printing or input(), no processes or threads.
- Imports only from the standard library's computation modules (math, itertools, collections,
  functools, heapq, bisect, re, string and the like), at the top of the program.
- The return value must be a plain Python value (numbers, strings, booleans, None, and lists,
  tuples, dicts or sets of them), reasonably short.
Requirements for the input:
- Write it exactly as it would appear between the parentheses of `f(...)`: comma-separated
  Python literals, e.g. `[3, 1], 'ab'` for two arguments; `(1, 2)` is ONE tuple argument;
  `dict(a=1)`, `set()` and keyword arguments are allowed, variables and expressions are not."""

_PROPOSE_GOAL = {
    "deduction": (
        "Another model will be shown your program and input and must predict the "
        "output by reading the code, without running it. Make that take several careful "
        "steps of reasoning, but keep the task well defined."
    ),
    "abduction": (
        "Another model will be shown your program and its output and must find an "
        "input that produces that output. Make that take real reasoning about the code "
        "(for example, a transformation that has to be inverted), but keep it solvable."
    ),
}


def _fence(label: str, body: str) -> str:
  return f"```{label}\n{body}\n```"


def format_triplet(t: Triplet) -> str:
  """A reference task as shown in proposer prompts."""
  return "\n".join(
      [_fence("python", t.program), _fence("input", t.inputs), _fence("output", t.output)]
  )


def _messages(user: str) -> list[dict[str, str]]:
  return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def proposer_messages(
    task_type: str,
    references: Sequence[Triplet] = (),
    program: str | None = None,
    num_inputs: int = NUM_INDUCTION_INPUTS,
) -> list[dict[str, str]]:
  """The proposer's chat prompt: deduction/abduction from reference triplets (K of the type's
  buffer); induction for a given `program` (sampled from the buffers)."""
  check_task_type(task_type)
  if task_type == "induction":
    if program is None:
      raise ValueError("An induction proposal needs the program to write inputs for.")
    return _messages(
        f"Here is a Python function:\n{_fence('python', program)}\n"
        f"Write {num_inputs} different inputs for `f` that together reveal what it does, and a "
        "short message that hints at its behaviour without giving the code away. Another model "
        "will see some of the inputs with their outputs plus your message, must write `f` "
        "itself, and is checked on the inputs it did not see.\n"
        "Each input is written exactly as between the parentheses of `f(...)`: Python literals "
        "separated by commas (`(1, 2)` is one tuple argument); no variables or expressions. "
        "Every input must run without error and give a short plain value.\n"
        f"Answer with {num_inputs} blocks ```input ... ```, one input each, and one block "
        "```message ... ```."
    )
  examples = "\n\n".join(f"Example {i + 1}:\n{format_triplet(t)}" for i, t in enumerate(references))
  shown = (
      f"Earlier tasks (write something different from them):\n\n{examples}\n\n" if examples else ""
  )
  return _messages(
      f"Create a new Python programming task: a program and one input for it. "
      f"{_PROPOSE_GOAL[task_type]}\n{_PROGRAM_RULES}\n\n{shown}"
      "Answer with one block ```python ... ``` holding the program and one block "
      "```input ... ``` holding the input."
  )


def solver_messages(task_type: str, task: Task) -> list[dict[str, str]]:
  """The solver's chat prompt for one task of `task_type`."""
  check_task_type(task_type)
  if task_type == "deduction":
    return _messages(
        f"What does this program return?\n{_fence('python', task.program)}\n"
        f"It is called as `f(...)` with this between the parentheses:\n"
        f"{_fence('input', task.inputs)}\n"
        "Give the return value as a Python literal in one block ```output ... ```."
    )
  if task_type == "abduction":
    return _messages(
        f"Find an input for which this program returns the given output.\n"
        f"{_fence('python', task.program)}\nOutput:\n{_fence('output', task.output)}\n"
        "Give the input exactly as it would appear between the parentheses of `f(...)` (Python "
        "literals separated by commas; `(1, 2)` is one tuple argument) in one block "
        "```input ... ```."
    )
  pairs = "\n\n".join(
      f"Input:\n{_fence('input', i)}\nOutput:\n{_fence('output', o)}" for i, o in task.shown
  )
  return _messages(
      f"Write a Python function `f` that maps each input below to its output (the input is what "
      f"goes between the parentheses of `f(...)`). It will also be checked on other inputs.\n\n"
      f"{pairs}\n\nMessage from the task's author:\n{task.message}\n\n"
      "Give the complete program, defining `f` and using only the standard library, in one "
      "block ```python ... ```."
  )
