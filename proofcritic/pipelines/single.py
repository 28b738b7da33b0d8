"""``single``: generate proofs with self-evaluation, keep the best, verify it for evidence.

Also home of the helpers the ``refine`` and ``search`` strategies share: what counts as a
usable proof, the transcript log, the evaluation text shown to a refinement prompt, and a
gather that survives a spent budget.

A generation that breaks the output protocol (truncated, a missing section) is not a valid
output (SPEC section 1): it stays in the transcript but is never chosen, unless
``keep_invalid`` is set, in which case its best-effort proof text counts (useful with small
models that rarely follow the protocol).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..budget import BudgetExceeded, CallPlan
from ..llm import Usage
from ..parsing import SCORE_MARKER, format_score
from ..types import Generation, Problem, Verification
from ..verifier import aggregate
from ._common import ConfiguredStrategy, Roles, RoundHook, SolveResult

__all__ = [
    "RoundHook",
    "SingleConfig",
    "SingleStrategy",
    "StepLog",
    "evaluation_text",
    "gather_within_budget",
    "self_evaluation_text",
    "usable",
]

T = TypeVar("T")


def usable(generation: Generation, keep_invalid: bool = False) -> bool:
    """Whether a generation counts as a proof: it follows the protocol and has proof text
    (with ``keep_invalid``, any generation with proof text counts)."""
    return bool(generation.proof.strip()) and (generation.format_ok or keep_invalid)


def evaluation_text(analysis: str, score: float | None) -> str:
    """An analysis as a refinement prompt shows it: the analysis, then the score marker and box."""
    text = analysis.strip() or "(no analysis written)"
    if score is None:
        return text
    return f"{text}\n\n{SCORE_MARKER}\n\\boxed{{{format_score(score)}}}"


def self_evaluation_text(generation: Generation) -> str:
    """The self-analysis of a generation as the next refinement prompt shows it."""
    if generation.self_analysis.strip():
        return evaluation_text(generation.self_analysis, generation.self_score)
    reason = generation.format_error or "no self-evaluation"
    return f"(The previous answer did not follow the required output format: {reason}.)"


async def gather_within_budget(aws: Iterable[Awaitable[T]]) -> tuple[list[T | None], BudgetExceeded | None]:
    """Run ``aws`` concurrently to the end; a spent budget leaves ``None`` in its place.

    Unlike a plain gather, work that finished is kept when another task hits the budget, and
    no task is left running. Other errors are raised once every task is done.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    out: list[T | None] = []
    budget_error: BudgetExceeded | None = None
    for result in results:
        if isinstance(result, BudgetExceeded):
            budget_error = budget_error or result
            out.append(None)
        elif isinstance(result, BaseException):
            raise result
        else:
            out.append(result)
    return out, budget_error


class StepLog:
    """The transcript of one solve, and the usage of the role outputs it saw."""

    def __init__(self) -> None:
        self.transcript: list[dict[str, Any]] = []
        self.usage = Usage()

    def generation(self, step: str, round_: int, generation: Generation, **extra: Any) -> dict[str, Any]:
        """Log a generation (``step`` is "generate" or "refine"); the raw text only on failure."""
        entry: dict[str, Any] = {
            "step": step,
            "round": round_,
            **extra,
            "proof": generation.proof,
            "self_analysis": generation.self_analysis,
            "self_score": generation.self_score,
            "format_ok": generation.format_ok,
            "format_error": generation.format_error,
            "finish_reason": generation.finish_reason,
        }
        if not generation.format_ok:
            entry["raw"] = generation.raw
        self.transcript.append(entry)
        self.usage.add(generation.usage)
        return entry

    def verification(self, round_: int, verifications: list[Verification], **extra: Any) -> dict[str, Any]:
        """Log the verifications of one proof with their scores and analyses."""
        entry = {
            "step": "verify",
            "round": round_,
            **extra,
            "scores": [v.score for v in verifications],
            "score_sources": [v.score_source for v in verifications],  # "likelihood" / "guided": a read-out
            "mean": aggregate(verifications).mean,
            "analyses": [v.analysis for v in verifications],
            "format_errors": [v.format_error for v in verifications],
        }
        self.transcript.append(entry)
        for v in verifications:
            self.usage.add(v.usage)
        return entry

    def note(self, step: str, round_: int, **fields: Any) -> None:
        self.transcript.append({"step": step, "round": round_, **fields})


def best_by_self_score(generations: list[Generation], keep_invalid: bool, latest: bool = False) -> Generation | None:
    """The usable generation with the highest self-score; ties go to the first (or the latest)."""
    best: Generation | None = None
    for generation in generations:
        if not usable(generation, keep_invalid):
            continue
        if best is None or generation.self_score > best.self_score or (latest and generation.self_score == best.self_score):
            best = generation
    return best


def first_format_error(generations: list[Generation]) -> str:
    errors = [g.format_error for g in generations if g.format_error]
    return errors[0] if errors else "no proof text"


async def verify_for_evidence(
    problem: Problem, roles: Roles, result: SolveResult, log: StepLog, n: int, round_: int
) -> None:
    """Verify the chosen proof ``n`` times; fill ``verifications`` and ``mean_score``."""
    if n <= 0 or result.proof is None:
        return
    verifications = await roles.verifier.verify(problem, result.proof, n=n)
    log.verification(round_, verifications)
    result.verifications = verifications
    result.mean_score = aggregate(verifications).mean


class SingleConfig(BaseModel):
    """Parameters of the ``single`` strategy."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(1, ge=1, le=1024, description="Proofs generated; the best self-score is chosen.")
    verify_n: int = Field(1, ge=0, le=1024, description="Verifications of the chosen proof, as evidence (0: none).")
    keep_invalid: bool = Field(False, description="Let format failures count as proofs (their best-effort text).")


class SingleStrategy(ConfiguredStrategy):
    """Generate ``samples`` proofs with self-evaluation; answer the best by self-score.

    ``SingleStrategy(samples=4)`` or ``SingleStrategy(SingleConfig(...))``.
    """

    config_class = SingleConfig
    name = "single"

    config: SingleConfig

    def plan(self) -> CallPlan:
        """One generation request of ``samples`` proofs; one of ``verify_n`` verifications."""
        config = self.config
        return CallPlan().add("generation", 1, config.samples).add("verification", int(config.verify_n > 0), config.verify_n)

    async def solve(self, problem: Problem, roles: Roles, state_dir: str | Path | None = None) -> SolveResult:
        """One round: generate, choose, verify. A spent budget returns what there is so far."""
        config = self.config
        log = StepLog()
        result = SolveResult(problem_id=problem.id, strategy=self.name, rounds=1)
        self.report(problem.id, 1, step="generate", proofs=(0, config.samples))
        try:
            generations = await roles.generator.generate(problem, n=config.samples)
            for index, generation in enumerate(generations):
                log.generation("generate", 1, generation, sample=index)
            chosen = best_by_self_score(generations, config.keep_invalid)
            if chosen is None:
                result.stop_reason = f"no valid generation ({first_format_error(generations)})"
            else:
                result.generation, result.proof = chosen, chosen.proof
                result.stop_reason = f"generated {len(generations)} proof(s); chose self-score {format_score(chosen.self_score)}"
                self.report(problem.id, 1, step="verify", proofs=(len(generations), config.samples),
                            best_self_score=chosen.self_score)
                await verify_for_evidence(problem, roles, result, log, config.verify_n, 1)
        except BudgetExceeded as error:
            result.budget_limited = True
            result.stop_reason = f"budget: {error}"
        result.transcript, result.usage = log.transcript, log.usage
        return result
