"""A scripted OpenAI-compatible HTTP server for testing error handling.

The test queues one action per POST request; when the queue is empty the server answers
normally (``ok()``), or by the actions given to ``always`` in turn (a server that is down until
``reset``). Every request is recorded with its body, headers and arrival time, and the tokens of
the answers it served are added up (``served_tokens``), so a test can compare what a client
reports with what the server saw.
The server runs on 127.0.0.1 (a free port) in a background thread with its own event loop, so
it works from sync and async tests alike::

    with FaultServer() as server:
        server.push(status(429, retry_after=1), ok("fine"))
        backend = OpenAIBackend("served-model", base_url=server.url)
        ...
        assert len(server.chat_requests) == 2
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


@dataclass
class Action:
    """What the server does with one POST request."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def ok(text: str = "ok", n: int | None = None, extra: dict[str, Any] | None = None, delay: float = 0.0) -> Action:
    """A normal answer: ``n`` choices (default: the request's n) of ``text``; ``extra`` merged into the body."""
    return Action("ok", {"text": text, "n": n, "extra": extra or {}, "delay": delay})


def status(code: int, retry_after: float | str | None = None, message: str | None = None) -> Action:
    """An error status with an OpenAI-style error body and optionally a ``Retry-After`` header."""
    return Action("status", {"code": code, "retry_after": retry_after, "message": message})


def slow(seconds: float, text: str = "slow") -> Action:
    """Answer normally, but only after ``seconds``."""
    return ok(text, delay=seconds)


def malformed_json() -> Action:
    """A 200 whose body is not JSON."""
    return Action("malformed_json")


def drop_connection() -> Action:
    """Close the connection without answering."""
    return Action("drop_connection")


def empty_answer() -> Action:
    """A 200 with a well-formed body (usage included) but no choices."""
    return ok(extra={"choices": []})


def refuse_n() -> Action:
    """A 400 complaining about ``n`` when the request asks for n > 1 (else a normal answer)."""
    return Action("refuse_n")


def ignore_n() -> Action:
    """A normal answer with a single choice whatever the request's n."""
    return Action("ok", {"text": "one", "n": 1, "extra": {}, "delay": 0.0})


def not_found_model() -> Action:
    """A 404 saying the requested model does not exist (as vLLM and OpenAI word it)."""
    return Action("not_found_model")


def unauthorized() -> Action:
    """A 401 refusing the API key."""
    return Action("status", {"code": 401, "retry_after": None, "message": "Incorrect API key provided."})


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    """``time.monotonic()`` at arrival."""


def _error_body(message: str, kind: str, code: Any, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class FaultServer:
    """The scripted server. ``served_models`` answer ``GET /v1/models``."""

    def __init__(self, served_models: tuple[str, ...] = ("served-model",)):
        self.served_models = list(served_models)
        self.actions: collections.deque[Action] = collections.deque()
        self.requests: list[RecordedRequest] = []
        self.cycle: list[Action] = []
        self.prompt_tokens = 0
        """Prompt tokens of the answers served (as their ``usage`` says)."""
        self.completion_tokens = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- scripting --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL to give a client (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *actions: Action) -> None:
        """Queue actions, one per coming POST request."""
        self.actions.extend(actions)

    def always(self, *actions: Action) -> None:
        """Once the queue is empty, answer every request with these actions in turn (until
        ``reset``), e.g. ``always(malformed_json(), drop_connection(), empty_answer())``."""
        self.cycle = list(actions)

    def reset(self) -> None:
        """Forget queued and repeated actions, recorded requests and served tokens."""
        self.actions.clear()
        self.cycle = []
        self.requests.clear()
        self.prompt_tokens = self.completion_tokens = 0

    @property
    def served_tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens of every answer served since the start or ``reset``."""
        return self.prompt_tokens, self.completion_tokens

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded POSTs to ``/v1/chat/completions``."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/chat/completions")]

    # -- handlers ---------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        self.requests.append(RecordedRequest("GET", request.path, dict(request.headers), None, time.monotonic()))
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.served_models]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(RecordedRequest("POST", request.path, dict(request.headers), body, arrived))
        if self.actions:
            action = self.actions.popleft()
        elif self.cycle:
            action = self.cycle[(len(self.chat_requests) - 1) % len(self.cycle)]
        else:
            action = ok()
        p = action.params
        n = int(body.get("n") or 1) if isinstance(body, dict) else 1
        if action.kind == "status":
            code = p["code"]
            headers = {}
            if p["retry_after"] is not None:
                headers["Retry-After"] = str(p["retry_after"])
            message = p["message"] or f"scripted error {code}"
            return web.json_response(_error_body(message, "scripted", code), status=code, headers=headers)
        if action.kind == "malformed_json":
            return web.Response(body=b'{"choices": [', content_type="application/json")
        if action.kind == "drop_connection":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if action.kind == "not_found_model":
            model = body.get("model") if isinstance(body, dict) else None
            return web.json_response(
                _error_body(f"The model `{model}` does not exist.", "NotFoundError", 404, "model"), status=404
            )
        if action.kind == "refuse_n" and n > 1:
            return web.json_response(
                _error_body(f"n must be 1 for this model; got n={n:d}", "invalid_request_error", None, "n"), status=400
            )
        if p.get("delay"):
            await asyncio.sleep(p["delay"])
        answer = self._answer(
            body if isinstance(body, dict) else {}, p.get("text", "ok"), p.get("n") or n, p.get("extra") or {}
        )
        usage = answer.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        return web.json_response(answer)

    @staticmethod
    def _answer(body: dict[str, Any], text: str, n: int, extra: dict[str, Any]) -> dict[str, Any]:
        tokens = text.split() or [""]
        choices = []
        for i in range(n):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            if body.get("logprobs"):
                k = int(body.get("top_logprobs") or 0)
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": t,
                            "logprob": -0.5,
                            "bytes": None,
                            "top_logprobs": [{"token": t, "logprob": -0.5, "bytes": None}][:k],
                        }
                        for t in tokens
                    ]
                }
            choices.append(choice)
        answer = {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "served-model"),
            "choices": choices,
            "usage": {"prompt_tokens": 7, "completion_tokens": len(tokens) * n, "total_tokens": 7 + len(tokens) * n},
        }
        answer.update(extra)
        return answer

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FaultServer:
        """Start serving in a background thread; returns once the port is known."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # handlers still sleeping for clients that gave up: cancel them so the loop closes clean
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A running :class:`FaultServer` (import this fixture into a test module to use it)."""
    with FaultServer() as server:
        yield server
