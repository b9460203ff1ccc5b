"""Token log-probs and entropies against transformers, and the chunked jitted log-prob function."""

import jax
import numpy as np
import pytest

from rzero_jax.models import forward, load_pretrained
from rzero_jax.sharding import make_mesh, make_plan
from rzero_jax.training import TrainConfig, entropy_from_logits, make_logprob_fn, token_logprobs

TEMPERATURE = 0.7


def padded_batch(vocab, seed=0):
  """Rows: full, right-padded, left-padded (prompt padding), both, full."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (5, 10)).astype(np.int32)
  mask = np.ones((5, 10), np.int32)
  mask[1, 7:] = 0
  mask[2, :3] = 0
  mask[3, :2] = 0
  mask[3, 8:] = 0
  return tokens, mask


@pytest.fixture(scope="module")
def reference(tiny_qwen3_dir):
  """(cfg, params, tokens, mask, torch log-probs [B, T-1], torch entropies [B, T-1], rows/cols checked)."""
  import torch
  import transformers

  cfg, params = load_pretrained(tiny_qwen3_dir, dtype="float32")
  tokens, mask = padded_batch(cfg.vocab_size)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      tiny_qwen3_dir, dtype=torch.float32, attn_implementation="eager"
  ).eval()
  positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
  with torch.no_grad():
    logits = model(
        input_ids=torch.as_tensor(tokens, dtype=torch.long),
        attention_mask=torch.as_tensor(mask),
        position_ids=torch.as_tensor(positions, dtype=torch.long),
    ).logits
  logp = torch.log_softmax(logits / TEMPERATURE, dim=-1)
  picked = logp[:, :-1].gather(-1, torch.as_tensor(tokens[:, 1:], dtype=torch.long)[..., None])[
      ..., 0
  ]
  entropy = -(logp.exp() * logp).sum(-1)[:, :-1]
  real = mask[:, 1:].astype(bool) & mask[:, :-1].astype(bool)  # context end and target both real
  return cfg, params, tokens, mask, picked.numpy(), entropy.numpy(), real


def test_token_logprobs_and_entropy_match_transformers(reference):
  cfg, params, tokens, mask, want, want_entropy, real = reference

  @jax.jit
  def both(params):
    logits = forward(cfg, params, tokens, mask)
    return (
        token_logprobs(cfg, params, tokens, mask, temperature=TEMPERATURE),
        entropy_from_logits(logits, mask, TEMPERATURE),
    )

  got, got_entropy = map(np.asarray, both(params))
  np.testing.assert_allclose(got[:, 1:][real], want[real], atol=2e-5)
  np.testing.assert_allclose(got_entropy[:, 1:][real], want_entropy[real], atol=2e-5)
  assert np.all(got[:, 0] == 0) and np.all(got[mask == 0] == 0)


def test_sharded_logprob_fn_chunks_and_pads(reference):
  cfg, params, tokens, mask, want, _, real = reference
  fn = make_logprob_fn(
      cfg,
      TrainConfig(temperature=TEMPERATURE, micro_batch_size=2),
      make_plan(make_mesh("fsdp:8"), "fsdp"),
  )  # 5 rows: 3 chunks of 2, one padded row
  got = np.asarray(fn(params, tokens, mask))
  np.testing.assert_allclose(got[:, 1:][real], want[real], atol=2e-5)
