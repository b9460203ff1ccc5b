"""Host-side verification: answer grading, voting, repetition penalty, sandboxed executor.

Names are imported lazily so that importing one part (e.g. the grading worker, which
only needs ``answers``) does not pull in numpy/scipy or the executor.
"""

import importlib

_EXPORTS = {
    "extract_boxed": "answers",
    "equivalent": "answers",
    "equivalent_many": "answers",
    "grade": "answers",
    "Vote": "voting",
    "majority_vote": "voting",
    "majority_votes": "voting",
    "bleu": "repetition",
    "bleu_matrix": "repetition",
    "cluster_questions": "repetition",
    "repetition_penalty": "repetition",
    "ExecResult": "executor",
    "Executor": "executor",
    "call_text": "executor",
    "canonical_inputs": "executor",
    "check_program": "executor",
    "same_output": "executor",
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
