"""The lean HTTP/1.1 client of the OpenAI backend (``transport="lean"``, the default) against raw
asyncio servers on 127.0.0.1 that answer the way real servers may: Content-Length, chunked,
``Connection: close``, a body ended by closing, a keep-alive connection closed while idle, too
slow. The fault-handling tests of the backend run on this transport too (test_openai_backend)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from proofcritic.errors import BackendError
from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, Model, RetryPolicy
from proofcritic.llm._http import HTTPClient, HTTPConnectionError
from proofcritic.llm._openai import OpenAIBackend

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

_BODY = json.dumps(
    {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
).encode()


class RawServer:
    """Reads each request (head + Content-Length body) and answers with ``answer(n, writer)``,
    ``n`` counting the requests on that connection from 1. Records connections and requests."""

    def __init__(self, answer):
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        count = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                count += 1
                if await self.answer(count, writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def _head(extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}".encode()


async def _content_length(n: int, writer: asyncio.StreamWriter) -> None:
    writer.write(_head(f"Content-Length: {len(_BODY)}\r\n\r\n") + _BODY)


async def _chunked(n: int, writer: asyncio.StreamWriter) -> None:
    writer.write(_head("Transfer-Encoding: chunked\r\n\r\n"))
    for piece in (_BODY[:10], _BODY[10:]):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(0.01)  # the answer arrives in several reads
    writer.write(b"0\r\n\r\n")


async def _close_after(n: int, writer: asyncio.StreamWriter) -> bool:
    writer.write(_head(f"Content-Length: {len(_BODY)}\r\nConnection: close\r\n\r\n") + _BODY)
    return False


async def _until_close(n: int, writer: asyncio.StreamWriter) -> bool:
    writer.write(_head("\r\n") + _BODY)  # no length: the body ends with the connection
    return False


async def _one_per_connection(n: int, writer: asyncio.StreamWriter) -> bool:
    """Answers the first request of a connection; a second one finds it closed, unanswered (as
    a server whose idle keep-alive timeout struck while the request was on its way)."""
    if n > 1:
        return False
    await _content_length(n, writer)
    return True


def _model(url: str, **options) -> Model:
    backend = OpenAIBackend("m", base_url=url, api_key="k", **options)
    assert backend.transport == "lean"
    return Model(backend, retry=RetryPolicy(max_attempts=1))


def _request(i: int = 0) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=f"q{i}")], config=GenerateConfig(max_tokens=2))


@pytest.mark.parametrize("answer", [_content_length, _chunked, _close_after, _until_close])
async def test_answers_of_every_framing(answer):
    async with RawServer(answer) as server:
        model = _model(server.url)
        try:
            for i in range(3):
                assert (await model.generate(_request(i)))[0].text == "fine"
        finally:
            await model.aclose()
    assert len(server.requests) == 3
    # keep-alive where the server keeps the connection, a new one where it closes it
    assert server.connections == (1 if answer in (_content_length, _chunked) else 3)
    head = server.requests[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: {server.url.split('//')[1].split('/')[0]}" in head and "Authorization: Bearer k" in head


async def test_a_connection_closed_unanswered_is_a_retryable_error_never_sent_twice_by_the_client():
    async with RawServer(_one_per_connection) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key="k")
        model = Model(backend, retry=RetryPolicy(max_attempts=2, initial_wait=0.01, jitter=0.0))
        try:
            for i in range(3):
                assert (await model.generate(_request(i)))[0].text == "fine"
        finally:
            await model.aclose()
    # requests 2 and 3 each found their (reused) connection closed: one failed attempt each,
    # retried by the Model on a new connection
    assert model.usage.failed_calls == 2
    assert len(server.requests) == 5 and server.connections == 3


async def test_idle_connections_are_reused_only_while_fresh(monkeypatch):
    from proofcritic.llm import _http

    async with RawServer(_content_length) as server:
        model = _model(server.url)
        try:
            await model.generate(_request(0))
            await model.generate(_request(1))  # reused
            monkeypatch.setattr(_http, "IDLE_REUSE", 0.05)
            await asyncio.sleep(0.1)
            await model.generate(_request(2))  # too long idle: a new connection
        finally:
            await model.aclose()
    assert len(server.requests) == 3 and server.connections == 2


async def test_too_slow_is_a_retryable_timeout_and_the_connection_is_dropped():
    async def slow(n: int, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0 if len(server.requests) == 1 else 0)  # the first request of all
        await _content_length(n, writer)

    server = RawServer(slow)
    async with server:
        model = _model(server.url, timeout=0.2)
        try:
            with pytest.raises(BackendError, match=r"timed out after 0\.2 s") as info:
                await model.generate(_request(0))
            assert info.value.retryable
            assert (await model.generate(_request(1)))[0].text == "fine"
        finally:
            await model.aclose()
    assert server.connections == 2  # the late answer's connection was not reused


async def test_connection_refused_and_cut_answers_are_connection_errors():
    client = HTTPClient({"Content-Type": "application/json"})
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(HTTPConnectionError, match="cannot connect"):
        await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", b"{}", 5)

    async def cut(n: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(_head(f"Content-Length: {len(_BODY)}\r\n\r\n") + _BODY[:5])
        return False

    async with RawServer(cut) as raw:
        with pytest.raises(HTTPConnectionError, match="before a complete answer"):
            await client.post(f"{raw.url}/chat/completions", b"{}", 5)
    client.close()
    with pytest.raises(ValueError, match="not a plain http"):
        await HTTPClient({}).post("https://example.org/v1/chat/completions", b"{}", 5)


_ONLY_LEAN = """
import asyncio, json, sys
from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, Model
from proofcritic.llm._openai import OpenAIBackend

BODY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                   "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()

async def handle(reader, writer):
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
    await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY) + BODY)
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    model = Model(OpenAIBackend("m", base_url=url, api_key="k", transport=sys.argv[1]), cache=None)
    request = ChatRequest(messages=[ChatMessage(role="user", content="hi")], config=GenerateConfig(max_tokens=2))
    [completion] = await model.generate(request)
    await model.aclose()
    server.close()
    print(completion.text, "aiohttp" in sys.modules)

asyncio.run(main())
"""


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
def test_the_lean_transport_does_not_load_aiohttp(transport):
    """Chat requests to an http:// server through the lean client need no aiohttp (its import is
    about 0.1 s of every run's start-up); the aiohttp transport loads it, of course."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _ONLY_LEAN, transport], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["fine", str(transport == "aiohttp")]
