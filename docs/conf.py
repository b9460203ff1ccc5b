"""Sphinx configuration of the rzero_jax docs (MyST Markdown pages + API reference from docstrings)."""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
# Importing the library for autodoc must not touch an accelerator or start a JAX backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "rzero_jax"
author = "rzero_jax authors"
copyright = "2026, rzero_jax authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Docstrings write code in single backticks (Markdown habit): render it as code, not as a reference.
default_role = "code"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one page per module, generated at build time from the package tree.
autosummary_generate = True
autosummary_imported_members = False
# A module page documents what the module defines; re-exports (`__all__`, package __init__) are
# documented where they are defined.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
add_module_names = False

# CI has no network: no intersphinx.
html_theme = "sphinx_book_theme"
html_title = "rzero_jax"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}


# The docstrings are plain text in a Markdown habit: lists, tables of fields (`name: text` lines)
# and indented blocks follow a line without a blank line between, and Markdown code fences appear
# inside prose. reStructuredText needs a blank line wherever the indentation changes and around
# lists, and code followed by a letter (`Role`s) needs an escaped space. `_plain_text_to_rst` adds
# those, makes a run of field lines a bullet list and escapes the fences before docutils reads a
# docstring; the library files keep their plain-text style.
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s")
_FIELD = re.compile(r"^\s*[\w/.]+(?:, [\w/.]+)*(?: / [\w/.]+)*(?: \[[^\]]*\])?(?: \w+)?:\s+\S")
_CODE = re.compile(r"(?<![\\`])(``[^`]+``|`[^`]+`)")  # `Role`s -> `Role`\ s: see _code_spans


def _code_spans(line: str) -> str:
  """Escapes Markdown fences and puts an escaped space between a code span and a letter after it."""
  line = line.replace("```", r"\`\`\`")

  def glued(span: re.Match) -> str:
    return span.group(0) + ("\\ " if re.match(r"\w", line[span.end() :]) else "")

  return _CODE.sub(glued, line)


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _fields_as_items(lines: list[str]) -> list[str]:
  """Runs of two or more `name: text` lines at one indentation (each maybe followed by deeper
  continuation lines) become bullet items."""
  heads = [i for i, line in enumerate(lines) if _FIELD.match(line) and not _LIST_ITEM.match(line)]
  items = set()
  for i in heads:
    indent, j = _indent(lines[i]), i + 1
    while j < len(lines) and lines[j].strip() and _indent(lines[j]) > indent:
      j += 1
    if j < len(lines) and j in heads and _indent(lines[j]) == indent:
      items.update((i, j))
  out, cont = [], None
  for i, line in enumerate(lines):
    if i in items:
      cont = _indent(line)
      out.append(" " * cont + "- " + line.lstrip())
    elif cont is not None and line.strip() and _indent(line) > cont:
      out.append(" " * (cont + 2) + line.lstrip())
    else:
      cont = None
      out.append(line)
  return out


def _plain_text_to_rst(app, what, name, obj, options, lines):
  src = _fields_as_items(lines)
  out, item, literal = [], None, None  # item: (marker, text) indents; literal: its base indent
  for k, line in enumerate(src):
    if literal is not None:
      if not line.strip() or _indent(line) > literal:
        out.append(line)
        continue
      literal = None
      if out[-1].strip():
        out.append("")
    line = _code_spans(line)
    if not line.strip():
      out.append(line)
      continue
    indent, marker = _indent(line), _LIST_ITEM.match(line)
    prev = out[-1] if out else ""
    if prev.strip():
      if marker:
        blank = item is None or indent != item[0]
      elif item is not None:
        blank = indent != item[1]
      else:
        blank = indent != _indent(prev)
      if blank:
        out.append("")
    if marker:
      item = (indent, marker.end())
    elif item is not None and indent != item[1]:
      item = None
    following = next((s for s in src[k + 1 :] if s.strip()), "")
    if (
        line.rstrip().endswith(":")
        and _indent(following) > indent
        and not _LIST_ITEM.match(following)
        and (item is None or _indent(following) > item[1])
    ):  # an indented block after "...:" (a table, a literal value) stays as written
      out += [line.rstrip() + ":", ""]
      literal = indent
      continue
    out.append(line)
  lines[:] = out


def setup(app):
  app.connect("autodoc-process-docstring", _plain_text_to_rst)
