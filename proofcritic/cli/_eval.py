"""``proofcritic eval solve|grade|steps``, ``proofcritic report`` and ``proofcritic compare``.

Each eval command makes a run folder (``config.json``, ``items.jsonl``, ``summary.json``,
``report.html``, ``report.md``; see :mod:`proofcritic.benchmarks._run`), runs under a progress
bar, resumes when the folder already holds items, and prints the headline metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._constants import (
    ADAPTIVE_PARAMS,
    DEFAULT_SCORE_MODE,
    DEFAULT_STEP_MODE,
    STEP_MODE_HELP,
    STEP_MODES,
    STRATEGIES,
)
from ..budget import CallPlan
from ._batch import OverwriteOpt, exit_status, model_name, result_settings
from ._batch_api import (
    BatchApiOpt,
    BatchIntervalOpt,
    BatchMaxRequestsOpt,
    BatchResultsOpt,
    BatchRetryOpt,
    BatchWriteOnlyOpt,
    batch_api,
    remove,
    run_stages,
    scratch,
)
from ._common import (
    DryRunOpt,
    ModelOptions,
    ScoreModeOpt,
    check_scale,
    check_score_mode,
    help_later,
    run_progress,
    run_with_model,
    show_plan,
    with_model_options,
    with_readouts,
)
from ._panel import JudgeOpt, PanelOpt, PanelRuleOpt, PanelThresholdOpt, build_panel
from ._solve import KeepInvalidOpt, _parse_set, build_strategy

if TYPE_CHECKING:  # imported where used: the parser is built without them
    from rich.console import Console

    from ..benchmarks import Kind, RunFolder
    from ..pipelines.panel import Panel
    from ..runner import RunStats
    from ..verifier import Verifier

eval_app = typer.Typer(
    rich_markup_mode=None,
    name="eval",
    help="Evaluate a solving strategy or a grader on a benchmark suite.",
    no_args_is_help=True,
)


def _suite_option(kind: Kind) -> Any:
    """``--suite``, its help listing the registry's suites of ``kind`` (see the README's table),
    read from the registry only when the help is drawn."""

    def text() -> str:
        from ..benchmarks import suite_names

        return f"Suite name: {', '.join(suite_names(kind))}."

    return typer.Option("--suite", help=help_later(f"suites:{kind}", text))


SolveSuiteOpt = Annotated[str | None, _suite_option("solve")]
GradeSuiteOpt = Annotated[str | None, _suite_option("grade")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder; an existing one is resumed.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N items.")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", envvar="PROOFCRITIC_DATA", help="Data root of the suites.")]
PricesOpt = Annotated[Path | None, typer.Option("--prices", help='JSON {model: {"prompt": $/1M, "completion": $/1M}}.')]


def _load(suite: str, data_dir: Path | None, limit: int | None, file: Path | None = None) -> list:
    from ..benchmarks import (
        load_suite,  # written beside this module; imported when used
    )

    return load_suite(suite, data_dir=data_dir, limit=limit, source=file)


def _prices(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise typer.BadParameter(f"cannot read the price table: {error}", param_hint="--prices") from None


def _prepare(folder: RunFolder, config: dict[str, Any], settings: dict[str, Any], overwrite: bool) -> None:
    """Check the settings against an earlier run in the folder, then write its config."""
    warning = folder.prepare(config, settings, overwrite=overwrite)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def _kept(update: Callable[[RunStats], None], seen: list[RunStats]) -> Callable[[RunStats], None]:
    """``update`` that also keeps the run's stats (for the exit status)."""

    def on_progress(stats: RunStats) -> None:
        if not seen:
            seen.append(stats)
        update(stats)

    return on_progress


def _finish(run: RunFolder, console: Console, seen: list[RunStats]) -> None:
    """Write the report and print the headline metrics (when an item has a result to report on),
    then exit with status 1 when items failed."""
    from rich.console import Console

    from ..benchmarks.report import build_report

    stats = seen[0] if seen else None
    if stats is None or stats.done > stats.failed:
        html_path, _ = build_report(run)
        show_headline(Console(), run.summary())
        console.print(f"report: {html_path}")
    exit_status(stats)


def show_headline(console: Console, summary: dict[str, Any]) -> None:
    """The headline metrics of a summary, one per line, with their 95% intervals."""

    def line(name: str, value: Any, low: Any = None, high: Any = None) -> None:
        shown = "—" if value is None else f"{value:.4g}"
        interval = "" if low is None or high is None else f"  [{low:.3g}, {high:.3g}]"
        console.print(f"{name:>18}: {shown}{interval}")

    def verifications(counts: dict[str, Any]) -> None:
        n, unscored = counts.get("verifications", 0), counts.get("unscored_verifications", 0)
        if not n:  # grades recorded in the data: no verification was made
            return
        console.print(f"{'unscored':>18}: {unscored} of {n} verifications")
        console.print(f"{'read-out scores':>18}: {counts.get('read_out_scores', 0)} of {n - unscored} scores")

    def notes(texts: list[str]) -> None:  # e.g. too few items for the intervals to mean much
        for text in texts:
            console.print(f"{'note':>18}: {text}", soft_wrap=True)

    if summary.get("kind") == "critic":  # eval critic: its rows (mode, counts, metrics, outcomes)
        from ..benchmarks.eval_critic import headline_rows as critic_rows

        for name, value in critic_rows(summary):
            console.print(f"{name:>20}: {value}", soft_wrap=True, markup=False, highlight=False)
        notes(summary.get("notes", []))
        return
    if summary.get("kind") == "formal":  # eval formal: pass@k and the budget per mode
        from ..benchmarks.eval_formal import formal_headline

        for name, value in formal_headline(summary):
            console.print(f"{name:>18}: {value}", soft_wrap=True, markup=False, highlight=False)
        return
    if summary.get("kind") == "steps":
        from ..benchmarks.eval_steps import headline_rows

        for name, value in headline_rows(summary):
            console.print(f"{name:>20}: {value}", soft_wrap=True)
        notes(summary.get("notes", []))
        return
    if summary.get("kind") == "solve":
        for name, m in summary["metrics"].items():
            line(name, m["value"], m["low"], m["high"])
        p = summary["points"]
        console.print(f"{'points':>18}: {p['first']:.4g} / {p['max']:.4g} (best by self-score {p['best_self']:.4g})")
        line("self/verifier agree", summary["agreement"]["exact"])
        answers = summary.get("answers")
        if answers:  # an answer suite: graded by the answer check
            console.print(
                f"{'answers':>18}: {answers['stated']} of {answers['samples']} samples stated an answer, "
                f"{answers['correct']} right; the majority answer right on {answers['majority_correct']} "
                f"of {summary['scored']} problems"
            )
        console.print(
            f"{'no verdict':>18}: {summary.get('no_verdict', 0)} sample(s) with a proof but no scored "
            "verification, counted 0 points"
        )
        verifications(summary)
        notes(summary.get("notes", []))
        return
    metrics = summary.get("metrics") or {}
    counts = summary.get("counts", {})
    console.print(f"{'items':>18}: {counts.get('scored', 0)} scored of {counts.get('items', 0)}")
    console.print(f"{'no verdict':>18}: {counts.get('no_verdict', 0)} item(s), left out of the metrics")
    verifications(counts)
    for name in (
        "accuracy",
        "balanced_accuracy",
        "f1",
        "mae_points",
        "pearson",
        "spearman",
        "kappa",
        "qwk_points",
        "leniency_points",
    ):
        interval = metrics.get("intervals", {}).get(name, {})
        if name in metrics:
            line(name, metrics[name], interval.get("low"), interval.get("high"))
    notes(metrics.get("notes", []))


@eval_app.command("solve")
@with_model_options
def eval_solve_command(
    suite: SolveSuiteOpt = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="The suite's data file instead of the data folder (the problems and answers suites)."
        ),
    ] = None,
    run: RunOpt = Path("run"),
    overwrite: OverwriteOpt = False,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=f"{' | '.join(STRATEGIES)}.")] = "single",
    k: Annotated[int, typer.Option("-k", min=1, help="Samples (strategy runs) per problem.")] = 1,
    verify_n: Annotated[int, typer.Option("--verify-n", min=0, help="Verifications of each answer (the grader).")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Strategy parameter KEY=VALUE, repeatable.")] = None,
    keep_invalid: KeepInvalidOpt = False,
    limit: LimitOpt = None,
    data_dir: DataOpt = None,
    parallel_problems: Annotated[int, typer.Option("--parallel-problems", min=1, help="Problems solved at once.")] = 4,
    prices: PricesOpt = None,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    tournament: Annotated[
        str | None,
        typer.Option(
            "--tournament",
            help="knockout | swiss: also pick one of the k answers by a pairwise tournament on the verifier's model (best@k by tournament).",
        ),
    ] = None,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="ternary: verifier scores in {0, 0.5, 1}; points: the strategy's verifications and the grader's "
            "give whole points 0..max points (see solve --scale).",
        ),
    ] = "ternary",
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Solve a suite's problems k times each with a strategy; the verifier grades every answer."""
    from rich.console import Console

    from ..benchmarks import GradeItem, RunFolder, SolveItem, StepItem
    from ..benchmarks.eval_solve import eval_solve
    from ..pipelines import Roles

    if suite is None:
        raise typer.BadParameter("give --suite", param_hint="--suite")
    if tournament not in (None, "knockout", "swiss"):
        raise typer.BadParameter(f"choose knockout or swiss, not {tournament!r}", param_hint="--tournament")
    check_scale(scale, score_mode)
    flags = {"keep_invalid": True} if keep_invalid else {}
    params = flags | _parse_set(set_ or [])
    the_strategy = build_strategy(strategy, params, flags=flags)
    items = _load(suite, data_dir, limit, file)
    if any(isinstance(i, GradeItem) for i in items):
        raise typer.BadParameter(f"{suite} is a grading suite; use `eval grade`", param_hint="--suite")
    if any(isinstance(i, StepItem) for i in items):
        raise typer.BadParameter(f"{suite} is a steps suite; use `eval steps`", param_hint="--suite")
    if any(not isinstance(i, SolveItem) for i in items):  # a formal suite's Lean statements
        raise typer.BadParameter(f"{suite} is a formal suite; use `eval formal`", param_hint="--suite")
    price_table = _prices(prices)
    console = Console(stderr=True)
    if all(i.answer is not None for i in items):  # graded by the answer check: no verifier call
        console.print(
            "answer suite: samples are graded by the answer check"
            + (f"; --verify-n {verify_n} is not used" if verify_n else "")
        )
        verify_n = 0
        if strategy in ("single", "tora") and "verify_n" not in params:  # their evidence verification: no use here
            params["verify_n"] = 0
            the_strategy = build_strategy(strategy, params, flags=flags)
    per_sample = the_strategy.plan() + CallPlan().add("verification", int(verify_n > 0), verify_n)  # + the grader's
    from ..pipelines.single import tournament_calls

    show_plan(  # before any model loads: a large run says what it will cost; --dry-run stops here
        console,
        f"eval solve {suite} --strategy {strategy} -k {k}",
        len(items),
        with_readouts(per_sample, score_mode)
        .times(k)
        .add("comparison", tournament_calls(tournament or "self_score", k)),
        {
            "model": model_name(opts),
            "score_mode": score_mode,
            **({"scale": scale} if scale != "ternary" else {}),
            "k": k,
            "verify_n": verify_n,
            **the_strategy.config.model_dump(),
            "run": run,
        },
        dry_run=dry_run,
        unit="problem",
    )
    prompt_set = opts.prompt_set()
    model = opts.build_model()
    folder = RunFolder(run)
    settings = result_settings(
        "eval solve",
        opts,
        prompt_set,
        suite=suite,
        **({"file": str(file)} if file is not None else {}),
        score_mode=score_mode,
        strategy=strategy,
        params=params,
        k=k,
        verify_n=verify_n,
        **({"tournament": tournament} if tournament else {}),
        **({"scale": scale} if scale != "ternary" else {}),  # (recorded only when not the default)
    )
    _prepare(
        folder,
        {
            "command": "eval solve",
            "suite": suite,
            **({"file": str(file)} if file is not None else {}),
            "strategy": strategy,
            "params": params,
            "k": k,
            "verify_n": verify_n,
            "limit": limit,
            "model": model_name(opts),
            "score_mode": score_mode,
            **({"scale": scale} if scale != "ternary" else {}),
            "sampling": opts.sampling().model_dump(exclude_unset=True),
            "prices": price_table,
        },
        settings,
        overwrite,
    )
    roles = Roles.from_models(
        model, prompts=prompt_set, config=opts.sampling(), score_mode=check_score_mode(score_mode), scale=scale
    )
    seen: list[RunStats] = []

    async def main() -> None:
        with run_progress(f"{strategy} x{k}", console, [model]) as update:
            the_strategy.on_round = update.on_round
            await eval_solve(
                items,
                folder,
                roles=roles,
                strategy=the_strategy,
                k=k,
                verify_n=verify_n,
                concurrency=parallel_problems,
                prices=price_table,
                model_name=model_name(opts),
                on_progress=_kept(update, seen),
                tournament=tournament,
            )

    run_with_model(model, console, main, usage=False, closing=[the_strategy])  # its tools (sandbox pools)
    _finish(folder, console, seen)


@eval_app.command("grade")
@with_model_options
def eval_grade_command(
    suite: GradeSuiteOpt = None,
    run: RunOpt = Path("run"),
    overwrite: OverwriteOpt = False,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Verifications per proof.")] = 1,
    rule: Annotated[str, typer.Option("--rule", help="mean | min | majority | label.")] = "mean",
    from_recorded: Annotated[
        str | None, typer.Option("--from-recorded", help="Score with a grade recorded in the data (no model).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A custom graded JSONL instead of --suite.")] = None,
    score_column: Annotated[
        str | None, typer.Option("--score-column", help="With --file: the human grade field (default: found by name).")
    ] = None,
    limit: LimitOpt = None,
    data_dir: DataOpt = None,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    scale: Annotated[
        str,
        typer.Option(
            "--scale", help="ternary: a score in {0, 0.5, 1}; points: whole points 0..max points (see grade --scale)."
        ),
    ] = "ternary",
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize",
            help="Grade a neutral rewrite of each proof (see grade --normalize); run with and without it and `compare` the runs.",
        ),
    ] = False,
    buckets: Annotated[
        str | None,
        typer.Option(
            "--buckets",
            help="gradingbench: round each predicted grade to the nearest of 0/1/6/7 points (IMO-GradingBench / ProofBench).",
        ),
    ] = None,
    judge: JudgeOpt = None,
    panel: PanelOpt = None,
    panel_rule: PanelRuleOpt = None,
    panel_threshold: PanelThresholdOpt = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="Rules mean and label: draw each proof's verifications in batches and stop once its decisions are "
            "settled (mean: 'correct', exactly, and with --buckets the bucket; label: exact).",
        ),
    ] = False,
    confidence: Annotated[
        float,
        typer.Option(
            "--confidence", help="With --adaptive: the probability that a mean's --buckets bucket is the fixed run's."
        ),
    ] = ADAPTIVE_PARAMS["confidence"][0],
    batch: Annotated[int, typer.Option("--batch", min=1, help=ADAPTIVE_PARAMS["batch"][1])] = ADAPTIVE_PARAMS["batch"][
        0
    ],
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
    """Measure a grader (the verifier, or grades recorded in the data) against human grades."""
    from rich.console import Console

    from ..benchmarks import GradeItem, RunFolder, SolveItem, StepItem
    from ..benchmarks.eval_grade import check_recorded, eval_grade, is_rule
    from ..grading import grade_plan
    from ..pipelines import Roles
    from ..pipelines.label import LabelConfig

    batching = batch_api(
        batch_api_on,
        batch_write_only,
        batch_results,
        batch_interval,
        batch_retry,
        run / "batch",
        max_requests=batch_max_requests,
    )

    if (suite is None) == (file is None):
        raise typer.BadParameter("give either --suite or --file")
    if not is_rule(rule):
        raise typer.BadParameter("must be mean, min, majority or label", param_hint="--rule")
    the_rule = rule  # a Rule from here on
    check_scale(scale, score_mode)
    if buckets not in (None, "gradingbench"):
        raise typer.BadParameter(f"choose gradingbench, not {buckets!r}", param_hint="--buckets")
    panelled = bool(judge) or panel is not None
    if panelled and (rule == "label" or from_recorded or normalize or n != 1 or score_mode != "text"):
        raise typer.BadParameter(
            "a judge panel grades with each judge's n, reads scores from the text, and runs "
            "without --rule label, --from-recorded and --normalize",
            param_hint="--judge/--panel",
        )
    if normalize and (rule == "label" or from_recorded):
        raise typer.BadParameter(
            "a neutral rewrite is graded by the mean, min or majority rule, not label or recorded grades",
            param_hint="--normalize",
        )
    if scale == "points" and rule == "label":
        raise typer.BadParameter("points grading takes --rule mean, min or majority", param_hint="--scale")
    if batching is not None and (panelled or from_recorded):
        raise typer.BadParameter("a batch API serves the one verifier's model", param_hint="--batch-api")
    adaptive_options = None
    if adaptive:
        from pydantic import ValidationError

        from ..errors import first_error
        from ..pipelines.adaptive import AdaptiveOptions

        if rule not in ("mean", "label") or from_recorded or panelled:
            raise typer.BadParameter(
                "adaptive verification takes --rule mean or label of one verifier (no --from-recorded, no panel)",
                param_hint="--adaptive",
            )
        try:
            adaptive_options = AdaptiveOptions(adaptive=True, confidence=confidence, batch=batch)
        except ValidationError as error:  # (the confidence: typer holds --batch to 1 or more)
            raise typer.BadParameter(first_error(error)[1], param_hint="--confidence") from None
    if file is not None:
        from ..benchmarks import load_graded_file

        items = load_graded_file(file, score_column=score_column, limit=limit)
    else:
        assert suite is not None  # --suite or --file (checked above)
        items = _load(suite, data_dir, limit)
    if not all(isinstance(i, GradeItem) for i in items):
        steps = any(isinstance(i, StepItem) for i in items)
        formal = any(not isinstance(i, (StepItem, SolveItem)) for i in items)
        use = (
            "steps suite; use `eval steps`"
            if steps
            else "formal suite; use `eval formal`"
            if formal
            else "solving suite; use `eval solve`"
        )
        raise typer.BadParameter(f"{suite} is a {use}", param_hint="--suite")
    if from_recorded is not None:
        check_recorded(items, from_recorded)  # a grade no item records fails here, before the run starts
    console = Console(stderr=True)
    built = build_panel(judge, panel, panel_rule, panel_threshold, scale, opts)  # None without judges
    if built is not None:  # each judge's samples, and at most one reconciliation each
        per_item = (
            CallPlan()
            .add("verification", len(built[0].judges), sum(built[0].n))
            .add("reconciliation", len(built[0].judges))
        )
    elif from_recorded:
        per_item = CallPlan()
    else:  # the label rule labels each proof (LabelConfig's m, with n verifications), the others grade it
        per_item = LabelConfig.model_construct(n=n).plan() if rule == "label" else grade_plan(n)
        per_item = with_readouts(per_item, score_mode).add("neutral rewrite", 1 if normalize else 0)
    show_plan(  # before any model loads: a large run says what it will cost; --dry-run stops here
        console,
        f"eval grade {suite or file} --rule {rule}",
        len(items),
        per_item,
        {
            "model": None if from_recorded else model_name(opts),
            "n": None if from_recorded else n,
            "score_mode": None if from_recorded else score_mode,
            "rule": rule,
            "from_recorded": from_recorded,
            "run": run,
        },
        dry_run=dry_run,
        unit="proof",
    )
    prompt_set = None if from_recorded else opts.prompt_set()
    model = None if from_recorded or built is not None else opts.build_model()
    folder = RunFolder(run)
    own: dict[str, Any] = {
        "suite": suite or str(file),
        "score_column": score_column,
        "rule": rule,
        "n": n,
        "from_recorded": from_recorded,
    }
    if built is not None:
        own |= {"scale": scale, **built[2]}
    if model is not None:
        own["score_mode"] = score_mode
        if scale != "ternary":  # (recorded only when not the default: older runs have none)
            own["scale"] = scale
        if normalize:
            own["normalize"] = True
    if buckets is not None:
        own["buckets"] = buckets
    if adaptive_options is not None:  # (recorded only when on: a fixed run's settings stay as they were)
        own |= {"adaptive": True, "confidence": confidence, "batch": batch}
    settings = result_settings("eval grade", None if from_recorded else opts, prompt_set, **own)
    _prepare(
        folder,
        {
            "command": "eval grade",
            "suite": suite or str(file),
            "rule": rule,
            "n": n,
            "limit": limit,
            "from_recorded": from_recorded,
            "model": None if from_recorded else model_name(opts),
        },
        settings,
        overwrite,
    )
    if overwrite:  # an earlier run's batch state goes with its items
        remove([run / "batch"])
    seen: list[RunStats] = []
    roles = None
    if model is not None:
        roles = Roles.from_models(
            model, prompts=prompt_set, config=opts.sampling(), score_mode=check_score_mode(score_mode)
        )
    verifier: Verifier | Panel | None = roles.verifier if roles is not None else None
    if roles is not None and scale == "points":
        from ..verifier import PointsVerifier

        verifier = PointsVerifier(model, prompts=prompt_set, config=opts.sampling())

    if built is not None:
        verifier = built[0]
    normalizer = None
    if normalize and model is not None:
        from ..pipelines.normalize import Normalizer

        normalizer = Normalizer(model, prompts=prompt_set, config=opts.sampling())

    shown = built[1] if built is not None else [model]
    stages = batching.start(model, console) if batching is not None and model is not None else None

    async def stage_pass() -> None:  # one batch stage: the run into a scratch copy of the folder
        assert batching is not None
        part = RunFolder(batching.folder / "pass")
        scratch([(folder.items_path, part.items_path), (folder.config_path, part.config_path)])
        await eval_grade(
            items,
            part,
            verifier=verifier,
            n=n,
            rule=the_rule,
            normalizer=normalizer,
            meta_verifier=roles and roles.meta_verifier,
            concurrency=opts.concurrency or 8,
            buckets=buckets,
            adaptive=adaptive_options,
        )

    async def main() -> bool:
        if not await run_stages(stages, console, stage_pass, [batching.folder / "pass"] if batching else []):
            return False  # the offline path: a request file was written
        with run_progress(f"grade ({'panel' if built else from_recorded or rule})", console, shown) as update:
            await eval_grade(
                items,
                folder,
                verifier=verifier,
                n=n,
                rule=the_rule,
                normalizer=normalizer,
                meta_verifier=roles and roles.meta_verifier,
                from_recorded=from_recorded,
                concurrency=opts.concurrency or 8,
                on_progress=_kept(update, seen),
                buckets=buckets,
                adaptive=adaptive_options,
            )
        return True

    if run_with_model(model, console, main, usage=False, closing=built[1] if built is not None else ()):
        _finish(folder, console, seen)


StepsSuiteOpt = Annotated[str | None, _suite_option("steps")]


@eval_app.command("steps")
@with_model_options
def eval_steps_command(
    suite: StepsSuiteOpt = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            help="ProcessBench-format rows (JSON/JSONL: id, problem, steps, label = first wrong step or -1), "
            "or hf:Qwen/ProcessBench:SPLIT; the suite is then processbench.",
        ),
    ] = None,
    run: RunOpt = Path("run"),
    overwrite: OverwriteOpt = False,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Step verifications per solution.")] = 1,
    step_mode: Annotated[str, typer.Option("--step-mode", help=STEP_MODE_HELP)] = DEFAULT_STEP_MODE,
    limit: LimitOpt = None,
    data_dir: DataOpt = None,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Measure the step verifier: its first wrong step against ProcessBench labels (F1 of the
    accuracies on erroneous and correct solutions) or human error annotations (same step / before /
    after / missed)."""
    from rich.console import Console

    from ..benchmarks import RunFolder, get_suite
    from ..benchmarks.eval_steps import eval_steps
    from ..verifier import StepVerifier

    if step_mode not in STEP_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(STEP_MODES)}", param_hint="--step-mode")
    if suite is None and file is None:
        raise typer.BadParameter("give --suite (opc-steps) or --file (ProcessBench-format rows)")
    name = suite or "processbench"
    chosen = get_suite(name)
    if chosen.kind != "steps":
        raise typer.BadParameter(f"{name} is a {chosen.kind} suite; use `eval {chosen.kind}`", param_hint="--suite")
    items = chosen.load(data_dir=data_dir, limit=limit, source=file)
    console = Console(stderr=True)
    show_plan(
        console,
        f"eval steps {file or name}",
        len(items),
        CallPlan().add("step verification", 1, n),
        {"model": model_name(opts), "n": n, "step_mode": step_mode, "run": run},
        dry_run=dry_run,
        unit="solution",
    )
    prompt_set = opts.prompt_set()
    model = opts.build_model()
    folder = RunFolder(run)
    settings = result_settings(
        "eval steps", opts, prompt_set, suite=name, file=str(file) if file else None, n=n, step_mode=step_mode
    )
    _prepare(
        folder,
        {"command": "eval steps", "suite": file or name, "n": n, "limit": limit, "model": model_name(opts)},
        settings,
        overwrite,
    )
    verifier = StepVerifier(model, prompts=prompt_set, config=opts.sampling(), mode=step_mode)  # type: ignore[arg-type]
    seen: list[RunStats] = []

    async def main() -> None:
        with run_progress("steps", console, [model]) as update:
            await eval_steps(
                items,  # type: ignore[arg-type]
                folder,
                verifier=verifier,
                n=n,
                concurrency=opts.concurrency or 8,
                on_progress=_kept(update, seen),
            )

    run_with_model(model, console, main, usage=False)
    _finish(folder, console, seen)


def report_command(run: Annotated[Path, typer.Argument(help="Run folder.")]) -> None:
    """Rebuild a run's summary.json, report.html and report.md from its items.jsonl."""
    from rich.console import Console

    from ..benchmarks import RunFolder
    from ..benchmarks.report import build_report

    html_path, md_path = build_report(RunFolder(run))
    show_headline(Console(), RunFolder(run).summary())
    Console(stderr=True).print(f"report: {html_path} and {md_path}")


def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders of one kind; the first is the baseline.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write compare.md, compare.html and compare.json into this folder."),
    ] = None,
) -> None:
    """Every metric of two or more runs side by side on the items all of them have (paired by id),
    each run's difference from the first with its paired bootstrap 95% interval."""
    from ..benchmarks import RunFolder
    from ..benchmarks.report import compare_html, compare_markdown, compare_runs

    if len(runs) < 2:
        raise typer.BadParameter("give at least two run folders (the first is the baseline)", param_hint="RUNS")
    if out is not None and out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; give a folder", param_hint="--out")
    comparison = compare_runs(*(RunFolder(run) for run in runs))
    text = compare_markdown(comparison)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text)
        (out / "compare.html").write_text(compare_html(comparison))
        (out / "compare.json").write_text(json.dumps(comparison, indent=2) + "\n")
