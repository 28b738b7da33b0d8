"""``--workers N``: one batch split over N worker processes.

One Python process spends about half a millisecond of CPU per request (building the prompt, the
cache, HTTP, parsing, the record), so it answers at most about 2,000 requests a second however
many are in flight; a batch with thousands in flight against a fast server is bound by that one
core. With ``--workers N`` the command's own process starts N workers (``spawn``: fresh
interpreters, so no thread or event loop is copied), each running the same command on one shard
of the input (the items whose place in the input is ``i`` modulo ``N``; ids are made unique over
the whole input as in a one-process run) with ``--concurrency / N`` in flight, the same model
options and the same completion cache (SQLite in WAL mode takes the writers in turn).

Each worker appends its records to a part file beside the output, ``<output>.part-<i>``; the
parent shows the progress from the parts' lines and, when the workers are done (or stopped),
appends the parts to the output and deletes them, then rewrites the output once if an item was
tried again (the rule of one record per id, as in a one-process run). A run killed at any point
loses nothing: parts left by a killed run are merged first when the command runs again, and a
worker whose parent dies stops at once (it checks every half second) rather than write on.
Workers see what is done from the output's records, so the resumed run starts only what is
missing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ..llm import Model, Usage
    from ..runner import RunStats

WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Batch: worker processes, each running a shard of the input with --concurrency / N in flight "
        "(one process answers about 2,000 requests a second at most); server backends only.",
    ),
]

#: seconds between the parent's looks at the part files (the progress it shows)
POLL_SECONDS = 0.25


@dataclass
class WorkerResult:
    """What a worker sends back: its run's stats, its model's usage and its endpoint lines."""

    stats: RunStats
    usage: Usage
    endpoints: list[str] = field(default_factory=list)


def hand_over(model: Model, console: Console) -> None:
    """The command's own model is not used with ``--workers`` (each worker builds its own from
    the same options): close it; a local model is refused (each worker would load a copy)."""
    from ._common import run_with_model

    local = model.backend.describe()

    async def nothing() -> None:
        return None

    run_with_model(model, console, nothing, usage=False)
    if local is not None:
        raise typer.BadParameter(
            f"worker processes are for server backends; each would load its own copy of the local model ({local})",
            param_hint="--workers",
        )


def run_part(model: Model, work: Callable[[], Awaitable[RunStats]]) -> WorkerResult:
    """A worker's run of its shard: ``work()`` in a fresh event loop, ``model`` closed after,
    and what goes back to the parent."""
    import asyncio

    from ._common import endpoint_lines

    async def main() -> RunStats:
        try:
            return await work()
        finally:
            await model.aclose()

    stats = asyncio.run(main())
    return WorkerResult(stats, model.usage, endpoint_lines(model))


def shares(concurrency: int, workers: int) -> list[int]:
    """``concurrency`` split over ``workers`` (the first ones take the remainder), at least 1 each."""
    base, extra = divmod(concurrency, workers)
    return [max(1, base + (1 if i < extra else 0)) for i in range(workers)]


def _watch_parent(parent: int) -> None:
    """Stop this worker at once when its parent is gone (killed): no record is written after."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, daemon=True, name="proofcritic-worker-watch").start()


def _worker(
    connection: Any,
    target: Callable[..., WorkerResult],
    spec: Any,
    shard: int,
    shards: int,
    part: Path,
    concurrency: int,
    parent: int,
    max_input_chars: int | None,
) -> None:
    """A worker process's entry: ``target(spec, shard, shards, part, concurrency)`` under the
    parent's input limit; its :class:`WorkerResult` (or its error, as text) is sent on
    ``connection``, then the process ends at once: the interpreter's tear-down (a tenth of a
    second or more) is not waited for, the work being closed by ``target`` already."""
    from ..io import input_limit

    _watch_parent(parent)
    try:
        with input_limit(max_input_chars):
            result = target(spec, shard, shards, part, concurrency)
        connection.send(("ok", result))
        code = 0
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        connection.send(("error", f"{type(error).__name__}: {error}", traceback.format_exc()))
        code = 1
    connection.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class WorkerFailed(RuntimeError):
    """A worker process failed or died; what it had written is kept (merged into the output)."""


def _count_lines(path: Path, offset: int) -> tuple[int, int]:
    """(newlines after ``offset``, the new offset) of a file that only grows (0 if absent)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return 0, offset
    return data.count(b"\n"), offset + len(data)


def combine(results: list[WorkerResult]) -> tuple[RunStats, Usage]:
    """The workers' stats and usage as one run's."""
    from ..llm import Usage
    from ..runner import RunStats

    stats, usage = RunStats(), Usage()
    for result in results:
        s = result.stats
        stats.total += s.total
        stats.done += s.done
        stats.skipped += s.skipped
        stats.errors += s.errors
        stats.budget_limited += s.budget_limited
        stats.usage.add(s.usage)
        stats.failures.update(s.failures)
        for kind, messages in s.messages.items():
            stats.messages.setdefault(kind, messages.__class__()).update(messages)
        if stats.stopped is None:
            stats.stopped = s.stopped
        usage.add(result.usage)
    kept = [r.stats.extra.get("verdict_counts") for r in results]
    if results and all(k is not None for k in kept):  # grade's verdicts (grading.batch_verdicts)
        stats.extra["verdict_counts"] = tuple(sum(column) for column in zip(*kept))
    return stats, usage


def run_workers(
    target: Callable[..., WorkerResult],
    spec: Any,
    *,
    input_path: Path,
    output: Path,
    workers: int,
    concurrency: int,
    label: str,
    console: Console,
    max_input_chars: int | None = None,
    companions: Sequence[Path] = (),
    prepare: Callable[[], None] | None = None,
    extra: Callable[[RunStats], str] | None = None,
) -> RunStats:
    """Run ``target`` (a module-level function, so a worker can import it) in ``workers``
    processes over the shards of ``input_path`` (see the module), merge their parts into
    ``output`` and return the run's stats; prints the usage line of all workers together.

    ``target(spec, shard, shards, part, concurrency)`` runs one shard: its items are
    ``runner.ShardItems(input_path, shard, shards)``, its records go to ``part`` and what is
    done is read from ``output`` (``runner.run_jsonl``'s ``done_in``).

    ``companions``: files a worker also writes a part of (``runner.part_path(file, shard)``, e.g.
    label's review file); their parts are merged before the output's, both when a killed run's
    parts are found and at the end. ``prepare()`` runs after the leftover parts are merged and
    before the workers start (label makes its output and review file agree there); ``extra``
    adds words to the progress line."""
    import multiprocessing
    from multiprocessing.connection import wait

    from ..io import compact_jsonl, merge_jsonl, read_index
    from ..progress import LiveProgress
    from ..runner import RETRIED_KINDS, RunStats, leftover_parts, part_path, read_items
    from ._common import calls_text

    for companion in companions:  # a killed run's records first, companions before the output
        merge_jsonl(companion, leftover_parts(companion))
    merge_jsonl(output, leftover_parts(output))
    if prepare is not None:
        prepare()
    index = read_index(output)
    retried = index.duplicates or any(v is not None and v[0] in RETRIED_KINDS for v in index.latest.values())
    items = read_items(input_path)
    shown = RunStats(total=len(items))
    already = min(len(index.latest), shown.total)  # finished before (its errors counted at the end)
    parts = [part_path(output, i) for i in range(workers)]
    for part in parts:
        part.unlink(missing_ok=True)
    for companion in companions:
        for i in range(workers):
            part_path(companion, i).unlink(missing_ok=True)
    offsets = [0] * workers
    written = 0
    context = multiprocessing.get_context("spawn")
    answers: dict[int, Any] = {}
    processes = []
    console.print(f"[dim]{workers} worker processes, {concurrency} requests in flight in all[/]", highlight=False)
    try:
        with LiveProgress(label, console, batch=True, extra=extra) as progress:
            waiting: dict[Any, int] = {}
            for i, share in enumerate(shares(concurrency, workers)):
                mine, theirs = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker,
                    args=(theirs, target, spec, i, workers, parts[i], share, os.getpid(), max_input_chars),
                    name=f"proofcritic-worker-{i}",
                )
                process.start()
                theirs.close()
                processes.append(process)
                waiting[mine] = i
            while waiting:
                for connection in wait(list(waiting), timeout=POLL_SECONDS):
                    i = waiting.pop(connection)
                    try:
                        answers[i] = connection.recv()  # type: ignore[union-attr,call-arg]
                    except EOFError:  # it died before answering (killed, out of memory)
                        processes[i].join(5)
                        answers[i] = ("error", f"worker {i} died (exit code {processes[i].exitcode})", "")
                for i, part in enumerate(parts):
                    lines, offsets[i] = _count_lines(part, offsets[i])
                    written += lines
                shown.done = min(shown.total, already + written)
                shown.skipped = already
                progress.update(shown)
            failed = [(i, a) for i, a in sorted(answers.items()) if a[0] != "ok"]
            if failed:
                i, (_, message, trace) = failed[0]
                raise WorkerFailed(f"worker {i} of {workers} failed: {message}" + (f"\n{trace}" if trace else ""))
            results: list[WorkerResult] = [answers[i][1] for i in range(workers)]
            stats, usage = combine(results)
            progress.update(stats)
    finally:  # also when stopped (Ctrl-C) or a worker failed: what the workers wrote is kept
        for process in processes:
            if process.is_alive() and not answers.get(processes.index(process)):
                process.terminate()  # stopped: a worker that has not answered is stopped too
            process.join(10)
        for companion in companions:
            merge_jsonl(companion, [part_path(companion, i) for i in range(workers)])
        merge_jsonl(output, parts)
        if retried:
            compact_jsonl(output, (item_id for item_id, _, _ in items))
    console.print(f"[dim]{calls_text(usage)} ({workers} workers)[/]", highlight=False, soft_wrap=True)
    for i, result in enumerate(results):
        for line in result.endpoints:
            console.print(f"[dim]worker {i}: {line}[/]", highlight=False, soft_wrap=True)
    return stats
