"""``proofcritic serve-model``: run vLLM's or SGLang's own OpenAI-compatible server until stopped."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ..engines import (
    DEFAULT_GRACE,
    DEFAULT_TIMEOUT,
    ENGINES,
    EngineError,
    EngineServer,
    log_tail,
)


class _Stop(Exception):
    """Raised from the signal handler to leave the wait loop."""


def serve_model_command(
    engine: Annotated[str, typer.Option("--engine", "-e", help=f"The engine: {' or '.join(ENGINES)}.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or hub id (smollm2: the embedded model).")],
    extra: Annotated[
        list[str] | None, typer.Argument(help="Arguments after -- go to the engine unchanged.", show_default=False)
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=0, max=65535, help="Port (default: 8000 for vllm, 30000 for sglang; 0: any free port)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for other machines).")
    ] = "127.0.0.1",
    python: Annotated[
        Path | None,
        typer.Option(
            "--python",
            help="Interpreter that has the engine installed (env: PROOFCRITIC_VLLM_PYTHON / PROOFCRITIC_SGLANG_PYTHON).",
        ),
    ] = None,
    served_model_name: Annotated[
        str | None,
        typer.Option("--served-model-name", help="The model name clients use (default: the engine's choice)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the server to become ready.")
    ] = DEFAULT_TIMEOUT,
    log: Annotated[Path | None, typer.Option("--log", help="Engine log file (default: a temporary file).")] = None,
) -> None:
    """Start an engine's OpenAI-compatible server, wait until it is healthy, print its base URL.

    Runs until Ctrl-C or SIGTERM, then stops the engine and its workers. Example:
    proofcritic serve-model --engine vllm --model Qwen/Qwen3-8B -- --tensor-parallel-size 2
    """
    from rich.console import Console

    console = Console(stderr=True)
    server = EngineServer(
        engine,
        model,
        port=port,
        host=host,
        python=python,
        served_model_name=served_model_name,
        extra_args=extra or [],
        log_path=log,
    )
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            raise _Stop

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        console.print(f"starting {server.engine}: {' '.join(server.command())}")
        console.print(f"[dim]log: {server.log_path}[/]")
        server.start()
        started = time.monotonic()
        with console.status(f"waiting for {server.engine} to become ready") as status:

            def tick(elapsed: float) -> None:
                status.update(f"waiting for {server.engine} to become ready ({elapsed:.0f} s)")

            base_url = server.wait_ready(timeout=timeout, on_wait=tick)
        console.print(
            f"{server.engine} is ready after {time.monotonic() - started:.0f} s; use it with "
            f"--model {server.engine}/{server.model_name} --base-url {base_url}   (Ctrl-C stops it)"
        )
        print(base_url, flush=True)
        assert server.process is not None  # wait_ready returned: it runs
        code = server.process.wait()
        # the engine stopped on its own
        raise EngineError(
            f"{server.engine} exited with status {code}; the end of its log:\n{log_tail(server.log_path)}"
        )
    except _Stop:
        console.print(f"stopping {server.engine} ({signal.Signals(stopping[0]).name})")
    finally:
        # a second signal during shutdown must not cut the cleanup short
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        server.stop(grace=DEFAULT_GRACE)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(0)
