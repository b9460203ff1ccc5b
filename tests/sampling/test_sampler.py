"""The jitted sampler: HF greedy parity, teacher-forced logprobs, stops, grouping, seeds, sharding,
slot compaction, shared prefills, bounded compilation and input errors.

Runs of other batch shapes (padding, `max_batch_size`, meshes, caps) are compared with
`assert_same_draws`: the same random stream per row, completions equal up to near ties (their
logits differ in the last bits, see `tests/support/draws.py`)."""

import json
import logging
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from rzero_jax import sharding
from rzero_jax.models import functional
from rzero_jax.models import forward, load_pretrained
from rzero_jax.sampling import generate
from rzero_jax.sampling import sampler
from tests.support import REPO, STRATEGY_MESHES
from tests.support.draws import assert_same_draws

PROMPTS = [[5, 17, 3], [8, 1, 44, 90, 2, 61, 7, 7, 30], [12], [3, 3, 9, 70, 15, 22]]
SAMPLING = dict(max_new_tokens=10, temperature=0.8, top_p=0.9, top_k=20, num_samples=2, seed=3)


@pytest.fixture(scope="module")
def model(tiny_qwen3_dir):
  return load_pretrained(tiny_qwen3_dir, dtype="float32")


@pytest.fixture(scope="module")
def sampled(model):
  return generate(*model, PROMPTS, **SAMPLING)


def per_row(items, num_samples):
  """Each item repeated for its samples (per-prompt values to per-row ones)."""
  return [p for p in items for _ in range(num_samples)]


def draw_settings(settings):
  """The settings `assert_same_draws` needs to redo a row's draw."""
  keys = ("seed", "temperature", "top_p", "top_k")
  return {k: settings[k] for k in keys if k in settings}


def teacher_forced_logprobs(cfg, params, prompts, completions, temperature):
  """log_softmax(logits / T) of each completion token under one left-padded forward pass (of a
  fixed [8, 32] shape, compiled once)."""
  seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
  width = 32
  tokens = np.zeros((8, width), np.int32)
  mask = np.zeros((8, width), np.int32)
  for i, seq in enumerate(seqs):
    tokens[i, width - len(seq) :], mask[i, width - len(seq) :] = seq, 1
  logprobs = np.asarray(jax.nn.log_softmax(forward(cfg, params, tokens, mask) / temperature))
  return [
      logprobs[i, width - len(c) - 1 : width - 1][np.arange(len(c)), c]
      for i, c in enumerate(completions)
  ]


def hf_greedy(path, prompts, max_new_tokens, eos):
  import torch
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = eos
  width = max(map(len, prompts))
  ids = torch.zeros((len(prompts), width), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(prompts):
    ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
  with torch.no_grad():
    out = model.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=0,
        eos_token_id=eos,
    )
  rows = out[:, width:].tolist()
  return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def test_greedy_matches_transformers_with_left_padding_and_a_stop_token(model, tiny_qwen3_dir):
  cfg, params = model
  free = generate(cfg, params, PROMPTS, max_new_tokens=12, temperature=0.0)
  assert not any(free.finished) and all(len(row) == 12 for row in free.tokens)
  stop = free.tokens[1][4]  # a token prompt 1 emits mid-way: that row (at least) must stop on it
  out = generate(cfg, params, PROMPTS, max_new_tokens=12, temperature=0.0, stop_token_ids=(stop,))
  want = hf_greedy(tiny_qwen3_dir, PROMPTS, 12, eos=stop)
  assert out.tokens == want
  assert out.finished == [row[-1] == stop for row in want]
  assert out.finished[1] and len(out.tokens[1]) <= 5 and not all(out.finished)
  assert all(len(row) == 12 for row, done in zip(out.tokens, out.finished) if not done)
  assert [row[: len(cut)] for row, cut in zip(free.tokens, out.tokens)] == out.tokens
  assert (
      generate(cfg, params, PROMPTS, max_new_tokens=12, temperature=0.0, stop_token_ids=stop).tokens
      == out.tokens
  )  # one id, not in a sequence
  for got, ref in zip(out.logprobs, teacher_forced_logprobs(cfg, params, PROMPTS, out.tokens, 1.0)):
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_sampled_logprobs_equal_teacher_forced_full_softmax(model, sampled):
  cfg, params = model
  prompts = [p for p in PROMPTS for _ in range(2)]  # samples are grouped per prompt, in order
  assert len(sampled.tokens) == 8
  ref = teacher_forced_logprobs(cfg, params, prompts, sampled.tokens, temperature=0.8)
  for got, want in zip(sampled.logprobs, ref):
    np.testing.assert_allclose(got, want, atol=1e-4)
  assert np.all(np.asarray(sampled.logprob_array) <= 0)
  assert sampled.token_array.shape == (8, max(map(len, sampled.tokens)))
  np.testing.assert_array_equal(sampled.lengths, [len(t) for t in sampled.tokens])


def test_num_samples_are_contiguous_groups(model):
  cfg, params = model
  single = generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=0.0)
  doubled = generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=0.0, num_samples=2)
  repeated = types.SimpleNamespace(
      tokens=per_row(single.tokens, 2), logprobs=per_row(single.logprobs, 2)
  )
  assert_same_draws(cfg, params, per_row(PROMPTS, 2), doubled, repeated, seed=0, temperature=0.0)


def test_same_seed_same_output_other_seed_differs(model, sampled):
  cfg, params = model
  again = generate(cfg, params, PROMPTS, **SAMPLING)
  assert again.tokens == sampled.tokens
  np.testing.assert_array_equal(again.logprob_array, sampled.logprob_array)
  other = generate(cfg, params, PROMPTS, **{**SAMPLING, "seed": 4})
  assert other.tokens != sampled.tokens
  assert sampled.tokens[0] != sampled.tokens[1] or sampled.tokens[2] != sampled.tokens[3]
  with pytest.raises(AssertionError, match="random streams differ"):  # the check sees other streams
    assert_same_draws(cfg, params, per_row(PROMPTS, 2), other, sampled, **draw_settings(SAMPLING))


def test_row_draws_do_not_depend_on_batch_padding(model, sampled):
  cfg, params = model
  fewer = generate(cfg, params, PROMPTS[:3], **SAMPLING)  # 6 rows, padded to 8 differently
  first = types.SimpleNamespace(tokens=sampled.tokens[:6], logprobs=sampled.logprobs[:6])
  assert_same_draws(cfg, params, per_row(PROMPTS[:3], 2), fewer, first, **draw_settings(SAMPLING))


@pytest.mark.parametrize("strategy, spec", STRATEGY_MESHES)
def test_sharded_draws_equal_unsharded(model, sampled, strategy, spec):
  cfg, params = model
  plan = sharding.make_plan(sharding.make_mesh(spec), strategy)
  placed = functional.shard_params(cfg, params, plan)
  out = generate(cfg, placed, PROMPTS, plan=plan, **SAMPLING)
  assert_same_draws(
      cfg, params, per_row(PROMPTS, 2), out, sampled, **draw_settings(SAMPLING), atol=1e-5
  )


def test_bfloat16_cache_stays_close(model):
  cfg, params = model
  out = generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=0.0, cache_dtype="bfloat16")
  ref = teacher_forced_logprobs(cfg, params, PROMPTS, out.tokens, 1.0)
  for got, want in zip(out.logprobs, ref):
    np.testing.assert_allclose(got, want, atol=5e-2)


def test_compiles_a_bounded_number_of_programs(model):
  cfg, params = model
  compiles = []
  listener = lambda event, duration, **kw: compiles.append(event)  # noqa: E731
  events = "/jax/core/compile/backend_compile_duration"
  rng = np.random.RandomState(0)
  prompts = lambda n, longest: [
      rng.randint(0, 97, size=rng.randint(1, longest + 1)).tolist() for _ in range(n)
  ]
  generate(cfg, params, prompts(4, 16), **SAMPLING)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for n, longest, new in [(3, 16, 9), (4, 11, 16), (3, 5, 12), (4, 16, 10)]:
      out = generate(cfg, params, prompts(n, longest), **{**SAMPLING, "max_new_tokens": new})
      assert len(out.tokens) == 2 * n
    assert [e for e in compiles if e == events] == []  # same buckets: nothing recompiles
    generate(cfg, params, [list(range(1, 30))], **SAMPLING)  # a longer prompt bucket
    # a new prompt bucket (and 2 slots): the empty state, prefill/insert and decode, nothing else
    assert [e for e in compiles if e == events] == [events] * 3
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_bad_inputs_raise_clear_errors(model):
  cfg, params = model
  cases = [
      ([[]], {}, "empty"),
      ([[1] * 257], {}, "context"),
      ([[1, 97]], {}, "token ids"),
      ([[1]], dict(max_new_tokens=0), "max_new_tokens"),
      ([[1]], dict(num_samples=0), "num_samples"),
      ([[1]], dict(temperature=-0.5), "temperature"),
      ([[1]], dict(top_p=0.0), "top_p"),
  ]
  for prompts, kwargs, message in cases:
    with pytest.raises(ValueError, match=message):
      generate(cfg, params, prompts, **{"max_new_tokens": 4, **kwargs})
  plain = generate(cfg, params, PROMPTS, max_new_tokens=4, seed=1)
  assert (
      generate(cfg, params, PROMPTS, max_new_tokens=4, seed=1, top_k=None, top_p=None).tokens
      == plain.tokens
  )  # None disables a cut, like 0 / 1.0
  empty = generate(cfg, params, [], max_new_tokens=4)
  assert empty.tokens == [] and empty.finished == []


# A long tail of completion lengths: 3 of the model's ids stop a row (tokens drawn at T = 1).
TAIL = dict(max_new_tokens=40, temperature=1.0, num_samples=4, seed=5, stop_token_ids=(8, 9, 10))
TAIL_PROMPTS = PROMPTS + [[40, 41], [7] * 12]


@pytest.fixture(scope="module")
def long_tail(model):
  return generate(*model, TAIL_PROMPTS, **TAIL)


def test_long_tail_workload_has_a_tail(long_tail):
  lengths = long_tail.lengths
  assert lengths.min() < 10 and lengths.max() == 40 and 0 < np.mean(long_tail.finished) < 1


TAIL_ROWS = per_row(TAIL_PROMPTS, TAIL["num_samples"])


@pytest.mark.parametrize("max_batch_size", [1, 7, 64, None])
def test_max_batch_size_keeps_each_rows_random_stream(model, long_tail, max_batch_size):
  """Slots refilled as rows stop (continuous batching): a row's random stream depends only on
  (seed, prompt, sample, token), so the completions are those of one batch of every row, up to
  draws that the logits' last bits (other batch shapes) move across a token boundary."""
  out = generate(*model, TAIL_PROMPTS, **TAIL, max_batch_size=max_batch_size)
  assert_same_draws(*model, TAIL_ROWS, out, long_tail, **draw_settings(TAIL), atol=1e-5)


def test_refilled_slots_spend_decode_steps_on_live_rows(model, long_tail):
  """Row-steps of a static batch: every slot runs until the longest row stops; with slots
  refilled, most row-steps go to live rows."""
  live_tokens = int(long_tail.lengths.sum())
  assert live_tokens / long_tail.decode_row_steps < 0.5  # one batch: short rows idle
  out = generate(*model, TAIL_PROMPTS, **TAIL, max_batch_size=4)
  assert live_tokens / out.decode_row_steps > 0.75


def test_refilled_slots_logprobs_equal_a_teacher_forced_forward(model):
  cfg, params = model
  out = generate(cfg, params, TAIL_PROMPTS[:4], **{**TAIL, "num_samples": 2}, max_batch_size=3)
  seqs = [TAIL_PROMPTS[i // 2] + t for i, t in enumerate(out.tokens)]
  width = max(map(len, seqs))
  tokens = np.zeros((len(seqs), width), np.int32)
  mask = np.zeros_like(tokens)
  for i, seq in enumerate(seqs):
    tokens[i, : len(seq)], mask[i, : len(seq)] = seq, 1
  logprobs = np.asarray(jax.nn.log_softmax(forward(cfg, params, tokens, mask), axis=-1))
  for i, completion in enumerate(out.tokens):
    start = len(TAIL_PROMPTS[i // 2]) - 1
    want = logprobs[i, start : start + len(completion)][np.arange(len(completion)), completion]
    np.testing.assert_allclose(out.logprobs[i], want, atol=2e-4)


def test_a_larger_cap_keeps_the_rows_that_stop_early(model, long_tail):
  """Cut at the smaller cap, the completions are those of the smaller cap (up to near ties): a
  row that stopped before it stops at the same token."""
  out = generate(*model, TAIL_PROMPTS, **{**TAIL, "max_new_tokens": 100}, max_batch_size=8)
  assert max(out.lengths) > 40
  cut = types.SimpleNamespace(
      tokens=[t[:40] for t in out.tokens], logprobs=[lp[:40] for lp in out.logprobs]
  )
  assert_same_draws(*model, TAIL_ROWS, cut, long_tail, **draw_settings(TAIL), atol=1e-5)


def test_max_batch_size_sharded_draws_equal_unsharded(model, long_tail):
  out = generate(
      *model,
      TAIL_PROMPTS,
      **TAIL,
      max_batch_size=6,
      mesh=sharding.make_mesh("data:2,tensor:4"),
      strategy="tp",
  )
  assert_same_draws(*model, TAIL_ROWS, out, long_tail, **draw_settings(TAIL), atol=1e-5)


# A shorter long tail, 48 rows: completions of at most 16 tokens after prompts of at most 16 (one
# attention window, so few programs to compile per mesh), 12 of the 97 ids stopping a row. All in
# flight, the stragglers compact (to 18 slots on 3 or 6 devices, 32 on 32); at most 16 in flight,
# the slots (18, 18, 32) are already at the floor.
COMPACT = dict(TAIL, num_samples=8, max_new_tokens=16, stop_token_ids=tuple(range(8, 20)))
COMPACT_RUNS = [dict(COMPACT), dict(COMPACT, max_batch_size=16)]


@pytest.fixture(scope="module")
def compact_reference(model):
  return [generate(*model, TAIL_PROMPTS, **kwargs) for kwargs in COMPACT_RUNS]


@pytest.mark.parametrize("devices", [3, 6, 32])
@pytest.mark.slow
def test_compaction_keeps_the_slot_axis_split(model, tiny_qwen3_dir, compact_reference, devices):
  """On `data:N` meshes that do not divide 16 (3, 6) or exceed it (32): every slot array, the
  compacted one included, is a multiple of N split over all devices (never replicated), a
  compaction always shrinks the slot array (none at the floor), and the completions are those of
  an unsharded run (up to near ties)."""
  runs = json.dumps([dict(prompts=TAIL_PROMPTS, kwargs=kwargs) for kwargs in COMPACT_RUNS])
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run(
      [sys.executable, "-m", "tests.support.sharded_worker", str(devices), tiny_qwen3_dir, runs],
      capture_output=True,
      text=True,
      timeout=900,
      env=env,
      cwd=REPO,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["batch_warnings"] == []  # nothing with a batch axis fell back to replication
  floor = {3: 18, 6: 18, 32: 32}[devices]
  (full, capped), (full_ref, capped_ref) = report["runs"], compact_reference
  for run in report["runs"]:
    assert all(slots % devices == 0 and split for slots, split in run["decodes"]), run["decodes"]
  assert [c[1:] for c in full["compactions"]] == [[floor, True]]
  assert full["compactions"][0][0] > floor and full["decodes"][-1][0] == floor
  assert capped["compactions"] == [] and {s for s, _ in capped["decodes"]} == {floor}
  for run, ref in ((full, full_ref), (capped, capped_ref)):
    out = types.SimpleNamespace(tokens=run["tokens"], logprobs=run["logprobs"])
    rows = per_row(TAIL_PROMPTS, COMPACT["num_samples"])
    assert_same_draws(*model, rows, out, ref, **draw_settings(COMPACT), atol=1e-5)


def test_near_tie_check_accepts_draws_moved_by_logit_noise(model, compact_reference):
  """Weights perturbed by 1e-3 (relative) move the logits a little: draws next to a boundary flip
  in some rows (4 of 48), and the check passes them as near ties at a tolerance above that noise."""
  cfg, params = model
  rng = np.random.RandomState(1)
  noisy = jax.tree.map(lambda p: p * (1 + 1e-3 * rng.standard_normal(p.shape)), params)
  out = generate(cfg, jax.tree.map(np.float32, noisy), TAIL_PROMPTS, **COMPACT)
  ref = compact_reference[0]
  rows = per_row(TAIL_PROMPTS, COMPACT["num_samples"])
  differ = assert_same_draws(
      cfg, params, rows, out, ref, **draw_settings(COMPACT), tol=3e-3, atol=1e-1
  )
  assert 0 < differ == sum(a != b for a, b in zip(out.tokens, ref.tokens))


def test_identical_prompts_are_prefilled_once(model, monkeypatch):
  """Prompts with the same tokens at other indices share one prefill (the samples of a prompt
  already did); each row keeps its own random stream, and the completions are unchanged."""
  a, b, c = TAIL_PROMPTS[1], TAIL_PROMPTS[3], TAIL_PROMPTS[5]
  prompts = [a, b, list(a), c, b, a]
  settings = dict(COMPACT, num_samples=2)
  shared = generate(*model, prompts, **settings)
  monkeypatch.setattr(sampler, "_first_of_each_prompt", lambda ps: np.arange(len(ps)))
  apart = generate(*model, prompts, **settings)  # each index prefilled, as before
  assert (shared.prefill_rows, apart.prefill_rows) == (3, 6)
  rows = per_row(prompts, 2)
  assert_same_draws(*model, rows, shared, apart, **draw_settings(settings), atol=1e-5)
  assert shared.tokens[0] != shared.tokens[4] or shared.tokens[1] != shared.tokens[5]


def test_decoding_past_the_context_is_logged_once(model, monkeypatch, caplog):
  cfg, params = model
  monkeypatch.setattr(sampler, "_warned", set())
  long_prompt = list(range(1, 97)) * 2 + list(range(1, 60))  # 251 of the 256 positions
  with caplog.at_level(logging.WARNING, logger=sampler.__name__):
    generate(cfg, params, [long_prompt], max_new_tokens=5, temperature=0.0)  # 256: fits
    assert caplog.records == []
    generate(cfg, params, [long_prompt, [3]], max_new_tokens=8, temperature=0.0)
    generate(cfg, params, [long_prompt], max_new_tokens=8, temperature=0.0)
  assert len(caplog.records) == 1
  assert "1 of 2 completions ran past the model's context of 256" in caplog.records[0].message
