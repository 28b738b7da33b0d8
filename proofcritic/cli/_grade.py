"""``proofcritic grade``: one proof from files, or a JSONL batch with a progress bar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._constants import DEFAULT_SCORE_MODE, DEFAULT_STEP_MODE, STEP_MODE_HELP, STEP_MODES
from ..errors import InputError
from ._batch import OverwriteOpt, exit_status, model_name, prepare, result_settings
from ._batch_api import (
    BatchApiOpt,
    BatchIntervalOpt,
    BatchMaxRequestsOpt,
    BatchResultsOpt,
    BatchRetryOpt,
    BatchWriteOnlyOpt,
    batch_api,
    batch_folder,
    run_stages,
    scratch,
)
from ._common import (
    DryRunOpt,
    ModelOptions,
    ScoreModeOpt,
    bounded,
    check_scale,
    check_score_mode,
    run_progress,
    run_with_model,
    show_plan,
    with_model_options,
    with_readouts,
)
from ._panel import JudgeOpt, PanelOpt, PanelRuleOpt, PanelThresholdOpt, build_panel, grade_with_panel
from ._workers import WorkersOpt

if TYPE_CHECKING:  # imported where used: the parser is built without them
    from rich.console import Console

    from ..llm import Model
    from ..pipelines.normalize import Normalizer
    from ..promptset import PromptSet
    from ..runner import RunStats
    from ..types import GradeResult, Problem
    from ..verifier import CriticVerifier, StepVerifier, Verifier
    from ._workers import WorkerResult

_TOOLS = "Tools (CRITIC)"
_SEVERITY = {"critical_error": "[red]critical error[/]", "justification_gap": "[yellow]justification gap[/]"}


@with_model_options
def grade_command(
    problem: Annotated[
        Path | None, typer.Option("--problem", help="Problem statement (.md/.txt) or Problem JSON.")
    ] = None,
    proof: Annotated[Path | None, typer.Option("--proof", help="The proof to grade.")] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Reference solution shown to the verifier.")
    ] = None,
    guidelines: Annotated[
        Path | None, typer.Option("--guidelines", help="Grading guidelines shown to the verifier.")
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Batch: JSONL with problem, proof (and optional reference_solution, grading_guidelines, max_points, id).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Batch: JSONL of results; an existing file is resumed.")
    ] = None,
    overwrite: OverwriteOpt = False,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Verifications per proof.")] = 1,
    max_points: Annotated[
        float | None,
        typer.Option(
            "--max-points",
            callback=bounded("proofcritic.types:Problem", "max_points"),
            help="Points of a full solution, more than 0 (default: 7, or the problem's).",
        ),
    ] = None,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help="Let the verifier run code while it grades (CRITIC): comma-separated tools, e.g. python.",
            rich_help_panel=_TOOLS,
        ),
    ] = None,
    max_tool_calls: Annotated[
        int,
        typer.Option(
            "--max-tool-calls", min=0, help="With --tools: code runs per verification at most.", rich_help_panel=_TOOLS
        ),
    ] = 3,
    tool_timeout: Annotated[
        float,
        typer.Option("--tool-timeout", min=0.1, help="With --tools: seconds per code run.", rich_help_panel=_TOOLS),
    ] = 10.0,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="ternary: a score in {0, 0.5, 1} (DeepSeekMath-V2); points: whole points 0..max points, against the reference, guidelines and marking scheme.",
        ),
    ] = "ternary",
    scheme: Annotated[
        Path | None,
        typer.Option(
            "--scheme",
            help="With --scale points: a marking scheme, a text file or JSON in the shape of MathArena's grading_scheme.json (a list by problem id, or one entry); a batch record's own 'scheme' field wins.",
        ),
    ] = None,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize",
            help="Rewrite each proof in a plain, neutral style (every step kept) before grading; the record keeps both texts.",
        ),
    ] = False,
    steps: Annotated[
        bool,
        typer.Option(
            "--steps",
            help="Also judge the proof step by step (n step verifications beside the n verifications): a verdict "
            "per step and the first wrong step, marked in the proof; batch records keep them.",
        ),
    ] = False,
    step_mode: Annotated[str, typer.Option("--step-mode", help=f"With --steps: {STEP_MODE_HELP}")] = DEFAULT_STEP_MODE,
    judge: JudgeOpt = None,
    panel: PanelOpt = None,
    panel_rule: PanelRuleOpt = None,
    panel_threshold: PanelThresholdOpt = None,
    workers: WorkersOpt = 1,
    batch_api_on: BatchApiOpt = False,
    batch_write_only: BatchWriteOnlyOpt = False,
    batch_results: BatchResultsOpt = None,
    batch_interval: BatchIntervalOpt = 30.0,
    batch_retry: BatchRetryOpt = "resubmit",
    batch_max_requests: BatchMaxRequestsOpt = 50_000,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Grade a proof: n verifications, each sample's score and issues, and the aggregate."""
    from rich.console import Console

    from ..grading import batch_verdicts, grade, grade_jsonl, grade_plan
    from ..io import read_problem, read_proof
    from ..progress import LiveProgress
    from ..runner import read_items
    from ..types import GradeResult

    batch = input is not None or output is not None
    if batch and (input is None or output is None):
        raise typer.BadParameter("batch mode needs both --input and --output")
    if batch and (problem or proof):
        raise typer.BadParameter("use either --problem/--proof or --input/--output, not both")
    if not batch and (problem is None or proof is None):
        raise typer.BadParameter("give --problem and --proof (or --input and --output for a batch)")
    if workers > 1 and not batch:
        raise typer.BadParameter("worker processes grade a batch (--input and --output)", param_hint="--workers")
    batching = batch_api(
        batch_api_on,
        batch_write_only,
        batch_results,
        batch_interval,
        batch_retry,
        batch_folder(output) if output is not None else Path(),
        workers=workers,
        max_requests=batch_max_requests,
    )
    if batching is not None and not batch:
        raise typer.BadParameter("a batch API grades a batch (--input and --output)", param_hint="--batch-api")
    check_score_mode(score_mode)
    if step_mode not in STEP_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(STEP_MODES)}", param_hint="--step-mode")

    if not batch:  # read inputs before loading any model, so bad input fails fast
        assert problem is not None and proof is not None  # checked above
        the_problem = read_problem(problem, reference=reference, guidelines=guidelines, max_points=max_points)
        the_proof = read_proof(proof)
    tool_names = [t.strip() for t in (tools or "").split(",") if t.strip()]
    if tool_names:  # the tools import only when asked for
        from ..tools import tool_class
    for name in tool_names:  # an unknown tool fails before any model loads
        try:
            tool_class(name)
        except InputError as error:
            raise typer.BadParameter(str(error), param_hint="--tools") from None
    if input is not None and not input.exists():  # a batch
        raise InputError(f"input file not found: {input}")
    check_scale(scale, score_mode)
    if scheme is not None and scale != "points":
        raise typer.BadParameter("a marking scheme needs --scale points", param_hint="--scheme")
    if scheme is not None:  # a bad scheme fails before any model loads (each process loads it again)
        from ..verifier import load_schemes

        load_schemes(scheme)
    built = build_panel(judge, panel, panel_rule, panel_threshold, scale, opts)  # None without judges
    if built is not None:  # a judge panel instead of the one verifier
        if workers > 1:
            raise typer.BadParameter("a judge panel runs in one process", param_hint="--workers")
        if batching is not None:
            raise typer.BadParameter("a judge panel asks its judges online", param_hint="--batch-api")
        if tool_names or normalize or steps or scheme is not None or n != 1 or score_mode != "text":
            raise typer.BadParameter(
                "a judge panel takes each judge's n from its spec, reads scores from the text, "
                "and runs without --tools, --normalize, --steps and --scheme",
                param_hint="--judge/--panel",
            )
        grade_with_panel(
            built,
            the_problem if not batch else None,
            the_proof if not batch else None,
            input,
            output,
            max_points,
            overwrite,
            json_out,
            opts,
            dry_run,
        )
        return
    console = Console(stderr=True)
    items = read_items(input) if input is not None else None  # counted once, for the plan and the progress
    show_plan(  # before any model loads: a large run says what it will cost; --dry-run stops here
        console,
        "grade",
        len(items) if items is not None else 1,
        with_readouts(grade_plan(n, max_tool_calls if tool_names else None, steps=steps), score_mode).add(
            "neutral rewrite", 1 if normalize else 0
        ),
        {
            "model": model_name(opts),
            "n": n,
            "score_mode": score_mode,
            "tools": ",".join(tool_names) or None,
            "max_tool_calls": max_tool_calls if tool_names else None,
            "input": input,
            "output": output,
        },
        dry_run=dry_run,
        unit="proof",
    )
    prompt_set = opts.prompt_set()
    the_model = opts.build_model()
    if batch:  # before any model call: a rerun with other settings stops here
        scaled: dict[str, object] = (
            {"scale": scale, "scheme": str(scheme) if scheme else None} if scale != "ternary" else {}
        )
        if normalize:  # (recorded only when used: older outputs have none)
            scaled["normalize"] = True
        if steps:
            scaled["steps"] = step_mode
        settings = result_settings(
            "grade",
            opts,
            prompt_set,
            n=n,
            max_points=max_points,
            score_mode=score_mode,
            tools=tool_names,
            **scaled,
            max_tool_calls=max_tool_calls if tool_names else None,
            tool_timeout=tool_timeout if tool_names else None,
        )
        assert output is not None  # a batch has both files (checked above)
        prepare(output, settings, overwrite, companions=[batch_folder(output)])
    spec = _GradeSpec(
        opts,
        input,
        output,
        n,
        max_points,
        score_mode,
        scale,
        scheme,
        normalize,
        tool_names,
        max_tool_calls,
        tool_timeout,
        step_mode if steps else None,
    )
    if workers > 1:
        assert input is not None and output is not None  # a batch (checked above)
        from ._workers import hand_over, run_workers

        hand_over(the_model, console)

        stats = run_workers(
            _grade_part,
            spec,
            input_path=input,
            output=output,
            workers=workers,
            concurrency=opts.concurrency or 16,
            label="grading",
            console=console,
            max_input_chars=opts.max_input_chars,
        )
        console.print(
            f"graded {stats.done - stats.skipped} item(s), {stats.skipped} already done, "
            f"{stats.errors} error record(s) -> {output}"
        )
        console.print(batch_verdicts(output, stats=stats))
        exit_status(stats)
        return
    verifier, normalizer = spec.grader(the_model, prompt_set)
    step_verifier = spec.step_verifier(the_model, prompt_set)
    stages = batching.start(the_model, console) if batching is not None else None

    async def stage_pass() -> None:  # one batch stage: the batch into a scratch copy of the output
        assert batching is not None and input is not None and output is not None
        part = batching.folder / "pass.jsonl"
        scratch([(output, part)])
        await grade_jsonl(
            verifier,
            input,
            part,
            n=n,
            max_points=max_points,
            concurrency=opts.concurrency or 16,
            normalizer=normalizer,
            steps=step_verifier,
            items=items,
        )

    async def main() -> RunStats | GradeResult | None:
        cleanup = [batching.folder / "pass.jsonl"] if batching is not None else []
        if not await run_stages(stages, console, stage_pass, cleanup):
            return None  # the offline path: a request file was written
        if batch:
            stats = await _run_batch(
                verifier,
                input,
                output,
                n,
                max_points,
                opts.concurrency or 16,
                console,
                normalizer,
                step_verifier,
                items=items,
            )
            console.print(
                f"graded {stats.done - stats.skipped} item(s), {stats.skipped} already done, "
                f"{stats.errors} error record(s) -> {output}"
            )
            assert output is not None  # a batch
            console.print(batch_verdicts(output, stats=stats))
            return stats
        with LiveProgress("grading", console, [the_model]):
            result = await grade(verifier, the_problem, the_proof, n=n, normalizer=normalizer, steps=step_verifier)
        if json_out:
            print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2))
        else:
            show_result(Console(soft_wrap=True), the_problem, result)
        return result

    outcome = run_with_model(the_model, console, main, closing=[verifier] if tool_names else [])
    if isinstance(outcome, GradeResult):
        no_verdict_exit(outcome, score_mode)
    else:
        exit_status(outcome)


@dataclass
class _GradeSpec:
    """What grading needs besides the model: built once per process (the command's, or each
    worker's with ``--workers``)."""

    opts: ModelOptions
    input: Path | None
    output: Path | None
    n: int
    max_points: float | None
    score_mode: str
    scale: str
    scheme: Path | None
    normalize: bool
    tool_names: list[str]
    max_tool_calls: int
    tool_timeout: float
    step_mode: str | None = None  # --steps: how the proof is cut into steps

    def step_verifier(self, model: Model, prompt_set: PromptSet) -> StepVerifier | None:
        """With --steps, the step verifier (issue #18); else None."""
        if self.step_mode is None:
            return None
        from ..verifier import StepVerifier

        return StepVerifier(model, prompts=prompt_set, config=self.opts.sampling(), mode=self.step_mode)  # type: ignore[arg-type]

    def grader(self, model: Model, prompt_set: PromptSet) -> tuple[Verifier | CriticVerifier, Normalizer | None]:
        """The verifier (points, ternary, or CRITIC with tools) and the normalizer (or None)."""
        from ..verifier import CriticVerifier, PointsVerifier, Verifier, load_schemes

        config = self.opts.sampling()
        plain: Verifier
        if self.scale == "points":
            schemes = load_schemes(self.scheme) if self.scheme is not None else None
            plain = PointsVerifier(model, prompts=prompt_set, config=config, scheme=schemes)
        else:
            plain = Verifier(model, prompts=prompt_set, config=config, score_mode=check_score_mode(self.score_mode))
        verifier: Verifier | CriticVerifier = plain
        normalizer = None
        if self.normalize:
            from ..pipelines.normalize import Normalizer

            normalizer = Normalizer(model, prompts=prompt_set, config=config)
        if self.tool_names:
            from ..tools import get_tool

            tools_built = [get_tool(name, timeout=self.tool_timeout) for name in self.tool_names]
            verifier = CriticVerifier(plain, tools_built, max_tool_calls=self.max_tool_calls)
        return verifier, normalizer


def _grade_part(spec: _GradeSpec, shard: int, shards: int, part: Path, concurrency: int) -> WorkerResult:
    """A worker process of ``grade --workers``: grade one shard of the input into ``part``."""
    from ..grading import grade_jsonl
    from ..runner import ShardItems
    from ._workers import run_part

    assert spec.input is not None and spec.output is not None
    model = spec.opts.build_model()
    verifier, normalizer = spec.grader(model, spec.opts.prompt_set())

    async def work() -> RunStats:
        try:
            return await grade_jsonl(
                verifier,
                spec.input,  # type: ignore[arg-type]
                part,
                n=spec.n,
                max_points=spec.max_points,
                concurrency=concurrency,
                normalizer=normalizer,
                steps=spec.step_verifier(model, spec.opts.prompt_set()),
                items=ShardItems(spec.input, shard, shards),  # type: ignore[arg-type]
                done_in=spec.output,
            )
        finally:
            if spec.tool_names:
                await verifier.aclose()  # type: ignore[union-attr]

    return run_part(model, work)


def no_verdict_exit(result: GradeResult, score_mode: str) -> None:
    """One proof graded without any scored verification: a line on stderr and exit status 1 (as
    ``solve`` without a valid proof and ``meta-verify`` without a meta score). In a batch such a
    proof is a result like any other, not a failed item."""
    a = result.aggregate
    if a.valid == 0:
        hint = "; --score-mode auto reads a score out by likelihood" if score_mode == "text" else ""
        typer.echo(f"no verdict: none of the {a.n} verification(s) wrote a valid score{hint}", err=True)
        raise typer.Exit(1)


async def _run_batch(
    verifier, input, output, n, max_points, concurrency, console, normalizer=None, steps=None, items=None
) -> RunStats:
    from ..grading import grade_jsonl

    with run_progress("grading", console, [verifier.model]) as update:
        return await grade_jsonl(
            verifier,
            input,
            output,
            n=n,
            max_points=max_points,
            concurrency=concurrency,
            on_progress=update,
            normalizer=normalizer,
            steps=steps,
            items=items,
        )


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:g}"


def show_result(console: Console, problem: Problem, result: GradeResult) -> None:
    """Each sample's score and issues, then the aggregate and the points."""
    from rich.markup import escape

    from ..verifier import counts_note, shown_score

    for index, v in enumerate(result.verifications, start=1):
        source = ""
        if v.score_source == "likelihood" and v.score_distribution:
            dist = ", ".join(f"{k}: {p:.2f}" for k, p in v.score_distribution.items())
            source = f" [dim](by likelihood: {dist}; expected {v.expected_score:.2f})[/]"
        elif v.score_source == "guided":
            source = " [dim](by guided choice)[/]"
        status = "" if v.format_ok else f" [red]format failure:[/] {escape(v.format_error or '')}"
        console.print(f"[bold]verification {index}[/]: score {shown_score(v)}{source}{status}")
        for call in v.tool_calls or []:
            outcome = "ok" if call.ok else f"[red]{escape(call.error or 'failed')}[/]"
            first = (call.stdout.strip().splitlines() or [""])[0][:100]
            shown = f": {escape(first)}" if first else ""
            console.print(f"  ran {call.tool} ({call.duration:.1f} s, {outcome}){shown}")
        for issue in v.issues:
            where = f" at {escape(issue.location)!s}" if issue.location else ""
            label = _SEVERITY.get(issue.severity, "issue")
            console.print(f"  - {label}{where}: {escape(issue.description)}")
    if result.step_verifications is not None:  # grade --steps
        from ._steps_view import show_steps

        show_steps(console, problem, result)
    a = result.aggregate
    if a.valid == 0:
        console.print(
            f"[bold]aggregate[/]: no verdict: no verification out of {a.n} produced a score ({counts_note(a)})"
        )
        return
    console.print(
        f"[bold]aggregate[/] over {a.valid}/{a.n} scored: mean {a.mean:.3g}, min {_fmt(a.min)}, "
        f"majority {_fmt(a.majority)} -> [bold]{a.points:.3g} / {problem.max_points:g} points[/] ({counts_note(a)})"
    )
