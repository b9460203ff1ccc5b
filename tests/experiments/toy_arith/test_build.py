"""A few-step build of the toy base model: the saved directory loads back, and is cached."""

import json
import os

import numpy as np
import pytest

from experiments.toy_arith import build
from rzero_jax.models import encode_chat, forward, load_pretrained, load_tokenizer, stop_token_ids
from rzero_jax.rzero import prompts

TINY = build.BuildConfig(tokenizer_problems=300, hidden_size=16, intermediate_size=32,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, steps=3,
                         batch_size=4, warmup_steps=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  return cache, build.ensure_base_model(cache, TINY)


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
  with open(os.path.join(path, build.BUILD_INFO)) as f:
    info = json.load(f)
  assert info["fingerprint"] == TINY.fingerprint() and info["config"]["steps"] == 3


def test_ensure_base_model_reuses_the_cache(built):
  cache, path = built
  stamp = os.path.getmtime(os.path.join(path, "model.safetensors"))
  assert build.ensure_base_model(cache, TINY) == path
  assert os.path.getmtime(os.path.join(path, "model.safetensors")) == stamp
  assert TINY.fingerprint() != build.BuildConfig().fingerprint()
  assert os.path.basename(path) == f"toy_arith-{TINY.fingerprint()}"


def test_training_batch_targets_completion_and_end_of_turn():
  import random
  tok = build.train_tokenizer(build.tokenizer_corpus(TINY), TINY.vocab_size)
  batch = build.training_batch(random.Random(0), TINY, tok, {})
  assert batch["tokens"].shape[1] % build.LENGTH_BUCKET == 0
  im_end = tok.convert_tokens_to_ids("<|im_end|>")
  for tokens, mask in zip(batch["tokens"], batch["loss_mask"]):
    targets = tokens[mask == 1]
    assert targets[-1] == im_end and (targets[:-1] != im_end).all()
    text = tok.decode(targets[:-1])
    assert text.endswith("}") and "\\boxed{" in text
    prompt = tok.decode(tokens[:np.argmax(mask)])
    assert prompt.endswith("<|im_start|>assistant\n")
