"""A persistent pool of worker subprocesses with a hard deadline per request.

Workers are started with ``subprocess.Popen`` (fork+exec, safe from a process that
runs JAX threads; never a bare fork of the trainer), each in its own session. They
speak length-prefixed JSON over stdin/stdout (JSON, not pickle: a worker that handled
model text is never trusted to send code to the parent). A worker first sends one
"ready" frame, then one reply frame per request. A request that outlives its deadline
gets its worker's whole process group SIGKILLed and the worker replaced; the request
is answered with ``TIMEOUT``. A request whose worker dies before answering is retried
once on a fresh worker (the death may predate the request), then answered ``CRASHED``.
Workers may come in named groups (``add_group``) that differ only in their environment; a
request addressed to a group runs only on that group's workers.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any, Sequence

# The framing both sides speak; read_frame is re-exported for the worker scripts.
from rzero_jax.verify._sandbox import HEADER, MAX_FRAME, read_frame, write_frame

TIMEOUT = {"_pool": "timeout"}
CRASHED = {"_pool": "crashed"}

_MAX_START_FAILURES = 3


class _Worker:
  """One worker process and the parent's view of its state."""

  def __init__(
      self, argv: Sequence[str], env: dict[str, str], cwd: str | None, group: str | None = None
  ):
    self.group = group
    self.stderr = tempfile.TemporaryFile()
    self.proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=self.stderr,
        env=env,
        cwd=cwd,
        close_fds=True,
        start_new_session=True,
    )
    self.buf = bytearray()
    self.ready = False
    self.info: Any = None
    self.job: int | None = None
    self.deadline = 0.0
    self.started = time.monotonic()

  def fileno(self) -> int:
    return self.proc.stdout.fileno()

  def send(self, obj: Any) -> None:
    write_frame(self.proc.stdin.fileno(), obj)

  def receive(self) -> list[Any] | None:
    """Reads what is available (call when readable); None once the worker is gone."""
    chunk = os.read(self.fileno(), 1 << 16)
    if not chunk:
      return None
    self.buf += chunk
    frames = []
    while len(self.buf) >= HEADER.size:
      (size,) = HEADER.unpack_from(self.buf)
      if size > MAX_FRAME:
        return None
      if len(self.buf) < HEADER.size + size:
        break
      body = bytes(self.buf[HEADER.size : HEADER.size + size])
      del self.buf[: HEADER.size + size]
      try:
        frames.append(json.loads(body))
      except ValueError:
        return None
    return frames

  def stderr_tail(self, size: int = 2000) -> str:
    self.stderr.seek(0, os.SEEK_END)
    self.stderr.seek(max(0, self.stderr.tell() - size))
    return self.stderr.read().decode(errors="replace")

  def kill(self) -> None:
    """SIGKILLs the worker's process group and reaps the worker."""
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
    self.proc.wait()
    for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
      stream.close()


class WorkerPool:
  """``size`` copies of the command ``argv``; ``map`` runs requests with deadlines.

  Calls to ``map`` are serialised by a lock; one call keeps every worker busy. The ``size``
  workers form the default group (``None``); ``add_group`` starts more under another name.
  """

  def __init__(
      self,
      argv: Sequence[str],
      size: int,
      *,
      env: dict[str, str] | None = None,
      cwd: str | None = None,
      start_timeout_s: float = 120.0,
  ):
    if size < 1:
      raise ValueError(f"pool size must be >= 1, got {size}")
    self._argv = list(argv)
    self._envs: dict[str | None, dict[str, str]] = {None: dict(env or {})}
    self._cwd = cwd
    self._start_timeout_s = start_timeout_s
    self._lock = threading.Lock()
    self._start_failures = 0
    self.closed = False
    self._workers = [self._spawn(None) for _ in range(size)]

  def _spawn(self, group: str | None) -> _Worker:
    return _Worker(self._argv, self._envs[group], self._cwd, group)

  def _replace(self, worker: _Worker) -> None:
    worker.kill()
    self._workers[self._workers.index(worker)] = self._spawn(worker.group)

  @property
  def groups(self) -> list[str | None]:
    """The worker groups, the default group (``None``) first."""
    return list(self._envs)

  def add_group(self, group: str, size: int, env: dict[str, str]) -> None:
    """Starts ``size`` more workers of ``argv`` with environment ``env`` as group ``group``
    (they serve only requests addressed to it); ``wait_ready`` waits for them too."""
    if size < 1:
      raise ValueError(f"group size must be >= 1, got {size}")
    if self.closed:
      raise RuntimeError("worker pool is closed")
    with self._lock:
      if group is None or group in self._envs:
        raise ValueError(f"worker group {group!r} exists already")
      self._envs[group] = dict(env)
      self._workers += [self._spawn(group) for _ in range(size)]

  def _start_failed(self, worker: _Worker, why: str) -> None:
    self._start_failures += 1
    tail = worker.stderr_tail()
    self._replace(worker)
    if self._start_failures >= _MAX_START_FAILURES:
      raise RuntimeError(f"worker {self._argv[:3]}... failed to start ({why}): {tail}")

  def wait_ready(self, group: str | None = None) -> list[Any]:
    """Blocks until every worker has started; returns the ready frames of ``group``'s."""
    self._locked_run([], [], [], until_ready=True)
    return [w.info for w in self._workers if w.group == group]

  def map(
      self,
      requests: Sequence[Any],
      timeouts_s: Sequence[float],
      groups: Sequence[str | None] | None = None,
  ) -> list[Any]:
    """Replies in request order; ``TIMEOUT`` or ``CRASHED`` where a worker failed.

    ``groups`` names each request's worker group (default: all in the default group).
    """
    if len(requests) != len(timeouts_s):
      raise ValueError(f"{len(requests)} requests but {len(timeouts_s)} timeouts")
    groups = [None] * len(requests) if groups is None else list(groups)
    if len(groups) != len(requests):
      raise ValueError(f"{len(requests)} requests but {len(groups)} groups")
    unknown = set(groups) - set(self._envs)
    if unknown:
      raise ValueError(f"no worker group {sorted(map(str, unknown))[0]!r}")
    return self._locked_run(requests, timeouts_s, groups)

  def _locked_run(self, *args: Any, **kwargs: Any) -> list[Any]:
    """`_run` under the pool's lock; an interrupted run replaces the workers it left busy."""
    if self.closed:
      raise RuntimeError("worker pool is closed")
    with self._lock:
      try:
        return self._run(*args, **kwargs)
      except BaseException:  # e.g. KeyboardInterrupt: no reply may leak into the next call
        for w in list(self._workers):
          if w.job is not None:
            self._replace(w)
        raise

  def _run(
      self,
      requests: Sequence[Any],
      timeouts_s: Sequence[float],
      groups: Sequence[str | None],
      until_ready: bool = False,
  ) -> list[Any]:
    pending = {group: collections.deque() for group in self._envs}
    for job, group in enumerate(groups):
      pending[group].append(job)
    retried: set[int] = set()
    results: list[Any] = [None] * len(requests)
    remaining = len(requests)
    while remaining or (until_ready and not all(w.ready for w in self._workers)):
      now = time.monotonic()
      for w in list(self._workers):
        if w.ready and w.job is None and pending[w.group]:
          if w.proc.poll() is not None:  # died while idle (killed, OOM): no request's fault
            self._replace(w)
            continue
          job = pending[w.group].popleft()
          try:
            w.send(requests[job])
          except OSError:
            pending[w.group].appendleft(job)
            self._replace(w)
            continue
          w.job, w.deadline = job, now + timeouts_s[job]
      busy = [w.deadline for w in self._workers if w.job is not None]
      starting = [w.started + self._start_timeout_s for w in self._workers if not w.ready]
      wait = max(0.0, min(busy + starting) - now)
      readable, _, _ = select.select(self._workers, [], [], wait)
      for w in readable:
        frames = w.receive()
        if frames is None:
          if w.job is not None and w.job not in retried:
            retried.add(w.job)
            pending[w.group].appendleft(w.job)
            self._replace(w)
          elif w.job is not None:
            results[w.job] = CRASHED
            remaining -= 1
            self._replace(w)
          elif not w.ready:
            self._start_failed(w, "exited")
          else:
            self._replace(w)
          continue
        for frame in frames:
          if not w.ready:
            w.ready, w.info = True, frame
            self._start_failures = 0
          elif w.job is not None:
            results[w.job] = frame
            w.job = None
            remaining -= 1
      now = time.monotonic()
      for w in list(self._workers):
        if w.job is not None and now >= w.deadline:
          results[w.job] = TIMEOUT
          remaining -= 1
          self._replace(w)
        elif not w.ready and now >= w.started + self._start_timeout_s:
          self._start_failed(w, f"not ready after {self._start_timeout_s} s")
    return results

  def pids(self) -> list[int]:
    return [w.proc.pid for w in self._workers]

  def close(self) -> None:
    """Kills every worker (and its process group). Idempotent."""
    if self.closed:
      return
    self.closed = True
    with self._lock:
      for w in self._workers:
        w.kill()
