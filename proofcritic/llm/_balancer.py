"""Spread requests over several replicas of one model: least outstanding requests, ejection of a
failing endpoint for a cool-down, health checks before it returns, and re-routing of a failed
attempt to another endpoint.

Where retry lives: :class:`~proofcritic.llm.Model` owns retry and backoff. The balancer only
re-routes: an attempt that failed on one endpoint (connection error, timeout, 5xx, 429, a
malformed answer) is sent at once to another endpoint not yet tried for this call, at most once
per endpoint. When every endpoint has been tried, or none is up, the call ends with a retryable
:class:`~proofcritic.errors.BackendError` and the Model's backoff decides when to try again
(``retry_after`` is the time until the next endpoint may come back, when none is up). So one
Model attempt costs at most one request per endpoint, and a dead replica costs no Model retry
while another one is up.

Ejection: a connection error, timeout, 5xx or malformed answer ejects the endpoint for a
cool-down that doubles with every ejection in a row (``cooldown``, 2 x, 4 x ... up to
``max_cooldown``); a 429 re-routes without ejecting (the server is alive, only busy). When the
cool-down has passed, a health check (the backend's ``probe``: ``GET /models``, or ``/health``)
runs in the background; the endpoint takes requests again only once it answers. A request that
succeeds resets the doubling. With a single endpoint nothing is ever ejected: there is nowhere
else to go, and the Model's backoff already spaces the retries.

Choice (``routing``):

* ``"least-loaded"``: the healthy endpoint with the fewest requests in flight; ties go round-robin.
* ``"prefix"``: requests that share a prompt prefix go to the same endpoint while its load allows,
  so that its prefix cache (vLLM's automatic prefix caching, SGLang's radix cache) holds the
  prefix once instead of on every replica. A request's key is :func:`prefix_key`: a hash of its
  messages up to and including the first user message. Each endpoint ranks the keys by
  rendezvous hashing (highest-random-weight: the endpoints in the order of a hash of key and
  URL, so removing or adding one moves only the keys it held), and the request goes to the first
  endpoint in that order that is healthy, not yet tried for this call, and has fewer requests in
  flight than ``ceil((1 + epsilon) x (in flight + 1) / endpoints)`` over those candidates
  (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018): a busy home
  spills its overflow to the next endpoint of the key's order, not to a random one, and no
  endpoint holds more than about (1 + epsilon) times the mean. Some endpoint is always below
  the bound, so the choice never fails while one candidate is left. A request without a key
  (none given) is routed least-loaded. Ejection, health checks and re-routing are the same in
  both modes: an ejected endpoint is skipped and its keys go to their next endpoint.

Why this key: the verifications of one proof share one prompt (system prompt + problem +
proof + rubric), which is their first user message; different proofs have different ones; a
conversation (the agent's turns, a read-out continuing an answer) keeps its first user message
on every turn, so all its requests follow the replica that holds its earlier turns. A key of the
first N characters would not work for the built-in templates: they put a common header and the
problem before the proof, so a short N keys every proof of a problem alike and a long one is the
whole prompt anyway. Two templates over the same proof (verification and meta-verification) are keyed apart,
which costs no cache: each template opens with its own instructions, so their prompts share
almost no prefix.

Per endpoint, ``prefix_hits`` counts the requests whose key had been sent to that endpoint
before (the keys of the last :data:`REMEMBERED_KEYS` keyed requests are remembered), in both
modes: the share of requests that could find their prefix in the replica's cache.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .._constants import DEFAULT_ROUTING, DEFAULT_ROUTING_EPSILON, ROUTINGS, RoutingKind
from ..errors import BackendError, add_note

T = TypeVar("T")


@dataclass
class Endpoint:
    """One replica and its counters."""

    url: str
    requests: int = 0
    """Attempts sent to this endpoint (re-routed attempts count where they were sent)."""
    successes: int = 0
    failures: int = 0
    """Attempts that failed here with an endpoint failure (connection, timeout, 5xx, 429, malformed)."""
    rejected: int = 0
    """Attempts the endpoint answered with an error about the request itself (4xx); not re-routed.
    ``requests == successes + failures + rejected + in_flight``."""
    ejections: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    probes: int = 0
    probe_failures: int = 0
    prefix_hits: int = 0
    """Keyed requests sent here whose prefix key had been sent here before (see module)."""
    down_until: float | None = None
    """While ejected: when the cool-down ends (``time.monotonic``); None while up."""
    streak: int = 0
    """Ejections in a row without a successful request in between (sets the cool-down)."""
    failing: int = 0
    """Endpoint failures in a row: attempts since the endpoint last answered (0: it answered last)."""
    last_error: str | None = None
    _probe: Any = None  # the running health check task, if any

    @property
    def healthy(self) -> bool:
        """In rotation (not ejected). A lone endpoint is never ejected: see :meth:`state`."""
        return self.down_until is None

    def state(self) -> str:
        """What the requests say about the endpoint: "unused" (none sent yet), "up" (it answered
        the latest one), "down" (the latest one failed: ``failing`` in a row), or "out" (ejected,
        waiting for its cool-down and health check)."""
        if self.down_until is not None:
            return "out"
        if self.failing:
            return "down"
        return "up" if self.requests else "unused"

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The counters as a plain dict (for run summaries and JSON)."""
        now = time.monotonic() if now is None else now
        return {
            "url": self.url,
            "healthy": self.healthy,
            "state": self.state(),
            "failing": self.failing,
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "rejected": self.rejected,
            "ejections": self.ejections,
            "in_flight": self.in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "probes": self.probes,
            "probe_failures": self.probe_failures,
            "prefix_hits": self.prefix_hits,
            "down_for_s": None if self.down_until is None else round(max(self.down_until - now, 0.0), 3),
            "last_error": self.last_error,
        }


def is_endpoint_failure(error: BackendError) -> bool:
    """Whether a failed attempt says something about the endpoint rather than the request:
    retryable errors (connection, timeout, 5xx, 429, malformed answers)."""
    return error.retryable


def ejects(error: BackendError) -> bool:
    """Whether the failure takes the endpoint out of rotation (all endpoint failures but 429)."""
    return error.retryable and error.status != 429


#: keyed requests whose keys the balancer remembers for ``prefix_hits`` (about 100 bytes each)
REMEMBERED_KEYS = 65536
_MASK64 = (1 << 64) - 1


def prefix_key(messages: Sequence[Any]) -> int:
    """The routing key of a chat request's ``messages`` (dicts with ``role`` and ``content``, or
    objects with those attributes): a 64-bit hash (CRC-32 and Adler-32 side by side: a few
    microseconds for a long prompt, and the same in every process) of the messages up to and
    including the first user message (all of them when none is a user message). Not
    cryptographic: a key only chooses a replica. See the module for why this prefix."""
    crc, adler = 0, 1
    for message in messages:
        if isinstance(message, dict):
            role, content = message.get("role"), message.get("content")
        else:
            role, content = getattr(message, "role", None), getattr(message, "content", None)
        text = (content if isinstance(content, str) else str(content)).encode("utf-8", "surrogatepass")
        head = f"{role}\0{len(text)}\0".encode()
        crc = zlib.crc32(text, zlib.crc32(head, crc))
        adler = zlib.adler32(text, zlib.adler32(head, adler))
        if role == "user":
            break
    return crc << 32 | adler


def _weight(key: int, seed: int) -> int:
    """The rendezvous weight of ``key`` on the endpoint of ``seed`` (splitmix64's finaliser of
    their combination: a well-mixed 64-bit number, the same in every process)."""
    z = (key ^ seed) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def split_base_urls(value: str | Sequence[str] | None) -> list[str]:
    """Base URLs from a string (comma-separated) or a list of strings; duplicates dropped."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    urls: list[str] = []
    for item in items:
        for part in str(item).split(","):
            url = part.strip().rstrip("/")
            if url and url not in urls:
                urls.append(url)
    return urls


class Balancer:
    """Balancer over ``urls``: least outstanding requests, or prefix affinity with bounded
    loads (``routing``, ``epsilon``; see the module).

    ``probe(endpoint)`` is the health check: True when the endpoint answers. ``clock`` is
    ``time.monotonic`` (injectable for tests of the cool-down arithmetic).
    """

    def __init__(
        self,
        urls: Sequence[str],
        probe: Callable[[Endpoint], Awaitable[bool]],
        *,
        cooldown: float = 1.0,
        max_cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        routing: RoutingKind = DEFAULT_ROUTING,
        epsilon: float = DEFAULT_ROUTING_EPSILON,
    ):
        if not urls:
            raise ValueError("at least one endpoint is needed")
        if len(set(urls)) != len(urls):
            raise ValueError(f"an endpoint is given twice: {list(urls)}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, not {routing!r}")
        if not float(epsilon) >= 0:
            raise ValueError(f"epsilon must be 0 or more, not {epsilon!r}")
        self.routing = routing
        self.epsilon = float(epsilon)
        """The load bound of prefix routing: an endpoint takes a keyed request while its requests
        in flight are below ``ceil((1 + epsilon) x (in flight + 1) / candidates)``."""
        self.endpoints = [Endpoint(u) for u in urls]
        self._seeds = [prefix_key([{"role": "endpoint", "content": u}]) for u in urls]
        self._seen: OrderedDict[int, int] = OrderedDict()  # key -> bit mask of the endpoints sent it
        self.probe = probe
        self.cooldown = max(float(cooldown), 0.0)
        self.max_cooldown = max(float(max_cooldown), self.cooldown)
        self.clock = clock
        self._rr = 0
        self._tasks: set[asyncio.Task] = set()

    # -- state --------------------------------------------------------------------------------
    def cooldown_for(self, streak: int) -> float:
        """Cool-down after the ``streak``-th ejection in a row (1-based)."""
        return min(self.cooldown * (2 ** max(streak - 1, 0)), self.max_cooldown)

    def eject(self, endpoint: Endpoint, reason: str) -> None:
        """Take ``endpoint`` out of rotation (no-op when it is already out or is the only one)."""
        endpoint.last_error = reason
        if len(self.endpoints) == 1 or not endpoint.healthy:
            return
        endpoint.ejections += 1
        endpoint.streak += 1
        endpoint.down_until = self.clock() + self.cooldown_for(endpoint.streak)

    def _restore(self, endpoint: Endpoint) -> None:
        endpoint.down_until = None

    def _due(self, endpoint: Endpoint, now: float) -> bool:
        """Ejected, cool-down over, no health check running."""
        return endpoint.down_until is not None and endpoint.down_until <= now and endpoint._probe is None

    async def _check(self, endpoint: Endpoint) -> bool:
        """One health check; restores the endpoint or starts a longer cool-down."""
        endpoint.probes += 1
        try:
            ok = await self.probe(endpoint)
        except Exception as exc:  # noqa: BLE001 - any failure of the check means "not up"
            ok = False
            endpoint.last_error = f"health check failed: {type(exc).__name__}: {exc}"
        if ok:
            self._restore(endpoint)
        else:
            endpoint.probe_failures += 1
            endpoint.streak += 1
            endpoint.down_until = self.clock() + self.cooldown_for(endpoint.streak)
        return ok

    def _start_check(self, endpoint: Endpoint) -> asyncio.Task:
        task = endpoint._probe
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return task

        async def run() -> bool:
            try:
                return await self._check(endpoint)
            finally:
                endpoint._probe = None

        task = endpoint._probe = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def keyed(self) -> bool:
        """Whether requests should carry a :func:`prefix_key`: with several endpoints (for the
        routing, or for ``prefix_hits`` under least-loaded routing)."""
        return len(self.endpoints) > 1

    def pick(self, exclude: set[int] = frozenset(), key: int | None = None) -> Endpoint | None:  # type: ignore[assignment]
        """The endpoint for a request (index not in ``exclude``); starts the health checks that
        are due. Least-loaded (or without ``key``): the healthy endpoint with the fewest requests
        in flight, ties to the next in round-robin order. Prefix routing: the first healthy
        endpoint in ``key``'s rendezvous order below the load bound (see the module)."""
        if key is not None and self.routing == "prefix":
            return self._pick_by_key(exclude, key)
        now = self.clock()
        count = len(self.endpoints)
        start = self._rr
        self._rr = (self._rr + 1) % count
        best: Endpoint | None = None
        for k in range(count):
            index = (start + k) % count
            endpoint = self.endpoints[index]
            if self._due(endpoint, now):
                self._start_check(endpoint)
            if index in exclude or not endpoint.healthy:
                continue
            if best is None or endpoint.in_flight < best.in_flight:
                best = endpoint
        return best

    def _pick_by_key(self, exclude: set[int], key: int) -> Endpoint | None:
        now = self.clock()
        candidates: list[tuple[int, Endpoint]] = []
        load = 0
        for index, endpoint in enumerate(self.endpoints):
            if self._due(endpoint, now):
                self._start_check(endpoint)
            if index in exclude or not endpoint.healthy:
                continue
            candidates.append((_weight(key, self._seeds[index]), endpoint))
            load += endpoint.in_flight
        if not candidates:
            return None
        bound = math.ceil((1.0 + self.epsilon) * (load + 1) / len(candidates))
        candidates.sort(key=lambda pair: pair[0], reverse=True)
        for _, endpoint in candidates:
            if endpoint.in_flight < bound:
                return endpoint
        return min((e for _, e in candidates), key=lambda e: e.in_flight)  # not reached: the mean is below the bound

    def _note_key(self, index: int, key: int) -> None:
        """Count a prefix hit when ``key`` was sent to endpoint ``index`` before; remember it."""
        seen = self._seen
        mask = seen.pop(key, 0)
        if mask >> index & 1:
            self.endpoints[index].prefix_hits += 1
        seen[key] = mask | (1 << index)
        if len(seen) > REMEMBERED_KEYS:
            seen.popitem(last=False)

    # -- calls ----------------------------------------------------------------------------------
    async def call(self, fn: Callable[[Endpoint], Awaitable[T]], key: int | None = None) -> T:
        """Run ``fn(endpoint)`` on the best endpoint, re-routing endpoint failures (see module).
        ``key``: the request's :func:`prefix_key` (None: routed least-loaded, no prefix hit counted)."""
        tried: set[int] = set()
        last: BackendError | None = None
        while True:
            endpoint = self.pick(tried, key)
            if endpoint is None and not tried:
                endpoint = await self._revive(key)
            if endpoint is None:
                if last is not None:
                    if len(tried) > 1:
                        add_note(
                            last,
                            f"(tried {len(tried)} endpoints: {', '.join(self.endpoints[i].url for i in sorted(tried))})",
                        )
                    raise last
                raise self._all_down()
            index = self.endpoints.index(endpoint)
            tried.add(index)
            if key is not None:
                self._note_key(index, key)
            endpoint.requests += 1
            endpoint.in_flight += 1
            try:
                result = await fn(endpoint)
            except BackendError as error:
                if not is_endpoint_failure(error):
                    endpoint.rejected += 1
                    endpoint.failing = 0  # it answered: the request itself was refused
                    raise
                endpoint.failures += 1
                endpoint.failing += 1
                if ejects(error):
                    self.eject(endpoint, str(error))
                else:
                    endpoint.last_error = str(error)
                last = error
                continue
            except BaseException as error:  # a refusal the caller handles itself, or a cancellation
                endpoint.rejected += 1
                if not isinstance(error, asyncio.CancelledError):
                    endpoint.failing = 0
                raise
            finally:
                endpoint.in_flight -= 1
            endpoint.successes += 1
            endpoint.streak = 0
            endpoint.failing = 0
            return result

    async def _revive(self, key: int | None = None) -> Endpoint | None:
        """No endpoint is up: wait for the health checks that are due (or running) and return
        the best endpoint that came back, if any."""
        now = self.clock()
        checks = [
            self._start_check(e)
            for e in self.endpoints
            if e.down_until is not None and (e.down_until <= now or e._probe is not None)
        ]
        if checks:
            await asyncio.gather(*checks, return_exceptions=True)
        return self.pick(key=key)

    def _all_down(self) -> BackendError:
        now = self.clock()
        wait = min((e.down_until - now for e in self.endpoints if e.down_until is not None), default=0.0)
        wait = max(wait, 0.0)
        detail = "; ".join(f"{e.url}: {e.last_error or 'down'}" for e in self.endpoints)
        return BackendError(
            f"all {len(self.endpoints)} endpoints are down (next health check in {wait:.1f} s): {detail}",
            retryable=True,
            retry_after=wait,
        )

    def stats(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [e.stats(now) for e in self.endpoints]

    async def aclose(self) -> None:
        """Cancel the health checks still running in this loop."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._tasks if t.get_loop() is loop and not t.done()]
        for task in mine:
            task.cancel()
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)
