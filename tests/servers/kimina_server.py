"""A local server speaking the Kimina Lean Server HTTP API, backed by a real ``lean``.

Endpoints as in project-numina/kimina-lean-server: ``GET /health``, ``POST /check``
(``{"snippet": {"id", "code"}, "timeout", ...}`` -> ``{"id", "time", "error"?, "response"?:
{"env", "messages", "sorries"}}``), ``POST /checks`` (a list of snippets) and the older
``POST /verify`` (``{"codes": [{"custom_id", "proof"|"code"}], "timeout"}`` -> ``{"results":
[...]}``). Like the real server it runs the leading import/blank lines as a header and the rest
as the command, so message lines count from the first line after the header; it answers a
check past its timeout with ``error: "Lean REPL command timed out in T seconds"``.

Each check runs the real ``lean --json`` through :class:`LocalLeanChecker` (without axiom
probes: a client adds its own). ``endpoints`` limits the routes (to test a client's fallback)
and ``api_key`` makes ``Authorization: Bearer KEY`` required.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proofcritic.lean_checker import LocalLeanChecker, blank_comments_and_strings

if TYPE_CHECKING:
    from typing_extensions import Self

_REPL_SEVERITY = {"error": "error", "warning": "warning", "information": "info"}


def split_header(code: str) -> tuple[int, str]:
    """Lines taken as the header (leading imports and blanks), and the body."""
    lines = code.splitlines()
    count = 0
    for line in lines:
        if line.strip().startswith("import ") or not line.strip():
            count += 1
        else:
            break
    return count, "\n".join(lines[count:])


class KiminaServer:
    def __init__(
        self,
        lean: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        endpoints: tuple[str, ...] = ("check", "checks", "verify"),
        concurrency: int = 2,
        sorry_goals: bool = False,
    ):
        self.checker = LocalLeanChecker(lean, probe_axioms=False, concurrency=concurrency, timeout=300)
        self.host, self.port = host, port
        self.api_key = api_key
        self.endpoints = endpoints
        self.sorry_goals = sorry_goals
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        auth = request.headers.get("Authorization", "")
        if not auth:
            return web.json_response({"detail": "Missing API key"}, status=401)
        if auth.removeprefix("Bearer ").strip() != self.api_key:
            return web.json_response({"detail": "Invalid API key"}, status=401)
        return None

    async def run_snippet(self, ident: str, code: str, timeout: float) -> dict[str, Any]:
        header_lines, _ = split_header(code)
        start = time.monotonic()
        result = await self.checker.check(code, timeout=timeout)
        elapsed = round(time.monotonic() - start, 3)
        if result.status == "timeout":
            return {"id": ident, "time": timeout, "error": f"Lean REPL command timed out in {timeout:g} seconds"}
        if result.status == "error":
            return {"id": ident, "time": elapsed, "error": result.error}
        messages, sorries = [], []
        for m in result.messages:
            pos = {"line": m.line - header_lines, "column": m.column}
            entry: dict[str, Any] = {"severity": _REPL_SEVERITY[m.severity], "pos": pos, "data": m.text}
            if m.end_line is not None:
                entry["endPos"] = {"line": m.end_line - header_lines, "column": m.end_column or 0}
            messages.append(entry)
            if m.severity == "warning" and "sorry" in m.text and not self.sorry_goals:
                sorries.append({"pos": pos, "endPos": entry.get("endPos", pos), "goal": ""})
        if self.sorry_goals:
            sorries = [
                {"pos": {"line": line - header_lines, "column": column}, "goal": goal}
                for line, column, goal in await self.goals_of_sorries(code, timeout)
            ]
        response: dict[str, Any] = {"env": 0}
        if messages:
            response["messages"] = messages
        if sorries:
            response["sorries"] = sorries
        return {"id": ident, "time": elapsed, "response": response}

    async def goals_of_sorries(self, code: str, timeout: float) -> list[tuple[int, int, str]]:
        """The goal of each ``sorry`` as the REPL reports it (the hypotheses, then ``⊢``): the
        real lean is asked with a ``?_`` in that sorry's place, and the placeholder's error at
        that position gives the goal (how a prelude file, with no tactics, can have one)."""
        blank = blank_comments_and_strings(code)
        matches = list(re.finditer(r"(?<![\w.'])sorry(?![\w'])", blank))
        # every sorry at once (a lean without Init stops at the first sorry it elaborates): each
        # `?_` is 3 characters shorter, which moves the later holes of its line
        holes, shifted = [], {}
        for match in matches:
            line = code.count("\n", 0, match.start()) + 1
            column = match.start() - (code.rfind("\n", 0, match.start()) + 1)
            earlier = sum(1 for other in holes if other[0] == line)
            holes.append((line, column))
            shifted[(line, column - 3 * earlier)] = (line, column)
        probe = code
        for match in reversed(matches):
            probe = probe[: match.start()] + "?_" + probe[match.end() :]
        result = await self.checker.check(probe, timeout=timeout) if matches else None
        found = {}
        for message in result.errors if result is not None else []:
            where = shifted.get((message.line, message.column))
            if where is not None and "context:\n" in message.text:
                found[where] = message.text.split("context:\n", 1)[1].strip()
        return [(line, column, found[(line, column)]) for line, column in holes if (line, column) in found]

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _check(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        body = await request.json()
        self.requests.append(("check", body))
        snippet = body.get("snippet") or {}
        if "id" not in snippet or "code" not in snippet:
            return web.json_response({"detail": "snippet with id and code required"}, status=422)
        return web.json_response(
            await self.run_snippet(str(snippet["id"]), snippet["code"], float(body.get("timeout", 30)))
        )

    async def _checks(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        body = await request.json()
        self.requests.append(("checks", body))
        timeout = float(body.get("timeout", 30))
        answers = await asyncio.gather(*(self.run_snippet(str(s["id"]), s["code"], timeout) for s in body["snippets"]))
        return web.json_response(list(answers))

    async def _verify(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("verify", body))
        timeout = float(body.get("timeout", 300))
        codes = body.get("codes") or []
        answers = await asyncio.gather(
            *(self.run_snippet(str(c["custom_id"]), c.get("proof") or c.get("code") or "", timeout) for c in codes)
        )
        results = []
        for answer in answers:
            response = answer.get("response")
            if response is not None:
                response = {**response, "time": answer["time"]}
            results.append({"custom_id": answer["id"], "error": answer.get("error"), "response": response})
        return web.json_response({"results": results})

    async def start(self) -> KiminaServer:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/health", self._health)
        if "check" in self.endpoints:
            app.router.add_post("/check", self._check)
        if "checks" in self.endpoints:
            app.router.add_post("/checks", self._checks)
        if "verify" in self.endpoints:
            app.router.add_post("/verify", self._verify)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
