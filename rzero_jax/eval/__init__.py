"""Benchmark evaluation: loaders, prompts, scorers and the ``python -m rzero_jax.eval`` CLI.

``load_benchmark(name, path=None)`` gives a benchmark's items, ``score(name, item, response)`` one
response's score in [0, 1], and ``evaluate(...)`` runs a model over benchmarks (the R-Zero and
Absolute Zero loops call it). Names are imported lazily so that scoring does not import JAX.
"""

import importlib

_EXPORTS = {
    "BENCHMARKS": "benchmarks",
    "BenchmarkError": "benchmarks",
    "MATH_BENCHMARKS": "benchmarks",
    "load_benchmark": "benchmarks",
    "resolve": "benchmarks",
    "messages": "prompts",
    "extract": "scoring",
    "score": "scoring",
    "score_many": "scoring",
    "evaluate": "runner",
    "flat_metrics": "runner",
    "format_table": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  globals()[name] = value
  return value


def __dir__():
  return __all__
