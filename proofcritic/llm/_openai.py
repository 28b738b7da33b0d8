"""OpenAI-compatible HTTP backend (OpenAI, vLLM, SGLang, any ``/v1/chat/completions`` server).

Two transports map to the same :class:`Completion` objects and the same error classes:

* ``"aiohttp"`` (default): one :class:`aiohttp.ClientSession` per event loop, a connector sized
  to ``max_connections``, request bodies serialised once to bytes. This is the lean path
  (well under a millisecond of client CPU per call).
* ``"openai"``: the official ``openai`` package (``AsyncOpenAI(max_retries=0)``, on its aiohttp
  transport when available), for hosted APIs whose quirks it knows. Responses are read raw and
  parsed here, so both transports share one parser.

The backend never retries: every failure becomes a :class:`BackendError` with ``retryable``
set, and :class:`~proofcritic.llm.Model` decides what to do with it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import aiohttp

from ..errors import AuthenticationError, BackendError, ModelNotFoundError, UnsupportedFeatureError
from ._base import Backend
from ._types import ChatMessage, ChatRequest, Completion, GenerateConfig, TokenLogprob

try:  # orjson is optional; it only makes (de)serialisation cheaper
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


DEFAULT_BASE_URL = "https://api.openai.com/v1"
_N_WORD = re.compile(r"(?<![\w-])[`'\"]?n[`'\"]?(?![\w-])")
_MODEL_MISSING = re.compile(
    r"model\b[^.]{0,100}?\b(does not exist|doesn't exist|not found|not exist|is not served|is unknown|no such)"
    r"|\b(unknown|invalid|no such|nonexistent)\s+model\b",
    re.IGNORECASE,
)
_EXTRAS = re.compile(r"prompt_logprobs|continue_final_message|add_generation_prompt|unrecognized|extra|unexpected")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _retry_after(headers: Any) -> float | None:
    """OpenAI's ``retry-after-ms`` or the standard ``Retry-After`` (case-insensitive headers)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def _server_message(text: str) -> tuple[str, str | None, str | None]:
    """Message, ``param`` and ``code`` of an OpenAI/vLLM-style error body (or the raw text)."""
    try:
        data = _loads(text)
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


class _NRefused(Exception):
    """Internal: the server will not sample ``n > 1`` in one request."""


class OpenAIBackend(Backend):
    """Chat completions over HTTP from an OpenAI-compatible server.

    ``extra_body`` is merged into every request body (e.g. vLLM's ``{"top_k": 20}``).
    The backend does not read environment variables; callers pass ``api_key`` explicitly.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float = 600,
        transport: Literal["aiohttp", "openai"] = "aiohttp",
        max_connections: int = 256,
        extra_body: dict[str, Any] | None = None,
    ):
        if transport not in ("aiohttp", "openai"):
            raise ValueError(f"transport must be 'aiohttp' or 'openai', not {transport!r}")
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key
        self.timeout = float(timeout)
        self.transport = transport
        self.max_connections = max(1, int(max_connections))
        self.default_concurrency = min(Backend.default_concurrency, self.max_connections)
        self.extra_body = dict(extra_body or {})
        self.n_supported = True
        """False once the server refused ``n > 1``; later calls go straight to n=1 requests."""
        self._chat_url = f"{self.base_url}/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._client: Any = None  # openai.AsyncOpenAI
        self._loop: asyncio.AbstractEventLoop | None = None

    def cache_identity(self) -> str:
        return f"openai/{self.base_url}/{self.model}"

    # -- transports -----------------------------------------------------------------------------
    def _bind(self) -> None:
        """Create the HTTP client for the running loop (a client cannot cross event loops)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and (self._session is not None or self._client is not None):
            return
        self._session, self._client, self._loop = None, None, loop
        if self.transport == "aiohttp":
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent",),
            )
            return
        import openai

        try:
            import httpx2 as httpx  # what this openai release is built on
        except ImportError:  # pragma: no cover - older openai releases
            import httpx
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
        try:
            http_client = openai.DefaultAioHttpClient(limits=limits, timeout=self.timeout)
        except RuntimeError:  # the package was installed without its aiohttp extra
            http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=self.timeout)
        self._client = openai.AsyncOpenAI(
            api_key=self.api_key or "EMPTY",
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,
            http_client=http_client,
        )

    async def _post_chat(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        """POST one chat request; the decoded JSON answer or a classified error."""
        self._bind()
        if self._session is not None:
            try:
                async with self._session.post(self._chat_url, data=_dumps(body)) as resp:
                    raw = await resp.read()
                    status = resp.status
                    retry_after = _retry_after(resp.headers) if status >= 300 else None
            except (asyncio.TimeoutError, TimeoutError):
                raise BackendError(f"request to {self._chat_url} timed out after {self.timeout:g} s", retryable=True) from None
            except aiohttp.InvalidURL as exc:
                raise BackendError(f"invalid base URL {self.base_url!r}: {exc}") from exc
            except aiohttp.ClientError as exc:  # dropped connections, refused connects, payload errors
                raise BackendError(f"connection to {self._chat_url} failed: {type(exc).__name__}: {exc}", retryable=True) from exc
            if status >= 300:
                raise await self._classify(status, raw.decode("utf-8", "replace"), retry_after, n)
        else:
            raw = await self._post_chat_openai(body, n)
        try:
            data = _loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BackendError(f"the server at {self._chat_url} answered malformed JSON: {raw[:200]!r}", retryable=True)
        return data

    async def _post_chat_openai(self, body: dict[str, Any], n: int) -> bytes:
        import openai

        known = {"messages", "n", "temperature", "top_p", "max_tokens", "stop", "seed", "logprobs", "top_logprobs"}
        kwargs = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known and k != "model"}
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=body["model"], extra_body=extra or None, **kwargs
            )
            return raw.content
        except openai.APIConnectionError as exc:  # timeouts included (its aiohttp transport reports drops as timeouts)
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            raise BackendError(f"request to {self._chat_url} failed: {exc}{cause}", retryable=True) from exc
        except openai.APIStatusError as exc:
            raise await self._classify(exc.status_code, exc.response.text, _retry_after(exc.response.headers), n) from None

    # -- errors ---------------------------------------------------------------------------------
    async def _classify(self, status: int, text: str, retry_after: float | None, n: int) -> Exception:
        """Turn an HTTP error answer into the matching proofcritic error (or ``_NRefused``)."""
        message, param, code = _server_message(text)
        where = f"the server at {self.base_url}"
        if status in (401, 403):
            return AuthenticationError(f"{where} refused the API key ({status}: {message})", status=status)
        if status == 429 or status >= 500:
            return BackendError(f"{where} answered {status}: {message}", retryable=True, retry_after=retry_after, status=status)
        if status == 404 or (
            status in (400, 422) and param != "n" and (code == "model_not_found" or _MODEL_MISSING.search(message))
        ):
            served = await self.served_models()
            listing = (
                f"; it serves: {', '.join(served)}" if served
                else "; GET /models did not answer (check the base URL)" if served is None else ""
            )
            return ModelNotFoundError(
                f"model {self.model!r} not found at {self.base_url} ({status}: {message}){listing}", status=status
            )
        if n > 1 and status in (400, 422) and (param == "n" or _N_WORD.search(message)):
            return _NRefused(message)
        return BackendError(f"{where} rejected the request ({status}: {message})", status=status)

    async def served_models(self) -> list[str] | None:
        """The model ids from ``GET /models``, or None when the server does not answer it."""
        self._bind()
        try:
            if self._session is not None:
                async with self._session.get(
                    f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=min(self.timeout, 10))
                ) as resp:
                    if resp.status != 200:
                        return None
                    data = _loads(await resp.read())
                return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
            page = await self._client.models.list(timeout=min(self.timeout, 10))
            return [m.id for m in page.data]
        except Exception:  # noqa: BLE001 - only decoration for an error message
            return None

    # -- generation -----------------------------------------------------------------------------
    def _chat_body(self, messages: Sequence[ChatMessage], config: GenerateConfig, n: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
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
        if self.extra_body:
            body.update(self.extra_body)
        return body

    async def generate(self, request: ChatRequest) -> list[Completion]:
        """``request.config.n`` completions; n > 1 falls back to n=1 requests where refused."""
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

    async def _generate_each(self, messages: Sequence[ChatMessage], config: GenerateConfig, start: int, n: int) -> list[Completion]:
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
                lps.append([
                    TokenLogprob(
                        token=e["token"],
                        logprob=float(e["logprob"]),
                        top={t["token"]: float(t["logprob"]) for t in e["top_logprobs"]} if e.get("top_logprobs") else None,
                    )
                    for e in entries
                ])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"the server at {self._chat_url} answered an unexpected shape: {exc!r}", retryable=True) from exc
        # completion tokens: the logprob count where known, the rest of usage shared evenly
        counts = [len(lp) if lp is not None else None for lp in lps]
        unknown = [i for i, c in enumerate(counts) if c is None]
        if unknown:
            rest = max(int(usage.get("completion_tokens") or 0) - sum(c for c in counts if c is not None), 0)
            share, extra = divmod(rest, len(unknown))
            for j, i in enumerate(unknown):
                counts[i] = share + (1 if j < extra else 0)
        return [
            Completion(text=t, finish_reason=r, prompt_tokens=prompt_tokens, completion_tokens=c, logprobs=lp)
            for t, r, c, lp in zip(texts, reasons, counts, lps)
        ]

    # -- likelihood -----------------------------------------------------------------------------
    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Total prompt log-likelihood of each conversation, read from vLLM's ``prompt_logprobs``.

        Each continuation is appended to the final assistant turn and sent with
        ``continue_final_message``/``add_generation_prompt: false``/``prompt_logprobs: 0``, so the
        server scores the conversation as the prompt and returns one logprob per prompt token.
        """
        messages = list(messages)
        if messages and messages[-1].role == "assistant":
            head, prefix = messages[:-1], messages[-1].content
        else:
            head, prefix = messages, ""
        base = [{"role": m.role, "content": m.content} for m in head]

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
                data = await self._post_chat(body, 1)
            except (AuthenticationError, ModelNotFoundError):
                raise
            except BackendError as exc:
                if exc.status in (400, 422) and _EXTRAS.search(str(exc)):
                    raise UnsupportedFeatureError(f"{self._no_prompt_logprobs()} ({exc})", status=exc.status) from exc
                raise
            return self._prompt_logprob_total(data)

        return list(await asyncio.gather(*(one(c) for c in continuations)))

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
        """Close the HTTP session (or the openai client)."""
        session, client = self._session, self._client
        self._session, self._client, self._loop = None, None, None
        if session is not None and not session.closed:
            await session.close()
        if client is not None:
            await client.close()
