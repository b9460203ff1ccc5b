"""Tests for rzero_jax.verify.executor: policy, isolation, adversarial battery, benign programs."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rzero_jax.verify.executor import (
    ExecResult,
    Executor,
    call_text,
    canonical_inputs,
    check_program,
    same_output,
)
from tests.support import REPO

SECRET = "hunter2-rzero-test-secret"
os.environ["RZERO_TEST_SECRET"] = SECRET
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def executor():
  with Executor(workers=2) as ex:
    yield ex


@pytest.fixture(scope="module")
def host_paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("host")
  (root / "secret.txt").write_text(SECRET)
  (root / "keep.txt").write_text("keep")
  return {
      "marker": str(root / "pwned"),
      "secret": str(root / "secret.txt"),
      "keep": str(root / "keep.txt"),
      "dir": str(root),
  }


# (name, inputs, program); inputs may use {marker}, {secret}, {keep}, {dir}.
ATTACKS = [
    (
        "infinite_loop",
        "",
        """
def f():
    while True:
        pass
""",
    ),
    (
        "sleep_forever",
        "",
        """
import time
def f():
    time.sleep(1000)
""",
    ),
    (
        "ignore_sigxcpu",
        "",
        """
import signal
def f():
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    signal.alarm(0)
    while True:
        pass
""",
    ),
    (
        "fork_bomb",
        "",
        """
import os
def f():
    while True:
        os.fork()
""",
    ),
    (
        "ctypes_fork",
        "",
        """
import ctypes
def f():
    pid = ctypes.CDLL(None).fork()
    assert pid < 0, pid
    return pid
""",
    ),
    (
        "multiprocessing",
        "",
        """
import multiprocessing as mp
def f():
    p = mp.Process(target=print)
    p.start()
    return 1
""",
    ),
    (
        "thread_bomb",
        "",
        """
import threading
def f():
    for _ in range(10):
        threading.Thread(target=lambda: None).start()
    return 1
""",
    ),
    (
        "os_system",
        "'{marker}'",
        """
import os
def f(p):
    return os.system('touch ' + p)
""",
    ),
    (
        "subprocess",
        "'{marker}'",
        """
import subprocess
def f(p):
    return subprocess.run(['touch', p]).returncode
""",
    ),
    (
        "execv",
        "",
        """
import os
def f():
    os.execv('/bin/sh', ['sh', '-c', 'true'])
""",
    ),
    (
        "ctypes_system",
        "'{marker}'",
        """
import ctypes
def f(p):
    return ctypes.CDLL(None).system(('touch ' + p).encode())
""",
    ),
    (
        "dunder_import_concat",
        "'{marker}'",
        """
def f(p):
    return __import__('o' + 's').system('touch ' + p)
""",
    ),
    (
        "importlib",
        "'{marker}'",
        """
import importlib
def f(p):
    return importlib.import_module('os').system('touch ' + p)
""",
    ),
    (
        "unicode_identifier",
        "'{marker}'",
        """
def f(p):
    return __impｏrt__('os').system('touch ' + p)
""",
    ),
    (
        "subclasses_walk",
        "",
        """
def f():
    return [c.__name__ for c in ().__class__.__base__.__subclasses__()][:3]
""",
    ),
    (
        "write_host_file",
        "'{marker}'",
        """
def f(p):
    with open(p, 'w') as fh:
        fh.write('x')
    return 1
""",
    ),
    (
        "write_tmp",
        "",
        """
def f():
    with open('/tmp/x', 'w') as fh:
        fh.write('x')
    return 1
""",
    ),
    (
        "unlink_host_file",
        "'{keep}'",
        """
import os
def f(p):
    os.unlink(p)
    return 1
""",
    ),
    (
        "mkdir",
        "'{dir}'",
        """
import os
def f(d):
    os.mkdir(d + '/newdir')
    return 1
""",
    ),
    (
        "read_host_secret",
        "'{secret}'",
        """
def f(p):
    return open(p).read()
""",
    ),
    (
        "read_environ",
        "",
        """
import os
def f():
    return dict(os.environ)
""",
    ),
    (
        "read_proc_environ",
        "",
        """
def f():
    return open('/proc/self/environ').read()
""",
    ),
    (
        "read_parent_environ",
        "",
        """
import os
def f():
    return open(f'/proc/{os.getppid()}/environ').read()
""",
    ),
    (
        "read_etc_passwd",
        "",
        """
def f():
    return open('/etc/passwd').read()
""",
    ),
    (
        "list_root",
        "",
        """
import os
def f():
    return sorted(os.listdir('/'))
""",
    ),
    (
        "socket_connect",
        "",
        """
import socket
def f():
    s = socket.socket()
    s.connect(('1.1.1.1', 80))
    return 1
""",
    ),
    (
        "ctypes_socket",
        "",
        """
import ctypes
def f():
    fd = ctypes.CDLL(None).syscall(41, 2, 1, 0)
    assert fd < 0, fd
    return fd
""",
    ),
    (
        "kill_parent",
        "",
        """
import os
def f():
    os.kill(os.getppid(), 9)
    return 1
""",
    ),
    (
        "kill_everyone",
        "",
        """
import os
def f():
    os.kill(-1, 9)
    return 1
""",
    ),
    (
        "ctypes_kill",
        "",
        """
import ctypes
def f():
    r = ctypes.CDLL(None).kill(-1, 9)
    assert r < 0
    return r
""",
    ),
    (
        "memory_bomb_list",
        "",
        """
def f():
    return len([0] * 10**10)
""",
    ),
    (
        "memory_bomb_bytes",
        "",
        """
def f():
    return len(bytearray(2**34))
""",
    ),
    (
        "memory_creep",
        "",
        """
def f():
    x = []
    while True:
        x.append(' ' * 10**6)
""",
    ),
    (
        "print_flood",
        "",
        """
def f():
    while True:
        print('A' * 10000)
""",
    ),
    (
        "huge_output",
        "",
        """
def f():
    return 'A' * 10**7
""",
    ),
    (
        "deep_recursion",
        "0",
        """
def f(n):
    return f(n + 1)
""",
    ),
    (
        "segfault_recursion",
        "0",
        """
import sys
sys.setrecursionlimit(10**7)
def f(n):
    return f(n + 1)
""",
    ),
    (
        "big_int_pow",
        "",
        """
def f():
    return 10 ** (10 ** 9)
""",
    ),
    (
        "big_int_str",
        "",
        """
def f():
    return str(10 ** 5000)
""",
    ),
    (
        "sys_exit",
        "",
        """
import sys
def f():
    sys.exit(0)
""",
    ),
    (
        "os_exit",
        "",
        """
import os
def f():
    os._exit(0)
""",
    ),
    (
        "x32_syscall",
        "",
        """
import ctypes
def f():
    return ctypes.CDLL(None).syscall(0x40000000 | 39)
""",
    ),
    (
        "io_uring",
        "",
        """
import ctypes
def f():
    r = ctypes.CDLL(None).syscall(425, 8, 0)
    assert r < 0
    return r
""",
    ),
    (
        "memfd",
        "",
        """
import os
def f():
    return os.memfd_create('x')
""",
    ),
    (
        "raise_rlimit",
        "",
        """
import resource
def f():
    resource.setrlimit(resource.RLIMIT_CPU, (1000, 1000))
    return 1
""",
    ),
    (
        "setuid_root",
        "",
        """
import os
def f():
    os.setuid(0)
    return 1
""",
    ),
    (
        "ctypes_unshare",
        "",
        """
import ctypes
def f():
    r = ctypes.CDLL(None).unshare(0x10000000)
    assert r < 0
    return r
""",
    ),
    (
        "ctypes_ptrace",
        "",
        """
import ctypes, os
def f():
    r = ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)
    assert r < 0
    return r
""",
    ),
    (
        "tiocsti",
        "",
        """
import fcntl, termios
def f():
    fcntl.ioctl(0, termios.TIOCSTI, b'x')
    return 1
""",
    ),
    (
        "always_equal",
        "",
        """
class A:
    def __eq__(self, other):
        return True
    __hash__ = None
def f():
    return A()
""",
    ),
    (
        "str_subclass_repr",
        "",
        """
class S(str):
    def __eq__(self, other):
        return True
class A:
    def __repr__(self):
        return S('5')
def f():
    return A()
""",
    ),
]
ATTACK_IDS = [a[0] for a in ATTACKS]


def _jobs(host_paths):
  return [(program.strip(), inputs.format(**host_paths)) for _, inputs, program in ATTACKS]


@pytest.fixture(scope="module")
def battery(executor, host_paths):
  """The battery run twice: with the static policy, and with only the OS sandbox."""
  pids = executor.server_pids()
  checked = executor.run_many(_jobs(host_paths), timeout_s=TIMEOUT_S)
  raw = executor.run_many(_jobs(host_paths), timeout_s=TIMEOUT_S, static_checks=False)
  return {
      "checked": dict(zip(ATTACK_IDS, checked)),
      "raw": dict(zip(ATTACK_IDS, raw)),
      "pids": pids,
  }


def _contained(name, result, host_paths):
  assert isinstance(result, ExecResult)
  assert not os.path.exists(host_paths["marker"]), name
  assert open(host_paths["keep"]).read() == "keep"
  assert not os.path.exists(os.path.join(host_paths["dir"], "newdir"))
  assert SECRET not in (result.output or "") and SECRET not in (result.error or "")
  if result.ok:
    assert isinstance(result.output, str) and len(result.output) <= 1 << 16
    assert not same_output(result.output, "5")


@pytest.mark.parametrize("name", ATTACK_IDS)
def test_attack_contained_by_policy(battery, host_paths, name):
  result = battery["checked"][name]
  _contained(name, result, host_paths)
  assert result.status != "ok" or name in ("always_equal",)


EXPECTED_RAW = {
    "infinite_loop": "timeout",
    "sleep_forever": "timeout",
    "ignore_sigxcpu": "timeout",
    "fork_bomb": "error",
    "multiprocessing": "error",
    "thread_bomb": "error",
    "subprocess": "error",
    "execv": "error",
    "write_host_file": "error",
    "write_tmp": "error",
    "unlink_host_file": "error",
    "mkdir": "error",
    "read_host_secret": "error",
    "read_proc_environ": "error",
    "read_parent_environ": "error",
    "read_etc_passwd": "error",
    "socket_connect": "error",
    "kill_parent": "error",
    "kill_everyone": "error",
    "memory_bomb_list": "error",
    "memory_bomb_bytes": "error",
    "print_flood": "timeout",
    "huge_output": "error",
    "deep_recursion": "error",
    "big_int_pow": "timeout",
    "big_int_str": "error",
    "sys_exit": "error",
    "os_exit": "error",
    "x32_syscall": "error",
    "memfd": "error",
    "raise_rlimit": "error",
    "setuid_root": "error",
    "tiocsti": "error",
    "str_subclass_repr": "error",
}


@pytest.mark.parametrize("name", ATTACK_IDS)
def test_attack_contained_by_os_sandbox(battery, host_paths, name):
  result = battery["raw"][name]
  _contained(name, result, host_paths)
  if name in EXPECTED_RAW:
    assert result.status == EXPECTED_RAW[name], result
  if name == "memory_creep":
    assert result.status in ("error", "timeout")
  if name == "segfault_recursion":
    assert result.status in ("error", "timeout")
  if name == "read_environ":
    assert result.ok and "RZERO_TEST_SECRET" not in result.output
  if name == "list_root":
    assert set(eval(result.output)) <= {"tmp", "dev", "root", "usr", "opt", "home"}
  if name == "always_equal":
    assert result.ok and result.output.startswith("<__sandbox__.A object")


def test_servers_survive_the_battery(executor, battery):
  assert executor.server_pids() == battery["pids"]
  assert executor.run("def f(x):\n    return x + 1", "41") == ExecResult("ok", "42")


BENIGN = [  # (inputs, expected output, program)
    (
        "1, 2",
        "3",
        """
def f(a, b):
    return a + b
""",
    ),
    (
        "(6, 7)",
        "42",
        """
def f(pair):
    a, b = pair
    return a * b
""",
    ),
    (
        "'Hello world'",
        "'dlrow olleH'",
        """
def f(s):
    return s[::-1]
""",
    ),
    (
        "[3, 1, 2]",
        "[3, 2, 1]",
        """
def f(xs):
    return sorted(xs, key=lambda v: -v)
""",
    ),
    (
        "",
        "None",
        """
def f():
    return None
""",
    ),
    (
        "",
        "'empty'",
        """
def f():
    return 'empty'
""",
    ),
    (
        "80",
        "23416728348467685",
        """
from functools import lru_cache
@lru_cache(None)
def fib(n):
    return n if n < 2 else fib(n-1) + fib(n-2)
def f(n):
    return fib(n)
""",
    ),
    (
        "20",
        "2432902008176640000",
        """
def f(n):
    return 1 if n == 0 else n * f(n - 1)
""",
    ),
    (
        "3",
        "9",
        """
def f(n):
    def ack(m, k):
        if m == 0:
            return k + 1
        if k == 0:
            return ack(m - 1, 1)
        return ack(m - 1, ack(m, k - 1))
    return ack(2, n)
""",
    ),
    (
        "[1, 2, 3]",
        "[3, 2, 1]",
        """
class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        return self.items.pop()
def f(xs):
    s = Stack()
    for x in xs:
        s.push(x)
    return [s.pop() for _ in xs]
""",
    ),
    (
        "4",
        "'Child(8)'",
        """
class Base:
    def __init__(self, v):
        self.v = v
class Child(Base):
    def __init__(self, v):
        super().__init__(v * 2)
    def __repr__(self):
        return f'Child({self.v})'
def f(v):
    return repr(Child(v))
""",
    ),
    (
        "1, 2",
        "(1, 2)",
        """
from dataclasses import dataclass
@dataclass
class P:
    x: int
    y: int
def f(a, b):
    return (P(a, b).x, P(a, b).y)
""",
    ),
    (
        "10",
        "([1, 9, 25, 49, 81], {0: 0, 1: 1, 2: 2, 3: 0})",
        """
def f(n):
    return [x * x for x in range(n) if x % 2], {k: k % 3 for k in range(4)}
""",
    ),
    (
        "'banana'",
        "['a', 'b', 'n']",
        """
def f(s):
    return sorted({c for c in s})
""",
    ),
    (
        "12, 18",
        "(6, 66, 4.242641, True)",
        """
import math
def f(a, b):
    return math.gcd(a, b), math.comb(a, 2), round(math.sqrt(b), 6), math.pi > 3
""",
    ),
    (
        "'aab'",
        "([('a', 2)], 'baa')",
        """
from collections import Counter, deque
def f(s):
    d = deque(s)
    d.rotate(1)
    return Counter(s).most_common(1), ''.join(d)
""",
    ),
    (
        "[5, 1, 4]",
        "([1, 4], 6)",
        """
import heapq, itertools
def f(xs):
    return heapq.nsmallest(2, xs), len(list(itertools.permutations(xs)))
""",
    ),
    (
        "'a1b22'",
        "(['1', '22'], 'abc')",
        r"""
import re, string
def f(s):
    return re.findall(r'\d+', s), string.ascii_lowercase[:3]
""",
    ),
    (
        "[1, 2, 3]",
        "6",
        """
from typing import List
import sys
sys.setrecursionlimit(3000)
def f(xs: List[int]) -> int:
    return sum(xs)
""",
    ),
    (
        "4",
        "14",
        """
def gen(n):
    for i in range(n):
        yield i * i
def f(n):
    return sum(gen(n))
""",
    ),
    (
        "0",
        "'div0'",
        """
def f(x):
    try:
        return 1 // x
    except ZeroDivisionError:
        return 'div0'
""",
    ),
    (
        "2, 4",
        "'1/2'",
        """
from fractions import Fraction
def f(a, b):
    return str(Fraction(a, b))
""",
    ),
    (
        "{'a': 1}",
        "{1: 'a'}",
        """
def f(d):
    return {v: k for k, v in d.items()}
""",
    ),
    (
        "100",
        "1267650600228229401496703205376",
        """
def f(n):
    return 2 ** n
""",
    ),
    (
        "",
        "0.30000000000000004",
        """
def f():
    return 0.1 + 0.2
""",
    ),
    (
        "(1, 2)",
        "(1, 2)",
        """
def f(x):
    return x
if __name__ == '__main__':
    print(f(input()))
""",
    ),
    (
        "3, y=4",
        "25",
        """
class Point:
    __slots__ = ('x', 'y')
    def __init__(self, x, y):
        self.x, self.y = x, y
def f(x, y):
    p = Point(x, y)
    return p.x * p.x + p.y * p.y
""",
    ),
]


def test_benign_programs_correct(executor):
  results = executor.run_many([(program.strip(), inputs) for inputs, _, program in BENIGN])
  for (_, expected, program), result in zip(BENIGN, results):
    assert result == ExecResult("ok", expected), (program, result)


def test_state_does_not_leak_between_programs(executor):
  poison = [
      "import builtins\ndef f():\n    builtins.sorted = lambda *a, **k: 'HACKED'\n"
      "    builtins.len = None\n    return 1",
      "import sys\ndef f():\n    sys.modules['math'] = None\n    return 1",
      "import signal\ndef f():\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    return 1",
      "def f():\n    __builtins__['abs'] = lambda x: 'HACKED'\n    return 1",
  ]
  for program in poison:
    executor.run(program, "", static_checks=False)
  checks = [
      ("def f(xs):\n    return sorted(xs), len(xs), abs(-1)", "[3, 1, 2]", "([1, 2, 3], 3, 1)"),
      ("import math\ndef f():\n    return math.sqrt(4)", "", "2.0"),
      (
          "import signal\ndef f():\n    return signal.getsignal(signal.SIGTERM) == signal.SIG_DFL",
          "",
          "True",
      ),
  ]
  for program, inputs, expected in checks:
    assert executor.run(program, inputs, static_checks=False) == ExecResult("ok", expected)


def test_only_the_result_pipe_is_inherited(executor):
  program = (
      "import os\ndef f():\n    found = []\n    for k in range(3, 1024):\n        try:\n"
      "            os.write(k, b'')\n            found.append(k)\n        except OSError:\n"
      "            pass\n    return len(found)"
  )
  assert executor.run(program, "", static_checks=False) == ExecResult("ok", "1")


def test_isolation_report(executor):
  report = executor.isolation
  assert report["seccomp"] and report["namespaces"] and report["filesystem"]
  assert report["privileges_dropped"] and not report["warnings"]


def test_inputs_conventions_and_rejections(executor):
  identity = "def f(*args, **kwargs):\n    return args, kwargs"
  cases = [  # (inputs, output): the text inside f(...), as in AZR and CRUXEval
      ("1, 2", "((1, 2), {})"),
      ("(1, 2)", "(((1, 2),), {})"),
      ("((1, 2),)", "((((1, 2),),), {})"),
      ("[1, 2]", "(([1, 2],), {})"),
      ("()", "(((),), {})"),
      ("", "((), {})"),
      ("  ", "((), {})"),
      ("1,", "((1,), {})"),
      ("'a', k=[1], j=None", "(('a',), {'k': [1], 'j': None})"),
      ("dict(a=1, b=2)", "(({'a': 1, 'b': 2},), {})"),
      (
          "dict(), set(), frozenset({1}), tuple([1]), list('ab')",
          "(({}, set(), frozenset({1}), (1,), ['a', 'b']), {})",
      ),
      ("dict([(1, 2)], c=3)", "(({1: 2, 'c': 3},), {})"),
      (
          "[dict(x=(1, -2.5))], {frozenset(): b'z'}",
          "(([{'x': (1, -2.5)}], {frozenset(): b'z'}), {})",
      ),
      ("1 # comment", "((1,), {})"),
      ("-1, 2j, 1+2j", "((-1, 2j, (1+2j)), {})"),
  ]
  results = executor.run_many([(identity, inputs) for inputs, _ in cases])
  for (inputs, expected), result in zip(cases, results):
    assert result == ExecResult("ok", expected), (inputs, result)
  assert executor.run(identity, (1, "a")).output == "((1, 'a'), {})"
  assert executor.run(identity, ((1, 2),)).output == "(((1, 2),), {})"
  assert executor.run(identity, ()).output == "((), {})"
  for bad in [
      "3) or True or (0",
      "1)(2",
      "1), (2",
      "__import__('os')",
      "f(1)",
      "x",
      "9" * 5000,
      "[" * 300 + "]" * 300,
      "1" * (1 << 16),
      "*[1, 2]",
      "**{'a': 1}",
      "[*[1]]",
      "{**{}}",
      "dict(**{'a': 1})",
      "list([1], [2])",
      "set(a=1)",
      "dict.fromkeys('ab')",
      "range(3)",
      "'a' + 'b'",
      "lambda: 0",
      "x for x in [1]",
      "(y := 1)",
      "{[1]: 2}",
      "set([[1]])",
      "a=1, a=2",
      "dict(a=1, a=2)",
      "a=1, 2",
      "sorted([2, 1])",
      "(1, 2)[0]",
  ]:
    result = executor.run(identity, bad)
    assert result.status == "rejected" and result.error.startswith("inputs rejected"), (bad, result)
  lam = executor.run(identity, "[1], lambda x: x < 2").error
  assert "argument 2 is not a literal" in lam and "lambda x: x < 2" in lam
  assert executor.run(identity, (object(),)).status == "rejected"
  assert executor.run("def g():\n    return 1", "").status == "rejected"
  assert executor.run("def f(:\n", "").status == "rejected"
  assert executor.run("x = 1", "", static_checks=False).status == "error"
  with pytest.raises(ValueError, match="timeout_s"):
    executor.run(identity, "", timeout_s=0)
  with pytest.raises(TypeError, match="inputs"):
    executor.run(identity, 5)


def test_inputs_are_parsed_before_the_program_can_patch_builtins(executor):
  patcher = "import builtins\nbuiltins.dict = lambda **k: 'HACKED'\n" "def f(d):\n    return d"
  assert executor.run(patcher, "dict(a=1)", static_checks=False) == ExecResult("ok", "{'a': 1}")


def test_call_text_round_trips():
  assert call_text(1, "a", k=(2,)) == "1, 'a', k=(2,)"
  assert call_text((1, 2)) == "(1, 2)"
  assert call_text() == ""


def test_codecs_and_underscore_names(executor):
  program = "def f(text, encoding):\n    return text.encode(encoding)"
  for codec in ("shift_jis", "euc_jp", "gbk", "big5", "euc_kr", "iso2022_jp", "utf-16"):
    result = executor.run(program, f"'13:45', {codec!r}")
    assert result.ok and result.output.startswith("b'"), (codec, result)
  underscore = "def f(d):\n    return [(__, d[__]) for __ in d] + [___ for ___ in '']"
  assert executor.run(underscore, "{'a': 1}") == ExecResult("ok", "[('a', 1)]")


def test_validate_checks_policy_determinism_and_literal_output(executor):
  assert executor.validate("def f(x):\n    return [x, x]", "'a'") == ExecResult("ok", "['a', 'a']")
  uses_random = "import random\ndef f():\n    return random.random()"
  assert executor.validate(uses_random, "").status == "rejected"
  sneaky = "import statistics\ndef f():\n    return statistics.random.random()"
  result = executor.validate(sneaky, "")
  assert result.status == "rejected" and "nondeterministic" in result.error
  not_literal = "class A:\n    pass\ndef f():\n    return A()"
  assert executor.validate(not_literal, "").status == "rejected"
  assert executor.validate("def f():\n    return 1 / 0", "").status == "error"


def test_validate_catches_address_dependent_outputs():
  """Outputs derived from object addresses (default hash, repr, set order of objects) differ
  between the validation runs: they run in separate server processes (one per hash seed, each
  with its own address-space layout), and each child first shifts its heap
  (`_sandbox._shift_heap`), which alone separates two forks of one server."""
  programs = [
      "def f():\n    return hash(object()) % 100003",
      "class A:\n    pass\ndef f():\n    return str(A())[-8:]",
      # An output with little entropy (e.g. `% 7`) is caught only when the runs' addresses
      # differ in it: the check compares runs, it cannot prove determinism.
      "def f():\n    return [hash(object()) % 100003 for _ in range(20)]",
  ]
  with Executor(workers=1) as ex:
    for program in programs:
      result = ex.validate(program, "")
      assert result.status == "rejected" and "nondeterministic" in result.error, program
    assert ex.validate("def f():\n    return hash((1, 2.5))", "").ok  # numbers hash alike
    # forks of one server (the grading seed's, workers=1): the heap shift still separates them
    forks = ex.run_many([("def f():\n    return hash(object())", "")] * 4)
    assert all(r.ok for r in forks) and len({r.output for r in forks}) > 1


WORDS = "['apple', 'banana', 'cherry', 'date', 'elder', 'fig', 'grape', 'honeydew']"
# Programs whose output depends on the hash of strings/bytes (iteration order of sets and
# dicts of strings, `hash`): the same in two runs of one hash seed, not a function of the input.
HASH_SEED_DEPENDENT = [
    ("def f(s):\n    return hash(s) % 1000", "'abc'"),
    ("def f(s):\n    return hash(s)", "b'xyz'"),
    ("def f(x):\n    return hash(('a', x)) % 10", "1"),
    ("def f(w):\n    return sorted(w, key=hash)", WORDS),
    ("def f(w):\n    return list(set(w))", WORDS),
    ("def f(w):\n    return list(set(w))", "['a', 'b', 'c']"),
    ("def f(w):\n    return list({'x', 'y'})", "0"),
    ("def f(s):\n    return ''.join(set(s))", "'abcdefgh'"),
    ("def f(s):\n    return [c for c in set(s)][0]", "'hello world'"),
    ("def f(w):\n    return next(iter(set(w)))", WORDS),
    ("def f(w):\n    return tuple(frozenset(w))", WORDS),
    ("def f(w):\n    return str(set(w))", WORDS),
    ("def f(w):\n    return {x: i for i, x in enumerate(set(w))}", WORDS),
    ("def f(w):\n    return list(dict.fromkeys(set(w)))", WORDS),
    ("def f(w):\n    return min(set(w), key=len)", "['ab', 'cd', 'ef', 'gh', 'ij', 'kl']"),
    ("def f(w):\n    return list({(x, len(x)) for x in w})", WORDS),
    ("def f(w):\n    s = set(w)\n    s.pop()\n    return sorted(s)", WORDS),
    ("def f(a, b):\n    return list(set(a) ^ set(b))", "'abcd', 'cdef'"),
]
# Functions of their input although sets of strings print in a seed-dependent order.
HASH_SEED_INDEPENDENT = [
    ("def f(w):\n    return set(w)", WORDS),
    ("def f(w):\n    return sorted(set(w))", WORDS),
    ("def f(w):\n    return {x: len(x) for x in set(w)}", WORDS),
    ("def f(w):\n    return [frozenset(w), len(set(w))]", WORDS),
    ("def f(x):\n    return hash(x) % 7, hash((1, 2.5)), hash(None is None)", "12345"),
]


def test_validate_catches_hash_seed_dependent_outputs(executor):
  """Each validation run is in a server with its own PYTHONHASHSEED (all seeds fixed, so the
  verdicts are reproducible); grading runs use the first seed, whose output validation keeps."""
  results = executor.validate_many(HASH_SEED_DEPENDENT)
  for (program, inputs), result in zip(HASH_SEED_DEPENDENT, results):
    assert result.status == "rejected" and "nondeterministic" in result.error, (program, inputs)
    assert executor.run(program, inputs) == executor.run(program, inputs)  # grading: one seed
  results = executor.validate_many(HASH_SEED_INDEPENDENT)
  for (program, inputs), result in zip(HASH_SEED_INDEPENDENT, results):
    assert result.ok, (program, inputs, result)
    assert result == executor.run(program, inputs)  # the output that grading reproduces


def _hash_in_python(seed: int, text: str) -> str:
  env = dict(os.environ, PYTHONHASHSEED=str(seed))
  code = f"print(hash({text!r}))"
  return subprocess.run(
      [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
  ).stdout.strip()


def test_hash_seeds_grading_seed_and_lazy_servers():
  program = "def f(s):\n    return hash(s)"
  with pytest.raises(ValueError, match="hash_seeds"):
    Executor(hash_seeds=(0,))
  with pytest.raises(ValueError, match="hash_seeds"):
    Executor(hash_seeds=(3, 3))
  with Executor(workers=2, hash_seeds=(7, 0)) as ex:
    assert ex.run(program, "'abc'").output == _hash_in_python(7, "abc")
    # a failed first run is the verdict, with no runs under the other seeds (whose servers
    # start when first needed)
    assert ex.validate("def f():\n    return 1 / 0", "").status == "error"
    hangs = "def f():\n    while True:\n        pass"
    assert ex.validate(hangs, "", timeout_s=0.5).status == "timeout"
    assert len(ex.server_pids()) == 2
    result = ex.validate(program, "'abc'")
    assert result.status == "rejected" and "PYTHONHASHSEED=7, 0" in result.error
    assert len(ex.server_pids()) == 4
    assert ex.run(program, "'abc'").output == _hash_in_python(7, "abc")
    assert ex.validate("def f(x):\n    return x", "1").ok


def test_canonical_inputs_compare_values():
  same = [
      ("[1,2]", "[1, 2]"),
      ("(3)", "3"),
      ("'a'", '"a"'),
      ("{1, 2}", "{2, 1}"),
      ("{'a', 'b', 'c'}", "{'c', 'b', 'a'}"),
      ("dict(a=1)", "{'a': 1}"),
      ("{'b': 1, 'a': 2}", "{'a': 2, 'b': 1}"),
      ("1", "1.0"),
      ("True", "1"),
      ("1+0j", "1"),
      ("-0.0", "0"),
      ("frozenset({1})", "{1}"),
      ("set()", "frozenset()"),
      ("x=1, y=2", "y=2, x=1"),
      ("[1, 2], k=(3,)", "[1,2],k=(3, ) # note"),
      ("tuple([1])", "(1,)"),
      ("[{'k': {1.0, 2}}]", "[{'k': {2, 1}}]"),
  ]
  different = [
      ("[1, 2]", "(1, 2)"),
      ("1, 2", "(1, 2)"),
      ("'a'", "b'a'"),
      ("1", "'1'"),
      ("x=1", "1"),
      ("[1, 2]", "[2, 1]"),
      ("{}", "set()"),
      ("1.5", "1"),
      ("None", "0"),
      ("[[1]]", "[1]"),
      ("{1: 2}", "{2: 1}"),
      ("1j", "1"),
      ("", "()"),
  ]
  for a, b in same:
    assert canonical_inputs(a) == canonical_inputs(b), (a, b)
  for a, b in different:
    assert canonical_inputs(a) != canonical_inputs(b), (a, b)
  assert canonical_inputs((1, "a")) == canonical_inputs("1, 'a'")
  for bad in ("x", "1 + 1", "f(1)", "[1, 2"):
    with pytest.raises(ValueError):
      canonical_inputs(bad)
  # the same text whatever the hash seed (a set of strings is not printed in iteration order)
  code = (
      "from rzero_jax.verify.executor import canonical_inputs as c\n"
      "print(c(\"{'x', 'y', 'z', 'w'}, {'a': {'q', 'r', 's'}}, k=frozenset('abcdef')\"))"
  )
  texts = {
      subprocess.run(
          [sys.executable, "-c", code],
          env=dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=REPO),
          capture_output=True,
          text=True,
          check=True,
      ).stdout
      for seed in range(4)
  }
  assert len(texts) == 1


def test_same_output_compares_literals_only():
  assert same_output("frozenset({1, 2})", "frozenset({2, 1})")
  assert same_output("set()", "set()")
  assert same_output("frozenset({1})", "{1}")  # Python equality, as in CRUXEval
  assert not same_output("range(3)", "range(3)")
  assert same_output("[1, 2]", "[1,2]")
  assert same_output("{1, 2}", "{2, 1}")
  assert same_output("{'a': (1, 2)}", '{"a": (1, 2)}')
  assert same_output("1", "1.0")
  assert not same_output("(1,)", "[1]")
  assert not same_output("<__sandbox__.A object at 0x7f>", "<__sandbox__.A object at 0x7f>")
  assert not same_output("nan", "nan")
  assert not same_output("__import__('os').getpid()", "1")
  assert not same_output(None, "1")


@pytest.mark.parametrize(
    "program, deterministic, allowed",
    [
        ("import math\ndef f(x):\n    return math.sqrt(x)", False, True),
        ("import sys\nsys.setrecursionlimit(5000)\ndef f():\n    return 1", False, True),
        ("class f:\n    pass", False, True),
        ("f = lambda x: x", False, True),
        ("import os.path\ndef f():\n    return 1", False, False),
        ("from os import path\ndef f():\n    return 1", False, False),
        ("from . import x\ndef f():\n    return 1", False, False),
        ("import sys\ndef f():\n    return sys.modules", False, False),
        ("import sys\ndef f():\n    sys.exit(0)", False, False),
        ("def f():\n    return eval('1')", False, False),
        ("def f():\n    g = getattr\n    return g(1, 'real')", False, False),
        ("def f():\n    return ().__class__.__bases__", False, False),
        ("def f():\n    return __builtins__", False, False),
        ("def f():\n    return __impｏrt__('os')", False, False),
        ("from sys import modules\ndef f():\n    return 1", False, False),
        ("def f():\n    return (lambda: 0).__globals__", False, False),
        ("def f(d):\n    return [__ for __ in d]", False, True),
        ("def f():\n    ___ = 1\n    return ___", False, True),
        ("def f():\n    return __loader__", False, False),
        ("def f():\n    return __spec__", False, False),
        ("def f():\n    __x = 1\n    return __x", False, False),
        ("def f():\n    return __.__class__", False, False),
        ("import random\ndef f():\n    return random.random()", False, True),
        ("import random\ndef f():\n    return random.random()", True, False),
        ("import time\ndef f():\n    return time.time()", True, False),
        ("def f():\n    return id(1)", True, False),
        ("def g():\n    return 1", False, False),
        ("x" * 30_000, False, False),
    ],
)
def test_check_program(program, deterministic, allowed):
  assert (check_program(program, deterministic=deterministic) is None) is allowed


def _processes_with(token):
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if token.encode() in f.read():
          found.append(int(pid))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
      pass
  return found


def _exited(pid: int) -> bool:
  """True once `pid` is a zombie or gone (the pool reaps it)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
  except FileNotFoundError:
    return True


def test_pool_survives_server_death_and_leaves_no_strays():
  ex = Executor(workers=2)
  token = ex.token
  assert _processes_with(token)
  pids = ex.server_pids()
  for pid in pids:
    os.killpg(pid, signal.SIGKILL)
  deadline = time.monotonic() + 5  # SIGKILL lands asynchronously: wait until they are gone
  while not all(_exited(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.01)
  assert ex.run("def f():\n    return 1", "") == ExecResult("ok", "1")
  results = ex.run_many([("def f(i):\n    return i", str(i)) for i in range(8)])
  assert [r.output for r in results] == [str(i) for i in range(8)]
  ex.close()
  deadline = time.monotonic() + 5
  while _processes_with(token) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert _processes_with(token) == []
  with pytest.raises(RuntimeError, match="closed"):
    ex.run("def f():\n    return 1", "")


def test_degraded_mode_warns_loudly_and_still_contains(host_paths):
  with pytest.warns(RuntimeWarning, match="SANDBOX DEGRADED: no namespaces"):
    ex = Executor(namespaces=False)
  with ex:
    assert ex.isolation["seccomp"] and not ex.isolation["filesystem"]
    names = [
        "fork_bomb",
        "subprocess",
        "os_system",
        "write_host_file",
        "socket_connect",
        "kill_parent",
        "kill_everyone",
        "memory_bomb_list",
        "read_environ",
    ]
    jobs = [job for name, job in zip(ATTACK_IDS, _jobs(host_paths)) if name in names]
    for name, result in zip(names, ex.run_many(jobs, timeout_s=TIMEOUT_S, static_checks=False)):
      _contained(name, result, host_paths)
    assert ex.run("def f(x):\n    return x * 2", "21") == ExecResult("ok", "42")
