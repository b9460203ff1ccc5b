"""Tests for rzero_jax.verify._pool: ordering, hard deadlines, crashes, restarts."""

import os
import sys

import pytest

from rzero_jax.verify import _pool
from tests.support import REPO

_WORKER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from rzero_jax.verify import _pool
_pool.write_frame(1, {"ready": True})
while True:
    request = _pool.read_frame(0)
    if request is None:
        break
    if request == "hang":
        while True:
            pass
    if request == "die":
        os._exit(3)
    _pool.write_frame(1, {"echo": request, "pid": os.getpid(), "tag": os.environ.get("TAG")})
"""


@pytest.fixture()
def pool():
  p = _pool.WorkerPool([sys.executable, "-c", _WORKER, REPO], 2)
  yield p
  p.close()


def test_replies_in_request_order(pool):
  replies = pool.map(list(range(20)), [5.0] * 20)
  assert [r["echo"] for r in replies] == list(range(20))


def test_deadline_kills_and_replaces_the_worker(pool):
  before = set(pool.pids())
  replies = pool.map([1, "hang", 2], [5.0, 0.5, 5.0])
  assert replies[1] is _pool.TIMEOUT
  assert [replies[0]["echo"], replies[2]["echo"]] == [1, 2]
  assert set(pool.pids()) != before
  assert [r["echo"] for r in pool.map([3, 4], [5.0, 5.0])] == [3, 4]


def test_a_dying_request_is_retried_once_then_reported(pool):
  assert pool.map(["die", 5], [5.0, 5.0])[0] is _pool.CRASHED
  assert pool.map([6], [5.0])[0]["echo"] == 6


def test_mismatched_lengths_and_closed_pool(pool):
  with pytest.raises(ValueError, match="2 requests but 1 timeouts"):
    pool.map([1, 2], [1.0])
  pids = pool.pids()
  pool.close()
  for pid in pids:
    with pytest.raises(ChildProcessError):
      os.waitpid(pid, os.WNOHANG)
  with pytest.raises(RuntimeError, match="closed"):
    pool.map([1], [1.0])


def test_startup_failure_is_reported():
  broken = _pool.WorkerPool([sys.executable, "-c", "import sys; sys.exit(1)"], 1)
  with pytest.raises(RuntimeError, match="failed to start"):
    broken.wait_ready()
  broken.close()


def test_groups_take_only_their_requests_and_keep_their_environment():
  p = _pool.WorkerPool([sys.executable, "-c", _WORKER, REPO], 2, env={"TAG": "main"})
  try:
    p.add_group("other", 1, {"TAG": "other"})
    assert p.groups == [None, "other"]
    assert len(p.wait_ready("other")) == 1 and len(p.wait_ready()) == 2
    groups = [None, "other"] * 4 + ["other", "other"]
    replies = p.map(list(range(8)) + ["hang", 9], [5.0] * 8 + [0.5, 5.0], groups)
    assert [r["echo"] for r in replies[:8]] == list(range(8))
    assert [r["tag"] for r in replies[:8]] == ["main", "other"] * 4
    assert replies[8] is _pool.TIMEOUT
    assert replies[9]["tag"] == "other"  # the replacement of the killed worker
    assert p.map(["die", 10], [5.0, 5.0], ["other", None])[0] is _pool.CRASHED
    assert p.map([11], [5.0], ["other"])[0]["tag"] == "other"
    assert [r["tag"] for r in p.map([12, 13], [5.0, 5.0])] == ["main", "main"]
    assert len(p.pids()) == 3
    with pytest.raises(ValueError, match="no worker group 'nope'"):
      p.map([1], [1.0], ["nope"])
    with pytest.raises(ValueError, match="1 requests but 2 groups"):
      p.map([1], [1.0], [None, None])
    with pytest.raises(ValueError, match="exists already"):
      p.add_group("other", 1, {})
  finally:
    p.close()
  with pytest.raises(RuntimeError, match="closed"):
    p.add_group("late", 1, {})
