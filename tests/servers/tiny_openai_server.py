"""A real OpenAI-compatible HTTP server that answers through any proofcritic :class:`Backend`.

In tests it serves the tiny random transformers model, so the OpenAI backend can be exercised
end to end (HTTP, JSON, sampling options, usage, logprobs, likelihood scoring) without a GPU.

Endpoints (under ``/v1``):

* ``GET /models``: the one served model id; ``GET /health`` (at the root, as vLLM): 200.
* ``POST /chat/completions``: ``messages``, ``n``, ``temperature``, ``top_p``, ``max_tokens``,
  ``stop``, ``seed``, ``logprobs``, ``top_logprobs``; answers with ``choices`` (text,
  ``finish_reason``, per-token ``logprobs``) and ``usage``. vLLM's guided choice
  ``structured_outputs: {"choice": [...]}`` is honoured (through ``GenerateConfig.choices``)
  unless the server was made with ``guided=False``, which then ignores it like a server without
  the feature; the older ``guided_choice`` key is ignored, as vLLM 0.32 does. A conversation
  ending with an assistant turn is continued (``continue_final_message``). With vLLM's extras
  ``continue_final_message: true`` and ``prompt_logprobs`` set, it scores the conversation with
  ``backend.sequence_logprobs`` instead and returns ``prompt_logprobs`` in vLLM's shape.

  Simplification: a generic Backend only reports the total log-likelihood, so ``prompt_logprobs``
  is ``[None, {"0": {"logprob": TOTAL, "rank": 1, "decoded_token": ""}}]``: one entry holding the
  whole sum instead of one entry per prompt token. A client that sums the entries (as
  ``OpenAIBackend.sequence_logprobs`` and vLLM users do) reads the right total.
* A wrong ``model`` gets a 404 with an OpenAI-style error body; with ``api_key`` set, a missing
  or wrong bearer key gets a 401.

Use it inside a running loop (``async with TinyOpenAIServer(backend) as server``), in a
background thread (``with TinyOpenAIServer(backend) as server``, e.g. for CLI tests), or as a
process: ``python tests/servers/tiny_openai_server.py MODEL_DIR [--port P] [--api-key K]``,
which prints ``READY <base_url>`` once it listens (:func:`spawn` starts one and waits for it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from proofcritic.errors import BackendError, UnsupportedFeatureError
from proofcritic.llm import Backend, ChatMessage, ChatRequest, Completion, GenerateConfig

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


def _error(status: int, message: str, kind: str, param: str | None = None, code: Any = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def _choice(index: int, completion: Completion) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": index,
        "message": {"role": "assistant", "content": completion.text},
        "finish_reason": completion.finish_reason,
        "logprobs": None,
    }
    if completion.logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {
                    "token": t.token,
                    "logprob": t.logprob,
                    "bytes": list(t.token.encode()),
                    "top_logprobs": [
                        {"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in (t.top or {}).items()
                    ],
                }
                for t in completion.logprobs
            ]
        }
    return choice


class TinyOpenAIServer:
    """Serve ``backend`` under the model id ``model_name`` on ``host:port`` (0: a free port)."""

    def __init__(
        self,
        backend: Backend,
        model_name: str = "tiny",
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        guided: bool = True,
    ):
        self.backend = backend
        self.guided = guided
        self.model_name = model_name
        self.api_key = api_key
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        """Every chat request body received, in order."""
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL for clients (ends in ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    # -- handlers -----------------------------------------------------------------------------
    def _refused(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "proofcritic"}],
            }
        )

    async def _chat(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            return _error(400, "the request body is not a JSON object", "invalid_request_error")
        self.requests.append(body)
        if body.get("model") != self.model_name:
            return _error(
                404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model", "model_not_found"
            )
        try:
            messages = [ChatMessage(role=m["role"], content=m.get("content") or "") for m in body.get("messages", [])]
            structured = body.get("structured_outputs")
            choices = structured.get("choice") if self.guided and isinstance(structured, dict) else None
            stop = body.get("stop")
            config = GenerateConfig(
                n=body.get("n") or 1,
                temperature=body.get("temperature"),
                top_p=body.get("top_p"),
                max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
                stop=[stop] if isinstance(stop, str) else stop,
                seed=body.get("seed"),
                logprobs=bool(body.get("logprobs")),
                top_logprobs=body.get("top_logprobs"),
                choices=choices,
            )
        except (ValidationError, KeyError, TypeError) as exc:
            return _error(400, f"invalid request: {exc}", "invalid_request_error")
        if not messages:
            return _error(400, "messages must not be empty", "invalid_request_error", "messages")
        try:
            if body.get("prompt_logprobs") is not None:
                return await self._score(body, messages)
            completions = await self.backend.generate(ChatRequest(messages=messages, config=config))
        except UnsupportedFeatureError as exc:
            return _error(400, str(exc), "invalid_request_error")
        except BackendError as exc:
            return _error(exc.status or 500, str(exc), "server_error")
        prompt_tokens = completions[0].prompt_tokens if completions else 0
        completion_tokens = sum(c.completion_tokens for c in completions)
        return web.json_response(
            self._envelope([_choice(i, c) for i, c in enumerate(completions)], prompt_tokens, completion_tokens)
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _score(self, body: dict[str, Any], messages: list[ChatMessage]) -> web.Response:
        """vLLM-style prompt scoring: the total log-likelihood as ``prompt_logprobs``."""
        if not body.get("continue_final_message") or messages[-1].role != "assistant":
            return _error(
                400,
                "prompt_logprobs is served here only with continue_final_message and a final assistant message",
                "invalid_request_error",
                "prompt_logprobs",
            )
        (total,) = await self.backend.sequence_logprobs(messages, [""])
        answer = self._envelope(
            [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ""},
                    "finish_reason": "length",
                    "logprobs": None,
                }
            ],
            0,
            0,
        )
        answer["prompt_logprobs"] = [None, {"0": {"logprob": total, "rank": 1, "decoded_token": ""}}]
        return web.json_response(answer)

    def _envelope(self, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> TinyOpenAIServer:
        """Start listening in the running event loop."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening (the backend stays open; its owner closes it)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> TinyOpenAIServer:
        """Start in a background thread with its own event loop (for synchronous callers)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tiny-openai-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=30)
        return self

    def stop_thread(self) -> None:
        """Stop the background thread started by :meth:`start_in_thread`."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()


def spawn(
    model_dir: str | os.PathLike[str], *args: str, port: int = 0, timeout: float = 120
) -> tuple[subprocess.Popen, str]:
    """Start the server as a separate process on ``port`` (0: a free one); wait for it to listen
    and return the process and its base URL. The caller ends it (``proc.kill()``)."""
    script = os.path.abspath(__file__)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(script)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, script, str(model_dir), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    line = box[0] if box else ""
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the tiny server did not start (exit code {proc.poll()}, said {line!r})")
    return proc, line.split()[1]


def serve_until_interrupted(start: Callable[[], Awaitable[Any]], *closers: Callable[[], Awaitable[Any]]) -> None:
    """Run ``await start()`` (a server with ``url`` and ``stop()``), print ``READY <url>`` and serve
    until interrupted; then stop the server and await each closer."""

    async def serve() -> None:
        server = await start()
        print(f"READY {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
            for close in closers:
                await close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    """Serve a transformers model folder until interrupted; prints ``READY <base_url>``."""
    parser = argparse.ArgumentParser(description="tiny OpenAI-compatible server over a transformers model")
    parser.add_argument("model_dir")
    parser.add_argument("--model-name", default="tiny")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--no-guided", action="store_true", help="ignore structured_outputs, like a server without it")
    args = parser.parse_args(argv)
    from proofcritic.llm._transformers import TransformersBackend

    backend = TransformersBackend(args.model_dir)
    backend.load()

    serve_until_interrupted(
        lambda: TinyOpenAIServer(
            backend, args.model_name, api_key=args.api_key, host=args.host, port=args.port, guided=not args.no_guided
        ).start(),
        backend.aclose,
    )


if __name__ == "__main__":
    main()
