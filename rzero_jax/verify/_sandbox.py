"""Sandbox fork server for untrusted Python programs. Standalone: stdlib only.

Run as ``python -S -s -B _sandbox.py CONFIG_JSON TOKEN`` (by ``executor.Executor``)
with a cleared environment. Startup, once per server:
1. pre-import the allowed modules (and the harness's own needs);
2. unshare user (when not root), mount, pid, net, ipc and uts namespaces, then fork
   so that the serving process is pid 1 of the new pid namespace;
3. build a minimal root: an empty read-only tmpfs holding only the Python prefix
   (read-only, noexec, nosuid, nodev), /dev/{null,zero,urandom} and an empty /tmp,
   then ``pivot_root`` into it and detach the old root;
4. drop privileges: uid/gid nobody when started as root, no capabilities,
   not dumpable.
Each step that the host does not allow is skipped and reported in the ready frame,
so that the parent can warn loudly.

Per program: fork a child that starts a new session, closes every inherited fd,
points stdin/stdout/stderr at /dev/null, sets rlimits (CPU, address space, file
size 0, open files, processes 0, core 0), installs a seccomp filter (x86_64: no
exec, fork/clone, sockets, signals to others, ptrace, mounts, namespaces, uid
changes, bpf, io_uring, memfd, file creation/removal/renames/chmod/write-opens,
and ENOSYS for any syscall newer than the table except a few harmless ones),
then evaluates the call's arguments (``parse_call``: literals and dict/set/frozenset/
tuple/list constructors of literals, never code), execs the program in a fresh module
and writes ``repr(f(*args, **kwargs))`` to a pipe.
The server enforces the wall-clock deadline (SIGKILL), caps the bytes it reads,
and kills every process left in the namespace after each program.
"""

import ast
import ctypes
import gc
import json
import math
import os
import platform
import resource
import select
import signal
import struct
import sys
import time
import types

HEADER = struct.Struct(">I")  # frames: 4-byte big-endian length, then JSON
MAX_FRAME = 1 << 24
_NOBODY = 65534
# Extension modules that the standard library imports lazily (codec lookups): the mounted
# Python installation is noexec, so they must be loaded before the server pivots into it.
_LAZY_EXTENSIONS = (
    "_multibytecodec",
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    "zlib",
    "_bz2",
    "_lzma",
)

# ---------------------------------------------------------------- call arguments

_CONSTRUCTORS = {"dict": dict, "set": set, "frozenset": frozenset, "tuple": tuple, "list": list}
_PARSE_ERRORS = (SyntaxError, ValueError, TypeError, MemoryError, RecursionError)


class _Refused(ValueError):
  """An input construct that ``parse_call`` does not accept."""


def parse_call(text):
  """``(args, kwargs)`` of the call ``f(<text>)`` (AZR's and CRUXEval's convention).

  ``"1, 2"`` is two arguments, ``"(1, 2)"`` one tuple, ``""`` none; keywords are allowed.
  Each argument is a literal or a dict/set/frozenset/tuple/list constructor of literals.
  Nothing is executed: raises ValueError (with the reason) for anything else.
  """
  try:
    call = ast.parse("f(" + text + "\n)", mode="eval").body
  except _PARSE_ERRORS as e:
    raise ValueError(f"not an argument list ({type(e).__name__})") from None
  if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
    raise ValueError("not an argument list: the text must fit inside f(...)")
  args = [_argument(node, f"argument {i + 1}") for i, node in enumerate(call.args)]
  kwargs = {}
  for keyword in call.keywords:
    if keyword.arg is None:
      raise ValueError("**-unpacking is not allowed in inputs")
    if keyword.arg in kwargs:
      raise ValueError(f"keyword argument {keyword.arg!r} repeated")
    kwargs[keyword.arg] = _argument(keyword.value, f"argument {keyword.arg}")
  return args, kwargs


def parse_value(text):
  """One value written like an argument of ``parse_call``; ValueError when it is not one."""
  try:
    node = ast.parse(text.strip(), mode="eval").body
  except _PARSE_ERRORS as e:
    raise ValueError(f"not a Python literal ({type(e).__name__})") from None
  return _argument(node, "value")


def _argument(node, where):
  if isinstance(node, ast.Starred):
    raise ValueError("*-unpacking is not allowed in inputs")
  try:
    return _value(node)
  except _PARSE_ERRORS as e:
    why = f" ({e})" if isinstance(e, (_Refused, TypeError)) else ""
    try:
      shown = ast.unparse(node)
    except _PARSE_ERRORS:
      shown = type(node).__name__
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise ValueError(
        f"{where} is not a literal or a dict/set/frozenset/tuple/list constructor "
        f"of literals{why}: {shown}"
    ) from None


def _value(node):
  if isinstance(node, ast.Call):
    return _construct(node)
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    items = [_value(item) for item in node.elts]
    return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
  if isinstance(node, ast.Dict):
    if any(key is None for key in node.keys):
      raise _Refused("**-unpacking in a dict")
    return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
  if isinstance(node, ast.Starred):
    raise _Refused("*-unpacking")
  return ast.literal_eval(node)


def _construct(node):
  name = node.func.id if isinstance(node.func, ast.Name) else None
  if name not in _CONSTRUCTORS:
    raise _Refused("calls something other than dict/set/frozenset/tuple/list")
  if len(node.args) > 1 or (node.keywords and name != "dict"):
    raise _Refused(f"too many arguments for {name}()")
  if any(isinstance(a, ast.Starred) for a in node.args) or any(
      k.arg is None for k in node.keywords
  ):
    raise _Refused("unpacking in a constructor")
  if len({k.arg for k in node.keywords}) < len(node.keywords):
    raise _Refused("a keyword argument repeated")
  args = [_value(a) for a in node.args]
  return _CONSTRUCTORS[name](*args, **{k.arg: _value(k.value) for k in node.keywords})


# ---------------------------------------------------------------- framing


def write_frame(fd, obj):
  """Writes one length-prefixed JSON frame to a file descriptor (also the pool's framing)."""
  data = json.dumps(obj).encode()
  view = memoryview(HEADER.pack(len(data)) + data)
  while view:
    view = view[os.write(fd, view) :]


def read_frame(fd):
  """Blocking read of one frame; None on end of file."""
  header = _read_exact(fd, HEADER.size)
  if header is None:
    return None
  (size,) = HEADER.unpack(header)
  if size > MAX_FRAME:
    raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
  body = _read_exact(fd, size)
  return None if body is None else json.loads(body)


def _read_exact(fd, size):
  buf = bytearray()
  while len(buf) < size:
    chunk = os.read(fd, size - len(buf))
    if not chunk:
      return None
    buf += chunk
  return bytes(buf)


# ---------------------------------------------------------------- seccomp (x86_64)

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_RET_KILL_PROCESS = 0x80000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM, _EACCES, _ENOSYS = 1, 13, 38
_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000 | 0o20000000
_TIOCSTI = 0x5412
_FIRST_UNLISTED = 424
_ALLOWED_NEW = (436, 439, 441, 449)  # close_range, faccessat2, epoll_pwait2, futex_waitv
_DENIED = {
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "execveat": 322,
    "kill": 62,
    "tkill": 200,
    "tgkill": 234,
    "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "socket": 41,
    "socketpair": 53,
    "connect": 42,
    "accept": 43,
    "accept4": 288,
    "sendto": 44,
    "sendmsg": 46,
    "sendmmsg": 307,
    "bind": 49,
    "listen": 50,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "unshare": 272,
    "setns": 308,
    "setuid": 105,
    "setgid": 106,
    "setreuid": 113,
    "setregid": 114,
    "setgroups": 116,
    "setresuid": 117,
    "setresgid": 119,
    "setfsuid": 122,
    "setfsgid": 123,
    "capset": 126,
    "bpf": 321,
    "userfaultfd": 323,
    "perf_event_open": 298,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "personality": 135,
    "memfd_create": 319,
    "mknod": 133,
    "mknodat": 259,
    "unlink": 87,
    "unlinkat": 263,
    "rename": 82,
    "renameat": 264,
    "renameat2": 316,
    "mkdir": 83,
    "mkdirat": 258,
    "rmdir": 84,
    "chmod": 90,
    "fchmod": 91,
    "fchmodat": 268,
    "chown": 92,
    "fchown": 93,
    "lchown": 94,
    "fchownat": 260,
    "truncate": 76,
    "ftruncate": 77,
    "link": 86,
    "linkat": 265,
    "symlink": 88,
    "symlinkat": 266,
    "creat": 85,
    "utime": 132,
    "utimes": 235,
    "utimensat": 280,
    "futimesat": 261,
    "setxattr": 188,
    "lsetxattr": 189,
    "fsetxattr": 190,
    "removexattr": 197,
    "lremovexattr": 198,
    "fremovexattr": 199,
    "prlimit64": 302,
    "setrlimit": 160,
    "inotify_init": 253,
    "inotify_init1": 294,
    "fanotify_init": 300,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "sethostname": 170,
    "setdomainname": 171,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "acct": 163,
    "quotactl": 179,
    "syslog": 103,
    "iopl": 172,
    "ioperm": 173,
    "vhangup": 153,
    "settimeofday": 164,
    "clock_settime": 227,
    "adjtimex": 159,
    "clock_adjtime": 305,
    "uselib": 134,
    "_sysctl": 156,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "move_pages": 279,
    "migrate_pages": 256,
    "mq_open": 240,
    "mq_unlink": 241,
    "modify_ldt": 154,
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "shmdt": 67,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
}
_NR_OPEN, _NR_OPENAT, _NR_IOCTL = 2, 257, 16


def _seccomp_program():
  """The BPF filter as bytes (struct sock_filter[])."""
  code = []  # (opcode, jt, jf, k)

  def ret(value):
    code.append((0x06, 0, 0, value))

  def load(offset):
    code.append((0x20, 0, 0, offset))

  def jump_unless(op, value, skip):
    code.append((op, 0, skip, value))  # fall through when the test holds

  load(4)
  jump_unless(0x15, _AUDIT_ARCH_X86_64, 1)
  code.append((0x05, 0, 0, 1))  # ja +1 (arch ok)
  ret(_RET_KILL_PROCESS)
  load(0)
  code.append((0x35, 0, 1, _X32_BIT))  # jge x32 -> kill
  ret(_RET_KILL_PROCESS)
  for nr in sorted(set(_DENIED.values())):
    jump_unless(0x15, nr, 1)
    ret(_RET_ERRNO | _EPERM)
  for nr, flags_offset in ((_NR_OPEN, 24), (_NR_OPENAT, 32)):
    jump_unless(0x15, nr, 4)
    load(flags_offset)
    code.append((0x45, 0, 1, _WRITE_FLAGS))  # jset write flags -> EACCES
    ret(_RET_ERRNO | _EACCES)
    load(0)
  jump_unless(0x15, _NR_IOCTL, 4)
  load(24)
  jump_unless(0x15, _TIOCSTI, 1)
  ret(_RET_ERRNO | _EPERM)
  load(0)
  for nr in _ALLOWED_NEW:
    jump_unless(0x15, nr, 1)
    ret(_RET_ALLOW)
  code.append((0x35, 0, 1, _FIRST_UNLISTED))  # jge newer syscalls -> ENOSYS
  ret(_RET_ERRNO | _ENOSYS)
  ret(_RET_ALLOW)
  return b"".join(struct.pack("HBBI", *ins) for ins in code)


class _SockFprog(ctypes.Structure):
  _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(libc, program):
  buf = ctypes.create_string_buffer(program, len(program))
  prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
  if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
  if libc.prctl(22, 2, ctypes.addressof(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def _seccomp_works(libc, program):
  """Installs the filter in a throwaway child and checks that fork is then refused."""
  pid = os.fork()
  if pid == 0:
    try:
      _install_seccomp(libc, program)
      os._exit(0 if libc.fork() == -1 else 1)
    except BaseException:  # noqa: BLE001 - any failure means "not available"
      os._exit(1)
  return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


# ---------------------------------------------------------------- namespaces and mounts

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_ST_RELATIME = 4096
_MNT_DETACH = 2
_SYS_PIVOT_ROOT = 155


def _call(result, what):
  if result != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(libc):
  """Enters new namespaces; returns their names. Raises OSError when not permitted."""
  flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
  uid, gid = os.getuid(), os.getgid()
  if uid != 0:
    flags |= _CLONE_NEWUSER
  _call(libc.unshare(flags), "unshare")
  if uid != 0:
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"0 {uid} 1"),
        ("/proc/self/gid_map", f"0 {gid} 1"),
    ):
      with open(path, "w") as f:
        f.write(text)
  return ["user"] * (uid != 0) + ["mount", "pid", "net", "ipc", "uts"]


def _mount(libc, source, target, fstype, flags, data=None):
  _call(
      libc.mount(
          source and source.encode(),
          target.encode(),
          fstype and fstype.encode(),
          flags,
          data and data.encode(),
      ),
      f"mount {target}",
  )


def _bind_readonly(libc, source, target):
  _mount(libc, source, target, None, _MS_BIND | _MS_REC)
  flags = os.statvfs(target).f_flag  # keep atime flags: a user namespace may not change them
  kept = flags & (_MS_NOATIME | _MS_NODIRATIME) | (_MS_RELATIME if flags & _ST_RELATIME else 0)
  _mount(
      libc,
      None,
      target,
      None,
      _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | kept,
  )


def _pivot(libc, root, readonly_paths):
  """Makes ``root`` (an existing empty directory) the new, minimal, read-only root."""
  _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
  _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755")
  for path in readonly_paths:
    os.makedirs(root + path, exist_ok=True)
    _bind_readonly(libc, path, root + path)
  os.makedirs(root + "/dev")
  for name in ("null", "zero", "urandom"):
    open(f"{root}/dev/{name}", "w").close()
    _mount(libc, f"/dev/{name}", f"{root}/dev/{name}", None, _MS_BIND)
  os.makedirs(root + "/tmp")
  os.makedirs(root + "/.old")
  _call(libc.syscall(_SYS_PIVOT_ROOT, root.encode(), (root + "/.old").encode()), "pivot_root")
  os.chdir("/")
  _call(libc.umount2(b"/.old", _MNT_DETACH), "umount old root")
  os.rmdir("/.old")
  _mount(libc, None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
  os.chdir("/tmp")


def _drop_privileges(libc, host_root):
  """Host root becomes nobody; everyone loses all capabilities and dumpability."""
  if host_root:
    os.setgroups([])
    os.setresgid(_NOBODY, _NOBODY, _NOBODY)
    os.setresuid(_NOBODY, _NOBODY, _NOBODY)
  header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
  _call(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
  libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0


def _isolate(libc, scratch, readonly_paths, out_fd, namespaces):
  """Namespaces, minimal root and privilege drop, as far as the host (and config) allow."""
  report = {"namespaces": [], "filesystem": False, "privileges_dropped": False, "warnings": []}
  host_root = os.getuid() == 0
  try:
    if not namespaces:
      raise OSError("disabled by configuration")
    report["namespaces"] = _unshare(libc)
  except OSError as e:
    report["warnings"].append(
        f"no namespaces ({e}): programs share the host's network, "
        "process table and (read-only) files"
    )
  if report["namespaces"]:
    _become_pid1(libc, out_fd)
    try:
      _pivot(libc, scratch, readonly_paths)
      report["filesystem"] = True
    except OSError as e:
      report["warnings"].append(
          f"no private root ({e}): programs can read host files " "that the sandbox uid can read"
      )
  try:
    _drop_privileges(libc, host_root)
    report["privileges_dropped"] = True
  except OSError as e:
    report["warnings"].append(f"could not drop privileges ({e})")
  return report


def _become_pid1(libc, out_fd):
  """Forks into the new pid namespace; the original process only mirrors the child's exit."""
  pid = os.fork()
  if pid == 0:
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    return
  for fd in (0, 1, out_fd):
    os.close(fd)
  _, status = os.waitpid(pid, 0)
  os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


# ---------------------------------------------------------------- the child


class _Sink:
  """Discards program output (stdout/stderr) without holding it in memory."""

  def write(self, text):
    return len(text)

  def flush(self):
    pass


def _set_limits(timeout_s, memory_bytes):
  cpu = max(1, math.ceil(timeout_s))
  for res, value in (
      (resource.RLIMIT_CPU, (cpu, cpu + 1)),
      (resource.RLIMIT_AS, (memory_bytes, memory_bytes)),
      (resource.RLIMIT_FSIZE, (0, 0)),
      (resource.RLIMIT_NOFILE, (64, 64)),
      (resource.RLIMIT_CORE, (0, 0)),
      (resource.RLIMIT_NPROC, (0, 0)),
  ):
    resource.setrlimit(res, value)


def _child(request, result_fd, config, seccomp, libc):
  """Runs one program; never returns."""
  try:
    os.setsid()
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
      os.dup2(devnull, fd)
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, 1 << 16)
    for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGXCPU, signal.SIGXFSZ):
      signal.signal(sig, signal.SIG_DFL)
    _set_limits(request["timeout_s"], config["baseline"] + config["memory_mb"] * (1 << 20))
    sys.stdout = sys.stderr = _Sink()
    sys.stdin = None
    if "random" in sys.modules:
      sys.modules["random"].seed()
    if seccomp is not None:
      _install_seccomp(libc, seccomp)
    padding = _shift_heap()  # noqa: F841 - kept alive while the program runs
    reply = _execute(request["program"], request["inputs"], config["output_limit"])
  except BaseException as e:  # noqa: BLE001 - the child reports every failure
    reply = {"status": "error", "error": _describe(e)}
  try:
    _write_result(result_fd, reply, config["output_limit"])
  finally:
    os._exit(0)


def _shift_heap():
  """Random-sized allocations in every small-object size class and on the malloc heap, so that
  object addresses (and so default ``hash``/``repr`` values and set orders) differ between
  runs forked from the same server. The shift is large (thousands of slots) in the 16- and
  32-byte classes but small in the others: a class instance or a small tuple (48 bytes with
  the GC header) lands on a few dozen addresses, so two forks printed the same
  ``str(A())[-8:]`` in about 1.3% of pairs. Validation does not rely on this alone: its runs
  are in different servers (one per hash seed, each exec'd with its own address-space
  layout), and all of them must agree."""
  noise = os.urandom(4096)
  count = 64 + int.from_bytes(noise[:2], "little") % 1024
  return (
      [object() for _ in range(noise[5] + 16 * noise[6])]  # 16-byte class
      + [float(k) for k in range(noise[7] + 16 * noise[8])]  # 32-byte class
      + [bytes(2 + noise[k] % 470) for k in range(16, 16 + count)]  # 48..512
      + [bytearray(int.from_bytes(noise[2:5], "little") % (96 << 10))]
  )  # malloc heap


def _describe(e):
  try:
    text = f"{type(e).__name__}: {e}"
  except BaseException:  # noqa: BLE001 - a hostile __str__
    text = type(e).__name__
  return text[:1000]


def _execute(program, inputs, output_limit):
  args, kwargs = parse_call(inputs)  # before the program runs: it may patch builtins
  module = types.ModuleType("__sandbox__")
  sys.modules["__sandbox__"] = module
  exec(compile(program, "<program>", "exec"), module.__dict__)
  f = module.__dict__.get("f")
  if not callable(f):
    return {"status": "error", "error": "NameError: the program does not define a function f"}
  output = repr(f(*args, **kwargs))
  if type(output) is not str:
    return {"status": "error", "error": "TypeError: repr did not return a str"}
  if len(output) > output_limit:
    return {"status": "error", "error": f"OutputTooLarge: repr is {len(output)} characters"}
  return {"status": "ok", "output": output}


def _write_result(fd, reply, output_limit):
  data = json.dumps(reply).encode()[: output_limit * 12 + 4096]
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- the server


def _collect(pid, result_fd, deadline, byte_limit):
  """Reads the child's result until it exits, the deadline passes, or too many bytes come."""
  data = bytearray()
  while True:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      return "timeout", bytes(data), _kill_and_wait(pid)
    if select.select([result_fd], [], [], remaining)[0]:
      chunk = os.read(result_fd, 1 << 16)
      if not chunk:
        break
      data += chunk
      if len(data) > byte_limit:
        return "overflow", bytes(data), _kill_and_wait(pid)
  while time.monotonic() < deadline:
    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
      return "done", bytes(data), _kill_and_wait(pid)
    time.sleep(0.0005)
  return "timeout", bytes(data), _kill_and_wait(pid)


def _kill_and_wait(pid):
  _kill(pid)
  return os.waitpid(pid, 0)[1]


def _kill(pid):
  for target in (-pid, pid):
    try:
      os.kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass


def _reap_strays():
  """As pid 1 of a private pid namespace: kill and reap whatever a program left behind."""
  if os.getpid() == 1:
    try:
      os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
      pass
  while True:
    try:
      if os.waitpid(-1, os.WNOHANG)[0] == 0:
        break
    except ChildProcessError:
      break


def _signal_name(sig):
  try:
    return signal.Signals(sig).name
  except ValueError:
    return f"signal {sig}"


def _classify(outcome, data, status, timeout_s):
  if outcome == "timeout":
    return {"status": "timeout", "error": f"wall-clock limit of {timeout_s} s"}
  if outcome == "overflow":
    return {"status": "error", "error": "OutputTooLarge: result exceeds the output limit"}
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    name = _signal_name(sig)
    if sig in (signal.SIGXCPU, signal.SIGKILL):
      return {"status": "timeout", "error": f"CPU limit ({name})"}
    return {"status": "error", "error": f"killed by {name}"}
  try:
    reply = json.loads(data)
  except ValueError:
    return {"status": "error", "error": "the program exited without a result"}
  if not isinstance(reply, dict) or reply.get("status") not in ("ok", "error"):
    return {"status": "error", "error": "malformed result"}
  if reply["status"] == "ok" and not isinstance(reply.get("output"), str):
    return {"status": "error", "error": "malformed result"}
  return {
      "status": reply["status"],
      "output": reply.get("output"),
      "error": str(reply.get("error"))[:1000] if reply["status"] == "error" else None,
  }


def _run_one(request, config, seccomp, libc, out_fd):
  read_fd, write_fd = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(read_fd)
    _child(request, write_fd, config, seccomp, libc)
  os.close(write_fd)
  outcome, data, status = _collect(
      pid, read_fd, time.monotonic() + request["timeout_s"], config["output_limit"] * 12 + 4096
  )
  os.close(read_fd)
  _reap_strays()
  write_frame(out_fd, _classify(outcome, data, status, request["timeout_s"]))


def _vm_size():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def main():
  config = json.loads(sys.argv[1])
  out_fd = os.dup(1)
  os.dup2(2, 1)
  libc = ctypes.CDLL(None, use_errno=True)
  libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
  for name in config["preload"]:
    __import__(name)
  for name in _LAZY_EXTENSIONS:
    try:
      __import__(name)
    except ImportError:
      pass
  seccomp = _seccomp_program() if platform.machine() == "x86_64" else None
  if seccomp is not None and not _seccomp_works(libc, seccomp):
    seccomp = None
  config["baseline"] = _vm_size() + (64 << 20)
  report = _isolate(
      libc, os.getcwd(), [os.path.realpath(sys.base_prefix)], out_fd, config["namespaces"]
  )
  if seccomp is None:
    report["warnings"].append(
        f"no seccomp filter ({platform.machine()}, or the kernel refused "
        "it): programs may fork, exec and open sockets (rlimits and "
        "namespaces still apply)"
    )
  report["seccomp"] = seccomp is not None
  gc.freeze()
  write_frame(out_fd, {"ready": True, "isolation": report})
  while True:
    request = read_frame(0)
    if request is None:
      return
    _run_one(request, config, seccomp, libc, out_fd)


if __name__ == "__main__":
  main()
