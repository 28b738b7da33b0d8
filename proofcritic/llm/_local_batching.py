"""Micro-batching of a local backend: requests queued from event loops as jobs, taken in rounds
by one worker thread (:class:`JobQueue`, also the offline vLLM backend's), the rows a batch is
made of and the key that says which rows may share a batch, and the delivery of results (or
errors) back to the awaiting callers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import BackendError, ProofcriticError
from ._local_loading import import_torch
from ._types import ChatRequest, Completion


class BatchKey(NamedTuple):
    """What the rows of one ``model.generate`` call share: greedy decoding (``sample`` False,
    the other fields unused), or sampling with one temperature, top-p and seed (None: unseeded).
    Rows with a seed share a batch only with rows of the same seed (one RNG per batch)."""

    sample: bool
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


GREEDY = BatchKey(sample=False)


@dataclass
class Job:
    """One queued request and the future its caller awaits."""

    request: ChatRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    results: list[Completion | None] = field(default_factory=list)
    failed: bool = False


@dataclass
class Row:
    """One sequence to generate; its result fills ``slots`` of ``job.results``."""

    job: Job
    slots: list[int]
    prompt_ids: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    top_logprobs: int


def pad_rows(seqs: list[list[int]], pad_id: int, *, left: bool) -> tuple[Any, Any]:
    """Token lists as a padded ``(rows, width)`` id tensor and its attention mask."""
    torch = import_torch()
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[i, cols] = torch.tensor(seq, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def deliver(job: Any, result: Any = None, exc: BaseException | None = None) -> None:
    """Settle ``job.future`` with ``result`` or ``exc`` on the caller's loop (from any thread);
    ``job`` is any record with ``future`` and ``loop`` (the offline vLLM backend has its own)."""

    def settle() -> None:
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed; nobody is waiting
        pass


def fail(job: Job, exc: BaseException) -> None:
    """Fail a job once; unexpected exceptions become a (non-retryable) :class:`BackendError`."""
    if job.failed:
        return
    job.failed = True
    if isinstance(exc, Exception) and not isinstance(exc, ProofcriticError):
        wrapped = BackendError(f"local generation failed: {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        exc = wrapped
    deliver(job, exc=exc)


class JobQueue:
    """Jobs queued from event loops and run in rounds by one worker thread (micro-batching).

    A round waits ``wait_s`` for more work to arrive (skipped when ``full(pending)`` says enough
    is queued), takes every queued job whose future is still open and hands them to ``run``; a
    new round follows while work is left. Work given to ``worker()`` directly runs in the same
    thread, between rounds. Jobs need ``future`` and ``loop`` attributes (see ``deliver``).
    """

    def __init__(
        self,
        run: Callable[[list], None],
        *,
        wait_s: float,
        thread_name: str,
        full: Callable[[list], bool] | None = None,
    ):
        self.run = run
        self.wait_s = wait_s
        self.thread_name = thread_name
        self.full = full
        self._lock = threading.Lock()
        self._pending: list = []
        self._draining = False
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, jobs: list) -> None:
        with self._lock:
            self._pending.extend(jobs)
            if not self._draining and jobs:
                self._draining = True
                self._worker_locked().submit(self._drain)

    def worker(self) -> ThreadPoolExecutor:
        """The worker thread's executor (started on first use)."""
        with self._lock:
            return self._worker_locked()

    def _worker_locked(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        return self._executor

    def _drain(self) -> None:
        with self._lock:
            full = self.full is not None and self.full(self._pending)
        if not full:
            time.sleep(self.wait_s)
        with self._lock:
            jobs, self._pending = self._pending, []
        try:
            jobs = [j for j in jobs if not j.future.done()]
            if jobs:
                self.run(jobs)
        finally:
            with self._lock:
                if self._pending and self._executor is not None:
                    self._executor.submit(self._drain)  # queued behind any direct work
                else:
                    self._draining = False

    def shutdown(self) -> list:
        """Stop the worker after the work already given to it; returns the jobs that were
        queued but never taken (the caller fails them)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            if self._executor is not None:  # somebody restarted the worker meanwhile
                return []
            orphans, self._pending, self._draining = self._pending, [], False
        return orphans
