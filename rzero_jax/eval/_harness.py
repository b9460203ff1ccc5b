"""Test harness that runs inside the sandbox (stdlib only; its source is sent as the program).

Values cross the sandbox boundary as JSON with tags, never as objects or as code:
``{"t": [...]}`` tuple, ``{"s": [...]}`` set, ``{"fs": [...]}`` frozenset, ``{"d": [[k, v], ...]}``
dict, ``{"c": [re, im]}`` complex, ``{"f": "inf"}`` a non-finite float, ``{"b": hex}`` bytes and
``{"o": type name}`` anything else (an opaque value that equals nothing) and ``{"h": [sha256,
length]}`` an output too large to send. Values are read through the builtin types' own methods,
so an object with a hostile ``__eq__``/``__repr__`` cannot pass for a value; the parent process
decodes and compares.

The program the parent sends is this file followed by ``JOB = '<json>'`` and the executor's entry
point ``f``. A job is either ``{"call": source, "entry": name, "inputs": [[arg, ...], ...],
"limits": [s, ...]}`` (run ``entry(*args)`` on every input, stop at the first error or slow test)
or ``{"call": ..., "entry": ..., "arg_exprs": [text, ...]}`` (one call whose arguments are
Python expressions, evaluated here), or ``{"expr": text}`` (the value of one Python expression).
``f()`` returns the JSON text of ``[[status, value_or_error, seconds], ...]`` (CPU seconds).
"""

import hashlib
import json
import math
import time

_type, _len, _isinstance, _list, _repr = type, len, isinstance, list, repr
_perf = time.process_time  # CPU seconds: per-test limits hold on a busy host
_dumps, _loads = json.dumps, json.loads
_MAX_DEPTH = 200
BIG_OUTPUT = 1 << 20


def encode(value, depth=0):
  """A JSON-able tagged form of ``value`` (see the module docstring).

  Subclasses of builtin types (``Counter``, ``namedtuple``, ``IntEnum``...) are encoded as their
  builtin base through the base's own methods, so overridden methods are never called.
  """
  if depth > _MAX_DEPTH:
    raise ValueError("value nested too deeply")
  d = depth + 1
  if value is None or value is True or value is False:
    return value
  if _isinstance(value, bool):
    return bool.__bool__(value)
  if _isinstance(value, int):
    return int.__index__(value)
  if _isinstance(value, float):
    x = float.__float__(value)
    return x if math.isfinite(x) else {"f": float.__repr__(x)}
  if _isinstance(value, str):
    return str.__str__(value)
  if _isinstance(value, list):
    return [encode(v, d) for v in list.__iter__(value)]
  if _isinstance(value, tuple):
    return {"t": [encode(v, d) for v in tuple.__iter__(value)]}
  if _isinstance(value, (set, frozenset)):
    base = set if _isinstance(value, set) else frozenset
    items = sorted((encode(v, d) for v in base.__iter__(value)), key=_dumps)
    return {"s" if base is set else "fs": items}
  if _isinstance(value, dict):
    return {"d": [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]}
  if _isinstance(value, complex):
    return {"c": [encode(complex.real.__get__(value)), encode(complex.imag.__get__(value))]}
  if _isinstance(value, (bytes, bytearray)):
    return {"b": bytes(value).hex()}
  name = _type(value).__name__
  return {"o": name if _type(name) is str else "object"}


def encode_output(value):
  """``encode``, with a value whose JSON exceeds ``BIG_OUTPUT`` characters replaced by the SHA-256
  of that JSON (``{"h": [hex, length]}``): such outputs compare exactly, without ``atol``."""
  data = encode(value)
  text = _dumps(data)
  if _len(text) <= BIG_OUTPUT:
    return data
  return {"h": [hashlib.sha256(text.encode()).hexdigest(), _len(text)]}


class Hashed:
  """A large output known by the hash of its encoding."""

  __slots__ = ("digest",)

  def __init__(self, digest):
    self.digest = tuple(digest)

  def __eq__(self, other):
    return _type(other) is Hashed and other.digest == self.digest

  def __ne__(self, other):
    return not self == other

  def __hash__(self):
    return hash(self.digest)

  def __repr__(self):
    return "<output sha256=%s... of %d characters>" % (self.digest[0][:12], self.digest[1])


class Opaque:
  """A decoded value of a non-literal type: equal to nothing, not even itself."""

  __slots__ = ("name",)

  def __init__(self, name):
    self.name = name

  def __eq__(self, other):
    return False

  def __ne__(self, other):
    return True

  __hash__ = object.__hash__

  def __repr__(self):
    return "<" + str(self.name) + " object>"


def decode(data):
  """The value that ``encode`` produced ``data`` from."""
  if _isinstance(data, _list):
    return [decode(v) for v in data]
  if not _isinstance(data, dict):
    return data
  ((tag, body),) = data.items()
  if tag == "t":
    return tuple(decode(v) for v in body)
  if tag == "s":
    return set(decode(v) for v in body)
  if tag == "fs":
    return frozenset(decode(v) for v in body)
  if tag == "d":
    return {decode(k): decode(v) for k, v in body}
  if tag == "c":
    return complex(decode(body[0]), decode(body[1]))
  if tag == "f":
    return float(body)
  if tag == "b":
    return bytes.fromhex(body)
  if tag == "h":
    return Hashed(body)
  return Opaque(body)


def _error_name(e):
  try:
    return _type(e).__name__
  except BaseException:  # noqa: BLE001 - a hostile exception type
    return "error"


def run_job(job):
  """Runs one job (see the module docstring); the list of ``[status, value, seconds]``."""
  if "expr" in job:
    start = _perf()
    try:
      value = eval(compile(job["expr"], "<answer>", "eval"), {"__name__": "__answer__"})
      return [["ok", encode_output(value), _perf() - start]]
    except BaseException as e:  # noqa: BLE001 - any failure is a wrong answer
      return [["error", _error_name(e), _perf() - start]]
  namespace = {"__name__": "__solution__"}
  try:
    exec(compile(job["call"], "<solution>", "exec"), namespace)
    fn = namespace[job["entry"]]
  except BaseException as e:  # noqa: BLE001
    return [["error", "load: " + _error_name(e), 0.0]]
  results = []
  limits = job.get("limits") or []
  inputs = job.get("inputs")
  if "arg_exprs" in job:  # CRUXEval-I: arguments written as expressions, evaluated here
    inputs = [None]
  for i, args in enumerate(inputs):
    if args is not None:
      args = decode(args)  # not timed: only the call counts against the limit
    start = _perf()
    try:
      if args is None:
        args = [eval(compile(e, "<input>", "eval"), dict(namespace)) for e in job["arg_exprs"]]
      out = fn(*args)
      seconds = _perf() - start
      row = ["ok", encode_output(out), seconds]
    except BaseException as e:  # noqa: BLE001
      row = ["error", _error_name(e), _perf() - start]
    if row[0] == "ok" and i < _len(limits) and row[2] > limits[i]:
      row = ["timeout", "took %.3f s (limit %.3f s)" % (row[2], limits[i]), row[2]]
    results.append(row)
    if row[0] != "ok" and job.get("stop_on_failure", True):
      break
  return results


def main(job_text):
  return _dumps(run_job(_loads(job_text)))
