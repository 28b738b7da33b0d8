"""Grading: verify a proof n times and aggregate; batch grading that resumes after a kill."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BackendError, InputError, ProofcriticError
from .io import JsonlAppender, iter_jsonl, problem_from_record, proof_from_record, read_done
from .llm import Usage
from .types import GradeResult, Problem, Proof
from .verifier import Verifier, aggregate


async def grade(verifier: Verifier, problem: Problem, proof: Proof | str, n: int = 1) -> GradeResult:
    """Verify ``proof`` ``n`` times (one request with n samples) and aggregate the scores."""
    proof = proof if isinstance(proof, Proof) else Proof(text=proof)
    verifications = await verifier.verify(problem, proof.text, n=n)
    usage = Usage()
    for v in verifications:
        usage.add(v.usage)
    return GradeResult(
        problem_id=problem.id,
        proof_id=proof.id,
        verifications=verifications,
        aggregate=aggregate(verifications, problem.max_points),
        usage=usage,
    )


@dataclass
class BatchStats:
    """Progress of a batch, updated as items finish."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    errors: int = 0
    usage: Usage = field(default_factory=Usage)


def _item_id(record: dict, line: int) -> str:
    value = record.get("id")
    return str(value) if value is not None else f"line-{line}"


async def grade_jsonl(
    verifier: Verifier,
    input_path: str | Path,
    output_path: str | Path,
    *,
    n: int = 1,
    max_points: float | None = None,
    concurrency: int = 16,
    on_progress: Callable[[BatchStats], None] | None = None,
) -> BatchStats:
    """Grade every record of ``input_path`` into ``output_path``, one JSON line per item.

    Items already in the output (a result, or an input error) are skipped, so a killed run
    resumes where it stopped; items that failed on a backend error are tried again. A bad line
    becomes an error record; the batch never dies on one item.
    """
    done = {k: r for k, r in read_done(output_path).items() if r.get("error_kind") not in ("backend", "internal")}
    stats = BatchStats()
    work: list[tuple[str, int, dict | InputError]] = []
    seen: set[str] = set()
    for line, record in iter_jsonl(input_path):
        item_id = f"line-{line}" if isinstance(record, InputError) else _item_id(record, line)
        if item_id in seen:
            item_id = f"{item_id}#line-{line}"
        seen.add(item_id)
        stats.total += 1
        if item_id in done:
            stats.skipped += 1
            stats.done += 1
            continue
        work.append((item_id, line, record))
    if on_progress:
        on_progress(stats)

    gate = asyncio.Semaphore(concurrency)
    with JsonlAppender(output_path) as out:

        async def run(item_id: str, line: int, record: dict | InputError) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    if isinstance(record, InputError):
                        raise record
                    problem = problem_from_record(record, default_id=item_id)
                    if max_points is not None:
                        problem = problem.model_copy(update={"max_points": max_points})
                    proof = proof_from_record(record)
                    result = await grade(verifier, problem, proof, n=n)
                    row = {"id": item_id, "line": line, **result.model_dump(mode="json")}
                    row["seconds"] = round(time.perf_counter() - started, 3)
                    stats.usage.add(result.usage)
                except ProofcriticError as error:
                    kind = "input" if isinstance(error, InputError) else "backend" if isinstance(error, BackendError) else "error"
                    row = {"id": item_id, "line": line, "error": str(error), "error_kind": kind}
                    stats.errors += 1
                except Exception as error:  # a bug must not kill the batch: record it, go on
                    row = {"id": item_id, "line": line, "error": f"{type(error).__name__}: {error}", "error_kind": "internal"}
                    stats.errors += 1
                out.write(row)
                stats.done += 1
                if on_progress:
                    on_progress(stats)

        await asyncio.gather(*(run(*item) for item in work))
    return stats
