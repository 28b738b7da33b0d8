"""``Model``: one backend plus everything every backend needs once.

Retry (exponential backoff with jitter, honouring Retry-After), the completion cache,
the concurrency bound and usage accounting live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..budget import current_budget
from ..errors import BackendError, UnsupportedFeatureError
from ._base import Backend
from ._cache import CompletionCache
from ._types import ChatMessage, ChatRequest, Completion, GenerateConfig, Usage


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


class Model:
    """A backend with retry, cache, a concurrency bound and usage accounting.

    ``defaults`` are sampling settings applied under each request's own settings.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        cache: CompletionCache | None = None,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        defaults: GenerateConfig | None = None,
    ):
        self.backend = backend
        self.cache = cache
        self.max_concurrency = max_concurrency or backend.default_concurrency
        self.retry = retry or RetryPolicy()
        self.defaults = defaults or GenerateConfig()
        self.usage = Usage()
        #: set once the backend has said it cannot score text by likelihood
        self.likelihood_unsupported = False
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._identity = backend.cache_identity()

    @property
    def name(self) -> str:
        """``backend/model`` as users write it."""
        return f"{self.backend.name}/{self.backend.model}"

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(id(loop))
        if sem is None:
            sem = self._semaphores[id(loop)] = asyncio.Semaphore(self.max_concurrency)
        return sem

    async def _call(self, fn, *args):
        """Run ``fn(*args)`` under the concurrency bound, retrying retryable errors.

        The first attempt takes the fast path (no retry machinery is built per call: at 256
        calls in flight that bookkeeping was a quarter of the client's CPU time). A slot is
        released while waiting out a backoff, so a throttled call does not block others.
        """
        semaphore = self._semaphore()
        async with semaphore:
            try:
                return await fn(*args)
            except BackendError as error:
                if not error.retryable or self.retry.max_attempts <= 1:
                    raise
                last = error
        attempt = 1
        while True:
            await asyncio.sleep(self.retry.wait(attempt, last))
            attempt += 1
            async with semaphore:
                try:
                    return await fn(*args)
                except BackendError as error:
                    if not error.retryable or attempt >= self.retry.max_attempts:
                        error.add_note(f"(gave up after {attempt} attempts)")
                        raise
                    last = error

    # -- generation -------------------------------------------------------------------------
    async def generate(self, request: ChatRequest) -> list[Completion]:
        """``request.config.n`` completions, served from the cache where possible.

        The call is checked against, and charged to, the current budget scope (cached answers
        included, so that a resumed run makes the same decisions).
        """
        budget = current_budget()
        if budget is not None:
            budget.check()
        config = self.defaults.merge(request.config) if self.defaults.model_fields_set else request.config
        n = config.n
        if self.cache is None:
            out = await self._call(self.backend.generate, request if config is request.config else ChatRequest(messages=request.messages, config=config))
            self._account(out, calls=1)
        else:
            key = self.cache.request_key(self._identity, request.messages, config)
            out = self.cache.get_samples(key, n)  # type: ignore[assignment]
            missing = [i for i, s in enumerate(out) if s is None]
            if missing:
                sub = ChatRequest(messages=request.messages, config=config.model_copy(update={"n": len(missing)}))
                fresh = await self._call(self.backend.generate, sub)
                self._account(fresh, calls=1)
                self.cache.put_samples(key, dict(zip(missing, fresh)))
                for index, completion in zip(missing, fresh):
                    out[index] = completion
            else:
                self.usage.cached_calls += 1
        if budget is not None:
            tokens = (out[0].prompt_tokens if out else 0) + sum(c.completion_tokens for c in out)
            budget.charge(calls=1, tokens=tokens)
        return out

    async def generate_many(self, requests: Sequence[ChatRequest]) -> list[list[Completion]]:
        """Many requests at once (the backend batches them where it can)."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    def _account(self, completions: list[Completion], *, calls: int) -> None:
        usage = self.usage
        usage.calls += calls
        if completions:
            usage.prompt_tokens += completions[0].prompt_tokens
        for c in completions:
            usage.completion_tokens += c.completion_tokens

    # -- likelihood -------------------------------------------------------------------------
    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each continuation of the final assistant turn (see Backend)."""
        messages = list(messages)
        budget = current_budget()
        if budget is not None:
            budget.check()
            budget.charge(calls=1)
        try:
            return await self._cached_logprobs(messages, continuations)
        except UnsupportedFeatureError:
            self.likelihood_unsupported = True
            raise

    async def _cached_logprobs(self, messages: list[ChatMessage], continuations: Sequence[str]) -> list[float]:
        if self.cache is None:
            self.usage.calls += 1
            return list(await self._call(self.backend.sequence_logprobs, messages, list(continuations)))
        keys = [self.cache.logprob_key(self._identity, messages, c) for c in continuations]
        found = self.cache.get_many(keys)
        if len(found) == len(keys):
            self.usage.cached_calls += 1
            return [float(found[k]) for k in keys]
        self.usage.calls += 1
        values = list(await self._call(self.backend.sequence_logprobs, messages, list(continuations)))
        self.cache.put_many({k: repr(float(v)) for k, v in zip(keys, values)})
        return values

    async def aclose(self) -> None:
        await self.backend.aclose()
