"""``proofcritic lean-check FILE...``: check Lean 4 files with a local lean, a Lake project,
a warm language server or a Kimina Lean Server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import InputError, SetupError
from ._batch import OverwriteOpt, exit_status, prepare, result_settings
from ._common import (
    ModelOptions,
    one_of,
    positive_seconds,
    run_progress,
    run_with_model,
    with_model_options,
)

if TYPE_CHECKING:  # imported where used: the parser is built without them
    from ..lean_checker import LeanChecker, LeanResult
    from ..runner import RunStats

__all__ = ["lean_check_command", "lean_prove_command"]

# the checker and budget options that lean-prove and eval formal share (one definition each)
LeanBinaryOpt = Annotated[str | None, typer.Option("--lean", help="The lean binary (env: PROOFCRITIC_LEAN).")]
LeanProjectOpt = Annotated[Path | None, typer.Option("--project", help="A Lake project with Mathlib to check in.")]
LeanTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--lean-timeout", callback=positive_seconds, help="Seconds per Lean check (--timeout is the model's)."
    ),
]
LeanServerOpt = Annotated[
    tuple[str, str] | None, typer.Option("--server", metavar="KIND URL", help="Check on `--server kimina URL`.")
]
LeanApiKeyOpt = Annotated[str | None, typer.Option("--lean-api-key", help="Kimina API key (env: KIMINA_API_KEY).")]
LeanWarmOpt = Annotated[bool, typer.Option("--warm", help="Check through warm `lean --server` processes.")]
LeanConcurrencyOpt = Annotated[int | None, typer.Option("--lean-concurrency", min=1, help="Lean checks at once.")]
MaxCallsOpt = Annotated[
    int, typer.Option("--max-calls", min=1, help="resume / rmax: model requests per problem (eval formal: per sample).")
]
MaxChecksOpt = Annotated[
    int,
    typer.Option(
        "--max-checks", min=1, help="resume / rmax: Lean checks per problem (eval formal: per sample), probes included."
    ),
]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, help="rmax: expansions run at once (over the checker's pool).")
]
ExplorationOpt = Annotated[float, typer.Option("--exploration", min=0.0, help="rmax: the UCB exploration constant C.")]
MaxDepthOpt = Annotated[
    int, typer.Option("--max-depth", min=1, help="decompose: nested decompositions at most (1: the theorem's).")
]
SketchAttemptsOpt = Annotated[
    int, typer.Option("--sketch-attempts", min=1, help="decompose: sketches asked per goal (refused: asked again).")
]


def lean_check_command(
    files: Annotated[list[Path], typer.Argument(help="Lean 4 files to check.", show_default=False)],
    lean: Annotated[str | None, typer.Option("--lean", help="The lean binary (env: PROOFCRITIC_LEAN).")] = None,
    project: Annotated[
        Path | None,
        typer.Option("--project", help="A Lake project to check in (`lake env lean`), e.g. one with Mathlib."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", callback=positive_seconds, help="Seconds per file.")] = 60.0,
    server: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--server", metavar="KIND URL", help="Check on a server instead: `--server kimina http://host:port`."
        ),
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Kimina API key (env: KIMINA_API_KEY).")] = None,
    warm: Annotated[bool, typer.Option("--warm", help="Check all files through one warm `lean --server`.")] = False,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Files checked at once.")] = None,
    allow_axiom: Annotated[
        list[str] | None,
        typer.Option("--allow-axiom", help="Also allow this axiom (repeatable), e.g. Lean.ofReduceBool."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result per file.")] = False,
) -> None:
    """Check Lean 4 files; a file passes with no error, no sorry/admit and no non-standard axiom.

    Exit status 0 when every file passes, 1 when one does not, 2 for bad input or a checker
    that cannot check (a lean without its Init library: give --project)."""
    import asyncio

    from rich.console import Console
    from rich.markup import escape

    from ..io import read_text

    sources = [(path, read_text(path, "Lean file")) for path in files]
    checker = _make_checker(lean, project, timeout, server, api_key, warm, concurrency, allow_axiom)

    async def run() -> list[LeanResult]:
        async with checker:
            return await checker.check_many([text for _, text in sources])

    results = asyncio.run(run())
    console = Console()
    for (path, _), result in zip(sources, results):
        if as_json:
            print(json.dumps({"file": str(path), **result.model_dump(mode="json")}, ensure_ascii=False))
            continue
        colour = "green" if result.ok else "red"
        console.print(
            f"[bold {colour}]{result.status.upper()}[/] {escape(str(path))} ({result.backend}, {result.seconds:.2f} s)"
        )
        for reason in result.reasons:
            console.print(f"  - {escape(reason)}")
        for message in result.messages:
            console.print(f"  {escape(str(path))}:{escape(str(message))}", highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _make_checker(
    lean: str | None,
    project: Path | None,
    timeout: float,
    server: tuple[str, str] | None,
    api_key: str | None,
    warm: bool,
    concurrency: int | None,
    allow_axiom: list[str] | None,
) -> LeanChecker:
    from ..lean_checker import get_checker

    if server is not None:
        kind, url = server
        if kind != "kimina":
            raise InputError(f"unknown server kind {kind!r}: only `kimina` is supported")
        key = api_key or os.environ.get("KIMINA_API_KEY")
        checker = get_checker("kimina", url=url, api_key=key, timeout=timeout, **_extra(concurrency, "concurrency"))
    elif warm:
        checker = get_checker("server", lean=lean, project=project, timeout=timeout, **_extra(concurrency, "pool_size"))
    else:
        checker = get_checker(
            "local", lean=lean, project=project, timeout=timeout, **_extra(concurrency, "concurrency")
        )
    if allow_axiom:
        checker.allowed_axioms = checker.allowed_axioms | frozenset(allow_axiom)
    return checker


def _extra(value: int | None, name: str) -> dict[str, Any]:
    return {name: value} if value else {}


@with_model_options
def lean_prove_command(
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            help="CSV with a `Lean Statement` column (IMO-ProofBench), JSONL with lean_statement, or a miniF2F-style "
            "file (JSONL name/header/formal_statement, a .lean file of theorems).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", help="JSONL of formal checks; an existing file is resumed.")],
    overwrite: OverwriteOpt = False,
    ids: Annotated[str | None, typer.Option("--ids", help="Only these problem ids, comma-separated.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N problems.")] = None,
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="Rounds; a later round sees Lean's messages.")] = 1,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Lean proofs per round.")] = 1,
    lean: LeanBinaryOpt = None,
    project: LeanProjectOpt = None,
    lean_timeout: LeanTimeoutOpt = 120.0,
    server: LeanServerOpt = None,
    lean_api_key: LeanApiKeyOpt = None,
    warm: LeanWarmOpt = False,
    lean_concurrency: LeanConcurrencyOpt = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            callback=one_of(("whole", "resume")),
            metavar="whole|resume",
            help="whole: whole proofs, retried with Lean's messages (--attempts); resume: truncate at the first "
            "error and continue from there with Lean's goal (--max-calls, --max-checks).",
        ),
    ] = "whole",
    search: Annotated[
        str,
        typer.Option(
            "--search",
            callback=one_of(("none", "rmax")),
            metavar="none|rmax",
            help="rmax: RMaxTS tree search over proof prefixes (resumable).",
        ),
    ] = "none",
    max_calls: MaxCallsOpt = 16,
    max_checks: MaxChecksOpt = 64,
    parallel: ParallelOpt = 1,
    exploration: ExplorationOpt = 1.0,
    decompose: Annotated[
        bool,
        typer.Option(
            "--decompose",
            help="Subgoal decomposition: an informal proof and a Lean sketch with `have ... := sorry` steps, each "
            "step proved as a lemma by --mode / --search (recursively to --max-depth), the proofs put back.",
        ),
    ] = False,
    max_depth: MaxDepthOpt = 2,
    sketch_attempts: SketchAttemptsOpt = 2,
    sketch_model: Annotated[
        str | None,
        typer.Option("--sketch-model", help="decompose: the model that writes sketches (default: --model)."),
    ] = None,
    training_out: Annotated[
        Path | None,
        typer.Option(
            "--training-out",
            help="decompose: append each solved decomposition (informal proof, then the Lean proof) to this JSONL.",
        ),
    ] = None,
    *,
    opts: ModelOptions,
) -> None:
    """Ask the generator for Lean proofs of problems with a Lean statement and check them.

    One JSON record per problem: passed, status, every attempt with Lean's messages."""
    if search == "rmax" and mode != "whole":
        raise typer.BadParameter("--search rmax is a mode of its own: leave --mode out", param_hint="--mode")
    run_mode = "rmax" if search == "rmax" else mode
    if not decompose and (
        sketch_model is not None or training_out is not None or max_depth != 2 or sketch_attempts != 2
    ):
        raise typer.BadParameter(
            "belongs to --decompose", param_hint="--sketch-model / --training-out / --max-depth / --sketch-attempts"
        )
    if run_mode != "whole" and attempts != 1:
        raise typer.BadParameter(
            "--attempts counts the rounds of --mode whole; resume and rmax stop at --max-calls / --max-checks",
            param_hint="--attempts",
        )
    from rich.console import Console

    from ..pipelines.formal import FormalProver, formal_jsonl, read_formal_items

    wanted = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    from ..benchmarks.formal_suites import minif2f_items

    # a miniF2F-style file (a .lean file, rows with header / formal_statement), else the usual shapes
    items = minif2f_items(input, ids=wanted, limit=limit)
    if items is None:
        items = read_formal_items(input, ids=wanted, limit=limit)
    checker = _make_checker(lean, project, lean_timeout, server, lean_api_key, warm, lean_concurrency, None)
    prompt_set = opts.prompt_set()
    the_model = opts.build_model()
    settings = result_settings(
        "lean-prove",
        opts,
        prompt_set,
        attempts=attempts,
        samples=samples,
        project=str(project) if project is not None else None,
        lean_timeout=lean_timeout,
        **(
            ({} if run_mode == "whole" and not decompose else {"max_calls": max_calls, "max_checks": max_checks})
            | ({} if run_mode == "whole" else {"mode": run_mode})
            | ({"parallel": parallel, "exploration": exploration} if run_mode == "rmax" else {})
            | (
                {"decompose": True, "max_depth": max_depth, "sketch_attempts": sketch_attempts}
                | ({"sketch_model": sketch_model} if sketch_model is not None else {})
                if decompose
                else {}
            )
        ),
    )
    state_dir = Path(f"{output}.state")
    # before any model call: a rerun with other settings stops here; --overwrite removes the state too
    companions = [state_dir] if run_mode == "rmax" or decompose else []
    prepare(output, settings, overwrite, companions=companions)  # --training-out is appended to, never removed
    from ..pipelines.formal_search import SearchOptions

    options = SearchOptions(
        samples=samples,
        max_calls=max_calls,
        max_checks=max_checks,
        parallel=parallel,
        exploration=exploration,
        seed=opts.seed or 0,
    )
    prover = FormalProver(the_model, prompts=prompt_set, config=opts.sampling())
    console = Console(stderr=True)
    sketcher, decompose_options = None, None
    if decompose:
        from dataclasses import replace

        from ..pipelines.formal_decompose import DecomposeOptions, FormalSketcher

        other = replace(opts, model=sketch_model).build_model() if sketch_model is not None else None
        # the --prompts set's formal_sketch (else the built-in one), whichever formal_prove it has
        sketcher = FormalSketcher(other or the_model, prompts=prompt_set, config=opts.sampling())
        decompose_options = DecomposeOptions(
            mode=run_mode,  # type: ignore[arg-type]
            attempts=attempts,
            max_depth=max_depth,
            sketch_attempts=sketch_attempts,
            search=options,
        )

    async def main() -> RunStats:
        async with checker:
            with run_progress(
                "proving", console, [the_model], lambda s: f"{s.extra.get('passed', 0):,} passed"
            ) as update:
                return await formal_jsonl(
                    prover,
                    checker,
                    items,
                    output,
                    samples=samples,
                    attempts=attempts,
                    concurrency=opts.concurrency or 4,
                    on_progress=update,
                    mode="decompose" if decompose else run_mode,  # type: ignore[arg-type]
                    options=options,
                    state_dir=state_dir if run_mode == "rmax" or decompose else None,
                    decompose=decompose_options,
                    sketcher=sketcher,
                    training_out=training_out,
                )

    closing = [sketcher.model] if sketcher is not None and sketcher.model is not the_model else []
    stats = run_with_model(the_model, console, main, closing=closing)
    spent = (
        ""
        if run_mode == "whole" and not decompose
        else f"; {stats.extra.get('model_calls', 0)} model call(s), {stats.extra.get('lean_checks', 0)} Lean check(s), "
        f"{stats.extra.get('budget_stops', 0)} stopped by a budget ({max_calls} calls, {max_checks} checks per problem)"
    )
    if decompose:
        spent += f", {stats.extra.get('unsolved', 0)} subgoal(s) left unsolved"
        spent += f"; training examples in {training_out}" if training_out is not None else ""
    console.print(
        f"{stats.extra.get('passed', 0)} of {stats.done - stats.skipped} problem(s) proved in Lean, "
        f"{stats.skipped} already done, {stats.errors} error record(s){spent} -> {output}"
    )
    setup = stats.messages.get("setup")
    if setup:  # the checker cannot give verdicts at all: the set-up's one line, exit status 2
        raise SetupError(setup.most_common(1)[0][0])
    exit_status(stats)
