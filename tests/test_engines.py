"""The engine launcher (``proofcritic serve-model`` / :class:`EngineServer`).

SGLang needs a GPU, so its server is played by ``tests/servers/sglang_standin.py``: a real
process started through the real ``python -m sglang.launch_server`` command line (a ``sglang``
package on PYTHONPATH whose ``launch_server`` runs the stand-in), with a real HTTP server that
reports healthy only after a delay and a worker process in its process group. A real vLLM server
is started the same way by ``make test-vllm`` (tests_vllm/).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from proofcritic.engines import (
    EngineError,
    EngineServer,
    engine_command,
    resolve_python,
)
from proofcritic.errors import InputError

STANDIN = Path(__file__).parent / "servers" / "sglang_standin.py"


@pytest.fixture(scope="module")
def sglang_path(tmp_path_factory) -> str:
    """A folder whose ``sglang.launch_server`` module runs the stand-in."""
    root = tmp_path_factory.mktemp("fake-sglang")
    pkg = root / "sglang"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "launch_server.py").write_text(f"import runpy\nrunpy.run_path({str(STANDIN)!r}, run_name='__main__')\n")
    return str(root)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie waiting to be reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_vllm_command_line():
    cmd = engine_command(
        "vllm",
        "org/model",
        port=8123,
        python="/venv/bin/python",
        served_model_name="m",
        extra_args=["--tensor-parallel-size", "2"],
    )
    assert cmd == [
        "/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "org/model",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--served-model-name",
        "m",
        "--tensor-parallel-size",
        "2",
    ]


def test_python_from_environment(monkeypatch, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("")
    monkeypatch.setenv("PROOFCRITIC_VLLM_PYTHON", str(fake))
    assert resolve_python("vllm") == str(fake)
    assert resolve_python("sglang") == sys.executable  # each engine has its own variable
    with pytest.raises(InputError, match="does not exist"):
        resolve_python("vllm", tmp_path / "missing" / "python")
    with pytest.raises(InputError, match="unknown engine"):
        resolve_python("tgi")


def test_sglang_waits_for_health_and_stops_the_whole_group(sglang_path, tmp_path):
    record = tmp_path / "record.jsonl"
    server = EngineServer(
        "sglang",
        "org/some-model",
        port=0,
        python=sys.executable,
        served_model_name="critic",
        extra_args=["--tp", "2", "--standin-delay", "1.5", "--standin-record", str(record)],
        env={"PYTHONPATH": sglang_path},
        log_path=tmp_path / "engine.log",
    )
    server.start()
    started = time.monotonic()
    try:
        assert server.wait_ready(timeout=60, interval=0.2) == f"http://127.0.0.1:{server.port}/v1"
        # /health answered 503 for 1.5 s: being reachable is not being ready
        assert time.monotonic() - started >= 1.4
        first = _records(record)[0]
        assert first["argv"] == [
            "--model-path",
            "org/some-model",
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--served-model-name",
            "critic",
            "--tp",
            "2",
            "--standin-delay",
            "1.5",
            "--standin-record",
            str(record),
        ]
        assert first["engine_flags"] == ["--tp", "2"]
        assert [m["id"] for m in _get_json(f"{server.base_url}/models")["data"]] == ["critic"]
        assert psutil.pid_exists(first["worker"])
    finally:
        server.stop(grace=10)
    assert {"signal": "SIGTERM"} in _records(record)
    assert _gone(first["pid"]) and _gone(first["worker"])  # the worker dies with its group
    assert "loading org/some-model" in (tmp_path / "engine.log").read_text()


def test_engine_that_dies_reports_its_log(sglang_path, tmp_path):
    record = tmp_path / "record.jsonl"
    server = EngineServer(
        "sglang",
        "org/m",
        port=0,
        python=sys.executable,
        extra_args=["--standin-mode", "crash", "--standin-delay", "0.3", "--standin-record", str(record)],
        env={"PYTHONPATH": sglang_path},
    )
    server.start()
    with pytest.raises(EngineError, match=r"(?s)exited with status 1.*not enough GPU memory"):
        server.wait_ready(timeout=60, interval=0.2)
    assert _gone(_records(record)[0]["worker"])


def test_timeout_stops_the_engine_and_shows_the_log(sglang_path, tmp_path):
    record = tmp_path / "record.jsonl"
    server = EngineServer(
        "sglang",
        "org/m",
        port=0,
        python=sys.executable,
        extra_args=["--standin-mode", "hang", "--standin-record", str(record)],
        env={"PYTHONPATH": sglang_path},
    )
    server.start()
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"(?s)not ready after 2 s.*stand-in sglang: loading org/m"):
        server.wait_ready(timeout=2, interval=0.2)
    assert 2 <= time.monotonic() - started < 30
    assert server.process.poll() is not None
    assert _gone(_records(record)[0]["worker"])


def test_missing_engine_and_busy_port_fail_before_starting(tmp_path):
    if subprocess.run([sys.executable, "-c", "import sglang"], check=False, capture_output=True).returncode == 0:
        pytest.skip("sglang is installed here")
    with pytest.raises(EngineError, match=r"sglang is not installed for .*PROOFCRITIC_SGLANG_PYTHON"):
        EngineServer("sglang", "org/m", port=0, python=sys.executable).start()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EngineServer("sglang", "org/m", port=port, python=sys.executable)
        with pytest.raises(EngineError, match=f"port {port} .* already in use"):
            server.start()
        assert server.process is None


def _read_line(stream, timeout: float) -> str:
    """The first line of ``stream`` within ``timeout`` seconds ("" when none came)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_the_url_and_shuts_down_on_a_signal(sglang_path, tmp_path, sig):
    record = tmp_path / "record.jsonl"
    env = {**os.environ, "PYTHONPATH": sglang_path, "PROOFCRITIC_SGLANG_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proofcritic",
            "serve-model",
            "--engine",
            "sglang",
            "--model",
            "org/m",
            "--port",
            "0",
            "--timeout",
            "60",
            "--",
            "--standin-delay",
            "0.5",
            "--standin-record",
            str(record),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = _read_line(proc.stdout, 60).strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), (
            proc.stderr.read() if proc.poll() is not None else url
        )
        assert [m["id"] for m in _get_json(f"{url}/models")["data"]] == ["org/m"]
        first = _records(record)[0]
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {"signal": "SIGTERM"} in _records(record)  # forwarded as SIGTERM to the engine
    assert _gone(first["pid"]) and _gone(first["worker"])
    assert "stopping sglang" in proc.stderr.read()


def test_cli_reports_an_engine_failure(sglang_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": sglang_path}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proofcritic",
            "serve-model",
            "-e",
            "sglang",
            "-m",
            "org/m",
            "--port",
            "0",
            "--python",
            sys.executable,
            "--",
            "--standin-mode",
            "crash",
            "--standin-delay",
            "0.2",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""  # no URL for a server that never came up
    assert "exited with status 1" in done.stderr and "not enough GPU memory" in done.stderr


def _sglang_python() -> str | None:
    """An interpreter with sglang installed and a CUDA GPU visible, or None."""
    python = os.environ.get("PROOFCRITIC_SGLANG_PYTHON", sys.executable)
    probe = "import sglang, torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        done = subprocess.run([python, "-c", probe], check=False, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return python if done.returncode == 0 else None


@pytest.mark.gpu
@pytest.mark.slow
async def test_real_sglang_on_a_gpu(tmp_path):
    """Real SGLang (needs a CUDA GPU and sglang, e.g. in a venv named by PROOFCRITIC_SGLANG_PYTHON):
    serve SmolLM2 (or PROOFCRITIC_SGLANG_MODEL) through the launcher, sample n=4 in one request
    and force a guided choice. Skipped where either is missing (as on the development machine)."""
    python = _sglang_python()
    if python is None:
        pytest.skip("needs sglang and a CUDA GPU (set PROOFCRITIC_SGLANG_PYTHON)")
    from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, get_model

    model_name = os.environ.get("PROOFCRITIC_SGLANG_MODEL", "smollm2")
    with EngineServer("sglang", model_name, port=0, python=python, log_path=tmp_path / "sglang.log") as server:
        model = get_model(f"sglang/{server.model_name}", base_url=server.base_url, cache=False)
        messages = [ChatMessage(role="user", content="Is 91 prime? Answer in one word.")]
        try:
            sampled = await model.generate(
                ChatRequest(messages=messages, config=GenerateConfig(n=4, temperature=1.0, max_tokens=16))
            )
            guided = await model.generate(
                ChatRequest(
                    messages=messages, config=GenerateConfig(n=3, temperature=1.0, max_tokens=8, choices=["yes", "no"])
                )
            )
        finally:
            await model.aclose()
    assert len(sampled) == 4 and model.usage.calls == 2
    assert all(c.text in ("yes", "no") for c in guided)


async def test_vllm_offline_without_vllm_names_the_extra():
    """``vllm-offline/`` builds without vLLM installed and fails on first use with the extra to install."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from proofcritic.errors import MissingDependencyError
    from proofcritic.llm import ChatMessage, ChatRequest, get_model

    model = get_model("vllm-offline/org/model", cache=False)
    assert model.name == "vllm-offline/org/model"
    try:
        with pytest.raises(MissingDependencyError, match=r"proofcritic\[vllm\]"):
            await model.generate(ChatRequest(messages=[ChatMessage(role="user", content="hi")]))
    finally:
        await model.aclose()
