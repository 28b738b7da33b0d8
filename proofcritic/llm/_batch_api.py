"""Batch APIs: the requests a run needs, answered in bulk and put into the completion cache.

A run with a batch API (``--batch-api`` on ``grade``, ``label`` and ``eval grade``) goes in
stages. Each stage runs the command's work once with :class:`BatchCollector` in place of the
model's backend: a request the completion cache cannot answer is parked (recorded with the
cache slots :class:`~proofcritic.llm.Model` would fill, :data:`~proofcritic.llm._base.CACHE_SLOTS`)
and its call fails with :class:`BatchPending`, so nothing that depends on its answer is asked
in this stage. The parked requests are written as one JSONL request file (``custom_id``,
``method``, ``url`` ``/v1/chat/completions``, ``body`` as the online request would have it),
uploaded (``POST /files``, purpose ``batch``), submitted (``POST /batches``) and polled
(``GET /batches/{id}``); the output file (and the error file) is downloaded and each answer
put into the cache under the key and sample index the online call would have used. The next
stage finds those answers and parks what comes after them (label: the meta-verifications of
the analyses that report issues). A stage that parks nothing means the cache holds every
answer: the command then runs as usual, all from the cache, and writes the same records an
online run writes. Roles and pipelines know nothing of this; only the backend is swapped.

The state (each stage's request file, the batch id, its status, the failed requests) is kept
in a folder beside the output (``state.json``), so a stopped run polls its batch again instead
of submitting it twice. Failed requests (a request's error, or a batch that failed, expired or
was cancelled) are reported and retried: in the next batch (``retry="resubmit"``, up to
``attempts`` batches per request) or online (``retry="online"``); a request that failed in
``attempts`` batches fails its item (a backend error, which a rerun tries again).

The offline path writes the request file and stops (``mode="file"``); vLLM's batch runner
answers it (``python -m vllm.entrypoints.openai.run_batch -i FILE -o OUT --model M``), and the
next run imports ``OUT`` (``results=[OUT]``) before it goes on.

Read-outs by likelihood and guided choices are not batched: they go to the server online.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BackendError, InputError
from ._base import CACHE_SLOTS, Backend
from ._types import ChatMessage, ChatRequest, Completion

if TYPE_CHECKING:
    from ._model import Model
    from ._openai import OpenAIBackend

BatchRetry = Literal["resubmit", "online"]
BATCH_RETRIES: tuple[str, ...] = ("resubmit", "online")
#: a batch's states that end it (the others: validating, in_progress, finalizing, cancelling)
_ENDED = ("completed", "failed", "expired", "cancelled")
_ENDPOINT = "/v1/chat/completions"


class BatchPending(Exception):
    """A request parked for the next batch. Not a :class:`BackendError`: the Model neither
    retries it nor counts it as a request, and the item it belongs to is left for a later stage."""


def custom_id(key: str, slots: Sequence[int]) -> str:
    """The request's id in a batch file: the same for the same cache slots in every stage (so a
    request that failed is known again), short enough for every provider."""
    return "pc-" + hashlib.sha256(f"{key}:{','.join(map(str, slots))}".encode()).hexdigest()[:40]


@dataclass
class Parked:
    """A request parked by the collector: where its answers go in the cache, and the request."""

    key: str
    slots: tuple[int, ...]
    request: ChatRequest

    @property
    def id(self) -> str:
        return custom_id(self.key, self.slots)


class BatchCollector(Backend):
    """The model's backend during a stage: a generation the cache misses is parked and raises
    :class:`BatchPending`; requests in ``online`` (their custom ids) and those without cache
    slots, read-outs and guided choices go to ``inner`` at once; a request in ``gave_up`` fails
    with its last batch error (a non-retryable :class:`BackendError`). With ``park`` False (the
    usual run after the stages) a miss goes to ``inner`` too."""

    reports_requests = True  # the inner backend reports the online ones; parked ones are no request

    def __init__(
        self,
        inner: OpenAIBackend,
        *,
        online: set[str] | None = None,
        gave_up: dict[str, str] | None = None,
        park: bool = True,
    ):
        self.inner = inner
        self.park = park
        self.name = inner.name
        self.model = inner.model
        self.default_concurrency = inner.default_concurrency
        self.online = online or set()
        self.gave_up = gave_up or {}
        self.parked: dict[str, Parked] = {}
        self.online_calls = 0

    @property
    def supports_guided_choice(self) -> bool | None:
        return self.inner.supports_guided_choice

    @property
    def supports_likelihood(self) -> bool | None:
        return self.inner.supports_likelihood

    def cache_identity(self) -> str:
        return self.inner.cache_identity()

    def address(self) -> str:
        return self.inner.address()

    async def generate(self, request: ChatRequest) -> list[Completion]:
        slots = CACHE_SLOTS.get()
        if slots is None or request.config.choices:
            self.online_calls += 1
            return await self.inner.generate(request)
        parked = Parked(slots[0], slots[1], request)
        if parked.id in self.gave_up:
            raise BackendError(f"the request failed in the batch API: {self.gave_up[parked.id]}")
        if parked.id in self.online or not self.park:
            self.online_calls += 1
            return await self.inner.generate(request)
        self.parked.setdefault(parked.id, parked)
        raise BatchPending(f"request {parked.id} is waiting for a batch")

    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        return await self.inner.sequence_logprobs(messages, continuations)

    def endpoint_stats(self) -> list[dict[str, Any]]:
        return self.inner.endpoint_stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


def request_line(backend: OpenAIBackend, parked: Parked) -> dict[str, Any]:
    """One line of a batch request file: the body the online request would send."""
    config = parked.request.config
    body = backend._chat_body(parked.request.messages, config, config.n, config.seed)
    body["messages"] = list(body["messages"])
    return {"custom_id": parked.id, "method": "POST", "url": _ENDPOINT, "body": body}


@dataclass
class BatchOptions:
    """How a run uses the batch API (see the module).

    ``mode``: "api" submits each stage's requests and polls the batch; "file" writes the stage's
    request file and stops (the offline path), after importing ``results``. ``interval``: seconds
    between polls. ``retry``: failed requests go into the next batch ("resubmit") or to the
    server online ("online"); ``attempts``: batches a request may fail in before its item fails.
    """

    mode: Literal["api", "file"] = "api"
    interval: float = 30.0
    retry: BatchRetry = "resubmit"
    attempts: int = 3
    results: Sequence[Path] = ()
    completion_window: str = "24h"
    max_requests: int = 50_000
    """Requests per batch at most (OpenAI's limit); a stage with more is split into several
    batches, submitted together."""
    max_bytes: int = 190_000_000
    """Bytes per request file at most (OpenAI takes files up to 200 MB)."""


@dataclass
class BatchReport:
    """What the batches of a run did, for its closing line."""

    stages: int = 0
    batches: int = 0
    requests: int = 0
    answered: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    online: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        words = (
            f"batch API: {self.stages} stage(s), {self.requests} request(s) in {self.batches} batch(es), "
            f"{self.answered} answered, "
            f"{self.failed} failed; tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion"
        )
        if self.online:
            words += f"; {self.online} request(s) asked online"
        return words


class BatchClient:
    """The files and batches endpoints of an OpenAI-compatible server (``base_url`` ends in /v1)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 600):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self._session: Any = None

    async def _open(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def _request(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        import aiohttp

        session = await self._open()
        url = f"{self.base_url}{path}"
        try:
            async with session.request(method, url, **kwargs) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise BackendError(f"{what} failed: cannot reach {url} ({error!r})", retryable=True) from None
        if status >= 400:
            from ._openai import _server_message

            message = _server_message(body.decode("utf-8", "replace"))[0]
            hint = " (does this server offer the batch API?)" if status in (404, 405) else ""
            raise BackendError(
                f"{what} failed: {url} answered {status}: {message}{hint}", status=status, retryable=status >= 500
            )
        return body

    async def upload(self, path: Path) -> str:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        data = await asyncio.to_thread(path.read_bytes)
        form.add_field("file", data, filename=path.name, content_type="application/jsonl")
        answer = json.loads(await self._request("POST", "/files", what="uploading the batch file", data=form))
        return str(answer["id"])

    async def create(self, file_id: str, window: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {"input_file_id": file_id, "endpoint": _ENDPOINT, "completion_window": window, "metadata": metadata}
        return json.loads(await self._request("POST", "/batches", what="creating the batch", json=body))

    async def _get(self, path: str, what: str, attempts: int = 6) -> Any:
        """A GET, retried on a dropped connection or a 5xx (waits 1, 2, 4 ... s): a poll that
        runs for hours outlives a passing outage."""
        for attempt in range(1, attempts + 1):
            try:
                return await self._request("GET", path, what=what)
            except BackendError as error:
                if not error.retryable or attempt == attempts:
                    raise
                await asyncio.sleep(2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def get(self, batch_id: str) -> dict[str, Any]:
        return json.loads(await self._get(f"/batches/{batch_id}", f"polling batch {batch_id}"))

    async def content(self, file_id: str) -> bytes:
        return await self._get(f"/files/{file_id}/content", f"downloading file {file_id}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class BatchRun:
    """The stages of one run (see the module). ``folder``: where the state and the request
    files live (beside the output); ``say``: prints one progress line."""

    def __init__(self, model: Model, folder: Path, options: BatchOptions, say: Callable[[str], None]):
        from ._openai import OpenAIBackend

        if not isinstance(model.backend, OpenAIBackend):
            raise InputError(
                f"a batch API needs an OpenAI-compatible model (openai/, vllm/ or sglang/), not {model.name}"
            )
        if model.cache is None:
            raise InputError("a batch API puts its answers into the completion cache: drop --no-cache")
        self.model = model
        self.backend: OpenAIBackend = model.backend
        self.folder = folder
        self.options = options
        self.say = say
        self.report = BatchReport()
        self._rounds: set[int] = set()
        self.state_path = folder / "state.json"
        self.state: dict[str, Any] = self._load()

    # -- state --------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"model": self.backend.cache_identity(), "stages": [], "failures": {}}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(
                f"cannot read the batch state {self.state_path} ({error}); remove it to start over"
            ) from None
        if state.get("model") != self.backend.cache_identity():
            raise InputError(
                f"{self.state_path} holds batches of {state.get('model')}, not {self.backend.cache_identity()}: "
                "use the same model and --base-url, or remove the folder to start over"
            )
        return state

    def _save(self) -> None:
        from ..io import write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, self.state)

    def _ids(self) -> dict[str, tuple[str, list[int]]]:
        """custom_id -> (cache key, slots) over every stage's request map."""
        found: dict[str, tuple[str, list[int]]] = {}  # [key, slots] as JSON keeps them
        for stage in self.state["stages"]:
            mapping = self.folder / stage["map"]
            if mapping.exists():
                found.update(json.loads(mapping.read_text(encoding="utf-8")))
        return found

    # -- the stages -----------------------------------------------------------------------------
    async def prepare(self, collect: Callable[[], Awaitable[Any]]) -> bool:
        """Run stages until one parks nothing: True (the cache holds every answer: run the
        command as usual); False when the run stops here (``mode="file"``: a request file
        written, or one still waiting for its results). On True the model's backend is left a
        :class:`BatchCollector` that parks nothing, so that the usual run fails the requests that
        failed in too many batches and asks the failed ones online with ``retry="online"``."""
        usage = self.model.usage.model_copy()
        for failure in self.state["failures"].values():  # a new run gives up-on requests new batches
            if not failure.get("done") and failure["attempts"] >= self.options.attempts:
                failure["attempts"] = 0
        try:
            for path in self.options.results:
                self._import_file(path, None)
            while True:
                waiting = [s for s in self.state["stages"] if s["status"] != "imported"]
                if waiting:
                    if not await self._settle(waiting):
                        return False
                    continue
                parked = await self._collect(collect)
                if not parked:
                    self.model.backend = self._collector(park=False)
                    return True
                written = self._write_stage(parked)
                if self.options.mode == "file":
                    self._tell_file(written)
                    return False
        finally:
            # the stages' cache answers are not the run's: only requests sent online count
            self.model.usage.cached_calls = usage.cached_calls

    def _collector(self, park: bool) -> BatchCollector:
        failures = self.state["failures"]
        gave_up = {
            cid: f["error"]
            for cid, f in failures.items()
            if not f.get("done") and f["attempts"] >= self.options.attempts and self.options.retry == "resubmit"
        }
        online = {cid for cid, f in failures.items() if not f.get("done")} if self.options.retry == "online" else set()
        return BatchCollector(self.backend, online=online, gave_up=gave_up, park=park)

    async def _collect(self, collect: Callable[[], Awaitable[Any]]) -> list[Parked]:
        collector = self._collector(park=True)
        self.model.backend = collector
        try:
            await collect()
            await asyncio.sleep(0)  # calls started beside a failed one park too
        finally:
            self.model.backend = self.backend
        self.report.online += collector.online_calls
        return list(collector.parked.values())

    def _write_stage(self, parked: list[Parked]) -> list[dict[str, Any]]:
        """The stage's request file(s): one, or several when it holds more requests or bytes
        than one batch takes (``max_requests``, ``max_bytes``); each is a batch of its own."""
        number = max((s["stage"] for s in self.state["stages"]), default=0) + 1
        self.folder.mkdir(parents=True, exist_ok=True)
        parts: list[list[tuple[Parked, str]]] = [[]]
        size = 0
        for p in parked:
            line = json.dumps(request_line(self.backend, p), ensure_ascii=False) + "\n"
            length = len(line.encode("utf-8"))
            if parts[-1] and (len(parts[-1]) >= self.options.max_requests or size + length > self.options.max_bytes):
                parts.append([])
                size = 0
            parts[-1].append((p, line))
            size += length
        written = []
        for index, part in enumerate(parts, start=1):
            name = f"stage-{number}" if len(parts) == 1 else f"stage-{number}-part-{index}"
            requests = self.folder / f"{name}.requests.jsonl"
            requests.write_text("".join(line for _, line in part), encoding="utf-8")
            mapping = f"{name}.map.json"
            (self.folder / mapping).write_text(
                json.dumps({p.id: [p.key, list(p.slots)] for p, _ in part}), encoding="utf-8"
            )
            entry = {
                "stage": number,
                "requests": len(part),
                "file": requests.name,
                "map": mapping,
                "status": "written",
                "written_at": _now(),
            }
            if len(parts) > 1:
                entry["part"] = f"{index}/{len(parts)}"
            written.append(entry)
        self.state["stages"].extend(written)
        self._save()
        return written

    @staticmethod
    def _name(stage: dict[str, Any]) -> str:
        part = stage.get("part")
        return f"batch stage {stage['stage']}" + (f" (part {part})" if part else "")

    def _tell_file(self, stages: list[dict[str, Any]]) -> None:
        for stage in stages:
            path = self.folder / stage["file"]
            self.say(
                f"{self._name(stage)}: {stage['requests']} request(s) written to {path}; answer them (e.g. "
                f"python -m vllm.entrypoints.openai.run_batch -i {path} -o OUT.jsonl --model MODEL "
                f"--served-model-name {self.backend.model}), then rerun with --batch-results OUT.jsonl"
            )

    async def _settle(self, stages: list[dict[str, Any]]) -> bool:
        """Bring the batches not imported yet to ``imported``: submit those only written (all
        of them first), poll each, import its files (``mode="api"``); in file mode say what they
        wait for. False: stop here."""
        if self.options.mode == "file":
            self._tell_file(stages)
            return False
        client = BatchClient(self.backend.base_url, self.backend.api_key, self.backend.timeout)
        try:
            for stage in stages:
                if stage["status"] == "written":
                    file_id = await client.upload(self.folder / stage["file"])
                    batch = await client.create(
                        file_id, self.options.completion_window, {"proofcritic_stage": str(stage["stage"])}
                    )
                    stage.update(status="submitted", batch_id=batch["id"], input_file_id=file_id, submitted_at=_now())
                    self._save()
                    self.say(
                        f"{self._name(stage)}: submitted {stage['requests']} request(s) as batch {batch['id']} "
                        f"(state in {self.state_path}; a stopped run polls it again)"
                    )
                else:
                    self.say(f"{self._name(stage)}: polling batch {stage['batch_id']} submitted earlier")
            for stage in stages:
                batch = await self._poll(client, stage)
                await self._import_batch(client, stage, batch)
        finally:
            await client.aclose()
        return True

    async def _poll(self, client: BatchClient, stage: dict[str, Any]) -> dict[str, Any]:
        """Poll until the batch ends; a line when its status or counts change, else every 10 minutes."""
        started = time.monotonic()
        shown: tuple[Any, ...] = ()
        said = 0.0
        while True:
            batch = await client.get(stage["batch_id"])
            status = batch.get("status", "?")
            counts = batch.get("request_counts") or {}
            if status in _ENDED:
                return batch
            now = (status, counts.get("completed"), counts.get("failed"))
            if now == shown and time.monotonic() - said < 600:
                await asyncio.sleep(self.options.interval)
                continue
            shown, said = now, time.monotonic()
            self.say(
                f"{self._name(stage)} ({stage['batch_id']}): {status}, {counts.get('completed', 0)}/"
                f"{counts.get('total', stage['requests'])} done, {counts.get('failed', 0)} failed, "
                f"{time.monotonic() - started:.0f} s; next check in {self.options.interval:g} s"
            )
            await asyncio.sleep(self.options.interval)

    async def _import_batch(self, client: BatchClient, stage: dict[str, Any], batch: dict[str, Any]) -> None:
        status = batch.get("status")
        seen: set[str] = set()
        for kind in ("output_file_id", "error_file_id"):
            file_id = batch.get(kind)
            if file_id:
                path = self.folder / f"stage-{stage['stage']}.{kind.split('_')[0]}.jsonl"
                path.write_bytes(await client.content(file_id))
                seen |= self._import_file(path, stage)
        if status != "completed":
            errors = (batch.get("errors") or {}).get("data") or []
            why = "; ".join(str(e.get("message") or e.get("code")) for e in errors[:3]) or "no reason given"
            reason = f"batch {stage['batch_id']} {status} ({why})"
            self.say(f"{self._name(stage)}: {reason}")
            self.report.notes.append(reason)
        else:
            reason = f"batch {stage['batch_id']} completed without an answer for it"
        missing = [
            cid for cid in json.loads((self.folder / stage["map"]).read_text(encoding="utf-8")) if cid not in seen
        ]
        for cid in missing:
            self._failed(cid, reason, stage)
        stage.update(status="imported", batch_status=status, finished_at=_now())
        self._save()
        self._after_import(stage)

    def _after_import(self, stage: dict[str, Any]) -> None:
        self._rounds.add(stage["stage"])
        self.report.stages = len(self._rounds)
        self.report.batches += 1
        self.report.requests += stage["requests"]
        failed = stage.get("failed", 0)
        if failed:
            then = (
                "asked online in the next pass"
                if self.options.retry == "online"
                else f"resubmitted (each request up to {self.options.attempts} batches)"
            )
            self.say(
                f"{self._name(stage)}: {stage.get('answered', 0)} answered, {failed} failed "
                f"({stage.get('first_error', '')}); the failed ones are {then}"
            )
        else:
            self.say(f"{self._name(stage)}: {stage.get('answered', 0)} answered, put into the cache")

    def _failed(self, cid: str, error: str, stage: dict[str, Any] | None = None) -> None:
        entry = self.state["failures"].setdefault(cid, {"attempts": 0, "error": ""})
        entry.update(attempts=entry["attempts"] + 1, error=error, done=False)
        self.report.failed += 1
        if stage is not None:
            stage["failed"] = stage.get("failed", 0) + 1
            stage.setdefault("first_error", error)

    def _import_file(self, path: Path, stage: dict[str, Any] | None) -> set[str]:
        """Put the answers of a batch output (or error) file into the cache; returns the custom
        ids it held. ``stage`` None: a file given with ``--batch-results`` (its stage is found
        from its ids and marked imported)."""
        if not path.exists():
            raise InputError(f"batch results file not found: {path}")
        ids = self._ids()
        cache = self.model.cache
        assert cache is not None  # checked when made
        seen: set[str] = set()
        stages: set[int] = set()
        answered = 0
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{path}, line {number}: not a batch output line (JSON with a custom_id)") from None
            if cid not in ids:
                raise InputError(
                    f"{path}, line {number}: custom_id {cid!r} is in none of this run's request files "
                    f"({self.folder}); was the file made for another output?"
                )
            key, slots = ids[cid]
            seen.add(cid)
            owner = stage or self._stage_of(cid)
            if owner is not None:
                stages.add(owner["stage"])
            completions, error = self._answer(line, len(slots))
            if completions is None:
                self._failed(cid, error, owner)
                continue
            cache.put_samples(key, dict(zip(slots, completions)))
            answered += 1
            self.report.answered += 1
            self.report.prompt_tokens += completions[0].prompt_tokens
            self.report.completion_tokens += sum(c.completion_tokens for c in completions)
            if owner is not None:
                owner["answered"] = owner.get("answered", 0) + 1
            failure = self.state["failures"].get(cid)
            if failure is not None:
                failure["done"] = True
        cache.flush()
        if stage is None:  # --batch-results: the stages it answered are done
            for s in self.state["stages"]:
                if s["stage"] in stages and s["status"] != "imported":
                    answers = json.loads((self.folder / s["map"]).read_text(encoding="utf-8"))
                    for cid in answers:
                        if cid not in seen:
                            self._failed(cid, f"no answer in {path}", s)
                    s.update(status="imported", results=str(path), finished_at=_now())
                    self._after_import(s)
            self._save()
            self.say(f"imported {answered} answer(s) from {path}")
        return seen

    def _stage_of(self, cid: str) -> dict[str, Any] | None:
        for stage in reversed(self.state["stages"]):
            mapping = self.folder / stage["map"]
            if mapping.exists() and cid in json.loads(mapping.read_text(encoding="utf-8")):
                return stage
        return None

    def _answer(self, line: dict[str, Any], n: int) -> tuple[list[Completion] | None, str]:
        """The completions of one output line, or None and the error it reports."""
        response = line.get("response") or {}
        error = line.get("error")
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if error or status != 200 or not isinstance(body, dict):
            if isinstance(error, dict):
                words = error.get("message") or error.get("code") or json.dumps(error)
            elif error:
                words = str(error)
            else:
                from ._openai import _server_message

                words = f"status {status}: " + _server_message(json.dumps(body) if body is not None else "")[0]
            return None, " ".join(str(words).split())[:300]
        try:
            completions = self.backend._completions(body)
        except BackendError as exc:
            return None, str(exc)
        if len(completions) < n:
            return None, f"{len(completions)} of {n} samples answered"
        return completions[:n], ""
