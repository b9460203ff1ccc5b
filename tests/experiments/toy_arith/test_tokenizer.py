"""The toy tokenizer: single-digit tokens, exact round trips, Qwen chat template, stop tokens."""

import json
import os

import pytest

from experiments.toy_arith import data
from experiments.toy_arith.build import BuildConfig, tokenizer_corpus
from experiments.toy_arith.tokenizer import train_tokenizer
from rzero_jax.models import encode_chat, load_tokenizer, pad_token_id, render_chat, stop_token_ids
from rzero_jax.rzero import prompts

VOCAB = BuildConfig().vocab_size


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tok"))
  train_tokenizer(tokenizer_corpus(BuildConfig(tokenizer_problems=500)), VOCAB).save_pretrained(
      path
  )
  return path


def test_round_trip_and_single_digit_tokens(saved):
  tok = load_tokenizer(saved)
  question = "What is (357 - 48) * 9 + 1200?"
  for text in (
      data.solver_completion(question),
      data.challenger_completion(question, 3982),
      "unseen text ~ with [odd] chars!",
  ):
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
  pieces = tok.convert_ids_to_tokens(tok.encode("357 = 1200", add_special_tokens=False))
  assert [p for p in pieces if any(c.isdigit() for c in p)] == list("3571200")


def test_chat_template_and_special_tokens(saved):
  tok = load_tokenizer(saved)
  messages = prompts.solver_messages("What is 2 + 3?")
  assert render_chat(tok, messages) == (
      f"<|im_start|>system\n{prompts.SOLVER_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?"
      "<|im_end|>\n<|im_start|>assistant\n"
  )
  ids = encode_chat(tok, messages)
  assert tok.decode(ids) == render_chat(tok, messages)
  assert len(encode_chat(tok, prompts.challenger_messages())) < 40  # fixed text is merged
  im_end, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
  assert set(stop_token_ids(tok)) == {im_end, pad} and pad_token_id(tok) == pad
  assert tok.eos_token_id == im_end and len(tok) <= VOCAB


def test_training_is_deterministic(tmp_path, saved):
  corpus = tokenizer_corpus(BuildConfig(tokenizer_problems=500))
  train_tokenizer(corpus, VOCAB).save_pretrained(str(tmp_path))
  with open(os.path.join(saved, "tokenizer.json")) as a, open(
      os.path.join(tmp_path, "tokenizer.json")
  ) as b:
    assert json.load(a) == json.load(b)


def test_vocab_too_small():
  with pytest.raises(ValueError, match="vocab_size"):
    train_tokenizer(["1 + 2"], 50)
