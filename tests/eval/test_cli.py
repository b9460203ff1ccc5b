"""The ``python -m rzero_jax.eval`` CLI on the committed toy model, and ``evaluate``."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from tests.support import REPO

TOY = os.path.join(REPO, "experiments", "toy_arith", "base_model")
DATA = os.path.join(REPO, "tests", "eval", "data")


def _cli(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, HF_HUB_OFFLINE="1")
  env.pop("XLA_FLAGS", None)
  return subprocess.run(
      [sys.executable, "-m", "rzero_jax.eval", *args],
      capture_output=True,
      text=True,
      env=env,
      timeout=timeout,
      cwd=REPO,
  )


ARGS = [
    f"--model={TOY}",
    "--benchmarks=gsm8k,mmlu_pro,humaneval_plus",
    f"--data_dir={DATA}",
    "--limit=2",
    "--max_new_tokens=16",
    "--dtype=float32",
]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cli") / "out"
  return _cli(*ARGS, f"--out={out}"), out


@pytest.mark.slow
def test_cli_on_toy_model_with_limit(single_run):
  r, out = single_run
  assert r.returncode == 0, r.stderr[-2000:]
  assert "| model | gsm8k | mmlu_pro | humaneval_plus | math avg | overall |" in r.stdout
  assert "eval completions 6/6" in r.stderr  # 3 benchmarks x 2 items, one sample each
  results = json.loads((out / "results.json").read_text())
  assert set(results["benchmarks"]) == {"gsm8k", "mmlu_pro", "humaneval_plus"}
  assert results["benchmarks"]["gsm8k"]["items"] == 2
  assert 0.0 <= results["overall"] <= 1.0 and results["math_average"] is not None
  records = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
  assert len(records) == 2
  assert set(records[0]) >= {"id", "prompt", "response", "extracted", "gold", "score"}
  assert records[0]["gold"] == "36" and "<|im_start|>user" in records[0]["prompt"]
  assert sorted(os.listdir(out)) == [
      "gsm8k.jsonl",
      "humaneval_plus.jsonl",
      "mmlu_pro.jsonl",
      "results.json",
  ]


@pytest.mark.slow
def test_cli_two_processes_match_one_and_only_process_0_writes(single_run, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, HF_HUB_OFFLINE="1")
  env.pop("XLA_FLAGS", None)  # one CPU device per process: the mesh spans both processes
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "rzero_jax.eval",
              *ARGS,
              f"--out={tmp_path / f'out{i}'}",
              "--mesh=data:-1",
              "--strategy=dp",
              f"--coordinator_address=127.0.0.1:{port}",
              "--num_processes=2",
              f"--process_id={i}",
          ],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
          env=env,
          cwd=REPO,
      )
      for i in range(2)
  ]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
  assert not (tmp_path / "out1").exists()
  two = json.loads((tmp_path / "out0" / "results.json").read_text())
  one = json.loads((single_run[1] / "results.json").read_text())
  assert two["benchmarks"] == one["benchmarks"]
  for name in one["benchmarks"]:
    a = (tmp_path / "out0" / f"{name}.jsonl").read_text()
    assert a == (single_run[1] / f"{name}.jsonl").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--benchmarks=gsm8k,nope"], "unknown benchmark 'nope'"),
        (["--benchmarks=aime24"], "no file for benchmark 'aime24'"),
        (["--benchmarks=gsm8k", "--samples=0"], "samples"),
        (["--benchmarks=gsm8k", "--no_such_flag=1"], "no_such_flag"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, args, message):
  out = tmp_path / "out"
  r = _cli(f"--model={TOY}", f"--data_dir={DATA}", f"--out={out}", *args, timeout=120)
  assert r.returncode == 2, (r.stdout, r.stderr)
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
  assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--top_p=0"], "--top_p must be in (0, 1]"),
        (["--top_p=0", "--samples=4"], "--top_p must be in (0, 1]"),
        (["--strategy=dp"], "--strategy needs --mesh"),
        (["--num_processes=2", "--process_id=2"], "--process_id=2 is not below"),
        (["--dtype=int8"], "--dtype must be"),
    ],
)
def test_cli_bad_values_fail_before_the_model_path_is_read(tmp_path, args, message):
  # the model path does not exist either: the value is checked first, long before any loading
  out = tmp_path / "out"
  r = _cli(
      f"--model={tmp_path / 'no_model'}",
      "--benchmarks=gsm8k",
      f"--data_dir={DATA}",
      f"--out={out}",
      *args,
      timeout=120,
  )
  assert r.returncode == 2, (r.stdout, r.stderr)
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
  assert not out.exists()


def _unusable_out(tmp_path, kind):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  return {
      "is_a_file": (a_file, "exists and is not a directory"),
      "under_a_file": (a_file / "out", f"cannot be created: {str(a_file)!r} is not a directory"),
      "unwritable_parent": ("/proc/rzero_eval_out/x", "cannot be created in '/proc'"),
  }[kind]


@pytest.mark.parametrize("kind", ["is_a_file", "under_a_file", "unwritable_parent"])
def test_cli_unusable_out_fails_at_once_before_the_model(tmp_path, kind):
  out, message = _unusable_out(tmp_path, kind)
  for model in (tmp_path / "no_model", TOY):  # reported before the model path is even read
    r = _cli(
        f"--model={model}", "--benchmarks=gsm8k", f"--data_dir={DATA}", f"--out={out}", timeout=120
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out") and message in lines[0], lines
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_check_out_dir_creates_nothing(tmp_path):
  from rzero_jax.eval.results import check_out_dir

  check_out_dir(str(tmp_path))  # an existing, writable directory
  check_out_dir(str(tmp_path / "new" / "deeper"))  # creatable: its parent is writable
  assert list(tmp_path.iterdir()) == []
  for kind in ("is_a_file", "under_a_file", "unwritable_parent"):
    out, message = _unusable_out(tmp_path, kind)
    with pytest.raises(ValueError, match=re.escape(message)):
      check_out_dir(str(out))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def toy_messages(name, item):  # the toy model answers its own training prompt
  from rzero_jax.rzero.prompts import SOLVER_SYSTEM

  return [
      {"role": "system", "content": SOLVER_SYSTEM},
      {"role": "user", "content": item["question"]},
  ]


@pytest.fixture(scope="module")
def toy_eval():
  """`evaluate` on the toy model: first 3 gsm8k items, 16 new tokens, the toy's own prompt."""
  from rzero_jax.eval import evaluate
  from rzero_jax.models import load_pretrained, load_tokenizer

  tokenizer = load_tokenizer(TOY)
  cfg, params = load_pretrained(TOY, dtype="float32")

  def run(names=("gsm8k",), **kwargs):
    settings = dict(data_dir=DATA, limit=3, max_new_tokens=16, messages_fn=toy_messages)
    return evaluate(cfg, params, tokenizer, list(names), **{**settings, **kwargs})

  return run


def test_evaluate_library_function_with_samples(toy_eval):
  from rzero_jax.eval import flat_metrics, format_table

  greedy = toy_eval()
  assert greedy["benchmarks"]["gsm8k"]["items"] == 3
  assert greedy["math_average"] == greedy["benchmarks"]["gsm8k"]["score"]
  assert all(r["response"].strip() for r in greedy["records"]["gsm8k"])
  again = toy_eval(keep_records=False)
  assert again["benchmarks"] == greedy["benchmarks"] and "records" not in again
  sampled = toy_eval(samples=2, temperature=1.0)
  entry = sampled["benchmarks"]["gsm8k"]
  assert entry["samples"] == 2 and entry["score"] <= entry["pass@k"] <= 1.0
  assert len(sampled["records"]["gsm8k"][0]["responses"]) == 2
  assert "(avg@2; pass@2: gsm8k" in format_table(sampled, "toy")
  assert set(flat_metrics(sampled)) == {
      "eval/gsm8k",
      "eval/gsm8k/pass@2",
      "eval/math_average",
      "eval/overall",
  }
  with pytest.raises(ValueError, match="temperature"):
    toy_eval(samples=2, temperature=0.0)


def test_sampled_scores_depend_neither_on_batch_size_nor_on_the_other_benchmarks(toy_eval):
  # One generate call, each item on its own random streams: the rows in flight (--batch_size) and
  # what else is evaluated change neither the scores nor any completion.
  one_row = toy_eval(samples=3, temperature=1.0, batch_size=1)
  records = one_row["records"]["gsm8k"]
  assert any(len(set(r["responses"])) > 1 for r in records)  # the samples do differ
  all_rows = toy_eval(samples=3, temperature=1.0, batch_size=64)
  assert all_rows["benchmarks"] == one_row["benchmarks"]
  assert all_rows["records"] == one_row["records"]  # the same completions, sample by sample
  more = toy_eval(["math500", "gsm8k"], samples=3, temperature=1.0, batch_size=4, limit=4)
  assert more["records"]["gsm8k"][:3] == records


def test_process_shards_cover_every_job_once():
  from rzero_jax.eval.evaluation import process_shard

  for n in (0, 1, 7, 64):
    for count in (1, 2, 3, 8):
      shards = [process_shard(n, i, count) for i in range(count)]
      assert [j for s in shards for j in s] == list(range(n))
