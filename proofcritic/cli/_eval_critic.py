"""``proofcritic eval critic``: critique-correct evaluation on an answer suite (see
:mod:`proofcritic.benchmarks.eval_critic`). Registered on ``eval_app`` when :mod:`._eval` loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._constants import DEFAULT_SCORE_MODE
from ..budget import CallPlan
from ._batch import OverwriteOpt, model_name, result_settings
from ._common import (
    DryRunOpt,
    ModelOptions,
    ScoreModeOpt,
    check_score_mode,
    run_progress,
    run_with_model,
    show_plan,
    with_model_options,
    with_readouts,
)
from ._eval import DataOpt, LimitOpt, RunOpt, SolveSuiteOpt, _finish, _kept, _load, _prepare, eval_app

if TYPE_CHECKING:
    from ..llm import Model
    from ..runner import RunStats

_CRITIC = "Critic"


@eval_app.command("critic")
@with_model_options
def eval_critic_command(
    suite: SolveSuiteOpt = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="The answers suite's data file (problems with an answer column).")
    ] = None,
    run: RunOpt = Path("run"),
    overwrite: OverwriteOpt = False,
    k: Annotated[int, typer.Option("-k", min=1, help="Solutions per problem (recorded: the first k).")] = 1,
    solutions: Annotated[
        Path | None,
        typer.Option(
            "--solutions",
            help="Critique recorded solutions instead of generating them: an `eval solve` run folder, or a JSONL "
            "file of {id, solution} lines (several per id for several solutions).",
        ),
    ] = None,
    critic: Annotated[
        str | None,
        typer.Option(
            "--critic",
            metavar="SPEC",
            help="The critic's model: MODEL[,base_url=URL][,api_key_env=VAR][,prompts=DIR][,name=NAME] "
            "(default: the --model, i.e. self-critique of generated solutions).",
            rich_help_panel=_CRITIC,
        ),
    ] = None,
    corrector: Annotated[
        str,
        typer.Option(
            "--corrector",
            help="Who corrects a rejected solution from the critique: critic (its model) or generator (--model).",
            rich_help_panel=_CRITIC,
        ),
    ] = "critic",
    tools: Annotated[
        bool,
        typer.Option(
            "--tools/--no-tools",
            help="Let the critic run Python in the sandbox while it judges (the CRITIC strategy's verification).",
            rich_help_panel=_CRITIC,
        ),
    ] = False,
    max_tool_calls: Annotated[
        int, typer.Option("--max-tool-calls", min=0, max=64, help="With --tools: code runs per critique at most.")
    ] = 3,
    tool_timeout: Annotated[
        float, typer.Option("--tool-timeout", min=0.1, max=600, help="With --tools: seconds per code run.")
    ] = 10.0,
    limit: LimitOpt = None,
    data_dir: DataOpt = None,
    parallel_problems: Annotated[int, typer.Option("--parallel-problems", min=1, help="Problems at once.")] = 4,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    dry_run: DryRunOpt = False,
    *,
    opts: ModelOptions,
) -> None:
    """Measure a critic on an answer suite: its verdict on each solution against the answer check
    (critique accuracy on right and wrong solutions), and the correction of each solution it
    rejects (wrong -> right, right -> wrong)."""
    from rich.console import Console

    from ..benchmarks import RunFolder, SolveItem
    from ..benchmarks.eval_critic import AnswerCritic, Corrector, critique_mode, eval_critic, load_recorded_solutions
    from ..generator import Generator

    if suite is None:
        raise typer.BadParameter("give --suite (answerbench, or answers with --file)", param_hint="--suite")
    if corrector not in ("critic", "generator"):
        raise typer.BadParameter(f"choose critic or generator, not {corrector!r}", param_hint="--corrector")
    if not tools and max_tool_calls != 3:
        raise typer.BadParameter("--max-tool-calls needs --tools", param_hint="--max-tool-calls")
    items = _load(suite, data_dir, limit, file)
    if not items or not all(isinstance(i, SolveItem) and i.answer is not None for i in items):
        raise typer.BadParameter(
            f"{suite} is not an answer suite (eval critic needs a reference answer per problem: "
            "answerbench, or answers with --file)",
            param_hint="--suite",
        )
    recorded, recorded_model = None, None
    if solutions is not None:
        from ..errors import InputError

        try:
            recorded, recorded_model = load_recorded_solutions(solutions)
        except InputError as error:  # before any model loads: a usage error naming the option
            raise typer.BadParameter(str(error), param_hint="--solutions") from None
    spec = None
    if critic is not None:
        from ..pipelines.panel import parse_judge

        spec = parse_judge(critic)
        if spec.n != 1:
            raise typer.BadParameter("the critic judges each solution once (no n=)", param_hint="--critic")
    generator_name = model_name(opts) if recorded is None else recorded_model
    critic_name = spec.label if spec is not None else model_name(opts)
    # self or cross-model: the critic's BACKEND/MODEL against the solutions' (its name= is a label)
    critic_model_name = model_name(ModelOptions(model=spec.model)) if spec is not None else model_name(opts)
    mode = critique_mode(generator_name, critic_model_name)
    console = Console(stderr=True)
    critique_calls = 1 + (max_tool_calls if tools else 0)
    per_solution = (
        CallPlan()
        .add("generation", 0 if recorded is not None else 1)
        .add("verification", critique_calls, 1)
        .add("correction", 1)
    )
    show_plan(
        console,
        f"eval critic {suite} -k {k} ({mode})",
        len(items),
        with_readouts(per_solution, score_mode).times(k),
        {
            "generator": generator_name if recorded is None else f"recorded ({solutions})",
            "critic": critic_name,
            "corrector": corrector,
            "tools": f"python, {max_tool_calls} run(s)" if tools else None,
            "score_mode": score_mode,
            "k": k,
            "run": run,
        },
        dry_run=dry_run,
        unit="problem",
    )
    prompt_set = opts.prompt_set()
    needs_generator = recorded is None or corrector == "generator" or spec is None
    model = opts.build_model() if needs_generator else None
    critic_model: Model | None = model
    critic_prompts = prompt_set
    if spec is not None:
        from ..promptset import PromptSet
        from ._panel import judge_model

        critic_model = judge_model(spec, opts)
        critic_prompts = PromptSet.load(spec.prompts) if spec.prompts else prompt_set
    assert critic_model is not None
    tools_text = f"python ({max_tool_calls} run(s) per critique, {tool_timeout:g} s each)" if tools else None
    info: dict[str, Any] = {
        "mode": mode,
        "generator": generator_name if recorded is None else (recorded_model or f"recorded ({solutions})"),
        "critic": critic_name,
        "corrector": f"{corrector} ({critic_name if corrector == 'critic' else model_name(opts)})",
        "tools": tools_text,
    }
    own: dict[str, Any] = {
        "suite": suite,
        **({"file": str(file)} if file is not None else {}),
        "solutions": str(solutions) if solutions is not None else None,
        "k": k,
        "critic": spec.model_dump(exclude_none=True) if spec is not None else None,
        "corrector": corrector,
        "tools": {"max_tool_calls": max_tool_calls, "tool_timeout": tool_timeout} if tools else None,
        "score_mode": score_mode,
    }
    folder = RunFolder(run)
    _prepare(
        folder,
        {"command": "eval critic", **own, "limit": limit, "model": model_name(opts), **info},
        result_settings("eval critic", opts, prompt_set, **own),
        overwrite,
    )
    sampling = opts.sampling()
    the_critic = AnswerCritic(
        critic_model, prompts=critic_prompts, config=sampling, score_mode=check_score_mode(score_mode)
    )
    fixer_model = critic_model if corrector == "critic" else model
    assert fixer_model is not None
    the_corrector = Corrector(
        fixer_model, prompts=critic_prompts if corrector == "critic" else prompt_set, config=sampling
    )
    generator = Generator(model, prompts=prompt_set, config=sampling) if recorded is None and model else None
    built_tools = []
    if tools:
        from ..tools import get_tool

        built_tools = [get_tool("python", timeout=tool_timeout)]
    seen: list[RunStats] = []
    shown = [m for m in (model, critic_model) if m is not None]

    async def main() -> None:
        with run_progress(f"critic x{k}", console, list(dict.fromkeys(shown))) as update:
            await eval_critic(
                items,  # answer items (checked above)
                folder,
                critic=the_critic,
                corrector=the_corrector,
                generator=generator,
                recorded=recorded,
                corrector_name=corrector,  # type: ignore[arg-type]  # checked above
                k=k,
                tools=built_tools,
                max_tool_calls=max_tool_calls,
                concurrency=parallel_problems,
                on_progress=_kept(update, seen),
                info=info,
            )

    closing: list[Any] = list(built_tools)
    if model is not None and critic_model is not model:
        closing.append(critic_model)  # (the command's model is closed by run_with_model)
    run_with_model(model or critic_model, console, main, usage=False, closing=closing)
    _finish(folder, console, seen)
