"""Start an inference engine's own OpenAI-compatible server as a child process.

``proofcritic serve-model --engine vllm --model M`` (and the Python API :class:`EngineServer`)
builds the engine's command line, starts it in a process group of its own with its output in a
log file, waits until ``GET /health`` and ``GET /v1/models`` both answer, and reports the base
URL that ``--base-url`` / ``OpenAIBackend(base_url=...)`` take. Stopping sends SIGTERM to the
whole group (engines fork workers), waits, and kills what is left.

The engine can live in another virtual environment: ``python=`` / ``--python PATH``, or the
environment variables ``PROOFCRITIC_VLLM_PYTHON`` and ``PROOFCRITIC_SGLANG_PYTHON``, name the
interpreter that runs it (by default the one running proofcritic).

The model name ``smollm2`` (the embedded model) is converted to its fp32 folder first and served
under the name ``smollm2``, so ``vllm/smollm2`` addresses it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, ProofcriticError

if TYPE_CHECKING:
    from typing_extensions import Self

ENGINES = ("vllm", "sglang")
#: the usual port of each engine (the same as the ``vllm/`` and ``sglang/`` model specs assume)
DEFAULT_PORTS = {"vllm": 8000, "sglang": 30000}
#: the module each engine's server is started from (``python -m MODULE``)
SERVER_MODULES = {"vllm": "vllm.entrypoints.openai.api_server", "sglang": "sglang.launch_server"}
PYTHON_ENV_VARS = {"vllm": "PROOFCRITIC_VLLM_PYTHON", "sglang": "PROOFCRITIC_SGLANG_PYTHON"}
#: seconds to wait for a server to become ready (large models load for minutes)
DEFAULT_TIMEOUT = 900.0
#: seconds between SIGTERM and SIGKILL when stopping
DEFAULT_GRACE = 20.0


class EngineError(ProofcriticError):
    """The engine server could not be started, did not become ready, or died."""


def _check_engine(engine: str) -> str:
    engine = engine.strip().lower()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


def resolve_python(engine: str, python: str | os.PathLike[str] | None = None) -> str:
    """The interpreter that runs ``engine``: ``python``, else its environment variable, else this one."""
    engine = _check_engine(engine)
    chosen = str(python) if python else os.environ.get(PYTHON_ENV_VARS[engine]) or sys.executable
    path = Path(chosen).expanduser()
    if os.sep in chosen or path.exists():
        if not path.is_file():
            raise InputError(f"python interpreter {chosen!r} for {engine} does not exist")
        # keep a venv's bin/python as given: resolving the symlink would leave the venv
        return str(path.absolute())
    return chosen  # a bare name, found on PATH by the OS


def engine_command(
    engine: str,
    model: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    python: str | None = None,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that starts ``engine``'s OpenAI-compatible server for ``model``."""
    engine = _check_engine(engine)
    exe = python or sys.executable
    if engine == "vllm":
        cmd = [exe, "-m", SERVER_MODULES[engine], "--model", model, "--host", host, "--port", str(port)]
    else:
        cmd = [exe, "-m", SERVER_MODULES[engine], "--model-path", model, "--host", host, "--port", str(port)]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    return cmd + list(extra_args)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    import socket  # here, as urllib below: `serve-model --help` does without them

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _connect_host(host: str) -> str:
    """Where to reach a server bound to ``host`` (a wildcard bind is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def log_tail(path: str | os.PathLike[str], lines: int = 40, max_chars: int = 6000) -> str:
    """The last ``lines`` lines of a log file (at most ``max_chars`` characters)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - 64 * 1024, 0))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return tail[-max_chars:] if tail else "(the log is empty)"


def _module_available(python: str, module: str, env: Mapping[str, str]) -> bool | None:
    """Whether ``python`` finds ``module`` (without importing it); None when that cannot be told."""
    top = module.split(".")[0]
    code = f"import importlib.util,sys; sys.exit(0 if importlib.util.find_spec({top!r}) else 3)"
    try:
        done = subprocess.run([python, "-c", code], check=False, env=dict(env), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 3:
        return False
    return True if done.returncode == 0 else None


def _resolve_model(model: str, served_model_name: str | None) -> tuple[str, str | None]:
    """The embedded model's alias becomes its converted folder, served under the alias."""
    from .llm import is_smollm2_alias, smollm2_path

    if is_smollm2_alias(model) and not Path(model).exists():
        return str(smollm2_path()), served_model_name or "smollm2"
    return model, served_model_name


def _death_signal_setter() -> Callable[[], None] | None:
    """Linux: a function for the child (between fork and exec) that makes it get SIGTERM when
    the launcher dies without stopping it (e.g. SIGKILL). libc is loaded here, in the parent, so
    the child only makes one system call (no imports or locks after the fork)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EngineServer:
    """One engine server as a child process. Use as a context manager or call start/stop.

    ``port=None`` takes the engine's usual port; ``port=0`` picks a free one. ``extra_args`` go
    to the engine unchanged (e.g. ``["--tensor-parallel-size", "4"]``); ``env`` adds environment
    variables for the child (e.g. ``{"VLLM_CPU_KVCACHE_SPACE": "1"}``).
    """

    def __init__(
        self,
        engine: str,
        model: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        python: str | os.PathLike[str] | None = None,
        served_model_name: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
    ):
        self.engine = _check_engine(engine)
        if not model or not model.strip():
            raise InputError("empty model name")
        self.model, self.served_model_name = _resolve_model(model.strip(), served_model_name)
        self.host = host
        requested = DEFAULT_PORTS[self.engine] if port is None else int(port)
        if not 0 <= requested <= 65535:
            raise InputError(f"port {requested} is out of range")
        self.port = requested or free_port(_connect_host(host))
        self.python = resolve_python(self.engine, python)
        self.extra_args = list(extra_args)
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        if log_path is None:
            import tempfile

            fd, name = tempfile.mkstemp(prefix=f"proofcritic-{self.engine}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen | None = None

    # -- addresses ------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        host = _connect_host(self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.root_url}/v1"

    @property
    def model_name(self) -> str:
        """The name clients put in requests."""
        return self.served_model_name or self.model

    def command(self) -> list[str]:
        return engine_command(
            self.engine,
            self.model,
            port=self.port,
            host=self.host,
            python=self.python,
            served_model_name=self.served_model_name,
            extra_args=self.extra_args,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child (returns at once; see :meth:`wait_ready`)."""
        if self.process is not None:
            raise EngineError("this server was already started")
        if _port_in_use(_connect_host(self.host), self.port):
            raise EngineError(
                f"port {self.port} on {self.host} is already in use (another server?); choose another with --port"
            )
        module = SERVER_MODULES[self.engine]
        if _module_available(self.python, module, self.env) is False:
            raise EngineError(
                f"{self.engine} is not installed for {self.python} (no module {module.split('.')[0]!r}); "
                f"install it there, or name an interpreter that has it with --python or "
                f"{PYTHON_ENV_VARS[self.engine]}"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,  # its own process group: signals reach its workers too
                    preexec_fn=_death_signal_setter() if self.die_with_parent else None,  # noqa: PLW1509 - one syscall
                )
            except OSError as exc:
                raise EngineError(f"could not start {self.engine} with {self.python}: {exc}") from exc

    def poll_ready(self) -> bool:
        """One readiness check: ``/health`` answers 200 and ``/v1/models`` lists a model."""
        import urllib.error  # here: `serve-model --help` does without urllib's http and email modules
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.root_url}/health", timeout=5) as resp:
                if resp.status != 200:
                    return False
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as resp:
                if resp.status != 200:
                    return False
                data = json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return bool(isinstance(data, dict) and data.get("data"))

    def wait_ready(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = 1.0,
        on_wait: Callable[[float], None] | None = None,
    ) -> str:
        """Block until the server is ready; return the base URL.

        Raises :class:`EngineError` with the tail of the engine's log if the child exits first or
        ``timeout`` seconds pass (the child is then stopped). ``on_wait(elapsed)`` is called
        between checks (progress display).
        """
        if self.process is None:
            raise EngineError("the server was not started")
        start = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise EngineError(
                    f"{self.engine} exited with status {code} before it was ready; the end of its log "
                    f"({self.log_path}):\n{log_tail(self.log_path)}"
                )
            if self.poll_ready():
                return self.base_url
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                self.stop()
                raise EngineError(
                    f"{self.engine} was not ready after {timeout:g} s (GET {self.root_url}/health); the end "
                    f"of its log ({self.log_path}):\n{log_tail(self.log_path)}"
                )
            if on_wait is not None:
                on_wait(elapsed)
            time.sleep(min(interval, max(timeout - elapsed, 0.05)))

    def stop(self, grace: float = DEFAULT_GRACE) -> int | None:
        """SIGTERM the child's process group, wait up to ``grace`` s, then SIGKILL it. Idempotent."""
        proc = self.process
        if proc is None:
            return None
        pgid = proc.pid  # the child leads its own session and group
        if proc.poll() is None:
            self._signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # workers may outlive the leader; whatever is left of the group goes now
        self._signal_group(pgid, signal.SIGKILL)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process immune to SIGKILL
            return None

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
