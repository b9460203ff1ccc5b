"""`python -m rzero_jax.sft`: response-only loss, resume, sharded == unsharded, bad data files,
and an export that transformers loads to the same logits."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rzero_jax import sft
from rzero_jax.models import forward, load_pretrained, load_tokenizer
from rzero_jax.training.sft import make_sft_batch, sft_loss
from tests.support import REPO, hf_fixtures

MODEL = os.path.join(REPO, "experiments", "toy_arith", "base_model")
FLAGS = ["--batch_size=4", "--lr=3e-4", "--max_len=96", "--dtype=float32", "--checkpoint_every=2"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("sft") / "train.jsonl"
  rows = [
      {"question": f"What is {a} + {b}?", "response": f"{a} + {b} = {a + b}\n\\boxed{{{a + b}}}"}
      for a, b in [(3, 4), (12, 7), (25, 30), (8, 9), (41, 2), (6, 6)]
  ]
  rows.append({"prompt": "user\nWhat is 2 * 3?\nassistant\n", "response": "\\boxed{6}"})
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _cli(out, *flags, devices=1, timeout=600):
  env = dict(
      os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )
  env.pop("PYTEST_CURRENT_TEST", None)
  proc = subprocess.run(
      [sys.executable, "-m", "rzero_jax.sft", f"--model={MODEL}", f"--out={out}", *flags],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  return proc.returncode, proc.stdout + proc.stderr


def _export(out):
  return load_pretrained(os.path.join(out, "export"), dtype="float32")[1]


def test_loss_covers_only_the_response(data_file):
  tokenizer = load_tokenizer(MODEL)
  examples = sft.read_examples(data_file, tokenizer, max_len=96)
  assert examples[-1].response[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
  cfg, params = load_pretrained(MODEL, dtype="float32")
  batch = make_sft_batch(
      [e.prompt for e in examples], [e.response for e in examples], 96, tokenizer.pad_token_id
  )
  loss, _ = sft_loss(cfg, params, batch)
  # Independent reference: log-softmax of the logits, summed over response tokens only.
  logp = np.asarray(
      jax.nn.log_softmax(forward(cfg, params, batch["tokens"], batch["attention_mask"]), axis=-1)
  )
  total, count = 0.0, 0
  for row, e in enumerate(examples):
    for t in range(len(e.prompt), len(e.prompt) + len(e.response)):
      total -= logp[row, t - 1, batch["tokens"][row, t]]
      count += 1
  assert float(loss) == pytest.approx(total / count, rel=1e-5)
  assert count == sum(len(e.response) for e in examples)


def test_batch_order_is_a_function_of_seed_and_step():
  first = [sft.batch_order(10, 4, 0, s) for s in range(5)]
  assert [list(b) for b in first] == [list(sft.batch_order(10, 4, 0, s)) for s in range(5)]
  assert sorted(np.concatenate(first[:2]).tolist() + first[2][:2].tolist()) == list(range(10))
  assert len(first[2]) == 4  # spans two epochs


@pytest.mark.slow
def test_resume_sharding_and_export(tmp_path, data_file):
  straight = tmp_path / "straight"
  code, out = _cli(straight, f"--data={data_file}", "--steps=4", *FLAGS)
  assert code == 0, out
  summary = json.loads((straight / "summary.json").read_text())
  assert summary["steps"] == 4 and len(summary["losses"]) == 4

  resumed = tmp_path / "resumed"  # stopped after 2 steps, then the same command with 4
  assert _cli(resumed, f"--data={data_file}", "--steps=2", *FLAGS)[0] == 0
  code, out = _cli(resumed, f"--data={data_file}", "--steps=4", *FLAGS)
  assert code == 0 and "resuming from checkpoint at step 2" in out, out
  jax.tree.map(np.testing.assert_array_equal, _export(resumed), _export(straight))
  assert json.loads((resumed / "summary.json").read_text())["losses"] == summary["losses"]

  # Two micro-batches of 2 per step, each split over 2 devices: the same update as the whole batch
  # at once (exact accumulation), up to float rounding.
  micro = tmp_path / "micro"
  code, out = _cli(
      micro,
      f"--data={data_file}",
      "--steps=4",
      "--micro_batch_size=2",
      "--mesh=fsdp:2",
      *FLAGS,
      devices=2,
  )
  assert code == 0, out
  micro_summary = json.loads((micro / "summary.json").read_text())
  assert micro_summary["flags"]["micro_batch_size"] == 2
  np.testing.assert_allclose(micro_summary["losses"], summary["losses"], rtol=1e-4)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5), _export(micro), _export(straight)
  )

  sharded = tmp_path / "sharded"
  code, out = _cli(sharded, f"--data={data_file}", "--steps=4", "--mesh=fsdp:2", *FLAGS, devices=2)
  assert code == 0, out
  np.testing.assert_allclose(
      json.loads((sharded / "summary.json").read_text())["losses"], summary["losses"], rtol=1e-4
  )
  # AdamW divides by the gradient's scale, so where gradients are ~0 summation-order noise moves
  # weights by a fraction of one step (lr 3e-4): compare to well within that.
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5), _export(sharded), _export(straight)
  )

  tokens = np.array([[5, 17, 3, 99, 2, 61, 7, 30]])
  cfg, params = load_pretrained(str(straight / "export"), dtype="float32")
  np.testing.assert_allclose(
      hf_fixtures.hf_logits(str(straight / "export"), tokens),
      np.asarray(forward(cfg, params, tokens)),
      atol=1e-4,
  )
  assert load_tokenizer(str(straight / "export")).chat_template


@pytest.mark.slow
def test_lora_trains_adapters_and_exports_the_merged_model(tmp_path, data_file):
  out = tmp_path / "lora"
  code, output = _cli(
      out,
      f"--data={data_file}",
      "--steps=3",
      "--lora_rank=4",
      "--lora_alpha=8",
      "--lr=1e-2",
      *FLAGS,
  )
  assert code == 0, output
  _, base = load_pretrained(MODEL, dtype="float32")
  cfg, merged = load_pretrained(str(out / "export"), dtype="float32")
  assert cfg.lora_rank == 0  # a plain HF checkpoint: adapters folded into the weights
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), merged, base)
  assert changed["layers"]["q"] and changed["layers"]["down"]  # adapted projections moved
  assert not changed["embed"] and not changed["layers"]["attn_norm"]  # the frozen rest did not
  tokens = np.array([[5, 17, 3, 99, 2, 61, 7, 30]])
  np.testing.assert_allclose(
      hf_fixtures.hf_logits(str(out / "export"), tokens),
      np.asarray(forward(cfg, merged, tokens)),
      atol=1e-4,
  )


@pytest.mark.parametrize(
    "lines,message",
    [
        (None, "does not exist"),
        (['{"question": "q", "response": "r"}', "{not json"], "train.jsonl:2 is not valid JSON"),
        (['{"question": "q"}'], "train.jsonl:1 needs a string field 'response'"),
        (['{"question": "q", "prompt": "p", "response": "r"}'], "exactly one of"),
        (['{"response": "r"}'], "train.jsonl:1 needs exactly one of"),
        (['{"question": "q", "response": "' + "9 " * 200 + '"}'], "more than --max_len=96"),
        ([], "holds no examples"),
    ],
)
def test_bad_data_fails_with_one_line_and_writes_nothing(tmp_path, lines, message):
  path = tmp_path / "train.jsonl"
  if lines is not None:
    path.write_text("".join(line + "\n" for line in lines))
  out = tmp_path / "out"
  code, output = _cli(out, f"--data={path}", "--steps=1", *FLAGS, timeout=300)
  assert code == 2 and "Traceback" not in output, output
  # One error line (transformers may add its own "PyTorch was not found" notice without torch).
  errors = [line for line in output.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], output
  assert not out.exists()


def test_bad_flags(tmp_path, data_file):
  code, output = _cli(tmp_path / "o", f"--data={data_file}", "--steps=2", "--epochs=1", timeout=300)
  assert code == 2 and "not both" in output and not (tmp_path / "o").exists()
  code, output = _cli(
      tmp_path / "o", f"--data={data_file}", "--batch_size=4", "--micro_batch_size=3", timeout=300
  )
  assert code == 2 and "--micro_batch_size=3 must divide --batch_size=4" in output, output
  assert not (tmp_path / "o").exists()
