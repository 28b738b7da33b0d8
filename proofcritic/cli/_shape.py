"""``proofcritic shape``: output-space shaping and teacher corrections (ToRA, SuperCorrect) into SFT and DPO files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._constants import STEP_MODE_HELP, STRATEGIES
from ._batch import OverwriteOpt, exit_status, model_name, prepare, result_settings
from ._common import (
    DryRunOpt,
    ModelOptions,
    bounded,
    build_model,
    calls_text,
    run_progress,
    run_with_model,
    sampling,
    show_plan,
    with_model_options,
)

_TEACHER = "Teacher"
_Str = str | None


@with_model_options
def shape_command(
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Problems with answers: JSONL/JSON/CSV with a problem column (problem, statement, question) and an "
            "answer column (answer, short_answer, final_answer, expected_answer, gold).",
        ),
    ] = None,
    suite: Annotated[_Str, typer.Option("--suite", help="An answer suite instead of --input (answerbench).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", envvar="PROOFCRITIC_DATA", help="Data root of the suites.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N problems.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="JSONL of records, one per problem (every trajectory and correction); resumed."),
    ] = None,
    sft: Annotated[
        Path | None, typer.Option("--sft", help="SFT file for `train sft` [<output stem>.sft.jsonl].")
    ] = None,
    dpo: Annotated[
        Path | None, typer.Option("--dpo", help="DPO pairs for `train dpo` [<output stem>.dpo.jsonl].")
    ] = None,
    overwrite: OverwriteOpt = False,
    k: Annotated[int, typer.Option("-k", min=1, max=1024, help="Trajectories sampled per problem [4].")] = 4,
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help=f"The student's strategy: {' | '.join(STRATEGIES)}.")
    ] = "single",
    max_tool_calls: Annotated[
        int | None, typer.Option("--max-tool-calls", min=0, help="tora: code runs per solution [4].")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Strategy parameter KEY=VALUE, repeatable.")] = None,
    teacher_model: Annotated[
        _Str,
        typer.Option(
            "--teacher-model",
            help="The teacher: BACKEND/MODEL (any backend, e.g. openai/NAME) that corrects wrong trajectories.",
            rich_help_panel=_TEACHER,
        ),
    ] = None,
    teacher_backend: Annotated[
        _Str, typer.Option("--teacher-backend", help="The teacher's backend.", rich_help_panel=_TEACHER)
    ] = None,
    teacher_base_url: Annotated[
        list[str] | None,
        typer.Option(
            "--teacher-base-url", help="The teacher's server URL(s) [OPENAI_BASE_URL].", rich_help_panel=_TEACHER
        ),
    ] = None,
    teacher_api_key: Annotated[
        _Str,
        typer.Option(
            "--teacher-api-key", help="The teacher's API key [--api-key / OPENAI_API_KEY].", rich_help_panel=_TEACHER
        ),
    ] = None,
    teacher_temperature: Annotated[
        float | None,
        typer.Option(
            "--teacher-temperature",
            callback=bounded("proofcritic.llm:SamplingOptions", "temperature"),
            help="The teacher's temperature [1.0].",
            rich_help_panel=_TEACHER,
        ),
    ] = None,
    teacher_max_tokens: Annotated[
        int | None,
        typer.Option(
            "--teacher-max-tokens",
            callback=bounded("proofcritic.llm:SamplingOptions", "max_tokens"),
            help="The teacher's tokens per answer.",
            rich_help_panel=_TEACHER,
        ),
    ] = None,
    teacher_tries: Annotated[
        int,
        typer.Option(
            "--teacher-tries",
            min=0,
            max=16,
            help="Corrections asked per wrong trajectory, until one reaches the right answer (0: keep the correct "
            "trajectories only, no teacher) [1].",
            rich_help_panel=_TEACHER,
        ),
    ] = 1,
    hide_answer: Annotated[
        bool,
        typer.Option("--hide-answer", help="Do not show the teacher the reference answer.", rich_help_panel=_TEACHER),
    ] = False,
    templates: Annotated[
        bool,
        typer.Option(
            "--templates",
            help="Ask the teacher for hierarchical thought templates (a high-level and a detailed plan) of each kept "
            "solution, attached to its SFT row.",
            rich_help_panel=_TEACHER,
        ),
    ] = False,
    templates_in_completion: Annotated[
        bool,
        typer.Option(
            "--templates-in-completion",
            help="With --templates: write each SFT row's plans before its solution in the completion (high-level "
            "plan, detailed plan, solution), so the model learns to plan first; they stay in their columns too.",
            rich_help_panel=_TEACHER,
        ),
    ] = False,
    step_mode: Annotated[str, typer.Option("--step-mode", help=STEP_MODE_HELP)] = "paragraphs",
    max_calls: Annotated[
        int | None,
        typer.Option(
            "--max-calls",
            min=0,
            help="Model calls per problem, the student's and the teacher's together; a problem that spends them "
            "stops there (its record says so).",
        ),
    ] = None,
    parallel_problems: Annotated[int, typer.Option("--parallel-problems", min=1, help="Problems at once.")] = 4,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Sample k trajectories per problem with answers, keep the correct ones (math-verify), have a
    teacher correct each wrong one from its first wrong step, and write an SFT file (correct +
    verified corrections) and a DPO file of (teacher-corrected, student-erroneous) pairs."""
    from pydantic import ValidationError
    from rich.console import Console

    from ..benchmarks import SolveItem, load_suite
    from ..errors import InputError, validation_line
    from ..pipelines import Roles
    from ..pipelines.teacher import TeacherCorrector, ThoughtTemplater
    from ..training.shaping import ShapeConfig, shape_jsonl, shape_plan, shape_summary, write_training_files
    from ._solve import _parse_set, build_strategy

    if (input is None) == (suite is None):
        raise typer.BadParameter("give --input FILE (problems with answers) or --suite answerbench")
    if output is None:
        raise typer.BadParameter("give --output (the records; an existing file is resumed)", param_hint="--output")
    if templates_in_completion and not templates:
        raise typer.BadParameter("needs --templates (the plans it writes)", param_hint="--templates-in-completion")
    needs_teacher = teacher_tries > 0 or templates
    if needs_teacher and teacher_model is None:
        raise typer.BadParameter(
            "the teacher corrects the wrong trajectories: give --teacher-model (or --teacher-tries 0 without "
            "--templates to keep the correct trajectories only)",
            param_hint="--teacher-model",
        )
    try:
        config = ShapeConfig.model_validate(
            {"k": k, "teacher_tries": teacher_tries, "templates": templates, "step_mode": step_mode}
            | {"show_answer": not hide_answer}
        )
    except ValidationError as error:
        raise typer.BadParameter(validation_line(error), param_hint="--step-mode") from None
    flags = {"max_tool_calls": max_tool_calls} if max_tool_calls is not None else {}
    params = flags | _parse_set(set_ or [])
    if strategy in ("single", "tora") and "verify_n" not in params:  # their evidence verification: no use here
        params["verify_n"] = 0
    the_strategy = build_strategy(strategy, params, flags=flags)
    if suite is not None:
        items = load_suite(suite, data_dir=data_dir, limit=limit)
    else:
        assert input is not None
        items = load_suite("answers", limit=limit, source=input)
    without = [i for i in items if not isinstance(i, SolveItem) or i.answer is None]
    if without:
        raise InputError(
            f"shape needs problems with reference answers; {len(without)} of {len(items)} item(s) of "
            f"{suite or input} have none (use an answer suite, or a file with an answer column)"
        )
    sft_path = sft or output.with_name(output.stem + ".sft.jsonl")
    dpo_path = dpo or output.with_name(output.stem + ".dpo.jsonl")
    console = Console(stderr=True)
    teacher_name = None
    if needs_teacher:
        teacher_name = teacher_model if teacher_backend is None else f"{teacher_backend}/{teacher_model}"
    show_plan(
        console,
        f"shape --strategy {strategy} -k {k}",
        len(items),
        shape_plan(the_strategy, config if needs_teacher else config.model_copy(update={"teacher_tries": 0})),
        {
            "model": model_name(opts),
            "teacher": teacher_name,
            **config.model_dump(),
            **the_strategy.config.model_dump(),
            "output": output,
            "sft": sft_path,
            "dpo": dpo_path,
            "max_calls": max_calls,
        },
        dry_run=dry_run,
        unit="problem",
    )
    prompt_set = opts.prompt_set()
    model = opts.build_model()
    teacher = None
    if needs_teacher:
        teacher = build_model(
            teacher_model,
            teacher_backend,
            teacher_base_url,
            teacher_api_key or opts.api_key,
            opts.no_cache,
            opts.cache,
            opts.concurrency,
            opts.timeout,
        )
    settings = result_settings(
        "shape",
        opts,
        prompt_set,
        source=str(input) if input is not None else suite,
        limit=limit,
        strategy=strategy,
        params=params,
        teacher=teacher.name if teacher is not None else None,
        teacher_temperature=teacher_temperature,
        teacher_max_tokens=teacher_max_tokens,
        max_calls=max_calls,
        **config.model_dump(),
    )
    prepare(output, settings, overwrite)
    roles = Roles.from_models(model, prompts=prompt_set, config=opts.sampling())
    teacher_sampling = sampling(teacher_temperature, None, teacher_max_tokens, None)
    corrector = templater = None
    if teacher is not None:
        if teacher_tries:
            corrector = TeacherCorrector(
                teacher,
                prompts=prompt_set,
                config=teacher_sampling,
                step_mode=config.step_mode,
                show_answer=config.show_answer,
            )
        if templates:
            templater = ThoughtTemplater(teacher, prompts=prompt_set, config=teacher_sampling)

    async def main():
        try:
            with run_progress(f"shape {strategy} x{k}", console, [m for m in (model, teacher) if m]) as update:
                return await shape_jsonl(
                    [i for i in items if isinstance(i, SolveItem)],
                    output,
                    roles=roles,
                    strategy=the_strategy,
                    corrector=corrector,
                    templater=templater,
                    config=config,
                    concurrency=parallel_problems,
                    max_calls=max_calls,
                    on_progress=update,
                )
        finally:
            if teacher is not None:
                console.print(
                    f"[dim]teacher {teacher.name}: {calls_text(teacher.usage)}[/]", highlight=False, soft_wrap=True
                )

    stats = run_with_model(model, console, main, closing=[the_strategy, *([teacher] if teacher else [])])
    counts = write_training_files(output, sft_path, dpo_path, templates_in_completion=templates_in_completion)
    total = shape_summary(output)
    console.print(
        f"shaped {stats.done - stats.skipped} problem(s), {stats.skipped} already done, "
        f"{stats.errors} error record(s), {stats.budget_limited} budget-limited -> {output}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(summary_line(total), highlight=False, soft_wrap=True)
    console.print(
        f"sft: {counts['sft']} row(s) ({counts['sft_student']} student, {counts['sft_teacher']} teacher"
        + (f", {counts['sft_templates']} with thought templates" if templates else "")
        + (" (in the completions)" if templates_in_completion else "")
        + f") -> {sft_path}; dpo: {counts['dpo']} pair(s) -> {dpo_path}",
        highlight=False,
        soft_wrap=True,
    )
    exit_status(stats)


def summary_line(total: dict[str, int]) -> str:
    """The counts of a shaping output in one line."""
    get = total.get
    line = (
        f"{get('problems', 0)} problem(s), {get('samples', 0)} trajectories: {get('correct', 0)} correct, "
        f"{get('wrong', 0)} wrong, {get('no_solution', 0)} without a solution; corrections: "
        f"{get('corrected', 0)} verified, {get('correction_wrong', 0)} not verified "
        f"({get('teacher_format_failures', 0)} teacher format failure(s))"
    )
    if get("templates", 0) or get("template_failures", 0):
        line += f"; thought templates: {get('templates', 0)} written, {get('template_failures', 0)} failed the format"
    return line
