"""The commands of README.md and the docs pages, checked as written without running them.

Every `python -m MODULE --flag...` in a fenced shell block names a module that exists and flags it
defines (absl `DEFINE_*` or argparse `add_argument`, read from its source); a `--config=FILE:arg`
builds (`get_config(arg)`) and every `--config.a.b=` override names a field of it; every `make`
target is in the Makefile; every repository path the page names exists; the README's Python
example imports names that exist.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib
import os
import re
import shlex

import pytest

from tests.support import REPO

PAGES = ["README.md"] + sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    if not re.search(r"docs/(_build|_autosummary|report_demo)/", p)
)
# Repository paths a page may name (outputs such as runs/ or docs/_build/ are not checked).
_PATH = re.compile(
    r"(?<![\w/.-])((?:experiments|launch|notebooks|tests|rzero_jax|docs|\.ci)/[\w./-]*\w)"
)
_GENERATED = ("docs/_build", "docs/_autosummary")
_ABSL_FLAGS = {
    "verbosity",
    "v",
    "help",
    "helpfull",
    "helpshort",
    "logtostderr",
    "alsologtostderr",
    "log_dir",
    "flagfile",
}


def _text(page: str) -> str:
  with open(os.path.join(REPO, page), encoding="utf-8") as f:
    return f.read()


def _fences(text: str, languages: tuple[str, ...]) -> list[str]:
  return [
      body
      for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
      if lang in languages
  ]


def _commands(page: str) -> list[list[str]]:
  """The shell commands of a page's bash fences: continuation lines joined, comments dropped,
  split at ; && || | & and a leading `do`, environment assignments dropped."""
  commands = []
  for block in _fences(_text(page), ("bash", "sh", "shell")):
    for line in block.replace("\\\n", " ").splitlines():
      lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
      words: list[str] = []
      for word in list(lexer) + [";"]:
        if word and set(word) <= set(";&|"):
          while words and (words[0] in ("do", "then", "done") or re.match(r"^\w+=", words[0])):
            words = words[1:]
          if words:
            commands.append(words)
          words = []
        else:
          words.append(word)
  return commands


def _source(module: str, main: bool = False) -> str | None:
  """The file of a module of this repository (a package's __main__ when `main`), or None."""
  path = os.path.join(REPO, *module.split("."))
  for candidate in (path + ".py", os.path.join(path, "__main__.py" if main else "__init__.py")):
    if os.path.isfile(candidate):
      return candidate
  return None


@functools.cache
def _defined_flags(path: str, follow: bool = True) -> tuple[frozenset[str], frozenset[str]]:
  """(flag names, config-file flag names) that a module defines, and the rzero_jax modules it
  imports (one level)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  names, configs, absl = set(), set(), False
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      func = (
          node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
      )
      strings = [
          a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
      ]
      if func.startswith("DEFINE") and strings:
        absl = True
        names.add(strings[0])
        if func.startswith("DEFINE_config"):
          configs.add(strings[0])
      elif func == "add_argument":
        names.update(s[2:] for s in strings if s.startswith("--"))
    elif (
        follow and isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rzero_jax")
    ):
      for alias in node.names:
        source = _source(f"{node.module}.{alias.name}") or _source(node.module)
        if source:
          more, more_configs = _defined_flags(source, follow=False)
          names |= more
          configs |= more_configs
  if absl:
    names |= _ABSL_FLAGS
  return frozenset(names), frozenset(configs)


def _check_config(value: str, overrides: list[str]) -> None:
  path, _, arg = value.partition(":")
  assert os.path.exists(os.path.join(REPO, path)), f"--config file {path} does not exist"
  module = importlib.import_module(path[: -len(".py")].replace("/", "."))
  config = module.get_config(arg) if arg else module.get_config()
  for field in overrides:
    node = config
    for key in field.split("."):
      assert key in node, f"--config.{field}: no field {key!r} in {value}"
      node = node[key]


def _check_python_m(words: list[str]) -> None:
  i = words.index("-m")
  module, args = words[i + 1], words[i + 2 :]
  source = _source(module, main=True)
  assert source, f"python -m {module}: no such module in the repository"
  flags, configs = _defined_flags(source)
  overrides: dict[str, list[str]] = {c: [] for c in configs}
  values: dict[str, str] = {}
  for arg in args:
    if not arg.startswith("--"):
      continue
    name, _, value = arg[2:].partition("=")
    head, _, rest = name.partition(".")
    if rest and head in configs:
      overrides[head].append(rest)
      continue
    assert name in flags or (
        name.startswith("no") and name[2:] in flags
    ), f"python -m {module}: no flag --{name}"
    values[name] = value
  for name in configs:
    if name in values:
      _check_config(values[name], overrides[name])
    else:
      assert not overrides[name], f"--{name}.* overrides without --{name}= (checked file unknown)"


@functools.cache
def _make_targets() -> frozenset[str]:
  return frozenset(re.findall(r"^([\w.-]+):", _text("Makefile"), re.M))


@pytest.mark.parametrize("page", PAGES)
def test_commands_parse(page):
  commands = _commands(page)
  for words in commands:
    if re.search(r"python3?$", words[0]) and words[1:2] == ["-m"]:
      _check_python_m(words)
    elif words[0] == "make":
      for target in words[1:]:
        if "=" not in target:
          assert target in _make_targets(), f"{page}: make {target}: no such target"
  if page == "README.md":
    assert sum(w[1:2] == ["-m"] for w in commands) >= 5, "README lost its commands"


@pytest.mark.parametrize("page", PAGES)
def test_named_paths_exist(page):
  text = _text(page)
  missing = sorted(
      {
          p
          for p in _PATH.findall(text)
          if not p.startswith(_GENERATED)
          and "<" not in p
          and not os.path.exists(os.path.join(REPO, p.split(":")[0]))
      }
  )
  links = re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", text)
  base = os.path.dirname(os.path.join(REPO, page))
  missing += [l for l in links if not os.path.exists(os.path.join(base, l.split("#")[0]))]
  assert not missing, f"{page} names paths that do not exist: {missing}"


def test_readme_python_imports():
  for block in _fences(_text("README.md"), ("python",)):
    for node in ast.walk(ast.parse(block)):
      if isinstance(node, ast.ImportFrom):
        module = importlib.import_module(node.module)
        for alias in node.names:
          assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_readme_is_a_front_page():
  assert len(_text("README.md").splitlines()) <= 250
