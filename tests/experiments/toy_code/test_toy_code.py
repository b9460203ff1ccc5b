"""The toy program world: generated tasks are valid for the executor and solved by their worked
and direct texts; a few-step build loads back and is cached; the committed model is current."""

import json
import os
import random

import pytest

from experiments.toy_code import build, data, prompts
from rzero_jax.azr import tasks
from rzero_jax.models import encode_chat, load_pretrained, load_tokenizer
from rzero_jax.verify.executor import Executor
from tests.support import tiny_build

TINY = tiny_build(build.BuildConfig, tokenizer_examples=200, steps=2)


@pytest.fixture(scope="module")
def executor():
  with Executor(workers=1) as ex:
    yield ex


def test_generated_tasks_are_valid_and_their_texts_solve_them(executor):
  rng = random.Random(3)
  programs = [data.sample_program(rng) for _ in range(12)]
  values = [data.random_input(rng, p.arg_type) for p in programs]
  checks = tasks.validate_triplets([(p.text, repr(v)) for p, v in zip(programs, values)], executor)
  for p, v, c in zip(programs, values, checks):
    assert c.valid, (p.text, v, c.reason)
    assert tasks.same_output(c.task.output, repr(p.run(v)))
    proposal = tasks.parse_proposal("deduction", data.propose_text(p, v))
    assert proposal.program == p.text and proposal.inputs == (repr(v),)
  for worked in (True, False):
    ded = [
        (p.text, repr(v), tasks.parse_solution("deduction", data.deduction_text(p, v, worked)))
        for p, v in zip(programs, values)
    ]
    abd = [
        (
            p.text,
            repr(p.run(v)),
            tasks.parse_solution("abduction", data.abduction_text(p, v, worked)),
        )
        for p, v in zip(programs, values)
    ]
    assert all(tasks.check_deductions(ded, executor))
    assert all(tasks.check_abductions(abd, executor))
  task = data.induction_task(rng, programs[0], 4)
  answer = tasks.parse_solution("induction", data.induction_text(programs[0]))
  assert tasks.check_induction(answer, task.hidden, executor)
  proposal = tasks.parse_proposal("induction", data.induction_propose_text(programs[0], [1, 2]))
  assert proposal.inputs == ("1", "2") and proposal.message == programs[0].message


def test_heldout_tasks_are_disjoint_from_training_programs():
  held = data.heldout_tasks(5)
  assert {k: len(v) for k, v in held.items()} == {"deduction": 5, "abduction": 5, "induction": 5}
  rng = random.Random(0)
  train_texts = {data.sample_program(rng).text for _ in range(300)}
  assert not train_texts & {t.program for v in held.values() for t in v}


@pytest.mark.slow
def test_tiny_build_loads_back_and_is_cached(tmp_path):
  path = build.ensure_base_model(str(tmp_path), TINY)
  cfg, _ = load_pretrained(path, dtype="float32")
  tok = load_tokenizer(path)
  assert cfg.vocab_size == len(tok) and cfg.hidden_size == 16
  t = data.triplet(data.Program("int", ((0, 3),)), 5)
  assert encode_chat(tok, prompts.solver_messages("deduction", t))
  # letters inside quoted strings (and digits) are tokens of their own; code text is merged
  text = "'bad'[::-1] = 'DAB' 12"
  pieces = [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]
  assert "".join(pieces) == text
  assert pieces[:4] == ["'", "b", "a", "d"] and pieces[-2:] == ["1", "2"]
  assert pieces[pieces.index("D") : pieces.index("D") + 3] == ["D", "A", "B"]
  stamp = os.path.getmtime(os.path.join(path, "model.safetensors"))
  assert build.ensure_base_model(str(tmp_path), TINY) == path
  assert os.path.getmtime(os.path.join(path, "model.safetensors")) == stamp


def test_committed_model_matches_the_build_settings():
  with open(os.path.join(build.COMMITTED_MODEL, build.WORLD.build_info)) as f:
    assert json.load(f)["fingerprint"] == build.BuildConfig().fingerprint()
