"""Tests for proofcritic.tools: the sandboxed Python interpreter."""

import asyncio
import os
import socket
import threading
import time

import pytest

from proofcritic.tools import SandboxPool, SandboxResult, run_python
from proofcritic.tools._sandbox import ForkServer

try:
    import sympy  # noqa: F401
    HAVE_SYMPY = True
except ImportError:
    HAVE_SYMPY = False


@pytest.fixture(scope="module")
def fork_server():
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(params=["cold", "warm"])
def run(request, fork_server):
    """``run_python`` started cold (a new interpreter) or warm (forked from the fork server):
    every isolation test runs both ways."""
    if request.param == "cold":
        return run_python

    def warm(code, **kwargs):
        result = run_python(code, server=fork_server, **kwargs)
        assert "fork-server" in result.isolation, result
        return result

    return warm


def _stray(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields: state ppid pgrp ...; zombies are dead, awaiting reaping by init
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def test_correct_code_returns_output(run):
    r = run("print(sum(range(10)))\nimport sys\nprint('err', file=sys.stderr)")
    assert isinstance(r, SandboxResult)
    assert r.stdout == "45\n"
    assert r.stderr == "err\n"
    assert r.exit_code == 0 and r.limit_hit is None and r.exception is None and r.ok
    assert r.duration > 0


@pytest.mark.skipif(not HAVE_SYMPY, reason="sympy not installed")
def test_sympy_identity(run):
    code = (
        "import sympy as sp\n"
        "x, n = sp.symbols('x n', positive=True, integer=True)\n"
        "print(sp.simplify(sp.sin(x)**2 + sp.cos(x)**2 - 1) == 0)\n"
        "print(sp.simplify(sp.summation(n, (n, 1, x)) - x*(x+1)/2) == 0)\n"
    )
    r = run(code, timeout=30)
    assert r.stdout == "True\nTrue\n", r
    assert r.ok


def test_exception_reported(run):
    r = run("def f():\n    raise ValueError('bad claim')\nf()")
    assert r.exception is not None
    assert r.exception.type == "ValueError" and r.exception.message == "bad claim"
    assert '<check>", line 3' in r.exception.traceback
    assert r.exit_code == 1 and r.limit_hit is None


def test_sys_exit_code(run):
    r = run("import sys; sys.exit(3)")
    assert r.exit_code == 3 and r.exception is None


def test_infinite_loop_times_out(run):
    t = time.monotonic()
    r = run("while True: pass", timeout=2)
    assert r.limit_hit in ("timeout", "cpu")
    assert time.monotonic() - t < 6


def test_cpu_limit(run):
    r = run("while True: pass", timeout=10, cpu_time=1)
    assert r.limit_hit == "cpu", r


def test_memory_bomb(run):
    r = run("a = []\nwhile True: a.append(bytearray(50_000_000))", memory_mb=512, timeout=10)
    assert r.limit_hit == "memory", r


def test_fork_bomb_stopped_no_strays(run):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run(code, timeout=3, max_processes=8)
    assert r.limit_hit in ("processes", "timeout"), r
    # the leader's pid is also the pgid; nothing in that group may survive
    time.sleep(0.2)
    try:
        import psutil
        mine = os.getpid()
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "--serve" in cmd and p.ppid() == mine:
                continue  # a fork server of this test process (its children show the same command)
            assert not ("_bootstrap.py" in cmd and p.pid != mine and p.status() != "zombie"), cmd
    except ImportError:
        pass


def test_fork_bomb_pgid_empty(run):
    code = "import os, time\nprint(os.getpgid(0), flush=True)\nfor _ in range(4):\n    os.fork()\ntime.sleep(60)\n"
    r = run(code, timeout=2)
    pgid = int(r.stdout.split()[0])
    time.sleep(0.2)
    assert _stray(pgid) == []


def test_setsid_escape_killed(run):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    print(os.getpid(), flush=True)\n"
            "    time.sleep(60)\nelse:\n    time.sleep(0.5)\n")
    r = run(code, timeout=5)
    # the run ends once the main process has exited, although the escaped one holds the pipes
    assert r.limit_hit is None and r.exit_code == 0 and r.duration < 4.5, r
    if "kill-by-uid" not in r.isolation:
        pytest.skip("no private uid here")
    pid = int(r.stdout.split()[0])
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_output_cap(run):
    r = run("print('x' * 10_000_000)", max_output=100_000, timeout=10)
    assert r.limit_hit == "output" and r.truncated
    assert len(r.stdout) <= 100_000


def test_socket_blocked(run):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    accepted = []

    def accept():
        srv.settimeout(3)
        try:
            accepted.append(srv.accept())
        except OSError:
            pass

    th = threading.Thread(target=accept)
    th.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
    r = run(code, timeout=10)
    th.join()
    srv.close()
    assert "connected" not in r.stdout
    assert r.exception is not None and r.exception.type in ("PermissionError", "OSError")
    assert not accepted
    # the raw _socket module bypasses the guard; the network namespace still blocks it
    raw = (f"import _socket\ns = _socket.socket()\ns.settimeout(2)\n"
           f"s.connect(('127.0.0.1', {port}))\nprint('connected')")
    r2 = run(raw, timeout=10)
    if "netns" in r2.isolation:
        assert "connected" not in r2.stdout and r2.exception is not None


def test_write_outside_fails_inside_works(run, tmp_path):
    target = tmp_path / "evil.txt"
    code = (
        f"from pathlib import Path\n"
        f"open('inside.txt', 'w').write('ok')\n"
        f"print(open('inside.txt').read())\n"
        f"import tempfile\n"
        f"with tempfile.NamedTemporaryFile('w') as f: f.write('x')\n"
        f"Path({str(target)!r}).write_text('pwned')\n"
    )
    r = run(code)
    assert r.stdout == "ok\n"
    assert r.exception is not None and r.exception.type == "PermissionError"
    assert not target.exists()
    r2 = run(f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\n")
    assert r2.exception is not None and r2.exception.type == "PermissionError"
    assert not target.exists()


def test_workdir_deleted(run):
    r = run("import os\nprint(os.getcwd())")
    assert r.ok and not os.path.exists(r.stdout.strip())


def test_parent_survives_everything(run):
    for code in ("import os; os.kill(os.getppid(), 0)", "import os; os._exit(7)", "raise SystemExit"):
        run(code, timeout=3)
    assert run("print('alive')").stdout == "alive\n"


async def test_pool_concurrent():
    codes = [f"print({i} * {i})" for i in range(24)]
    t = time.monotonic()
    async with SandboxPool(workers=6) as pool:
        results = await pool.run_many(codes, timeout=20)
        bad = await pool.run("while True: pass", timeout=1)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(24)]
    assert all(r.ok for r in results)
    assert bad.limit_hit in ("timeout", "cpu")
    assert time.monotonic() - t < 60


def test_pool_from_sync_and_asyncio_run():
    pool = SandboxPool(workers=2)
    try:
        rs = asyncio.run(pool.run_many(["print(1)", "print(2)", "print(3)"]))
    finally:
        pool.close()
    assert [r.stdout for r in rs] == ["1\n", "2\n", "3\n"]


def test_warm_children_share_nothing(fork_server):
    first = run_python("import math, random\nmath.pi = 3\nprint(random.random())", server=fork_server)
    second = run_python("import math, random\nprint(math.pi, random.random())", server=fork_server)
    assert first.ok and second.ok
    pi, rnd = second.stdout.split()
    assert pi == "3.141592653589793"  # the first child's change stayed in that child
    assert rnd != first.stdout.strip()  # each child reseeds its random generator
    assert "fork-server" in first.isolation and "fork-server" in second.isolation


def test_fork_server_restarts_after_it_dies():
    server = ForkServer()
    try:
        assert run_python("print(1)", server=server).stdout == "1\n"
        os.kill(server._proc.pid, 9)
        server._proc.wait()
        r = run_python("print(2)", server=server)
        assert r.stdout == "2\n" and "fork-server" in r.isolation
    finally:
        server.close()
    assert server._proc is None


async def test_cold_pool_still_works():
    async with SandboxPool(workers=2, warm=False) as pool:
        results = await pool.run_many(["print(6 * 7)", "print(1 / 0)"])
    assert results[0].stdout == "42\n" and "fork-server" not in results[0].isolation
    assert results[1].exception.type == "ZeroDivisionError"


def test_fork_server_serves_only_its_parent(fork_server):
    """No other process (here a sandboxed check that keeps this user's uid, so it can reach the
    server's socket) can ask the fork server for a child: the server checks the peer's pid and
    hangs up at once."""
    run_python("pass", server=fork_server)  # make sure it runs
    path = fork_server._path
    code = (
        "import os, _socket, time\n"
        "s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
        "s.settimeout(3)\n"
        f"s.connect({path!r})\n"
        "r, w = os.pipe()\n"
        "import socket\n"
        "print('connected', flush=True)\n"
        "data = s.recv(100)\n"
        "print('answer', repr(data))\n"
    )
    # run it unsandboxed-by-uid (the same user as the server) so that it can reach the socket
    r = run_python(code, drop_privileges=False, timeout=10)
    assert "connected" in r.stdout and "answer b''" in r.stdout, r
