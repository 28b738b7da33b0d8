"""How the requests of an OpenAI-compatible backend travel: one small interface
(:class:`Transport`) and its three implementations, chosen by ``transport=`` (``--transport``).

* :class:`LeanTransport` (``"lean"``, the default where a base URL is plain ``http://``): chat
  requests to ``http://`` servers through this package's own HTTP/1.1 keep-alive client
  (:mod:`proofcritic.llm._http`); ``https://`` servers, the health checks and ``GET /models``
  through aiohttp, whose session (and import) waits for its first use.
* :class:`AiohttpTransport` (``"aiohttp"``, and ``"lean"`` with only ``https://`` servers):
  everything through one :class:`aiohttp.ClientSession`.
* :class:`OpenAITransport` (``"openai"``): the official ``openai`` package
  (``AsyncOpenAI(max_retries=0)`` per endpoint, on its aiohttp transport when available).

A transport belongs to one event loop (the backend makes a new one for another loop). It sends
and answers bytes; it never retries, and knows nothing of chat bodies beyond passing them on:
a failure to reach the server is a (retryable) :class:`BackendError`, an answer with an error
status is an :class:`ErrorAnswer` that the backend classifies.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import BackendError
from ._http import HTTPClient, HTTPConnectionError

if TYPE_CHECKING:
    import aiohttp

try:  # orjson is optional; it only makes (de)serialisation cheaper
    import orjson

    loads = orjson.loads
    dumps = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    import json

    loads = json.loads

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class ErrorAnswer(Exception):
    """The server answered with an error status (300 or more): ``text`` is its body and
    ``retry_after`` the seconds its ``Retry-After`` asks for (None: none said)."""

    def __init__(self, status: int, text: str, retry_after: float | None):
        super().__init__(status, text)
        self.status, self.text, self.retry_after = status, text, retry_after


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


def retry_after(headers: Any) -> float | None:
    """OpenAI's ``retry-after-ms`` or the standard ``Retry-After`` (case-insensitive headers)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def _timed_out(chat_url: str, timeout: float) -> BackendError:
    return BackendError(
        f"request to {chat_url} timed out after {timeout:g} s (raise --timeout for slower answers)", retryable=True
    )


class Transport:
    """Chat requests, health checks and model listings of one backend on one event loop.

    ``chat_urls`` maps each base URL to its chat completions URL; ``headers`` go with every
    request; ``max_connections`` caps the connections open at once (None: no cap)."""

    #: whether :meth:`post_chat` sends ``payload`` (the body serialised once by the backend)
    #: rather than the ``body`` dict itself
    serialised = True

    def __init__(self, chat_urls: Mapping[str, str], headers: Mapping[str, str], max_connections: int | None):
        self.chat_urls = dict(chat_urls)
        self.headers = dict(headers)
        self.max_connections = max_connections

    async def post_chat(self, url: str, body: dict[str, Any], payload: bytes, timeout: float) -> bytes:
        """POST one chat request to the endpoint at base URL ``url``; the answer's raw body.
        Raises :class:`BackendError` when the server cannot be reached in ``timeout`` seconds
        and :class:`ErrorAnswer` when it answers an error status."""
        raise NotImplementedError

    async def models(self, url: str, timeout: float) -> list[str] | None:
        """The model ids ``GET /models`` of ``url`` lists; None when it does not answer 200."""
        raise NotImplementedError

    async def probe(self, url: str, timeout: float) -> bool:
        """Whether the server at ``url`` is up: ``GET /models`` answers any status below 500
        but 404 (the server is up, even if it refuses the key), else ``GET /health`` at the
        server root answers 200 (vLLM and SGLang serve it)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the connections."""


class AiohttpTransport(Transport):
    """Everything through one :class:`aiohttp.ClientSession`, made on first use."""

    def __init__(self, chat_urls: Mapping[str, str], headers: Mapping[str, str], max_connections: int | None):
        super().__init__(chat_urls, headers, max_connections)
        self._session: aiohttp.ClientSession | None = None
        self._request_timeout: aiohttp.ClientTimeout | None = None  # one request's, while it stays the same

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session, made on first use (aiohttp's import takes about 0.1 s)."""
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self.max_connections or 0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self.headers,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        import aiohttp

        if self._request_timeout is None or self._request_timeout.total != seconds:
            self._request_timeout = aiohttp.ClientTimeout(total=seconds)
        return self._request_timeout

    async def post_chat(self, url: str, body: dict[str, Any], payload: bytes, timeout: float) -> bytes:
        import aiohttp

        chat_url = self.chat_urls[url]
        try:
            async with self.session().post(chat_url, data=payload, timeout=self._timeout(timeout)) as resp:
                raw = await resp.read()
                status = resp.status
                if status >= 300:
                    raise ErrorAnswer(status, raw.decode("utf-8", "replace"), retry_after(resp.headers))
        except (asyncio.TimeoutError, TimeoutError):
            raise _timed_out(chat_url, timeout) from None
        except aiohttp.InvalidURL as exc:
            raise BackendError(f"invalid base URL {url!r}: {exc}") from exc
        except aiohttp.ClientError as exc:  # dropped connections, refused connects, payload errors
            raise BackendError(f"connection to {chat_url} failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        return raw

    async def models(self, url: str, timeout: float) -> list[str] | None:
        import aiohttp

        async with self.session().get(f"{url}/models", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            data = loads(await resp.read())
        return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    async def probe(self, url: str, timeout: float) -> bool:
        import aiohttp

        limit = aiohttp.ClientTimeout(total=timeout)
        session = self.session()
        try:
            async with session.get(f"{url}/models", timeout=limit) as resp:
                await resp.read()
                if resp.status < 500 and resp.status != 404:
                    return True
            root = url.removesuffix("/v1")
            async with session.get(f"{root}/health", timeout=limit) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError):
            return False

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class LeanTransport(AiohttpTransport):
    """Chat requests to plain ``http://`` servers through :class:`~proofcritic.llm._http.HTTPClient`
    (a few tens of microseconds of CPU per request); the rest through aiohttp."""

    def __init__(self, chat_urls: Mapping[str, str], headers: Mapping[str, str], max_connections: int | None):
        super().__init__(chat_urls, headers, max_connections)
        self._http = HTTPClient(self.headers)
        #: the lean client's share of ``max_connections`` (None: no cap)
        self._pool = asyncio.Semaphore(max_connections) if max_connections is not None else None

    async def post_chat(self, url: str, body: dict[str, Any], payload: bytes, timeout: float) -> bytes:
        chat_url = self.chat_urls[url]
        if not chat_url.startswith("http://"):
            return await AiohttpTransport.post_chat(self, url, body, payload, timeout)
        try:
            if self._pool is None:
                response = await self._http.post(chat_url, payload, timeout)
            else:
                async with self._pool:
                    response = await self._http.post(chat_url, payload, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise _timed_out(chat_url, timeout) from None
        except ValueError as exc:
            raise BackendError(f"invalid base URL {url!r}: {exc}") from exc
        except HTTPConnectionError as exc:
            raise BackendError(f"connection to {chat_url} failed: {exc}", retryable=True) from exc
        if response.status >= 300:
            raise ErrorAnswer(response.status, response.body.decode("utf-8", "replace"), retry_after(response.headers))
        return response.body

    async def aclose(self) -> None:
        self._http.close()
        await super().aclose()


class OpenAITransport(Transport):
    """The official ``openai`` package: one ``AsyncOpenAI`` per endpoint, which never retries;
    answers are read raw, so the backend parses them as it does the others'."""

    serialised = False
    #: the chat fields the SDK takes as arguments; the others go in ``extra_body``
    _KNOWN = frozenset(
        {"messages", "n", "temperature", "top_p", "max_tokens", "stop", "seed", "logprobs", "top_logprobs"}
    )

    def __init__(
        self,
        chat_urls: Mapping[str, str],
        headers: Mapping[str, str],
        max_connections: int | None,
        *,
        api_key: str | None,
        timeout: float,
    ):
        super().__init__(chat_urls, headers, max_connections)
        import openai

        try:
            import httpx2 as httpx  # what this openai release is built on
        except ImportError:  # pragma: no cover - older openai releases
            import httpx  # type: ignore[no-redef]
        # (None: no cap, as with aiohttp)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.clients: dict[str, Any] = {}
        for url in self.chat_urls:
            try:
                http_client = openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
            except RuntimeError:  # the package was installed without its aiohttp extra
                http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
            self.clients[url] = openai.AsyncOpenAI(
                api_key=api_key or "EMPTY", base_url=url, timeout=timeout, max_retries=0, http_client=http_client
            )

    async def post_chat(self, url: str, body: dict[str, Any], payload: bytes, timeout: float) -> bytes:
        import openai

        kwargs = {k: v for k, v in body.items() if k in self._KNOWN}
        extra = {k: v for k, v in body.items() if k not in self._KNOWN and k != "model"}
        try:
            raw = await self.clients[url].chat.completions.with_raw_response.create(
                model=body["model"], extra_body=extra or None, timeout=timeout, **kwargs
            )
            return raw.content
        except openai.APIConnectionError as exc:  # timeouts included (its aiohttp transport reports drops as timeouts)
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            raise BackendError(f"request to {self.chat_urls[url]} failed: {exc}{cause}", retryable=True) from exc
        except openai.APIStatusError as exc:
            raise ErrorAnswer(exc.status_code, exc.response.text, retry_after(exc.response.headers)) from None

    async def models(self, url: str, timeout: float) -> list[str] | None:
        page = await self.clients[url].models.list(timeout=timeout)
        return [m.id for m in page.data]

    async def probe(self, url: str, timeout: float) -> bool:
        import openai

        try:
            await self.clients[url].models.list(timeout=timeout)
            return True
        except openai.APIStatusError as exc:
            return exc.status_code < 500 and exc.status_code != 404
        except openai.APIError:
            return False

    async def aclose(self) -> None:
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            await client.close()


def make_transport(
    kind: str,
    chat_urls: Mapping[str, str],
    headers: Mapping[str, str],
    max_connections: int | None,
    *,
    api_key: str | None,
    timeout: float,
) -> Transport:
    """The transport ``kind`` ("lean", "aiohttp", "openai") for these endpoints: "lean" uses its
    own client only where some endpoint is plain ``http://``, else aiohttp."""
    if kind == "openai":
        return OpenAITransport(chat_urls, headers, max_connections, api_key=api_key, timeout=timeout)
    if kind == "lean" and any(chat_url.startswith("http://") for chat_url in chat_urls.values()):
        return LeanTransport(chat_urls, headers, max_connections)
    return AiohttpTransport(chat_urls, headers, max_connections)
