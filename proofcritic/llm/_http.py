"""A lean HTTP/1.1 client for the chat requests to a plain ``http://`` server.

The OpenAI backend sends thousands of small JSON POSTs to one or a few local servers (vLLM,
SGLang). A general-purpose client pays for what these requests never use (cookies, redirects,
middlewares, multipart payloads, tracing signals): aiohttp costs about 0.2 ms of CPU per request
here, several times this client. This one does exactly: a pool of keep-alive connections per
host (no cap of its own: one per request in flight, reused when idle), ``POST`` with a body of
bytes, a response read by ``Content-Length`` or chunked encoding (or until the server closes),
``Connection: close`` honoured. Nothing else: ``https://`` URLs go through aiohttp.

Failures are plain exceptions the backend maps to its errors: :class:`HTTPConnectionError`
(refused, reset, closed before a complete answer; the connection is dropped) and
``TimeoutError`` when the answer is not complete within the request's ``timeout`` (connecting
included; the connection is dropped). As with aiohttp, a POST is never sent twice by the client
itself: a connection the server closes before answering is an error the caller may retry. To
keep that rare, an idle connection is reused only within ``IDLE_REUSE`` seconds (servers close
idle keep-alive connections after a few seconds: uvicorn, under vLLM and SGLang, after 5).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class HTTPConnectionError(Exception):
    """The connection failed before a complete answer arrived."""

    def __init__(self, message: str, *, reused: bool = False, answered: bool = False):
        super().__init__(message)
        self.reused = reused
        """The request went on a connection used before (it may have been closed while idle)."""
        self.answered = answered
        """Some bytes of an answer had arrived."""


class Response:
    """Status, headers (names in lower case) and body of one answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


_MAX_HEAD = 64 * 1024
IDLE_REUSE = 4.0
"""Seconds an idle connection stays reusable; an older one is closed instead."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the deadline of the request under way
        self._head: tuple[int, dict[str, str]] | None = None
        self._length: int | None = None  # body bytes expected; None: chunked or until close
        self._chunked = False
        self._keep_alive = True

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._fail_connection()  # bytes nobody asked for: the connection is out of step
            return
        self._buffer += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            self._finish(exc=HTTPConnectionError(f"malformed HTTP answer: {exc}", answered=True))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._stop_timer()
            return
        if self._head is not None and self._length is None and not self._chunked:
            status, headers = self._head  # a body delimited by the end of the connection
            self._finish(Response(status, headers, bytes(self._buffer)))
            return
        answered = bool(self._buffer) or self._head is not None
        reason = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
        self._finish(
            exc=HTTPConnectionError(
                f"{reason} before a complete answer",
                reused=self.used,
                answered=answered,
            )
        )

    # -- requests -----------------------------------------------------------------------------
    def send(self, request: bytes, deadline: float) -> asyncio.Future[Response]:
        """Write ``request``; the future holds the answer, or TimeoutError at ``deadline``
        (``loop.time()``)."""
        assert self.transport is not None
        self._buffer.clear()
        self._head = None
        self._length = None
        self._chunked = False
        self._keep_alive = True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._expire, waiter)  # cancelled by _finish
        self.transport.write(request)
        return waiter

    def _expire(self, waiter: asyncio.Future[Response]) -> None:
        self._timer = None
        if not waiter.done():
            self._waiter = None
            self.abort()
            waiter.set_exception(TimeoutError())

    def _parse(self) -> None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise ValueError("the header is too long")
                return
            lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            del self._buffer[: end + 4]
            version, _, rest = lines[0].partition(" ")
            status = int(rest[:3])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                if self._buffer:
                    self._parse()
                return
            connection = headers.get("connection", "").lower()
            self._keep_alive = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
            self._head = (status, headers)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._chunked = True
            elif "content-length" in headers:
                self._length = int(headers["content-length"])
            elif status in (204, 304):
                self._length = 0
            else:
                self._keep_alive = False  # read until the server closes
        status, headers = self._head
        if self._chunked:
            body = self._dechunk()
            if body is not None:
                self._finish(Response(status, headers, body))
        elif self._length is not None and len(self._buffer) >= self._length:
            self._finish(Response(status, headers, bytes(self._buffer[: self._length])))

    def _dechunk(self) -> bytes | None:
        """The body once every chunk (and the trailer) is in the buffer, else None."""
        buffer, pos = self._buffer, 0
        parts: list[bytes] = []
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buffer[pos:line_end]).split(b";")[0].strip() or b"0", 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                return b"".join(parts)
            if len(buffer) < pos + size + 2:
                return None
            parts.append(bytes(buffer[pos : pos + size]))
            pos += size + 2

    def _finish(self, response: Response | None = None, exc: Exception | None = None) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        self._buffer.clear()
        if response is None or not self._keep_alive:
            self._fail_connection()
        if waiter is not None and not waiter.done():
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(response)  # type: ignore[arg-type]

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail_connection(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()


class HTTPClient:
    """Keep-alive connections per host for ``POST`` requests of one event loop."""

    def __init__(self, headers: dict[str, str]):
        self._fixed = "".join(
            f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in ("host", "content-length")
        )
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, int, bytes]] = {}
        self._all: set[_Connection] = set()
        self.closed = False

    def _target(self, url: str) -> tuple[str, int, bytes]:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"not a plain http:// URL: {url!r}")
            port = parts.port or 80
            name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal
            host_header = name if port == 80 else f"{name}:{port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n{self._fixed}".encode("latin-1")
            target = self._targets[url] = (parts.hostname, port, head)
        return target

    async def post(self, url: str, body: bytes, timeout: float) -> Response:
        """POST ``body`` to ``url``: the complete answer within ``timeout`` seconds, or
        TimeoutError / :class:`HTTPConnectionError`."""
        host, port, head = self._target(url)
        request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        deadline = asyncio.get_running_loop().time() + timeout
        connection = await self._acquire(host, port, deadline)
        response = await self._exchange(connection, request, deadline)
        if connection.closed:
            self._all.discard(connection)
        elif not self.closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault((host, port), []).append(connection)
        return response

    async def _exchange(self, connection: _Connection, request: bytes, deadline: float) -> Response:
        try:
            return await connection.send(request, deadline)
        except BaseException:  # a failure, a timeout or a cancellation mid-answer: out of step
            if not connection.closed:
                connection.abort()
            self._all.discard(connection)
            raise
        finally:
            connection.used = True

    async def _acquire(self, host: str, port: int, deadline: float) -> _Connection:
        idle = self._idle.get((host, port))
        if idle:
            oldest = asyncio.get_running_loop().time() - IDLE_REUSE
            while idle:
                connection = idle.pop()  # the most recently used first
                if connection.idle_since >= oldest and not connection.closed and not connection.transport.is_closing():  # type: ignore[union-attr]
                    return connection
                if not connection.closed:
                    connection._fail_connection()
                self._all.discard(connection)
        return await self._connect(host, port, deadline)

    async def _connect(self, host: str, port: int, deadline: float) -> _Connection:
        if self.closed:
            raise HTTPConnectionError("the client is closed")
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), max(deadline - loop.time(), 0.001)
            )
        except asyncio.TimeoutError:
            raise TimeoutError() from None
        except OSError as exc:
            raise HTTPConnectionError(f"cannot connect to {host}:{port}: {type(exc).__name__}: {exc}") from exc
        self._all.add(connection)
        return connection

    def close(self) -> None:
        """Close every connection."""
        self.closed = True
        for connection in list(self._all):
            connection._fail_connection()
        self._all.clear()
        self._idle.clear()
