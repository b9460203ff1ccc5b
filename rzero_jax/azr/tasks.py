"""Absolute Zero tasks: the three types, response parsing, proposal validation and answer checks.

A task is a program `f`, an input (the text inside `f(...)`, see `rzero_jax.verify.executor`)
and the output `repr(f(<input>))`:
* deduction: the solver sees program and input and predicts the output;
* abduction: the solver sees program and output and gives any input that yields it;
* induction: the solver sees some (input, output) pairs and a message and writes `f`, which must
  reproduce the hidden pairs.
Responses are `<think>...</think><answer>...</answer>`; the answer holds fenced blocks
(```python, ```input, ```output, ```message). Programs run only in the sandboxed executor;
outputs are compared in this process on parsed values (`same_output`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from rzero_jax.verify.executor import (
    ExecResult,
    Executor,
    canonical_inputs,
    check_program,
    same_output,
)

TASK_TYPES = ("deduction", "abduction", "induction")
ROLES = ("propose", "solve")
IDENTITY_PROGRAM = "def f(a):\n    return a"
IDENTITY_INPUT = '"Hello world"'
MAX_INPUT_CHARS = 1000
MAX_OUTPUT_CHARS = 2000
MAX_MESSAGE_CHARS = 1000
NUM_INDUCTION_INPUTS = 10
TIMEOUT_S = 2.0


def check_task_type(task_type: str) -> None:
  if task_type not in TASK_TYPES:
    raise ValueError(f"Unknown task type {task_type!r}: use one of {', '.join(TASK_TYPES)}.")


@dataclasses.dataclass(frozen=True)
class Triplet:
  """A validated (program, input, output) task of the deduction or abduction buffer."""

  program: str
  inputs: str
  output: str


@dataclasses.dataclass(frozen=True)
class InductionTask:
  """A validated induction task: a program, its message and (input, output) pairs; the first
  half of the pairs is shown to the solver and the rest is hidden (a single pair is both)."""

  program: str
  message: str
  pairs: tuple[tuple[str, str], ...]

  @property
  def shown(self) -> tuple[tuple[str, str], ...]:
    return self.pairs[: max(1, len(self.pairs) // 2)]

  @property
  def hidden(self) -> tuple[tuple[str, str], ...]:
    return self.pairs[len(self.pairs) // 2 :]


Task = Triplet | InductionTask


def identity_triplet() -> Triplet:
  """The seed of every buffer: `def f(a): return a` on "Hello world"."""
  return Triplet(IDENTITY_PROGRAM, IDENTITY_INPUT, repr("Hello world"))


def identity_task(task_type: str) -> Task:
  """The identity seed in the form of `task_type`'s buffer."""
  check_task_type(task_type)
  seed = identity_triplet()
  if task_type == "induction":
    return InductionTask(
        seed.program, "The function returns its argument unchanged.", ((seed.inputs, seed.output),)
    )
  return seed


# ------------------------------------------------------------------------------------ parsing

_ANSWER_RE = re.compile(
    r"\A\s*(?:<think>)?(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)" r"</answer>\s*\Z",
    re.DOTALL,
)
_LOOSE_ANSWER_RE = re.compile(r"\A(?P<think>.*?)<answer>(?P<answer>.*?)</answer>\s*\Z", re.DOTALL)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z_]*)[ \t]*\n(.*?)```", re.DOTALL)
_LABELS = {
    "python": "python",
    "py": "python",
    "input": "input",
    "output": "output",
    "message": "message",
}


@dataclasses.dataclass(frozen=True)
class Proposal:
  """A parsed proposal: deduction/abduction fill program and inputs; induction fills inputs
  (a list) and message."""

  program: str | None = None
  inputs: tuple[str, ...] = ()
  message: str | None = None


def extract_answer(response: str, *, require_think: bool = True) -> str | None:
  """The text inside the single `<answer>...</answer>` that ends `response`, or None.

  With `require_think`, the answer must follow a single `</think>` (the opening `<think>` may
  be part of the prompt; when present it must open the response). Only whitespace may follow
  `</answer>`.
  """
  if not isinstance(response, str):
    return None
  if response.count("<answer>") != 1 or response.count("</answer>") != 1:
    return None
  if not require_think:
    match = _LOOSE_ANSWER_RE.match(response)
    return None if match is None else match["answer"]
  if response.count("</think>") != 1 or response.count("<think>") > 1:
    return None
  match = _ANSWER_RE.match(response)
  if match is None or "<think>" in match["think"]:
    return None
  return match["answer"]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
  """(label, body) of each fenced block of `text`; labels normalised (py -> python), bodies
  without their last newline."""
  blocks = []
  for label, body in _FENCE_RE.findall(text):
    body = body[:-1] if body.endswith("\n") else body
    blocks.append((_LABELS.get(label.lower(), label.lower()), body))
  return blocks


def _blocks_of(answer: str | None, label: str) -> list[str]:
  if answer is None:
    return []
  return [body for found, body in fenced_blocks(answer) if found == label]


def _single(answer: str | None, label: str) -> str | None:
  blocks = _blocks_of(answer, label)
  if len(blocks) != 1 or not blocks[0].strip():
    return None
  return blocks[0]


def parse_proposal(task_type: str, response: str, *, require_think: bool = True) -> Proposal | None:
  """The proposal in `response`, or None when malformed.

  deduction/abduction: exactly one ```python and one ```input block. induction: one or more
  ```input blocks and exactly one ```message block.
  """
  check_task_type(task_type)
  answer = extract_answer(response, require_think=require_think)
  if answer is None:
    return None
  if task_type == "induction":
    inputs = [b.strip() for b in _blocks_of(answer, "input")]
    message = _single(answer, "message")
    if not inputs or message is None or len(message.strip()) > MAX_MESSAGE_CHARS:
      return None
    return Proposal(inputs=tuple(inputs), message=message.strip())
  program, inputs = _single(answer, "python"), _single(answer, "input")
  if program is None or inputs is None:
    return None
  return Proposal(program=program, inputs=(inputs.strip(),))


_SOLUTION_LABEL = {"deduction": "output", "abduction": "input", "induction": "python"}


def parse_solution(task_type: str, response: str, *, require_think: bool = True) -> str | None:
  """The solver's answer (deduction: an output; abduction: an input; induction: a program) from
  its single fenced block, or None when the response is malformed."""
  check_task_type(task_type)
  answer = extract_answer(response, require_think=require_think)
  block = _single(answer, _SOLUTION_LABEL[task_type])
  if block is None:
    return None
  return block if task_type == "induction" else block.strip()


# ------------------------------------------------------------------------------------ validation


@dataclasses.dataclass(frozen=True)
class Validation:
  """Whether a proposal is valid; `task` is the buffer entry, `reason` why it is not."""

  valid: bool
  task: Task | None = None
  reason: str | None = None


def _accept(result: ExecResult, max_output_chars: int) -> str | None:
  """None when a validation run may enter a buffer, else the reason."""
  if not result.ok:
    return f"{result.status}: {result.error}"
  if len(result.output) > max_output_chars:
    return f"output has {len(result.output)} characters (limit {max_output_chars})"
  return None


def _static_reason(program: str, inputs: Sequence[str]) -> str | None:
  problem = check_program(program, deterministic=True)
  if problem is not None:
    return f"rejected: {problem}"
  for text in inputs:
    if len(text) > MAX_INPUT_CHARS:
      return f"input has {len(text)} characters (limit {MAX_INPUT_CHARS})"
  return None


def validate_triplets(
    proposals: Sequence[tuple[str, str]],
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> list[Validation]:
  """Validates deduction/abduction proposals (program, input): the program parses, defines
  `f`, passes the policy (no randomness, clocks, I/O), runs within `timeout_s`, gives the same
  output value in separate processes under each of the executor's hash seeds (so not one that
  depends on `hash` of strings, set order or object addresses), and its output is a literal of
  bounded size. The task's output is the one that grading reproduces (the first hash seed's)."""
  results: list[Validation | None] = [None] * len(proposals)
  jobs, where = [], []
  for k, (program, inputs) in enumerate(proposals):
    reason = _static_reason(program, [inputs])
    if reason is not None:
      results[k] = Validation(False, reason=reason)
    else:
      jobs.append((program, inputs))
      where.append(k)
  for k, (program, inputs), run in zip(
      where, jobs, executor.validate_many(jobs, timeout_s=timeout_s)
  ):
    reason = _accept(run, max_output_chars)
    results[k] = (
        Validation(True, Triplet(program, inputs, run.output))
        if reason is None
        else Validation(False, reason=reason)
    )
  return results


def validate_triplet(program: str, inputs: str, executor: Executor, **kwargs) -> Validation:
  """`validate_triplets` for one proposal."""
  return validate_triplets([(program, inputs)], executor, **kwargs)[0]


def validate_induction(
    program: str,
    inputs: Sequence[str],
    message: str,
    executor: Executor,
    *,
    num_inputs: int = NUM_INDUCTION_INPUTS,
    timeout_s: float = TIMEOUT_S,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> Validation:
  """Validates an induction proposal for `program`: a non-empty message of bounded size and at
  least `num_inputs` distinct inputs on which the program is valid (as in `validate_triplets`);
  the task keeps the first `num_inputs` of them, in order. Inputs are distinct when their
  values are (`canonical_inputs`: `[1,2]` and `[1, 2]`, `(3)` and `3`, `1` and `1.0` are one
  input, written as it first appears), so that no hidden pair repeats a shown one. Only the
  first `2 * num_inputs` distinct inputs are run."""
  if not isinstance(num_inputs, int) or num_inputs < 1:
    raise ValueError(f"num_inputs must be an int >= 1, got {num_inputs!r}.")
  if not isinstance(message, str) or not message.strip():
    return Validation(False, reason="empty message")
  if len(message) > MAX_MESSAGE_CHARS:
    return Validation(
        False, reason=f"message has {len(message)} characters " f"(limit {MAX_MESSAGE_CHARS})"
    )
  distinct, seen = [], set()
  for text in inputs:
    key = _value_key(text.strip())
    if key not in seen:
      seen.add(key)
      distinct.append(text.strip())
  if len(distinct) < num_inputs:
    return Validation(False, reason=f"{len(distinct)} distinct inputs (need {num_inputs})")
  checks = validate_triplets(
      [(program, text) for text in distinct[: 2 * num_inputs]],
      executor,
      timeout_s=timeout_s,
      max_output_chars=max_output_chars,
  )
  pairs = [(c.task.inputs, c.task.output) for c in checks if c.valid]
  if len(pairs) < num_inputs:
    reasons = [c.reason for c in checks if not c.valid]
    return Validation(
        False,
        reason=f"{len(pairs)} valid inputs (need {num_inputs}); " f"first problem: {reasons[0]}",
    )
  return Validation(True, InductionTask(program, message.strip(), tuple(pairs[:num_inputs])))


def validate_proposals(
    proposals: Sequence[dict | None],
    executor: Executor,
    *,
    num_inputs: int = NUM_INDUCTION_INPUTS,
    timeout_s: float = TIMEOUT_S,
) -> list[Task | None]:
  """The buffer entry of each parsed proposal (a dict of "type", "program", "inputs" and
  "message"; None for a malformed one), or None where it is invalid: the deduction/abduction
  proposals validated in one batch (`validate_triplets`), then the induction ones
  (`validate_induction`)."""
  results: list[Task | None] = [None] * len(proposals)
  triplets = [(k, p) for k, p in enumerate(proposals) if p is not None and p["type"] != "induction"]
  checks = validate_triplets(
      [(p["program"], p["inputs"][0]) for _, p in triplets], executor, timeout_s=timeout_s
  )
  for (k, _), v in zip(triplets, checks):
    results[k] = v.task if v.valid else None
  for k, p in enumerate(proposals):
    if p is not None and p["type"] == "induction":
      v = validate_induction(
          p["program"],
          p["inputs"],
          p["message"],
          executor,
          num_inputs=num_inputs,
          timeout_s=timeout_s,
      )
      results[k] = v.task if v.valid else None
  return results


def _value_key(text: str) -> tuple[str, str]:
  """Equal for two inputs with equal argument values; an input that is not acceptable (it fails
  validation anyway) is only equal to the same text."""
  if len(text) <= MAX_INPUT_CHARS:
    try:
      return ("value", canonical_inputs(text))
    except (ValueError, TypeError, RecursionError):
      pass
  return ("text", text)


# ------------------------------------------------------------------------------------ checks


def check_deduction_outputs(items: Sequence[tuple[str, str | None]]) -> list[bool]:
  """Deduction grading without running anything: whether each predicted output (a literal's
  text, or None) equals the task's output, as stored by validation (`Triplet.output`,
  which the program gave under the executor's grading hash seed); compared as parsed values
  (`same_output`)."""
  return [isinstance(pred, str) and same_output(output, pred) for output, pred in items]


def check_deductions(
    items: Sequence[tuple[str, str, str | None]],
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> list[bool]:
  """`check_deduction` for many (program, inputs, predicted_output), in one executor batch.
  Tasks that came through validation hold their output: `check_deduction_outputs` grades
  against it without a run."""
  runs = executor.run_many([(p, i) for p, i, _ in items], timeout_s=timeout_s)
  return [
      run.ok and isinstance(pred, str) and same_output(run.output, pred)
      for (_, _, pred), run in zip(items, runs)
  ]


def check_deduction(
    program: str,
    inputs: str,
    predicted_output: str | None,
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> bool:
  """Whether `predicted_output` (a literal's text) equals the value `f(<inputs>)` returns."""
  return check_deductions([(program, inputs, predicted_output)], executor, timeout_s=timeout_s)[0]


def check_abductions(
    items: Sequence[tuple[str, str, str | None]],
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> list[bool]:
  """`check_abduction` for many (program, output, predicted_inputs), in one executor batch."""
  usable = [k for k, (_, _, pred) in enumerate(items) if isinstance(pred, str)]
  runs = executor.run_many([(items[k][0], items[k][2]) for k in usable], timeout_s=timeout_s)
  correct = [False] * len(items)
  for k, run in zip(usable, runs):
    correct[k] = run.ok and same_output(run.output, items[k][1])
  return correct


def check_abduction(
    program: str,
    output: str,
    predicted_inputs: str | None,
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> bool:
  """Whether `f(<predicted_inputs>)` returns a value equal to `output` (any such input counts)."""
  return check_abductions([(program, output, predicted_inputs)], executor, timeout_s=timeout_s)[0]


def check_inductions(
    items: Sequence[tuple[str | None, Sequence[tuple[str, str]]]],
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> list[bool]:
  """`check_induction` for many (predicted_program, pairs), in one executor batch."""
  jobs, owner = [], []
  correct = [False] * len(items)
  for k, (program, pairs) in enumerate(items):
    if not isinstance(program, str) or not pairs or check_program(program, deterministic=True):
      continue
    correct[k] = True
    for inputs, output in pairs:
      jobs.append((program, inputs))
      owner.append((k, output))
  runs = executor.run_many(jobs, timeout_s=timeout_s, deterministic=True)
  for (k, output), run in zip(owner, runs):
    correct[k] = correct[k] and run.ok and same_output(run.output, output)
  return correct


def check_induction(
    predicted_program: str | None,
    pairs: Sequence[tuple[str, str]],
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> bool:
  """Whether `predicted_program` passes the policy (with the determinism bans) and reproduces
  every (inputs, output) pair; no pairs is never correct."""
  return check_inductions([(predicted_program, pairs)], executor, timeout_s=timeout_s)[0]


def check_answers(
    items: Sequence[tuple[str, Task, str | None]],
    executor: Executor,
    *,
    timeout_s: float = TIMEOUT_S,
) -> list[bool]:
  """Whether each (task type, task, answer) is right, one batch per type: deduction answers are
  compared with the task's stored output (`check_deduction_outputs`: nothing runs), abduction
  inputs and induction programs run in the executor."""
  correct = [False] * len(items)
  for task_type in TASK_TYPES:
    where = [k for k, (t, _, _) in enumerate(items) if t == task_type]
    if not where:
      continue
    of_type = [items[k][1:] for k in where]
    if task_type == "deduction":
      results = check_deduction_outputs([(task.output, a) for task, a in of_type])
    elif task_type == "abduction":
      jobs = [(task.program, task.output, a) for task, a in of_type]
      results = check_abductions(jobs, executor, timeout_s=timeout_s)
    else:
      jobs = [(a, task.hidden) for task, a in of_type]
      results = check_inductions(jobs, executor, timeout_s=timeout_s)
    for k, ok in zip(where, results):
      correct[k] = bool(ok)
  return correct


# The prompts live in `rzero_jax.azr.prompts`; these names stay reachable here.
_PROMPT_NAMES = ("SYSTEM", "format_triplet", "proposer_messages", "solver_messages")


def __getattr__(name: str):
  """`rzero_jax.azr.tasks.proposer_messages` and co.: the prompts module's, imported on first use
  (it builds on this module's task types, so it cannot be imported at the top)."""
  if name in _PROMPT_NAMES:
    from rzero_jax.azr import prompts

    return getattr(prompts, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
