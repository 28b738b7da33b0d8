"""Child-side bootstrap: isolates the check, applies limits and guards, then runs the user's code.

Executed as ``python -I -B _bootstrap.py CONFIG_JSON`` with the user code on stdin (a cold
check), or as ``python -I -B _bootstrap.py --serve CONFIG_JSON`` (the warm fork server, which
forks one check per request). The code runs in ``W``, the pid 1 of a new PID namespace: a cold
start's ``P`` (the process the host started) unshares the PID namespace and forks ``W``; the
warm server does the same for each request (and steps back into its own namespace right after
the fork), so a warm check costs one fork. ``W`` then makes new mount, network, IPC and UTS
namespaces of its own, mounts private tmpfs on the world-writable directories (``/tmp``,
``/var/tmp``, ``/dev/shm``, ...), so nothing the check writes outlives it, and a ``/proc`` that
shows only the check's processes. When ``W`` exits, the kernel kills whatever is left in the
namespace; ``W`` dies with its parent (``PR_SET_PDEATHSIG``, set again after the uid switch,
which clears it).

When bubblewrap already gave a cold check its namespaces and a read-only filesystem
(``cfg["namespaces"]`` false), ``P`` forks ``W`` without new namespaces. When namespaces cannot
be created (no privilege), ``P`` (in the warm case, the server's fork) stays as ``W``'s reaper
with a work folder in the host's temporary directory, which it removes when ``W`` ends and when
its own parent dies.

The file-write and socket guards are Python-level monkeypatches: a guard, not a security
boundary (``_socket``/``ctypes`` bypass them). The boundaries are the namespaces, the
read-only filesystem (bubblewrap), the private uid or dropped capabilities, and the rlimits.
"""

import builtins
import ctypes
import io
import json
import os
import resource
import signal
import sys
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

#: world-writable places a check could otherwise leave files in (each gets a private tmpfs)
SHARED_WRITABLE = ("/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
TMPFS_SIZE = "size=67108864"  # 64 MiB per mount, counted against the machine's memory

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _emit(fd, obj):
    try:
        os.write(fd, (json.dumps(obj)[:60000] + "\n").encode())
    except OSError:
        pass


def _set_pdeathsig(sig):
    try:
        return _c().prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except Exception:
        return False


# --------------------------------------------------------------------------- imports after the uid switch


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
        import importlib.util  # already imported (see _install_fd_finder)

        rel = name.replace(".", "/")
        for base, dir_fd in self.entries:
            for candidate, package in ((rel + "/__init__.py", True), (rel + ".py", False)):
                try:
                    os.close(os.open(candidate, os.O_RDONLY, dir_fd=dir_fd))
                except OSError:
                    continue
                origin = os.path.join(base, candidate)
                loader = _FdLoader(dir_fd, candidate, origin)
                # a loader by duck typing (create_module, exec_module): importlib.abc is not imported here
                spec = importlib.util.spec_from_loader(name, loader, origin=origin, is_package=package)  # type: ignore[arg-type]
                assert spec is not None  # a loader was given
                if package:
                    spec.submodule_search_locations = [os.path.join(base, rel)]
                spec.has_location = True
                return spec
        return None


def _install_fd_finder():
    import importlib.util  # noqa: F401 - imported now, or finding it would go through the finder itself

    entries = []
    for entry in sys.path:
        try:
            if entry and os.path.isdir(entry):
                entries.append((entry, os.open(entry, os.O_RDONLY | os.O_DIRECTORY)))
        except OSError:
            pass
    if entries:
        sys.meta_path.insert(0, _FdFinder(entries))
    return [fd for _, fd in entries]


def _preload(names):
    for name in names:
        try:
            __import__(name)
        except Exception:
            pass


# --------------------------------------------------------------------------- namespaces


def _unshare(flags):
    return _c().unshare(flags) == 0


def _mount(source, target, fstype, flags, data=None):
    return (
        _c().mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        == 0
    )


def _private_mounts(cfg, applied):
    """In the new mount namespace: nothing propagates back to the host, and every world-writable
    directory gets an empty tmpfs of its own (``/tmp`` owned by the check's uid: its work folder);
    without bubblewrap, so do ``/home`` and ``/root``. The interpreter's own folders (``keep``)
    found below a covered directory (a virtual environment under /tmp, Python under /root) are
    bound back, read-only."""
    applied.append("mountns")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    held = []
    for path in cfg.get("keep", ()):
        try:
            held.append((path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)))
        except OSError:
            pass
    try:
        uid = cfg["uid"]
        owner = f"mode=0700,uid={uid},gid={uid}" if uid is not None else "mode=1777"
        if not _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"{owner},{TMPFS_SIZE}"):
            return False
        covered = ["/tmp"]
        for path in SHARED_WRITABLE:
            if (
                os.path.isdir(path)
                and not os.path.islink(path)
                and _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,{TMPFS_SIZE}")
            ):
                covered.append(path)
        if cfg.get("hide_home"):
            for path in ("/home", "/root"):
                if (
                    os.path.isdir(path)
                    and not os.path.islink(path)
                    and _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1048576")
                ):
                    covered.append(path)
            applied.append("hide-home")
        for path, fd in held:
            if any(path.startswith(c + os.sep) for c in covered):
                try:
                    os.makedirs(path, mode=0o755, exist_ok=True)
                    if _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC):
                        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_REC)
                except OSError:
                    pass
    finally:
        for _, fd in held:
            os.close(fd)
    applied.append("tmpfs")
    return True


def _isolate_self(cfg, applied):
    """``W``'s part, as the pid 1 of a new PID namespace: new mount, network, IPC and UTS
    namespaces (one ``unshare`` for all of them when it can, which is cheaper), private tmpfs
    mounts, and a ``/proc`` of this namespace. True when the check got its private /tmp."""
    wanted = [(CLONE_NEWIPC, "ipcns"), (CLONE_NEWUTS, "utsns")]
    if not cfg["network"]:
        wanted.insert(0, (CLONE_NEWNET, "netns"))
    together = CLONE_NEWNS
    for flag, _ in wanted:
        together |= flag
    if _unshare(together):
        applied.extend(tag for _, tag in wanted)
        mount_ns = True
    else:
        for flag, tag in wanted:
            if _unshare(flag):
                applied.append(tag)
        mount_ns = _unshare(CLONE_NEWNS)
    if not (mount_ns and _private_mounts(cfg, applied)):
        return False
    if _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC):
        applied.append("procfs")
    return True


def _run_isolated(code, cfg, meta, applied):
    """``W`` as the pid 1 of its own PID namespace: isolate, run the code. Never returns."""
    _set_pdeathsig(signal.SIGKILL)
    if _isolate_self(cfg, applied):
        cfg["workdir"] = "/tmp"  # the check's own tmpfs
    else:  # no mount namespace: a folder on the host's /tmp, removed by the host after the check
        import tempfile

        cfg["workdir"] = tempfile.mkdtemp(prefix="proofcritic-sbx-")
        if cfg["uid"] is not None:
            try:
                os.chown(cfg["workdir"], cfg["uid"], cfg["uid"])
            except OSError:
                pass
        _emit(meta, {"event": "workdir", "path": cfg["workdir"]})
    _run_checked(code, cfg, meta, applied)


# --------------------------------------------------------------------------- privileges and limits


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities(applied):
    """No capabilities left, none to be regained (bounding set emptied, no_new_privs)."""
    libc = _c()
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    ok = libc.capset(ctypes.byref(header), data) == 0
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        applied.append("no-new-privs")
    if ok:
        applied.append("no-caps")


#: how W tells that its parent still runs (set once W is forked)
_PARENT_ALIVE: list = []  # of callables: () -> bool


def _readable(fd):
    import select

    return bool(select.select([fd], [], [], 0)[0])


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
        # a change of uid clears the parent-death signal: set it again, then make sure the
        # parent did not die in between (it would never be sent)
        _set_pdeathsig(signal.SIGKILL)
        if _PARENT_ALIVE and not _PARENT_ALIVE[-1]():
            os._exit(70)
    _drop_capabilities(applied)

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
    lim(resource.RLIMIT_CORE, 0, "core")


# --------------------------------------------------------------------------- the process chain


def _wait_for(pid):
    """Reap children until ``pid`` exits; its raw wait status."""
    while True:
        try:
            child, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if child == pid:
            return status


def _exit_like(status):
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _start_check(code, cfg, meta, applied):
    """``P``: run the code in ``W``, isolated. Never returns.

    With namespaces, ``W`` is the pid 1 of a new PID namespace (and makes its other namespaces
    itself): when it exits, the kernel ends every process left in the namespace. (A pid 1
    ignores the signals it sends itself without a handler; those the kernel sends for the
    rlimits, and SIGKILL from outside, still end it.)"""
    if cfg["namespaces"] and _unshare(CLONE_NEWPID):
        applied.extend(["pidns", "pdeathsig"])
        alive_r, alive_w = os.pipe()  # W's way to see P: at P's end, the pipe reads EOF
        worker = os.fork()
        if worker == 0:
            os.close(alive_w)
            _PARENT_ALIVE.append(lambda: not _readable(alive_r))
            _run_isolated(code, cfg, meta, applied)
        os.close(alive_r)
        status = _wait_for(worker)
        _emit(meta, {"event": "exit", "status": status})
        _exit_like(status)
    own_dir = None
    if cfg["workdir"] is None:  # no private /tmp: a folder on the host's, removed by P
        import tempfile

        own_dir = tempfile.mkdtemp(prefix="proofcritic-sbx-")
        if cfg["uid"] is not None:
            try:
                os.chown(own_dir, cfg["uid"], cfg["uid"])
            except OSError:
                pass
        cfg["workdir"] = own_dir
        _emit(meta, {"event": "workdir", "path": own_dir})

        def cleanup_and_exit(*_):
            _kill_group_but_self()
            _remove(own_dir)
            os._exit(137)

        signal.signal(signal.SIGTERM, cleanup_and_exit)
        _set_pdeathsig(signal.SIGTERM)  # the host died: clean up, then go
    _run_under_reaper(code, cfg, meta, applied, own_dir=own_dir)


def _remove(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _kill_group_but_self():
    """SIGKILL every other process of this process group (what ``W`` left behind)."""
    me, group = os.getpid(), os.getpgid(0)
    for _ in range(20):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return


def _run_under_reaper(code, cfg, meta, applied, own_dir):
    """The calling process becomes the reaper of a child ``W`` that runs the code; it reports
    W's raw wait status on the meta channel, cleans up, and exits as W did. Never returns."""
    applied.append("pdeathsig")
    me = os.getpid()
    worker = os.fork()
    if worker == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _PARENT_ALIVE.append(lambda: os.getppid() == me)
        _set_pdeathsig(signal.SIGKILL)
        if os.getppid() != me:
            os._exit(70)  # the reaper is already gone
        _run_checked(code, cfg, meta, applied)
    status = _wait_for(worker)
    _emit(meta, {"event": "exit", "status": status})
    if own_dir is not None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _kill_group_but_self()
        _remove(own_dir)
    _exit_like(status)


def _run_checked(code, cfg, meta, applied):
    """``W``: drop privileges, set limits, install the guards, report what took effect, run the
    user's code, exit."""
    import random
    import tempfile

    workdir = cfg["workdir"]
    try:
        os.chdir(workdir)
    except OSError:
        pass
    os.environ.update({"HOME": workdir, "TMPDIR": workdir})
    tempfile.tempdir = workdir
    random.seed()
    _drop_privileges_and_limit(cfg, applied)
    main_pid = os.getpid()
    _install_guards(workdir, meta, main_pid)
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
    except BaseException as e:  # report everything
        exit_code = 1
        try:
            below = e.__traceback__.tb_next if e.__traceback__ is not None else None
            tb = "".join(traceback.format_exception(type(e), e, below))
        except BaseException:
            tb = ""
        if os.getpid() == main_pid:
            try:
                msg = str(e)
            except BaseException:
                msg = "<unprintable>"
            _emit(
                meta, {"event": "exception", "type": type(e).__name__, "message": msg[:20000], "traceback": tb[-20000:]}
            )
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
    applied = list(cfg.get("outer", []))
    if _set_pdeathsig(signal.SIGKILL) and os.getppid() != cfg.get("parent", os.getppid()):
        os._exit(70)  # the host is already gone
    _preload(cfg["preload"])
    if cfg["uid"] is not None and cfg.get("fd_finder", True):
        _install_fd_finder()
    _start_check(code, cfg, meta, applied)


# --------------------------------------------------------------------------- warm fork server

_META_FD = 3
_FINDER_FDS: list[int] = []
_SERVER_ALIVE: list[int] = []  # the read end of a pipe whose write end only the server holds


def _recv_line(conn):
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return bytes(data)


def _child(conn, fds, cfg, code, outer, pidns):
    """In the forked child: a fresh session, the pipes as fds 1, 2 and 3, nothing else of the
    server's open files, then the same isolation and layers as a cold start. ``pidns``: the
    server forked it into a new PID namespace (it is that namespace's pid 1, and runs the code
    itself); otherwise it is a ``P`` without namespaces (see :func:`_start_check`)."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    _set_pdeathsig(signal.SIGKILL)
    out_w, err_w, meta_w = fds
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(meta_w, _META_FD)
    keep = {0, 1, 2, _META_FD, *_FINDER_FDS, *_SERVER_ALIVE}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    sys.argv = ["<check>"]
    applied = [*outer, "fork-server"]
    if pidns:
        applied.extend(["pidns", "pdeathsig"])
        _PARENT_ALIVE.append(lambda: not _readable(_SERVER_ALIVE[0]))
        _run_isolated(code, cfg, _META_FD, applied)
    _start_check(code, {**cfg, "namespaces": False}, _META_FD, applied)


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
    """Warm start: import the preload once, then fork one isolated check per request.

    The control socket (a ``SOCK_SEQPACKET`` socketpair end, its number in the config) is the
    only way in, and only the host holds its other end. Each request is one packet carrying
    four descriptors (SCM_RIGHTS): a connection socket for this check, and its stdout, stderr and
    meta pipes. On the connection come one JSON line (the per-check config and the code); the
    server answers ``{"pid": N}`` once the child runs and ``{"status": S}`` (a raw wait status)
    when it has exited, then closes it. Anything the host sends on the connection afterwards, or
    the host closing it, kills the check.
    """
    import selectors
    import socket
    import time

    cfg = json.loads(sys.argv[2])
    if _set_pdeathsig(signal.SIGKILL) and os.getppid() != cfg.get("parent", os.getppid()):
        os._exit(0)  # the host is already gone
    control = socket.socket(fileno=cfg["control_fd"])
    _preload(cfg["preload"])
    _warm_up()
    if cfg["fd_finder"]:
        _FINDER_FDS.extend(_install_fd_finder())
    outer = list(cfg.get("outer", []))
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    alive_r, _alive_w = os.pipe()  # the write end stays open in this process only
    os.set_inheritable(alive_r, True)
    _SERVER_ALIVE.append(alive_r)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ, "control")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    running: dict[int, socket.socket] = {}  # pid -> connection
    bare: dict[int, bool] = {}  # pid -> whether the check runs without namespaces (its P removes a work folder)

    def reap():
        while running:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            kill(pid)  # whatever the check left in its group, while the zombie still holds the pid
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                return
            conn = running.pop(pid, None)
            bare.pop(pid, None)
            if conn is not None:
                try:
                    sel.unregister(conn)
                except (KeyError, ValueError):
                    pass
                try:
                    conn.sendall((json.dumps({"status": status}) + "\n").encode())
                except OSError:
                    pass
                conn.close()

    def kill(pid):
        pending.pop(pid, None)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    pending = {}  # pid -> when a check asked to stop gets SIGKILL

    def stop(pid):
        """SIGKILL for the check's group; for a check without namespaces SIGTERM first, on which
        it removes its work folder (the host may have hung up because it is dying), and SIGKILL a
        second later."""
        if pid in running and not bare.get(pid):
            kill(pid)
        elif pid in running and pid not in pending:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
            pending[pid] = time.monotonic() + 1.0

    while True:
        for key, _ in sel.select(timeout=0.2 if pending else 1.0):
            if key.data == "wake":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            if isinstance(key.data, int):  # the host spoke on (or hung up) a running check's connection
                stop(key.data)
                try:
                    sel.unregister(key.fileobj)
                except (KeyError, ValueError):
                    pass
                continue
            try:
                _, fds, _, _ = socket.recv_fds(control, 16, 4)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                os._exit(0)
            if not fds and not _:
                os._exit(0)  # the host closed the control socket
            if len(fds) != 4:
                for fd in fds:
                    os.close(fd)
                continue
            conn = socket.socket(fileno=fds[0])
            try:
                conn.settimeout(30)
                request = json.loads(_recv_line(conn))
            except Exception:
                conn.close()
                for fd in fds[1:]:
                    os.close(fd)
                continue
            pidns = bool(request["cfg"].get("namespaces")) and _unshare(CLONE_NEWPID)
            pid = os.fork()
            if pid == 0:
                try:
                    _child(conn, fds[1:], request["cfg"], request["code"], outer, pidns)
                finally:
                    os._exit(70)
            if pidns and _c().setns(own_pidns, CLONE_NEWPID) != 0:
                os._exit(1)  # later children would land in that namespace: let the host restart us
            for fd in fds[1:]:
                os.close(fd)
            running[pid] = conn
            bare[pid] = not pidns
            try:
                conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, pid)
            except (OSError, ValueError):
                kill(pid)
        reap()
        now = time.monotonic()
        for pid in [p for p, when in pending.items() if when <= now]:
            kill(pid)


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

    for name, n in (
        ("remove", 1),
        ("unlink", 1),
        ("rmdir", 1),
        ("mkdir", 1),
        ("makedirs", 1),
        ("rename", 2),
        ("replace", 2),
        ("symlink", 2),
        ("link", 2),
        ("chmod", 1),
        ("chown", 1),
        ("truncate", 1),
        ("utime", 1),
    ):
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
    for name in (
        "create_connection",
        "create_server",
        "socketpair",
        "fromfd",
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
    ):
        if hasattr(socket, name):
            setattr(socket, name, no_net)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve()
    else:
        main()
