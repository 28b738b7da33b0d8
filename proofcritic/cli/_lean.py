"""``proofcritic lean-check FILE...``: check Lean 4 files with a local lean, a Lake project,
a warm language server or a Kimina Lean Server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import InputError
from ..io import read_text
from ..lean_checker import LeanResult, get_checker

__all__ = ["lean_check_command"]


def lean_check_command(
    files: Annotated[list[Path], typer.Argument(help="Lean 4 files to check.", show_default=False)],
    lean: Annotated[str | None, typer.Option("--lean", help="The lean binary (env: PROOFCRITIC_LEAN).")] = None,
    project: Annotated[
        Path | None, typer.Option("--project", help="A Lake project to check in (`lake env lean`), e.g. one with Mathlib.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per file.")] = 60.0,
    server: Annotated[
        tuple[str, str] | None,
        typer.Option("--server", metavar="KIND URL", help="Check on a server instead: `--server kimina http://host:port`."),
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Kimina API key (env: KIMINA_API_KEY).")] = None,
    warm: Annotated[bool, typer.Option("--warm", help="Check all files through one warm `lean --server`.")] = False,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Files checked at once.")] = None,
    allow_axiom: Annotated[
        list[str] | None, typer.Option("--allow-axiom", help="Also allow this axiom (repeatable), e.g. Lean.ofReduceBool.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result per file.")] = False,
) -> None:
    """Check Lean 4 files; a file passes with no error, no sorry/admit and no non-standard axiom.

    Exit status 0 when every file passes, 1 when one does not, 2 for bad input."""
    sources = [(path, read_text(path, "Lean file")) for path in files]
    if server is not None:
        kind, url = server
        if kind != "kimina":
            raise InputError(f"unknown server kind {kind!r}: only `kimina` is supported")
        checker = get_checker(
            "kimina", url=url, api_key=api_key or os.environ.get("KIMINA_API_KEY"), timeout=timeout, **_extra(concurrency, "concurrency")
        )
    elif warm:
        checker = get_checker("server", lean=lean, project=project, timeout=timeout, **_extra(concurrency, "pool_size"))
    else:
        checker = get_checker("local", lean=lean, project=project, timeout=timeout, **_extra(concurrency, "concurrency"))
    if allow_axiom:
        checker.allowed_axioms = checker.allowed_axioms | frozenset(allow_axiom)

    async def run() -> list[LeanResult]:
        async with checker:
            return await checker.check_many([text for _, text in sources])

    results = asyncio.run(run())
    console = Console()
    for (path, _), result in zip(sources, results):
        if as_json:
            print(json.dumps({"file": str(path), **result.model_dump(mode="json")}, ensure_ascii=False))
            continue
        colour = "green" if result.ok else "red"
        console.print(f"[bold {colour}]{result.status.upper()}[/] {escape(str(path))} ({result.backend}, {result.seconds:.2f} s)")
        for reason in result.reasons:
            console.print(f"  - {escape(reason)}")
        for message in result.messages:
            console.print(f"  {escape(str(path))}:{escape(str(message))}", highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _extra(value: int | None, name: str) -> dict[str, int]:
    return {name: value} if value else {}
