"""Benchmark evaluation: loaders, prompts, scorers and the ``python -m rzero_jax.eval`` CLI.

``load_benchmark(name, path=None)`` gives a benchmark's items, ``score(name, item, response)`` one
response's score in [0, 1], and ``evaluate(...)`` runs a model over benchmarks (the R-Zero and
Absolute Zero loops call it). Names are imported lazily so that scoring does not import JAX.
"""

from rzero_jax.lazy import lazy_exports

_EXPORTS = {
    "benchmarks": ("BENCHMARKS", "BenchmarkError", "MATH_BENCHMARKS", "load_benchmark", "resolve"),
    "prompts": ("messages",),
    "scoring": ("extract", "score", "score_many"),
    "evaluation": ("evaluate",),
    "results": ("flat_metrics", "format_table"),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
