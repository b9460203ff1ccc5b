"""The Absolute Zero loop's stages with a scripted sampler: proposals validated by the executor,
learnability from n solver rollouts, buffers, solver checks, TRR++ advantages, one update."""

import os

import numpy as np
import pytest

from experiments import azr_demo
from rzero_jax.azr import config as azr_config
from rzero_jax.azr import loop, trr
from rzero_jax.azr.buffers import TaskBuffers
from rzero_jax.azr.tasks import fenced_blocks
from rzero_jax.selfplay.roles import Completions
from rzero_jax.selfplay.util import RunError
from tests.support import REPO

MODEL = os.path.join(REPO, "experiments", "toy_arith", "base_model")  # any small model will do
P = 4  # prompts per (task type, role)
N = 4  # learnability rollouts


def _config():
  c = azr_demo.get_config("smoke")
  c.model_path = MODEL
  c.actor.update(prompts_per_step=P, max_prompt_tokens=512, max_new_tokens=160)
  c.actor.train.micro_batch_size = 6 * P
  c.tasks.update(learnability_rollouts=N, executor_workers=1)
  return c


def _respond(answer: str) -> str:
  return f"<think>x</think><answer>{answer}</answer>"


def _fence(label, body):
  return f"```{label}\n{body}\n```"


class Script:
  """Answers every prompt by its kind. Proposer prompt i of a type proposes `a + i % 4` on input
  `i` (i % 4 == 3: a banned import, invalid); a solver answers `a + k` tasks right in the first
  k of its samples, so a proposal with k = 1 or 2 has learnability 1 - k / N."""

  def __init__(self, tokenizer):
    self.tok = tokenizer
    self.calls = []

  def _program(self, k):
    return f"import os\ndef f(a):\n    return a" if k == 3 else f"def f(a):\n    return a + {k}"

  def responses(self, prompt, num_samples, index):
    if "New deduction" in prompt or "New abduction" in prompt:
      k = index % 4
      return [_respond(_fence("python", self._program(k)) + "\n" + _fence("input", str(index)))]
    if "inputs and a message" in prompt:
      return [
          _respond(
              "\n".join(_fence("input", str(v)) for v in range(1, 5))
              + "\n"
              + _fence("message", "adds a constant")
          )
      ]
    blocks = dict((label, body) for label, body in fenced_blocks(prompt))
    if "Program?" in prompt:
      return [_respond(_fence("python", "def f(a):\n    return a + 0"))] * num_samples
    program = blocks["python"]
    k = int(program.rsplit("+", 1)[1]) if "+" in program else 0
    out = []
    for j in range(num_samples):
      right = j < k
      if prompt.startswith("Output?") or "Output?" in prompt:
        value = int(blocks["input"].strip("\"'") if blocks["input"].isdigit() else 0) + k
        out.append(_respond(_fence("output", str(value if right else value + 100))))
      else:
        value = int(blocks["output"]) - k if blocks["output"].lstrip("-").isdigit() else 0
        out.append(_respond(_fence("input", str(value if right else value + 100))))
    return out

  def __call__(self, role, prompt_ids, *, seed, num_samples=1, **sampling):
    self.calls.append((len(prompt_ids), num_samples))
    counters, texts = {}, []
    for ids in prompt_ids:
      prompt = self.tok.decode(list(ids), skip_special_tokens=True)
      kind = prompt.split("\n", 2)[1] if "\n" in prompt else prompt
      counters[kind] = counters.get(kind, -1) + 1
      texts += self.responses(prompt, num_samples, counters[kind])
    tokens = [self.tok.encode(t, add_special_tokens=False) for t in texts]
    return Completions(tokens, [[0.0] * len(t) for t in tokens], [True] * len(tokens))


@pytest.fixture(scope="module")
def azr_run(tmp_path_factory):
  r = loop.AZRRun(_config(), str(tmp_path_factory.mktemp("azr")))
  yield r
  r.close_executor()
  r.close()


def test_train_step(azr_run):
  r = azr_run
  script = Script(r.tokenizer)
  updates = []
  r.sample = script
  r.update = lambda role, prompts, out, adv, mini_batch_size: updates.append(
      (prompts, out, np.asarray(adv), mini_batch_size)
  ) or {"skipped": 0.0}
  buffers = TaskBuffers()
  m = r.train_step(buffers, 0)
  # 1. proposals: 3 of 4 deduction/abduction proposals valid; induction inputs all valid
  assert m["deduction/valid_rate"] == m["abduction/valid_rate"] == 0.75
  assert m["induction/valid_rate"] == 1.0
  # 2. learnability rollouts: one batched call over the valid proposals, N samples each
  assert (3 + 3 + P, N) in script.calls
  # a + 0 is always wrong (rate 0), a + 1 right 1/4, a + 2 right 2/4: learnability 0, .75, .5
  assert m["deduction/solve_rate"] == pytest.approx((0 + 0.25 + 0.5) / 3)
  # 3. buffers: identity + the valid proposals, tagged with the step
  assert buffers.sizes() == {"deduction": 4, "abduction": 4, "induction": 1 + P}
  assert len(buffers["deduction"].newest(0)) == 3
  # 4-6. one update over the six sub-batches, TRR++ advantages per (type, role)
  assert len(updates) == 1
  prompts, out, adv, mini = updates[0]
  assert len(prompts) == len(out.tokens) == len(adv) == mini == 6 * P
  for g in range(6):
    assert adv[g * P : (g + 1) * P].sum() == pytest.approx(0.0, abs=1e-6)
  # proposer rewards of the deduction group: [0 (never solved), .75, .5, -1 (invalid)]
  expected = trr.task_relative_advantages([0.0, 0.75, 0.5, -1.0], ["d"] * 4, ["p"] * 4)
  np.testing.assert_allclose(adv[:P], expected, atol=1e-6)


def test_evaluate_per_type(azr_run):
  r = azr_run
  r.sample = Script(r.tokenizer)
  r.heldout = {
      "deduction": [
          loop.task_from_dict(
              {"program": "def f(a):\n    return a + 2", "inputs": "3", "output": "5"}
          )
      ]
  }
  acc = r.evaluate()
  assert set(acc) == {"deduction", "mean"}
  assert acc["deduction"] == acc["mean"] == 1.0  # greedy = sample 0 of the script: right


def test_deduction_answers_are_graded_against_the_stored_output(azr_run, monkeypatch):
  """Validation stored the program's output in the task: grading a deduction answer runs
  nothing (abduction and induction answers still run)."""

  class NoRuns:

    def run_many(self, *args, **kwargs):
      raise AssertionError("deduction grading ran a program")

  monkeypatch.setattr(azr_run, "_executor", NoRuns())
  task = {"program": "def f(a):\n    return a + 2", "inputs": "3", "output": "5"}
  answers = ["5", "5.0", " 5 ", "6", "'5'", "five", None]
  jobs = [("deduction", task, a) for a in answers]
  assert azr_run._check(jobs) == [True, True, True, False, False, False, False]
  stored = dict(task, output="{'b', 'a'}")  # the stored text, compared as a value
  assert azr_run._check([("deduction", stored, "{'a', 'b'}")]) == [True]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("actor.updates_per_step", 5, "must divide"),
        ("actor.prompts_per_step", 0, "prompts_per_step must be >= 1"),
        ("tasks.learnability_rollouts", 0, "learnability_rollouts must be >= 1"),
        ("reward_variant", "best", "reward_variant must be one of"),
    ],
)
def test_bad_config(field, value, message):
  c = _config()
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(RunError, match=message):
    azr_config.validate_config(c)
  assert loop.validate_config is azr_config.validate_config  # still importable from the loop


def test_summary_points_in_step_order():
  """A restored meta may hold its evaluation points sorted as text ("step_16" before "step_8"):
  the summary lists them by step, and each point's window covers the steps since the previous."""
  acc = lambda mean: {"deduction": mean, "abduction": mean, "induction": mean, "mean": mean}
  step = lambda i: {k: float(i) if k == "valid_rate" else 0.0 for k in loop._RECORDED}
  meta = {
      "heldout": {"base": acc(0.1), "step_16": acc(0.3), "step_8": acc(0.2)},
      "steps": [step(i) for i in range(1, 17)],
      "seeding": {"rounds": 1, "valid_rate": [], "buffer_sizes": None},
  }
  summary = loop.make_summary(_config(), meta)
  assert list(summary["heldout_accuracy"]) == ["base", "step_8", "step_16"]
  assert summary["points"]["step_8"]["valid_rate"] == pytest.approx(4.5)  # steps 1..8
  assert summary["points"]["step_16"]["valid_rate"] == pytest.approx(12.5)  # steps 9..16
  lines = loop.format_table(summary).splitlines()
  assert [l.split()[0] for l in lines[2:]] == ["base", "step_8", "step_16"]
