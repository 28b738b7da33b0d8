"""Judge panels on the command line: ``--judge SPEC`` (repeatable) or ``--panel FILE``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..llm import Model
    from ..pipelines.panel import Panel
    from ._common import ModelOptions

_PANEL = "Judge panel"
JudgeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--judge",
        metavar="SPEC",
        help="A judge of a panel, repeatable: MODEL[,base_url=URL][,api_key_env=VAR][,prompts=DIR][,n=N][,name=NAME]. With two or more, the judges grade in parallel and reconcile once when they disagree.",
        rich_help_panel=_PANEL,
    ),
]
PanelOpt = Annotated[
    Path | None,
    typer.Option(
        "--panel",
        help='A panel file (JSON): {"judges": [{"model", "base_url", "api_key_env", "prompts", "n", "name"}], "rule", "threshold"}.',
        rich_help_panel=_PANEL,
    ),
]
PanelRuleOpt = Annotated[
    str | None,
    typer.Option(
        "--panel-rule",
        help="min (default) | mean | median | majority over the judges' verdicts.",
        rich_help_panel=_PANEL,
    ),
]
PanelThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--panel-threshold",
        min=0,
        metavar="POINTS",
        help="Reconcile when the judges' verdicts spread by more than this many points (default 2 on the points scale, half the scale on the ternary one).",
        rich_help_panel=_PANEL,
    ),
]


def judge_model(spec: Any, opts: ModelOptions) -> Model:
    """The model of a judge spec (``MODEL[,base_url=...,api_key_env=...]``: a panel's judge, eval
    critic's critic): the command's cache, concurrency, timeout and transport; the spec's base URL
    and API key (from ``api_key_env``) where it gives them, else the command's."""
    from ._common import build_model

    return build_model(
        spec.model,
        None,
        spec.base_url or opts.base_url,
        os.environ.get(spec.api_key_env) if spec.api_key_env else opts.api_key,
        opts.no_cache,
        opts.cache,
        opts.concurrency,
        opts.timeout,
        max_connections_per_host=opts.max_connections_per_host,
        transport=opts.transport,
        routing=opts.routing,
        routing_epsilon=opts.routing_epsilon,
    )


def build_panel(
    judges: list[str] | None,
    panel_file: Path | None,
    rule: str | None,
    threshold: float | None,
    scale: str,
    opts: ModelOptions,
) -> tuple[Panel, list[Model], dict[str, Any]] | None:
    """The panel the options describe (None without --judge and --panel), its models (to close),
    and its settings (for a batch's rerun check). Each judge's model takes the command's cache,
    concurrency and timeout; its API key from ``api_key_env``, else the command's."""
    if not judges and panel_file is None:  # (before the imports: a run without a panel needs none)
        if rule is not None or threshold is not None:
            raise typer.BadParameter("needs --judge or --panel", param_hint="--panel-rule/--panel-threshold")
        return None
    from ..pipelines.panel import PANEL_RULES, Panel, load_panel, parse_judge
    from ..promptset import PromptSet
    from ..verifier import PointsVerifier, Verifier

    if judges and panel_file is not None:
        raise typer.BadParameter("give --judge or --panel, not both", param_hint="--panel")
    specs, file_rule, file_threshold = ([parse_judge(j) for j in judges or []], None, None)
    if panel_file is not None:
        loaded = load_panel(panel_file)
        specs, file_rule, file_threshold = loaded.judges, loaded.rule, loaded.threshold
    chosen_rule = rule or file_rule or "min"
    if chosen_rule not in PANEL_RULES:
        raise typer.BadParameter(
            f"must be one of {', '.join(PANEL_RULES)}, not {chosen_rule!r}", param_hint="--panel-rule"
        )
    models: list[Model] = []
    verifiers: list[Verifier] = []
    default_prompts = opts.prompt_set()
    for spec in specs:
        model = judge_model(spec, opts)
        prompts = PromptSet.load(spec.prompts) if spec.prompts else default_prompts
        if scale == "points":
            verifiers.append(PointsVerifier(model, prompts=prompts, config=opts.sampling()))
        else:
            verifiers.append(Verifier(model, prompts=prompts, config=opts.sampling(), score_mode="text"))
        models.append(model)
    names: list[str] = []
    for spec in specs:  # unique names: the same model twice is "MODEL" and "MODEL#2"
        label, count = spec.label, 1
        while label in names:
            count += 1
            label = f"{spec.label}#{count}"
        names.append(label)
    panel = Panel(
        verifiers,
        rule=chosen_rule,
        threshold=threshold if threshold is not None else file_threshold,
        n=[s.n for s in specs],
        names=names,
    )
    settings = {
        "panel": [s.model_dump(exclude_none=True) for s in specs],
        "panel_rule": chosen_rule,
        "panel_threshold": panel.threshold,
    }
    return panel, models, settings


def grade_with_panel(
    built: tuple[Panel, list[Model], dict[str, Any]],
    problem: Any,
    proof: Any,
    input: Path | None,
    output: Path | None,
    max_points: float | None,
    overwrite: bool,
    json_out: bool,
    opts: ModelOptions,
    dry_run: bool = False,
) -> None:
    """``grade`` with a judge panel: one proof (printed) or a batch (JSONL, resumed)."""
    import json

    from rich.console import Console

    from ..budget import CallPlan
    from ..pipelines.panel import panel_jsonl
    from ..runner import read_items
    from ._batch import exit_status, prepare, result_settings
    from ._common import run_progress, run_with_model, show_plan, usage_line

    panel, models, settings = built
    console = Console(stderr=True)
    plan = CallPlan().add("verification", len(panel.judges), sum(panel.n)).add("reconciliation", len(panel.judges))
    show_plan(
        console,
        "grade (judge panel)",
        len(read_items(input)) if input is not None else 1,
        plan,
        {"judges": ", ".join(panel.names), "rule": panel.rule, "input": input, "output": output},
        dry_run=dry_run,
        unit="proof",
    )
    if input is not None:
        assert output is not None
        prepare(
            output,
            result_settings("grade", opts, opts.prompt_set(), max_points=max_points, scale=panel.scale, **settings),
            overwrite,
        )

    async def work() -> Any:
        try:
            if input is not None:
                assert output is not None  # a batch has both files
                with run_progress("panel grading", console, models) as update:
                    stats = await panel_jsonl(
                        panel,
                        input,
                        output,
                        max_points=max_points,
                        concurrency=opts.concurrency or 8,
                        on_progress=update,
                    )
                console.print(
                    f"graded {stats.done - stats.skipped} item(s), {stats.skipped} already done, "
                    f"{stats.errors} error record(s) -> {output}"
                )
                return stats
            return await panel.grade(problem, proof.text)
        finally:
            for name, model in zip(panel.names, models):
                console.print(f"[dim]judge {name}:[/]", highlight=False, end=" ")
                usage_line(console, model)

    outcome = run_with_model(None, console, work, closing=models)
    if input is not None:
        exit_status(outcome)
        return
    if json_out:
        print(json.dumps(outcome.model_dump(mode="json"), ensure_ascii=False, indent=2))
    else:
        show = Console(soft_wrap=True)
        for verdict in outcome.judges:
            again = "" if verdict.reconciled is None else f", after reconciling {_pts(verdict.final_points)}"
            show.print(f"[bold]judge {verdict.judge}[/]: {_pts(verdict.points)}{again}")
        spread = (
            ""
            if outcome.spread is None
            else f"; spread {outcome.spread:g} points"
            + (
                f", reconciled to {outcome.final_spread:g}"
                if outcome.reconciled and outcome.final_spread is not None
                else ""
            )
        )
        show.print(f"[bold]panel ({outcome.rule})[/]: {_pts(outcome.points)} / {outcome.max_points:g} points{spread}")
    if outcome.points is None:
        typer.echo("no verdict: no judge wrote a valid grade", err=True)
        raise typer.Exit(1)


def _pts(points: float | None) -> str:
    return "no verdict" if points is None else f"{points:.3g} points"
