"""Tests for rzero_jax.verify.answers: extraction, equivalence, pooled grading, hangs."""

import time

import pytest

from rzero_jax.verify import _pool, answers
from rzero_jax.verify.answers import equivalent, equivalent_many, extract_boxed, grade

T, F = True, False

# Hand-checked (pred, gold, expected) by category.
EQUIVALENCE_CASES = {
    "integers_commas": [
        ("1,000", "1000", T),
        ("1,000,000", "1000000", T),
        ("10,000", "10000", T),
        ("1{,}000", "1000", T),
        ("1\\,000", "1000", T),
        ("2,500", "2500", T),
        ("1,000", "100", F),
        ("-1,234", "-1234", T),
        ("12345", "12,345", T),
        ("004", "4", T),
        ("\\$1,000.50", "1000.5", T),
    ],
    # a comma followed by a space separates numbers: "32, 349" is a list, not 32,349 (as in
    # Math-Verify); a LaTeX negative space glues: 10,\! 000 is ten thousand
    "list_not_thousands": [
        ("32, 349", "32349", F),
        ("1, 234", "1234", F),
        ("1, 234", "1,234", F),
        ("1, 2", "12", F),
        ("3, 5", "35", F),
        ("1,\\ 234", "1234", F),
        ("1,~234", "1234", F),
        ("1, 234.5", "1234.5", F),
        ("12, 345, 678", "12345678", F),
        ("1, 2", "1,2", T),
        ("1, 234", "234, 1", T),
        ("1,234", "1234", T),
        ("1,234,567", "1234567", T),
        ("1,234.5", "1234.5", T),
        ("10,\\!000", "10000", T),
        ("32,\\! 349", "32349", T),
    ],
    "fractions": [
        ("\\frac{1}{2}", "1/2", T),
        ("\\dfrac{3}{4}", "\\frac{3}{4}", T),
        ("\\tfrac12", "0.5", T),
        ("\\frac{2}{4}", "\\frac{1}{2}", T),
        ("-\\frac{1}{3}", "\\frac{-1}{3}", T),
        ("\\frac{1}{3}", "\\frac{1}{4}", F),
        ("3/4", "0.75", T),
        ("\\frac{5}{2}", "2\\frac{1}{2}", T),
        ("\\frac{7}{3}", "2\\frac{1}{3}", T),
        ("\\frac{-3}{4}", "-0.75", T),
    ],
    "decimals": [
        ("0.5", ".5", T),
        ("0.50", "0.5", T),
        ("3.0", "3", T),
        ("3.14", "3.15", F),
        ("0.333", "\\frac{1}{3}", F),
        ("2.5", "\\frac{5}{2}", T),
        ("0.1", "1/10", T),
        ("1.25", "\\frac{5}{4}", T),
        ("-0.2", "-\\frac{1}{5}", T),
        ("2.75", "2.57", F),
        ("0.\\overline{3}", "\\frac{1}{3}", T),
        ("0.1\\overline{6}", "\\frac{1}{6}", T),
        ("4.0", "4", T),
    ],
    "percent": [
        ("50\\%", "50", T),
        ("50%", "50", T),
        ("12.5\\%", "12.5", T),
        ("25\\%", "25\\%", T),
        ("50\\%", "60", F),
        ("75", "75\\%", T),
        ("33\\frac{1}{3}\\%", "33\\frac{1}{3}", T),
        ("5\\%", "5", T),
        ("\\frac{1}{2}\\%", "0.5\\%", T),
    ],
    # a percent unit written as a word or an abbreviation is a percent sign
    "percent_words": [
        ("28 percent", "28\\%", T),
        ("28 pct", "28\\%", T),
        ("28 percentage", "28\\%", T),
        ("$28$ percent", "28\\%", T),
        ("28 Percent", "28", T),
        ("28 per cent", "0.28", T),
        ("28 pct.", "28%", T),
        ("50\\text{ percent}", "50\\%", T),
        ("50 \\text{pct}", "0.5", T),
        ("50\\text{\\%}", "50", T),
        ("\\frac{1}{2} percent", "0.5\\%", T),
        ("12.5 percent", "12.5", T),
        ("28 percent", "29\\%", F),
        ("28 pct", "2.8", F),
        ("50 percentile", "50", F),
        ("50 percentage points", "0.5", F),
    ],
    "radicals": [
        ("\\sqrt{8}", "2\\sqrt{2}", T),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", T),
        ("\\sqrt{2}", "\\sqrt{3}", F),
        ("3\\sqrt{3}", "\\sqrt{27}", T),
        ("\\sqrt[3]{8}", "2", T),
        ("2+\\sqrt{3}", "\\sqrt{3}+2", T),
        ("\\sqrt{12}", "2\\sqrt{3}", T),
        ("\\sqrt{2}", "1.41", F),
        ("5\\sqrt{2}", "\\sqrt{50}", T),
        ("\\frac{3}{\\sqrt{3}}", "\\sqrt{3}", T),
        ("\\frac{\\sqrt{6}}{2}", "\\sqrt{\\frac{3}{2}}", T),
        ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", T),
        ("2\\sqrt2", "2\\sqrt{2}", T),
    ],
    "pi": [
        ("2\\pi", "2 \\pi", T),
        ("\\frac{\\pi}{2}", "\\pi/2", T),
        ("\\pi", "3.14", F),
        ("4\\pi", "\\pi \\cdot 4", T),
        ("\\pi r^2", "r^2\\pi", T),
        ("\\frac{3\\pi}{4}", "\\frac{3}{4}\\pi", T),
        ("2\\pi", "\\pi", F),
        ("\\frac{\\pi}{3}", "\\frac{2\\pi}{6}", T),
        ("\\cos\\frac{\\pi}{3}", "\\frac12", T),
    ],
    "scientific": [
        ("1.5\\times10^{3}", "1500", T),
        ("3 \\times 10^8", "300000000", T),
        ("2.5e-3", "0.0025", T),
        ("1e6", "1000000", T),
        ("6.02 \\times 10^{23}", "6.02\\times10^{23}", T),
        ("10^{-2}", "0.01", T),
        ("1.5 \\times 10^{3}", "150", F),
        ("4.2\\cdot 10^{-5}", "0.000042", T),
        ("6.02e23", "6.02 \\times 10^{23}", T),
        ("1.2E-5", "0.000012", T),
        ("1000", "10^3", T),
    ],
    "expressions": [
        ("x^2+2x+1", "(x+1)^2", T),
        ("2x+3", "3+2x", T),
        ("(x-1)(x+1)", "x^2-1", T),
        ("x^2+1", "x^2-1", F),
        ("\\frac{x}{2}", "0.5x", T),
        ("a+b", "b+a", T),
        ("2(x+1)", "2x+2", T),
        ("\\frac{1}{x+1}", "(x+1)^{-1}", T),
        ("x^3", "x^2", F),
        ("3x-2", "2-3x", F),
        ("\\frac{n(n+1)}{2}", "\\frac{n^2+n}{2}", T),
        ("2^{10}", "1024", T),
        ("10!", "3628800", T),
        ("\\frac{x+1}{2}", "\\frac{1}{2}x+\\frac{1}{2}", T),
        ("\\log_2 8", "3", T),
    ],
    "x_equals": [
        ("x = 2", "2", T),
        ("x=2", "2", T),
        ("2", "x = 2", T),
        ("y = 5", "5", T),
        ("x = 3", "2", F),
        ("k=7", "7", T),
        ("x = \\frac{1}{2}", "0.5", T),
        ("n = 10", "10", T),
        ("y = 2x + 1", "2x + 1", T),
        ("f(x) = x^2", "x^2", T),
        ("x = -\\frac{1}{2}", "-0.5", T),
    ],
    "sets": [
        ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", T),
        ("\\{1,2\\}", "\\{1,2,3\\}", F),
        ("1, 2", "2, 1", T),
        ("\\{-1, 1\\}", "\\{1, -1\\}", T),
        ("1,2,3", "1, 2, 3", T),
        ("\\{2, 3\\}", "\\{2, 4\\}", F),
        ("-2, 3", "3, -2", T),
        ("\\varnothing", "\\emptyset", T),
        ("\\{1, 2\\}", "1, 2", T),
        ("x=1 \\text{ or } x=2", "1, 2", T),
    ],
    "tuples": [
        ("(1, 2)", "(1,2)", T),
        ("(1, 2)", "(2, 1)", F),
        ("(3, -4)", "(3,-4)", T),
        ("(\\frac{1}{2}, 3)", "(0.5, 3)", T),
        ("(1,2,3)", "(1,2,3)", T),
        ("(1, 2, 3)", "(1, 2, 4)", F),
    ],
    "intervals": [
        ("[1, 2)", "[1,2)", T),
        ("(1, 2]", "[1, 2]", F),
        ("(-\\infty, 3)", "(-\\infty,3)", T),
        ("[0, \\infty)", "[0,\\infty)", T),
        ("(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)", T),
        ("(0, 1)", "[0, 1]", F),
        ("[2, 5]", "[2, 5]", T),
        ("(-\\infty, 2]", "(-\\infty, 2)", F),
        ("(3, \\infty)", "x > 3", T),
        ("x \\in [1,2]", "[1,2]", T),
        ("\\mathbb{R}", "(-\\infty, \\infty)", T),
    ],
    "matrices": [
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", T),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", F),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", T),
        (
            "\\begin{pmatrix} \\frac{1}{2} \\\\ 3 \\end{pmatrix}",
            "\\begin{pmatrix}0.5\\\\3\\end{pmatrix}",
            T,
        ),
        (
            "\\begin{bmatrix} 2 & 0 \\\\ 0 & 2 \\end{bmatrix}",
            "\\begin{pmatrix}2&0\\\\0&2\\end{pmatrix}",
            T,
        ),
        (
            "\\left[\\begin{array}{cc}1&2\\\\3&4\\end{array}\\right]",
            "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
            T,
        ),
    ],
    "units_degrees": [
        ("5 \\text{ cm}", "5", T),
        ("5\\text{cm}", "5", T),
        ("30^\\circ", "30", T),
        ("30^{\\circ}", "30", T),
        ("90°", "90", T),
        ("\\$5", "5", T),
        ("\\$ 10.50", "10.50", T),
        ("12 \\text{ meters}", "12", T),
        ("7 \\text{ inches}", "7", T),
        ("45^\\circ", "50", F),
        ("5 \\text{ cm}^2", "5", T),
        ("60 \\text{ mph}", "60", T),
        ("20 \\text{ dollars}", "20", T),
        ("100 \\text{ km}", "200", F),
        ("5 cm", "5", T),
        ("45 degrees", "45", T),
        ("3 \\text{ apples}", "3", T),
    ],
    "text": [
        ("\\text{Tuesday}", "Tuesday", T),
        ("\\text{tuesday}", "\\text{Tuesday}", T),
        ("\\text{yes}", "\\text{no}", F),
        ("\\text{odd}", "odd", T),
        ("\\textbf{even}", "even", T),
        ("\\text{no solution}", "\\text{No solution}", T),
        ("\\text{Monday}", "\\text{Friday}", F),
        ("No solution", "no solution", T),
    ],
    "choices": [
        ("(B)", "B", T),
        ("B", "(B)", T),
        ("b", "B", T),
        ("\\text{(A)}", "A", T),
        ("C", "D", F),
        ("A", "(A)", T),
        ("(E)", "E", T),
        ("\\textbf{(D)}", "D", T),
        ("\\text{B}", "B", T),
        ("(A)", "(C)", F),
        ("'B'", "B", T),
        ('"B"', "B", T),
        ("\u201cB\u201d", "B", T),
        ("\u2018C\u2019", "C", T),
        ("`D`", "D", T),
        ("'b'", "(B)", T),
        ("(B)", "\u201cB\u201d", T),
        ("'B'", "C", F),
        ("\u201cA\u201d", "B", F),
    ],
    "misc": [
        ("-3", "3", F),
        ("0", "0", T),
        ("", "5", F),
        ("5", "", F),
        ("4i+3", "3+4i", T),
        ("\\infty", "\\infty", T),
        ("-\\infty", "\\infty", F),
        ("\\binom{5}{2}", "10", T),
        ("5!", "120", T),
        ("\\log_2 8", "3", T),
        ("|x|", "|x|", T),
    ],
}
ALL_CASES = [(c, p, g, e) for c, rows in EQUIVALENCE_CASES.items() for p, g, e in rows]

EXTRACTION_CASES = [
    ("The answer is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and finally \\fbox{x+1}", "x+1"),
    ("\\boxed {5}", "5"),
    ("\\boxed{ 12 }", "12"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    (
        "\\boxed{\\begin{pmatrix}1 & 2\\\\ 3 & 4\\end{pmatrix}}",
        "\\begin{pmatrix}1 & 2\\\\ 3 & 4\\end{pmatrix}",
    ),
    ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("$\\boxed{x^{2^{3}}}$", "x^{2^{3}}"),
    ("\\boxed{}", ""),
    ("\\boxed{\\boxed{9}}", "9"),
    ("no box here", None),
    ("", None),
    (None, None),
    ("\\boxed{1", None),
    ("\\boxed{1} \\boxed{2", None),
    ("\\boxed{\\}", None),
    ("\\boxed 5", None),
    ("\\boxeds{5}", None),
]

NASTY = [
    r"5^{5^{5^{5^5}}}",
    r"10^{10^{10}}",
    r"(10^{100})!",
    r"2^{2^{2^{2^{2^2}}}}-1",
    r"9^{9^{9}}",
    r"\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)} - 4\right)} - 5}{16}",
    r"1000000!",
    r"2^{10^{10}}",
    r"e^{e^{e^{e^{10}}}}",
    r"99999999999^{99999999999}",
    "9^9^9^9",
    "2**10**10",
    r"\binom{10^{10}}{5 \cdot 10^{9}}",
    "{" * 5000 + "1" + "}" * 5000,
    "\\sqrt{" * 2000 + "2" + "}" * 2000,
    "\\left[" * 3000,
    "1" * (1 << 20),
    "x+" * 500_000 + "1",
]


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
  answers.grading_pool().wait_ready()


@pytest.mark.parametrize("text, expected", EXTRACTION_CASES)
def test_extract_boxed(text, expected):
  assert extract_boxed(text) == expected


def test_extract_boxed_deep_and_huge_inputs_are_linear():
  start = time.monotonic()
  deep = "{" * 5000 + "1" + "}" * 5000
  assert extract_boxed("\\boxed{" + deep + "}") == deep
  assert extract_boxed("\\boxed{" + "{" * 5000) is None
  assert extract_boxed("x" * (1 << 20) + "\\boxed{3}") == "3"
  assert time.monotonic() - start < 2.0


def test_equivalence_agreement_per_category():
  verdicts = equivalent_many([(p, g) for _, p, g, _ in ALL_CASES])
  wrong = [(c, p, g, e) for (c, p, g, e), v in zip(ALL_CASES, verdicts) if v != e]
  assert not wrong
  assert {c for c, *_ in ALL_CASES} >= {
      "integers_commas",
      "list_not_thousands",
      "fractions",
      "decimals",
      "percent",
      "percent_words",
      "radicals",
      "pi",
      "scientific",
      "expressions",
      "x_equals",
      "sets",
      "tuples",
      "intervals",
      "matrices",
      "units_degrees",
      "text",
      "choices",
  }


@pytest.mark.parametrize(
    "category, pred, gold, expected",
    [case for case in ALL_CASES if case[0] in ("expressions", "intervals", "sets")],
)
def test_equivalent_single_calls(category, pred, gold, expected):
  assert equivalent(pred, gold) is expected


def test_equivalent_is_asymmetric_like_math_verify():
  assert equivalent("(1, 2)", "1 < x < 2")
  assert not equivalent("1 < x < 2", "(1, 2)")
  assert equivalent_many([("1 < x < 2", "(1, 2)")], symmetric=True) == [True]


def test_fast_paths_decide_without_the_pool():
  assert answers.quick_equivalent("1,000", "1000") is True
  assert answers.quick_equivalent("\\frac{3}{6}", "0.5") is True
  assert answers.quick_equivalent("7", "8") is False
  assert answers.quick_equivalent("(C)", "C") is True
  assert answers.quick_equivalent("28 percent", "28\\%") is True
  assert answers.quick_equivalent("\u201cB\u201d", "B") is True
  assert answers.quick_equivalent("1, 234", "1234") is None  # a list: Math-Verify decides
  assert answers.quick_equivalent("x^2", "x\\cdot x") is None


@pytest.mark.parametrize("nasty", NASTY, ids=lambda s: s[:25])
def test_nasty_inputs_are_refused_fast(nasty):
  start = time.monotonic()
  assert equivalent(nasty, "1", timeout_s=2.0) is False
  assert equivalent("1", nasty, timeout_s=2.0) is False
  assert time.monotonic() - start < 0.5


def test_slow_symbolic_case_returns_false_within_deadline():
  start = time.monotonic()
  assert equivalent(r"\sin(\tan(-4x^2-3)^3)", "1", timeout_s=1.5) is False
  assert time.monotonic() - start < 1.5 + 1.0


def test_hard_kill_replaces_a_worker_stuck_in_c_code():
  pool = answers.grading_pool()
  stuck = {"pred": NASTY[5], "gold": "1", "symmetric": False, "soft_s": 100.0}
  start = time.monotonic()
  assert pool.map([stuck], [1.0]) == [_pool.TIMEOUT]
  assert time.monotonic() - start < 3.0
  assert equivalent("x^2-1", "(x-1)(x+1)")


def test_grade_extracts_then_compares():
  responses = [
      "So \\boxed{\\frac{1}{2}}.",
      "I get \\boxed{3}",
      "no answer",
      "\\boxed{x = 4}",
      "\\boxed{" + "{" * 5000 + "}" * 5000 + "}",
      "a" * (1 << 20) + "\\boxed{1}",
  ]
  golds = ["0.5", "4", "1", "4", "1", "1"]
  assert grade(responses, golds, timeout_s=2.0) == [True, False, False, True, False, False]


def test_grade_reads_percent_words_and_lists_in_boxes():
  responses = [
      "$\\boxed{28 pct}",
      "\\boxed{28 percentage}",
      "is $\\boxed{32, 349}$",
      "$\\boxed{1,234}$",
  ]
  assert grade(responses, ["28\\%", "0.28", "32349", "1234"]) == [True, True, False, True]


def test_grade_accepts_boxed_golds_and_rejects_mismatched_lengths():
  assert grade(["\\boxed{2}"], ["\\boxed{2}"]) == [True]
  with pytest.raises(ValueError, match="3 responses but 2 golds"):
    grade(["a", "b", "c"], ["1", "2"])


def test_model_text_is_never_executed(tmp_path):
  marker = tmp_path / "pwned"
  payload = f"__import__('os').system('touch {marker}')"
  assert equivalent(payload, "0") is False
  assert grade([f"\\boxed{{{payload}}}"], ["1"]) == [False]
  assert not marker.exists()
