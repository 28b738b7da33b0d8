"""Run an async function over the records of a JSONL file, appending one result line per item.

What every batch command shares: items already in the output are skipped (so a killed run
resumes where it stopped); a bad input line or a failing item becomes an error record and the
run goes on; results are appended one line at a time; a per-item budget can be applied; progress
is reported through a callback. When a run ends (normally, with errors, stopped early or
cancelled) the output holds one record per id, the latest: a rerun that tried failed items
again rewrites the file without their old error records, atomically (:func:`compact_jsonl`).

The settings that change results are recorded beside the output (``<output>.settings.json``,
:func:`prepare_output`), so that a rerun with other settings stops instead of mixing results.

An exception with a true ``stops_run`` attribute (e.g. a backend whose circuit breaker opened)
stops the run: its item gets its error record, items in flight finish, and items not started
get no record (a rerun does them); ``RunStats.stopped`` holds its message. :class:`LeftForRerun`
ends a run the same way without any record: the item that raised it is left for a rerun too.
"""

from __future__ import annotations

import asyncio
import gc
import glob
import itertools
import json
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .budget import Budget, budget_scope
from .errors import (
    BackendError,
    ContextLengthError,
    InputError,
    ProofcriticError,
    SetupError,
)
from .io import JsonlAppender, compact_jsonl, iter_jsonl, merge_jsonl, read_index, write_json
from .llm import Usage

#: error kinds that a rerun tries again (a server may be back, the set-up fixed); input errors are final
RETRIED_KINDS = ("backend", "internal", "setup")
#: how an error kind reads in the failure summary
_KIND_NAMES = {
    "input": "input error",
    "backend": "backend error",
    "internal": "internal error",
    "setup": "set-up error",
    "error": "error",
}
#: distinct messages remembered per error kind (for the most common one); counts stay exact
_MESSAGES_KEPT = 100


class LeftForRerun(Exception):
    """Raised by ``process`` (:func:`run_jsonl`) for an item that must not be answered now
    (e.g. a problem that met a spent run budget before its first model call): nothing is
    written for it, items in flight finish, no further item starts, and a rerun does it and the
    rest. The run itself ends normally (``RunStats.stopped`` stays None)."""


@dataclass
class RunStats:
    """Progress of a batch, updated as items finish.

    ``errors`` counts the error records written by this run; ``failures`` counts, by error
    kind, the items of the batch whose record is an error at the end, those skipped as already
    done included (so a rerun reports what a clean run would).
    """

    total: int = 0
    done: int = 0
    skipped: int = 0
    errors: int = 0
    budget_limited: int = 0
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    messages: dict[str, Counter[str]] = field(default_factory=dict)
    stopped: str | None = None
    """Why the run stopped before starting every item (an error that stops runs), else None."""

    @property
    def failed(self) -> int:
        """Items whose record is an error."""
        return sum(self.failures.values())

    def add_failure(self, kind: str, message: str) -> None:
        self.failures[kind] += 1
        seen = self.messages.setdefault(kind, Counter())
        if message in seen or len(seen) < _MESSAGES_KEPT:
            seen[message] += 1

    def failure_summary(self) -> str | None:
        """One line: how many items failed, by error kind with its most common message, and how
        many a stopped run left; None when nothing failed."""
        if not self.failed and self.stopped is None:
            return None
        parts = []
        for kind, count in self.failures.most_common():
            name = _KIND_NAMES.get(kind, f"{kind} error")
            message = " ".join(self.messages[kind].most_common(1)[0][0].split())
            message = message if len(message) <= 300 else message[:297] + "..."
            parts.append(f"{name}: {message}" if len(self.failures) == 1 else f"{name} ({count}): {message}")
        line = f"{self.failed} of {self.total} items failed" + (": " + "; ".join(parts) if parts else "")
        if self.stopped is not None:
            left = self.total - self.done
            line += f"; the run stopped early, {left} item(s) not started (rerun to do them)"
        return line


def _error_kind(error: BaseException) -> str:
    if isinstance(error, InputError):
        return "input"
    if isinstance(error, ContextLengthError):  # final too: the same prompt never fits
        return "context"
    if isinstance(error, BackendError):
        return "backend"
    if isinstance(error, SetupError):
        return "setup"
    return "error" if isinstance(error, ProofcriticError) else "internal"


Item = tuple[str, int, dict | InputError]
#: ``(item id, line number)`` of the item whose ``process`` call is running (see :func:`current_item`)
_CURRENT: ContextVar[tuple[str, int] | None] = ContextVar("proofcritic_batch_item", default=None)


def current_item() -> tuple[str, int] | None:
    """``(item id, line number)`` of the batch item being processed, inside :func:`run_jsonl`'s
    ``process`` call (and the tasks it starts); None elsewhere."""
    return _CURRENT.get()


def iter_items(input_path: str | Path) -> Iterator[Item]:
    """``(item id, line number, record or InputError)`` for each non-blank line, read lazily;
    ids are made unique (a repeated id becomes ``ID#line-N``): memory holds the ids seen."""
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
        yield item_id, line, record


def count_items(input_path: str | Path) -> int:
    """How many items :func:`iter_items` yields: the non-blank lines (a bad line is an item too),
    counted without parsing them."""
    p = Path(input_path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    with p.open("rb") as handle:
        return sum(1 for raw in handle if not raw.isspace())


class JsonlItems:
    """The items of a JSONL input (see :func:`iter_items`), never held in memory: each iteration
    reads the file again, one line at a time, and ``len()`` counts its items once (a streamed
    pass). What a batch takes as its items, so that memory stays flat however long the input."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._count: int | None = None

    def __iter__(self) -> Iterator[Item]:
        return iter_items(self.path)

    def __len__(self) -> int:
        if self._count is None:
            self._count = count_items(self.path)
        return self._count


class ShardItems(JsonlItems):
    """One shard of a JSONL input's items for ``shards`` worker processes (``--workers``): the
    items whose place in the input (0, 1, 2 ... over the non-blank lines) is ``shard`` modulo
    ``shards``. Every line is still read, so that ids are made unique over the whole input
    exactly as :func:`iter_items` makes them."""

    def __init__(self, path: str | Path, shard: int, shards: int):
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} of {shards}")
        super().__init__(path)
        self.shard, self.shards = shard, shards

    def __iter__(self) -> Iterator[Item]:
        return itertools.islice(iter_items(self.path), self.shard, None, self.shards)

    def __len__(self) -> int:
        if self._count is None:
            total = count_items(self.path)
            self._count = max(0, (total - self.shard + self.shards - 1) // self.shards)
        return self._count


def part_path(path: str | Path, shard: int) -> Path:
    """Where worker ``shard`` of a ``--workers`` run appends its records of ``path``:
    ``<path>.part-<shard>`` (merged into ``path`` when the workers are done)."""
    path = Path(path)
    return path.with_name(f"{path.name}.part-{shard}")


def leftover_parts(path: str | Path) -> list[Path]:
    """The part files of ``path`` that a killed ``--workers`` run left, in shard order."""
    path = Path(path)
    found = [p for p in path.parent.glob(f"{glob.escape(path.name)}.part-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]))


def read_items(input_path: str | Path) -> JsonlItems:
    """The items of a JSONL file, ``(item id, line number, record or InputError)`` each, read
    lazily (:class:`JsonlItems`: iterate it as often as needed, ``len()`` counts them)."""
    return JsonlItems(input_path)


#: the youngest generation's threshold of the garbage collector during a batch (Python's default: 700)
BATCH_GC_THRESHOLD = 20_000


@contextmanager
def _batch_gc() -> Iterator[None]:
    """Collect garbage less often during a batch: what start-up made (modules, templates, the
    model) is frozen out of the collector's scans, and the youngest generation is collected
    every :data:`BATCH_GC_THRESHOLD` allocations instead of 700. With a thousand requests in
    flight the collector otherwise took about 7% of the client's CPU, scanning the same live
    objects over and over; what a batch leaves as garbage is collected all the same, later."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], BATCH_GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


async def run_jsonl(
    items: Iterable[Item],
    output_path: str | Path,
    process: Callable[[str, dict], Awaitable[dict | BaseModel]],
    *,
    concurrency: int = 16,
    budget: Budget | None = None,
    item_budget: Callable[[Budget | None], Budget | None] | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    total: int | None = None,
    done_in: str | Path | None = None,
) -> RunStats:
    """Call ``process(item_id, record)`` for every item not yet in ``output_path``.

    ``items`` is read lazily, once, as workers free up: at most ``concurrency`` items are in
    flight and only those are held (with a :class:`JsonlItems` the input is streamed); it is
    iterated a second time for the output's order when the output is compacted, so give a list
    or a :class:`JsonlItems`, not a one-shot generator. ``total`` is the number of items (default
    ``len(items)``). The resume index holds each finished id and its error, never a record.

    ``process`` returns the result record (JSON-able); a ``usage`` mapping in it is added to the
    run's totals, and ``budget_limited: true`` is counted. It may return a pydantic model
    instead (its ``usage`` and ``budget_limited`` attributes read the same way), which is written
    by pydantic straight to JSON, as ``model_dump(mode="json")`` would give it. ``item_budget(budget)`` gives the
    budget scope of one item (e.g. ``budget.child(max_calls=...)``); without it items run in
    ``budget``'s scope. ``process`` raises :class:`LeftForRerun` to write nothing for its item and
    start no further one. Items whose latest record is an error of a kind in
    :data:`RETRIED_KINDS` are tried again; at the end the output keeps the latest record of
    each id (see the module docstring). Inside ``process``, :func:`current_item` names the item.

    ``done_in``: a worker process's run (``--workers``): the records of that file (the run's
    output) say which items are done, results go to ``output_path`` (the worker's part, which
    the parent merges into ``done_in``), and the output is never rewritten here (the parent
    does that after the merge).
    """
    if done_in is None:  # the records a killed --workers run left in its part files count as done
        merge_jsonl(output_path, leftover_parts(output_path))
    index = read_index(done_in if done_in is not None else output_path)
    stats = RunStats(total=total if total is not None else len(items))  # type: ignore[arg-type]
    rewrite = index.duplicates and done_in is None
    leaving = False  # an item was left for a rerun (LeftForRerun): start no other

    def pending() -> Generator[Item, None, None]:
        """The items to run, in input order; those already done are counted as they pass."""
        nonlocal rewrite
        for item in items:
            item_id = item[0]
            if item_id in index.latest:
                latest = index.latest[item_id]
                if latest is None or latest[0] not in RETRIED_KINDS:
                    stats.skipped += 1
                    stats.done += 1
                    if latest is not None:
                        stats.add_failure(*latest)
                    continue
                rewrite = True  # its new record will follow the old error record
            yield item

    if on_progress:
        on_progress(stats)
    work = pending()

    try:
        with JsonlAppender(output_path) as out, _batch_gc():

            async def run(item_id: str, line: int, record: dict | InputError) -> None:
                nonlocal leaving
                started = time.perf_counter()
                model: BaseModel | None = None
                _CURRENT.set((item_id, line))
                try:
                    if isinstance(record, InputError):
                        raise record
                    with budget_scope(item_budget(budget) if item_budget else budget):
                        result = await process(item_id, record)
                    if isinstance(result, BaseModel):  # written by pydantic (see JsonlAppender.write_model)
                        model = result
                        usage = getattr(result, "usage", None)
                        if isinstance(usage, Usage):
                            stats.usage.add(usage)
                        stats.budget_limited += bool(getattr(result, "budget_limited", False))
                    else:
                        row = {
                            "id": item_id,
                            "line": line,
                            **result,
                            "seconds": round(time.perf_counter() - started, 3),
                        }
                        if isinstance(result.get("usage"), dict):
                            stats.usage.add(Usage(**result["usage"]))
                        stats.budget_limited += bool(result.get("budget_limited"))
                except LeftForRerun:
                    leaving = True
                    return
                except Exception as error:  # noqa: BLE001 - one item never kills the run: record it and go on
                    message = str(error) if isinstance(error, ProofcriticError) else f"{type(error).__name__}: {error}"
                    kind = _error_kind(error)
                    row = {"id": item_id, "line": line, "error": message, "error_kind": kind}
                    stats.errors += 1
                    stats.add_failure(kind, message)
                    if getattr(error, "stops_run", False) and stats.stopped is None:
                        stats.stopped = message
                if model is not None:
                    out.write_model(
                        {"id": item_id, "line": line}, model, {"seconds": round(time.perf_counter() - started, 3)}
                    )
                else:
                    out.write(row)
                stats.done += 1
                if on_progress:
                    on_progress(stats)

            async def worker() -> None:
                # the workers share one iterator (``next`` never awaits), so each item starts
                # once, in input order, as soon as a worker is free
                for item in work:
                    if stats.stopped is not None or leaving:
                        return  # not started: left for a rerun
                    await run(*item)

            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
            if stats.stopped is not None or leaving:
                for _ in work:  # count what the rest of the input already has done, start nothing
                    pass
            if on_progress and stats.skipped and stats.done == stats.total:
                on_progress(stats)  # a run with nothing left to do still shows the items skipped
    finally:  # also when the run is cancelled: what was appended is kept, once per id
        work.close()
        if rewrite and done_in is None:
            compact_jsonl(output_path, (item_id for item_id, _, _ in items))
    return stats


# -- the settings an output was made with -------------------------------------------------------


def settings_path(output_path: str | Path) -> Path:
    """Where the settings of an output are recorded: ``<output>.settings.json`` beside it."""
    p = Path(output_path)
    return p.with_name(p.name + ".settings.json")


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "default"
    return value if isinstance(value, str) and value else json.dumps(value, ensure_ascii=False)


def settings_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("n=1", "n=3")``: the settings that differ, as recorded and as given now (nested
    settings as ``a.b``; a missing setting counts as None); None when they agree."""
    before, after = _flat(old), _flat(json.loads(json.dumps(new)))
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    if not keys:
        return None
    return (
        ", ".join(f"{k}={_shown(before.get(k))}" for k in keys),
        ", ".join(f"{k}={_shown(after.get(k))}" for k in keys),
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def prepare_output(
    output_path: str | Path,
    settings: Mapping[str, Any],
    *,
    overwrite: bool = False,
    companions: Iterable[str | Path] = (),
    hint: str = "(use --overwrite to start a fresh output, or another --output)",
) -> str | None:
    """Check ``settings`` (those that change results) against the ones recorded with an existing
    output, then record them; call it before any model call.

    ``companions`` are other files or folders that hold the run's results (a review file,
    strategy state): they count as earlier results, and ``overwrite`` removes them with the
    output. Raises :class:`InputError` naming the differences (``hint`` appended) when earlier
    results were made with other settings. Returns a warning when earlier results have no
    recorded settings (an older version made them), else None.
    """
    output = Path(output_path)
    recorded = settings_path(output)
    files = [output, *map(Path, companions)]
    parts = [part for path in files for part in leftover_parts(path)]  # a killed --workers run's
    earlier = [p for p in itertools.chain(files, parts) if p.exists()]
    warning = None
    if overwrite:
        for path in earlier:
            _remove(path)
    elif earlier:
        if recorded.exists():
            try:
                old = json.loads(recorded.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise InputError(f"cannot read {recorded} ({error}) {hint}") from None
            change = settings_change(old if isinstance(old, dict) else {}, settings)
            if change is not None:
                raise InputError(f"{output} was made with {change[0]}; this run has {change[1]} {hint}")
        else:
            warning = f"{output} has no settings file (an older version made it): this run's settings are recorded in {recorded}"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(recorded, dict(settings))
    return warning
