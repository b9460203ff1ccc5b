"""A few-step build of the toy base model: the saved directory loads back, and is cached."""

import json
import os
import random

import numpy as np
import pytest

from experiments import toy_build
from experiments.toy_arith import build
from rzero_jax.models import encode_chat, forward, load_pretrained, load_tokenizer, stop_token_ids
from rzero_jax.rzero import prompts
from tests.support import tiny_build

TINY = tiny_build(build.BuildConfig, tokenizer_problems=300, steps=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  return cache, build.ensure_base_model(cache, TINY)


@pytest.mark.slow
def test_saved_model_loads_with_its_tokenizer(built):
  _, path = built
  cfg, params = load_pretrained(path, dtype="float32")
  tok = load_tokenizer(path)
  assert cfg.model_type == "qwen3" and cfg.vocab_size == len(tok) and cfg.hidden_size == 16
  assert cfg.eos_token_id == (tok.convert_tokens_to_ids("<|im_end|>"),)
  assert set(stop_token_ids(tok, cfg.eos_token_id)) == {tok.eos_token_id, tok.pad_token_id}
  ids = encode_chat(tok, prompts.solver_messages("What is 2 + 3?"))
  logits = forward(cfg, params, np.asarray([ids]))
  assert logits.shape == (1, len(ids), cfg.vocab_size) and np.isfinite(logits).all()
  with open(os.path.join(path, build.WORLD.build_info)) as f:
    info = json.load(f)
  assert info["fingerprint"] == TINY.fingerprint() and info["config"]["steps"] == 3


def test_ensure_base_model_reuses_the_cache(built):
  cache, path = built
  stamp = os.path.getmtime(os.path.join(path, "model.safetensors"))
  assert build.ensure_base_model(cache, TINY) == path
  assert os.path.getmtime(os.path.join(path, "model.safetensors")) == stamp
  assert TINY.fingerprint() != build.BuildConfig().fingerprint()
  assert os.path.basename(path) == f"toy_arith-{TINY.fingerprint()}"


@pytest.fixture(scope="module")
def tokenizer():
  return build.build_tokenizer(TINY)


def _batch(cfg, tokenizer, seed, direct_rate):
  return toy_build.training_batch(build.WORLD, random.Random(seed), cfg, tokenizer, {}, direct_rate)


def completions(batch, tok):
  """The decoded target text (without `<|im_end|>`) of each row, and its prompt."""
  for tokens, mask in zip(batch["tokens"], batch["loss_mask"]):
    targets = tokens[mask == 1]
    yield tok.decode(targets[:-1]), tok.decode(tokens[: np.argmax(mask)])


def test_training_batch_targets_completion_and_end_of_turn(tokenizer):
  batch = _batch(TINY, tokenizer, seed=0, direct_rate=0.5)
  assert batch["tokens"].shape[1] % build.WORLD.length_bucket == 0
  im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  for tokens, mask in zip(batch["tokens"], batch["loss_mask"]):
    targets = tokens[mask == 1]
    assert targets[-1] == im_end and (targets[:-1] != im_end).all()
  for text, prompt in completions(batch, tokenizer):
    assert text.endswith("}") and "\\boxed{" in text
    assert prompt.endswith("<|im_start|>assistant\n")


def test_direct_rate_controls_answers_without_working(tokenizer):
  cfg = build.BuildConfig(challenger_fraction=0.0, batch_size=32)
  worked = list(completions(_batch(cfg, tokenizer, seed=1, direct_rate=0.0), tokenizer))
  direct = list(completions(_batch(cfg, tokenizer, seed=1, direct_rate=1.0), tokenizer))
  assert all(" = " in text for text, _ in worked)
  assert all(text.startswith("\\boxed{") and " = " not in text for text, _ in direct)
