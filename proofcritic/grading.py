"""Grading: verify a proof n times and aggregate; batch grading that resumes after a kill."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import CallPlan
from .io import latest_values, problem_from_record, proof_from_record
from .llm import usage_scope
from .runner import JsonlItems, RunStats, read_items, run_jsonl
from .types import READ_OUT_SOURCES, GradeResult, Problem, Proof
from .verifier import Verifier, aggregate

if TYPE_CHECKING:
    from .verifier import CriticVerifier, StepVerifier


async def grade(
    verifier: Verifier | CriticVerifier,
    problem: Problem,
    proof: Proof | str,
    n: int = 1,
    *,
    scheme: Any = None,
    normalizer: Any = None,
    steps: StepVerifier | None = None,
) -> GradeResult:
    """Verify ``proof`` ``n`` times (one request with n samples) and aggregate the scores.
    With ``steps`` (``grade --steps``) the step verifier judges the proof's steps ``n`` times
    beside the verifier (at the same time); the result keeps the steps, the step verifications
    and their aggregate.

    The result's ``usage`` is what this grading sent to the model (likelihood read-outs, failed
    requests and retries included; answers from the cache counted apart, without tokens).
    """
    proof = proof if isinstance(proof, Proof) else Proof(text=proof)
    normalized = error = None
    with usage_scope() as usage:
        if normalizer is not None:  # --normalize: grade the neutral rewrite (the original if it failed)
            rewrite = await normalizer.rewrite(problem, proof.text)
            normalized, error = (rewrite.proof, None) if rewrite.format_ok else (None, rewrite.format_error)
            if normalized is not None:
                proof = Proof(text=normalized, id=proof.id)
        if scheme is not None and getattr(verifier, "scale", "ternary") == "points":
            checking = verifier.verify(problem, proof.text, n=n, scheme=scheme)  # type: ignore[call-arg]
        else:
            checking = verifier.verify(problem, proof.text, n=n)
        step_list = steps.split(proof.text) if steps is not None else None
        if steps is None:
            verifications, step_results = await checking, None
        else:
            verifications, step_results = await asyncio.gather(
                checking, steps.verify(problem, proof.text, n=n, steps=step_list)
            )
    return GradeResult(
        problem_id=problem.id,
        proof_id=proof.id,
        verifications=verifications,
        aggregate=aggregate(verifications, problem.max_points),
        usage=usage,
        normalized_proof=normalized,
        normalize_error=error,
        steps=step_list,
        step_verifications=step_results,
        step_aggregate=None if step_results is None else aggregate(step_results, problem.max_points),
    )


async def grade_jsonl(
    verifier: Verifier | CriticVerifier,
    input_path: str | Path,
    output_path: str | Path,
    *,
    n: int = 1,
    max_points: float | None = None,
    concurrency: int = 16,
    on_progress: Callable[[RunStats], None] | None = None,
    normalizer: Any = None,
    steps: StepVerifier | None = None,
    items: JsonlItems | None = None,
    done_in: str | Path | None = None,
) -> RunStats:
    """Grade every record of ``input_path`` into ``output_path``, one JSON line per item.

    Items already in the output (a result, or an input error) are skipped, so a killed run
    resumes where it stopped; items that failed on a backend error are tried again. A bad line
    becomes an error record; the batch never dies on one item. ``items`` (default: all of the
    input's) and ``done_in``: a worker's shard (see :func:`proofcritic.runner.run_jsonl`).
    """

    counts = [0, 0, 0, 0, 0]  # the verdicts of this run's results (see batch_verdicts)

    async def process(item_id: str, record: dict) -> GradeResult:
        problem = problem_from_record(record, default_id=item_id)
        if max_points is not None:
            problem = problem.model_copy(update={"max_points": max_points})
        scheme = record.get("scheme") or record.get("marking_scheme")  # points grading's, per problem
        result = await grade(
            verifier, problem, proof_from_record(record), n=n, scheme=scheme, normalizer=normalizer, steps=steps
        )
        for i, count in enumerate(_result_verdict_counts(result)):
            counts[i] += count
        return result

    stats = await run_jsonl(
        items if items is not None else read_items(input_path),
        output_path,
        process,
        concurrency=concurrency,
        on_progress=on_progress,
        done_in=done_in,
    )
    stats.extra["verdict_counts"] = tuple(counts)
    return stats


def _record_verifications(record: dict) -> list[dict] | None:
    """The verifications of a result record: a grade or solve result's, a label result's
    analyses and format failures; None for an error record or a solve result without a proof."""
    if "proof" in record and record["proof"] is None:
        return None
    if isinstance(record.get("verifications"), list):
        return record["verifications"]
    if isinstance(record.get("analyses"), list):
        return [a["verification"] for a in record["analyses"]] + list(record.get("format_failures") or [])
    return None


def _verdict_counts(record: dict) -> tuple[int, int, int, int, int] | None:
    """(1, has a verdict, verifications, scored ones, read-out ones) of a result record."""
    vs = _record_verifications(record)
    if vs is None:
        return None
    scores = [v for v in vs if v.get("score") is not None]
    read_out = sum(v.get("score_source") in READ_OUT_SOURCES for v in scores)
    return 1, int(bool(scores)), len(vs), len(scores), read_out


def _result_verdict_counts(result: GradeResult) -> tuple[int, int, int, int, int]:
    """:func:`_verdict_counts` of a grade result, read from the model (no record parsed)."""
    scored = [v for v in result.verifications if v.score is not None]
    read_out = sum(v.score_source in READ_OUT_SOURCES for v in scored)
    return 1, int(bool(scored)), len(result.verifications), len(scored), read_out


def batch_verdicts(output_path: str | Path, *, verdicts: bool = True, stats: RunStats | None = None) -> str:
    """One line on the results of a batch output (``grade``, ``solve``, ``label``): the proofs
    with a verdict (a scored verification; left out with ``verdicts=False``), the verifications
    without a score and the scores from a read-out. With the ``stats`` of a :func:`grade_jsonl`
    run that skipped nothing, the counts it kept as it went are the output's (every latest
    record is one of its results), and the output is not read again."""
    kept = stats.extra.get("verdict_counts") if stats is not None and not stats.skipped else None
    if kept is not None:
        counts = list(kept)
    else:
        counts = [0, 0, 0, 0, 0]  # proofs, with a verdict, verifications, scored, read out
        for summary in latest_values(output_path, _verdict_counts).values():  # one streamed pass
            if summary is not None:
                for i, count in enumerate(summary):
                    counts[i] += count
    proofs, with_verdict, verifications, scored, read_out = counts
    head = f"verdicts: {with_verdict} of {proofs} proof(s), {proofs - with_verdict} without a verdict; "
    return (
        f"{head if verdicts else ''}unscored: {verifications - scored} of {verifications} "
        f"verifications; scores from a read-out: {read_out}"
    )


def grade_plan(n: int = 1, tool_calls: int | None = None, *, steps: bool = False) -> CallPlan:
    """The model calls grading one proof makes at most: one verification request of ``n``
    samples; with tools (CRITIC, ``tool_calls`` code runs per verification at most) ``n``
    conversations of up to ``1 + tool_calls`` requests each; with ``steps``, one step
    verification request of ``n`` samples more."""
    plan = CallPlan().add("verification", 1 if tool_calls is None else n * (1 + tool_calls), n)
    return plan.add("step verification", 1, n) if steps else plan
