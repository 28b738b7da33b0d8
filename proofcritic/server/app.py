"""The HTTP service: jobs (grade, solve, label) kept in sqlite, and the OpenAI-compatible facade.

``create_app(settings)`` builds the FastAPI application; ``proofcritic serve`` runs it under
uvicorn. Routes (all under ``/v1`` need ``Authorization: Bearer KEY`` when keys are configured):

- ``POST /v1/grade``, ``POST /v1/solve``, ``POST /v1/label``: accept a job (202, ``Location``
  header) that a worker runs through the Python API; ``GET /v1/jobs/{id}`` its state and
  result; ``GET /v1/jobs/{id}/events`` its progress as server-sent events; ``GET /v1/jobs``;
  ``DELETE /v1/jobs/{id}`` (or ``POST /v1/jobs/{id}/cancel``) cancels a queued or running job.
- ``POST /v1/chat/completions``, ``GET /v1/models``: see :mod:`proofcritic.server._facade`.
- ``GET /v1/stats``: job counts by state, upstream usage, per-endpoint counters, and the judge
  panel when one is configured (``serve --judge``; a grade request asks for it with ``"panel": true``).
- ``GET /health`` (never a key: for load balancers), ``GET /docs`` and ``GET /openapi.json``
  (behind the keys with ``protect_docs``).

Jobs live in the sqlite file: a job left queued or running when the service stopped (even by
``kill -9``) runs again when it starts, and the completion cache answers every model call
the earlier attempt had finished, so no finished work is paid for twice.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BackendError,
    ContextLengthError,
    InputError,
    first_error,
    validation_line,
)
from ..llm import Usage
from ._errors import ServiceError, error_body, input_error, openai_error
from ._facade import router as facade_router
from ._facade import upstream_message
from ._service import (
    REQUESTS,
    GradeRequest,
    GradingService,
    LabelRequest,
    SolveRequest,
    answers_usage,
    usage_json,
)
from .jobs import FINAL, STATUSES, JobStore
from .settings import ServerSettings

if TYPE_CHECKING:
    from ..pipelines import SolveResult
    from ..pipelines.label import LabelResult
    from ..pipelines.panel import PanelResult
    from ..types import GradeResult

log = logging.getLogger("proofcritic.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


#: the routes of the OpenAPI docs (behind the keys with ``protect_docs``)
DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


class Guard:
    """ASGI middleware: the API key on ``/v1`` routes (and on the docs with ``protect_docs``)
    (401), then the body size limit (413).

    A body announced by Content-Length over the limit is refused before it is read; a body
    sent without a length is read up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: Any, api_keys: list[str], max_body_bytes: int, protect_docs: bool = False):
        self.app = app
        self.keys = [k.encode() for k in api_keys]
        self.max = max_body_bytes
        self.protect_docs = protect_docs

    def _protected(self, path: str) -> bool:
        return path == "/v1" or path.startswith("/v1/") or (self.protect_docs and path in DOC_PATHS)

    async def _answer(
        self, send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _authorized(self, scope: Scope) -> bool:
        value = b""
        for name, header in scope.get("headers", ()):
            if name == b"authorization":
                value = header
                break
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        token = token.strip()
        return any(hmac.compare_digest(token, key) for key in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope.get("path", "")
        if self.keys and self._protected(path) and not self._authorized(scope):
            return await self._answer(
                send,
                401,
                error_body("Missing or incorrect API key: send 'Authorization: Bearer KEY'.", code="invalid_api_key"),
                [(b"www-authenticate", b'Bearer realm="proofcritic"')],
            )
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        too_large = error_body(
            f"The request body is larger than the limit of {self.max} bytes.", code="request_too_large"
        )
        if length is not None:
            try:
                if int(length) > self.max:
                    return await self._answer(send, 413, too_large)
            except ValueError:
                return await self._answer(send, 400, error_body("invalid Content-Length header"))
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0  # no length given: read the body here, within the limit
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max:
                return await self._answer(send, 413, too_large)
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class Notifier:
    """Wakes the event streams of a job when it records an event."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def waiter(self, job_id: str) -> asyncio.Event:
        """An event set by the next :meth:`notify` of this job. Take it BEFORE reading the store,
        so that an event recorded after the read cannot be missed."""
        return self._events.setdefault(job_id, asyncio.Event())


class JobRunner:
    """Workers that take job ids off a queue and run them, recording progress in the store.

    Each job runs in a task of its own, so that cancelling the job (:meth:`cancel`) stops it at
    its next await without touching the worker; stopping the service cancels the workers,
    which leaves their jobs ``running`` in the store, to run again at the next start.
    """

    def __init__(self, settings: ServerSettings, service: GradingService, store: JobStore, notifier: Notifier):
        self.settings, self.service, self.store, self.notifier = settings, service, store, notifier
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []
        self.running: dict[str, asyncio.Task] = {}
        self.usages: dict[str, Usage] = {}
        """The usage scope of each running job (its usage so far)."""
        self.stopping = False
        """Set by :meth:`stop` before it cancels the workers (a cancelled job leaves its worker running)."""

    def start(self) -> None:
        for job_id in self.store.requeue_unfinished():
            self.queue.put_nowait(job_id)
        self.tasks = [
            asyncio.create_task(self._worker(), name=f"job-worker-{i}") for i in range(self.settings.max_jobs)
        ]

    async def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def submit(self, job_id: str) -> None:
        self.queue.put_nowait(job_id)

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job: a queued one never runs, a running one stops at its next await. The job
        is ``cancelled`` in the store (its last event ``cancelled``, with the usage so far) before
        this returns. Returns the state the job was in (a final state: nothing changed), or None
        when there is no such job."""
        usage = self.usages.get(job_id)
        data = {"usage": usage_json(usage)} if usage is not None else {}
        previous = self.store.cancel(job_id, data)
        if previous in ("queued", "running"):
            task = self.running.get(job_id)
            if task is not None:
                task.cancel()
            self.notifier.notify(job_id)
        return previous

    def _event(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        self.store.add_event(job_id, type_, data)
        self.notifier.notify(job_id)

    async def _worker(self) -> None:
        while True:
            job_id = await self.queue.get()
            if job_id in self.running:
                continue
            task = asyncio.create_task(self.run(job_id), name=f"job-{job_id}")
            self.running[job_id] = task
            try:
                await task
            except asyncio.CancelledError:
                if self.stopping:
                    raise  # the service is stopping: the job stays "running" and is requeued at the next start
                # the job was cancelled (its state is already recorded); the worker goes on
            except Exception:  # a bug must not kill the worker
                log.exception("job %s crashed", job_id)
            finally:
                self.running.pop(job_id, None)

    async def run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job["status"] in FINAL:
            return
        kind = job["kind"]
        attempt = self.store.start(job_id)
        if attempt is None:  # cancelled while it waited
            return
        self.notifier.notify(job_id)
        usage = self.service.start_request()
        self.usages[job_id] = usage
        ticker = asyncio.create_task(self._tick(job_id, attempt, usage))
        try:
            request = REQUESTS[kind].model_validate(job["request"])
            result: GradeResult | LabelResult | SolveResult | PanelResult
            if isinstance(request, GradeRequest) and request.panel:
                result = await self.service.grade_with_panel(request)
            elif isinstance(request, GradeRequest):
                result = await self.service.grade(request)
            elif isinstance(request, LabelRequest):
                result = await self.service.label(request)
            else:
                assert isinstance(request, SolveRequest)

                rounds: list[int] = []

                def on_round(problem_id: str, round_: int, state: dict[str, Any]) -> None:
                    if not rounds or rounds[-1] != round_:  # one event per round started
                        rounds.append(round_)
                        self._event(job_id, "round", {"round": round_})

                state = self.settings.state_dir / job_id  # type: ignore[operator]
                result = await self.service.solve(request, state_dir=state, on_round=on_round)
            ticker.cancel()
            data = result.model_dump(mode="json")
            summary = {"attempt": attempt, "usage": usage_json(usage, answers_usage(result))}
            self.store.finish(job_id, data, summary)
            if kind == "solve":  # the state only served a resume; the result is in the store now
                shutil.rmtree(self.settings.state_dir / job_id, ignore_errors=True)  # type: ignore[operator]
        except asyncio.CancelledError:
            if kind == "solve" and self.store.status(job_id) == "cancelled":  # no resume will need it
                shutil.rmtree(self.settings.state_dir / job_id, ignore_errors=True)  # type: ignore[operator]
            raise
        except InputError as error:
            self.store.fail(job_id, str(error), "input")
        except ContextLengthError as error:
            self.store.fail(job_id, str(error), "context")
        except BackendError as error:
            self.store.fail(job_id, f"the upstream model failed: {upstream_message(error)}", "backend")
        except Exception as error:
            log.exception("job %s failed", job_id)
            self.store.fail(job_id, f"{type(error).__name__}: {error}", "internal")
        finally:
            ticker.cancel()
            self.usages.pop(job_id, None)
            self.service.settle(usage)
            self.notifier.notify(job_id)

    async def _tick(self, job_id: str, attempt: int, usage: Usage) -> None:
        """A ``usage`` event whenever the job's calls or tokens changed, at most once per interval."""
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            now = usage_json(usage)
            if now != last:
                self._event(job_id, "usage", {"attempt": attempt, **now})
                last = now


def _job_json(job: dict[str, Any], store: JobStore) -> dict[str, Any]:
    """The job with the upstream usage of its attempts (the final one exact, killed ones as last recorded)."""
    per_attempt: dict[int, dict[str, Any]] = {}
    for event in store.events_after(job["id"]):
        if event["type"] == "usage":
            per_attempt[event["data"].get("attempt", 0)] = event["data"]
        elif event["type"] == "cancelled" and "usage" in event["data"]:
            per_attempt[job["attempts"]] = event["data"]["usage"]
        elif event["type"] == "done":
            per_attempt[event["data"].get("attempt", 0)] = event["data"].get("usage", {})
    if per_attempt:
        keys = ("upstream_calls", "cached_calls", "prompt_tokens", "completion_tokens", "total_tokens")
        job["usage"] = {k: sum(int(u.get(k, 0)) for u in per_attempt.values()) for k in keys}
    return job


def _sse(event: dict[str, Any]) -> bytes:
    data = json.dumps({"job_id": event.get("job_id"), "time": event["time"], **event["data"]}, ensure_ascii=False)
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


def create_app(settings: ServerSettings) -> FastAPI:
    """The service as a FastAPI application (run it with uvicorn, or ``proofcritic serve``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = settings.model if settings.model is not None else settings.model_factory()  # type: ignore[misc]
        if settings.timeout is not None:
            model.set_timeout(settings.timeout)
        service = GradingService(
            model,
            prompts=settings.prompts,
            config=settings.config,
            score_mode=settings.score_mode,
            max_calls=settings.max_calls,
            max_tokens=settings.max_tokens,
            retry=settings.retry,
            max_input_chars=settings.max_input_chars,
            panel=settings.panel,
        )
        judges = service.judge_models()
        if settings.timeout is not None:
            for judge in judges:
                judge.set_timeout(settings.timeout)
        store = JobStore(settings.db_path)
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # type: ignore[union-attr]
        os.chmod(settings.state_dir, 0o700)  # type: ignore[arg-type]  # solve jobs' pools: proofs too
        notifier = Notifier()
        runner = JobRunner(settings, service, store, notifier)
        app.state.service, app.state.store, app.state.notifier, app.state.runner = service, store, notifier, runner
        app.state.started = time.time()
        runner.start()
        try:
            yield
        finally:
            await runner.stop()
            store.close()
            if settings.model is None:
                await model.aclose()
            for judge in judges:
                await judge.aclose()

    app = FastAPI(
        title="proofcritic",
        summary="Grade, critique and repair math proofs: jobs and an OpenAI-compatible facade.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(
        Guard, api_keys=settings.api_keys, max_body_bytes=settings.max_body_bytes, protect_docs=settings.protect_docs
    )

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        where = first_error(error, skip=("body",))[0] if error.errors() else ""
        message = validation_line(error, skip=("body",)) if error.errors() else "invalid request"
        return openai_error(400, message, param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return openai_error(error.status_code, str(error.detail), kind, headers=getattr(error, "headers", None))

    @app.api_route(
        "/health",
        methods=["GET", "HEAD"],
        tags=["service"],
        summary="Liveness for load balancers (no key needed; tells nothing about the jobs)",
    )
    async def health(request: Request) -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - request.app.state.started, 3)}

    @app.get(
        "/v1/stats",
        tags=["service"],
        summary="Job counts by state, upstream usage, and the upstream's per-endpoint counters",
    )
    async def stats(request: Request) -> dict[str, Any]:
        state = request.app.state
        service: GradingService = state.service
        counts = state.store.counts()
        jobs = {status: counts.get(status, 0) for status in STATUSES}
        jobs["total"] = sum(counts.values())
        upstream: dict[str, Any] = {"model": service.model.name, "usage": service.usage_totals()}
        local = service.model.backend.describe()
        if local is not None:  # a local model: its weight type and torch threads
            upstream["local"] = local
        endpoints = service.endpoint_stats()
        if endpoints is not None:
            upstream["endpoints"] = endpoints
        out: dict[str, Any] = {
            "object": "stats",
            "uptime_s": round(time.time() - state.started, 3),
            "jobs": jobs,
            "jobs_in_queue": state.runner.queue.qsize(),
            "upstream": upstream,
        }
        panel = service.panel_stats()
        if panel is not None:  # grade requests with "panel": true use it
            out["panel"] = panel
        return out

    def _submit(request: Request, kind: str, body: Any) -> JSONResponse:
        try:
            request.app.state.service.check(body)
        except InputError as error:
            raise input_error(error) from None
        state = request.app.state
        job = state.store.create(kind, body.model_dump(mode="json", exclude_defaults=False))
        state.runner.submit(job["id"])
        return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    @app.post("/v1/grade", status_code=202, tags=["jobs"], summary="Grade a proof (a job)")
    async def post_grade(body: GradeRequest, request: Request) -> JSONResponse:
        return _submit(request, "grade", body)

    @app.post("/v1/solve", status_code=202, tags=["jobs"], summary="Solve a problem with a strategy (a job)")
    async def post_solve(body: SolveRequest, request: Request) -> JSONResponse:
        return _submit(request, "solve", body)

    @app.post("/v1/label", status_code=202, tags=["jobs"], summary="Auto-label a proof (a job)")
    async def post_label(body: LabelRequest, request: Request) -> JSONResponse:
        return _submit(request, "label", body)

    @app.get("/v1/jobs", tags=["jobs"], summary="The newest jobs")
    async def list_jobs(
        request: Request,
        status: str | None = Query(None, pattern="^(queued|running|done|failed|cancelled)$"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        return {"object": "list", "data": request.app.state.store.list(status, limit)}

    def _get(request: Request, job_id: str) -> dict[str, Any]:
        job = request.app.state.store.get(job_id)
        if job is None:
            raise ServiceError(404, f"no job {job_id!r}", kind="not_found_error", code="job_not_found")
        return job

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], summary="A job: its state, request, result or error, and usage")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        return _job_json(_get(request, job_id), request.app.state.store)

    def _cancel(request: Request, job_id: str) -> dict[str, Any]:
        previous = request.app.state.runner.cancel(job_id)
        if previous is None:
            raise ServiceError(404, f"no job {job_id!r}", kind="not_found_error", code="job_not_found")
        if previous in FINAL:
            raise ServiceError(
                409,
                f"job {job_id!r} is already {previous}; only a queued or running job can be cancelled",
                code="job_finished",
            )
        return _job_json(_get(request, job_id), request.app.state.store)

    @app.delete(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        summary="Cancel a queued or running job (409 once it is done, failed or cancelled)",
    )
    async def delete_job(job_id: str, request: Request) -> dict[str, Any]:
        return _cancel(request, job_id)

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], summary="Cancel a queued or running job (as DELETE)")
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        return _cancel(request, job_id)

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        summary="A job's progress as server-sent events",
        response_class=StreamingResponse,
    )
    async def job_events(job_id: str, request: Request, after: int = Query(0, ge=0)) -> StreamingResponse:
        _get(request, job_id)
        store: JobStore = request.app.state.store
        notifier: Notifier = request.app.state.notifier
        last_id = request.headers.get("last-event-id")
        start = int(last_id) if last_id and last_id.isdigit() else after

        async def stream() -> AsyncIterator[bytes]:
            seq = start
            while True:
                waiter = notifier.waiter(job_id)
                final = store.status(job_id) in FINAL  # read before the events: the final event is among them
                for event in store.events_after(job_id, seq):
                    seq = event["seq"]
                    yield _sse({"job_id": job_id, **event})
                if final or await request.is_disconnected():
                    return
                try:
                    await asyncio.wait_for(waiter.wait(), 15.0)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    app.include_router(facade_router)
    if settings.review is not None:  # serve --review RUN: the review page beside the jobs
        from .review import mount_review

        mount_review(app, settings.review)
    return app
