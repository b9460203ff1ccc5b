"""Tokenizer helpers on small tokenizers built locally with `tokenizers`."""

import pytest

from rzero_jax.models import (
    encode_chat,
    load_tokenizer,
    pad_token_id,
    render_chat,
    stop_token_ids,
)

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two plus two"}]


def _save_tokenizer(path, chat_template=None):
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  words = ["system", "user", "assistant", "be", "brief", "two", "plus", ":", "\n"]
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  vocab = {w: i for i, w in enumerate(specials + words + ["[UNK]"])}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Split(r"\s+|:|\n", behavior="isolated")
  fast = PreTrainedTokenizerFast(
      tokenizer_object=tok,
      eos_token="<|endoftext|>",
      pad_token="<|endoftext|>",
      additional_special_tokens=["<|im_start|>", "<|im_end|>"],
  )
  if chat_template:
    fast.chat_template = chat_template
  fast.save_pretrained(path)
  return str(path)


def test_chat_template_rendering_and_stop_tokens(tmp_path):
  tok = load_tokenizer(_save_tokenizer(tmp_path, QWEN_TEMPLATE))
  text = render_chat(tok, MESSAGES)
  assert text == (
      "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\ntwo plus two<|im_end|>\n"
      "<|im_start|>assistant\n"
  )
  ids = encode_chat(tok, MESSAGES)
  assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
  stops = stop_token_ids(tok)
  assert set(stops) == {
      tok.convert_tokens_to_ids("<|endoftext|>"),
      tok.convert_tokens_to_ids("<|im_end|>"),
  }
  assert pad_token_id(tok) == tok.convert_tokens_to_ids("<|endoftext|>")


def test_plain_fallback_without_template(tmp_path):
  tok = load_tokenizer(_save_tokenizer(tmp_path))
  assert render_chat(tok, MESSAGES) == "system: be brief\nuser: two plus two\nassistant:"
  assert render_chat(tok, MESSAGES, add_generation_prompt=False).endswith("two plus two\n")


def test_stop_tokens_include_config_eos_and_exclude_pad_only_tokens(tmp_path):
  tok = load_tokenizer(_save_tokenizer(tmp_path, QWEN_TEMPLATE))
  stops = stop_token_ids(tok, eos_token_id=[5, 2])
  assert stops[0] == tok.eos_token_id and 5 in stops and len(stops) == len(set(stops))
  assert tok.convert_tokens_to_ids("<|im_start|>") not in stops


def test_missing_tokenizer_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer"):
    load_tokenizer(str(tmp_path / "absent"))
