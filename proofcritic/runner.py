"""Run an async function over the records of a JSONL file, appending one result line per item.

What every batch command shares: items already in the output are skipped (so a killed run
resumes where it stopped); a bad input line or a failing item becomes an error record and the
run goes on; results are appended one line at a time; a per-item budget can be applied; progress
is reported through a callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budget import Budget, budget_scope
from .errors import BackendError, InputError, ProofcriticError
from .io import JsonlAppender, iter_jsonl, read_done
from .llm import Usage

#: error kinds that a rerun tries again (a server may be back); input errors are final
RETRIED_KINDS = ("backend", "internal")


@dataclass
class RunStats:
    """Progress of a batch, updated as items finish."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    errors: int = 0
    budget_limited: int = 0
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] = field(default_factory=dict)


def _error_kind(error: BaseException) -> str:
    if isinstance(error, InputError):
        return "input"
    if isinstance(error, BackendError):
        return "backend"
    return "error" if isinstance(error, ProofcriticError) else "internal"


def read_items(input_path: str | Path) -> list[tuple[str, int, dict | InputError]]:
    """``(item id, line number, record or InputError)`` for each line; ids are made unique."""
    items = []
    seen: set[str] = set()
    for line, record in iter_jsonl(input_path):
        if isinstance(record, InputError):
            item_id = f"line-{line}"
        else:
            value = record.get("id", record.get("problem_id"))
            item_id = str(value) if value is not None else f"line-{line}"
        if item_id in seen:
            item_id = f"{item_id}#line-{line}"
        seen.add(item_id)
        items.append((item_id, line, record))
    return items


async def run_jsonl(
    items: list[tuple[str, int, dict | InputError]],
    output_path: str | Path,
    process: Callable[[str, dict], Awaitable[dict]],
    *,
    concurrency: int = 16,
    budget: Budget | None = None,
    item_budget: Callable[[Budget | None], Budget | None] | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Call ``process(item_id, record)`` for every item not yet in ``output_path``.

    ``process`` returns the result record (JSON-able); a ``usage`` mapping in it is added to the
    run's totals, and ``budget_limited: true`` is counted. ``item_budget(budget)`` gives the
    budget scope of one item (e.g. ``budget.child(max_calls=...)``); without it items run in
    ``budget``'s scope.
    """
    done = {k: r for k, r in read_done(output_path).items() if r.get("error_kind") not in RETRIED_KINDS}
    stats = RunStats(total=len(items))
    work = []
    for item in items:
        if item[0] in done:
            stats.skipped += 1
            stats.done += 1
        else:
            work.append(item)
    if on_progress:
        on_progress(stats)
    gate = asyncio.Semaphore(concurrency)

    with JsonlAppender(output_path) as out:

        async def run(item_id: str, line: int, record: dict | InputError) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    if isinstance(record, InputError):
                        raise record
                    with budget_scope(item_budget(budget) if item_budget else budget):
                        result = await process(item_id, record)
                    row = {"id": item_id, "line": line, **result, "seconds": round(time.perf_counter() - started, 3)}
                    if isinstance(result.get("usage"), dict):
                        stats.usage.add(Usage(**result["usage"]))
                    stats.budget_limited += bool(result.get("budget_limited"))
                except Exception as error:  # one item never kills the run: record it and go on
                    message = str(error) if isinstance(error, ProofcriticError) else f"{type(error).__name__}: {error}"
                    row = {"id": item_id, "line": line, "error": message, "error_kind": _error_kind(error)}
                    stats.errors += 1
                out.write(row)
                stats.done += 1
                if on_progress:
                    on_progress(stats)

        await asyncio.gather(*(run(*item) for item in work))
    return stats
