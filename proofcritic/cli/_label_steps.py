"""``proofcritic label-steps``: step labels by rollouts (Math-Shepherd; issue #18)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._constants import DEFAULT_SCORE_MODE
from ..errors import InputError, first_error
from ._batch import OverwriteOpt, exit_status, model_name, prepare, result_settings
from ._common import (
    DryRunOpt,
    ModelOptions,
    ScoreModeOpt,
    check_score_mode,
    run_progress,
    run_with_model,
    show_plan,
    with_model_options,
)

if TYPE_CHECKING:
    from ..runner import RunStats

__all__ = ["label_steps_command"]


def _count_steps(path: Path, mode: str) -> tuple[int, int]:
    """The input's records and the most steps one solution has (unreadable records count 0)."""
    from ..runner import read_items
    from ..steps import split_steps

    items, longest = 0, 0
    for _, _, record in read_items(path):
        items += 1
        proof = record.get("proof") if isinstance(record, dict) else None
        if isinstance(proof, str):
            longest = max(longest, len(split_steps(proof, mode)))  # type: ignore[arg-type]
    return items, longest


@with_model_options
def label_steps_command(
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            help="JSONL with problem, proof (the solution to label) and, for answer problems, answer "
            "(or short_answer); optional id, reference_solution, grading_guidelines.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            help="JSONL: one record per solution in TRL's stepwise format (prompt, completions, labels) with "
            "soft_labels and every rollout as evidence; resumed.",
        ),
    ],
    overwrite: OverwriteOpt = False,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Rollouts per step (Math-Shepherd's N).")] = 8,
    early_stop: Annotated[
        bool,
        typer.Option(
            "--early-stop/--no-early-stop",
            help="Stop a step's rollouts at its first success (hard labels exact, soft labels among those drawn); "
            "--no-early-stop draws all n (exact soft labels).",
        ),
    ] = True,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="With --early-stop: rollouts drawn first, doubling up to n.")
    ] = 1,
    step_mode: Annotated[
        str, typer.Option("--step-mode", help="How solutions are split: paragraphs, lines or blank.")
    ] = "paragraphs",
    judge: Annotated[
        str,
        typer.Option(
            "--judge",
            help="auto: the answer check for records with an answer, the verifier otherwise; answer: every "
            "record needs an answer; verifier: proofs only, answers ignored.",
        ),
    ] = "auto",
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    max_calls: Annotated[
        int | None, typer.Option("--max-calls", min=1, help="Model calls per solution (default: no limit).")
    ] = None,
    max_solution_tokens: Annotated[
        int | None,
        typer.Option("--max-solution-tokens", min=1, help="Tokens per solution, prompts included (default: no limit)."),
    ] = None,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Label each step of each solution by rollouts: n continuations of its prefix, judged by the
    answer check (answer problems) or the verifier (proofs); hard and soft labels."""
    from pydantic import ValidationError
    from rich.console import Console

    from ..pipelines.step_labels import Roller, StepLabelConfig, label_steps_jsonl
    from ..verifier import Verifier

    if judge not in ("auto", "answer", "verifier"):
        raise typer.BadParameter(f"--judge must be auto, answer or verifier, not {judge!r}")
    try:
        config = StepLabelConfig(n=n, early_stop=early_stop, batch=batch, step_mode=step_mode)  # type: ignore[arg-type]
    except ValidationError as error:
        raise typer.BadParameter(first_error(error)[1]) from None
    if not input.exists():
        raise InputError(f"input file not found: {input}")
    if input.resolve() == output.resolve():
        raise typer.BadParameter("--input and --output must be different files")
    console = Console(stderr=True)
    items, longest = _count_steps(input, config.step_mode)
    plan = config.plan(longest)
    plan.note = f"for the longest solution, {longest} step(s); answer problems make no verification"
    show_plan(  # before any model loads; --dry-run stops here
        console,
        "label-steps",
        items,
        plan,
        {"model": model_name(opts), **config.model_dump(), "judge": judge, "max_calls": max_calls, "output": output},
        dry_run=dry_run,
        unit="solution",
    )
    prompt_set = opts.prompt_set()
    the_model = opts.build_model()
    prepare(
        output,
        result_settings(
            "label-steps",
            opts,
            prompt_set,
            **config.model_dump(),
            judge=judge,
            score_mode=score_mode,
            max_calls=max_calls,
            max_solution_tokens=max_solution_tokens,
        ),
        overwrite,
    )
    settings = opts.sampling()
    roller = Roller(the_model, prompts=prompt_set, config=settings)
    verifier = (
        Verifier(the_model, prompts=prompt_set, config=settings, score_mode=check_score_mode(score_mode))
        if judge != "answer"
        else None
    )

    async def main() -> RunStats:
        with run_progress(
            "labeling steps",
            console,
            [the_model],
            lambda s: f"{s.extra.get('good_steps', 0):,} good, {s.extra.get('bad_steps', 0):,} bad steps",
        ) as update:
            stats = await label_steps_jsonl(
                roller,
                verifier,
                input,
                output,
                config=config,
                judge=judge,  # type: ignore[arg-type]  # checked above
                max_calls=max_calls,
                max_tokens=max_solution_tokens,
                concurrency=opts.concurrency or 4,
                on_progress=update,
            )
        console.print(
            f"processed {stats.done - stats.skipped} solution(s), {stats.skipped} already done, "
            f"{stats.errors} error record(s); steps labeled this run: {stats.extra['good_steps']} good, "
            f"{stats.extra['bad_steps']} bad; {stats.budget_limited} stopped by the budget -> {output}"
        )
        return stats

    exit_status(run_with_model(the_model, console, main))
