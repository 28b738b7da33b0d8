"""Tests for proofcritic.tools: the sandboxed Python interpreter."""

import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from proofcritic.tools import SandboxPool, SandboxResult, run_python
from proofcritic.tools._sandbox import ForkServer, bwrap_status

try:
    import sympy  # noqa: F401

    HAVE_SYMPY = True
except ImportError:
    HAVE_SYMPY = False


HAVE_BWRAP = bwrap_status()[0]
MODES = ["cold-bwrap", "warm-bwrap", "cold-native", "warm-native"]


@pytest.fixture(scope="module")
def fork_servers():
    servers = {"bwrap": ForkServer(bwrap=True) if HAVE_BWRAP else None, "native": ForkServer(bwrap=False)}
    yield servers
    for server in servers.values():
        if server is not None:
            server.close()


@pytest.fixture(scope="module")
def fork_server(fork_servers):
    return fork_servers["bwrap" if HAVE_BWRAP else "native"]


@pytest.fixture(params=MODES)
def run(request, fork_servers):
    """``run_python`` started cold (a new interpreter) or warm (forked from the fork server),
    inside bubblewrap or with the native layers only: every isolation test runs all four ways."""
    start, kind = request.param.split("-")
    if kind == "bwrap" and not HAVE_BWRAP:
        pytest.skip("bubblewrap is not usable here: " + bwrap_status()[1])
    server = fork_servers[kind] if start == "warm" else None

    def run_one(code, **kwargs):
        result = run_python(code, server=server, bwrap=kind == "bwrap", **kwargs)
        assert ("fork-server" in result.isolation) == (start == "warm"), result
        assert ("bwrap" in result.isolation) == (kind == "bwrap"), result
        return result

    run_one.mode = request.param
    return run_one


def _marked(marker: str, body: str) -> str:
    """Check code that re-executes the interpreter on ``body`` with ``marker`` in its command
    line, so that the host can find the check's processes by name in any PID namespace."""
    return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-I', '-c', {body!r}, {marker!r}])\n"


def _alive(marker: str) -> list[int]:
    """Host pids of live (not zombie) processes whose command line holds ``marker``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmd = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state not in (b"Z", b"X"):
            out.append(int(entry))
    return out


def _gone_within(marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(marker):
            return True
        time.sleep(0.05)
    return not _alive(marker)


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
    marker = f"bomb-{uuid.uuid4().hex}"
    body = "import os\nprint('bomb', flush=True)\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run(_marked(marker, body), timeout=3, max_processes=8)
    assert r.limit_hit in ("processes", "timeout"), r
    assert r.stdout.startswith("bomb"), r
    assert _gone_within(marker, 2.0), _alive(marker)


def test_forked_children_ended_with_the_check(run):
    marker = f"kids-{uuid.uuid4().hex}"
    body = "import os, time\nfor _ in range(4):\n    os.fork()\ntime.sleep(60)\n"
    r = run(_marked(marker, body), timeout=2)
    assert r.limit_hit == "timeout", r
    assert _gone_within(marker, 2.0), _alive(marker)


def test_setsid_escape_killed(run):
    marker = f"escape-{uuid.uuid4().hex}"
    body = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    print('escaped', flush=True)\n"
        "    time.sleep(60)\nelse:\n    time.sleep(0.5)\n"
    )
    r = run(_marked(marker, body), timeout=5)
    # the run ends once the main process has exited, although the escaped one holds the pipes
    assert r.limit_hit is None and r.exit_code == 0 and r.duration < 4.5, r
    assert "escaped" in r.stdout
    assert _gone_within(marker, 2.0), _alive(marker)


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
    raw = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nprint('connected')"
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
    # refused by the guard, or (the host's /tmp being replaced by the check's own) not there
    assert r.exception is not None and r.exception.type in ("PermissionError", "FileNotFoundError"), r
    assert not target.exists()
    r2 = run(f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\n")
    assert r2.exception is not None and r2.exception.type in ("PermissionError", "FileNotFoundError"), r2
    assert not target.exists()
    r3 = run("open('/usr/evil.txt', 'w')")
    assert r3.exception is not None and r3.exception.type == "PermissionError"


def test_workdir_deleted(run):
    name = f"left-{uuid.uuid4().hex}"
    r = run(f"import os\nopen({name!r}, 'w').write('x')\nprint(os.path.join(os.getcwd(), {name!r}))")
    assert r.ok, r
    assert not os.path.exists(r.stdout.strip())


def test_other_processes_are_invisible(run):
    """A check cannot read another process's command line or environment (the upstream
    --api-key of a running service, say): it sees only its own processes."""
    secret = f"sk-{uuid.uuid4().hex}"
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--api-key", secret],
        env={**os.environ, "PROOFCRITIC_TEST_SECRET": secret},
    )
    try:
        code = (
            "import os\n"
            "found = []\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit():\n"
            "        for part in ('cmdline', 'environ'):\n"
            "            try:\n"
            f"                if {secret!r}.encode() in open(f'/proc/{{p}}/{{part}}', 'rb').read():\n"
            "                    found.append((p, part))\n"
            "            except OSError:\n"
            "                pass\n"
            f"print('found', found)\n"
            f"print('direct', os.path.exists('/proc/{victim.pid}/cmdline') and {secret!r}.encode() in "
            f"open('/proc/{victim.pid}/cmdline', 'rb').read())\n"
        )
        r = run(code, timeout=10)
    finally:
        victim.kill()
        victim.wait()
    assert r.ok, r
    assert "found []" in r.stdout and "direct False" in r.stdout, r.stdout


def test_private_files_unreadable(run):
    """A file of the host that only its owner may read (the service's job database is written
    0600) cannot be read; inside bubblewrap the host's files are not even there."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".sandbox-secret-{uuid.uuid4().hex}")
    os.mkdir(folder)
    try:
        private, shared = os.path.join(folder, "jobs.sqlite"), os.path.join(folder, "notes.txt")
        for path, mode in ((private, 0o600), (shared, 0o644)):
            with open(path, "w") as handle:
                handle.write("the secret proof")
            os.chmod(path, mode)
        os.chmod(folder, 0o755)
        code = (
            f"for path in ({private!r}, {shared!r}):\n"
            "    try:\n"
            "        print(path[-11:], open(path).read())\n"
            "    except OSError as e:\n"
            "        print(path[-11:], type(e).__name__)\n"
        )
        r = run(code, timeout=10)
    finally:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)
    assert r.ok, r
    assert "secret" not in r.stdout.splitlines()[0], r.stdout
    if "bwrap" in r.isolation:
        assert "the secret proof" not in r.stdout and "FileNotFoundError" in r.stdout, r.stdout


def test_writes_vanish_with_the_check(run):
    """Writes that bypass the Python guards (``_io.FileIO``) into the world-writable places land
    in the check's own tmpfs: they succeed, and neither the host nor the next check sees them."""
    name = f"left-{uuid.uuid4().hex}"
    places = ["/tmp", "/dev/shm", "/var/tmp"]
    write = "import _io\n" + "".join(
        f"try:\n    _io.FileIO({p + '/' + name!r}, 'w').write(b'x')\n    print('wrote', {p!r})\n"
        f"except OSError as e:\n    print('refused', {p!r}, e)\n"
        for p in places
    )
    r = run(write, timeout=10)
    assert r.ok, r
    for place in places:
        assert not os.path.exists(os.path.join(place, name)), place
    r2 = run(f"import os\nprint([p for p in {places!r} if os.path.exists(p + '/' + {name!r})])", timeout=10)
    assert r2.stdout.strip() == "[]", r2
    if "tmpfs" in r.isolation:
        assert r.stdout.count("wrote") == len(places), r.stdout


@pytest.mark.parametrize("mode", MODES)
def test_interpreter_folders_under_tmp_stay_visible(mode, monkeypatch):
    """A virtual environment under /tmp (a fresh clone there, say) is bound back, read-only,
    under the check's private /tmp, so imports keep working."""
    import proofcritic.tools._sandbox as sandbox

    start, kind = mode.split("-")
    if kind == "bwrap" and not HAVE_BWRAP:
        pytest.skip("bubblewrap is not usable here")
    folder = tempfile.mkdtemp(prefix="pc-keep-", dir="/tmp")
    try:
        os.chmod(folder, 0o755)
        with open(os.path.join(folder, "keepmod.py"), "w") as handle:
            handle.write("X = 42\n")
        os.chmod(os.path.join(folder, "keepmod.py"), 0o644)
        roots = sandbox._python_roots()
        monkeypatch.setattr(sandbox, "_python_roots", lambda: [*roots, folder])
        server = ForkServer(bwrap=kind == "bwrap") if start == "warm" else None
        try:
            code = (
                f"import sys\nsys.path.insert(0, {folder!r})\nimport keepmod\nprint(keepmod.X)\n"
                f"open({folder!r} + '/new.txt', 'w')"
            )
            r = run_python(code, server=server, bwrap=kind == "bwrap", timeout=30)
        finally:
            if server is not None:
                server.close()
        assert r.stdout == "42\n", r
        assert r.exception is not None and r.exception.type in ("OSError", "PermissionError"), r
        assert not os.path.exists(os.path.join(folder, "new.txt"))
    finally:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


def _sandbox_folders() -> set[str]:
    base = tempfile.gettempdir()
    return {n for n in os.listdir(base) if n.startswith(("proofcritic-sbx-", "proofcritic-fsrv-"))}


@pytest.mark.parametrize("mode", MODES + ["cold-bare", "warm-bare"])
def test_check_dies_with_its_parent(mode):
    """``kill -9`` of the process supervising a check ends the check within 2 s and leaves no
    folder behind. ``bare``: no bubblewrap and no per-check namespaces, as on a machine without
    the privilege to create them (the work folder is then on the host, removed by the check's
    reaper when its parent dies)."""
    start, kind = mode.split("-")
    if kind == "bwrap" and not HAVE_BWRAP:
        pytest.skip("bubblewrap is not usable here")
    bare = kind == "bare"
    name = "o" + uuid.uuid4().hex[:14]  # the check's /proc/self/comm (15 characters at most)
    before = _sandbox_folders()
    body = (
        f"import ctypes, time\nctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)  # PR_SET_NAME\n"
        "time.sleep(100)\n"
    )
    script = (
        "import proofcritic.tools._sandbox as sandbox\n"
        f"sandbox.PER_CHECK_NAMESPACES = {not bare}\n"
        f"server = sandbox.ForkServer(bwrap={kind == 'bwrap'}) if {start == 'warm'} else None\n"
        f"sandbox.run_python({body!r}, timeout=120, server=server, bwrap={kind == 'bwrap'})\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not _named(name):
            assert parent.poll() is None and time.monotonic() < deadline, "the check never started"
            time.sleep(0.05)
        if bare:
            assert _sandbox_folders() - before, "the bare path keeps its work folder on the host"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 2.0
    while _named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _named(name)
    time.sleep(0.3)
    assert _sandbox_folders() - before == set()


def _named(name: str) -> list[int]:
    """Host pids of live processes called ``name`` (their ``comm``)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    _, _, rest = handle.read().partition(b" (")
                comm, _, fields = rest.rpartition(b") ")
            except OSError:
                continue
            if comm == name.encode() and fields.split()[0] not in (b"Z", b"X"):
                out.append(int(entry))
    return out


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


def test_pool_serves_several_event_loops():
    """One pool, one asyncio.run per batch, more checks than workers in each: the second event
    loop must not wait on a semaphore bound to the first."""
    with SandboxPool(workers=1) as pool:
        first = asyncio.run(pool.run_many(["print(1)", "print(2)"]))
        second = asyncio.run(pool.run_many(["print(3)", "print(4)"]))
    assert [r.stdout for r in first + second] == ["1\n", "2\n", "3\n", "4\n"]


def _readme_python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section ``### SECTION`` (up to the next ``###``)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n### {section}")
    end = text.find("\n### ", start + 1)
    return re.findall(r"^```python\n(.*?)^```", text[start : end if end > 0 else None], re.DOTALL | re.MULTILINE)


def test_readme_sandbox_examples_run_as_written(capsys):
    """The README's sandbox examples, executed as they are written there, print what it says."""
    blocks = _readme_python_blocks("Sandboxed Python")
    code = "\n".join(blocks)
    for usage in ("run_python(", "async with SandboxPool(", ".run(", ".run_many(", "with SandboxPool(", "asyncio.run("):
        assert usage in code, f"the README's sandbox section no longer shows {usage}"
    for number, block in enumerate(blocks, 1):
        where = f"README.md (Sandboxed Python, block {number})"
        exec(compile(block, where, "exec"), {"__name__": "readme"})  # noqa: S102 - the docs, run as written
    out = capsys.readouterr().out
    assert "x + 1" in out  # run_python with SymPy
    assert "{2: 3, 3: 2, 5: 1}" in out  # pool.run
    assert "[(True, '1024', None, None), (False, '', 'ZeroDivisionError', None), (False, '', None, '" in out
    assert "['0', '1', '4', '9'] ['0', '1', '8', '27']" in out  # two asyncio.run calls on one pool


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


def test_fork_server_has_no_address(fork_server):
    """Nothing can ask the fork server for a child but this process: it listens on no path, and
    a check cannot see it (nor any other process of the host) to reach its descriptors."""
    assert run_python("pass", server=fork_server).ok
    assert not hasattr(fork_server, "_path")
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    r = run_python(code, server=fork_server, timeout=10)
    assert r.ok, r
    pids = r.stdout.strip()
    assert eval(pids) == [1], pids  # the check itself (pid 1 of its namespace), nothing of the host
