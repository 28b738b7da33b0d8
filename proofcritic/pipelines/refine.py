"""``refine``: sequential refinement by self-verification (SPEC section 5).

Generate a proof with its self-evaluation; while the self-score is below 1, show the previous
proof and its self-analysis to the refinement prompt (``--- Solution 1 ---`` followed by
``=== Evaluation 1 of Solution 1 ===``) and ask for a new proof; stop at self-score 1 or after
``max_iters`` generations. The paper reports IMO Shortlist 2024 Pass@1 0.15 -> 0.27 from 1 to 8
iterations, hence the default of 8 (the first generation counts as iteration 1, so at most 7
refinements).

Details the SPEC leaves open, decided here:

- Only a usable generation (it follows the protocol, or ``keep_invalid``) can stop the loop
  with self-score 1. A format failure has self-score 0 (SPEC), so the loop goes on: the next
  prompt shows its best-effort proof text and says why it failed the format. When it has no
  proof text at all, the latest generation that has one is shown instead; if none has, the
  loop stops (asking the same prompt again would only return the cached answer).
- The answer is the usable generation with the best self-score, the latest on ties (so a
  stop at self-score 1 answers that proof). It is verified ``verify_n`` times as evidence.
- With ``step_check`` (issue #18), each proof about to be refined is also checked step by step
  by the step verifier (:class:`~proofcritic.verifier.StepVerifier`, on the verifier's model,
  one sample), and the refinement prompt shows, after the self-evaluation, the first step it
  judged incorrect (its number, its text and the reason), or that it found none. A step check
  that fails the format adds nothing; the transcript's ``step_check`` entry says what it found.
- Resume after a kill comes from the completion cache: every prompt is a function of the
  earlier answers, so a rerun replays the cached ones for free. No state dir is needed.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..budget import BudgetExceeded, CallPlan
from ..generator import Candidate
from ..parsing import format_score
from ..types import Generation, Problem
from ._common import (
    ConfiguredStrategy,
    Roles,
    SolveResult,
    StepLog,
    self_evaluation_text,
    usable,
    verify_for_evidence,
)

__all__ = ["RefineConfig", "RefineStrategy"]


class RefineConfig(BaseModel):
    """Parameters of the ``refine`` strategy."""

    model_config = ConfigDict(extra="forbid")

    max_iters: int = Field(
        8, ge=1, le=256, description="Generations in all, the first included (SPEC: 1 to 8 iterations)."
    )
    verify_n: int = Field(1, ge=0, le=1024, description="Verifications of the final proof, as evidence (0: none).")
    keep_invalid: bool = Field(False, description="Let format failures count as proofs (their best-effort text).")
    step_check: bool = Field(
        False,
        description="Check each proof to refine step by step (the step verifier, on the verifier's model) and show "
        "the first wrong step in the refinement prompt.",
    )


class RefineStrategy(ConfiguredStrategy):
    """Refine a proof against its own self-analysis until it rates itself 1.

    ``RefineStrategy(max_iters=4)`` or ``RefineStrategy(RefineConfig(...))``.
    """

    config_class = RefineConfig
    name = "refine"

    config: RefineConfig

    def plan(self) -> CallPlan:
        """``max_iters`` generation requests of one proof; one of ``verify_n`` verifications."""
        config = self.config
        return (
            CallPlan()
            .add("generation", config.max_iters)
            .add("step verification", config.max_iters - 1 if config.step_check else 0)
            .add("verification", int(config.verify_n > 0), config.verify_n)
        )

    async def solve(self, problem: Problem, roles: Roles, state_dir: str | Path | None = None) -> SolveResult:
        """Run the loop; a spent budget answers the best proof so far, marked budget-limited."""
        config = self.config
        log = StepLog()
        result = SolveResult(problem_id=problem.id, strategy=self.name)
        generations: list[Generation] = []
        try:
            result.stop_reason = await self._loop(problem, roles, log, result, generations)
            self._choose(result, generations)
            await verify_for_evidence(problem, roles, result, log, config.verify_n, result.rounds)
        except BudgetExceeded as error:
            if result.proof is None:
                self._choose(result, generations)
            result.budget_limited = True
            result.stop_reason = f"budget: {error} (after {len(generations)} generation(s))"
        result.transcript, result.usage = log.transcript, log.usage
        return result

    async def _loop(
        self, problem: Problem, roles: Roles, log: StepLog, result: SolveResult, generations: list[Generation]
    ) -> str:
        """Generate and refine; returns the stop reason. ``generations`` grows as answers come."""
        config = self.config
        for iteration in range(1, config.max_iters + 1):
            if iteration == 1:
                base_index = None
            else:
                base_index = next(
                    (i for i in range(len(generations) - 1, -1, -1) if generations[i].proof.strip()), None
                )
                if base_index is None:
                    return f"no proof text to refine after {iteration - 1} generation(s)"
            self._report(problem, iteration, generations)
            result.rounds = iteration
            if base_index is None:
                generation = (await roles.generator.generate(problem, n=1))[0]
                log.generation("generate", iteration, generation)
            else:
                base = generations[base_index]
                evaluations = [self_evaluation_text(base)]
                if config.step_check:
                    evaluations += await self._step_check(problem, roles, log, iteration, base.proof)
                candidate = Candidate(proof=base.proof, evaluations=evaluations)
                generation = (await roles.generator.refine(problem, [candidate], n=1))[0]
                log.generation("refine", iteration, generation, refines=base_index + 1)
            generations.append(generation)
            self._report(problem, iteration, generations)
            if usable(generation, config.keep_invalid) and generation.self_score >= 1:
                return f"self-score 1 at iteration {iteration}"
        return f"max iterations ({config.max_iters}) reached"

    async def _step_check(self, problem: Problem, roles: Roles, log: StepLog, iteration: int, proof: str) -> list[str]:
        """The step verifier's finding on ``proof`` as an evaluation for the refinement prompt
        (none when its output fails the format); logged as a ``step_check`` step."""
        from ..verifier import StepVerifier

        checker = StepVerifier(roles.verifier.model, prompts=roles.verifier.prompts, config=roles.verifier.config)
        steps = checker.split(proof)
        if not steps:
            return []
        [found] = await checker.verify(problem, proof, 1, steps=steps)
        log.usage.add(found.usage)
        entry: dict = {"step": "step_check", "round": iteration, "steps": len(steps), "format_ok": found.format_ok}
        if not found.format_ok:
            log.transcript.append({**entry, "format_error": found.format_error})
            return []
        entry |= {"first_error": found.first_error, "score": found.score, "unjustified": found.unjustified}
        log.transcript.append(entry)
        if found.first_error is None:
            return [f"A step-by-step check of this solution ({len(steps)} steps) found no incorrect step."]
        wrong = steps[found.first_error]
        reason = next((v.reason for v in found.verdicts if v.index == found.first_error), "")
        return [
            f"A step-by-step check of this solution ({len(steps)} steps) found its first wrong step, "
            f"step {wrong.number}:\n\n{wrong.text}\n\nWhy it is wrong: {reason or '(no reason given)'}"
        ]

    def _report(self, problem: Problem, iteration: int, generations: list[Generation]) -> None:
        best = max((g.self_score for g in generations if usable(g, self.config.keep_invalid)), default=None)
        self.report(problem.id, iteration, round=(iteration, self.config.max_iters), best_self_score=best)

    def _choose(self, result: SolveResult, generations: list[Generation]) -> None:
        best: int | None = None
        for index, generation in enumerate(generations):
            if usable(generation, self.config.keep_invalid) and (
                best is None or generation.self_score >= generations[best].self_score
            ):
                best = index
        if best is None:
            result.stop_reason += "; no valid generation to answer"
            return
        chosen = generations[best]
        result.generation, result.proof, result.proof_id = chosen, chosen.proof, f"iteration-{best + 1}"
        if not result.stop_reason.startswith("self-score 1"):
            result.stop_reason += f"; chose iteration {best + 1} (self-score {format_score(chosen.self_score)})"
