"""OpenAI-compatible HTTP backend (OpenAI, vLLM, SGLang, any ``/v1/chat/completions`` server).

Three transports (:mod:`proofcritic.llm._transports`, one object per event loop) map to the
same :class:`Completion` objects and the same error classes:

* ``"lean"`` (default): the chat requests to a plain ``http://`` server go through this
  package's own HTTP/1.1 keep-alive client (:mod:`proofcritic.llm._http`: a few tens of
  microseconds of CPU per request, several times less than aiohttp); ``https://`` servers, the
  health checks and the model listing go through aiohttp.
* ``"aiohttp"``: everything through one :class:`aiohttp.ClientSession` per event loop, request
  bodies serialised once to bytes (about 0.2 ms of client CPU per request).

Connections: the pool has no cap of its own by default (``max_connections=None``): it opens as
many connections as there are requests in flight, which :class:`~proofcritic.llm.Model`'s
``max_concurrency`` (``--concurrency``) bounds, so 1024 in flight are 1024 connections.
``max_connections`` caps the pool in all; ``max_connections_per_host``
(``--max-connections-per-host``) caps the requests in flight to each base URL (replica): the
others wait for a free connection before their request starts, and their ``timeout`` starts
only then.
* ``"openai"``: the official ``openai`` package (``AsyncOpenAI(max_retries=0)``, on its aiohttp
  transport when available), for hosted APIs whose quirks it knows. Responses are read raw and
  parsed here, so both transports share one parser.

Several base URLs (replicas of one model) are spread by :class:`~proofcritic.llm._balancer.Balancer`:
requests sharing a prompt prefix kept on one replica while its load allows (``routing="prefix"``,
the default) or least outstanding requests (``"least-loaded"``), a failing endpoint ejected for a
cool-down and health-checked before it returns, a failed attempt re-routed at once to another endpoint. The backend itself never
waits and retries: every failure that is left becomes a :class:`BackendError` with ``retryable``
set, and :class:`~proofcritic.llm.Model` decides what to do with it.

Engine features, used where the server has them (``engine``: "vllm", "sglang" or "openai",
taken from the spec prefix ``vllm/`` / ``sglang/`` unless given). The engine is the class:
:class:`OpenAIBackend` speaks to a plain OpenAI server, :class:`~proofcritic.llm._vllm.VLLMBackend`
and :class:`~proofcritic.llm._sglang.SGLangBackend` add their engine's request fields
(``OpenAIBackend(..., engine="vllm")`` gives the vLLM one):

* ``n`` samples in one request (one prefill for all of them), falling back to separate requests;
* guided choice (``GenerateConfig.choices``): vLLM's ``structured_outputs: {"choice": [...]}``,
  SGLang's ``regex`` (an alternation of the escaped choices, matched in full); a plain OpenAI
  server raises :class:`UnsupportedFeatureError`, and so does a server that rejects the field or
  answers something that is not one of the choices, so callers fall back cleanly;
* a request whose messages end with an assistant turn continues it
  (``continue_final_message``, vLLM and SGLang);
* prompt log-probabilities for the likelihood read-out (vLLM's ``prompt_logprobs``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._constants import DEFAULT_ROUTING, DEFAULT_ROUTING_EPSILON, TRANSPORTS, RoutingKind, TransportKind
from ..errors import (
    AuthenticationError,
    BackendError,
    ContextLengthError,
    ModelNotFoundError,
    UnsupportedFeatureError,
)
from ._balancer import Balancer, Endpoint, prefix_key, split_base_urls
from ._base import CONTEXT_MESSAGE, Backend, report_request
from ._transports import ErrorAnswer, Transport, dumps, loads, make_transport
from ._types import (
    ChatMessage,
    ChatRequest,
    Completion,
    GenerateConfig,
    TokenLogprob,
    split_assistant_prefix,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_N_WORD = re.compile(r"(?<![\w-])[`'\"]?n[`'\"]?(?![\w-])")
_MODEL_MISSING = re.compile(
    r"model\b[^.]{0,100}?\b(does not exist|doesn't exist|not found|not exist|is not served|is unknown|no such)"
    r"|\b(unknown|invalid|no such|nonexistent)\s+model\b",
    re.IGNORECASE,
)
_EXTRAS = re.compile(r"prompt_logprobs|continue_final_message|add_generation_prompt|unrecognized|extra|unexpected")
_GUIDED_EXTRAS = re.compile(
    r"structured_outputs|guided|regex|choice|continue_final_message|add_generation_prompt|unrecognized|extra|unexpected",
    re.IGNORECASE,
)
ENGINES = ("openai", "vllm", "sglang")


def _server_message(text: str) -> tuple[str, str | None, str | None]:
    """Message, ``param`` and ``code`` of an OpenAI/vLLM-style error body (or the raw text)."""
    try:
        data = loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)", None, None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                param, code = err.get("param"), err.get("code")
                return str(msg), param if isinstance(param, str) else None, code if isinstance(code, str) else None
        elif isinstance(err, str):
            return err, None, None
        if "detail" in data:
            return str(data["detail"]), None, None
    return text.strip()[:500], None, None


_OPEN_FILES_RAISED = False


def _raise_open_files_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit (once; at most 65536), so
    that thousands of connections in flight do not fail with "Too many open files"."""
    global _OPEN_FILES_RAISED
    if _OPEN_FILES_RAISED:
        return
    _OPEN_FILES_RAISED = True
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, OSError, ValueError):  # not on this platform, or not allowed: keep the limit
        pass


class _NRefused(Exception):
    """Internal: the server will not sample ``n > 1`` in one request."""


class OpenAIBackend(Backend):
    """Chat completions over HTTP from one or several OpenAI-compatible servers.

    ``base_url``: one URL, a comma-separated string or a list of URLs (replicas serving the same
    model; the first one names the cache, so adding replicas to a run keeps its cache).
    ``extra_body`` is merged into every request body (e.g. vLLM's ``{"top_k": 20}``).
    ``eject_cooldown`` / ``max_eject_cooldown``: the first and the longest time a failing
    replica stays out of rotation. ``routing`` ("prefix" or "least-loaded") and ``routing_epsilon``
    (prefix routing's load bound): how requests are spread over several base URLs (see
    :mod:`proofcritic.llm._balancer`). ``engine``: the server kind for engine features (see module).
    ``timeout``: seconds one request may take (connecting, waiting and reading the answer);
    it may be changed at any time. ``max_connections`` (None: no cap, the requests in flight set
    it) and ``max_connections_per_host`` (None: no cap per base URL): see the module.
    The backend does not read environment variables; callers
    pass ``api_key`` explicitly. Every chat request it sends is counted with
    :func:`~proofcritic.llm.report_request` (failed ones and read-outs included).

    ``name`` is the spec prefix it was built from ("openai" unless the registry says "vllm" or
    "sglang"); ``engine`` the inference engine behind the server, which its class fixes.
    """

    name = "openai"
    #: the inference engine serving the API: "openai" for any plain OpenAI-compatible server
    #: (no engine fields); the subclasses say "vllm" and "sglang"
    engine = "openai"
    reports_requests = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """``OpenAIBackend(..., engine="vllm")`` / ``"sglang"`` builds that engine's subclass."""
        engine = kwargs.get("engine", args[7] if len(args) > 7 else None)
        made = _engine_class(engine) if cls is OpenAIBackend and engine in ("vllm", "sglang") else cls
        return super().__new__(made)  # type: ignore[return-value]  # a subclass of cls

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] | None = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float = 600,
        transport: TransportKind = "lean",
        max_connections: int | None = None,
        extra_body: dict[str, Any] | None = None,
        engine: str | None = None,
        eject_cooldown: float = 1.0,
        max_eject_cooldown: float = 60.0,
        probe_timeout: float = 5.0,
        max_connections_per_host: int | None = None,
        routing: RoutingKind = DEFAULT_ROUTING,
        routing_epsilon: float = DEFAULT_ROUTING_EPSILON,
    ):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout must be more than 0 seconds, not {timeout!r}")
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine is not None and engine != self.engine:
            raise ValueError(f"{type(self).__name__} speaks to engine {self.engine!r}, not {engine!r}")
        self.model = model
        self.base_urls = split_base_urls(base_url) or [DEFAULT_BASE_URL]
        self.base_url = self.base_urls[0]
        self.probe_timeout = float(probe_timeout)
        self._balancer = Balancer(
            self.base_urls,
            self._probe,
            cooldown=eject_cooldown,
            max_cooldown=max_eject_cooldown,
            routing=routing,
            epsilon=routing_epsilon,
        )
        self.api_key = api_key
        self.timeout = float(timeout)
        self.transport = transport
        for label, value in (
            ("max_connections", max_connections),
            ("max_connections_per_host", max_connections_per_host),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f"{label} must be at least 1 (or None: no cap), not {value!r}")
        self.max_connections = None if max_connections is None else int(max_connections)
        """Connections open at once to all endpoints; None: as many as requests in flight."""
        self.max_connections_per_host = None if max_connections_per_host is None else int(max_connections_per_host)
        """Requests in flight to one endpoint at once; None: no cap per endpoint."""
        caps = [Backend.default_concurrency]
        if self.max_connections is not None:
            caps.append(self.max_connections)
        if self.max_connections_per_host is not None:
            caps.append(self.max_connections_per_host * len(self.base_urls))
        self.default_concurrency = min(caps)
        self._slots: dict[str, asyncio.Semaphore] = {}  # per endpoint, under a per-host cap
        self.extra_body = dict(extra_body or {})
        self.n_supported = True
        """False once the server refused ``n > 1``; later calls go straight to n=1 requests."""
        self.choices_supported = True
        """False once the server rejected or ignored a guided choice; later ones fail at once."""
        self.prompt_logprobs_supported: bool | None = None
        """Whether the server returns prompt logprobs (the likelihood read-out): None until one
        read-out request has told; while None, read-outs go one at a time; False: they fail at once."""
        self._readout_locks: dict[int, asyncio.Lock] = {}
        self._chat_urls = {url: f"{url}/chat/completions" for url in self.base_urls}
        self._chat_url = self._chat_urls[self.base_url]
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._transport: Transport | None = None  # of the bound event loop (see _bind)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def timeout(self) -> float:
        """Seconds one request may take."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        if not float(seconds) > 0:
            raise ValueError(f"timeout must be more than 0 seconds, not {seconds!r}")
        self._timeout = float(seconds)

    def cache_identity(self) -> str:
        return f"openai/{self.base_url}/{self.model}"

    def address(self) -> str:
        return ", ".join(self.base_urls)

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per-endpoint counters: requests, successes, failures, ejections, in flight, tokens,
        health checks, whether it is up now (see :class:`~proofcritic.llm._balancer.Endpoint`)."""
        return self._balancer.stats()

    @property
    def supports_guided_choice(self) -> bool | None:
        """False on a plain OpenAI server (engine ``openai``) and once the server rejected or
        ignored a guided choice; else unknown until one is tried."""
        return False if self.engine == "openai" or not self.choices_supported else None

    @property
    def supports_likelihood(self) -> bool | None:
        """Whether the server returns prompt logprobs (None until a read-out has told)."""
        return self.prompt_logprobs_supported

    # -- transport ------------------------------------------------------------------------------
    def _bind(self) -> Transport:
        """The transport of the running loop, made on first use there (a client cannot cross
        event loops)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._transport is not None:
            return self._transport
        cap = self.max_connections_per_host
        self._slots = {url: asyncio.Semaphore(cap) for url in self.base_urls} if cap else {}
        _raise_open_files_limit()
        self._transport = make_transport(
            self.transport,
            self._chat_urls,
            self._headers,
            self.max_connections,
            api_key=self.api_key,
            timeout=self.timeout,
        )
        self._loop = loop
        return self._transport

    async def _post_chat(self, body: dict[str, Any], n: int, readout: bool = False) -> dict[str, Any]:
        """POST one chat request through the balancer; the decoded JSON answer or a classified error."""
        transport = self._bind()
        payload = _serialise(body) if transport.serialised else b""
        key = prefix_key(body["messages"]) if self._balancer.keyed else None
        return await self._balancer.call(
            lambda endpoint: self._post_chat_at(transport, endpoint, body, payload, n, readout), key
        )

    async def _post_chat_at(
        self,
        transport: Transport,
        endpoint: Endpoint,
        body: dict[str, Any],
        payload: bytes,
        n: int,
        readout: bool = False,
    ) -> dict[str, Any]:
        """POST one chat request to one endpoint, and count it (:func:`report_request`). An
        answer that is not a JSON object, or has no choices, is a (retryable) failure."""
        tokens = [0, 0]
        failed = True
        url = endpoint.url
        try:
            slot = self._slots.get(url) if self._slots else None
            try:
                if slot is None:
                    raw = await transport.post_chat(url, body, payload, self._timeout)
                else:
                    async with slot:  # a free connection to this endpoint first; the timeout starts after
                        raw = await transport.post_chat(url, body, payload, self._timeout)
            except ErrorAnswer as answer:
                raise await self._classify(answer.status, answer.text, answer.retry_after, n, url) from None
            try:
                data = loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise BackendError(
                    f"the server at {self._chat_urls[url]} answered malformed JSON: {raw[:200]!r}", retryable=True
                )
            usage = data.get("usage")
            if isinstance(usage, dict):
                try:
                    tokens[:] = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                except (TypeError, ValueError):
                    pass
                endpoint.prompt_tokens += tokens[0]
                endpoint.completion_tokens += tokens[1]
            choices = data.get("choices")
            if not isinstance(choices, list) or not choices:
                raise BackendError(f"the server at {self._chat_urls[url]} answered without choices", retryable=True)
            failed = False
            return data
        finally:
            report_request(prompt_tokens=tokens[0], completion_tokens=tokens[1], failed=failed, readout=readout)

    async def _probe(self, endpoint: Endpoint) -> bool:
        """Health check of one endpoint (see :meth:`~proofcritic.llm._transports.Transport.probe`)."""
        return await self._bind().probe(endpoint.url, min(self.timeout, self.probe_timeout))

    # -- errors ---------------------------------------------------------------------------------
    async def _classify(
        self, status: int, text: str, retry_after: float | None, n: int, url: str | None = None
    ) -> Exception:
        """Turn an HTTP error answer into the matching proofcritic error (or ``_NRefused``)."""
        message, param, code = _server_message(text)
        url = url or self.base_url
        where = f"the server at {url}"
        if status in (401, 403):
            return AuthenticationError(f"{where} refused the API key ({status}: {message})", status=status)
        if status == 429 or status >= 500:
            return BackendError(
                f"{where} answered {status}: {message}", retryable=True, retry_after=retry_after, status=status
            )
        if status in (400, 413, 422) and (code == "context_length_exceeded" or CONTEXT_MESSAGE.search(message)):
            return ContextLengthError(
                f"the prompt does not fit the context of the model at {url} ({status}: {message})", status=status
            )
        if status == 404 or (
            status in (400, 422) and param != "n" and (code == "model_not_found" or _MODEL_MISSING.search(message))
        ):
            served = await self.served_models(url)
            listing = (
                f"; it serves: {', '.join(served)}"
                if served
                else "; GET /models did not answer (check the base URL)"
                if served is None
                else ""
            )
            return ModelNotFoundError(
                f"model {self.model!r} not found at {url} ({status}: {message}){listing}", status=status
            )
        if n > 1 and status in (400, 422) and (param == "n" or _N_WORD.search(message)):
            return _NRefused(message)
        return BackendError(f"{where} rejected the request ({status}: {message})", status=status)

    async def served_models(self, base_url: str | None = None) -> list[str] | None:
        """The model ids from ``GET /models`` (of ``base_url``, by default the first endpoint),
        or None when the server does not answer it."""
        transport = self._bind()
        try:
            return await transport.models(base_url or self.base_url, min(self.timeout, 10))
        except Exception:  # noqa: BLE001 - only decoration for an error message
            return None

    # -- generation -----------------------------------------------------------------------------
    def _chat_body(
        self, messages: Sequence[ChatMessage], config: GenerateConfig, n: int, seed: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _Turns(messages),
        }
        if n != 1:
            body["n"] = n
        if config.temperature is not None:
            body["temperature"] = config.temperature
        if config.top_p is not None:
            body["top_p"] = config.top_p
        if config.max_tokens is not None:
            body["max_tokens"] = config.max_tokens
        if config.stop:
            body["stop"] = list(config.stop)
        if seed is not None:
            body["seed"] = seed
        if config.logprobs or config.top_logprobs:
            body["logprobs"] = True
            if config.top_logprobs:
                body["top_logprobs"] = config.top_logprobs
        self._engine_fields(body, messages, config)
        if self.extra_body:
            body.update(self.extra_body)
        return body

    def _engine_fields(self, body: dict[str, Any], messages: Sequence[ChatMessage], config: GenerateConfig) -> None:
        """Add the engine's own fields to a chat request ``body``: a final assistant turn
        continued, guided choice. A plain OpenAI server has none."""

    async def generate(self, request: ChatRequest) -> list[Completion]:
        """``request.config.n`` completions; n > 1 falls back to n=1 requests where refused.

        With ``config.choices`` every completion's text is one of the choices, or the call
        raises :class:`UnsupportedFeatureError` (a plain OpenAI server; a server that rejected
        the field or ignored it).
        """
        if not request.config.choices:
            return await self._generate(request)
        if self.engine == "openai":
            raise UnsupportedFeatureError(
                f"guided choice needs a vLLM or SGLang server (engine 'openai' at {self.base_url}); "
                "use a vllm/ or sglang/ model spec or engine=..."
            )
        if not self.choices_supported:
            raise UnsupportedFeatureError(f"the server at {self.base_url} does not honour guided choice")
        try:
            completions = await self._generate(request)
        except (AuthenticationError, ModelNotFoundError):
            raise
        except BackendError as exc:
            if not exc.retryable and exc.status in (400, 422) and _GUIDED_EXTRAS.search(str(exc)):
                self.choices_supported = False
                raise UnsupportedFeatureError(
                    f"the server at {self.base_url} refused guided choice ({exc})", status=exc.status
                ) from exc
            raise
        allowed = set(request.config.choices)
        for completion in completions:
            if completion.text not in allowed and completion.text.strip() in allowed:
                completion.text = completion.text.strip()
            if completion.text not in allowed:
                self.choices_supported = False
                raise UnsupportedFeatureError(
                    f"the server at {self.base_url} ignored guided choice: it answered {completion.text[:80]!r}, "
                    f"not one of {list(request.config.choices)}"
                )
        return completions

    async def _generate(self, request: ChatRequest) -> list[Completion]:
        config = request.config
        n = config.n
        if n > 1 and not self.n_supported:
            return await self._generate_each(request.messages, config, 0, n)
        try:
            data = await self._post_chat(self._chat_body(request.messages, config, n, config.seed), n)
        except _NRefused:
            self.n_supported = False
            return await self._generate_each(request.messages, config, 0, n)
        completions = self._completions(data)
        if len(completions) < n:
            self.n_supported = False
            completions += await self._generate_each(request.messages, config, len(completions), n)
        return completions[:n]

    async def _generate_each(
        self, messages: Sequence[ChatMessage], config: GenerateConfig, start: int, n: int
    ) -> list[Completion]:
        """Samples ``start..n-1`` as separate n=1 requests (seed + i for sample i)."""

        async def one(i: int) -> Completion:
            seed = None if config.seed is None else config.seed + i
            out = self._completions(await self._post_chat(self._chat_body(messages, config, 1, seed), 1))
            return out[0]

        return list(await asyncio.gather(*(one(i) for i in range(start, n))))

    def _completions(self, data: dict[str, Any]) -> list[Completion]:
        """Map an OpenAI chat response to completions, splitting usage over the samples."""
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"the server at {self._chat_url} answered without choices", retryable=True)
        if len(choices) > 1 and all(isinstance(c, dict) and "index" in c for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        texts: list[str] = []
        reasons: list[str] = []
        lps: list[list[TokenLogprob] | None] = []
        try:
            for choice in choices:
                content = (choice.get("message") or {}).get("content") or ""
                if not isinstance(content, str):  # a list of content parts
                    content = "".join(part.get("text") or "" for part in content if isinstance(part, dict))
                texts.append(content)
                reasons.append(choice.get("finish_reason") or "stop")
                lp = choice.get("logprobs")
                entries = lp.get("content") if isinstance(lp, dict) else None
                if entries is None:
                    lps.append(None)
                    continue
                lps.append(
                    [
                        TokenLogprob(
                            token=e["token"],
                            logprob=float(e["logprob"]),
                            top={t["token"]: float(t["logprob"]) for t in e["top_logprobs"]}
                            if e.get("top_logprobs")
                            else None,
                        )
                        for e in entries
                    ]
                )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                f"the server at {self._chat_url} answered an unexpected shape: {exc!r}", retryable=True
            ) from exc
        # completion tokens: the logprob count where known, the rest of usage shared evenly
        counts = [len(lp) if lp is not None else None for lp in lps]
        unknown = [i for i, c in enumerate(counts) if c is None]
        if unknown:
            rest = max(int(usage.get("completion_tokens") or 0) - sum(c for c in counts if c is not None), 0)
            share, extra = divmod(rest, len(unknown))
            for j, i in enumerate(unknown):
                counts[i] = share + (1 if j < extra else 0)
        return [
            Completion(text=t, finish_reason=r, prompt_tokens=prompt_tokens, completion_tokens=c or 0, logprobs=lp)
            for t, r, c, lp in zip(texts, reasons, counts, lps)
        ]

    # -- likelihood -----------------------------------------------------------------------------
    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Total prompt log-likelihood of each conversation, read from vLLM's ``prompt_logprobs``.

        Each continuation is appended to the final assistant turn and sent with
        ``continue_final_message``/``add_generation_prompt: false``/``prompt_logprobs: 0``, so the
        server scores the conversation as the prompt and returns one logprob per prompt token.
        Until one read-out has shown whether the server does this, read-outs go one at a time
        (one request learns it); once it has not, they fail at once without a request.
        """
        head, prefix = split_assistant_prefix(list(messages))
        base = [{"role": m.role, "content": m.content} for m in head]
        todo = list(continuations)

        async def one(continuation: str) -> float:
            body: dict[str, Any] = {"model": self.model, **self.extra_body}
            body.update(
                messages=[*base, {"role": "assistant", "content": prefix + continuation}],
                max_tokens=1,
                temperature=0.0,
                continue_final_message=True,
                add_generation_prompt=False,
                prompt_logprobs=0,
            )
            try:
                data = await self._post_chat(body, 1, readout=True)
            except (AuthenticationError, ModelNotFoundError):
                raise
            except BackendError as exc:
                if exc.status in (400, 422) and _EXTRAS.search(str(exc)):
                    self.prompt_logprobs_supported = False
                    raise UnsupportedFeatureError(f"{self._no_prompt_logprobs()} ({exc})", status=exc.status) from exc
                raise
            try:
                total = self._prompt_logprob_total(data)
            except UnsupportedFeatureError:
                self.prompt_logprobs_supported = False
                raise
            self.prompt_logprobs_supported = True
            return total

        first: list[float] = []
        if self.prompt_logprobs_supported is None and todo:
            loop = asyncio.get_running_loop()
            lock = self._readout_locks.get(id(loop))
            if lock is None:
                lock = self._readout_locks[id(loop)] = asyncio.Lock()
            async with lock:  # the first read-out alone; the others wait for its answer
                if self.prompt_logprobs_supported is None:
                    first.append(await one(todo.pop(0)))
        if self.prompt_logprobs_supported is False:
            raise UnsupportedFeatureError(self._no_prompt_logprobs())
        return first + list(await asyncio.gather(*(one(c) for c in todo)))

    def _no_prompt_logprobs(self) -> str:
        return f"the server at {self.base_url} does not return prompt logprobs; use a vLLM server or --score-mode text"

    def _prompt_logprob_total(self, data: dict[str, Any]) -> float:
        """Sum vLLM's ``prompt_logprobs``: ``[None, {token_id: {"logprob": ...}}, ...]``.

        With ``prompt_logprobs: 0`` each position holds only the actual prompt token. Should a
        server add alternatives, ``prompt_token_ids`` (when returned) picks the actual one.
        """
        choice0 = (data.get("choices") or [{}])[0]
        entries = data.get("prompt_logprobs")
        if entries is None and isinstance(choice0, dict):
            entries = choice0.get("prompt_logprobs")
        if not isinstance(entries, list) or not entries:
            raise UnsupportedFeatureError(self._no_prompt_logprobs())
        ids = data.get("prompt_token_ids") or (choice0.get("prompt_token_ids") if isinstance(choice0, dict) else None)
        total = 0.0
        for pos, entry in enumerate(entries):
            if not entry:
                continue
            if len(entry) == 1:
                (value,) = entry.values()
            elif ids is not None and pos < len(ids) and str(ids[pos]) in entry:
                value = entry[str(ids[pos])]
            else:
                raise BackendError(
                    f"the server at {self.base_url} returned several prompt logprobs at position {pos} "
                    "without prompt_token_ids; cannot tell the actual token"
                )
            total += float(value["logprob"] if isinstance(value, dict) else value)
        return total

    async def aclose(self) -> None:
        """Stop the health checks and close the transport's connections."""
        try:
            await self._balancer.aclose()
        except RuntimeError:  # no running loop
            pass
        transport, self._transport, self._loop = self._transport, None, None
        if transport is not None:
            await transport.aclose()


class _Turns(list):
    """A chat body's ``messages`` (``{"role", "content"}`` dicts) that remember their turns, so
    that :func:`_serialise` splices each turn's JSON, encoded once (:attr:`ChatMessage.wire`,
    which the cache key used already), instead of encoding the texts again."""

    def __init__(self, messages: Sequence[ChatMessage]):
        super().__init__({"role": m.role, "content": m.content} for m in messages)
        self.turns = messages


def _serialise(body: dict[str, Any]) -> bytes:
    """``body`` as the bytes of its JSON, the messages spliced in from their turns' :attr:`wire`
    text when they are still the ones :meth:`OpenAIBackend._chat_body` put there."""
    turns = body.get("messages")
    if type(turns) is not _Turns or len(turns) != len(turns.turns):
        return dumps(body)
    if any(d.get("content") is not m.content or d.get("role") != m.role for d, m in zip(turns, turns.turns)):
        return dumps(body)  # changed after the body was built
    rest = dumps({k: v for k, v in body.items() if k != "messages"})
    spliced = ",".join(m.wire for m in turns.turns).encode()
    return b'{"messages":[' + spliced + (b"]," + rest[1:] if len(rest) > 2 else b"]}")


def continue_final_turn(body: dict[str, Any], messages: Sequence[ChatMessage]) -> None:
    """Ask vLLM or SGLang to continue a final assistant turn rather than open a new one."""
    if messages and messages[-1].role == "assistant":
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False


def _engine_class(engine: str) -> type[OpenAIBackend]:
    if engine == "vllm":
        from ._vllm import VLLMBackend

        return VLLMBackend
    from ._sglang import SGLangBackend

    return SGLangBackend
