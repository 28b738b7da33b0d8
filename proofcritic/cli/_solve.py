"""``proofcritic solve``: proofs for one problem, or for a file of problems with live progress."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._constants import DEFAULT_SCORE_MODE, STRATEGIES
from ..errors import InputError
from ._batch import OverwriteOpt, exit_status, model_name, prepare, result_settings
from ._common import (
    DryRunOpt,
    ModelOptions,
    ScoreModeOpt,
    check_scale,
    check_score_mode,
    run_progress,
    run_with_model,
    show_plan,
    with_model_options,
    with_readouts,
)

if TYPE_CHECKING:  # imported where used: the parser is built without them
    from rich.console import Console

    from ..llm import Model
    from ..pipelines import Roles, SolveResult
    from ..runner import RunStats

_Int = int | None
_STRATEGY = "Strategy options"
_BUDGET = "Budgets"
#: every strategy's ``keep_invalid``, on each command that runs strategies (solve, eval solve)
KeepInvalidOpt = Annotated[
    bool,
    typer.Option(
        "--keep-invalid",
        help="All strategies: let a format failure's proof text count as a proof (as --set keep_invalid=true).",
        rich_help_panel=_STRATEGY,
    ),
]


def _parse_set(values: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is read as JSON when it parses, else kept as text."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out


def build_strategy(name: str, params: dict[str, Any], flags: Collection[str] = ()) -> Any:
    """The strategy ``name`` built with ``params``; a bad name, parameter or value (each bound is
    the strategy config's) is the CLI's one-line usage error naming where it came from: one of
    the strategy ``flags`` given as an option, else ``--set KEY``."""
    from ..pipelines.solve import get_strategy

    try:
        return get_strategy(name, **params)
    except InputError as error:
        text = str(error)
        bad = re.fullmatch(r"strategy '[\w-]+': (\w+): (.*)", text)
        if bad is not None and bad.group(1) in params:
            key = bad.group(1)
            hint = f"--{key.replace('_', '-')}" if key in flags else f"--set {key}"
            raise typer.BadParameter(bad.group(2), param_hint=hint) from None
        message = re.sub(
            r"has no parameter '(\w+)'",
            lambda m: f"has no option --{m.group(1).replace('_', '-')}" if m.group(1) in flags else m.group(0),
            text,
        )
        raise typer.BadParameter(message, param_hint="--strategy") from None


@with_model_options
def solve_command(
    problem: Annotated[
        Path | None, typer.Option("--problem", help="One problem: statement (.md/.txt) or Problem JSON.")
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="Batch: JSONL of problems, or a JSON list ({id, question, ...}).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="JSONL of results; an existing file is resumed.")
    ] = None,
    overwrite: OverwriteOpt = False,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=f"{' | '.join(STRATEGIES)}.")] = "single",
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Strategy state (search pools); default <output>.state (one problem without --output: in memory).",
        ),
    ] = None,
    samples: Annotated[
        _Int,
        typer.Option(
            "--samples", help="single: proofs generated, best self-score chosen [1].", rich_help_panel=_STRATEGY
        ),
    ] = None,
    verify_n: Annotated[
        _Int,
        typer.Option(
            "--verify-n",
            help="single, refine: verifications of the answer, as evidence [1].",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    max_iters: Annotated[
        _Int,
        typer.Option(
            "--max-iters", help="refine: generations in all, the first included [8].", rich_help_panel=_STRATEGY
        ),
    ] = None,
    initial_samples: Annotated[
        _Int,
        typer.Option("--initial-samples", help="search: proofs sampled in round 1 [128].", rich_help_panel=_STRATEGY),
    ] = None,
    verifications: Annotated[
        _Int, typer.Option("--verifications", help="search: verifications per proof [64].", rich_help_panel=_STRATEGY)
    ] = None,
    top_k: Annotated[
        _Int,
        typer.Option("--top-k", help="search: best proofs considered for refinement [32].", rich_help_panel=_STRATEGY),
    ] = None,
    trials: Annotated[
        _Int, typer.Option("--trials", help="search: refinement prompts per round [32].", rich_help_panel=_STRATEGY)
    ] = None,
    samples_per_trial: Annotated[
        _Int,
        typer.Option("--samples-per-trial", help="search: refined proofs per prompt [4].", rich_help_panel=_STRATEGY),
    ] = None,
    analyses_per_proof: Annotated[
        _Int,
        typer.Option("--analyses-per-proof", help="search: analyses shown per proof [8].", rich_help_panel=_STRATEGY),
    ] = None,
    max_per_score: Annotated[
        _Int,
        typer.Option(
            "--max-per-score", help="search: shown analyses per distinct score [4].", rich_help_panel=_STRATEGY
        ),
    ] = None,
    rounds: Annotated[
        _Int, typer.Option("--rounds", help="search: rounds, the initial one included [16].", rich_help_panel=_STRATEGY)
    ] = None,
    stop_on_pass: Annotated[
        bool | None,
        typer.Option(
            "--stop-on-pass/--no-stop-on-pass",
            help="search: stop once a proof passes all its verifications [stop].",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    adaptive: Annotated[
        bool | None,
        typer.Option(
            "--adaptive",
            help="search: draw each proof's verifications in batches and stop once the pass check and the "
            "top-k / answer by mean are settled; agent: draw each streak's re-verifications in batches, judged "
            "one at a time as before (see README 'Adaptive verification') [off].",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option(
            "--confidence",
            help="search --adaptive: probability that each choice by mean is the fixed search's [0.99].",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    batch: Annotated[
        _Int,
        typer.Option(
            "--batch",
            help="search / agent --adaptive: verifications of a proof's first batch; each later request doubles "
            "them [4].",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    max_rounds: Annotated[
        _Int,
        typer.Option(
            "--max-rounds", help="critic: revisions at most, each critiqued again [4].", rich_help_panel=_STRATEGY
        ),
    ] = None,
    max_tool_calls: Annotated[
        _Int,
        typer.Option(
            "--max-tool-calls",
            help="critic: code runs per critique [3]; tora: code runs per solution [4].",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help="critic, tora: tools the model may run, comma-separated (default: python).",
            rich_help_panel=_STRATEGY,
        ),
    ] = None,
    tool_timeout: Annotated[
        float | None,
        typer.Option("--tool-timeout", help="critic, tora: seconds per code run [10].", rich_help_panel=_STRATEGY),
    ] = None,
    keep_invalid: KeepInvalidOpt = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Any strategy parameter as KEY=VALUE (e.g. agent's), repeatable.", rich_help_panel=_STRATEGY
        ),
    ] = None,
    max_calls: Annotated[
        _Int, typer.Option("--max-calls", min=0, help="Model calls per problem.", rich_help_panel=_BUDGET)
    ] = None,
    max_problem_tokens: Annotated[
        _Int,
        typer.Option(
            "--max-problem-tokens", min=0, help="Tokens per problem (prompt + completion).", rich_help_panel=_BUDGET
        ),
    ] = None,
    run_max_calls: Annotated[
        _Int,
        typer.Option(
            "--run-max-calls",
            min=0,
            help="Model calls in the whole run; problems not started when it is spent are left for a rerun.",
            rich_help_panel=_BUDGET,
        ),
    ] = None,
    run_max_tokens: Annotated[
        _Int,
        typer.Option(
            "--run-max-tokens", min=0, help="Tokens in the whole run (as --run-max-calls).", rich_help_panel=_BUDGET
        ),
    ] = None,
    parallel_problems: Annotated[
        int, typer.Option("--parallel-problems", min=1, help="Batch: problems solved at once.")
    ] = 4,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="ternary: verifier scores in {0, 0.5, 1}; points: every verification of the strategy grades whole "
            "points 0..max points (against the reference, guidelines and marking scheme; ranking, passes and "
            "stopping use points / max points, a pass is full marks).",
        ),
    ] = "ternary",
    scheme: Annotated[
        Path | None,
        typer.Option(
            "--scheme",
            help="With --scale points: a marking scheme file (as grade --scheme); a batch record's own 'scheme' wins.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One problem: print the result as JSON.")] = False,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Write proofs with a strategy: single, refine (self-refinement), search (DeepSeekMath-V2's
    high-compute search, resumable from its pool), agent (generate-verify-repair loop) or
    critic (critique with code runs, then revise)."""
    from rich.console import Console

    from ..budget import Budget
    from ..grading import batch_verdicts
    from ..io import problem_from_record
    from ..pipelines import Roles, SolveResult
    from ..pipelines.solve import read_problem_items, solve_problem, state_name
    from ..progress import LiveProgress

    if (problem is None) == (input is None):
        raise typer.BadParameter("give either --problem FILE or --input FILE (with --output)")
    if input is not None and output is None:
        raise typer.BadParameter("batch mode (--input) needs --output")
    check_score_mode(score_mode)
    check_scale(scale, score_mode)
    if scheme is not None and scale != "points":
        raise typer.BadParameter("a marking scheme needs --scale points", param_hint="--scheme")
    from ..verifier import load_schemes

    schemes = load_schemes(scheme) if scheme is not None else None
    flags = {
        "samples": samples,
        "verify_n": verify_n,
        "max_iters": max_iters,
        "initial_samples": initial_samples,
        "verifications": verifications,
        "top_k": top_k,
        "trials": trials,
        "samples_per_trial": samples_per_trial,
        "analyses_per_proof": analyses_per_proof,
        "max_per_score": max_per_score,
        "rounds": rounds,
        "stop_on_pass": stop_on_pass,
        "adaptive": adaptive,
        "confidence": confidence,
        "batch": batch,
        "keep_invalid": keep_invalid or None,
        "max_rounds": max_rounds,
        "max_tool_calls": max_tool_calls,
        "tools": tools,
        "tool_timeout": tool_timeout,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    params = given | _parse_set(set_ or [])
    the_strategy = build_strategy(strategy, params, flags=given)
    source = problem if problem is not None else input
    assert source is not None  # one of --problem and --input (checked above)
    items = read_problem_items(source)  # read inputs before loading any model: bad input fails fast
    if problem is not None and len(items) != 1:
        raise typer.BadParameter(
            f"the file holds {len(items)} problems; use --input and --output", param_hint="--problem"
        )
    if output is None:
        item_id, _, record = next(iter(items))
        if isinstance(record, InputError):
            raise record
        the_problem = problem_from_record(record, default_id=item_id)
    budgets = {"max_calls": max_calls, "max_tokens": max_problem_tokens}
    console = Console(stderr=True)
    show_plan(  # before any model loads: a large run says what it will cost; --dry-run stops here
        console,
        f"solve --strategy {strategy}",
        len(items),
        with_readouts(the_strategy.plan(), score_mode),
        {
            "model": model_name(opts),
            "score_mode": score_mode,
            **({"scale": scale} if scale != "ternary" else {}),
            **the_strategy.config.model_dump(),
            "max_calls": max_calls,
            "max_problem_tokens": max_problem_tokens,
            "run_max_calls": run_max_calls,
            "run_max_tokens": run_max_tokens,
        },
        dry_run=dry_run,
        unit="problem",
    )
    prompt_set = opts.prompt_set()
    the_model = opts.build_model()
    if output is not None:  # before any model call: a rerun with other settings stops here
        state_root = state_dir if state_dir is not None else Path(f"{output}.state")
        settings = result_settings(
            "solve",
            opts,
            prompt_set,
            score_mode=score_mode,
            strategy=strategy,
            params=params,
            max_calls=max_calls,
            max_problem_tokens=max_problem_tokens,
            # recorded only when not the default (older outputs have none)
            **({"scale": scale, "scheme": str(scheme) if scheme else None} if scale != "ternary" else {}),
        )
        prepare(output, settings, overwrite, companions=(state_root / state_name(item_id) for item_id, _, _ in items))
    roles = Roles.from_models(
        the_model,
        prompts=prompt_set,
        config=opts.sampling(),
        score_mode=check_score_mode(score_mode),
        scale=scale,
        scheme=schemes,
    )

    async def main() -> RunStats | SolveResult:
        if output is None:
            run_budget = None
            if run_max_calls is not None or run_max_tokens is not None:
                run_budget = Budget(run_max_calls, run_max_tokens, name="run")
            with LiveProgress(strategy, console, [the_model]) as progress:
                the_strategy.on_round = progress.on_round
                result = await solve_problem(
                    the_strategy, the_problem, roles, state_dir=state_dir, budget=run_budget, **budgets
                )
            if json_out:
                print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2))
            else:
                show_result(Console(soft_wrap=True), result)
            return result
        assert output is not None  # a batch
        stats = await _run_batch(
            the_strategy,
            roles,
            the_model,
            source,
            output,
            state_dir,
            parallel_problems,
            budgets,
            run_max_calls,
            run_max_tokens,
            console,
        )
        left = stats.extra.get("left", 0)
        console.print(
            f"solved {stats.done - stats.skipped} problem(s), {stats.skipped} already done, "
            f"{stats.errors} error record(s), {stats.budget_limited} budget-limited -> {output}"
            + (f"; {left} problem(s) left for a rerun (the run budget is spent)" if left else "")
        )
        console.print(batch_verdicts(output))
        if scale == "points":
            console.print(points_summary(output))
        return stats

    outcome = run_with_model(the_model, console, main, closing=[the_strategy])
    if isinstance(outcome, SolveResult):
        no_proof_status(outcome, keep_invalid=bool(getattr(the_strategy.config, "keep_invalid", False)))
    else:
        exit_status(outcome)


def no_proof_status(result: SolveResult, keep_invalid: bool = False) -> None:
    """One problem solved without a proof (every generation failed the format, or the budget
    ran out first): a line saying why on stderr and exit status 1. In a batch such a problem
    is a result record like any other, not a failed item."""
    if result.proof is None:
        hint = "" if keep_invalid else "; --keep-invalid lets a format failure's text count"
        typer.echo(f"no valid proof: {' '.join(result.stop_reason.split()) or 'none was produced'}{hint}", err=True)
        raise typer.Exit(1)


async def _run_batch(
    strategy,
    roles: Roles,
    model: Model,
    source: Path,
    output: Path,
    state_dir: Path | None,
    parallel: int,
    budgets: dict,
    run_max_calls: int | None,
    run_max_tokens: int | None,
    console: Console,
) -> RunStats:
    """``solve_jsonl`` under the live progress: problems, rounds, budget-limited, errors, calls,
    tokens, ETA and the running problems' strategy states."""
    from ..pipelines.solve import solve_jsonl

    def extra(stats: RunStats) -> str:
        return f"{stats.extra.get('rounds', 0):,} rounds, {stats.budget_limited:,} budget-limited"

    with run_progress(strategy.name, console, [model], extra) as update:
        return await solve_jsonl(
            strategy,
            roles,
            source,
            output,
            state_dir=state_dir,
            concurrency=parallel,
            run_max_calls=run_max_calls,
            run_max_tokens=run_max_tokens,
            on_progress=update,
            **budgets,
        )


def points_summary(output: Path) -> str:
    """One line on a points-scale solve batch: the answers' mean points over the problems with a
    verdict, how many got full marks on every verification (a pass), and how many have none."""
    from ..io import latest_values

    def value(record: dict) -> tuple[float, float, bool] | None:
        if record.get("points") is None or not record.get("max_points"):
            return None
        vs = record.get("verifications") or []
        full = bool(vs) and all(v.get("points") is not None and v["points"] >= record["max_points"] for v in vs)
        return record["points"], record["max_points"], full

    values = latest_values(output, value)
    graded = [v for v in values.values() if v is not None]
    if not graded:
        return f"points: no answer with a verdict among {len(values)} problem(s)"
    mean = sum(p for p, _, _ in graded) / len(graded)
    scale = "/".join(sorted({f"{m:g}" for _, m, _ in graded}))
    return (
        f"points: mean {mean:.3g} / {scale} over {len(graded)} problem(s) with a verdict "
        f"({len(values) - len(graded)} without); full marks on every verification: {sum(f for _, _, f in graded)}"
    )


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:.3g}"


def show_result(console: Console, result: SolveResult) -> None:
    """The stop reason, the evidence and the chosen proof."""
    from rich.markup import escape

    from ..verifier import aggregate, counts_note, shown_score

    limited = " [yellow](budget-limited)[/]" if result.budget_limited else ""
    console.print(f"[bold]{result.strategy}[/] on {escape(result.problem_id)}: {escape(result.stop_reason)}{limited}")
    console.print(f"rounds: {result.rounds}; steps: {len(result.transcript)}")
    if result.proof is None:
        console.print("[red]no proof[/]")
        return
    g = result.generation
    self_score = _fmt(g.self_score) if g is not None else "—"
    scores = ", ".join(shown_score(v) for v in result.verifications) or "none"
    mean = _fmt(result.mean_score) if result.mean_score is not None else "— (no verdict)"
    note = f" ({counts_note(aggregate(result.verifications))})" if result.verifications else ""
    if result.max_points is not None:  # the points scale: each verification's points, the mean in points
        scores = ", ".join("—" if v.points is None else f"{v.points:g}" for v in result.verifications) or "none"
        scale = f"/ {result.max_points:g}"
        mean = f"{result.points:.3g} {scale} points" if result.points is not None else "— (no verdict)"
        console.print(
            f"chosen proof{f' {escape(result.proof_id)}' if result.proof_id else ''}: self-score {self_score}; "
            f"verification points ({scale}): {scores}; mean {mean}{note}"
        )
    else:
        console.print(
            f"chosen proof{f' {escape(result.proof_id)}' if result.proof_id else ''}: self-score {self_score}; "
            f"verification scores: {scores}; mean {mean}{note}"
        )
    console.rule("proof")
    console.print(escape(result.proof))
