"""``proofcritic eval formal``: pass@k of Lean proving on a formal suite, per mode, with the
budget each mode used (see :mod:`proofcritic.benchmarks.eval_formal`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..budget import CallPlan
from ._batch import OverwriteOpt, model_name, result_settings
from ._common import (
    DryRunOpt,
    ModelOptions,
    one_of,
    run_progress,
    run_with_model,
    show_plan,
    with_model_options,
)
from ._eval import DataOpt, LimitOpt, RunOpt, _finish, _kept, _prepare, _suite_option, eval_app
from ._lean import (
    ExplorationOpt,
    LeanApiKeyOpt,
    LeanBinaryOpt,
    LeanConcurrencyOpt,
    LeanProjectOpt,
    LeanServerOpt,
    LeanTimeoutOpt,
    LeanWarmOpt,
    MaxCallsOpt,
    MaxChecksOpt,
    MaxDepthOpt,
    ParallelOpt,
    SketchAttemptsOpt,
    _make_checker,
)

if TYPE_CHECKING:
    from ..runner import RunStats

FormalSuiteOpt = Annotated[str | None, _suite_option("formal")]


def _progress_words(stats: RunStats) -> str:
    """The progress line's words: this run's samples, those that passed, what they cost."""
    x = stats.extra
    words = (
        f"{x.get('passed', 0):,} of {x.get('samples', 0):,} samples passed, {x.get('model_calls', 0):,} model calls, "
        f"{x.get('lean_checks', 0):,} Lean checks"
    )
    return words + (f", {x['replayed']:,} samples from the last run" if x.get("replayed") else "")


def _modes(values: list[str] | None) -> list[str]:
    from ..benchmarks.eval_formal import FORMAL_MODES

    modes: list[str] = []
    for value in values or ["whole"]:
        for part in value.split(","):
            mode = part.strip()
            if mode and mode not in modes:
                modes.append(mode)
    unknown = [m for m in modes if m not in FORMAL_MODES]
    if unknown or not modes:
        raise typer.BadParameter(
            f"unknown mode {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMAL_MODES)}", param_hint="--mode"
        )
    return modes


@eval_app.command("formal")
@with_model_options
def eval_formal_command(
    suite: FormalSuiteOpt = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="A formal file instead of the suite's data (the minif2f suite; default suite then minif2f): JSONL "
            "rows name/header/formal_statement or lean_statement, a CSV with `Lean Statement`, or a .lean file.",
        ),
    ] = None,
    run: RunOpt = Path("run"),
    overwrite: OverwriteOpt = False,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="whole | resume | rmax | decompose (repeatable or comma-separated; default whole): whole proofs "
            "retried with Lean's messages, truncate and resume, RMaxTS tree search, subgoal decomposition. Each mode "
            "runs -k times per problem.",
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Samples (independent runs of each mode) per problem.")] = 1,
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="whole: rounds per sample.")] = 1,
    samples: Annotated[
        int, typer.Option("--samples", min=1, help="Lean proofs (or continuations) per model call.")
    ] = 1,
    max_calls: MaxCallsOpt = 16,
    max_checks: MaxChecksOpt = 64,
    parallel: ParallelOpt = 1,
    exploration: ExplorationOpt = 1.0,
    subgoal_mode: Annotated[
        str,
        typer.Option(
            "--subgoal-mode",
            callback=one_of(("whole", "resume", "rmax")),
            metavar="whole|resume|rmax",
            help="decompose: how each subgoal's lemma is proved (--attempts rounds for whole).",
        ),
    ] = "whole",
    max_depth: MaxDepthOpt = 2,
    sketch_attempts: SketchAttemptsOpt = 2,
    limit: LimitOpt = None,
    data_dir: DataOpt = None,
    parallel_problems: Annotated[int, typer.Option("--parallel-problems", min=1, help="Problems proved at once.")] = 2,
    lean: LeanBinaryOpt = None,
    project: LeanProjectOpt = None,
    lean_timeout: LeanTimeoutOpt = 120.0,
    server: LeanServerOpt = None,
    lean_api_key: LeanApiKeyOpt = None,
    warm: LeanWarmOpt = False,
    lean_concurrency: LeanConcurrencyOpt = None,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Prove a formal suite's Lean statements k times per mode; pass@k and the budget used per mode."""
    from rich.console import Console

    from ..benchmarks import RunFolder, get_suite
    from ..benchmarks.eval_formal import SAMPLES_FILE, STATE_DIR, eval_formal, mode_stride
    from ..pipelines.formal_decompose import DecomposeOptions
    from ..pipelines.formal_search import SearchOptions

    modes = _modes(mode)
    if suite is None and file is None:
        raise typer.BadParameter("give --suite (lean-proofbench) or --file (a miniF2F-style file)")
    name = suite or "minif2f"
    chosen = get_suite(name)
    if chosen.kind != "formal":
        raise typer.BadParameter(f"{name} is a {chosen.kind} suite; use `eval {chosen.kind}`", param_hint="--suite")
    if attempts != 1 and "whole" not in modes and not ("decompose" in modes and subgoal_mode == "whole"):
        raise typer.BadParameter(
            "--attempts counts the rounds of --mode whole (and of decompose's --subgoal-mode whole)",
            param_hint="--attempts",
        )
    decompose = DecomposeOptions(
        mode=subgoal_mode,  # type: ignore[arg-type]
        attempts=attempts,
        max_depth=max_depth,
        sketch_attempts=sketch_attempts,
    )
    items = chosen.load(data_dir=data_dir, limit=limit, source=file)
    options = SearchOptions(
        samples=samples,
        max_calls=max_calls,
        max_checks=max_checks,
        parallel=parallel,
        exploration=exploration,
        seed=opts.seed or 0,
    )
    console = Console(stderr=True)
    plan = CallPlan()
    checks = 0
    for m in modes:
        calls = attempts if m == "whole" else max_calls
        plan.add(f"{m} proof", calls * k, calls * k * samples)
        checks += k * (attempts * samples if m == "whole" else max_checks)
    plan.note = f"and at most {checks:,} Lean checks per problem; -k {k} sample(s) of each mode"
    show_plan(
        console,
        f"eval formal {file or name} --mode {','.join(modes)} -k {k}",
        len(items),
        plan,
        {
            "model": model_name(opts),
            "modes": ",".join(modes),
            "k": k,
            "attempts": attempts,
            "samples": samples,
            "max_calls": max_calls,
            "max_checks": max_checks,
            "run": run,
        },
        dry_run=dry_run,
        unit="problem",
    )
    checker = _make_checker(lean, project, lean_timeout, server, lean_api_key, warm, lean_concurrency, None)
    prompt_set = opts.prompt_set()
    model = opts.build_model()
    folder = RunFolder(run)
    own: dict[str, Any] = {
        "suite": name,
        **({"file": str(file)} if file is not None else {}),
        "modes": modes,
        "k": k,
        "attempts": attempts,
        "options": options.model_dump(),
        **({"decompose": decompose.model_dump(exclude={"search"})} if "decompose" in modes else {}),
        "project": str(project) if project is not None else None,
        "lean_timeout": lean_timeout,
    }
    settings = result_settings("eval formal", opts, prompt_set, **own)
    if overwrite:  # the per-sample records and the searches' states belong to the items cleared
        (folder.path / SAMPLES_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder.path / STATE_DIR, ignore_errors=True)
    _prepare(
        folder,
        {
            "command": "eval formal",
            "suite": name,
            **({"file": str(file)} if file is not None else {}),
            "modes": modes,
            "k": k,
            "limit": limit,
            "model": model_name(opts),
            "seed_strides": {m: mode_stride(m, attempts, options) for m in modes},
        },
        settings,
        overwrite,
    )
    from ..pipelines.formal import FormalProver

    prover = FormalProver(model, prompts=prompt_set, config=opts.sampling())
    seen: list[RunStats] = []

    async def main() -> None:
        async with checker:
            # one check of the first statement before any model call: a checker that lacks the
            # statements' library (Mathlib) stops here with its set-up error (exit status 2)
            await checker.check(items[0].lean_statement)  # type: ignore[union-attr]
            with run_progress(f"formal {','.join(modes)} x{k}", console, [model], _progress_words) as update:
                await eval_formal(
                    items,  # type: ignore[arg-type]
                    folder,
                    prover=prover,
                    checker=checker,
                    modes=modes,
                    k=k,
                    attempts=attempts,
                    options=options,
                    decompose=decompose,
                    concurrency=parallel_problems,
                    on_progress=_kept(update, seen),
                )

    run_with_model(model, console, main, usage=False)
    _finish(folder, console, seen)
