"""CRUXEval conformance of the executor's calling convention (AZR's and CRUXEval's).

Runs all 800 tasks of `<repo>/../shared/data/benchmarks/cruxeval.jsonl` (skipped when absent):
every task whose input is literal (or uses dict/set/frozenset/tuple/list constructors of
literals) must reproduce its gold output; the 8 with expression inputs may be refused, with a
reason that names the offending argument.
"""

import ast
import json
import os

import pytest

from rzero_jax.verify.executor import Executor, same_output

DATA = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "data", "benchmarks", "cruxeval.jsonl"
)
EXPRESSION_INPUTS = {
    "sample_152",
    "sample_239",
    "sample_258",
    "sample_344",
    "sample_364",
    "sample_522",
    "sample_720",
    "sample_770",
}

pytestmark = pytest.mark.skipif(not os.path.exists(DATA), reason="no ../shared/data/benchmarks")


def _literal_arguments(text: str) -> bool:
  """Independent of the executor: every argument of f(<text>) literal_evals, or is a call of
  dict/set/frozenset/tuple/list whose own arguments literal_eval."""
  call = ast.parse(f"f({text}\n)", mode="eval").body

  def ok(node):
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("dict", "set", "frozenset", "tuple", "list")
    ):
      return all(ok(a) for a in node.args) and all(ok(k.value) for k in node.keywords)
    try:
      ast.literal_eval(node)
      return True
    except ValueError:
      return False

  return all(ok(a) for a in call.args) and all(ok(k.value) for k in call.keywords)


@pytest.fixture(scope="module")
def outcomes():
  with open(DATA) as f:
    rows = [json.loads(line) for line in f]
  with Executor(workers=2) as executor:
    results = executor.run_many([(row["code"], row["input"]) for row in rows], timeout_s=5.0)
  return rows, results


def test_all_800_tasks(outcomes):
  rows, results = outcomes
  assert len(rows) == 800
  literal = [(row, r) for row, r in zip(rows, results) if row["id"] not in EXPRESSION_INPUTS]
  assert len(literal) == 792
  assert all(_literal_arguments(row["input"]) for row, _ in literal)
  missed = [
      (row["id"], r) for row, r in literal if not (r.ok and same_output(r.output, row["output"]))
  ]
  assert missed == []
  for row, r in zip(rows, results):
    if row["id"] in EXPRESSION_INPUTS:
      assert not _literal_arguments(row["input"])
      reproduced = r.ok and same_output(r.output, row["output"])
      refused = r.status == "rejected" and "is not a literal" in r.error
      assert reproduced or refused, (row["id"], r)


def test_former_misses(outcomes):
  rows, results = outcomes
  by_id = {row["id"]: (row, r) for row, r in zip(rows, results)}
  for name in (
      "sample_415",
      "sample_771",
      "sample_378",
      "sample_459",
      "sample_694",
      "sample_760",
      "sample_683",
      "sample_621",
  ):
    row, r = by_id[name]
    assert r.ok and same_output(r.output, row["output"]), (name, r)
