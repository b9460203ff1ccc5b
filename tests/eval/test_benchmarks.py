"""Benchmark registry and loaders: names, file layouts, errors."""

import json
import os

import pytest

from rzero_jax.eval import BENCHMARKS, BenchmarkError, load_benchmark
from rzero_jax.eval import benchmarks

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def test_names_and_aliases():
  assert set(BENCHMARKS) >= {
      "math500",
      "gsm8k",
      "amc23",
      "aime24",
      "aime25",
      "minerva_math",
      "olympiadbench",
      "mmlu_pro",
      "supergpqa",
      "bbeh",
      "humaneval_plus",
      "mbpp_plus",
      "cruxeval_o",
      "cruxeval_i",
  }
  assert benchmarks.resolve("mbppplus").name == "mbpp_plus"
  assert benchmarks.resolve("MATH500").name == "math500"
  with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'"):
    load_benchmark("nope", DATA)
  with pytest.raises(BenchmarkError, match="not supported yet"):
    load_benchmark("livecodebench", DATA)


def test_items_have_id_question_and_answer_in_file_order():
  items = load_benchmark("gsm8k", DATA)
  assert [it["id"] for it in items] == ["0", "1", "2", "3"]
  assert all(isinstance(it["question"], str) and "answer" in it for it in items)
  assert items[0]["benchmark"] == "gsm8k"


def test_file_or_directory(tmp_path):
  assert load_benchmark("gsm8k", os.path.join(DATA, "gsm8k.jsonl")) == load_benchmark("gsm8k", DATA)
  with pytest.raises(BenchmarkError, match="no file for benchmark 'aime24'"):
    load_benchmark("aime24", DATA)
  with pytest.raises(BenchmarkError, match="does not exist"):
    load_benchmark("gsm8k", str(tmp_path / "missing.jsonl"))
  bad = tmp_path / "gsm8k.jsonl"
  bad.write_text("{not json\n")
  with pytest.raises(BenchmarkError, match="not valid JSON"):
    load_benchmark("gsm8k", str(tmp_path))


def test_json_and_parquet_layouts(tmp_path):
  rows = [{"problem": "1+1?", "answer": 2.0, "id": 7}, {"problem": "2+2?", "answer": "4", "id": 8}]
  (tmp_path / "amc23.json").write_text(json.dumps(rows))
  items = load_benchmark("amc23", str(tmp_path))
  assert [(it["id"], it["answer"]) for it in items] == [("7", "2"), ("8", "4")]
  import datasets

  datasets.Dataset.from_list([{"problem": "1+1?", "answer": "2"}]).to_parquet(
      str(tmp_path / "aime24.parquet")
  )
  assert load_benchmark("aime24", str(tmp_path))[0]["answer"] == "2"


def test_reference_formats():
  minerva = benchmarks.BENCHMARKS["minerva_math"].normalize(
      {"problem": "p", "solution": "so \\boxed{1} and then \\boxed{\\frac{1}{2}}"}, 0
  )
  assert minerva["answer"] == "\\frac{1}{2}"
  olympiad = benchmarks.BENCHMARKS["olympiadbench"].normalize(
      {"question": "q", "final_answer": ["$\\sqrt{2}$"], "id": 3}, 0
  )
  assert olympiad == {"id": "3", "question": "q", "answer": "\\sqrt{2}"}
  mmlu = benchmarks.BENCHMARKS["mmlu_pro"].normalize(
      {"question": "q", "options": ["a", "b"], "answer_index": 1, "answer": None}, 0
  )
  assert mmlu["answer"] == "B"


def test_offline_without_local_file_says_how_to_get_it(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(BenchmarkError) as e:
    load_benchmark("math500")
  message = str(e.value)
  assert "\n" not in message and "HuggingFaceH4/MATH-500" in message and "--data_dir" in message
