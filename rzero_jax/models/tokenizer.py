"""Tokenizer helpers: loading, chat rendering, and stop / pad tokens kept apart."""

from __future__ import annotations

import os
from typing import Any, Sequence

# End-of-turn markers of the supported families (Qwen chat, Llama-3 instruct).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")


def load_tokenizer(path: str) -> Any:
  """Loads a `transformers.AutoTokenizer` from a local directory (never from the network)."""
  from transformers import AutoTokenizer

  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"Tokenizer directory {path!r} does not exist: give the local HF model "
        "directory that holds tokenizer.json / tokenizer_config.json."
    )
  return AutoTokenizer.from_pretrained(path, local_files_only=True)


def render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
  """The fallback layout for tokenizers without a chat template: `role: content` lines."""
  text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
  return text + ("assistant:" if add_generation_prompt else "")


def render_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
) -> str:
  """Renders chat messages with the tokenizer's chat template, or the plain layout without one."""
  if getattr(tokenizer, "chat_template", None):
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
  return render_plain(messages, add_generation_prompt)


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
  """Token ids of a rendered chat prompt (special tokens come from the template, none added)."""
  return tokenizer.encode(render_chat(tokenizer, messages), add_special_tokens=False)


def stop_token_ids(
    tokenizer: Any, eos_token_id: Sequence[int] | int | None = ()
) -> tuple[int, ...]:
  """Ids that end a completion: end of sequence and end of turn (e.g. `<|im_end|>`), never pad
  unless pad is itself one of those. `eos_token_id` adds the model config's ids."""
  ids: list[int] = []
  extra = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or ())
  candidates = [tokenizer.eos_token_id, *extra]
  vocab = tokenizer.get_vocab()
  candidates += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
  for token_id in candidates:
    if token_id is not None and token_id not in ids:
      ids.append(int(token_id))
  return tuple(ids)


def end_of_turn_id(tokenizer: Any) -> int:
  """The token that ends an assistant turn (`<|im_end|>`, `<|eot_id|>`, ...), else end of
  sequence: the last target of a supervised response, as the sampler stops on it."""
  vocab = tokenizer.get_vocab()
  for token in END_OF_TURN_TOKENS:
    if token in vocab:
      return int(vocab[token])
  if tokenizer.eos_token_id is None:
    raise ValueError(
        "The tokenizer has no end-of-turn or end-of-sequence token to end responses "
        "with: add one (e.g. <|im_end|>) to the tokenizer."
    )
  return int(tokenizer.eos_token_id)


def pad_token_id(tokenizer: Any) -> int:
  """The padding id: the tokenizer's pad token, else its eos token, else 0."""
  for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
    if token_id is not None:
      return int(token_id)
  return 0
