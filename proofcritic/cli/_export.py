"""``proofcritic export RUN --out DIR``: a run as a Hugging Face data set (issue 21)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError

__all__ = ["export_command"]


def export_command(
    run: Annotated[
        Path,
        typer.Argument(
            help="A label run (label --output or --review), a grade run (grade --output) or a label-steps output."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The folder to write (new or empty).")],
    what: Annotated[
        str | None,
        typer.Option(
            "--what",
            help="labels | dv | dmv (a label run), grades (a grade run), steps (a label-steps output) "
            "[the run's own: labels, grades or steps].",
        ),
    ] = None,
    input_path: Annotated[
        Path | None,
        typer.Option("--input", help="A grade run's batch input, for the problem and proof columns."),
    ] = None,
    decisions: Annotated[
        Path | None,
        typer.Option("--decisions", help="A label run's review decisions [RUN.reviews.jsonl]; human decisions win."),
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub", help="Also push the data set and its card to this Hub repo (needs network and a token)."
        ),
    ] = None,
) -> None:
    """Write a run as a Hugging Face `datasets` data set: save_to_disk Arrow, a Parquet file and a
    dataset card (model, prompts, settings, counts, date). Nothing is written on an error."""
    from ..training.export import export_run, hub_offline, read_export
    from ..training.export import push_to_hub as push

    if push_to_hub is not None and hub_offline():
        raise InputError(f"--push-to-hub {push_to_hub}: the Hub is switched off here (HF_HUB_OFFLINE); nothing written")
    export = read_export(run, what, input_path, decisions)
    export_run(export, out)
    counts = ", ".join(f"{k} {v}" for k, v in export.counts.items() if not isinstance(v, dict))
    print(
        f"exported {len(export.rows)} {export.what} row(s) of {run} ({export.kind} run: {counts}) to {out}",
        file=sys.stderr,
    )
    if push_to_hub is not None:
        push(out, push_to_hub)
        print(f"pushed to https://huggingface.co/datasets/{push_to_hub}", file=sys.stderr)
