"""A cold ``lean --json`` process per check: a local binary, or ``lake env lean`` in a project."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._analysis import DEFAULT_ALLOWED_AXIOMS, finish, not_checked, prepare
from ._base import LeanChecker
from ._resolve import LeanNotFoundError, find_lean, project_lean
from ._types import LeanMessage, LeanResult

_SEVERITIES = {"error": "error", "warning": "warning", "information": "information", "info": "information"}


def message_from_json(obj: dict[str, Any]) -> LeanMessage:
    """One object of ``lean --json`` output (``pos`` 1-based line, 0-based column)."""
    pos = obj.get("pos") or {"line": 1, "column": 0}
    end = obj.get("endPos") or {}
    caption = (obj.get("caption") or "").strip()
    text = str(obj.get("data", ""))
    return LeanMessage(
        severity=_SEVERITIES.get(str(obj.get("severity", "error")), "error"),  # type: ignore[arg-type]
        line=int(pos.get("line", 1)),
        column=int(pos.get("column", 0)),
        end_line=end.get("line"),
        end_column=end.get("column"),
        text=f"{caption}: {text}" if caption else text,
    )


def find_project(project: str | os.PathLike[str]) -> Path:
    """A Lake project folder (one with ``lakefile.lean`` or ``lakefile.toml``)."""
    root = Path(project).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"Lean project folder {project} does not exist")
    if not any((root / name).is_file() for name in ("lakefile.lean", "lakefile.toml")):
        raise InputError(f"{project} is not a Lake project (no lakefile.lean or lakefile.toml)")
    return root


def find_lake(lean: Path | None) -> Path:
    """``lake`` next to the given ``lean``, else on PATH."""
    if lean is not None and (lean.parent / "lake").is_file():
        return lean.parent / "lake"
    if found := shutil.which("lake"):
        return Path(found)
    raise LeanNotFoundError("a Lake project needs `lake` (next to lean or on PATH)")


class LocalLeanChecker(LeanChecker):
    """Runs ``lean --json FILE`` for each check, at most ``concurrency`` at once.

    With ``project`` (a Lake project, Mathlib projects included) the command is
    ``lake env lean --json FILE`` run in the project folder, so ``import Mathlib`` resolves to
    the project's built libraries. A check past its timeout kills the whole process group.
    """

    name = "lean"

    def __init__(
        self,
        lean: str | os.PathLike[str] | None = None,
        *,
        project: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        concurrency: int | None = None,
        memory_mb: int | None = None,
        threads: int | None = None,
        allowed_axioms: Iterable[str] = DEFAULT_ALLOWED_AXIOMS,
        probe_axioms: bool = True,
    ):
        super().__init__(timeout=timeout, allowed_axioms=allowed_axioms, probe_axioms=probe_axioms)
        self.project = find_project(project) if project is not None else None
        if self.project is not None:
            # inside a project the toolchain comes from the project (elan's `lake` picks it)
            named = project_lean(lean)
            self.lean = named or Path("lean")
            self.lake: Path | None = find_lake(named)
        else:
            self.lean = find_lean(lean)
            self.lake = None
        self.concurrency = concurrency or max(1, (os.cpu_count() or 2) // 2)
        self.memory_mb = memory_mb
        self.threads = threads
        self._slots = asyncio.Semaphore(self.concurrency)

    def command(self, path: Path) -> list[str]:
        """The command line that checks ``path``."""
        args = [str(self.lean), "--json"]
        if self.memory_mb:
            args.append(f"--memory={self.memory_mb}")
        if self.threads:
            args.append(f"--threads={self.threads}")
        args.append(str(path))
        if self.project is not None and self.lake is not None:
            return [str(self.lake), "env", *args]
        return args

    async def check(self, source: str, *, timeout: float | None = None) -> LeanResult:
        limit = float(timeout or self.timeout)
        prepared = prepare(source, probe_axioms=self.probe_axioms)
        async with self._slots:
            with tempfile.TemporaryDirectory(prefix="proofcritic-lean-") as folder:
                path = Path(folder) / "Check.lean"
                path.write_text(prepared.text, encoding="utf-8")
                start = time.monotonic()
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *self.command(path),
                        cwd=str(self.project or folder),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        start_new_session=True,
                    )
                except OSError as error:
                    return not_checked("error", f"cannot start lean: {error}", backend=self.name, seconds=0.0)
                try:
                    stdout, stderr = await asyncio.wait_for(proc.communicate(), limit)
                except (asyncio.TimeoutError, asyncio.CancelledError) as error:
                    _kill_group(proc)
                    await proc.wait()
                    if isinstance(error, asyncio.CancelledError):
                        raise
                    return not_checked(
                        "timeout", f"lean ran past {limit:g} s", backend=self.name, seconds=time.monotonic() - start
                    )
                seconds = time.monotonic() - start
        messages, other = parse_json_output(stdout.decode("utf-8", "replace"))
        if proc.returncode not in (0, 1) or (proc.returncode == 1 and not any(m.severity == "error" for m in messages)):
            detail = (stderr.decode("utf-8", "replace") + "\n".join(other)).strip()[-2000:]
            return not_checked(
                "error",
                f"lean exited with status {proc.returncode}: {detail or 'no output'}",
                backend=self.name,
                seconds=seconds,
                messages=messages,
            )
        return finish(prepared, messages, backend=self.name, seconds=seconds, allowed_axioms=self.allowed_axioms)


def parse_json_output(stdout: str) -> tuple[list[LeanMessage], list[str]]:
    """Messages from ``lean --json`` output, and the lines that were not messages."""
    messages: list[LeanMessage] = []
    other: list[str] = []
    for raw in stdout.splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            other.append(line)
            continue
        if isinstance(obj, dict) and "severity" in obj:
            messages.append(message_from_json(obj))
        else:
            other.append(line)
    return messages, other


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
