"""``proofcritic rubric``: marking schemes for points grading, from problems and reference solutions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ._batch import OverwriteOpt, exit_status, prepare, result_settings
from ._common import ModelOptions, bounded, run_progress, run_with_model, with_model_options


@with_model_options
def rubric_command(
    problem: Annotated[
        Path | None, typer.Option("--problem", help="Problem statement (.md/.txt) or Problem JSON.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="The reference solution the scheme follows.")
    ] = None,
    guidelines: Annotated[
        Path | None, typer.Option("--guidelines", help="Notes for the scheme (e.g. known partial results).")
    ] = None,
    max_points: Annotated[
        float | None,
        typer.Option(
            "--max-points",
            callback=bounded("proofcritic.types:Problem", "max_points"),
            help="The scale (default: 7, or the problem's).",
        ),
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option("--input", help="Batch: JSONL of problems (problem, reference_solution, max_points, id)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="The scheme as JSON (one problem), or a JSONL with one scheme per problem (batch; resumed). Default for one problem: print it.",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Write a marking scheme (checkpoints adding up to the scale, zero-credit items, deductions)
    for points grading: edit it, then `grade --scale points --scheme FILE`.

    Exit status 1 when the model wrote no valid scheme."""
    from rich.console import Console

    from ..io import problem_from_record, read_problem
    from ..pipelines.rubric import RubricWriter
    from ..runner import read_items, run_jsonl

    if (problem is None) == (input is None):
        raise typer.BadParameter("give --problem (one problem) or --input (a batch)")
    if input is not None and output is None:
        raise typer.BadParameter("a batch needs --output (a JSONL, one scheme per problem)")
    console = Console(stderr=True)
    the_problem = None
    if problem is not None:
        the_problem = read_problem(problem, reference=reference, guidelines=guidelines, max_points=max_points)
        if not the_problem.reference_solution:
            console.print("note: no reference solution (--reference): the scheme rests on the model's own solution")
    elif not input.exists():  # type: ignore[union-attr]
        raise InputError(f"input file not found: {input}")
    prompt_set = opts.prompt_set()
    model = opts.build_model()
    writer = RubricWriter(model, prompts=prompt_set, config=opts.sampling())
    if input is not None:
        assert output is not None
        prepare(output, result_settings("rubric", opts, prompt_set, max_points=max_points), overwrite)

    async def one() -> int:
        assert the_problem is not None
        [answer] = await writer.write(the_problem)
        if answer.scheme is None:
            console.print(f"no valid scheme: {answer.format_error}")
            return 1
        text = json.dumps(answer.scheme.model_dump(), ensure_ascii=False, indent=2)
        if output is None:
            print(text)
        else:
            output.write_text(text + "\n", encoding="utf-8")
            console.print(f"scheme -> {output}")
        return 0

    async def batch() -> int:
        async def process(item_id: str, record: dict) -> dict:
            the = problem_from_record(record, default_id=item_id)
            if max_points is not None:
                the = the.model_copy(update={"max_points": max_points})
            [answer] = await writer.write(the)
            return {
                "scheme": answer.scheme.model_dump() if answer.scheme else None,
                "format_error": answer.format_error,
                "raw": answer.raw,
                "usage": answer.usage.model_dump(),
            }

        assert input is not None and output is not None  # a batch
        with run_progress("rubrics", console, [model]) as update:
            stats = await run_jsonl(
                read_items(input), output, process, concurrency=opts.concurrency or 8, on_progress=update
            )
        console.print(f"wrote {stats.done - stats.skipped} scheme record(s), {stats.skipped} already done -> {output}")
        exit_status(stats)
        return 0

    status = run_with_model(model, console, one if input is None else batch)
    if status:
        raise typer.Exit(status)
