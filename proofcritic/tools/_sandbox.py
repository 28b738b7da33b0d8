"""Run model-written Python (SymPy + stdlib) in an isolated, limited process.

Layers, outermost first (``SandboxResult.isolation`` lists those that took effect):

* bubblewrap (``bwrap``), where it is installed and works: new PID, mount, network, IPC and
  UTS namespaces; a read-only root holding only what the interpreter needs (``/usr``, the
  interpreter's own prefixes, a few files of ``/etc``), so no home folder, no service database,
  no other user's files; private tmpfs on ``/tmp``, ``/var/tmp`` and ``/dev/shm``; a ``/proc``
  of the sandbox's own processes; ``--die-with-parent``. Tags ``bwrap``, ``ro-root``.
* per check (``_bootstrap.py``; the warm fork server applies it to each forked check, and a
  cold check without bubblewrap too): new mount/PID/network/IPC/UTS namespaces, a private tmpfs
  on every world-writable directory, a fresh ``/proc``; a reaper as the namespace's pid 1 whose
  exit takes every process of the check with it; ``PR_SET_PDEATHSIG`` down the chain, so no
  check outlives the process that started it. Tags ``mountns``, ``tmpfs``, ``pidns``,
  ``procfs``, ``netns``, ``ipcns``, ``utsns``, ``hide-home``, ``pdeathsig``.
* the user code's process: a private unprivileged uid when running as root (``setuid``), no
  capabilities and ``no_new_privs`` (``no-caps``, ``no-new-privs``), rlimits (``cpu``, ``as``,
  ``nproc``, ``fsize``, ``nofile``, ``core``);
* the parent: wall-clock timeout, output cap (read incrementally), process-group kill, and with
  a private uid a final kill of every process owned by it (``kill-by-uid``);
* Python-level guards (``guards``): ``socket`` constructors raise ``PermissionError``,
  ``open``/``os.open``/pathlib writes and ``os`` mutators outside the work folder raise
  ``PermissionError``. These are guards, not a security boundary.

Without bubblewrap, and without the privilege to create namespaces (not root, no user
namespaces), only the uid/rlimit/guard layers and the parent's kills remain; the check's work
folder then lives in the host's temporary directory and is removed when the check ends or its
parent dies.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

LimitHit = Literal["timeout", "cpu", "memory", "output", "processes"]

_BOOTSTRAP = str(Path(__file__).with_name("_bootstrap.py"))

#: Modules imported before privileges are dropped.  When the interpreter lives
#: in a directory the unprivileged uid cannot read (e.g. pyenv under /root),
#: only these (and what they pull in) can be imported by the user code.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "sympy",
    "mpmath",
    "math",
    "cmath",
    "fractions",
    "decimal",
    "numbers",
    "itertools",
    "functools",
    "collections",
    "operator",
    "heapq",
    "bisect",
    "random",
    "statistics",
    "re",
    "json",
    "string",
    "typing",
    "dataclasses",
    "copy",
    "pprint",
    "textwrap",
    "time",
    "datetime",
    "traceback",
    "io",
    "pathlib",
    "socket",
    "subprocess",
    "tempfile",
)

_UID_BASE = 61000
_UID_RANGE = 2000


class SandboxException(BaseModel):
    type: str
    message: str
    traceback: str


class SandboxResult(BaseModel):
    stdout: str
    stderr: str
    exception: SandboxException | None = None
    exit_code: int | None
    limit_hit: LimitHit | None = None
    duration: float
    truncated: bool = False
    isolation: list[str] = []

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_hit is None and self.exception is None


class _UidAllocator:
    """Hands out private uids (one per concurrent run) so NPROC counts and the
    final kill-by-uid are per sandbox.  Skips uids that own live processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[int] = set()
        self._next = random.randrange(_UID_RANGE)

    def acquire(self) -> int | None:
        with self._lock:
            for _ in range(_UID_RANGE):
                uid = _UID_BASE + self._next
                self._next = (self._next + 1) % _UID_RANGE
                if uid not in self._used and not _pids_of_uid(uid):
                    self._used.add(uid)
                    return uid
        return None

    def release(self, uid: int | None) -> None:
        if uid is not None:
            with self._lock:
                self._used.discard(uid)


_uids = _UidAllocator()


def _pids_of_uid(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}")
        except OSError:
            continue
        if st.st_uid == uid:
            out.append(int(entry))
    return out


def _kill_uid(uid: int) -> None:
    # Repeat: a fork bomb may spawn between the scan and the kill.
    for _ in range(50):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _count_own_processes() -> int:
    uid = os.getuid()
    return len(_pids_of_uid(uid))


# --------------------------------------------------------------------------- bubblewrap

#: files of /etc the interpreter may read (the dynamic loader's cache, the time zone)
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
#: added when a check may use the network
_ETC_NETWORK = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")

#: give each check namespaces of its own where the machine allows; False takes the path of a
#: machine that does not (no root, no user namespaces): the tests use it to exercise that path
PER_CHECK_NAMESPACES = True

_bwrap_lock = threading.Lock()
_bwrap_probe: dict[str, str | None] = {}


class SandboxUnavailable(RuntimeError):
    """bubblewrap was required (``bwrap=True`` or ``PROOFCRITIC_BWRAP=1``) but cannot run here."""


def _python_roots() -> list[str]:
    """The folders the interpreter needs, bound read-only into the sandbox: its prefixes (the
    virtual environment and the installation it was made from), outside ``/usr``."""
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    }
    roots: set[str] = set()
    home = os.path.realpath(os.path.expanduser("~"))
    for path in candidates:
        for p in {path, os.path.realpath(path)}:
            if not p or not os.path.isdir(p) or p in ("/", home) or p == "/usr" or p.startswith("/usr/"):
                continue
            roots.add(p)
    ordered = sorted(roots, key=len)
    return [p for i, p in enumerate(ordered) if not any(p.startswith(q + os.sep) for q in ordered[:i])]


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a/b/c", "/a/b", "/a"]``."""
    out = []
    while path not in ("/", ""):
        out.append(path)
        path = os.path.dirname(path)
    return out


def _bwrap_command(*, server: bool, network: bool) -> list[str]:
    """The ``bwrap ... --`` prefix of a check (or of the fork server, which keeps the capabilities
    it needs to give each check namespaces of its own and then drops them in the check)."""
    root = os.geteuid() == 0
    cmd = [
        shutil.which("bwrap") or "bwrap",
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if not network:
        cmd.append("--unshare-net")
    if not root:
        cmd.append("--unshare-user")
    # the fork server prepares each check's mounts (under /tmp, owned by the check's uid) before
    # the check drops every capability
    caps = (["CAP_SETUID", "CAP_SETGID"] if root else []) + (
        ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_CHOWN"] if server else []
    )
    cmd += ["--cap-drop", "ALL"]
    for cap in caps:
        cmd += ["--cap-add", cap]
    # the private tmpfs first: the binds below may lie under /tmp (a virtual environment there)
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        cmd += ["--perms", "1777", "--size", str(64 << 20), "--tmpfs", path]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for path in _ETC_FILES + (_ETC_NETWORK if network else ()):
        cmd += ["--ro-bind-try", path, path]
    roots = _python_roots()
    boot = os.path.realpath(_BOOTSTRAP)
    binds = roots + ([] if any(boot.startswith(r + os.sep) for r in roots) else [boot])
    parents = sorted({os.path.dirname(p) for path in binds for p in _ancestors(path)} - {"/"}, key=len)
    for path in parents:  # bwrap would create them 0700, out of reach of the check's uid
        cmd += ["--perms", "0755", "--dir", path]
    for path in binds:
        cmd += ["--ro-bind", path, path]
    cmd += ["--remount-ro", "/", "--chdir", "/tmp", "--"]
    return cmd


def bwrap_status() -> tuple[bool, str]:
    """Whether checks run inside bubblewrap here, and why not when they don't. The first call
    probes ``bwrap`` once (a sandboxed interpreter that starts and exits); ``PROOFCRITIC_BWRAP=0``
    turns it off."""
    setting = os.environ.get("PROOFCRITIC_BWRAP", "").strip().lower()
    if setting in ("0", "no", "false", "off"):
        return False, "turned off by PROOFCRITIC_BWRAP"
    with _bwrap_lock:
        if "ok" not in _bwrap_probe:
            _bwrap_probe.update(ok=None, reason=None)
            if shutil.which("bwrap") is None:
                _bwrap_probe["reason"] = "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
            else:
                try:
                    done = subprocess.run(
                        _bwrap_command(server=False, network=False) + [sys.executable, "-I", "-S", "-c", "pass"],
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
                    if done.returncode == 0:
                        _bwrap_probe["ok"] = "1"
                    else:
                        _bwrap_probe["reason"] = (
                            "bwrap cannot run here: "
                            + (
                                done.stderr.decode("utf-8", "replace").strip().splitlines()
                                or [f"exit status {done.returncode}"]
                            )[-1]
                        )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    _bwrap_probe["reason"] = f"bwrap cannot run here: {exc}"
        return bool(_bwrap_probe["ok"]), _bwrap_probe["reason"] or ""


def _use_bwrap(wanted: bool | None) -> bool:
    if wanted is False:
        return False
    ok, reason = bwrap_status()
    if not ok and (wanted or os.environ.get("PROOFCRITIC_BWRAP", "").strip() == "1"):
        raise SandboxUnavailable(reason)
    return ok


def _terminate(proc) -> None:
    """Kill a check's process group: directly for a process we started, through the fork
    server for one it forked (its pid may be in another PID namespace)."""
    if isinstance(proc, _ForkedChild):
        proc.kill()
    else:
        _killpg(proc.pid)


def run_python(
    code: str,
    *,
    timeout: float = 10.0,
    cpu_time: int | None = None,
    memory_mb: int | None = 1024,
    max_output: int = 1_000_000,
    max_processes: int = 16,
    max_file_size: int = 16 * 1024 * 1024,
    max_open_files: int = 64,
    network: bool = False,
    drop_privileges: bool = True,
    preload: Sequence[str] = DEFAULT_PRELOAD,
    server: ForkServer | None = None,
    bwrap: bool | None = None,
) -> SandboxResult:
    """Run ``code`` in a fresh sandboxed interpreter and return what happened.

    ``cpu_time`` defaults to ``ceil(timeout)`` seconds; ``max_output`` caps stdout+stderr bytes
    together; ``max_processes`` is the RLIMIT_NPROC value (per private uid when running as root;
    otherwise added to this user's current process count, since NPROC is per real uid).

    ``server``: a warm :class:`ForkServer` (SymPy already imported) that forks the child instead
    of starting a new interpreter; every per-check layer is the same, and ``preload`` is the
    server's. When the server cannot start, or the check wants the network, the check runs cold.

    ``bwrap``: run inside bubblewrap (``None``: when it works here, see :func:`bwrap_status`;
    ``True``: required, :class:`SandboxUnavailable` otherwise; ``False``: never).
    """
    start = time.monotonic()
    uid: int | None = None
    if drop_privileges and os.geteuid() == 0:
        uid = _uids.acquire()
    if cpu_time is None:
        cpu_time = max(1, int(timeout + 0.999))
    nproc = (
        max_processes if uid is not None else (None if os.geteuid() == 0 else _count_own_processes() + max_processes)
    )
    cfg = {
        "network": network,
        "uid": uid,
        "preload": list(preload),
        "cpu": cpu_time,
        "memory": memory_mb * 1024 * 1024 if memory_mb else None,
        "nproc": nproc,
        "fsize": max_file_size,
        "nofile": max_open_files,
    }
    proc = None
    pipes: list[int] = []
    workdirs: list[str] = []
    try:
        if server is not None and not network:
            proc, pipes = server.spawn(code, {**cfg, "namespaces": PER_CHECK_NAMESPACES, "workdir": None})
        if proc is None:
            proc, pipes = _spawn_cold(code, cfg, _use_bwrap(bwrap))
        out_r, err_r, meta_r = pipes
        return _supervise(proc, out_r, err_r, meta_r, start, timeout, max_output, uid, workdirs)
    finally:
        for fd in pipes:
            try:
                os.close(fd)
            except OSError:
                pass
        if proc is not None:
            _terminate(proc)
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        if uid is not None:
            _kill_uid(uid)
            _uids.release(uid)
        for path in workdirs:
            shutil.rmtree(path, ignore_errors=True)


def _spawn_cold(code: str, cfg: dict, use_bwrap: bool):
    """A new interpreter running ``_bootstrap.py`` (inside bubblewrap when ``use_bwrap``):
    ``(process, [stdout, stderr, meta] read fds)``."""
    meta_r, meta_w = os.pipe()
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    if use_bwrap:
        cfg = {
            **cfg,
            "namespaces": False,
            "workdir": "/tmp",
            "outer": ["bwrap", "ro-root", "pidns", "mountns", "tmpfs", "procfs", "ipcns", "utsns"]
            + ([] if cfg["network"] else ["netns"]),
            "fd_finder": False,
        }
        prefix = _bwrap_command(server=False, network=cfg["network"])
    else:
        cfg = {
            **cfg,
            "namespaces": PER_CHECK_NAMESPACES,
            "workdir": None,
            "hide_home": True,
            "keep": _python_roots(),
            "parent": os.getpid(),
            "fd_finder": True,
        }
        prefix = []
    try:
        proc = subprocess.Popen(
            prefix + [sys.executable, "-I", "-B", _BOOTSTRAP, json.dumps({**cfg, "meta_fd": meta_w})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            env=env,
            pass_fds=(meta_w,),
            start_new_session=True,
        )
    except BaseException:
        os.close(meta_r)
        raise
    finally:
        os.close(meta_w)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all three PIPE
    try:
        proc.stdin.write(code.encode("utf-8", "surrogateescape"))
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    # the parent reads the pipes by descriptor; detach them from the Popen file objects
    out, err = os.dup(proc.stdout.fileno()), os.dup(proc.stderr.fileno())
    proc.stdout.close()
    proc.stderr.close()
    return proc, [out, err, meta_r]


class _ForkedChild:
    """A child of the fork server, seen from here: its pid, and its exit status over the socket."""

    def __init__(self, conn: socket.socket, pid: int, buffer: bytes):
        self.conn, self.pid = conn, pid
        self.returncode: int | None = None
        self._buffer = buffer

    def _status(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.conn.settimeout(left)  # 0: one non-blocking read
            try:
                chunk = self.conn.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.returncode = -signal.SIGKILL  # the server is gone; so is the child's parent
                return
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            status = json.loads(line)["status"]
            self.returncode = os.waitstatus_to_exitcode(status)
        except (ValueError, KeyError):
            self.returncode = -signal.SIGKILL
        self.conn.close()

    def poll(self) -> int | None:
        self._status(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._status(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("sandbox", timeout or 0.0)
        return self.returncode

    def kill(self) -> None:
        """Ask the fork server to kill the check (any word on the connection does)."""
        try:
            self.conn.send(b"K")
        except OSError:
            pass


class ForkServer:
    """A warm interpreter with the preload (SymPy ...) imported once; each check is a child
    forked from it, with every per-check layer of a cold start (new namespaces and private
    tmpfs, private uid, no capabilities, rlimits, guards) applied in the child. The server itself
    runs inside bubblewrap when it works here (``bwrap`` as in :func:`run_python`), so each
    check also sees only the read-only filesystem the interpreter needs.

    The only way to the server is a socket pair whose other end this object holds: no path on
    disk, nothing another process can connect to. Started on first use; restarted if it dies;
    ``close`` stops it. Thread-safe.
    """

    def __init__(
        self, preload: Sequence[str] = DEFAULT_PRELOAD, *, drop_privileges: bool = True, bwrap: bool | None = None
    ):
        self.preload = list(preload)
        self.drop_privileges = drop_privileges
        self._want_bwrap = bwrap
        self.bwrap = False
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self.failures = 0

    def _ensure(self) -> socket.socket | None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self._control
            self._stop_locked()
            if self.failures >= 3:
                return None
            self.bwrap = _use_bwrap(self._want_bwrap)
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                cfg = {
                    "preload": self.preload,
                    "control_fd": theirs.fileno(),
                    "fd_finder": self.drop_privileges and os.geteuid() == 0 and not self.bwrap,
                    "outer": ["bwrap", "ro-root"] if self.bwrap else [],
                }
                if not self.bwrap:
                    cfg["parent"] = os.getpid()
                prefix = _bwrap_command(server=True, network=False) if self.bwrap else []
                env = {"PATH": "/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
                self._proc = subprocess.Popen(
                    prefix + [sys.executable, "-I", "-B", _BOOTSTRAP, "--serve", json.dumps(cfg)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd="/",
                    env=env,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            except OSError:
                mine.close()
                self.failures += 1
                self._stop_locked()
                return None
            finally:
                theirs.close()
            self._control = mine
            return mine

    def spawn(self, code: str, cfg: dict):
        """Fork a child running ``code`` under ``cfg``: ``(handle, read fds)``, or
        ``(None, [])`` when the server is not available (the caller then runs cold)."""
        for _ in range(2):
            control = self._ensure()
            if control is None:
                return None, []
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            meta_r, meta_w = os.pipe()
            conn, theirs = socket.socketpair()
            try:
                with self._send_lock:
                    socket.send_fds(control, [b"R"], [theirs.fileno(), out_w, err_w, meta_w])
                theirs.close()
                conn.settimeout(60)
                # inside bubblewrap there is no home to hide
                cfg = {**cfg, "hide_home": not self.bwrap, "keep": _python_roots()}
                conn.sendall((json.dumps({"cfg": cfg, "code": code}) + "\n").encode("utf-8", "surrogateescape"))
                buffer = b""
                while b"\n" not in buffer:
                    chunk = conn.recv(4096)
                    if not chunk:
                        raise ConnectionError("fork server closed the connection")
                    buffer += chunk
                line, _, rest = buffer.partition(b"\n")
                pid = int(json.loads(line)["pid"])
            except (OSError, ValueError, KeyError):
                conn.close()
                theirs.close()
                for fd in (out_r, err_r, meta_r):
                    os.close(fd)
                with self._lock:
                    self.failures += 1
                    self._stop_locked()
                continue
            finally:
                for fd in (out_w, err_w, meta_w):
                    os.close(fd)
            return _ForkedChild(conn, pid, rest), [out_r, err_r, meta_r]
        return None, []

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            _killpg(self._proc.pid)
            try:
                self._proc.kill()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop_locked()


def _supervise(proc, out_r, err_r, meta_r, start, timeout, max_output, uid, workdirs) -> SandboxResult:
    deadline = start + timeout
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "meta": bytearray()}
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, "stdout")
    sel.register(err_r, selectors.EVENT_READ, "stderr")
    sel.register(meta_r, selectors.EVENT_READ, "meta")
    limit: LimitHit | None = None
    truncated = False
    total = 0
    exited_at: float | None = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            limit = "timeout"
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break  # main process gone; stragglers holding the pipes get killed
        for key, _ in sel.select(timeout=min(0.1, max(0.0, deadline - now))):
            name = key.data
            fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            if name == "meta":
                if len(bufs["meta"]) < 1_000_000:
                    bufs["meta"] += chunk
                continue
            room = max_output - total
            if len(chunk) > room:
                bufs[name] += chunk[:room]
                total = max_output
                truncated = True
                limit = "output"
                break
            bufs[name] += chunk
            total += len(chunk)
        if limit:
            break
    sel.close()
    if limit is None and proc.returncode is None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            limit = "timeout"
    _terminate(proc)
    if uid is not None:
        _kill_uid(uid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    rc = proc.returncode

    exception = None
    applied: list[str] = []
    nproc_event = False
    for line in bufs["meta"].decode("utf-8", "replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "start":
            applied = ev.get("applied", [])
        elif ev.get("event") == "nproc":
            nproc_event = True
        elif ev.get("event") == "exit" and isinstance(ev.get("status"), int):
            rc = os.waitstatus_to_exitcode(ev["status"])  # the code's own process, reported by its reaper
        elif ev.get("event") == "workdir" and str(ev.get("path", "")).startswith(
            os.path.join(tempfile.gettempdir(), "proofcritic-sbx-")
        ):
            workdirs.append(ev["path"])
        elif ev.get("event") == "exception" and exception is None:
            exception = SandboxException(type=ev["type"], message=ev["message"], traceback=ev["traceback"])
    if uid is not None and "setuid" in applied:
        applied.append("kill-by-uid")
    stderr = bufs["stderr"].decode("utf-8", "replace")
    if limit is None:
        if (exception is not None and exception.type == "MemoryError") or (
            exception is None and "MemoryError" in stderr
        ):
            limit = "memory"
        elif rc == -signal.SIGXCPU or rc == -signal.SIGKILL:
            # SIGXCPU: RLIMIT_CPU soft limit; SIGKILL we did not send: its hard limit
            limit = "cpu"
        elif rc == -signal.SIGSEGV and "as" in applied:
            limit = "memory"  # allocation failure outside Python's MemoryError path
        elif nproc_event or (
            exception is not None
            and exception.type == "BlockingIOError"
            and "Resource temporarily unavailable" in exception.message
        ):
            limit = "processes"
    elif limit == "timeout" and nproc_event:
        limit = "processes"
    return SandboxResult(
        stdout=bufs["stdout"].decode("utf-8", "replace"),
        stderr=stderr,
        exception=exception,
        exit_code=rc,
        limit_hit=limit,
        duration=time.monotonic() - start,
        truncated=truncated,
        isolation=applied,
    )


class SandboxPool:
    """Runs many checks concurrently, each in its own sandboxed process.

    ``workers`` bounds how many run at once (semaphore + a dedicated thread pool
    that supervises the child processes). ``warm`` (default) forks each check
    from a :class:`ForkServer` that imported the preload once, instead of
    starting a new interpreter (which spends about 200 ms importing SymPy);
    ``warm=False`` starts one interpreter per check. Both apply the same limits.
    """

    def __init__(self, workers: int = 4, *, warm: bool = True, **defaults) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.defaults = defaults
        self.warm = warm
        if defaults.get("bwrap") is None:
            usable, reason = bwrap_status()
            if not usable and "PROOFCRITIC_BWRAP" not in reason:
                warnings.warn(
                    f"the sandbox runs without bubblewrap ({reason}); see the README's "
                    "'Security' section for what that leaves out",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._server: ForkServer | None = None
        if warm:
            self._server = ForkServer(
                defaults.get("preload", DEFAULT_PRELOAD),
                drop_privileges=defaults.get("drop_privileges", True),
                bwrap=defaults.get("bwrap"),
            )
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
        # one semaphore per event loop: a pool lives across asyncio.run calls, an asyncio
        # semaphore is bound to the loop that first waited on it
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, code: str, **kwargs) -> SandboxResult:
        """Run one check (``run_python``'s keyword arguments override the pool's defaults)."""
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.workers)
        opts = {**self.defaults, **kwargs}
        server = self._server
        if server is not None and ("preload" in kwargs or "drop_privileges" in kwargs or "bwrap" in kwargs):
            server = None  # the warm server was started with the pool's own settings
        async with sem:
            return await loop.run_in_executor(self._executor, lambda: run_python(code, server=server, **opts))

    async def run_many(self, codes: Sequence[str], **kwargs) -> list[SandboxResult]:
        """Run the checks concurrently (at most ``workers`` at once); results in the order of ``codes``."""
        return list(await asyncio.gather(*(self.run(c, **kwargs) for c in codes)))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
