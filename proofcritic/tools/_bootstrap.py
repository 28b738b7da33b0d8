"""Child-side bootstrap: applies limits and guards, then runs the user's code.

Executed as ``python -I -B _bootstrap.py CONFIG_JSON`` with the user code on
stdin.  Everything here is best effort inside the child; the parent enforces the
wall-clock timeout, the output cap and the final kill regardless.

The file-write and socket guards are Python-level monkeypatches: a guard, not a
security boundary (``_socket``/``ctypes`` bypass them).  The OS-level layers are
the rlimits, the network namespace and the uid drop, when they take effect.
"""

import builtins
import ctypes
import io
import json
import os
import resource
import sys
import traceback

CLONE_NEWNET = 0x40000000


def _emit(fd, obj):
    try:
        os.write(fd, (json.dumps(obj)[:60000] + "\n").encode())
    except OSError:
        pass



class _FdLoader:
    """Loads a pure-Python module through a directory descriptor opened before the uid switch."""

    def __init__(self, dir_fd, relative, origin):
        self.dir_fd, self.relative, self.origin = dir_fd, relative, origin

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        fd = os.open(self.relative, os.O_RDONLY, dir_fd=self.dir_fd)
        with os.fdopen(fd, "rb") as handle:
            source = handle.read()
        module.__file__ = self.origin
        exec(compile(source, self.origin, "exec", dont_inherit=True), module.__dict__)


class _FdFinder:
    """After the switch to an unprivileged uid, an interpreter installed below a private
    directory (``/root`` is 0700, so is a ``mktemp -d`` folder) can no longer reach its own
    library by path. Directory descriptors opened while still privileged keep it reachable:
    ``openat`` checks only the components below the descriptor. Extension modules still need a
    path, so they must be preloaded."""

    def __init__(self, entries):
        self.entries = entries

    def find_spec(self, name, path=None, target=None):
        import importlib.util

        rel = name.replace(".", "/")
        for base, dir_fd in self.entries:
            for candidate, package in ((rel + "/__init__.py", True), (rel + ".py", False)):
                try:
                    os.close(os.open(candidate, os.O_RDONLY, dir_fd=dir_fd))
                except OSError:
                    continue
                origin = os.path.join(base, candidate)
                loader = _FdLoader(dir_fd, candidate, origin)
                spec = importlib.util.spec_from_loader(name, loader, origin=origin, is_package=package)
                if package:
                    spec.submodule_search_locations = [os.path.join(base, rel)]
                spec.has_location = True
                return spec
        return None


def _install_fd_finder():
    entries = []
    for entry in sys.path:
        try:
            if entry and os.path.isdir(entry):
                entries.append((entry, os.open(entry, os.O_RDONLY | os.O_DIRECTORY)))
        except OSError:
            pass
    if entries:
        sys.meta_path.insert(0, _FdFinder(entries))

def _unshare_network(applied):
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) == 0:
            applied.append("netns")
    except Exception:
        pass


def _preload(names):
    for name in names:
        try:
            __import__(name)
        except Exception:
            pass


def _drop_privileges_and_limit(cfg, applied):
    uid = cfg["uid"]
    if uid is not None:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            applied.append("setuid")
        except OSError:
            pass

    def lim(res, value, tag):
        try:
            resource.setrlimit(res, (value, value))
            applied.append(tag)
        except (ValueError, OSError):
            pass

    if cfg["cpu"]:
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))
            applied.append("cpu")
        except (ValueError, OSError):
            pass
    if cfg["memory"]:
        lim(resource.RLIMIT_AS, cfg["memory"], "as")
    if cfg["nproc"]:
        lim(resource.RLIMIT_NPROC, cfg["nproc"], "nproc")
    if cfg["fsize"]:
        lim(resource.RLIMIT_FSIZE, cfg["fsize"], "fsize")
    if cfg["nofile"]:
        lim(resource.RLIMIT_NOFILE, cfg["nofile"], "nofile")


def _run_checked(code, cfg, meta, applied):
    """Install the guards, report what took effect, run the user's code, exit."""
    main_pid = os.getpid()
    _install_guards(cfg["workdir"], meta, main_pid)
    applied.append("guards")
    _emit(meta, {"event": "start", "applied": applied})

    glb = {"__name__": "__main__", "__builtins__": builtins}
    exit_code = 0
    try:
        exec(compile(code, "<check>", "exec"), glb)
    except SystemExit as e:
        c = e.code
        exit_code = c if isinstance(c, int) else (0 if c is None else 1)
        if not isinstance(c, (int, type(None))):
            print(c, file=sys.stderr)
    except BaseException as e:  # noqa: BLE001 - report everything
        exit_code = 1
        try:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
        except BaseException:
            tb = ""
        if os.getpid() == main_pid:
            try:
                msg = str(e)
            except BaseException:
                msg = "<unprintable>"
            _emit(meta, {"event": "exception", "type": type(e).__name__,
                         "message": msg[:20000], "traceback": tb[-20000:]})
        try:
            sys.stderr.write(tb)
        except BaseException:
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(exit_code)


def main():
    """Cold start: one fresh interpreter per check."""
    cfg = json.loads(sys.argv[1])
    meta = cfg["meta_fd"]
    code = sys.stdin.read()
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again: empty stdin
    applied = []
    if not cfg["network"]:
        _unshare_network(applied)
    _preload(cfg["preload"])
    if cfg["uid"] is not None:
        _install_fd_finder()
    _drop_privileges_and_limit(cfg, applied)
    _run_checked(code, cfg, meta, applied)


# --------------------------------------------------------------------------- warm fork server

_META_FD = 3
_FINDER_FDS = []


def _recv_line(conn):
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return bytes(data)


def _child(conn_fds, fds, cfg, code):
    """In the forked child: a fresh session, the pipes as fds 1, 2 and 3, nothing else of the
    server's open files, then the per-check layers exactly as a cold start applies them."""
    import random
    import signal
    import tempfile

    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    out_w, err_w, meta_w = fds
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(meta_w, _META_FD)
    keep = {0, 1, 2, _META_FD, *_FINDER_FDS}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    workdir = cfg["workdir"]
    os.chdir(workdir)
    os.environ.update({"HOME": workdir, "TMPDIR": workdir})
    tempfile.tempdir = workdir
    random.seed()
    sys.argv = ["<check>"]
    applied = ["fork-server"]
    if not cfg["network"]:
        _unshare_network(applied)
    _drop_privileges_and_limit(cfg, applied)
    _run_checked(code, cfg, _META_FD, applied)


def _warm_up():
    """Run the first call of common SymPy operations once, so that what they set up lazily
    (submodule imports, caches) is inherited by every child instead of redone in each."""
    if "sympy" not in sys.modules:
        return
    try:
        import sympy as sp

        x, n = sp.symbols("x n", integer=True)
        sp.factor(x**4 - 1)
        sp.expand((x + 1) ** 6)
        sp.simplify(sp.sin(x) ** 2 + sp.cos(x) ** 2)
        sp.solve(x**2 - 2, x)
        sp.summation(n**2, (n, 1, x))
        sp.isprime(97)
        sp.factorint(360)
        sp.Rational(1, 3) + sp.sqrt(2)
        sp.limit(sp.sin(x) / x, x, 0)
        sp.series(sp.exp(x), x, 0, 4)
        sp.Matrix([[1, 2], [3, 4]]).det()
        sp.nsimplify(0.5)
        str(sp.integrate(x**2, x))
    except Exception:
        pass


def serve():
    """Warm start: import the preload once, then fork one limited child per check.

    The listening socket is inherited (its number in the config). Each connection brings three descriptors
    (stdout, stderr and meta pipes, SCM_RIGHTS) and one JSON line (the per-check config and
    the code); the server answers ``{"pid": N}`` once the child runs and ``{"status": S}``
    (a raw wait status) when it has exited, then closes the connection.
    """
    import selectors
    import signal
    import socket
    import struct

    cfg = json.loads(sys.argv[2])
    try:  # end with the process that started us
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != cfg["parent"]:
            os._exit(0)
    except Exception:
        pass
    listener = socket.socket(fileno=cfg["listener_fd"])
    listener.setblocking(False)
    _preload(cfg["preload"])
    _warm_up()
    if cfg["fd_finder"]:
        _install_fd_finder()
        _FINDER_FDS.extend(entry[1] for entry in getattr(sys.meta_path[0], "entries", ()))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    running = {}  # pid -> connection

    def reap():
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = running.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall((json.dumps({"status": status}) + "\n").encode())
                except OSError:
                    pass
                conn.close()

    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "wake":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            try:
                # only the process that started the server may ask for a child: a sandboxed
                # child running as the same user must not get an unlimited sibling this way
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                if struct.unpack("3i", creds)[0] != cfg["parent"]:
                    conn.close()
                    continue
                conn.setblocking(True)
                conn.settimeout(30)
                _, fds, _, _ = socket.recv_fds(conn, 1, 3)
                request = json.loads(_recv_line(conn))
            except Exception:
                conn.close()
                continue
            if len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                try:
                    _child([conn.fileno()], fds, request["cfg"], request["code"])
                finally:
                    os._exit(70)
            for fd in fds:
                os.close(fd)
            running[pid] = conn
            try:
                conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
            except OSError:
                pass
        reap()


def _install_guards(workdir, meta, main_pid):
    import pathlib  # noqa: F401 - imported so pathlib uses the patched io.open
    import socket

    root = os.path.realpath(workdir)
    allowed = {os.devnull}

    def _inside(path):
        if isinstance(path, int):
            return True  # already-open descriptor
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep) or p in allowed

    def _deny(path):
        raise PermissionError(13, "sandbox: writing outside the work directory is not allowed", str(path))

    real_open = io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not _inside(file):
            _deny(file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = guarded_open
    io.open = guarded_open

    real_os_open = os.open
    wflags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & wflags and not _inside(path):
            _deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    os.open = guarded_os_open

    def wrap_path_fn(fn, nargs):
        def guarded(*args, **kwargs):
            for a in args[:nargs]:
                if not _inside(a):
                    _deny(a)
            return fn(*args, **kwargs)
        guarded.__name__ = fn.__name__
        return guarded

    for name, n in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1),
                    ("makedirs", 1), ("rename", 2), ("replace", 2), ("symlink", 2),
                    ("link", 2), ("chmod", 1), ("chown", 1), ("truncate", 1), ("utime", 1)):
        if hasattr(os, name):
            setattr(os, name, wrap_path_fn(getattr(os, name), n))

    real_fork = os.fork

    def guarded_fork():
        try:
            return real_fork()
        except BlockingIOError:
            _emit(meta, {"event": "nproc"})
            raise

    os.fork = guarded_fork

    def no_net(*args, **kwargs):
        raise PermissionError(13, "sandbox: network access is disabled")

    class _NoSocket:
        def __new__(cls, *args, **kwargs):
            no_net()

    for name in ("socket", "SocketType"):
        setattr(socket, name, _NoSocket)
    for name in ("create_connection", "create_server", "socketpair", "fromfd",
                 "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(socket, name):
            setattr(socket, name, no_net)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve()
    else:
        main()
