"""A client of the Kimina Lean Server HTTP API (project-numina/kimina-lean-server).

``POST {url}/check`` with ``{"snippet": {"id", "code"}, "timeout", "reuse"}`` answers
``{"id", "time", "error", "response": {"env", "messages", "sorries"}}``, where each message is
the Lean REPL's ``{"severity": "error"|"warning"|"info", "pos": {"line", "column"}, "endPos",
"data"}``. Servers that only have the older ``POST {url}/verify`` (``{"codes": [{"custom_id",
"proof"}], "timeout"}`` -> ``{"results": [{"custom_id", "error", "response"}]}``) are used
through that endpoint when ``/check`` is not found. An API key goes in ``Authorization: Bearer``.

The server runs a file's leading ``import`` lines (and blank lines) as a header and the rest as
a REPL command, so message lines count from the first line of that rest; the client adds the
header's line count back, so positions are those of the file sent.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Iterable
from typing import Any

from ._analysis import DEFAULT_ALLOWED_AXIOMS, finish, not_checked, prepare
from ._base import LeanChecker
from ._types import CheckStatus, LeanMessage, LeanResult, MessageSeverity, SorryGoal

_SEVERITIES: dict[str, MessageSeverity] = {
    "error": "error",
    "warning": "warning",
    "info": "information",
    "information": "information",
    "trace": "information",
}


def header_line_count(code: str) -> int:
    """Lines the Kimina server takes as the header: leading ``import`` and blank lines."""
    count = 0
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith("import ") or not stripped:
            count += 1
        else:
            break
    return count


def message_from_repl(obj: dict[str, Any], line_offset: int = 0) -> LeanMessage:
    """One message of the Lean REPL's JSON, lines shifted by ``line_offset``."""
    pos = obj.get("pos") or {"line": 1, "column": 0}
    end = obj.get("endPos") or None
    return LeanMessage(
        severity=_SEVERITIES.get(str(obj.get("severity", "error")), "error"),
        line=int(pos.get("line", 1)) + line_offset,
        column=int(pos.get("column", 0)),
        end_line=int(end["line"]) + line_offset if end and "line" in end else None,
        end_column=int(end["column"]) if end and "column" in end else None,
        text=str(obj.get("data", "")),
    )


class KiminaChecker(LeanChecker):
    """Checks through a Kimina Lean Server at ``url`` (at most ``concurrency`` requests at once)."""

    name = "kimina"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        concurrency: int = 8,
        http_slack: float = 30.0,
        reuse: bool = True,
        allowed_axioms: Iterable[str] = DEFAULT_ALLOWED_AXIOMS,
        probe_axioms: bool = True,
    ):
        super().__init__(timeout=timeout, allowed_axioms=allowed_axioms, probe_axioms=probe_axioms)
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.http_slack = http_slack
        self.reuse = reuse
        self._slots = asyncio.Semaphore(concurrency)
        self._session: Any = None
        self._ids = itertools.count(1)
        self._endpoint: str | None = None

    async def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def check(self, source: str, *, timeout: float | None = None) -> LeanResult:
        import aiohttp

        limit = float(timeout or self.timeout)
        prepared = prepare(source, probe_axioms=self.probe_axioms)
        ident = f"proofcritic-{next(self._ids)}"
        async with self._slots:
            session = await self._client()
            start = time.monotonic()
            try:
                answer = await self._post(session, ident, prepared.text, limit)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as failure:
                return not_checked(
                    "error",
                    f"Kimina server at {self.url} failed: {type(failure).__name__}: {failure}",
                    backend=self.name,
                    seconds=time.monotonic() - start,
                )
            seconds = time.monotonic() - start
        error = answer.get("error")
        response = answer.get("response") or {}
        if error and not response:
            status: CheckStatus = "timeout" if "timed out" in str(error).lower() else "error"
            return not_checked(status, f"Kimina server: {error}", backend=self.name, seconds=seconds)
        offset = header_line_count(prepared.text)
        messages = [message_from_repl(m, offset) for m in response.get("messages") or []]
        result = finish(
            prepared,
            messages,
            backend=self.name,
            seconds=seconds,
            allowed_axioms=self.allowed_axioms,
            sorry_reported=bool(response.get("sorries")),
        )
        for sorry in response.get("sorries") or []:
            where = message_from_repl({"pos": sorry.get("pos"), "data": ""}, offset)
            line, added = prepared.locate(where.line)
            if not added:
                result.sorries.append(SorryGoal(line=line, column=where.column, goal=str(sorry.get("goal") or "")))
        return result

    async def _post(self, session: Any, ident: str, code: str, limit: float) -> dict[str, Any]:
        import aiohttp

        client_timeout = aiohttp.ClientTimeout(total=limit + self.http_slack)
        seconds = max(1, math.ceil(limit))
        if self._endpoint in (None, "check"):
            body = {"snippet": {"id": ident, "code": code}, "timeout": seconds, "reuse": self.reuse}
            async with session.post(f"{self.url}/check", json=body, timeout=client_timeout) as resp:
                if resp.status == 404 and self._endpoint is None:
                    self._endpoint = "verify"
                else:
                    await _raise_for(resp)
                    self._endpoint = "check"
                    return dict(await resp.json())
        body = {"codes": [{"custom_id": ident, "proof": code}], "timeout": seconds, "disable_cache": not self.reuse}
        async with session.post(f"{self.url}/verify", json=body, timeout=client_timeout) as resp:
            await _raise_for(resp)
            results = (await resp.json()).get("results") or []
        if not results:
            raise ValueError("the /verify answer has no results")
        return dict(results[0])

    async def health(self) -> bool:
        """Whether ``GET {url}/health`` answers."""
        import aiohttp

        session = await self._client()
        try:
            async with session.get(f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _raise_for(resp: Any) -> None:
    import aiohttp

    if resp.status >= 400:
        text = (await resp.text())[:500]
        raise aiohttp.ClientResponseError(
            resp.request_info, resp.history, status=resp.status, message=f"HTTP {resp.status}: {text}"
        )
