"""Absolute Zero prompts: what the proposer and the solver see, and the module configs name."""

import pytest

from rzero_jax.azr import prompts, tasks
from rzero_jax.azr.loop import _prompt_module
from rzero_jax.azr.tasks import InductionTask, Triplet


def fence(label: str, body: str) -> str:
  return f"```{label}\n{body}\n```"


def test_prompts_carry_the_task_and_the_format():
  ref = Triplet("def f(x):\n    return x * 2", "21", "42")
  for task_type in ("deduction", "abduction"):
    messages = prompts.proposer_messages(task_type, [ref, tasks.identity_triplet()])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<think>" in messages[0]["content"] and "<answer>" in messages[0]["content"]
    user = messages[1]["content"]
    assert fence("python", ref.program) in user and fence("output", "42") in user
    assert "```python" in user and "```input" in user and "randomness" in user
    assert "ONE tuple argument" in user
  assert "different" in prompts.proposer_messages("deduction", [ref])[1]["content"]
  assert "Earlier tasks" not in prompts.proposer_messages("abduction", [])[1]["content"]
  induction = prompts.proposer_messages("induction", program=ref.program)[1]["content"]
  assert fence("python", ref.program) in induction and "10 different inputs" in induction
  assert "```message" in induction
  with pytest.raises(ValueError, match="needs the program"):
    prompts.proposer_messages("induction")
  with pytest.raises(ValueError, match="Unknown task type 'deductoin'"):
    prompts.proposer_messages("deductoin")


def test_solver_prompts_show_what_each_type_hides():
  t = Triplet("def f(x):\n    return x * 2", "21", "42")
  deduction = prompts.solver_messages("deduction", t)[1]["content"]
  assert fence("input", "21") in deduction and "42" not in deduction and "```output" in deduction
  abduction = prompts.solver_messages("abduction", t)[1]["content"]
  assert fence("output", "42") in abduction and "21" not in abduction
  task = InductionTask(t.program, "doubles", tuple((str(i), str(2 * i)) for i in range(10)))
  induction = prompts.solver_messages("induction", task)[1]["content"]
  assert "doubles" in induction and "return x * 2" not in induction
  assert fence("input", "4") in induction and fence("input", "5") not in induction


@pytest.mark.parametrize(
    "name", ["rzero_jax.azr.prompts", "rzero_jax.azr.tasks", "experiments.toy_code.prompts"]
)
def test_prompt_modules_named_in_configs_resolve(name):
  """`config.tasks.prompts` may still name `rzero_jax.azr.tasks`, which re-exports the prompts."""
  module = _prompt_module(name)
  assert callable(module.proposer_messages) and callable(module.solver_messages)
  assert tasks.proposer_messages is prompts.proposer_messages
  assert tasks.solver_messages is prompts.solver_messages
