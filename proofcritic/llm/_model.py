"""``Model``: one backend plus everything every backend needs once.

Retry (exponential backoff with jitter, honouring Retry-After), the circuit breaker, the
completion cache, the concurrency bound and usage accounting live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..budget import current_budget
from ..errors import (
    BackendError,
    CircuitOpenError,
    ContextLengthError,
    UnsupportedFeatureError,
    add_note,
)
from ._base import CACHE_SLOTS, REQUEST_SINK, Backend
from ._cache import CompletionCache
from ._types import ChatMessage, ChatRequest, Completion, GenerateConfig, Usage

#: numbers the calls, so a breaker shared by several Models tells their calls apart
_CALL_IDS = itertools.count(1)
_SCOPES: contextvars.ContextVar[tuple[Usage, ...]] = contextvars.ContextVar("proofcritic_usage_scopes", default=())


@contextmanager
def usage_scope() -> Iterator[Usage]:
    """Meter the model calls made inside the block (in any task started from it): the Usage it
    yields counts them as every :class:`Model`'s ``usage`` does (requests sent, failed ones
    and read-outs included; cache answers apart). Scopes nest; each one counts its calls."""
    usage = Usage()
    token = _SCOPES.set((*_SCOPES.get(), usage))
    try:
        yield usage
    finally:
        _SCOPES.reset(token)


@dataclass
class RetryPolicy:
    """How failed calls are retried. Only errors a backend marks ``retryable`` are retried."""

    max_attempts: int = 6
    """Attempts in all, the first included."""
    initial_wait: float = 1.0
    """Wait before the second attempt, in seconds; doubles each time."""
    max_wait: float = 60.0
    """Upper bound of one wait (a longer Retry-After is cut to it)."""
    jitter: float = 0.5
    """Each wait is multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(max(float(retry_after), 0.0), self.max_wait)
        base = min(self.initial_wait * (2 ** (attempt - 1)), self.max_wait)
        return base * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class CircuitBreaker:
    """Stops sending requests to a backend that fails every one of them.

    The rule: when the last ``threshold`` attempts (default 8) all failed with a retryable error
    (connection refused or dropped, timeout, 5xx, 429, a malformed or empty answer), with no
    answer in between, and they belong to at least ``min_calls`` (default 2) different calls,
    the breaker opens. One call's own retries never open it (it has at most
    ``RetryPolicy.max_attempts`` of them); several items failing in a row do. With several
    base URLs an attempt fails only once every endpoint has failed it, so the breaker opens
    only when all endpoints fail.

    While open, calls fail at once with :class:`~proofcritic.errors.CircuitOpenError` (no
    request), and calls waiting out a retry backoff wake up and fail too; a batch stops there
    and its rerun resumes. After ``cooldown`` seconds the breaker is half-open: the next call
    goes through as the one probe (the others still fail at once); an answer closes the
    breaker, a failure opens it again for twice as long (up to ``max_cooldown``). Any answer
    of the server (a success, or an error about the request itself such as a 400) resets the
    count. ``threshold`` 0 turns the breaker off. A breaker may be shared by several Models of
    one backend (the service gives each request its own Model).
    """

    def __init__(
        self,
        threshold: int = 8,
        *,
        min_calls: int = 2,
        cooldown: float = 10.0,
        max_cooldown: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if threshold < 0 or min_calls < 1:
            raise ValueError("threshold must be at least 0 and min_calls at least 1")
        self.threshold = threshold
        self.min_calls = min_calls
        self.cooldown = max(float(cooldown), 0.0)
        self.max_cooldown = max(float(max_cooldown), self.cooldown)
        self.clock = clock
        self.target = ""
        """What the requests go to, for the error message (the Model sets its backend's address)."""
        self.failures = 0
        """Attempts that failed in a row, since the last answer."""
        self.last_error: str | None = None
        self.trips = 0
        """Times the breaker opened without a successful probe in between (sets the cool-down)."""
        self.open_until: float | None = None
        self._opened_after = 0
        self._callers: set[int] = set()
        self._probing = False
        self._events: dict[int, asyncio.Event] = {}

    @property
    def state(self) -> str:
        """ "closed", "open" or "half-open"."""
        if self.open_until is None:
            return "closed"
        return "open" if self._probing or self.clock() < self.open_until else "half-open"

    def error(self) -> CircuitOpenError:
        """The error a call gets while the breaker is open."""
        last = " ".join((self.last_error or "no error message").split())
        if len(last) > 500:
            last = last[:497] + "..."
        return CircuitOpenError(
            f"circuit open: the last {self._opened_after} requests to {self.target or 'the model'} all failed; "
            f"no more requests are sent (a rerun resumes): {last}"
        )

    def admit(self) -> bool:
        """Before an attempt: raise :class:`CircuitOpenError` while open; True when this
        attempt is the half-open probe (it must be settled with :meth:`settle`)."""
        if self.open_until is None:
            return False
        if self._probing or self.clock() < self.open_until:
            raise self.error()
        self._probing = True
        return True

    def settle(self, caller: int, error: BaseException | None, probe: bool) -> None:
        """After an attempt of call number ``caller``: ``error`` None for an answer."""
        if probe:
            self._probing = False
        if error is None or (isinstance(error, BackendError) and not error.retryable and error.status is not None):
            self.failures = 0
            self._callers.clear()
            if self.open_until is not None:
                self._close()
            return
        if not isinstance(error, BackendError) or not error.retryable or isinstance(error, CircuitOpenError):
            return  # no news about the server (a refusal before any request, a cancellation)
        self.failures += 1
        self._callers.add(caller)
        self.last_error = str(error)
        if probe or (
            self.open_until is None
            and self.threshold
            and self.failures >= self.threshold
            and len(self._callers) >= self.min_calls
        ):
            self._open()

    def _open(self) -> None:
        self._opened_after = self.failures
        self.trips += 1
        wait = min(self.cooldown * 2 ** (self.trips - 1), self.max_cooldown)
        self.open_until = self.clock() + wait
        for event in self._events.values():
            event.set()

    def _close(self) -> None:
        self.open_until = None
        self.trips = 0
        self._events.clear()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a retry backoff), or less: until the breaker opens."""
        if self.open_until is not None:
            if self.state == "half-open":
                await asyncio.sleep(seconds)
            return  # open: the next admit fails at once
        loop = asyncio.get_running_loop()
        event = self._events.get(id(loop))
        if event is None:
            event = self._events[id(loop)] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except (asyncio.TimeoutError, TimeoutError):
            pass


def _generation_tokens(completions: list[Completion]) -> tuple[int, int]:
    """(prompt, completion) tokens of one request's completions (the prompt counted once)."""
    return (completions[0].prompt_tokens if completions else 0), sum(c.completion_tokens for c in completions)


class Model:
    """A backend with retry, a circuit breaker, cache, a concurrency bound and usage accounting.

    ``defaults`` are sampling settings applied under each request's own settings. ``breaker``:
    the :class:`CircuitBreaker` (default: a fresh one with its defaults; pass one to share it).
    ``usage`` counts what this Model sent (see :class:`~proofcritic.llm.Usage`).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        cache: CompletionCache | None = None,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        defaults: GenerateConfig | None = None,
        breaker: CircuitBreaker | None = None,
    ):
        self.backend = backend
        self.cache = cache
        self.max_concurrency = max_concurrency or backend.default_concurrency
        self.retry = retry or RetryPolicy()
        self.defaults = defaults or GenerateConfig()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        if not self.breaker.target:
            self.breaker.target = backend.address()
        self.usage = Usage()
        self.in_flight = 0
        """Attempts under way (sent, not yet answered or failed), for progress displays: a plain
        counter, as ``usage`` is, so that thousands of calls in flight contend for no lock."""
        #: set once the backend has said it cannot score text by likelihood; later read-outs
        #: then fail at once, without a request
        self.likelihood_unsupported = False
        self.likelihood_refusal = ""
        """The backend's words when it refused the likelihood read-out."""
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._identity = backend.cache_identity()

    @property
    def name(self) -> str:
        """``backend/model`` as users write it."""
        return f"{self.backend.name}/{self.backend.model}"

    @property
    def supports_guided_choice(self) -> bool | None:
        """The backend's :attr:`~proofcritic.llm.Backend.supports_guided_choice`."""
        return self.backend.supports_guided_choice

    @property
    def supports_likelihood(self) -> bool | None:
        """The backend's :attr:`~proofcritic.llm.Backend.supports_likelihood`, False once it
        has refused a read-out here."""
        return False if self.likelihood_unsupported else self.backend.supports_likelihood

    def set_timeout(self, seconds: float) -> None:
        """Bound each request of a server backend to ``seconds`` (a local backend has none)."""
        if seconds <= 0:
            raise ValueError("the timeout must be more than 0 seconds")
        if hasattr(self.backend, "timeout"):
            self.backend.timeout = float(seconds)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(id(loop))
        if sem is None:
            sem = self._semaphores[id(loop)] = asyncio.Semaphore(self.max_concurrency)
        return sem

    # -- accounting ---------------------------------------------------------------------------
    def _count(self, prompt_tokens: int, completion_tokens: int, failed: bool, readout: bool) -> None:
        """One request sent: into this Model's usage and every open :func:`usage_scope`."""
        for usage in (self.usage, *_SCOPES.get()):
            usage.calls += 1
            usage.prompt_tokens += prompt_tokens
            usage.completion_tokens += completion_tokens
            if failed:
                usage.failed_calls += 1
            if readout:
                usage.readout_calls += 1

    def _count_cached(self) -> None:
        for usage in (self.usage, *_SCOPES.get()):
            usage.cached_calls += 1

    async def _attempt(self, fn, args: tuple, readout: bool, tokens: Callable[[Any], tuple[int, int]] | None):
        """One attempt of ``fn(*args)``, its requests counted: by the backend itself where it
        reports them, else as one request with the tokens of what it returned. The attempt is
        in :attr:`in_flight` while it runs."""
        self.in_flight += 1
        try:
            return await self._counted_attempt(fn, args, readout, tokens)
        finally:
            self.in_flight -= 1

    async def _counted_attempt(self, fn, args: tuple, readout: bool, tokens: Callable[[Any], tuple[int, int]] | None):
        if self.backend.reports_requests:
            token = REQUEST_SINK.set(self._count)
            try:
                return await fn(*args)
            finally:
                REQUEST_SINK.reset(token)
        try:
            result = await fn(*args)
        except (UnsupportedFeatureError, ContextLengthError):
            raise  # refused before any model work
        except Exception:
            self._count(0, 0, True, readout)
            raise
        prompt, completion = tokens(result) if tokens is not None else (0, 0)
        self._count(prompt, completion, False, readout)
        return result

    async def _call(self, fn, *args, readout: bool = False, tokens: Callable[[Any], tuple[int, int]] | None = None):
        """Run ``fn(*args)`` under the concurrency bound and the circuit breaker, retrying
        retryable errors.

        A slot is released while waiting out a backoff, so a throttled call does not block
        others; a backoff ends early when the breaker opens (the call then fails at once).
        """
        semaphore = self._semaphore()
        breaker = self.breaker
        caller = next(_CALL_IDS)
        attempt = 0
        while True:
            attempt += 1
            if breaker.state == "open":
                raise breaker.error()
            async with semaphore:
                probe = breaker.admit()
                try:
                    result = await self._attempt(fn, args, readout, tokens)
                except BaseException as error:
                    breaker.settle(caller, error, probe)
                    if not isinstance(error, BackendError) or not error.retryable or attempt >= self.retry.max_attempts:
                        if isinstance(error, BackendError) and error.retryable and attempt > 1:
                            add_note(error, f"(gave up after {attempt} attempts)")
                        raise
                    last = error
                else:
                    breaker.settle(caller, None, probe)
                    return result
            await breaker.sleep(self.retry.wait(attempt, last))

    # -- generation -------------------------------------------------------------------------
    async def generate(self, request: ChatRequest, *, first: int = 0) -> list[Completion]:
        """``request.config.n`` completions, served from the cache where possible.

        ``first``: these are samples ``first`` .. ``first + n - 1`` of the request (cache slots,
        and with a ``seed`` the seed of sample i is ``seed + i``, as the one-sample-per-request
        path of the OpenAI backend and vLLM's ``n`` use), so drawing a request's samples in
        batches gives the samples one request of them all would (the adaptive pipelines).
        Samples asked again after some are cached are drawn the same way: the new request's
        seed is that of its first missing sample.

        The call is checked against, and charged to, the current budget scope (cached answers
        included, so that a resumed run makes the same decisions).
        """
        budget = current_budget()
        if budget is not None:
            budget.check()
        config = self.defaults.merge(request.config) if self.defaults.model_fields_set else request.config
        n = config.n
        if self.cache is None:
            if first and config.seed is not None:
                config = config.model_copy(update={"seed": config.seed + first})
            out = await self._call(
                self.backend.generate,
                request if config is request.config else ChatRequest(messages=request.messages, config=config),
                tokens=_generation_tokens,
            )
        else:
            key = self.cache.request_key(self._identity, request.messages, config)
            out = self.cache.get_samples(key, n, first)
            missing = [i for i, s in enumerate(out) if s is None]
            if missing:
                if len(missing) == n and not first:  # nothing cached: the request as it came (no copies)
                    sub = request if config is request.config else ChatRequest(messages=request.messages, config=config)
                else:
                    update: dict[str, int] = {"n": len(missing)}
                    if config.seed is not None:
                        update["seed"] = config.seed + first + missing[0]
                    sub = ChatRequest(messages=request.messages, config=config.model_copy(update=update))
                slots = CACHE_SLOTS.set((key, tuple(first + i for i in missing)))
                try:
                    fresh = await self._call(self.backend.generate, sub, tokens=_generation_tokens)
                finally:
                    CACHE_SLOTS.reset(slots)
                self.cache.put_samples(key, {first + i: c for i, c in zip(missing, fresh)})
                for index, completion in zip(missing, fresh):
                    out[index] = completion
            else:
                self._count_cached()
        if budget is not None:
            prompt, completion = _generation_tokens(out)
            budget.charge(calls=1, tokens=prompt + completion)
        return out

    async def generate_many(self, requests: Sequence[ChatRequest]) -> list[list[Completion]]:
        """Many requests at once (the backend batches them where it can)."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    # -- likelihood -------------------------------------------------------------------------
    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each continuation of the final assistant turn (see Backend).

        Once the backend has refused (:class:`UnsupportedFeatureError`), later calls fail at
        once with the same words, without a request and without a budget charge.
        """
        if self.likelihood_unsupported:
            raise UnsupportedFeatureError(self.likelihood_refusal or f"{self.name} cannot score text by likelihood")
        messages = list(messages)
        budget = current_budget()
        if budget is not None:
            budget.check()
            budget.charge(calls=1)
        try:
            return await self._cached_logprobs(messages, continuations)
        except UnsupportedFeatureError as error:
            self.likelihood_unsupported = True
            self.likelihood_refusal = str(error)
            raise

    async def _cached_logprobs(self, messages: list[ChatMessage], continuations: Sequence[str]) -> list[float]:
        if self.cache is None:
            return list(await self._call(self.backend.sequence_logprobs, messages, list(continuations), readout=True))
        keys = [self.cache.logprob_key(self._identity, messages, c) for c in continuations]
        found = self.cache.get_many(keys)
        if len(found) == len(keys):
            self._count_cached()
            return [float(found[k]) for k in keys]
        values = list(await self._call(self.backend.sequence_logprobs, messages, list(continuations), readout=True))
        self.cache.put_many({k: repr(float(v)) for k, v in zip(keys, values)})
        return values

    async def aclose(self) -> None:
        """Close the backend and commit the cache's buffered entries (the cache stays open: it
        may be shared)."""
        try:
            await self.backend.aclose()
        finally:
            if self.cache is not None:
                self.cache.flush()
