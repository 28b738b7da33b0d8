"""``single``: generate proofs with self-evaluation, keep the best, verify it for evidence.

A generation that breaks the output protocol (truncated, a missing section) is not a valid
output (SPEC section 1): it stays in the transcript but is never chosen, unless
``keep_invalid`` is set, in which case its best-effort proof text counts (useful with small
models that rarely follow the protocol).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..budget import BudgetExceeded, CallPlan
from ..llm import SampleCount
from ..parsing import format_score
from ..types import Generation, Problem
from ._common import ConfiguredStrategy, Roles, SolveResult, StepLog, usable, verify_for_evidence

__all__ = ["SingleConfig", "SingleStrategy"]


def best_by_self_score(generations: list[Generation], keep_invalid: bool, latest: bool = False) -> Generation | None:
    """The usable generation with the highest self-score; ties go to the first (or the latest)."""
    best: Generation | None = None
    for generation in generations:
        if not usable(generation, keep_invalid):
            continue
        if (
            best is None
            or generation.self_score > best.self_score
            or (latest and generation.self_score == best.self_score)
        ):
            best = generation
    return best


def first_format_error(generations: list[Generation]) -> str:
    errors = [g.format_error for g in generations if g.format_error]
    return errors[0] if errors else "no proof text"


class SingleConfig(BaseModel):
    """Parameters of the ``single`` strategy."""

    model_config = ConfigDict(extra="forbid")

    samples: SampleCount = Field(1, description="Proofs generated; the best self-score is chosen.")
    verify_n: int = Field(1, ge=0, le=1024, description="Verifications of the chosen proof, as evidence (0: none).")
    keep_invalid: bool = Field(False, description="Let format failures count as proofs (their best-effort text).")
    select: Literal["self_score", "knockout", "swiss", "prm"] = Field(
        "self_score",
        description="How the answer is chosen among the samples: the best self-score, a pairwise tournament "
        "judged on the verifier's model (knockout or swiss; proofcritic.pipelines.tournament), or the best "
        "process reward model score (prm: the steps of each proof scored by the PRM folder `prm`).",
    )
    prm: str | None = Field(None, description="select=prm: a PRM folder trained by `train prm` (model or adapter).")
    prm_aggregate: Literal["min", "product", "last"] = Field(
        "min", description="select=prm: a proof's score from its step scores (the lowest, the product, the last)."
    )
    prm_separator: str = Field("\n\n", description="select=prm: the step separator the PRM was trained with.")

    @model_validator(mode="after")
    def _prm_folder(self) -> SingleConfig:
        if self.select == "prm" and not self.prm:
            raise ValueError("select=prm needs prm, the folder of a model trained by `train prm`")
        return self


def tournament_calls(select: str, proofs: int) -> int:
    """The comparison requests a tournament over ``proofs`` proofs makes at most (two per match)."""
    if select in ("self_score", "prm") or proofs < 2:
        return 0
    if select == "knockout":
        return 2 * (proofs - 1)
    return 2 * math.ceil(math.log2(proofs)) * (proofs // 2)


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
        return (
            CallPlan()
            .add("generation", 1, config.samples)
            .add("comparison", tournament_calls(config.select, config.samples))
            .add("verification", int(config.verify_n > 0), config.verify_n)
        )

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
            pool = [g for g in generations if usable(g, config.keep_invalid)]
            how = f"chose self-score {format_score(chosen.self_score)}" if chosen is not None else ""
            if chosen is not None and config.select == "prm":
                chosen, how = await self._by_prm(problem, pool, log)
            elif chosen is not None and config.select != "self_score" and len(pool) > 1:
                chosen, how = await self._tournament(problem, roles, pool, log)
            if chosen is None:
                result.stop_reason = f"no valid generation ({first_format_error(generations)})"
            else:
                result.generation, result.proof = chosen, chosen.proof
                result.stop_reason = f"generated {len(generations)} proof(s); {how}"
                self.report(
                    problem.id,
                    1,
                    step="verify",
                    proofs=(len(generations), config.samples),
                    best_self_score=chosen.self_score,
                )
                await verify_for_evidence(problem, roles, result, log, config.verify_n, 1)
        except BudgetExceeded as error:
            result.budget_limited = True
            result.stop_reason = f"budget: {error}"
        result.transcript, result.usage = log.transcript, log.usage
        return result

    async def _by_prm(self, problem: Problem, pool: list[Generation], log: StepLog) -> tuple[Generation, str]:
        """The proof whose PRM score (its step scores aggregated) is highest; ties go to the
        higher self-score, then the first. Every proof's step scores go into the log."""
        from ..steps import split_steps
        from .prm import aggregate_steps, load_scorer

        config = self.config
        assert config.prm is not None  # the config's check
        scorer = await asyncio.to_thread(load_scorer, config.prm, config.prm_separator)
        scored = []
        for generation in pool:
            texts = [s.text for s in split_steps(generation.proof)]
            step_scores = await scorer.score(problem.statement, texts)
            scored.append((aggregate_steps(step_scores, config.prm_aggregate), generation, step_scores))
        best = max(range(len(scored)), key=lambda i: (scored[i][0], scored[i][1].self_score, -i))
        log.transcript.append(
            {
                "step": "prm",
                "round": 1,
                "aggregate": config.prm_aggregate,
                "scores": [score for score, _, _ in scored],
                "step_scores": [steps for _, _, steps in scored],
                "chosen": best,
            }
        )
        score, winner, steps = scored[best]
        return winner, (
            f"chose by PRM ({config.prm_aggregate} over {len(steps)} step scores: {score:.3f}; "
            f"{len(pool)} proof(s) scored; self-score {format_score(winner.self_score)})"
        )

    async def _tournament(
        self, problem: Problem, roles: Roles, pool: list[Generation], log: StepLog
    ) -> tuple[Generation, str]:
        """The pool's winner of a pairwise tournament judged on the verifier's model (its
        prompts, its sampling); seeds in order of self-score. The matches go into the log."""
        from .tournament import run_tournament

        seeded = sorted(pool, key=lambda g: -g.self_score)
        outcome = await run_tournament(self.config.select, roles.verifier, problem, [g.proof for g in seeded])
        log.usage.add(outcome.usage)
        log.transcript.append(
            {
                "step": "tournament",
                "round": 1,
                "format": outcome.format,
                "winner": outcome.winner,
                "points": outcome.points,
                "matches": [{"a": m.a, "b": m.b, "winner": m.winner} for m in outcome.matches],
            }
        )
        winner = seeded[outcome.winner]
        return winner, (
            f"chose by {outcome.format} tournament ({len(outcome.matches)} matches; "
            f"winner's self-score {format_score(winner.self_score)})"
        )
