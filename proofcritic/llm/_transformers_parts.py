"""Pieces of the transformers backend that do not need its state: lazy imports, the queued
job and row records, padding, future delivery, and the per-row stopping and logprob hooks."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .._constants import DTYPES  # the weight types (--dtype), re-exported here
from ..errors import BackendError, MissingDependencyError, ProofcriticError
from ._types import ChatRequest, Completion

#: environment variable of the OpenMP runtime's wait policy, read once when torch loads it
OMP_WAIT_ENV = "OMP_WAIT_POLICY"
#: the wait policy in force when proofcritic imported torch (None: torch came from elsewhere)
_policy_at_import: str | None = None


def prefer_passive_wait() -> None:
    """Before torch is imported: ask OpenMP for threads that sleep while they wait instead of
    spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the variable is set), so that a thread that
    lost its core to another process does not stall the others (see :func:`default_threads`).
    Once torch is imported the policy is fixed and this does nothing."""
    if "torch" not in sys.modules:
        os.environ.setdefault(OMP_WAIT_ENV, "PASSIVE")


def _torch() -> Any:
    global _policy_at_import
    if "torch" not in sys.modules:
        prefer_passive_wait()
        _policy_at_import = os.environ[OMP_WAIT_ENV]
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "local") from exc
    return torch


def _transformers() -> Any:
    _torch()
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "local") from exc
    # loading is reported by proofcritic itself; transformers' own bars would clutter the output
    transformers.utils.logging.disable_progress_bar()
    return transformers


#: CPU flags (``/proc/cpuinfo``) of a native bfloat16 dot product: AVX512-BF16, AMX-BF16
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16), read from
    ``/proc/cpuinfo`` without importing torch; False where that file is missing (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(_BF16_FLAGS & set(line.partition(":")[2].split()))
    except OSError:
        pass
    return False


def check_dtype(dtype: Any) -> None:
    """Refuse a weight type that is not one of :data:`DTYPES` (None and a ``torch.dtype`` pass)."""
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def dtype_plan(dtype: Any, device: str) -> tuple[str, str]:
    """The weight types a local backend runs in: (generation, likelihood read-out and guided
    choice), as torch dtype names, or ``"stored"`` for the type the checkpoint was saved in.

    - None (the default): ``float32`` on a CPU (exact, and batched generation gives the same
      greedy texts as one request at a time), the stored type on a GPU;
    - ``float32`` / ``bfloat16`` / ``float16`` (or a ``torch.dtype``): that type for everything;
    - ``auto``: on a CPU, ``float32`` for generation and ``bfloat16`` for the read-out where the
      CPU has a native bfloat16 dot product (:func:`cpu_has_bf16`), else ``float32``; on a GPU,
      the stored type. Generation stays in float32 because bfloat16 barely speeds up decoding
      on a CPU and makes batched greedy texts differ from one-at-a-time ones; the read-out is
      one long forward pass (prefill), where bfloat16 is several times faster.
    """
    check_dtype(dtype)
    cpu = str(device).startswith("cpu")
    if dtype is None:
        return ("float32", "float32") if cpu else ("stored", "stored")
    if dtype == "auto":
        if not cpu:
            return "stored", "stored"
        return "float32", "bfloat16" if cpu_has_bf16() else "float32"
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    return name, name


def dtype_label(plan: tuple[str, str]) -> str:
    """``float32``, or ``float32 (read-out bfloat16)`` when the read-out runs in another type."""
    gen, score = plan
    return gen if gen == score else f"{gen} (read-out {score})"


#: environment variable read by the OpenMP runtime; a set value is the default thread count
OMP_THREADS_ENV = "OMP_NUM_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def omp_wait_passive() -> bool:
    """Whether torch's OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``): the
    policy proofcritic imported torch with, or will (PASSIVE unless the variable says otherwise);
    for a torch imported elsewhere, the variable's value now (the best guess)."""
    if "torch" not in sys.modules:
        policy = os.environ.get(OMP_WAIT_ENV, "PASSIVE")
    elif _policy_at_import is not None:
        policy = _policy_at_import
    else:
        policy = os.environ.get(OMP_WAIT_ENV, "")
    return policy.strip().upper() == "PASSIVE"


def default_threads() -> int:
    """The torch threads a local model on a CPU uses when none is given: ``OMP_NUM_THREADS``
    when it is set; else every CPU this process may use when OpenMP's threads wait passively
    (:func:`omp_wait_passive`: proofcritic imports torch with ``OMP_WAIT_POLICY=PASSIVE`` unless
    the variable is set), else half of them (at least 1).

    Why: with torch's own setting (every core, threads spinning while they wait) decoding
    collapses as soon as another busy process shares the machine: each operation waits for its
    slowest thread, and the spinning threads keep the one that lost its core from running (on 2
    cores beside one busy process, 2 threads decoded at 5.0 tokens/s where 1 thread kept 14.4).
    Passive waiting keeps every core's speed on an idle machine and does not collapse beside a
    busy process (2 threads: 13.9 and 12.4 tokens/s); where torch was imported with spinning
    threads, half the cores leave room for a second process. ``perf/local_speed.py`` measures
    all three."""
    raw = os.environ.get(OMP_THREADS_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    cpus = usable_cpus()
    return cpus if omp_wait_passive() else max(1, cpus // 2)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Any:
    """Run the block with torch's intra-op thread count set to ``threads`` (None: unchanged),
    and put the previous count back after it. The count is process-global in torch: two local
    models running at the same moment in one process share whichever count was set last."""
    if not threads:
        yield
        return
    torch = _torch()
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


def _cache_keyword(model: Any) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` in transformers 5.x
    (which deprecates ``past_key_values`` with a FutureWarning on every call), else
    ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class _Job:
    """One queued request and the future its caller awaits."""

    request: ChatRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    results: list[Completion | None] = field(default_factory=list)
    failed: bool = False


@dataclass
class _Row:
    """One sequence to generate; its result fills ``slots`` of ``job.results``."""

    job: _Job
    slots: list[int]
    prompt_ids: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    top_logprobs: int



def _pad(seqs: list[list[int]], pad_id: int, *, left: bool) -> tuple[Any, Any]:
    """Token lists as a padded ``(rows, width)`` id tensor and its attention mask."""
    torch = _torch()
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[i, cols] = torch.tensor(seq, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def _looks_like_path(spec: str) -> bool:
    """Whether a missing ``spec`` was meant as a path rather than a hub id like "org/name"."""
    return (
        os.path.isabs(spec)
        or spec.startswith((".", "~"))
        or "\\" in spec
        or spec.count("/") > 1
        or spec.endswith("/")
    )


def _deliver(job: _Job, result: Any = None, exc: BaseException | None = None) -> None:
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


def _fail(job: _Job, exc: BaseException) -> None:
    """Fail a job once; unexpected exceptions become a (non-retryable) :class:`BackendError`."""
    if job.failed:
        return
    job.failed = True
    if isinstance(exc, Exception) and not isinstance(exc, ProofcriticError):
        wrapped = BackendError(f"local generation failed: {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        exc = wrapped
    _deliver(job, exc=exc)


class _RowStopper:
    """Stopping criterion with per-row limits: each row's own max_tokens, stop strings and EOS.

    ``done_at[i]`` is the number of generated tokens of row ``i`` when it finished.
    """

    def __init__(self, rows: list[_Row], width: int, tokenizer: Any, eos_ids: set[int]):
        self.rows, self.width, self.tokenizer, self.eos_ids = rows, width, tokenizer, eos_ids
        self.done_at: list[int | None] = [None] * len(rows)
        # enough tokens to contain any stop string ending in the newest token
        self.window = [2 * max((len(s) for s in r.stop), default=0) + 8 for r in rows]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        torch = _torch()
        generated = input_ids.shape[1] - self.width
        last = input_ids[:, -1].tolist()
        for i, row in enumerate(self.rows):
            if self.done_at[i] is not None:
                continue
            if last[i] in self.eos_ids or generated >= row.max_tokens:
                self.done_at[i] = generated
            elif row.stop:
                tail = input_ids[i, max(self.width, input_ids.shape[1] - self.window[i]) :].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                if any(s in text for s in row.stop):
                    self.done_at[i] = generated
        done = [d is not None for d in self.done_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _LogprobRecorder:
    """Logits processor that records the log-probability of each chosen token (and the top-k).

    It sees the model's logits before temperature / top-p, so the values are the model's own
    distribution. The token chosen at step t is only known at step t+1 (or from the output).
    """

    def __init__(self, width: int, k: int):
        self.width, self.k = width, k
        self.prev: Any = None
        self.chosen: list[Any] = []
        self.top_vals: list[Any] = []
        self.top_idx: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = _torch()
        if input_ids.shape[1] > self.width:
            self._take(input_ids[:, -1])
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        if self.k > 0:
            vals, idx = self.prev.topk(self.k, dim=-1)
            self.top_vals.append(vals.cpu())
            self.top_idx.append(idx.cpu())
        return scores

    def _take(self, tokens: Any) -> None:
        self.chosen.append(self.prev.gather(1, tokens[:, None].to(self.prev.device)).squeeze(1).cpu())

    def finish(self, sequences: Any) -> tuple[list[list[float]], tuple[list, list] | None]:
        """Chosen logprobs as ``[step][row]``, and top-k as ``([step][row][k], [step][row][k])``."""
        torch = _torch()
        if self.prev is not None and len(self.chosen) < sequences.shape[1] - self.width:
            self._take(sequences[:, self.width + len(self.chosen)])
        chosen = torch.stack(self.chosen).tolist() if self.chosen else []
        tops = (torch.stack(self.top_vals).tolist(), torch.stack(self.top_idx).tolist()) if self.k > 0 else None
        return chosen, tops


class JobQueue:
    """Jobs queued from event loops and run in rounds by one worker thread (micro-batching).

    A round waits ``wait_s`` for more work to arrive (skipped when ``full(pending)`` says enough
    is queued), takes every queued job whose future is still open and hands them to ``run``; a
    new round follows while work is left. Work given to ``worker()`` directly runs in the same
    thread, between rounds. Jobs need ``future`` and ``loop`` attributes (see ``_deliver``).
    """

    def __init__(self, run: Callable[[list], None], *, wait_s: float, thread_name: str,
                 full: Callable[[list], bool] | None = None):
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
