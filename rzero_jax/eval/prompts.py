"""Chat messages per benchmark kind, as in the references' evaluation code."""

from __future__ import annotations

from rzero_jax.eval.benchmarks import LETTERS, resolve

MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Please reason step by step, and put your final answer option within "
    "\\boxed{}. Only put the option letter in the box, e.g. \\boxed{A}. There is "
    "only one correct answer."
)
CODE_INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following "
    "problem in a markdown code block:"
)
CRUX_O_INSTRUCTION = (
    "You are given a Python function and an input to it. Work out step by step "
    "what the function returns, then complete the assertion with that output "
    "as a Python literal (no function calls), in a ```python block:\n"
    "```python\nassert f({input}) == <output>\n```"
)
CRUX_I_INSTRUCTION = (
    "You are given a Python function and the output it returned. Find an input "
    "such that executing f on it gives that output; several may work, give "
    "one. Reason step by step, then write the passing assertion in a ```python "
    "block:\n```python\nassert f(<input>) == {output}\n```"
)


def choice_question(question: str, options: list[str]) -> str:
  """The question followed by its options as ``(A) ...`` lines."""
  lines = [f"({LETTERS[i]}) {option}" for i, option in enumerate(options)]
  return question.rstrip() + "\nOptions are:\n" + "\n".join(lines)


def messages(name: str, item: dict) -> list[dict[str, str]]:
  """The chat messages that ask the model ``item`` of benchmark ``name``."""
  kind = resolve(name).kind
  if kind in ("math", "bbeh"):
    return [
        {"role": "system", "content": MATH_SYSTEM},
        {"role": "user", "content": item["question"]},
    ]
  if kind == "choice":
    return [
        {
            "role": "user",
            "content": choice_question(item["question"], item["options"])
            + "\n\n"
            + CHOICE_INSTRUCTION,
        }
    ]
  if kind == "code":
    return [{"role": "user", "content": f"{CODE_INSTRUCTION}\n```\n{item['prompt'].strip()}\n```"}]
  if kind == "crux_o":
    return [
        {
            "role": "user",
            "content": f"```python\n{item['code']}\n```\n\n"
            + CRUX_O_INSTRUCTION.replace("{input}", item["input"]),
        }
    ]
  return [
      {
          "role": "user",
          "content": f"```python\n{item['code']}\n```\n\n"
          + CRUX_I_INSTRUCTION.replace("{output}", item["output"]),
      }
  ]
