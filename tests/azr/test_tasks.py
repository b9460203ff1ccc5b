"""Absolute Zero tasks: parsing (with malformed responses), validation and the checks."""

import pytest

from rzero_jax.azr import tasks
from rzero_jax.azr.tasks import InductionTask, Proposal, Triplet
from rzero_jax.verify.executor import Executor


@pytest.fixture(scope="module")
def executor():
  with Executor(workers=2) as ex:
    yield ex


def respond(answer: str, think: str = "reasoning") -> str:
  return f"<think>{think}</think>\n<answer>{answer}</answer>"


def fence(label: str, body: str) -> str:
  return f"```{label}\n{body}\n```"


def test_induction_split_and_identity_seeds():
  pairs = tuple((str(i), str(i)) for i in range(10))
  task = InductionTask("p", "m", pairs)
  assert task.shown == pairs[:5] and task.hidden == pairs[5:]
  one = tasks.identity_task("induction")
  assert one.shown == one.hidden == (('"Hello world"', "'Hello world'"),)
  assert tasks.identity_task("deduction") == Triplet(
      "def f(a):\n    return a", '"Hello world"', "'Hello world'"
  )


# ------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<think>a</think><answer>x</answer>", "x"),
        ("  <think>a\nb</think>\n\n<answer>\nx\n</answer>\n", "\nx\n"),
        ("a (the prompt opened the think block)</think><answer>x</answer>", "x"),
        ("<think>a</think><answer>x</answer> trailing", None),
        ("<think>a</think><answer>x</answer><answer>y</answer>", None),
        ("<think>a</think>text<answer>x</answer>", None),
        ("<think>a</think><answer>x", None),
        ("<answer>x</answer>", None),
        ("<think>a<think>b</think><answer>x</answer>", None),
        ("pre <think>a</think><answer>x</answer>", None),
        ("<think>a</think></think><answer>x</answer>", None),
        ("<answer>x</answer><think>a</think>", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(response, expected):
  assert tasks.extract_answer(response) == expected


def test_extract_answer_without_think():
  assert tasks.extract_answer("<answer>x</answer>", require_think=False) == "x"
  assert tasks.extract_answer("blah <answer>x</answer>", require_think=False) == "x"
  assert tasks.extract_answer("<answer>x</answer> more", require_think=False) is None


def test_parse_proposal_deduction_and_abduction():
  program = "def f(x):\n    return x + 1"
  good = respond(f"{fence('python', program)}\n{fence('input', ' 3 ')}")
  for task_type in ("deduction", "abduction"):
    assert tasks.parse_proposal(task_type, good) == Proposal(program=program, inputs=("3",))
  assert (
      tasks.parse_proposal(
          "deduction", respond(f"```py\n{program}\n```\n" f"{fence('input', '3')}")
      ).program
      == program
  )
  malformed = [
      respond(fence("python", program)),  # no input
      respond(fence("input", "3")),  # no program
      respond(f"{fence('python', program)}{fence('python', program)}{fence('input', '3')}"),
      respond(f"{fence('python', program)}{fence('input', '3')}{fence('input', '4')}"),
      respond(f"{fence('python', '   ')}{fence('input', '3')}"),  # empty program
      f"{fence('python', program)}{fence('input', '3')}",  # no tags
      respond(f"{fence('python', program)}```input\n3"),  # unterminated
      f"<think>{fence('python', program)}{fence('input', '3')}</think><answer></answer>",
  ]
  for response in malformed:
    assert tasks.parse_proposal("deduction", response) is None, response


def test_parse_proposal_induction():
  inputs = "".join(fence("input", str(i)) for i in range(10))
  parsed = tasks.parse_proposal("induction", respond(inputs + fence("message", " adds one ")))
  assert parsed == Proposal(inputs=tuple(str(i) for i in range(10)), message="adds one")
  assert tasks.parse_proposal("induction", respond(inputs)) is None
  assert tasks.parse_proposal("induction", respond(fence("message", "m"))) is None
  two_messages = inputs + fence("message", "a") + fence("message", "b")
  assert tasks.parse_proposal("induction", respond(two_messages)) is None
  assert tasks.parse_proposal("induction", respond(inputs + fence("message", "x" * 2000))) is None


def test_parse_solution():
  assert tasks.parse_solution("deduction", respond(fence("output", " [1, 2] "))) == "[1, 2]"
  assert tasks.parse_solution("abduction", respond(fence("input", "1, 2"))) == "1, 2"
  program = "def f(x):\n    return x"
  assert tasks.parse_solution("induction", respond(fence("python", program))) == program
  assert tasks.parse_solution("deduction", respond(fence("input", "1"))) is None
  assert tasks.parse_solution("deduction", respond("[1, 2]")) is None
  assert tasks.parse_solution("deduction", respond(fence("output", "1") * 2)) is None
  assert tasks.parse_solution("deduction", fence("output", "1")) is None
  assert tasks.parse_solution("induction", respond(fence("output", "1"))) is None
  with pytest.raises(ValueError, match="Unknown task type"):
    tasks.parse_solution("solve", respond(fence("output", "1")))


def test_fenced_blocks_labels():
  text = "```Python\na\n```\n``` input \nb\n```\n```\nc\n```\n```message\n\n```"
  assert tasks.fenced_blocks(text) == [("python", "a"), ("input", "b"), ("", "c"), ("message", "")]


# ------------------------------------------------------------------------------------ validation


def test_validate_triplets(executor):
  proposals = [
      ("def f(a, b):\n    return sorted(a)[b]", "[3, 1, 2], 1"),  # valid
      ("def f(t):\n    return t[::-1]", "(1, 2)"),  # one tuple arg
      ("def f(d):\n    return sorted(d.items())", "dict(b=2, a=1)"),  # constructor
      ("def g(x):\n    return x", "1"),  # no f
      ("def f(x:\n    return x", "1"),  # syntax
      ("import random\ndef f(x):\n    return random.random()", "1"),  # policy
      ("import time\ndef f(x):\n    return time.time()", "1"),  # clock
      ("def f(x):\n    return open('/etc/passwd').read()", "1"),  # I/O
      ("def f(x):\n    while True:\n        pass", "1"),  # hangs
      ("def f(x):\n    return 1 / x", "0"),  # raises
      ("import statistics\ndef f(x):\n    return statistics.random.random()", "1"),  # nondet.
      ("def f(x):\n    return {1, 2}.__class__", "1"),  # policy
      (
          "class A:\n    def __repr__(self):\n        return 'A()'\ndef f(x):\n    return A()",
          "1",
      ),  # not a literal
      ("def f(x):\n    return 'a' * x", "5000"),  # too long
      ("def f(x):\n    return x", "y"),  # bad input
      ("def f(x):\n    return x", "'" + "a" * 2000 + "'"),  # input too long
  ]
  results = tasks.validate_triplets(proposals, executor, timeout_s=1.0)
  valid = [r.valid for r in results]
  assert valid == [True, True, True] + [False] * 13, [r.reason for r in results]
  assert results[0].task == Triplet(*proposals[0], "2")
  assert results[1].task.output == "(2, 1)"
  assert results[2].task.output == "[('a', 1), ('b', 2)]"
  reasons = [r.reason for r in results[3:]]
  assert "define f" in reasons[0] and "parse" in reasons[1] and "random" in reasons[2]
  assert reasons[5].startswith("timeout") and "ZeroDivisionError" in reasons[6]
  assert "nondeterministic" in reasons[7] and "not a Python literal" in reasons[9]
  assert "limit 2000" in reasons[10] and "inputs rejected" in reasons[11]
  assert "limit 1000" in reasons[12]
  assert tasks.validate_triplet("def f(x):\n    return x", "1", executor).valid


def test_validate_induction(executor):
  program = "def f(x):\n    return x * 2"
  inputs = [str(i) for i in range(12)]
  result = tasks.validate_induction(program, inputs, " doubles ", executor)
  assert result.valid and result.task.message == "doubles"
  assert result.task.pairs == tuple((str(i), str(2 * i)) for i in range(10))
  assert not tasks.validate_induction(program, inputs, "  ", executor).valid
  short = tasks.validate_induction(program, ["1"] * 10 + ["2"], "m", executor)
  assert not short.valid and "2 distinct inputs" in short.reason
  with_bad = [str(i) for i in range(9)] + ["'a'", "x", "None"]
  partly = tasks.validate_induction("def f(x):\n    return x + 1", with_bad, "m", executor)
  assert not partly.valid and "9 valid inputs" in partly.reason
  assert not tasks.validate_induction(
      "import random\ndef f(x):\n    return random.random()", inputs, "m", executor
  ).valid
  few = tasks.validate_induction(program, ["1", "2", "3"], "m", executor, num_inputs=2)
  assert few.valid and few.task.pairs == (("1", "2"), ("2", "4"))
  late = ["'a'", "'b'", "'c'", "'d'", "0", "1"]  # only the first 2 * num_inputs are run
  assert not tasks.validate_induction(
      "def f(x):\n    return x + 1", late, "m", executor, num_inputs=2
  ).valid
  with pytest.raises(ValueError, match="num_inputs must be an int >= 1"):
    tasks.validate_induction(program, inputs, "m", executor, num_inputs=0)


def test_validate_induction_counts_distinct_values_not_texts(executor):
  """Inputs written differently but equal in value are one input: otherwise a lookup table of
  the shown pairs could pass hidden pairs that repeat them."""
  program = "def f(x):\n    return x"
  spellings = [
      "[1,2]",
      "[1, 2]",
      " [1 , 2] ",
      "(3)",
      "3",
      "3.0",
      "'a'",
      '"a"',
      "{1, 2}",
      "{2, 1}",
      "dict(a=1)",
      "{'a': 1}",
      "x=5",
      "x = 5",
  ]
  result = tasks.validate_induction(program, spellings, "m", executor, num_inputs=6)
  assert result.valid, result.reason  # exactly 6 values: [1, 2], 3, 'a', {1, 2}, {'a': 1}, x=5
  assert [i for i, _ in result.task.pairs] == ["[1,2]", "(3)", "'a'", "{1, 2}", "dict(a=1)", "x=5"]
  short = tasks.validate_induction(program, spellings, "m", executor, num_inputs=7)
  assert not short.valid and "6 distinct inputs (need 7)" in short.reason
  # what cannot be parsed stays distinct by its text (and is rejected by validation)
  bad = tasks.validate_induction(program, ["1", "1.0", "y", "y ", "2"], "m", executor, num_inputs=3)
  assert not bad.valid and "2 valid inputs" in bad.reason
  lookup = "def f(x):\n    return {(1, 2): 'p', 3: 'q'}.get(x if type(x) is int else tuple(x))"
  shown_hidden = ["(1, 2)", "3", "[1, 2]", "(1,2)", "3.0"]
  looked_up = tasks.validate_induction(lookup, shown_hidden, "m", executor, num_inputs=4)
  assert not looked_up.valid and "3 distinct inputs (need 4)" in looked_up.reason


# ------------------------------------------------------------------------------------ checks


def test_validate_triplets_rejects_hash_seed_dependent_programs(executor):
  words = "['apple', 'banana', 'cherry', 'date', 'elder']"
  proposals = [
      ("def f(w):\n    return list(set(w))", words),
      ("def f(w):\n    return ''.join(sorted(w, key=hash))", words),
      ("def f(s):\n    return hash(s) % 97", "'azr'"),
      ("def f(w):\n    return set(w)", words),  # a set value: valid in any order
      ("def f(w):\n    return sorted(set(w))", words),
  ]
  results = tasks.validate_triplets(proposals, executor)
  assert [r.valid for r in results] == [False, False, False, True, True]
  assert all("nondeterministic" in r.reason for r in results[:3])
  stored = results[3].task.output
  assert executor.run(*proposals[3]).output == stored  # grading reproduces the stored output
  assert tasks.check_deduction_outputs(
      [(stored, "{'date', 'elder', 'cherry', 'banana', 'apple'}")]
  ) == [True]


def test_check_deduction_outputs_needs_no_run():
  output = "({1: 3, 2: 6}, {1, 2})"  # a Triplet's output, as validation stored it
  cases = [
      ("({1: 3, 2: 6}, {1, 2})", True),
      ("({2: 6, 1: 3},{2,1})", True),  # formatting and ordering differ
      ("({1: 3.0, 2: 6}, {1, 2})", True),  # value equality: 3.0 == 3
      ("({1: 3, 2: 6}, [1, 2])", False),  # set vs list
      ("({1: 3, 2: 6}, {1, 2}) junk", False),
      ("__import__('os').system('true')", False),
      ("", False),
      (None, False),
  ]
  assert tasks.check_deduction_outputs([(output, p) for p, _ in cases]) == [e for _, e in cases]
  assert tasks.check_deduction_outputs([]) == []
  assert tasks.check_deduction_outputs([("nan", "nan")]) == [False]


def test_check_deduction(executor):
  program = "def f(xs, k=1):\n    return {x: x * k for x in xs}, set(xs)"
  cases = [
      ("[1, 2], k=3", "({1: 3, 2: 6}, {1, 2})", True),
      ("[1, 2], k=3", "({2: 6, 1: 3},{2,1})", True),  # formatting and ordering differ
      ("[1, 2], k=3", "({1: 3.0, 2: 6}, {1, 2})", True),  # value equality: 3.0 == 3
      ("[1, 2], k=3", "({1: 3, 2: 6}, [1, 2])", False),  # set vs list
      ("[1, 2], k=3", "({1: 3, 2: 6}, {1, 2}) junk", False),
      ("[1, 2], k=3", "__import__('os').system('true')", False),
      ("[1, 2], k=3", "", False),
      ("[1, 2], k=3", None, False),
      ("[1, 2]", "({1: 1, 2: 2}, {1, 2})", True),
  ]
  for inputs, predicted, expected in cases:
    assert tasks.check_deduction(program, inputs, predicted, executor) is expected, predicted
  tuple_arg = "def f(t):\n    return len(t)"
  assert tasks.check_deduction(tuple_arg, "(1, 2)", "2", executor)
  assert not tasks.check_deduction(tuple_arg, "1, 2", "2", executor)  # two arguments: error
  nan = "def f(x):\n    return float('nan')"
  assert not tasks.check_deduction(nan, "1", "nan", executor)
  hangs = "def f(x):\n    while True:\n        pass"
  assert not tasks.check_deduction(hangs, "1", "None", executor, timeout_s=0.5)
  always_equal = (
      "class A:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return A()"
  )
  assert not tasks.check_deduction(always_equal, "1", "1", executor)
  assert tasks.check_deductions(
      [(program, "[1], k=0", "({1: 0}, {1})"), (program, "[1]", "1")], executor
  ) == [True, False]


def test_check_abduction(executor):
  program = "def f(a, b):\n    return sorted(a + b)[:2]"
  cases = [
      ("[3, 1], [2]", True),
      ("[1], [2, 9]", True),  # any input that gives the output counts
      ("[2, 1], []", True),
      ("a=[2], b=[1]", True),  # keywords
      ("([1, 2], [])", False),  # one tuple argument: TypeError
      ("[5], [6]", False),
      ("[1] + [2], []", False),  # expression inputs are refused
      ("__import__('os'), 1", False),
      ("", False),
      (None, False),
  ]
  for predicted, expected in cases:
    assert tasks.check_abduction(program, "[1, 2]", predicted, executor) is expected, predicted
  hangs_on_zero = "def f(x):\n    while x == 0:\n        pass\n    return x"
  assert not tasks.check_abduction(hangs_on_zero, "0", "0", executor, timeout_s=0.5)
  assert tasks.check_abduction(hangs_on_zero, "3", "3", executor)
  single_tuple = "def f(t):\n    return t"
  assert tasks.check_abduction(single_tuple, "(1, 2)", "(1, 2)", executor)
  assert not tasks.check_abduction(single_tuple, "(1, 2)", "1, 2", executor)
  assert tasks.check_abductions(
      [(program, "[0, 0]", "[0], [0]"), (program, "[0]", "[0], []")], executor
  ) == [True, True]


def test_check_induction(executor):
  pairs = [(str(i), str(i * i)) for i in range(5)]
  assert tasks.check_induction("def f(x):\n    return x * x", pairs, executor)
  assert tasks.check_induction("def f(x):\n    return x ** 2.0", pairs, executor)  # 4.0 == 4
  assert tasks.check_induction(
      "def f(x):\n    return {0: 0, 1: 1, 2: 4, 3: 9, 4: 16}[x]", pairs, executor
  )
  assert not tasks.check_induction("def f(x):\n    return x * 2", pairs, executor)  # 0,2 match
  assert not tasks.check_induction("def f(x):\n    return x * x if x < 4 else 0", pairs, executor)
  assert not tasks.check_induction("def g(x):\n    return x * x", pairs, executor)
  assert not tasks.check_induction("import random\ndef f(x):\n    return x * x", pairs, executor)
  assert not tasks.check_induction("def f(x):\n    return x * x", [], executor)
  assert not tasks.check_induction(None, pairs, executor)
  assert not tasks.check_induction(
      "def f(x):\n    while True:\n        pass", pairs, executor, timeout_s=0.5
  )
  always_equal = (
      "class A:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return A()"
  )
  assert not tasks.check_induction(always_equal, pairs, executor)
  two_args = [("1, 2", "3"), ("(1, 2), 3", "6")]
  assert tasks.check_induction(
      "def f(a, b):\n    return sum(a) + b if isinstance(a, tuple) else a + b", two_args, executor
  )
  assert tasks.check_inductions(
      [("def f(x):\n    return x * x", pairs), ("def f(x):\n    return -x", pairs)], executor
  ) == [True, False]


def test_validate_proposals_then_check_answers(executor):
  """The loop's two executor decisions: parsed proposals to buffer entries, answers to grades."""
  plus_one = "def f(x):\n    return x + 1"
  proposals = [
      {"type": "deduction", "program": plus_one, "inputs": ["1"], "message": None},
      None,  # malformed
      {"type": "abduction", "program": "import random\ndef f(x):\n    return x", "inputs": ["1"]},
      {
          "type": "induction",
          "program": "def f(x):\n    return 2 * x",
          "inputs": ["1", "2", "3", "4"],
          "message": "doubles",
      },
  ]
  valid = tasks.validate_proposals(proposals, executor, num_inputs=4)
  assert valid[0] == Triplet(plus_one, "1", "2")
  assert valid[1] is None and valid[2] is None
  assert valid[3].pairs == (("1", "2"), ("2", "4"), ("3", "6"), ("4", "8"))
  items = [
      ("deduction", valid[0], "2"),
      ("deduction", valid[0], "3"),
      ("abduction", valid[0], "1"),
      ("abduction", valid[0], None),
      ("induction", valid[3], "def f(x):\n    return x * 2"),
      ("induction", valid[3], "def f(x):\n    return x"),
  ]
  assert tasks.check_answers(items, executor) == [True, False, True, False, True, False]
