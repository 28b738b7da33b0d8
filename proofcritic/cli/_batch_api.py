"""``--batch-api`` and its options on ``grade``, ``label`` and ``eval grade``: the stages of
:mod:`proofcritic.llm._batch_api` run before the command's usual run, each stage a pass of the
command's work into a scratch copy of its output (the real output is written once, by the usual
run, from the cache)."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import one_of, positive_seconds

if TYPE_CHECKING:
    from rich.console import Console

    from ..llm import BatchRun, Model

_PANEL = "Batch API"
BATCH_RETRY_WORDS = ("resubmit", "online")

BatchApiOpt = Annotated[
    bool,
    typer.Option(
        "--batch-api",
        help="Send the model's requests through the server's batch API (files + /v1/batches: half price on "
        "hosted APIs): one batch per stage, polled until done, the answers put into the completion cache, then "
        "the run finishes as usual from the cache. A stopped run polls its batch again (state in "
        "OUTPUT.batch/ or RUN/batch/).",
        rich_help_panel=_PANEL,
    ),
]
BatchWriteOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--batch-write-only",
        help="The offline path: write the stage's batch request file (for vLLM's run_batch) and stop; nothing is "
        "submitted.",
        rich_help_panel=_PANEL,
    ),
]
BatchResultsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--batch-results",
        metavar="FILE",
        help="Import a batch output file (vLLM run_batch's -o, or a provider's output or error file) into the "
        "cache, then go on: the next stage's request file is written, or the run finishes. Implies the offline "
        "path (nothing is submitted).",
        rich_help_panel=_PANEL,
    ),
]
BatchIntervalOpt = Annotated[
    float,
    typer.Option(
        "--batch-interval",
        callback=positive_seconds,
        metavar="SECONDS",
        help="Seconds between two polls of a submitted batch.",
        rich_help_panel=_PANEL,
    ),
]
BatchRetryOpt = Annotated[
    str,
    typer.Option(
        "--batch-retry",
        callback=one_of(BATCH_RETRY_WORDS),
        metavar="resubmit|online",
        help="Requests that failed in a batch (an error, an expired or failed batch): resubmit them in the next "
        "batch (up to 3 batches each, then the item fails) or ask them online.",
        rich_help_panel=_PANEL,
    ),
]
BatchMaxRequestsOpt = Annotated[
    int,
    typer.Option(
        "--batch-max-requests",
        min=1,
        metavar="N",
        help="Requests per batch at most (OpenAI: 50,000; files are also cut below 190 MB): a larger stage goes "
        "out as several batches at once.",
        rich_help_panel=_PANEL,
    ),
]


@dataclass
class BatchApi:
    """The batch API options of a run and the folder of its state."""

    folder: Path
    write_only: bool
    results: Sequence[Path]
    interval: float
    retry: str
    max_requests: int = 50_000

    def start(self, model: Model, console: Console) -> BatchRun:
        """The run's stages (checked now: an OpenAI-compatible model with the cache on)."""
        from ..llm import BatchOptions, BatchRun

        options = BatchOptions(
            mode="file" if self.write_only or self.results else "api",
            interval=self.interval,
            retry=self.retry,  # type: ignore[arg-type]  # checked by the option
            results=list(self.results),
            max_requests=self.max_requests,
        )
        return BatchRun(
            model,
            self.folder,
            options,
            lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
        )


def batch_api(
    enabled: bool,
    write_only: bool,
    results: Sequence[Path] | None,
    interval: float,
    retry: str,
    folder: Path,
    *,
    workers: int = 1,
    max_requests: int = 50_000,
) -> BatchApi | None:
    """The batch options as given (None: no batch API). ``folder``: where its state lives."""
    if not (enabled or write_only or results):
        return None
    if workers > 1:
        raise typer.BadParameter("a batch API run goes in one process", param_hint="--workers")
    for path in results or ():
        if not path.exists():
            raise typer.BadParameter(f"file not found: {path}", param_hint="--batch-results")
    return BatchApi(folder, write_only, list(results or ()), interval, retry, max_requests)


def batch_folder(output: Path) -> Path:
    """Where a batch run of ``output`` keeps its state: ``<output>.batch/``."""
    return output.with_name(output.name + ".batch")


def scratch(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Before a stage's pass: each scratch path a copy of the real file (or none)."""
    for real, copy in pairs:
        copy.parent.mkdir(parents=True, exist_ok=True)
        if real.exists():
            shutil.copyfile(real, copy)
        elif copy.exists():
            copy.unlink()


def remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


async def run_stages(
    run: BatchRun | None, console: Console, collect: Callable[[], Awaitable[Any]], cleanup: Sequence[Path] = ()
) -> bool:
    """The batch stages before a command's usual run (``run`` None: none). True: go on (the
    cache holds every answer); False: the run stops here (the offline path wrote a request file)."""
    if run is None:
        return True
    try:
        ready = await run.prepare(collect)
    finally:
        remove(cleanup)
    if ready and run.report.stages:
        console.print(run.report.line() + "; the run goes on from the cache", markup=False, highlight=False)
    return ready
