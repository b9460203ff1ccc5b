"""Sandboxed execution of model-written Python (Absolute Zero's code environment).

A program defines ``f``; ``inputs`` is the text written inside the call ``f(...)``, as in
Absolute Zero and CRUXEval: ``"1, 2"`` calls ``f(1, 2)``, ``"(1, 2)"`` calls ``f((1, 2))``
(one tuple argument), ``""`` calls ``f()``, ``"'abc', k=3"`` calls ``f('abc', k=3)``. Each
argument is a Python literal or a dict/set/frozenset/tuple/list constructor of literals
(``dict(a=1)``, ``set()``, ``frozenset({1})``); anything else (names, operators, other calls)
is rejected with the reason. The arguments are checked here and evaluated in the sandbox by
the same parser (``_sandbox.parse_call``), as data: never spliced into code. A Python tuple
``inputs`` holds the positional argument values themselves. The result is
``repr(f(*args, **kwargs))`` as text, never an object: comparisons happen in this process on
parsed values (``same_output``), so ``__eq__`` tricks cannot fake a match.

Layers (see ``_sandbox.py`` for the OS side and docs/threat_model.md):
* policy: ``check_program`` (AST) rejects non-allowlisted imports, dynamic imports,
  ``eval``/``exec``/``open``/``getattr``..., dunder and frame attribute access, and,
  for Absolute Zero validity (``deterministic=True``), randomness and clocks. This is a
  validity filter and a first line of defence, not the security boundary.
* isolation: ``workers`` fork servers per hash seed, each started once (fork+exec, never a
  fork of this process) in new namespaces with a minimal read-only root, without privileges
  (nobody, or a capability-less user-namespace root) and with a cleared environment (but
  for ``PYTHONHASHSEED``); every program runs in a freshly forked child with rlimits and
  a seccomp filter, killed at its wall-clock deadline. A stuck or dead server is
  killed with its whole namespace and replaced.
* determinism: ``validate`` runs a program once per hash seed of ``Executor.hash_seeds``
  (0, 1, 2), each in a server started with that ``PYTHONHASHSEED`` (never two runs in one
  process, nor under one string hash), and needs equal output values: an output that depends
  on ``hash`` of a str/bytes or on the iteration order of a set (or dict) of strings differs
  between them, as one derived from object addresses does (see ``_sandbox._shift_heap``). The
  seeds are fixed, so verdicts are reproducible. Grading (``run``/``run_many``) always uses the
  first seed, and the output that ``validate`` returns is that seed's. Two runs under one seed
  would agree on such a program; three seeds miss a dependence on the order of a set of three
  strings about 1 time in 40 (two seeds: 1 in 6), of two strings 1 in 4 (two seeds: 1 in 2).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import uuid
import warnings
import weakref
from typing import Sequence, Union

from rzero_jax.verify import _pool, _sandbox

MAX_PROGRAM_CHARS = 20_000
MAX_INPUT_CHARS = 10_000
MAX_TIMEOUT_S = 60.0
HASH_SEEDS = (0, 1, 2)
_SERVER_GRACE_S = 3.0
_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox.py")

ALLOWED_MODULES = frozenset(
    {
        "abc",
        "array",
        "base64",
        "binascii",
        "bisect",
        "calendar",
        "cmath",
        "collections",
        "contextlib",
        "copy",
        "dataclasses",
        "datetime",
        "decimal",
        "difflib",
        "enum",
        "fractions",
        "functools",
        "graphlib",
        "hashlib",
        "heapq",
        "itertools",
        "json",
        "keyword",
        "math",
        "numbers",
        "operator",
        "pprint",
        "queue",
        "random",
        "re",
        "statistics",
        "string",
        "struct",
        "sys",
        "textwrap",
        "time",
        "typing",
        "unicodedata",
    }
)
NONDETERMINISTIC_MODULES = frozenset({"random", "time", "datetime"})
_BANNED_NAMES = frozenset(
    {
        "__import__",
        "__builtins__",
        "__loader__",
        "__spec__",
        "__build_class__",
        "breakpoint",
        "compile",
        "delattr",
        "eval",
        "exec",
        "getattr",
        "globals",
        "locals",
        "memoryview",
        "open",
        "setattr",
        "vars",
    }
)
_NONDETERMINISTIC_NAMES = frozenset({"id"})
_SAFE_DUNDERS = frozenset(
    {
        "__init__",
        "__name__",
        "__doc__",
        "__repr__",
        "__str__",
        "__len__",
        "__hash__",
        "__bool__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__iter__",
        "__next__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__call__",
        "__enter__",
        "__exit__",
        "__add__",
        "__radd__",
        "__iadd__",
        "__sub__",
        "__rsub__",
        "__isub__",
        "__mul__",
        "__rmul__",
        "__imul__",
        "__truediv__",
        "__floordiv__",
        "__mod__",
        "__pow__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__and__",
        "__or__",
        "__xor__",
        "__invert__",
        "__lshift__",
        "__rshift__",
        "__matmul__",
        "__post_init__",
        "__slots__",
    }
)
_SAFE_NAMES = frozenset({"__name__", "__slots__"})
_BANNED_ATTRIBUTES = frozenset(
    {
        "f_globals",
        "f_locals",
        "f_back",
        "f_builtins",
        "f_code",
        "tb_frame",
        "tb_next",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "co_code",
        "modules",
        "meta_path",
        "path_hooks",
        "settrace",
        "setprofile",
        "_getframe",
        "addaudithook",
        "exit",
        "_exit",
        "system",
        "popen",
        "environ",
        "fork",
        "kill",
    }
)
_log = logging.getLogger(__name__)

Inputs = Union[str, tuple]


@dataclasses.dataclass(frozen=True)
class ExecResult:
  """Outcome of one program run.

  status: "ok" (output holds ``repr(f(*args, **kwargs))``), "error" (exception, crash, oversized
  output; ``error`` says which), "timeout" (wall-clock or CPU limit), or "rejected"
  (refused before running: policy, size, non-literal inputs, or nondeterminism).
  """

  status: str
  output: str | None = None
  error: str | None = None

  @property
  def ok(self) -> bool:
    return self.status == "ok"


def _policy_violation(tree: ast.AST, deterministic: bool) -> str | None:
  banned_modules = NONDETERMINISTIC_MODULES if deterministic else frozenset()
  banned_names = _BANNED_NAMES | (_NONDETERMINISTIC_NAMES if deterministic else frozenset())
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      if isinstance(node, ast.ImportFrom) and (node.level or not node.module):
        return "relative import"
      modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
      for name in modules:
        root = name.split(".")[0]
        if root not in ALLOWED_MODULES or root in banned_modules:
          return f"import of {name!r} is not allowed"
      if isinstance(node, ast.ImportFrom):
        for alias in node.names:
          if alias.name in _BANNED_ATTRIBUTES or alias.name.startswith("__"):
            return f"import of {node.module}.{alias.name} is not allowed"
    elif isinstance(node, ast.Name):
      if node.id in banned_names or _dunder_name(node.id):
        return f"use of {node.id!r} is not allowed"
    elif isinstance(node, ast.Attribute):
      attr = node.attr
      if attr in _BANNED_ATTRIBUTES or (attr.startswith("__") and attr not in _SAFE_DUNDERS):
        return f"attribute {attr!r} is not allowed"
  return None


def _dunder_name(name: str) -> bool:
  """Names like ``__builtins__``/``__x`` are refused; ``__`` and ``___`` (all underscores) are
  ordinary variables."""
  return name.startswith("__") and name.strip("_") != "" and name not in _SAFE_NAMES


def _defines_f(tree: ast.Module) -> bool:
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == "f":
      return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      if any(isinstance(t, ast.Name) and t.id == "f" for t in targets):
        return True
  return False


def check_program(program: str, *, deterministic: bool = False) -> str | None:
  """None if ``program`` passes the static policy, else the reason it is rejected.

  ``deterministic=True`` adds Absolute Zero's validity bans (random, time, datetime, id).
  """
  if not isinstance(program, str):
    return f"program must be a str, got {type(program).__name__}"
  if len(program) > MAX_PROGRAM_CHARS:
    return f"program has {len(program)} characters (limit {MAX_PROGRAM_CHARS})"
  try:
    tree = ast.parse(program)
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
    return f"does not parse: {type(e).__name__}: {str(e)[:200]}"
  if not _defines_f(tree):
    return "the program does not define f at top level"
  return _policy_violation(tree, deterministic)


def _literal(text: str, limit: int):
  """The value of ``text`` (a literal, or a dict/set/frozenset/tuple/list constructor of
  literals) of at most ``limit`` characters; ValueError otherwise."""
  if len(text) > limit:
    raise ValueError(f"{len(text)} characters (limit {limit})")
  return _sandbox.parse_value(text)


def call_text(*args, **kwargs) -> str:
  """The ``inputs`` text for ``f(*args, **kwargs)`` (values must have literal reprs)."""
  parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
  return ", ".join(parts)


def _inputs_text(inputs: Inputs) -> str:
  """The checked argument text; ValueError (with the reason) when it is not acceptable."""
  if isinstance(inputs, tuple):
    inputs = call_text(*inputs)
  if not isinstance(inputs, str):
    raise TypeError(
        "inputs must be a str (the text inside f(...)) or a tuple of argument "
        f"values, got {type(inputs).__name__}"
    )
  if len(inputs) > MAX_INPUT_CHARS:
    raise ValueError(f"{len(inputs)} characters (limit {MAX_INPUT_CHARS})")
  _sandbox.parse_call(inputs)
  return inputs


def _canonical(value) -> tuple:
  """A nested tuple of tags, ints, floats and strs that is equal for two literal values exactly
  when they are equal in Python (``1 == 1.0 == True``, ``{1, 2} == frozenset({2, 1})``, dicts in
  any order), and whose repr does not depend on the process (sets are sorted, not iterated)."""
  if isinstance(value, (bool, int, float, complex)):
    if isinstance(value, complex):
      if value.imag:
        return ("complex", _canonical(value.real), _canonical(value.imag))
      value = value.real
    if isinstance(value, float) and value.is_integer():
      value = int(value)
    return ("number", int(value) if isinstance(value, bool) else value)
  if isinstance(value, (str, bytes)) or value is None or value is Ellipsis:
    return (type(value).__name__, value if isinstance(value, (str, bytes)) else repr(value))
  if isinstance(value, (list, tuple)):
    return (type(value).__name__,) + tuple(_canonical(item) for item in value)
  if isinstance(value, (set, frozenset)):
    return ("set",) + tuple(sorted((_canonical(item) for item in value), key=repr))
  if isinstance(value, dict):
    items = ((_canonical(k), _canonical(v)) for k, v in value.items())
    return ("dict",) + tuple(sorted(items, key=repr))
  raise TypeError(f"not a literal value: {type(value).__name__}")


def canonical_inputs(inputs: Inputs) -> str:
  """One text per call *value*: two ``inputs`` give the same text exactly when their arguments
  are equal (Python equality; keywords by name), however they are written: ``[1,2]`` and
  ``[1, 2]``, ``(3)`` and ``3``, ``'a'`` and ``"a"``, ``{1, 2}`` and ``{2, 1}``, ``dict(a=1)``
  and ``{'a': 1}``, ``1`` and ``1.0``. Deterministic across processes and hash seeds (unlike
  the repr of a set of strings). Parsed here by the sandbox's own parser (data, never code);
  ValueError when ``inputs`` is not acceptable."""
  args, kwargs = _sandbox.parse_call(_inputs_text(inputs))
  return repr(
      (
          tuple(_canonical(a) for a in args),
          tuple(sorted((k, _canonical(v)) for k, v in kwargs.items())),
      )
  )


def same_output(a: str | None, b: str | None, *, limit: int = 1 << 16) -> bool:
  """Whether two output reprs denote equal values; both must parse as Python literals (or
  dict/set/frozenset/tuple/list constructors of literals, e.g. ``frozenset({1})``)."""
  if not isinstance(a, str) or not isinstance(b, str):
    return False
  try:
    return bool(_literal(a.strip(), limit) == _literal(b.strip(), limit))
  except (ValueError, TypeError, RecursionError):
    return False


def _is_literal(text: str, limit: int) -> bool:
  try:
    _literal(text, limit)
  except ValueError:
    return False
  return True


def _from_reply(reply: dict) -> ExecResult:
  if reply is _pool.TIMEOUT:
    return ExecResult("timeout", error="the sandbox server did not answer; it was replaced")
  if reply is _pool.CRASHED:
    return ExecResult("error", error="the sandbox server died; it was replaced")
  return ExecResult(reply["status"], reply.get("output"), reply.get("error"))


def _clean_up(pool: _pool.WorkerPool, scratch: str) -> None:
  pool.close()
  shutil.rmtree(scratch, ignore_errors=True)


class Executor:
  """A pool of sandbox fork servers. Use as a context manager or call ``close()``.

  ``workers`` servers run programs in parallel (``run_many``); ``memory_mb`` is each
  program's address-space budget above the server's; ``output_limit`` caps the repr;
  ``namespaces=False`` skips Linux namespaces (for hosts that forbid them).
  ``hash_seeds`` (two or more distinct ints) are the servers' ``PYTHONHASHSEED`` values: every
  ``run`` uses the first (grading is reproducible); ``validate`` runs a program once per seed
  (started on the first ``validate``: ``workers`` more servers per further seed).
  ``isolation`` reports which OS facilities are active; each missing one is logged and
  warned about (``RuntimeWarning``) as "SANDBOX DEGRADED".
  """

  def __init__(
      self,
      workers: int = 1,
      *,
      memory_mb: int = 256,
      output_limit: int = 1 << 16,
      namespaces: bool = True,
      hash_seeds: Sequence[int] = HASH_SEEDS,
  ):
    if workers < 1:
      raise ValueError(f"workers must be >= 1, got {workers}")
    hash_seeds = tuple(hash_seeds)
    if len(set(hash_seeds)) < max(2, len(hash_seeds)) or not all(
        type(s) is int and 0 <= s <= 4294967295 for s in hash_seeds
    ):
      raise ValueError(
          f"hash_seeds must be at least two distinct ints in [0, 2**32), got {hash_seeds!r}"
      )
    self.workers = workers
    self.hash_seeds = hash_seeds
    self.output_limit = output_limit
    self._groups_lock = threading.Lock()
    self.token = uuid.uuid4().hex
    self._scratch = tempfile.mkdtemp(prefix="rzero-sandbox-")
    config = {
        "memory_mb": memory_mb,
        "output_limit": output_limit,
        "preload": sorted(ALLOWED_MODULES),
        "namespaces": namespaces,
    }
    argv = [sys.executable, "-S", "-s", "-B", _SERVER, json.dumps(config), self.token]
    self._pool = _pool.WorkerPool(
        argv, workers, env=self._env(hash_seeds[0]), cwd=self._scratch, start_timeout_s=60.0
    )
    self._finalizer = weakref.finalize(self, _clean_up, self._pool, self._scratch)
    self.isolation = self._pool.wait_ready()[0]["isolation"]
    self._warn(self.isolation["warnings"])

  @staticmethod
  def _env(hash_seed: int) -> dict[str, str]:
    return {"PYTHONHASHSEED": str(hash_seed), "PATH": "/nonexistent", "LANG": "C.UTF-8"}

  def _warn(self, warnings_: Sequence[str]) -> None:
    for warning in warnings_:
      message = f"SANDBOX DEGRADED: {warning}"
      _log.warning(message)
      warnings.warn(message, RuntimeWarning, stacklevel=3)

  def _seed_groups(self) -> list[str | None]:
    """The worker group of each hash seed (the first seed's servers are the default group);
    starts the other seeds' servers on first use."""
    groups = [None] + [f"PYTHONHASHSEED={seed}" for seed in self.hash_seeds[1:]]
    with self._groups_lock:
      missing = [g for g in groups[1:] if g not in self._pool.groups]
      for group, seed in zip(groups[1:], self.hash_seeds[1:]):
        if group in missing:
          self._pool.add_group(group, self.workers, self._env(seed))
      for group in missing:
        for info in self._pool.wait_ready(group):
          known = self.isolation["warnings"]
          self._warn([w for w in info["isolation"]["warnings"] if w not in known])
    return groups

  def __enter__(self) -> "Executor":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Kills every server and everything they started; removes the scratch directory."""
    self._finalizer()

  def server_pids(self) -> list[int]:
    return self._pool.pids()

  def run(
      self, program: str, inputs: Inputs, *, timeout_s: float = 2.0, static_checks: bool = True
  ) -> ExecResult:
    """Runs ``repr(f(<inputs>))`` in a fresh sandboxed process (see the module docstring).

    ``static_checks=False`` skips ``check_program`` (the OS sandbox still applies).
    """
    return self.run_many([(program, inputs)], timeout_s=timeout_s, static_checks=static_checks)[0]

  def _requests(
      self,
      jobs: Sequence[tuple[str, Inputs]],
      timeout_s: float,
      static_checks: bool,
      deterministic: bool,
  ) -> tuple[list[ExecResult | None], list[dict], list[int]]:
    """(results with the refusals filled in, requests for the rest, their job indices)."""
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
      raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S}], got {timeout_s}")
    results: list[ExecResult | None] = [None] * len(jobs)
    requests, where = [], []
    for i, (program, inputs) in enumerate(jobs):
      problem = check_program(program, deterministic=deterministic) if static_checks else None
      if problem is None and not isinstance(program, str):
        problem = f"program must be a str, got {type(program).__name__}"
      try:
        text = _inputs_text(inputs)
      except ValueError as e:
        problem = problem or f"inputs rejected: {e}"
      if problem is not None:
        results[i] = ExecResult("rejected", error=problem)
        continue
      requests.append({"program": program, "inputs": text, "timeout_s": timeout_s})
      where.append(i)
    return results, requests, where

  def run_many(
      self,
      jobs: Sequence[tuple[str, Inputs]],
      *,
      timeout_s: float = 2.0,
      static_checks: bool = True,
      deterministic: bool = False,
  ) -> list[ExecResult]:
    """``run`` for many (program, inputs) jobs, spread over all servers of the first hash seed.

    ``deterministic=True`` applies the Absolute Zero validity bans of ``check_program``.
    """
    results, requests, where = self._requests(jobs, timeout_s, static_checks, deterministic)
    replies = self._pool.map(requests, [timeout_s + _SERVER_GRACE_S] * len(requests))
    for i, reply in zip(where, replies):
      results[i] = _from_reply(reply)
    return results

  def validate_many(
      self, jobs: Sequence[tuple[str, Inputs]], *, timeout_s: float = 2.0
  ) -> list[ExecResult]:
    """Absolute Zero validity: policy with the determinism bans, an ok run with an output that
    parses as a Python literal, and then one more run per further hash seed, each in a separate
    process (a server started with that ``PYTHONHASHSEED``), all ok with an equal output value
    (``same_output``: a set of strings may print in another order). A program whose first run
    fails gets no further runs. The result holds the first seed's run (the one that grading
    reproduces)."""
    results, requests, where = self._requests(jobs, timeout_s, True, True)
    deadline = timeout_s + _SERVER_GRACE_S
    first = [_from_reply(r) for r in self._pool.map(requests, [deadline] * len(requests))]
    again = []
    for k, (i, run) in enumerate(zip(where, first)):
      if not run.ok:
        results[i] = run
      elif not _is_literal(run.output, self.output_limit):
        results[i] = ExecResult("rejected", error="output is not a Python literal")
      else:
        again.append(k)
    groups = self._seed_groups()[1:] if again else []
    replies = self._pool.map(
        [requests[k] for _ in groups for k in again],
        [deadline] * (len(groups) * len(again)),
        [g for g in groups for _ in again],
    )
    for n, k in enumerate(again):
      others = [_from_reply(replies[n + j * len(again)]) for j in range(len(groups))]
      results[where[k]] = self._agree(first[k], others)
    return results

  def _agree(self, first: ExecResult, others: Sequence[ExecResult]) -> ExecResult:
    """The verdict on a program whose first run gave a literal, given its other seeds' runs."""
    for run in others:
      if not run.ok:
        return run
      if run.output != first.output and not same_output(
          first.output, run.output, limit=self.output_limit
      ):
        seeds = ", ".join(map(str, self.hash_seeds))
        return ExecResult(
            "rejected",
            error=f"nondeterministic: runs in separate processes (PYTHONHASHSEED={seeds}) differ",
        )
    return first

  def validate(self, program: str, inputs: Inputs, *, timeout_s: float = 2.0) -> ExecResult:
    """``validate_many`` for one job."""
    return self.validate_many([(program, inputs)], timeout_s=timeout_s)[0]
