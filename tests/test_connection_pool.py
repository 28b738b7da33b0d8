"""The OpenAI backend's connection pool follows the concurrency, and the per-host cap bounds it.

A real aiohttp server on 127.0.0.1 counts the requests it holds at once (HTTP/1.1 without
pipelining: one request per connection at a time, so requests held = connections in use) and
the distinct connections it saw; the real ``OpenAIBackend`` inside ``Model`` sends to it.
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import TYPE_CHECKING

import pytest
from aiohttp import web
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.cli._common import build_model
from proofcritic.llm import (
    ChatMessage,
    ChatRequest,
    GenerateConfig,
    Model,
    RetryPolicy,
    get_model,
)
from proofcritic.llm._openai import OpenAIBackend

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

_ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class HoldingServer:
    """Holds each chat request until ``fill`` requests are held at once (or ``hold`` seconds
    passed), then answers; records the most held at once and the connections seen."""

    def __init__(self, fill: int | None = None, hold: float = 2.0):
        self.fill = fill
        self.hold = hold
        self.held = 0
        self.most = 0
        self.requests = 0
        self.connections: set[int] = set()
        self.full = asyncio.Event()
        self.url = ""

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        self.connections.add(id(request.transport))
        self.held += 1
        self.most = max(self.most, self.held)
        if self.fill is not None and self.held >= self.fill:
            self.full.set()
        try:
            if self.fill is None:
                await asyncio.sleep(self.hold)
            else:
                try:
                    await asyncio.wait_for(self.full.wait(), self.hold)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        finally:
            self.held -= 1
        return web.json_response(_ANSWER)

    async def __aenter__(self) -> Self:
        app_ = web.Application()
        app_.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app_, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.fixture(autouse=True)
def _enough_open_files():
    """Client and server share this process: 1024 connections are 2048 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files ({hard}) is below the 4096 these tests need")
    if soft != resource.RLIM_INFINITY and soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


def _requests(count: int) -> list[ChatRequest]:
    return [
        ChatRequest(messages=[ChatMessage(role="user", content=f"item {i}")], config=GenerateConfig(max_tokens=4))
        for i in range(count)
    ]


async def test_1024_in_flight_open_1024_connections():
    async with HoldingServer(fill=1024, hold=2.0) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key="k")
        model = Model(backend, max_concurrency=1024, retry=RetryPolicy(max_attempts=1))
        try:
            out = await model.generate_many(_requests(1024))
        finally:
            await model.aclose()
    assert all(o[0].text == "fine" for o in out)
    assert server.most == 1024  # was 256: the pool's old fixed size
    assert len(server.connections) == 1024


async def test_the_per_host_cap_bounds_requests_in_flight():
    async with HoldingServer(hold=0.15) as server:
        model = get_model(
            "openai/m",
            base_url=server.url,
            api_key="k",
            cache=False,
            max_concurrency=1024,
            max_connections_per_host=40,
        )
        try:
            await model.generate_many(_requests(200))
        finally:
            await model.aclose()
    assert server.most == 40
    assert server.requests == 200
    assert len(server.connections) <= 40


async def test_requests_waiting_for_a_connection_do_not_time_out():
    """Under the per-host cap a request's timeout starts once it is sent, not while it waits."""
    async with HoldingServer(hold=0.2) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key="k", timeout=1.0, max_connections_per_host=5)
        model = Model(backend, max_concurrency=100, retry=RetryPolicy(max_attempts=1))
        try:
            out = await model.generate_many(_requests(50))  # 10 rounds of 0.2 s: 2 s in all
        finally:
            await model.aclose()
    assert len(out) == 50 and model.usage.failed_calls == 0
    assert server.most == 5


def test_backend_options_and_defaults():
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1,http://127.0.0.1:10/v1", max_connections_per_host=8)
    assert backend.max_connections is None and backend.max_connections_per_host == 8
    assert backend.default_concurrency == 16  # 8 per host x 2 hosts, under the usual 64
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").default_concurrency == 64
    with pytest.raises(ValueError, match="max_connections_per_host must be at least 1"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", max_connections_per_host=0)
    model = build_model(
        "openai/m", None, "http://127.0.0.1:9/v1", "k", True, None, 512, None, max_connections_per_host=32
    )
    assert model.backend.max_connections_per_host == 32 and model.max_concurrency == 512


def test_cli_takes_the_per_host_cap(tmp_path):
    """``--max-connections-per-host`` reaches the server: a batch at --concurrency 64 never has
    more than the cap in flight."""

    async def serve_and_run() -> HoldingServer:
        async with HoldingServer(hold=0.1) as server:
            source = tmp_path / "in.jsonl"
            source.write_text(
                "".join(
                    json.dumps({"id": f"p{i}", "problem": f"Problem {i}.", "proof": "Trivial."}) + "\n"
                    for i in range(48)
                )
            )
            args = [
                "grade",
                "--input",
                str(source),
                "--output",
                str(tmp_path / "out.jsonl"),
                "--model",
                "openai/m",
                "--base-url",
                server.url,
                "--api-key",
                "k",
                "--no-cache",
                "--concurrency",
                "64",
                "--max-connections-per-host",
                "6",
            ]
            result = await asyncio.to_thread(CliRunner().invoke, app, args, catch_exceptions=False)
            assert result.exit_code in (0, 1), result.output  # "fine" has no score: no verdict, still a result
            return server

    server = asyncio.run(serve_and_run())
    assert server.requests == 48
    assert server.most == 6


@pytest.mark.parametrize("transport", ["lean", "aiohttp", "openai"])
def test_cli_transport_reaches_the_server(tmp_path, transport):
    """``--transport`` picks the HTTP client that talks to the server: the openai package says
    so in its User-Agent, aiohttp offers compressed bodies, the lean client does neither."""
    seen: list[dict[str, str]] = []

    async def serve_and_run() -> None:
        server = HoldingServer(hold=0.0)
        original = server.chat

        async def chat(request: web.Request) -> web.Response:
            seen.append(dict(request.headers))
            return await original(request)

        server.chat = chat  # type: ignore[method-assign]
        async with server:
            args = [
                "grade",
                "--problem",
                str(tmp_path / "problem.md"),
                "--proof",
                str(tmp_path / "proof.md"),
                "--model",
                "openai/m",
                "--base-url",
                server.url,
                "--api-key",
                "k",
                "--no-cache",
                "--transport",
                transport,
            ]
            result = await asyncio.to_thread(CliRunner().invoke, app, args, catch_exceptions=False)
            assert result.exit_code == 1 and "no verdict" in result.output  # "fine" has no score

    (tmp_path / "problem.md").write_text("Prove that 1 + 1 = 2.")
    (tmp_path / "proof.md").write_text("By definition.")
    asyncio.run(serve_and_run())
    assert len(seen) == 1
    headers = {k.lower(): v for k, v in seen[0].items()}
    assert ("openai" in headers.get("user-agent", "").lower()) == (transport == "openai")
    assert ("gzip" in headers.get("accept-encoding", "")) == (transport != "lean")


def test_cli_transport_refused_for_a_local_model(tmp_path, capsys, monkeypatch):
    """One line and exit status 2, through the real entry point: a local model has no transport,
    and an unknown transport is named."""
    import sys

    from proofcritic.cli import main

    (tmp_path / "problem.md").write_text("Prove that 1 + 1 = 2.")
    (tmp_path / "proof.md").write_text("By definition.")
    args = [
        "grade",
        "--problem",
        str(tmp_path / "problem.md"),
        "--proof",
        str(tmp_path / "proof.md"),
        "--model",
        "transformers/smollm2",
        "--transport",
    ]
    for value, message in (
        ("aiohttp", "(--transport) applies to the server backends (openai, vllm, sglang), not transformers"),
        ("http2", "must be one of lean, aiohttp, openai, not 'http2'"),
    ):
        monkeypatch.setattr(sys, "argv", ["proofcritic", *args, value])
        with pytest.raises(SystemExit) as info:
            main()
        lines = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2
        assert len(lines) == 1 and "--transport" in lines[0] and message in lines[0], lines
