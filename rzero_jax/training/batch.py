"""The training batch format: sampled completions as fixed-shape policy-gradient batches."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def build_batch(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    logprobs: Sequence[Sequence[float]],
    advantages: np.ndarray,
    *,
    prompt_len: int,
    completion_len: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
  """A batch of N sequences laid out as [left-padded prompt | right-padded completion].

  Shapes are fixed by (`prompt_len`, `completion_len`) so the train step compiles once. Entry t of
  `loss_mask` / `old_logprobs` refers to predicting tokens[:, t] from tokens[:, :t].
  """
  n = len(prompts)
  if not n == len(completions) == len(logprobs) == len(advantages):
    raise ValueError("build_batch: prompts, completions, logprobs and advantages differ in length.")
  width = prompt_len + completion_len
  tokens = np.full((n, width), pad_id, np.int32)
  attention = np.zeros((n, width), np.int32)
  loss_mask = np.zeros((n, width), np.float32)
  old = np.zeros((n, width), np.float32)
  for i, (prompt, completion, lp) in enumerate(zip(prompts, completions, logprobs)):
    if len(prompt) > prompt_len or len(completion) > completion_len:
      raise ValueError(
          f"Sequence {i} does not fit the batch layout ({len(prompt)} prompt tokens > "
          f"{prompt_len} or {len(completion)} completion tokens > {completion_len})."
      )
    tokens[i, prompt_len - len(prompt) : prompt_len] = prompt
    attention[i, prompt_len - len(prompt) : prompt_len + len(completion)] = 1
    tokens[i, prompt_len : prompt_len + len(completion)] = completion
    loss_mask[i, prompt_len : prompt_len + len(completion)] = 1.0
    old[i, prompt_len : prompt_len + len(completion)] = np.asarray(lp, np.float32)
  return {
      "tokens": tokens,
      "attention_mask": attention,
      "loss_mask": loss_mask,
      "old_logprobs": old,
      "advantages": np.asarray(advantages, np.float32),
  }


def split_minibatches(batch: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
  """Consecutive mini-batches of `size` sequences (the batch size must be a multiple of it)."""
  n = len(batch["tokens"])
  if n % size:
    raise ValueError(
        f"{n} sequences do not split into mini-batches of {size}: make prompts per step "
        "a multiple of prompts per mini-batch."
    )
  return [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]
