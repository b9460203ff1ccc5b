"""Scorers on small fixtures of our own in the hub / reference formats (every kind is covered)."""

import os

import pytest

from rzero_jax.eval import load_benchmark, score, score_many
from rzero_jax.eval import scoring

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _items(name, file=None):
  return load_benchmark(name, os.path.join(DATA, file) if file else DATA)


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "response,letter",
    [
        ("so \\boxed{B}", "B"),
        ("\\boxed{(C)}", "C"),
        ("\\boxed{\\text{D}}", "D"),
        ("\\boxed{A. Mars}", "A"),
        ("first \\boxed{A} then \\boxed{C}", "C"),
        ("The answer is (B).", "B"),
        ("Final Answer: C", "C"),
        ("I am not sure.", None),
        ("\\boxed{Z}", None),
        ("", None),
        # the letter in quotes, ASCII or curly, after an answer line or in the box
        ('So the answer is "C".\n\nAnswer: "C"', "C"),
        ("The answer is 'B'.", "B"),
        ("Final Answer: \u201cD\u201d", "D"),
        ("The answer is \u2018A\u2019", "A"),
        ("The answer is `E`", "E"),
        ('The answer is "B."', "B"),
        ("Final Answer: **'C'**", "C"),
        ("\\boxed{'C'}", "C"),
        ('\\boxed{"b"}', "B"),
        ("\\boxed{\\text{\u201cA\u201d}}", "A"),
        # look-alikes: a quoted lower-case letter counts (as "(b)" does), a bare one or a quoted
        # word does not
        ("Answer: 'b'", "B"),
        ("Answer: c", None),
        ("The answer is 'Because it is'", None),
        ("The answer is 'a lot'", None),
        ('The answer is "B', None),
    ],
)
def test_choice_letter(response, letter):
  assert scoring.choice_letter(response, 10) == letter


def test_choice_letter_respects_option_count():
  assert scoring.choice_letter("\\boxed{E}", 4) is None


@pytest.mark.parametrize(
    "response,reference,ok",
    [
        ("The answer is (B).", "(B)", True),
        ("The answer is: b", "(B)", True),
        ("\\boxed{42}", "42", True),
        ("The answer is 42.0", "42", True),
        ("The answer is apple, pear", "apple, pear", True),
        ("The answer is 'yes'", "yes", True),
        ("The answer is [x]", "x", True),
        ("The answer is 41", "42", False),
    ],
)
def test_bbeh_fuzzy_match(response, reference, ok):
  assert scoring.bbeh_match(scoring.bbeh_prediction(response), reference) is ok


def test_code_block():
  assert scoring.code_block("text\n```python\na = 1\n```\nmore\n```python\nb = 2\n```") == "b = 2\n"
  assert scoring.code_block("```\nx = 1\n```") == "x = 1\n"
  assert scoring.code_block("```python\nx = 1\n") == "x = 1\n"  # unterminated
  assert scoring.code_block("def f():\n  return 1\n") == "def f():\n  return 1\n"
  assert scoring.code_block("no code here, sorry") is None


EXAMPLE = "```python\nprint(add(2, 3))\nassert add(2, 2) == 5  # a wrong example\n```\n"


@pytest.mark.parametrize(
    "response,code",
    [
        # a trailing usage block (its calls, prints and failing assert are dropped)
        (
            "```python\ndef add(x, y):\n    return x + y\n```\nUsage:\n" + EXAMPLE,
            "def add(x, y):\n    return x + y\n",
        ),
        # a leading explanation block: the later definition replaces the sketch
        (
            "Sketch:\n```python\ndef add(x, y):\n    ...\n```\nSolution:\n"
            "```python\ndef add(x, y):\n    return x + y\n```",
            "def add(x, y):\n    return x + y\n",
        ),
        # a solution split over two blocks, with the import that the helper uses
        (
            "```python\nimport operator\nimport os\n\ndef plus(a, b):\n"
            "    return operator.add(a, b)\n```\nthen\n```python\ndef add(x, y):\n"
            "    return plus(x, y)\n\n"
            "if __name__ == '__main__':\n    print(add(1, 2))\n```",
            "import operator\ndef plus(a, b):\n    return operator.add(a, b)\n"
            "def add(x, y):\n    return plus(x, y)\n",
        ),
        # a local name that a usage block also assigns does not pull the assignment in
        (
            "```python\ndef add(x, y):\n    total = x + y\n    return total\n```\n"
            "```python\ntotal = add(1, 2)\nprint(total)\n```",
            "def add(x, y):\n    total = x + y\n    return total\n",
        ),
        # module-level names it does read are kept, an import of its own name is not
        (
            "```python\nfrom solution import add\nfrom functools import lru_cache\n"
            "OFFSET = 0\n\n@lru_cache(None)\ndef add(x, y):\n    return x + y + OFFSET\n```",
            "from functools import lru_cache\nOFFSET = 0\n@lru_cache(None)\n"
            "def add(x, y):\n    return x + y + OFFSET\n",
        ),
        # no fences: the largest parseable part of the text; a REPL tail in a block is cut
        (
            "Here is the code:\n\ndef add(x, y):\n    return x + y\n\nIt adds the numbers.",
            "def add(x, y):\n    return x + y\n",
        ),
        (
            "```python\ndef add(x, y):\n    return x + y\n>>> add(2, 3)\n5\n```",
            "def add(x, y):\n    return x + y\n",
        ),
        # __future__ imports are kept, first
        (
            "```python\nimport math\nfrom __future__ import annotations\ndef add(x: Num, y):\n"
            "    return x + y\n```",
            "from __future__ import annotations\ndef add(x: Num, y):\n    return x + y\n",
        ),
        # nothing defines the entry point: the last block, as before (a completion)
        ("```python\n    return x + y\n```", "    return x + y\n"),
    ],
)
def test_solution_code_is_evalplus_sanitized(response, code):
  assert scoring.solution_code(response, "add") == code


def test_sanitizer_parse_attempts_are_bounded(monkeypatch):
  import ast

  calls = []
  real_parse = ast.parse
  monkeypatch.setattr(ast, "parse", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
  for text in ("word " * 20 + "\n") * 5000, "x = (\n" * 3000, "def f(:\n" * 3000:
    calls.clear()
    assert scoring.solution_code(text, "add") is None
    # the whole text once per try (two tries, then code_block's), plus the capped search
    assert len(calls) <= 3 + scoring.MAX_SANITIZE_PARSES


def test_crux_answer():
  r = "Step by step...\n```python\nassert f([3, 1]) == [3, 1]\n```"
  assert scoring.crux_answer(r, "o") == "[3, 1]"
  assert scoring.crux_answer(r, "i") == "[3, 1]"
  assert scoring.crux_answer("```python\nassert f('ab', 2) == 'abab'\n```", "i") == "'ab', 2"
  assert scoring.crux_answer("the output is \\boxed{5}", "o") == "5"


# ---------------------------------------------------------------- math


def test_math_scores():
  items = _items("math500")
  assert [it["answer"] for it in items] == ["7", "\\frac{3}{4}"]
  assert score("math500", items[1], "so \\boxed{0.75}") == 1.0
  assert score("math500", items[1], "so \\boxed{3/4}") == 1.0
  assert score("math500", items[0], "so \\boxed{8}") == 0.0
  assert score("math500", items[0], "no box: 7") == 0.0


def test_gsm8k_gold_after_hashes_without_commas():
  items = _items("gsm8k")
  assert [it["answer"] for it in items] == ["36", "6", "88", "1234"]
  assert score("gsm8k", items[3], "\\boxed{1,234}") == 1.0


def test_score_accepts_raw_rows():
  row = {"question": "q", "answer": "steps\n#### 12"}
  assert score("gsm8k", row, "\\boxed{12}") == 1.0


# ---------------------------------------------------------------- multiple choice, BBEH


def test_mmlu_pro_and_supergpqa():
  mmlu = _items("mmlu_pro")
  assert mmlu[0]["answer"] == "B" and len(mmlu[0]["options"]) == 10
  assert score_many("mmlu_pro", mmlu, ["\\boxed{B}", "The answer is (A)", "nothing"]) == [1, 0, 0]
  gpqa = _items("supergpqa")
  assert [it["answer"] for it in gpqa] == ["C", "B"]
  assert score_many("supergpqa", gpqa, ["\\boxed{C}", "\\boxed{2x}"]) == [1.0, 0.0]


def test_bbeh():
  items = _items("bbeh")
  responses = ["The answer is (B).", "\\boxed{42}", "The answer is: apple, pear"]
  assert score_many("bbeh", items, responses) == [1.0, 1.0, 1.0]
  assert score("bbeh", items[1], "The answer is 24") == 0.0


def test_bbeh_task_file_format(tmp_path):
  path = tmp_path / "task.json"
  path.write_text('{"canary": "x", "examples": [{"input": "2+2?", "target": "4"}]}')
  items = load_benchmark("bbeh", str(path))
  assert items[0]["question"] == "2+2?" and score("bbeh", items[0], "The answer is 4") == 1.0


# ---------------------------------------------------------------- code


def _block(code):
  return f"Here it is:\n```python\n{code}```\n"


def test_humaneval_plus_canonical_and_wrong():
  items = _items("humaneval_plus")
  good = [_block(it["prompt"] + it["canonical_solution"]) for it in items]
  assert score_many("humaneval_plus", items, good) == [1.0, 1.0, 1.0]
  # a completion (function body only) is run after the prompt, as EvalPlus does
  assert score("humaneval_plus", items[0], _block("    return x + y\n")) == 1.0
  wrong = [
      _block("def add(x, y):\n    return x - y\n"),
      _block("def mean(numbers):\n    return sum(numbers) / (len(numbers) + 1)\n"),
      _block("def find_zero(xs):\n    return 12345.0\n"),
  ]
  assert score_many("humaneval_plus", items, wrong) == [0.0, 0.0, 0.0]


def test_humaneval_plus_float_tolerance_and_plus_inputs():
  items = _items("humaneval_plus")
  # mean via math.fsum differs from sum() in the last bits: within 1e-6, so it passes
  fsum = _block("import math\ndef mean(numbers):\n    return math.fsum(numbers) / len(numbers)\n")
  assert score("humaneval_plus", items[1], fsum) == 1.0
  # right on the base inputs only: fails on a plus input
  base_only = _block("def add(x, y):\n    return x + y if abs(x) < 10**6 else 0\n")
  assert score("humaneval_plus", items[0], base_only) == 0.0


def test_humaneval_plus_solution_among_other_blocks():
  items = _items("humaneval_plus")
  right, wrong = "def add(x, y):\n    return x + y\n", "def add(x, y):\n    return x * y\n"
  responses = {
      "trailing example": _block(right) + "Example:\n" + EXAMPLE,
      "leading explanation": _block("def add(x, y):\n    pass  # to do\n") + _block(right),
      "split": _block("import operator\nPLUS = operator.add\n")
      + _block("def add(x: int, y: int) -> int:\n    return PLUS(x, y)\n"),
      "future import": _block("from __future__ import annotations\n" + right),
  }
  for what, response in responses.items():
    assert score("humaneval_plus", items[0], response) == 1.0, what
  assert score("humaneval_plus", items[0], _block(wrong) + EXAMPLE) == 0.0
  assert score("humaneval_plus", items[0], _block(right) + _block(wrong)) == 0.0  # the last wins


def test_code_runs_in_the_sandbox_with_time_limits():
  items = _items("humaneval_plus")
  hang = _block("def add(x, y):\n    while True:\n        pass\n")
  assert score("humaneval_plus", items[0], hang) == 0.0
  fake = _block(
      "class A:\n    def __eq__(self, o):\n        return True\n" "def add(x, y):\n    return A()\n"
  )
  assert score("humaneval_plus", items[0], fake) == 0.0
  escape = _block(
      "import os\ndef add(x, y):\n    os.system('touch /tmp/rzero_eval_pwned')\n"
      "    return x + y\n"
  )
  score("humaneval_plus", items[0], escape)
  assert not os.path.exists("/tmp/rzero_eval_pwned")


def test_hub_test_script_format():
  he = _items("humaneval_plus", "humaneval_plus_hub.jsonl")
  assert score("humaneval_plus", he[0], _block("def add(x, y):\n    return x + y\n")) == 1.0
  assert score("humaneval_plus", he[0], _block("def add(x, y):\n    return x * y\n")) == 0.0
  # the hub's usual script: tests read as literals (tuples kept), compared here, numpy not needed
  assert he[1]["expected_output"][1] == 3.0 and he[1]["base_input"][3] == [(1.0, 2.0, 4.0)]
  assert (
      score("humaneval_plus", he[1], _block("def mean(xs):\n    return sum(xs) / len(xs)\n")) == 1
  )
  assert score("humaneval_plus", he[1], _block("def mean(xs):\n    return xs[0]\n")) == 0.0
  mbpp = _items("mbpp_plus", "mbpp_plus_hub.jsonl")
  assert mbpp[0]["id"] == "Mbpp/2" and mbpp[0]["entry_point"] == "similar_elements"
  assert score("mbpp_plus", mbpp[0], _block(mbpp[0]["canonical_solution"])) == 1.0
  assert score("mbpp_plus", mbpp[0], _block("def similar_elements(a, b):\n  return a\n")) == 0.0


def test_no_code_scores_zero():
  items = _items("humaneval_plus")
  assert score("humaneval_plus", items[0], "I cannot write code.") == 0.0


# ---------------------------------------------------------------- CRUXEval


def test_cruxeval_output_mode():
  items = _items("cruxeval_o")
  responses = [
      "```python\nassert f([3, 1, 2]) == [3, 2, 1]\n```",
      "```python\nassert f('ab', 2) == 'ab' * 2\n```",  # an expression, run in the sandbox
      "```python\nassert f((1, 2)) == 3\n```",
  ]
  assert score_many("cruxeval_o", items, responses) == [1.0, 1.0, 0.0]


def test_cruxeval_input_mode():
  items = _items("cruxeval_i")
  assert items[2]["answer"] == "(1, 2)"
  responses = [
      "```python\nassert f([1, 2, 3]) == [3, 2, 1]\n```",  # any input that works
      "```python\nassert f('abab', 1) == 'abab'\n```",
      "```python\nassert f((1, 2, 3)) == 2\n```",
  ]
  assert score_many("cruxeval_i", items, responses) == [1.0, 1.0, 0.0]
  assert score("cruxeval_i", items[2], "```python\nassert f([7, 8]) == 2\n```") == 1.0
  assert score("cruxeval_i", items[0], "```python\nassert f(__import__('os')) == 1\n```") == 0.0


def test_cruxeval_bare_answers():
  o = _items("cruxeval_o")
  assert score("cruxeval_o", o[0], "[3, 2, 1]") == 1.0
  assert score("cruxeval_o", o[0], "f([3, 1, 2]) == [3, 2, 1]") == 1.0
  assert score("cruxeval_o", o[0], "so \\boxed{[3, 2, 1]}") == 1.0
  i = _items("cruxeval_i")
  assert score("cruxeval_i", i[1], "'ab', 2") == 1.0
  assert score("cruxeval_i", i[1], "f('ab', 2)") == 1.0
  assert score("cruxeval_i", i[2], "(5, 6)") == 1.0  # one tuple argument
  assert score("cruxeval", o[0], "[3, 2, 1]") == 1.0  # "cruxeval" is output mode


def test_mbpp_not_none_oracle_and_opaque_outputs():
  item = {
      "task_id": "Mbpp/737",
      "id": "Mbpp/737",
      "question": "q",
      "benchmark": "mbpp_plus",
      "prompt": '"""\nCheck whether the string starts with a vowel.\n"""\n',
      "entry_point": "check_str",
      "atol": 0,
      "canonical_solution": "import re\ndef check_str(s):\n  return re.search('^[aeiou]', s)\n",
      "base_input": [["annie"], ["dawood"]],
      "plus_input": [["else"], ["xyz"]],
  }
  assert score("mbpp_plus", item, _block(item["canonical_solution"])) == 1.0
  # EvalPlus only checks "is not None" here: another truthy object passes, None everywhere fails
  assert (
      score("mbpp_plus", item, _block("def check_str(s):\n  return s[0] in 'aeiou' or None\n")) == 1
  )
  assert score("mbpp_plus", item, _block("def check_str(s):\n  return None\n")) == 0.0
