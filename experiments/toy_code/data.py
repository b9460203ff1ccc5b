"""A toy program world for Absolute Zero: short Python functions on ints, strings and lists.

A program is a chain of 1-3 primitive steps on one variable, e.g.

    def f(a):
        a = a + 3
        a = a * 2
        return a

over one argument of type int (0..20), str (2-5 letters from 'abcdefgh') or list (2-4 digits).
The generators here are pure functions of a `random.Random`; outputs are computed in this process
by our own step functions (never by executing text), and every task they produce is also valid
for the sandboxed executor (tests check this). Solver texts come in two styles: worked (one step
per line inside <think>, forward for deduction, inverted for abduction) and direct (an answer with
an empty <think>) - the base model is trained to guess directly most of the time, which works on
one-step programs but rarely on longer ones, so rewarding correct answers can teach it to show its
work (the same dynamics as the R-Zero demo's arithmetic world).
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from typing import Any, Callable

from rzero_jax.azr.tasks import InductionTask, Triplet

LETTERS = "abcdefgh"
HELDOUT_MODULUS = 8  # one program text in 8 belongs to the held-out partition


@dataclasses.dataclass(frozen=True)
class Step:
  """One primitive step: its code (with `{a}` for the variable, `{k}` for a constant), input and
  output types, forward function, inverse (a preimage of a value, or None) and description."""

  code: str
  src: str
  dst: str
  forward: Callable[[Any, int], Any]
  inverse: Callable[[Any, int], Any]
  describe: str
  constants: tuple[int, ...] = (0,)


STEPS: tuple[Step, ...] = (
    Step(
        "{a} + {k}",
        "int",
        "int",
        lambda a, k: a + k,
        lambda v, k: v - k,
        "add {k}",
        (1, 2, 3, 4, 5, 6, 7, 8, 9),
    ),
    Step(
        "{a} - {k}",
        "int",
        "int",
        lambda a, k: a - k,
        lambda v, k: v + k,
        "subtract {k}",
        (1, 2, 3, 4, 5),
    ),
    Step(
        "{a} * {k}",
        "int",
        "int",
        lambda a, k: a * k,
        lambda v, k: v // k if v % k == 0 else None,
        "multiply by {k}",
        (2, 3),
    ),
    Step(
        "{a} // 2", "int", "int", lambda a, k: a // 2, lambda v, k: v * 2, "halve (rounding down)"
    ),
    Step("{a}[::-1]", "str", "str", lambda a, k: a[::-1], lambda v, k: v[::-1], "reverse"),
    Step(
        "{a}.upper()",
        "str",
        "str",
        lambda a, k: a.upper(),
        lambda v, k: v.lower() if v.isupper() else None,
        "uppercase",
    ),
    Step(
        "{a} + 'x'",
        "str",
        "str",
        lambda a, k: a + "x",
        lambda v, k: v[:-1] if v.endswith("x") else None,
        "append 'x'",
    ),
    Step(
        "{a}[1:]", "str", "str", lambda a, k: a[1:], lambda v, k: "z" + v, "drop the first letter"
    ),
    Step(
        "{a} * 2",
        "str",
        "str",
        lambda a, k: a * 2,
        lambda v, k: v[: len(v) // 2] if len(v) % 2 == 0 and v[: len(v) // 2] * 2 == v else None,
        "repeat twice",
    ),
    Step(
        "len({a})",
        "str",
        "int",
        lambda a, k: len(a),
        lambda v, k: "a" * v if v >= 0 else None,
        "count the letters",
    ),
    Step(
        "sorted({a})",
        "list",
        "list",
        lambda a, k: sorted(a),
        lambda v, k: list(v) if list(v) == sorted(v) else None,
        "sort",
    ),
    Step("{a}[::-1]", "list", "list", lambda a, k: a[::-1], lambda v, k: v[::-1], "reverse"),
    Step(
        "[x + {k} for x in {a}]",
        "list",
        "list",
        lambda a, k: [x + k for x in a],
        lambda v, k: [x - k for x in v],
        "add {k} to each item",
        (1, 2, 3),
    ),
    Step(
        "[x * 2 for x in {a}]",
        "list",
        "list",
        lambda a, k: [x * 2 for x in a],
        lambda v, k: [x // 2 for x in v] if all(x % 2 == 0 for x in v) else None,
        "double each item",
    ),
    Step(
        "{a} + [{k}]",
        "list",
        "list",
        lambda a, k: a + [k],
        lambda v, k: v[:-1] if v and v[-1] == k else None,
        "append {k}",
        (0, 1, 5, 9),
    ),
    Step("sum({a})", "list", "int", lambda a, k: sum(a), lambda v, k: [v], "add up the items"),
    Step("max({a})", "list", "int", lambda a, k: max(a), lambda v, k: [v], "take the largest item"),
    Step(
        "len({a})",
        "list",
        "int",
        lambda a, k: len(a),
        lambda v, k: [0] * v if v >= 0 else None,
        "count the items",
    ),
)


@dataclasses.dataclass(frozen=True)
class Program:
  """A chain of (step index, constant) applied to an argument of type `arg_type`."""

  arg_type: str
  steps: tuple[tuple[int, int], ...]

  @property
  def text(self) -> str:
    lines = ["def f(a):"]
    for i, k in self.steps:
      lines.append("    a = " + STEPS[i].code.format(a="a", k=k))
    lines.append("    return a")
    return "\n".join(lines)

  @property
  def message(self) -> str:
    return ", then ".join(STEPS[i].describe.format(k=k) for i, k in self.steps)

  def run(self, value: Any) -> Any:
    for i, k in self.steps:
      value = STEPS[i].forward(value, k)
    return value

  def trace(self, value: Any) -> list[str]:
    """Forward: one line per step, e.g. `5 + 3 = 8`."""
    lines = []
    for i, k in self.steps:
      out = STEPS[i].forward(value, k)
      lines.append(f"{STEPS[i].code.format(a=repr(value), k=k)} = {out!r}")
      value = out
    return lines

  def invert(self, output: Any) -> tuple[Any, list[str]] | None:
    """A preimage of `output` and the inverse steps, last step first; None when a step's
    inverse fails or the result does not reproduce `output`."""
    value, lines = output, []
    for i, k in reversed(self.steps):
      prev = STEPS[i].inverse(value, k)
      if prev is None:
        return None
      lines.append(f"{STEPS[i].code.format(a='a', k=k)} = {value!r} <- a = {prev!r}")
      value = prev
    if not _valid_value(value, self.arg_type) or self.run(value) != output:
      return None
    return value, lines


def _valid_value(value: Any, arg_type: str) -> bool:
  if arg_type == "int":
    return isinstance(value, int) and -99 <= value <= 999
  if arg_type == "str":
    return isinstance(value, str) and 1 <= len(value) <= 12
  return (
      isinstance(value, list) and 1 <= len(value) <= 12 and all(isinstance(x, int) for x in value)
  )


def random_program(rng: random.Random, max_steps: int = 3) -> Program:
  """A chain of 1..max_steps steps; a type-changing step only comes last."""
  arg_type = rng.choice(("int", "str", "list"))
  n = rng.choice([1, 1, 2, 2, 3][: max(1, 2 * max_steps - 1)])
  n = min(n, max_steps)
  steps, current = [], arg_type
  for position in range(n):
    last = position == n - 1
    options = [j for j, s in enumerate(STEPS) if s.src == current and (last or s.dst == current)]
    j = rng.choice(options)
    steps.append((j, rng.choice(STEPS[j].constants)))
    current = STEPS[j].dst
  return Program(arg_type, tuple(steps))


def random_input(rng: random.Random, arg_type: str) -> Any:
  if arg_type == "int":
    return rng.randint(0, 20)
  if arg_type == "str":
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 5)))
  return [rng.randint(0, 9) for _ in range(rng.randint(2, 4))]


def is_heldout(program: Program) -> bool:
  """Whether a program belongs to the held-out partition (stable across runs and machines)."""
  return zlib.crc32(program.text.encode()) % HELDOUT_MODULUS == 0


def sample_program(rng: random.Random, heldout: bool = False) -> Program:
  while True:
    p = random_program(rng)
    if is_heldout(p) == heldout:
      return p


def triplet(program: Program, value: Any) -> Triplet:
  return Triplet(program.text, repr(value), repr(program.run(value)))


def distinct_inputs(rng: random.Random, program: Program, n: int) -> list[Any]:
  values: list[Any] = []
  while len(values) < n:
    v = random_input(rng, program.arg_type)
    if v not in values:
      values.append(v)
  return values


def induction_task(rng: random.Random, program: Program, n: int) -> InductionTask:
  values = distinct_inputs(rng, program, n)
  return InductionTask(
      program.text, program.message, tuple((repr(v), repr(program.run(v))) for v in values)
  )


# ----- texts in the AZR response format -----------------------------------------------------


def _fence(label: str, body: str) -> str:
  return f"```{label}\n{body}\n```"


def respond(think: str, answer: str) -> str:
  return f"<think>{think}</think><answer>{answer}</answer>"


def propose_text(program: Program, value: Any) -> str:
  return respond("", _fence("python", program.text) + "\n" + _fence("input", repr(value)))


def induction_propose_text(program: Program, values: list[Any]) -> str:
  blocks = [_fence("input", repr(v)) for v in values] + [_fence("message", program.message)]
  return respond("", "\n".join(blocks))


def deduction_text(program: Program, value: Any, worked: bool) -> str:
  out = program.run(value)
  think = "\n".join(program.trace(value)) if worked else ""
  return respond(think, _fence("output", repr(out)))


def abduction_text(program: Program, value: Any, worked: bool) -> str:
  """Worked: the inverted steps to a preimage (falls back to direct with the true input when a
  step cannot be inverted); direct: the true input."""
  if worked:
    inverted = program.invert(program.run(value))
    if inverted is not None:
      pre, lines = inverted
      return respond("\n".join(lines), _fence("input", repr(pre)))
  return respond("", _fence("input", repr(value)))


def induction_text(program: Program) -> str:
  return respond("", _fence("python", program.text))


# ----- held-out evaluation tasks --------------------------------------------------------------


def heldout_tasks(per_type: int, seed: int = 12345, induction_inputs: int = 4) -> dict[str, list]:
  """`per_type` tasks of each type whose programs lie in the held-out partition."""
  rng = random.Random(seed)
  out: dict[str, list] = {"deduction": [], "abduction": [], "induction": []}
  for task_type in out:
    for _ in range(per_type):
      program = sample_program(rng, heldout=True)
      if task_type == "induction":
        out[task_type].append(induction_task(rng, program, induction_inputs))
      else:
        out[task_type].append(triplet(program, random_input(rng, program.arg_type)))
  return out


def seed_tasks(per_type: int, seed: int = 7, induction_inputs: int = 4) -> dict[str, list]:
  """`per_type` tasks of each type from the training partition (the demo's starting buffers)."""
  rng = random.Random(seed)
  out: dict[str, list] = {"deduction": [], "abduction": [], "induction": []}
  for task_type in out:
    for _ in range(per_type):
      program = sample_program(rng)
      if task_type == "induction":
        out[task_type].append(induction_task(rng, program, induction_inputs))
      else:
        out[task_type].append(triplet(program, random_input(rng, program.arg_type)))
  return out
