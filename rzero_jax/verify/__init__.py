"""Host-side verification: answer grading, voting, repetition penalty, sandboxed executor.

Names are imported lazily so that importing one part (e.g. the grading worker, which
only needs ``answers``) does not pull in numpy/scipy or the executor.
"""

from rzero_jax.lazy import lazy_exports

_EXPORTS = {
    "answers": ("extract_boxed", "equivalent", "equivalent_many", "grade"),
    "voting": ("Vote", "majority_vote", "majority_votes"),
    "repetition": ("bleu", "bleu_matrix", "cluster_questions", "repetition_penalty"),
    "executor": (
        "ExecResult",
        "Executor",
        "call_text",
        "canonical_inputs",
        "check_program",
        "same_output",
    ),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
