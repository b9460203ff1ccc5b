"""Grading worker: answers (pred, gold) equivalence requests over stdin/stdout frames.

Started by ``answers.grading_pool`` with ``python -I``. A soft SIGALRM stops slow
pure-Python SymPy work without losing the warm process; the parent's SIGKILL at the
hard deadline handles everything else (C-level big-integer loops).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time

from rzero_jax.verify import _pool, answers

_MEMORY_BYTES = 4 << 30


class _SoftTimeout(BaseException):
  """Raised by SIGALRM; a BaseException so library ``except Exception`` cannot swallow it."""


def _alarm(signum, frame):
  raise _SoftTimeout


def _exit_with_parent(parent: int) -> None:
  while os.getppid() == parent:
    time.sleep(1.0)
  os._exit(0)


def _compare(request: dict) -> bool:
  signal.setitimer(signal.ITIMER_REAL, max(0.05, float(request["soft_s"])))
  try:
    return answers.engine_equivalent(request["pred"], request["gold"], request["symmetric"])
  except (Exception, _SoftTimeout):
    return False
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)


def main() -> None:
  """Serves requests until stdin closes (or the parent dies)."""
  out = os.dup(1)
  os.dup2(2, 1)
  resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
  logging.disable(logging.CRITICAL)
  signal.signal(signal.SIGALRM, _alarm)
  _compare({"pred": "x^2-1", "gold": "(x-1)(x+1)", "symmetric": True, "soft_s": 30})
  _pool.write_frame(out, {"ready": True, "pid": os.getpid()})
  while True:
    request = _pool.read_frame(0)
    if request is None:
      return
    _pool.write_frame(out, {"equal": _compare(request)})
