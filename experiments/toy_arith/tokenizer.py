"""A small BPE tokenizer for the toy arithmetic world, trained locally with `tokenizers`.

Digits are always single tokens (the pre-tokenizer isolates each digit), which keeps arithmetic
learnable; the fixed prompt text between digits is merged into a few long tokens, which keeps
sequences short. Every printable ASCII character is in the base alphabet, so any ASCII text
encodes (unseen text just falls back to short pieces). Special tokens and chat template follow
Qwen: `<|im_start|>role\\ncontent<|im_end|>\\n`, end of turn `<|im_end|>`, padding `<|endoftext|>`.
"""

from __future__ import annotations

import string
from typing import Any, Iterable

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ALPHABET = sorted(set(string.printable) - set("\t\r\x0b\x0c"))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 192, isolate: str | None = None) -> Any:
  """Trains the BPE on `texts` (chat-rendered training text) and returns a
  `transformers.PreTrainedTokenizerFast` with the chat template set. `isolate`: a regex whose
  matches are always tokens of their own (never merged), on top of the single digits."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  minimum = len(SPECIAL_TOKENS) + len(ALPHABET)
  if vocab_size < minimum:
    raise ValueError(
        f"vocab_size={vocab_size} is below the {minimum} special and base tokens: "
        f"use at least {minimum}."
    )
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
  if isolate is not None:
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(isolate), "isolated"), tok.pre_tokenizer]
    )
  tok.decoder = decoders.Fuse()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=ALPHABET,
      limit_alphabet=len(ALPHABET),
      show_progress=False,
  )
  tok.train_from_iterator(texts, trainer=trainer)
  fast = PreTrainedTokenizerFast(
      tokenizer_object=tok,
      eos_token=IM_END,
      pad_token=PAD_TOKEN,
      additional_special_tokens=[IM_START],
      clean_up_tokenization_spaces=False,
  )
  fast.chat_template = CHAT_TEMPLATE
  return fast
