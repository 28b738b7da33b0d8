"""A warm Lean language server reused across checks.

One ``lean --server`` process (``lake serve`` inside a Lake project) speaks the Language Server
Protocol over stdio. Each slot keeps one open document; a check replaces its whole text
(``textDocument/didChange`` with the next version), asks ``textDocument/waitForDiagnostics``
for that version (Lean's own request, answered once the file is fully elaborated and its
diagnostics reported) and reads the ``textDocument/publishDiagnostics`` of that version only.

Lean elaborates a changed document incrementally: the header and every command that ends
before the first changed character are reused from the previous version, not elaborated
again. So the imports of an unchanged header stay loaded between checks (where a Mathlib check
saves most of its time), and files that share a preamble (candidate proofs of one statement,
files built on the same definitions and lemmas) only elaborate what follows the shared part.
The axiom probes of the preamble's theorems sit inside the preamble for the same reason (see
:mod:`proofcritic.lean_checker._analysis`). With several servers, a check goes to the idle one
whose document shares the longest beginning with the new file. A file with a different header
(other imports) is opened as a fresh document, which starts a fresh file worker.

Started with ``-Dserver.reportDelayMs=0`` so that diagnostics are published as soon as they
exist (the default waits 200 ms). A check past its timeout kills the server, which is started
again by the next check; so does a server that exits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._analysis import (
    DEFAULT_ALLOWED_AXIOMS,
    blank_comments_and_strings,
    finish,
    not_checked,
    prepare,
)
from ._base import LeanChecker
from ._local import find_lake, find_project
from ._resolve import find_lean, project_lean
from ._types import LeanMessage, LeanResult

_LSP_SEVERITY = {1: "error", 2: "warning", 3: "information", 4: "information"}
# the header of a Lean file: `module`, `prelude` and `import` lines (with the module system's
# `public`/`meta`/`all` words), after blanking comments
_HEADER = re.compile(
    r"\A(?:\s*(?:module\b|prelude\b|(?:(?:public|private)\s+)?(?:meta\s+)?import\s+(?:all\s+)?[^\s]+))*"
)


class LspError(RuntimeError):
    """The language server answered with an error, or went away."""


class LspConnection:
    """JSON-RPC over a child process's stdio with ``Content-Length`` framing."""

    def __init__(self, argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None):
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.diagnostics: dict[str, tuple[int | None, list[dict[str, Any]]]] = {}
        self.closed = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.closed.is_set()

    async def start(self, root: str | None, timeout: float) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            limit=1 << 26,
        )
        self._reader = asyncio.create_task(self._read_loop())
        root_uri = Path(root).resolve().as_uri() if root else None  # noqa: ASYNC240 - once, at start-up
        await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": root_uri,
                "capabilities": {},
                "initializationOptions": {"editDelay": 0},
            },
            timeout,
        )
        self.notify("initialized", {})

    def _write(self, message: dict[str, Any]) -> None:
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise LspError("the Lean server is not running")
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._write({"method": method, "params": params})

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self._write({"id": ident, "method": method, "params": params})
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ident, None)

    async def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while True:
                length = None
                while True:
                    line = await stdout.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    key, _, value = line.decode("ascii", "replace").partition(":")
                    if key.strip().lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    continue
                self._dispatch(json.loads(await stdout.readexactly(length)))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(LspError("the Lean server exited"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(LspError(str(message["error"].get("message", message["error"]))))
                else:
                    future.set_result(message.get("result"))
            return
        if "id" in message:  # a request from the server (registerCapability, refresh): accept it
            try:
                self._write({"id": message["id"], "result": None})
            except LspError:
                pass
            return
        if method == "textDocument/publishDiagnostics":
            params = message.get("params") or {}
            uri, version = params.get("uri", ""), params.get("version")
            known = self.diagnostics.get(uri, (None, []))[0]
            if known is not None and (version is None or version < known):
                return  # an older version's (or one of no version): never let it stand for a newer one
            self.diagnostics[uri] = (version, params.get("diagnostics") or [])

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self.closed.set()


def _utf16_to_codepoints(line_text: str, character: int) -> int:
    encoded = line_text.encode("utf-16-le")[: 2 * character]
    return len(encoded.decode("utf-16-le", "ignore"))


def message_from_diagnostic(diagnostic: dict[str, Any], lines: list[str]) -> LeanMessage:
    """An LSP diagnostic (0-based lines, UTF-16 columns) as a :class:`LeanMessage`."""
    rng = diagnostic.get("fullRange") or diagnostic.get("range") or {}
    start, end = rng.get("start", {}), rng.get("end", {})

    def column(pos: dict[str, Any]) -> int:
        line, char = int(pos.get("line", 0)), int(pos.get("character", 0))
        return _utf16_to_codepoints(lines[line], char) if 0 <= line < len(lines) else char

    message = diagnostic.get("message", "")
    if isinstance(message, dict):
        message = message.get("text") or json.dumps(message)
    return LeanMessage(
        severity=_LSP_SEVERITY.get(int(diagnostic.get("severity", 1)), "error"),  # type: ignore[arg-type]
        line=int(start.get("line", 0)) + 1,
        column=column(start),
        end_line=int(end["line"]) + 1 if "line" in end else None,
        end_column=column(end) if "line" in end else None,
        text=str(message),
    )


def header_of(text: str) -> str:
    """The header of a Lean file (its ``prelude``/``import`` lines), whitespace normalised."""
    code = blank_comments_and_strings(text)
    return " ".join(_HEADER.match(code).group(0).split())  # type: ignore[union-attr]


def shared_prefix(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` share at their beginning."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class _Slot:
    """One server process with one open document."""

    def __init__(self, owner: LeanServerChecker, index: int):
        self.owner = owner
        folder = Path(owner._folder.name) / f"slot{index}"
        folder.mkdir(parents=True, exist_ok=True)
        # every slot's file is Check.lean, as the cold checker's is: the names Lean gives
        # private declarations (and prints in their messages) include the module name
        self.uri = (folder / "Check.lean").as_uri()
        self.conn: LspConnection | None = None
        self.version = 0
        self.opened = False
        self.text = ""  # the text of the open document (what a new check can reuse)
        self.header = ""
        self.starts = 0
        self.reopens = 0

    async def ensure(self) -> LspConnection:
        if self.conn is None or not self.conn.alive:
            if self.conn is not None:
                await self.conn.close()
            self.conn = LspConnection(self.owner.argv(), cwd=str(self.owner.project or self.owner._folder.name))
            self.opened = False
            self.text = ""
            self.starts += 1
            await self.conn.start(str(self.owner.project) if self.owner.project else None, self.owner.start_timeout)
        return self.conn

    async def check(self, text: str, limit: float) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Diagnostics of ``text``; ``None`` and a reason on timeout or a server failure."""
        conn = await self.ensure()
        header = header_of(text)
        if self.opened and header != self.header:
            # other imports: a fresh file worker for them (Lean's own worker would wait, then
            # exit and be restarted by the server, to load them)
            conn.notify("textDocument/didClose", {"textDocument": {"uri": self.uri}})
            self.opened = False
            self.reopens += 1
        self.version += 1
        if not self.opened:
            conn.notify(
                "textDocument/didOpen",
                {"textDocument": {"uri": self.uri, "languageId": "lean4", "version": self.version, "text": text}},
            )
            self.opened = True
        else:
            conn.notify(
                "textDocument/didChange",
                {"textDocument": {"uri": self.uri, "version": self.version}, "contentChanges": [{"text": text}]},
            )
        self.text, self.header = text, header
        deadline = time.monotonic() + limit
        try:
            await conn.request("textDocument/waitForDiagnostics", {"uri": self.uri, "version": self.version}, limit)
            # the diagnostics of this version come before the answer; wait on in case they do not
            while conn.diagnostics.get(self.uri, (None, []))[0] != self.version:
                if not conn.alive:
                    raise LspError("the Lean server exited")
                if time.monotonic() > deadline:
                    raise asyncio.TimeoutError
                await asyncio.sleep(0.005)
        except (asyncio.TimeoutError, LspError) as error:
            await conn.close()
            self.opened, self.text = False, ""
            return None, "timeout" if isinstance(error, asyncio.TimeoutError) else str(error)
        return conn.diagnostics[self.uri][1], None

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class LeanServerChecker(LeanChecker):
    """Checks through ``pool_size`` warm Lean language servers (one check per server at a time)."""

    name = "lean-server"

    def __init__(
        self,
        lean: str | os.PathLike[str] | None = None,
        *,
        project: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        pool_size: int = 1,
        start_timeout: float = 120.0,
        allowed_axioms: Iterable[str] = DEFAULT_ALLOWED_AXIOMS,
        probe_axioms: bool = True,
    ):
        super().__init__(timeout=timeout, allowed_axioms=allowed_axioms, probe_axioms=probe_axioms)
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.project = find_project(project) if project is not None else None
        if self.project is not None:
            self.lean = project_lean(lean)
            self.lake: Path | None = find_lake(self.lean)
        else:
            self.lean = find_lean(lean)
            self.lake = None
        self.start_timeout = start_timeout
        self._folder = tempfile.TemporaryDirectory(prefix="proofcritic-lean-server-")
        self._slots = [_Slot(self, i) for i in range(pool_size)]
        self._idle: list[_Slot] = list(self._slots)
        self._free: asyncio.Semaphore | None = None  # counts the idle slots

    def argv(self) -> list[str]:
        if self.project is not None and self.lake is not None:
            return [str(self.lake), "serve", "--", "-Dserver.reportDelayMs=0"]
        return [str(self.lean), "--server", "-Dserver.reportDelayMs=0"]

    @property
    def restarts(self) -> int:
        """How many times a server was started again after a timeout or a crash."""
        return sum(max(0, s.starts - 1) for s in self._slots)

    async def check(self, source: str, *, timeout: float | None = None) -> LeanResult:
        limit = float(timeout or self.timeout)
        prepared = prepare(source, probe_axioms=self.probe_axioms)
        slot = await self._acquire(prepared.text)
        start = time.monotonic()
        try:
            try:
                diagnostics, problem = await slot.check(prepared.text, limit)
            except (OSError, LspError, asyncio.TimeoutError) as error:
                if slot.conn is not None:
                    await slot.conn.close()
                return not_checked(
                    "error",
                    f"cannot start the Lean server: {error}",
                    backend=self.name,
                    seconds=time.monotonic() - start,
                )
        finally:
            self._release(slot)
        seconds = time.monotonic() - start
        if diagnostics is None:
            if problem == "timeout":
                return not_checked(
                    "timeout", f"the Lean server ran past {limit:g} s", backend=self.name, seconds=seconds
                )
            return not_checked("error", f"the Lean server failed: {problem}", backend=self.name, seconds=seconds)
        lines = prepared.text.split("\n")
        messages = [message_from_diagnostic(d, lines) for d in diagnostics]
        return finish(prepared, messages, backend=self.name, seconds=seconds, allowed_axioms=self.allowed_axioms)

    async def _acquire(self, text: str) -> _Slot:
        """The idle slot whose document shares the longest beginning with ``text``."""
        if self._free is None:
            self._free = asyncio.Semaphore(len(self._slots))
        await self._free.acquire()
        # nothing is awaited from here on: no other check can take the slot chosen
        slot = max(self._idle, key=lambda s: shared_prefix(s.text, text) if s.opened else -1)
        self._idle.remove(slot)
        return slot

    def _release(self, slot: _Slot) -> None:
        assert self._free is not None
        self._idle.append(slot)
        self._free.release()

    async def close(self) -> None:
        for slot in self._slots:
            await slot.close()
        self._folder.cleanup()
