"""The Model wrapper: retry policy, concurrency bound, cache reuse and usage accounting.

The backend here is a scripted test double of a model server; the wrapper under test is real.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import pytest

from proofcritic.errors import BackendError
from proofcritic.llm import (
    Backend,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionCache,
    GenerateConfig,
    Model,
    RetryPolicy,
)


class ScriptedBackend(Backend):
    name = "scripted"
    model = "echo"

    def __init__(self, failures: list[BackendError] | None = None, delay: float = 0.0):
        self.failures = list(failures or [])
        self.delay = delay
        self.calls: list[ChatRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def generate(self, request: ChatRequest) -> list[Completion]:
        self.calls.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures:
                raise self.failures.pop(0)
            text = request.messages[-1].content
            return [
                Completion(text=f"{text}#{len(self.calls)}.{i}", prompt_tokens=3, completion_tokens=2)
                for i in range(request.config.n)
            ]
        finally:
            self.in_flight -= 1


def _request(text: str = "hi", n: int = 1, **config) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], config=GenerateConfig(n=n, **config))


FAST = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=1.0, jitter=0.0)


async def test_retryable_errors_are_retried_then_succeed():
    backend = ScriptedBackend([BackendError("503", retryable=True), BackendError("reset", retryable=True)])
    model = Model(backend, retry=FAST)
    out = await model.generate(_request())
    assert len(backend.calls) == 3
    assert out[0].text.startswith("hi#3")
    assert (model.usage.calls, model.usage.failed_calls) == (3, 2)  # every request sent counts


async def test_non_retryable_error_is_raised_at_once():
    backend = ScriptedBackend([BackendError("bad request", retryable=False)])
    with pytest.raises(BackendError, match="bad request"):
        await Model(backend, retry=FAST).generate(_request())
    assert len(backend.calls) == 1


async def test_retries_exhausted_raise_the_last_error():
    backend = ScriptedBackend([BackendError(f"fail {i}", retryable=True) for i in range(10)])
    with pytest.raises(BackendError, match="fail 3"):
        await Model(backend, retry=FAST).generate(_request())
    assert len(backend.calls) == FAST.max_attempts


async def test_retry_after_is_honoured():
    backend = ScriptedBackend([BackendError("429", retryable=True, retry_after=0.3)])
    started = time.perf_counter()
    await Model(backend, retry=FAST).generate(_request())
    assert time.perf_counter() - started >= 0.29


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(initial_wait=1.0, max_wait=5.0, jitter=0.0)
    assert [policy.wait(a, None) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = RetryPolicy(initial_wait=1.0, jitter=0.5)
    waits = {round(jittered.wait(1, None), 6) for _ in range(20)}
    assert len(waits) > 1 and all(0.5 <= w <= 1.5 for w in waits)
    assert policy.wait(1, BackendError("x", retry_after=99)) == 5.0


async def test_concurrency_bound_is_respected():
    backend = ScriptedBackend(delay=0.02)
    model = Model(backend, max_concurrency=3)
    await model.generate_many([_request(str(i)) for i in range(12)])
    assert backend.max_in_flight == 3
    assert model.usage.calls == 12
    assert model.usage.prompt_tokens == 36


async def test_cache_serves_repeats_and_tops_up_samples(tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")
    backend = ScriptedBackend()
    model = Model(backend, cache=cache)
    first = await model.generate(_request(n=2, temperature=1.0))
    again = await model.generate(_request(n=2, temperature=1.0))
    assert [c.text for c in again] == [c.text for c in first]
    assert all(c.cached for c in again) and len(backend.calls) == 1
    more = await model.generate(_request(n=4, temperature=1.0))
    assert len(backend.calls) == 2 and backend.calls[-1].config.n == 2
    assert [c.text for c in more[:2]] == [c.text for c in first]
    other = await model.generate(_request(n=1, temperature=0.5))  # other settings, other key
    assert not other[0].cached and len(backend.calls) == 3
    assert model.usage.cached_calls == 1


def _writer(path: str, start: int) -> None:
    cache = CompletionCache(path)
    for i in range(start, start + 200):
        cache.put_samples(f"k{i}", {0: Completion(text=str(i))})


def test_cache_is_safe_across_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    CompletionCache(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 1000)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = CompletionCache(path)
    assert len(cache) == 600
    assert cache.get_samples("k1005", 1)[0].text == "1005"


async def test_budget_scope_stops_calls_and_charges_cached_ones(tmp_path):
    from proofcritic.budget import Budget, BudgetExceeded, budget_scope

    backend = ScriptedBackend()
    model = Model(backend, cache=CompletionCache(tmp_path / "c.sqlite"))
    run = Budget(max_calls=5, name="run")
    problem = run.child(max_calls=2)
    with budget_scope(problem):
        await model.generate(_request("a"))
        await model.generate(_request("a"))  # cached, but charged all the same
        with pytest.raises(BudgetExceeded, match="problem budget of 2 calls"):
            await model.generate(_request("b"))
    assert len(backend.calls) == 1 and problem.calls == 2 and run.calls == 2
    assert run.tokens == 2 * (3 + 2)
    other = run.child(max_tokens=5)
    with budget_scope(other):
        await model.generate(_request("c"))
        with pytest.raises(BudgetExceeded, match="5 tokens"):
            await model.generate(_request("d"))
    await model.generate(_request("e"))  # outside any scope nothing is limited
    assert run.calls == 3
