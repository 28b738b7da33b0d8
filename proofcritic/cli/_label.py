"""``proofcritic meta-verify`` (judge one verification) and ``proofcritic label`` (auto-label a batch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._constants import ADAPTIVE_PARAMS, DEFAULT_SCORE_MODE, LABEL_PARAMS
from ..errors import InputError, first_error, validation_line
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
from ._workers import WorkersOpt

if TYPE_CHECKING:  # imported where used: the parser is built without them
    from rich.console import Console

    from ..llm import Model
    from ..meta_verifier import MetaVerifier
    from ..pipelines.label import LabelConfig
    from ..promptset import PromptSet
    from ..runner import RunStats
    from ..types import MetaVerification, Verification
    from ..verifier import Verifier
    from ._workers import WorkerResult

__all__ = ["label_command", "meta_verify_command", "read_verification"]


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:g}"


def read_verification(path: Path, index: int | None = None) -> Verification:
    """A verification from a file: raw verifier output, a Verification JSON record, or a
    ``grade --json`` result (then ``index``, 1-based, picks one of its verifications)."""
    from pydantic import ValidationError

    from ..io import read_text
    from ..types import Verification
    from ..verifier import parse_verification

    text = read_text(path, "verification file")
    stripped = text.lstrip()
    if not (path.suffix.lower() == ".json" or stripped.startswith("{")):
        return parse_verification(text)
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as error:
        if path.suffix.lower() == ".json":
            raise InputError(
                f"verification file is not valid JSON ({error.msg}, line {error.lineno}): {path}"
            ) from None
        return parse_verification(text)
    if not isinstance(data, dict):
        raise InputError(f"verification file holds JSON that is not an object: {path}")
    if isinstance(data.get("verifications"), list):
        found = data["verifications"]
        if not found:
            raise InputError(f"{path} holds no verifications")
        if index is None and len(found) != 1:
            raise InputError(
                f"{path} holds {len(found)} verifications (a `grade -n {len(found)} --json` result); choose one "
                f"with --index 1 to --index {len(found)}"
            )
        position = 1 if index is None else index
        if not 1 <= position <= len(found):
            raise InputError(f"--index {position} is out of range: the file holds {len(found)} verifications")
        data = found[position - 1]
    if not isinstance(data, dict) or not (data.get("analysis") or data.get("raw")):
        raise InputError(f"verification record has neither 'analysis' nor 'raw' text: {path}")
    try:
        return Verification.model_validate(data)
    except ValidationError as error:
        raise InputError(f"verification record is invalid ({validation_line(error)}): {path}") from None


@with_model_options
def meta_verify_command(
    problem: Annotated[Path, typer.Option("--problem", help="Problem statement (.md/.txt) or Problem JSON.")],
    proof: Annotated[Path, typer.Option("--proof", help="The proof the verification judged.")],
    verification: Annotated[
        Path,
        typer.Option(
            "--verification", help="Raw verifier output, a Verification JSON record, or `grade --json` output."
        ),
    ],
    index: Annotated[
        int | None,
        typer.Option(
            "--index",
            min=1,
            help="Which verification of a `grade --json` file (1-based); needed when it holds several (`grade -n N`).",
        ),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Reference solution shown to the meta-verifier.")
    ] = None,
    guidelines: Annotated[
        Path | None, typer.Option("--guidelines", help="Grading guidelines shown to the meta-verifier.")
    ] = None,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Meta-verifications.")] = 1,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    *,
    opts: ModelOptions,
) -> None:
    """Judge whether a verification is faithful: n meta scores and their majority.

    Exit status 1 when no meta-verification has a meta score (--score-mode text: all of them
    failed the format)."""
    from rich.console import Console
    from rich.markup import escape

    from ..io import read_problem, read_proof
    from ..meta_verifier import MetaVerifier
    from ..pipelines.label import majority
    from ..progress import LiveProgress
    from ..verifier import shown_score

    the_problem = read_problem(problem, reference=reference, guidelines=guidelines)
    the_proof = read_proof(proof).text
    the_verification = read_verification(verification, index)
    prompt_set = opts.prompt_set()
    the_model = opts.build_model()
    meta_verifier = MetaVerifier(
        the_model, prompts=prompt_set, config=opts.sampling(), score_mode=check_score_mode(score_mode)
    )
    console = Console(stderr=True)

    async def meta_verify() -> list[MetaVerification]:
        with LiveProgress("meta-verifying", console, [the_model]):
            return await meta_verifier.meta_verify(the_problem, the_proof, the_verification, n=n)

    def show_metas(metas: list[MetaVerification]) -> list[MetaVerification]:
        scores = [m.score for m in metas]
        if json_out:
            out = {
                "problem_id": the_problem.id,
                "verification_score": the_verification.score,
                "score_mode": score_mode,
                "scores": scores,
                "majority": majority(scores),
                "valid": sum(s is not None for s in scores),
                "read_out": sum(m.read_out for m in metas),
                "meta_verifications": [m.model_dump(mode="json") for m in metas],
            }
            print(json.dumps(out, ensure_ascii=False, indent=2))
            return metas
        show = Console(soft_wrap=True)
        show.print(f"verification under review: score {_fmt(the_verification.score)}")
        for number, meta in enumerate(metas, start=1):
            status = "" if meta.format_ok else f" [red]format failure:[/] {escape(meta.format_error or '')}"
            show.print(f"[bold]meta-verification {number}[/]: meta score {shown_score(meta)}{status}")
        valid = sum(s is not None for s in scores)
        verdict = _fmt(majority(scores)) if valid else "— (no meta score)"
        show.print(f"[bold]majority[/] over {valid}/{len(scores)} scored: {verdict}")
        return metas

    no_meta_score_status(show_metas(run_with_model(the_model, console, meta_verify)), score_mode)


def no_meta_score_status(metas: list[MetaVerification], score_mode: str) -> None:
    """No meta-verification has a meta score: why on stderr, and exit status 1."""
    if any(m.score is not None for m in metas):
        return
    first = next((m.format_error for m in metas if m.format_error), None)
    why = (
        f"every meta-verification failed the format (first: {' '.join(first.split())})" if first else "none was scored"
    )
    hint = "; --score-mode auto reads one out by likelihood (opt-in)" if score_mode == "text" else ""
    typer.echo(f"no meta score: {why}{hint}", err=True)
    raise typer.Exit(1)


@with_model_options
def label_command(
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            help="JSONL with problem, proof (and optional reference_solution, grading_guidelines, max_points, id).",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", help="JSONL: one record per proof (status labeled or review) with its evidence; resumed."
        ),
    ],
    review: Annotated[Path, typer.Option("--review", help="JSONL: the proofs left for human review; resumed.")],
    overwrite: OverwriteOpt = False,
    # LabelConfig's fields (their defaults and words from LABEL_PARAMS; LabelConfig checks them)
    n: Annotated[int, typer.Option("--n", "-n", min=1, help=LABEL_PARAMS["n"][1])] = LABEL_PARAMS["n"][0],
    m: Annotated[int, typer.Option("--m", min=1, help=LABEL_PARAMS["m"][1])] = LABEL_PARAMS["m"][0],
    k: Annotated[int, typer.Option("--k", min=1, help=LABEL_PARAMS["k"][1])] = LABEL_PARAMS["k"][0],
    confirm_at: Annotated[
        float, typer.Option("--confirm-at", min=0, max=1, help=LABEL_PARAMS["confirm_at"][1])
    ] = LABEL_PARAMS["confirm_at"][0],
    refute_at: Annotated[
        float, typer.Option("--refute-at", min=0, max=1, help=LABEL_PARAMS["refute_at"][1])
    ] = LABEL_PARAMS["refute_at"][0],
    max_points: Annotated[
        float | None,
        typer.Option(
            "--max-points",
            callback=bounded("proofcritic.types:Problem", "max_points"),
            help="Points of a full solution, more than 0 (default: 7, or the record's).",
        ),
    ] = None,
    score_mode: ScoreModeOpt = DEFAULT_SCORE_MODE,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="ternary: scores in {0, 0.5, 1}; points: whole points 0..max points (labels are points / max "
            "points; the meta-verifier reviews the points grade).",
        ),
    ] = "ternary",
    max_calls: Annotated[
        int | None, typer.Option("--max-calls", min=1, help="Model calls per proof (default: no limit).")
    ] = None,
    max_proof_tokens: Annotated[
        int | None,
        typer.Option("--max-proof-tokens", min=1, help="Tokens per proof, prompts included (default: no limit)."),
    ] = None,
    adaptive: Annotated[bool, typer.Option("--adaptive", help=ADAPTIVE_PARAMS["adaptive"][1])] = False,
    confidence: Annotated[
        float, typer.Option("--confidence", help=ADAPTIVE_PARAMS["confidence"][1] + " Labels are exact: unused there.")
    ] = ADAPTIVE_PARAMS["confidence"][0],
    batch: Annotated[int, typer.Option("--batch", min=1, help=ADAPTIVE_PARAMS["batch"][1])] = ADAPTIVE_PARAMS["batch"][
        0
    ],
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
    """Auto-label proofs by scaled verification: n verifications, m meta-verifications per issue, k confirmations."""
    from pydantic import ValidationError
    from rich.console import Console

    from ..pipelines.label import LabelConfig, label_jsonl
    from ..runner import read_items

    batching = batch_api(
        batch_api_on,
        batch_write_only,
        batch_results,
        batch_interval,
        batch_retry,
        batch_folder(output),
        workers=workers,
        max_requests=batch_max_requests,
    )
    check_score_mode(score_mode)
    check_scale(scale, score_mode)
    try:
        config = LabelConfig(
            n=n,
            m=m,
            k=k,
            confirm_at=confirm_at,
            refute_at=refute_at,
            adaptive=adaptive,
            confidence=confidence,
            batch=batch,
        )
    except ValidationError as error:
        raise typer.BadParameter(first_error(error)[1]) from None  # it names the options
    if not input.exists():
        raise InputError(f"input file not found: {input}")
    if len({input.resolve(), output.resolve(), review.resolve()}) < 3:
        raise typer.BadParameter("--input, --output and --review must be three different files")
    console = Console(stderr=True)
    show_plan(  # before any model loads: a large run says what it will cost; --dry-run stops here
        console,
        "label",
        len(read_items(input)),
        with_readouts(config.plan(), score_mode),
        {
            "model": model_name(opts),
            "score_mode": score_mode,
            **config.model_dump(),
            "max_calls": max_calls,
            "max_proof_tokens": max_proof_tokens,
            "output": output,
            "review": review,
        },
        dry_run=dry_run,
        unit="proof",
    )
    prompt_set = opts.prompt_set()
    the_model = opts.build_model()
    prepare(
        output,
        result_settings(  # before any model call: a rerun with other settings stops here
            "label",
            opts,
            prompt_set,
            n=n,
            m=m,
            k=k,
            confirm_at=confirm_at,
            refute_at=refute_at,
            max_points=max_points,
            score_mode=score_mode,
            max_calls=max_calls,
            max_proof_tokens=max_proof_tokens,
            **({"scale": scale} if scale != "ternary" else {}),
            **({"adaptive": True, "batch": batch} if adaptive else {}),
        ),
        overwrite,
        companions=[review, batch_folder(output)],
    )
    spec = _LabelSpec(opts, input, output, review, config, score_mode, scale, max_points, max_calls, max_proof_tokens)
    if workers > 1:
        _label_in_workers(spec, the_model, workers, console)
        return
    verifier, meta_verifier = spec.roles(the_model, prompt_set)
    stages = batching.start(the_model, console) if batching is not None else None
    parts = (
        (output, review)
        if batching is None
        else (batching.folder / "pass.jsonl", batching.folder / "pass-review.jsonl")
    )

    async def stage_pass() -> None:  # one batch stage: the batch into scratch copies of the output and review
        scratch(list(zip((output, review), parts)))
        await label_jsonl(
            verifier,
            meta_verifier,
            input,
            parts[0],
            parts[1],
            config=config,
            max_points=max_points,
            max_calls=max_calls,
            max_tokens=max_proof_tokens,
            concurrency=opts.concurrency or 16,
        )

    async def main() -> RunStats | None:
        if not await run_stages(stages, console, stage_pass, parts if batching is not None else ()):
            return None  # the offline path: a request file was written
        with run_progress(
            "labeling",
            console,
            [the_model],
            lambda stats: f"{stats.extra.get('labeled', 0):,} labeled, {stats.extra.get('review', 0):,} to review",
        ) as update:
            stats = await label_jsonl(
                verifier,
                meta_verifier,
                input,
                output,
                review,
                config=config,
                max_points=max_points,
                max_calls=max_calls,
                max_tokens=max_proof_tokens,
                concurrency=opts.concurrency or 16,
                on_progress=update,
            )
        _closing_lines(console, stats, stats.extra["labeled"], stats.extra["review"], output, review)
        return stats

    exit_status(run_with_model(the_model, console, main))


@dataclass
class _LabelSpec:
    """What labeling needs besides the model: built once per process (the command's, or each
    worker's with ``--workers``)."""

    opts: ModelOptions
    input: Path
    output: Path
    review: Path
    config: LabelConfig
    score_mode: str
    scale: str
    max_points: float | None
    max_calls: int | None
    max_proof_tokens: int | None

    def roles(self, model: Model, prompt_set: PromptSet) -> tuple[Verifier, MetaVerifier]:
        from ..meta_verifier import MetaVerifier
        from ..verifier import PointsVerifier, Verifier

        settings = self.opts.sampling()
        verifier: Verifier
        if self.scale == "points":
            verifier = PointsVerifier(model, prompts=prompt_set, config=settings)
        else:
            verifier = Verifier(
                model, prompts=prompt_set, config=settings, score_mode=check_score_mode(self.score_mode)
            )
        return verifier, MetaVerifier(model, prompts=prompt_set, config=settings)


def _label_part(spec: _LabelSpec, shard: int, shards: int, part: Path, concurrency: int) -> WorkerResult:
    """A worker process of ``label --workers``: label one shard of the input into parts of the
    output and review files."""
    from ..pipelines.label import label_jsonl
    from ..runner import ShardItems, part_path
    from ._workers import run_part

    model = spec.opts.build_model()
    verifier, meta_verifier = spec.roles(model, spec.opts.prompt_set())
    return run_part(
        model,
        lambda: label_jsonl(
            verifier,
            meta_verifier,
            spec.input,
            part,
            part_path(spec.review, shard),
            config=spec.config,
            max_points=spec.max_points,
            max_calls=spec.max_calls,
            max_tokens=spec.max_proof_tokens,
            concurrency=concurrency,
            items=ShardItems(spec.input, shard, shards),
            worker_of=(spec.output, spec.review),
        ),
    )


def _label_in_workers(spec: _LabelSpec, the_model: Model, workers: int, console: Console) -> None:
    """``label --workers N``: the shards in worker processes, the parts merged, the output and
    review file made to agree, then the usual closing lines."""
    from ..pipelines.label import label_counts, reconcile_review
    from ._workers import hand_over, run_workers

    hand_over(the_model, console)
    try:
        stats = run_workers(
            _label_part,
            spec,
            input_path=spec.input,
            output=spec.output,
            workers=workers,
            concurrency=spec.opts.concurrency or 16,
            label="labeling",
            console=console,
            max_input_chars=spec.opts.max_input_chars,
            companions=[spec.review],
            prepare=lambda: reconcile_review(spec.output, spec.review, spec.input),
        )
    finally:  # the parts are merged whatever happened: make the two files agree
        reconcile_review(spec.output, spec.review, spec.input)
    counts = label_counts(spec.output)
    _closing_lines(console, stats, counts["labeled"], counts["review"], spec.output, spec.review)
    exit_status(stats)


def _closing_lines(console: Console, stats: RunStats, labeled: int, in_review: int, output: Path, review: Path) -> None:
    """A label run's closing lines: what it processed, labeled and left for review, and the
    verdict counts of its output."""
    from ..grading import batch_verdicts

    console.print(
        f"processed {stats.done - stats.skipped} item(s), {stats.skipped} already done, "
        f"{stats.errors} error record(s); {labeled} labeled, {in_review} to review -> {output}, {review}"
    )
    console.print(batch_verdicts(output, verdicts=False))
