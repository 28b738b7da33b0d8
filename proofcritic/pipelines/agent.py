"""The generate-verify-repair agent loop of the IMO-gold pipeline with general models
(Huang & Yang 2025; SPEC section 5).

One **run**: the solver writes a proof (``generate``), then improves it in a second turn
(``agent_improve``). Then **iterations** follow; one iteration is one verification round of the
current proof:

1. **verify**: the verifier writes a step-by-step log whose issues are Critical Errors or
   Justification Gaps (``verify``; ``agent_reverify`` when the current proof came from a
   repair in which the solver disputed items of the bug report: the verifier then sees the
   disputes and reconsiders them);
2. **judge**: a second call reads the log and answers pass or fail (``agent_judge``). A
   verification that was cut off (or is empty) is a fail without a judge call; a judge answer
   that does not parse is a fail;
3. **counters**: a pass adds one to the consecutive-pass counter and sets the consecutive-failure
   counter to 0; a fail sets the pass counter to 0 and adds one to the failure counter;
4. the run **accepts** the current proof when the pass counter reaches ``passes_to_accept``, and
   **gives up** when the failure counter reaches ``failures_to_give_up``; otherwise a fail
   triggers a **repair** (``agent_repair``: the proof and the failing log as bug report; the
   solver may dispute items) whose proof becomes the current one. No repair follows the last
   iteration of a run (its proof would never be verified);
5. a run ends after ``max_iterations`` iterations at most. Up to ``max_runs`` runs, each from a
   fresh solve; the first acceptance ends the search.

A passed proof is verified again in the next iteration (a fresh, independent sample), so an
acceptance is ``passes_to_accept`` passing verifications in a row of one proof. A generation
(solve, improve, repair) that was cut off or has no proof is not used: a run whose solve gives
none ends at once; a failed improvement or repair keeps the previous proof (and its disputes).
A generation counts as a proof as in the other strategies: it follows the generator's protocol
and has proof text (with ``keep_invalid``: any proof text). A repair's Disputes section is
optional.

Every call gets its own seed, derived from the role's seed (or ``AgentConfig.seed``) and the
run, iteration and step, so repeated verifications of one proof are independent samples even
with the completion cache on, and a resumed run replays the same decisions. ``state_dir`` is
not used: resuming relies on the completion cache.

**Adaptive re-verification** (``adaptive=True``; ``solve --strategy agent --adaptive``). A
streak of verifications of one proof in one run (from its first verification, or the first after
a failure, until a fail or acceptance) is one decision, "passes the ``passes_to_accept - passes``
verifications still needed" (at most the iterations left), and is drawn as samples of one
verification request at the checkpoints of
:func:`~proofcritic.pipelines.adaptive.checkpoints` (``batch``, ``2 * batch`` ... of the needed
ones; sample i with the streak's seed + i, so a rerun draws the same samples from the cache).
Each iteration takes the next drawn verification and judges it as before, so the judge calls,
the counters, repairs and the outcome follow the fixed loop's rules exactly on the drawn
sequence. The fixed loop already stops a streak at its first failure, so this saves no
verification calls: it sends fewer verification requests (one per checkpoint instead of one per
iteration: a streak of 5 passes is 2 requests at ``batch=4``, 4 at ``batch=1``) and can cost up
to ``batch - 1`` verifications drawn after a failure and never used; an ``adaptive`` transcript
step says what each streak drew and used. ``confidence`` is not used: the rule is exact.

On the points scale (roles whose verifier is a :class:`~proofcritic.verifier.PointsVerifier`,
``solve --scale points``) every verification grades points (``verify_points``; with disputes
``agent_reverify_points``), a pass is full marks read from the grade itself (no judge call; a
grade without valid points is a fail), and the bug report a repair sees is the grade's analysis
with its issues and "x / 7 points" (template ``points_evaluation``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._roles import Role
from ..budget import BudgetExceeded, CallPlan
from ..llm import Seed, Usage
from ..parsing import strip_thinking, truncation_error
from ..types import Generation, Problem, Verification
from ._agent_roles import (
    Improver,
    Judge,
    PointsRebuttalVerifier,
    RebuttalVerifier,
    Repair,
    Repairer,
    agent_prompts,
)
from ._common import ConfiguredStrategy, Roles, SolveResult, usable, verifier_evaluation_text
from .adaptive import AdaptiveOptions, Draws, next_checkpoint

if TYPE_CHECKING:
    from ..verifier import Verifier

__all__ = ["AgentConfig", "AgentStrategy"]


class AgentConfig(AdaptiveOptions):
    """Parameters of the agent loop (defaults: the published pipeline's; ``adaptive``, ``batch``:
    :class:`~proofcritic.pipelines.adaptive.AdaptiveOptions`, off; see the module)."""

    model_config = ConfigDict(extra="forbid")

    passes_to_accept: int = Field(5, ge=1, description="Consecutive passing verifications that accept a proof.")
    failures_to_give_up: int = Field(10, ge=1, description="Consecutive failing verifications that end a run.")
    max_iterations: int = Field(30, ge=1, description="Verification rounds (verify + judge) per run at most.")
    max_runs: int = Field(10, ge=1, description="Runs at most, each starting from a fresh solve.")
    self_improve: bool = Field(True, description="Give the solver a self-improvement turn after each solve.")
    keep_invalid: bool = Field(False, description="Let format failures with proof text count as proofs.")
    seed: Seed | None = Field(None, description="Base of the per-call seeds; None: each role's own seed, else 0.")

    @model_validator(mode="after")
    def _workable(self) -> AgentConfig:
        if self.passes_to_accept > self.max_iterations:
            raise ValueError(
                f"passes_to_accept ({self.passes_to_accept}) exceeds max_iterations ({self.max_iterations}): "
                "no run could ever accept; raise max_iterations or lower passes_to_accept"
            )
        return self


@dataclass
class _Streak:
    """The verifications drawn for one streak of one proof (adaptive re-verification)."""

    candidate: _Candidate
    run: int
    start: int
    """The iteration of the streak's first verification."""
    seed: int
    draws: Draws
    used: int = 0


@dataclass
class _Candidate:
    """One distinct proof text and everything the loop learned about it."""

    proof: str
    generation: Generation
    order: int
    origin: str
    rebuttal: str = ""
    report: str = ""
    verifications: list[Verification] = field(default_factory=list)
    passes: int = 0
    fails: int = 0

    def rank(self) -> tuple[float, ...]:
        """Most passes, then pass rate, then mean verifier score; never verified: last."""
        scores = [v.score for v in self.verifications if v.score is not None]
        rounds = self.passes + self.fails
        mean = sum(scores) / len(scores) if scores else -1.0
        return (self.passes, self.passes / rounds if rounds else -1.0, mean, self.order)


def _entry(run: int, iteration: int, step: str, output: BaseModel | None = None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"run": run, "iteration": iteration, "step": step}
    if output is not None:
        record.update(output.model_dump(mode="json", exclude={"usage"}))
    record.update(fields)
    return record


class _Session:
    """The state of one ``solve``: roles, candidates, transcript, usage."""

    def __init__(
        self,
        config: AgentConfig,
        problem: Problem,
        roles: Roles,
        report: Callable[..., None] = lambda round_, **state: None,
    ):
        self.config, self.problem, self.roles, self.report = config, problem, roles, report
        self.rounds = 0  # verification rounds so far, all runs together
        generator_sets = agent_prompts(roles.generator.prompts)
        verifier_sets = agent_prompts(roles.verifier.prompts)
        gen = roles.generator
        self.improver = Improver(gen.model, prompts=generator_sets["agent_improve"], config=gen.config)
        self.repairer = Repairer(gen.model, prompts=generator_sets["agent_repair"], config=gen.config)
        self.judge = Judge(roles.verifier.model, prompts=verifier_sets["agent_judge"], config=roles.verifier.config)
        self.reverify_prompts = verifier_sets["agent_reverify"]
        self.candidates: dict[str, _Candidate] = {}
        self.transcript: list[dict[str, Any]] = []
        self.usage = Usage()
        self.accepted: _Candidate | None = None
        self.streak: _Streak | None = None  # adaptive re-verification: the streak being drawn

    # -- helpers ----------------------------------------------------------------------------
    def _seed(self, role: Role, run: int, iteration: int, step: str) -> int:
        """A seed of its own for every call: the same question asked again (five verifications
        of one proof) must get a fresh answer, not the cached one; a rerun gets the same seeds."""
        base = self.config.seed if self.config.seed is not None else (role.config.seed or 0)
        return (base + zlib.crc32(f"{run}/{iteration}/{step}".encode())) % 2**31

    def _usable(self, generation: Generation) -> bool:
        return usable(generation, self.config.keep_invalid)

    def _candidate(self, generation: Generation, origin: str, rebuttal: str = "", report: str = "") -> _Candidate:
        proof = generation.proof.strip()
        found = self.candidates.get(proof)
        if found is None:
            found = _Candidate(proof, generation, len(self.candidates), origin, rebuttal, report)
            self.candidates[proof] = found
        else:
            found.rebuttal, found.report = rebuttal, report
        return found

    def _record(self, entry: dict[str, Any], usage: Usage | None = None) -> None:
        self.transcript.append(entry)
        if usage is not None:
            self.usage.add(usage)

    # -- steps ------------------------------------------------------------------------------
    async def _solve(self, run: int) -> _Candidate | None:
        generator = self.roles.generator
        generation = (await generator.generate(self.problem, seed=self._seed(generator, run, 0, "solve")))[0]
        self._record(_entry(run, 0, "solve", generation, usable=self._usable(generation)), generation.usage)
        if not self._usable(generation):
            return None
        current = self._candidate(generation, f"run-{run}/solve")
        if not self.config.self_improve:
            return current
        seed = self._seed(self.improver, run, 0, "improve")
        improved = await self.improver.improve(self.problem, current.proof, seed=seed)
        self._record(_entry(run, 0, "improve", improved, usable=self._usable(improved)), improved.usage)
        return self._candidate(improved, f"run-{run}/improve") if self._usable(improved) else current

    async def _verify(self, run: int, iteration: int, current: _Candidate, passes: int = 0) -> Verification:
        verifier, template = self._verifier_for(current)
        if self.config.adaptive:
            verification = await self._drawn_verification(run, iteration, current, passes, verifier)
        else:
            seed = self._seed(verifier, run, iteration, "verify")
            verification = (await verifier.verify(self.problem, current.proof, seed=seed))[0]
        current.verifications.append(verification)
        self._record(_entry(run, iteration, "verify", verification, template=template), verification.usage)
        return verification

    async def _drawn_verification(
        self, run: int, iteration: int, current: _Candidate, passes: int, verifier: Verifier
    ) -> Verification:
        """The streak's next verification, drawn at the next checkpoint when none is left."""
        streak = self.streak
        if streak is None or streak.candidate is not current or streak.run != run:
            self.end_streak("a new streak began")
            needed = min(self.config.passes_to_accept - passes, self.config.max_iterations - iteration + 1)
            seed = self._seed(verifier, run, iteration, "verify")
            streak = self.streak = _Streak(current, run, iteration, seed, Draws(max(needed, 1)))
        if streak.used >= streak.draws.drawn:
            upto = next_checkpoint(streak.draws.drawn, streak.draws.n, self.config.batch)
            await streak.draws.draw(verifier, self.problem, current.proof, upto, seed=streak.seed)
        verification = streak.draws.verifications[streak.used]
        streak.used += 1
        return verification

    def end_streak(self, why: str) -> None:
        """Close the adaptive streak (if any) with an ``adaptive`` transcript step: what it drew
        and used (the verifications' usage is counted as each is used; the unused ones' here)."""
        streak, self.streak = self.streak, None
        if streak is None:
            return
        unused = streak.draws.verifications[streak.used :]
        for verification in unused:
            self.usage.add(verification.usage)
        self._record(
            _entry(
                streak.run,
                streak.start,
                "adaptive",
                planned=streak.draws.n,
                drawn=streak.draws.drawn,
                used=streak.used,
                requests=streak.draws.requests,
                stopped=f"{why}: {streak.used} of {streak.draws.drawn} drawn verifications used "
                f"({streak.draws.requests} requests; {streak.draws.n} needed at most)",
            )
        )

    def _verifier_for(self, current: _Candidate) -> tuple[Verifier, str]:
        """The verifier of ``current`` (shown the disputes of its repair, if any) and its template."""
        verifier: Verifier
        if current.rebuttal and self.roles.scale == "points":  # the points protocol, the disputes shown
            base = self.roles.verifier
            verifier = PointsRebuttalVerifier(
                base.model,
                report=current.report,
                rebuttal=current.rebuttal,
                prompts=base.prompts,
                config=base.config,
                scheme=getattr(base, "scheme", None),
            )
            template = verifier.template
        elif current.rebuttal:
            base = self.roles.verifier
            verifier = RebuttalVerifier(
                base.model,
                report=current.report,
                rebuttal=current.rebuttal,
                prompts=self.reverify_prompts,
                config=base.config,
                score_mode=base.score_mode,
            )
            template = "agent_reverify"
        else:
            verifier, template = self.roles.verifier, self.roles.verifier.template  # verify or verify_points
        return verifier, template

    async def _judge(
        self, run: int, iteration: int, current: _Candidate, log: str, verification: Verification
    ) -> tuple[bool, str]:
        cut = truncation_error(verification.finish_reason)
        if cut or not log:
            return False, f"invalid verification: {cut or 'empty output'}"
        if self.roles.scale == "points":  # a pass is full marks, read from the grade (no judge call)
            if verification.points is None:
                return False, f"no points: {verification.format_error}"
            shown = f"{verification.points:g} / {self.problem.max_points:g} points"
            return verification.score == 1, f"grade: {shown}"
        seed = self._seed(self.judge, run, iteration, "judge")
        judgement = await self.judge.judge(self.problem, current.proof, log, seed=seed)
        self._record(_entry(run, iteration, "judge", judgement), judgement.usage)
        if judgement.verdict is None:
            return False, f"judge format failure: {judgement.format_error}"
        return judgement.verdict == "pass", f"judge: {judgement.verdict}"

    async def _repair(self, run: int, iteration: int, current: _Candidate, log: str) -> _Candidate:
        seed = self._seed(self.repairer, run, iteration, "repair")
        repaired: Repair = await self.repairer.repair(self.problem, current.proof, log, seed=seed)
        ok = self._usable(repaired)
        self._record(_entry(run, iteration, "repair", repaired, usable=ok), repaired.usage)
        return self._candidate(repaired, f"run-{run}/repair-{iteration}", repaired.disputes, log) if ok else current

    # -- one run ----------------------------------------------------------------------------
    async def run(self, run: int) -> str:
        """One run; returns its outcome: accepted, gave_up, max_iterations or no_proof."""
        config = self.config
        self.report(self.rounds, run=(run, config.max_runs), step="solve")
        current = await self._solve(run)
        if current is None:
            self._record(_entry(run, 0, "run_end", outcome="no_proof", reason="the solver gave no usable proof"))
            return "no_proof"
        passes = failures = 0
        verdict = None
        for iteration in range(1, config.max_iterations + 1):
            self.rounds += 1
            self.report(
                self.rounds,
                run=(run, config.max_runs),
                iteration=(iteration, config.max_iterations),
                passes=passes,
                failures=failures,
                last_verdict=verdict,
            )
            verification = await self._verify(run, iteration, current, passes)
            log = strip_thinking(verification.raw).strip()
            passed, reason = await self._judge(run, iteration, current, log, verification)
            if self.roles.scale == "points" and log:  # the bug report: the analysis, its issues, "x / 7 points"
                log = verifier_evaluation_text(self.roles.verifier, self.problem, verification)
            if passed:
                passes, failures = passes + 1, 0
                current.passes += 1
            else:
                passes, failures = 0, failures + 1
                current.fails += 1
            verdict = "pass" if passed else "fail"
            self._record(
                _entry(
                    run,
                    iteration,
                    "verdict",
                    passed=passed,
                    reason=reason,
                    consecutive_passes=passes,
                    consecutive_failures=failures,
                )
            )
            if not passed:
                self.end_streak(f"verification {iteration} failed")
            if passes >= config.passes_to_accept:
                self.end_streak(f"{passes} consecutive passes")
                self.accepted = current
                self._record(
                    _entry(run, iteration, "run_end", outcome="accepted", reason=f"{passes} consecutive passes")
                )
                return "accepted"
            if failures >= config.failures_to_give_up:
                self.end_streak("the run gave up")
                self._record(
                    _entry(run, iteration, "run_end", outcome="gave_up", reason=f"{failures} consecutive failures")
                )
                return "gave_up"
            if not passed and iteration < config.max_iterations:
                current = await self._repair(run, iteration, current, log)
        self.end_streak("the run's iterations ran out")
        self._record(
            _entry(
                run,
                config.max_iterations,
                "run_end",
                outcome="max_iterations",
                reason=f"{config.max_iterations} iterations without a decision",
            )
        )
        return "max_iterations"

    def result(self, strategy: str, stop_reason: str, budget_limited: bool = False) -> SolveResult:
        """The accepted proof, or the best so far (see :meth:`_Candidate.rank`)."""
        chosen = self.accepted
        if chosen is None and self.candidates:
            chosen = max(self.candidates.values(), key=_Candidate.rank)
        scores = [v.score for v in chosen.verifications if v.score is not None] if chosen else []
        return SolveResult(
            problem_id=self.problem.id,
            strategy=strategy,
            proof=chosen.proof if chosen else None,
            generation=Generation.model_validate(chosen.generation.model_dump(include=set(Generation.model_fields)))
            if chosen
            else None,  # a plain Generation (a repair's disputes stay in the transcript)
            verifications=list(chosen.verifications) if chosen else [],
            mean_score=sum(scores) / len(scores) if scores else None,
            stop_reason=stop_reason,
            budget_limited=budget_limited,
            transcript=self.transcript,
            usage=self.usage,
            rounds=sum(e["step"] == "verdict" for e in self.transcript),
            proof_id=chosen.origin if chosen else None,
        )


class AgentStrategy(ConfiguredStrategy):
    """Solve a problem with the generate-verify-repair agent loop (module docstring).

    ``AgentStrategy(passes_to_accept=1, max_runs=2)`` or ``AgentStrategy(AgentConfig(...))``;
    keyword arguments override the config's fields.
    """

    config_class = AgentConfig
    name = "agent"

    config: AgentConfig

    def plan(self) -> CallPlan:
        """Per run: the solve, the improvement (``self_improve``), and per iteration one
        verification and one judge call, with a repair after each but the last; ``max_runs`` runs.
        Adaptive: up to ``min(batch, passes_to_accept)`` verifications per iteration (a streak
        that fails may leave drawn ones unused), one request per checkpoint at most per iteration."""
        c = self.config
        per_run = CallPlan().add("generation", 1 + int(c.self_improve) + c.max_iterations - 1)
        drawn = min(c.batch, c.passes_to_accept) if c.adaptive else 1
        per_run.add("verification", c.max_iterations, c.max_iterations * drawn).add("judge", c.max_iterations)
        return per_run.times(c.max_runs)

    async def solve(self, problem: Problem, roles: Roles, state_dir: Any = None) -> SolveResult:
        """Run the loop; stop_reason starts with ``accepted``, ``not accepted`` or ``budget``.

        The result holds the accepted proof, or the best so far (most passes, then pass rate,
        then mean verifier score; a never-verified proof only when no proof was verified), with
        all its verifications as evidence; ``proof_id`` says where it came from (e.g.
        ``run-2/repair-7``), ``rounds`` counts verification rounds over all runs, and
        ``transcript`` has one entry per step (solve, improve, verify, judge, verdict, repair,
        run_end), each with its run and iteration (0 for solve and improve).

        On :class:`~proofcritic.budget.BudgetExceeded` the best proof so far is returned with
        ``budget_limited=True``. Other errors (a backend that fails for good, a bad prompt
        template) propagate.
        """
        session = _Session(
            self.config, problem, roles, lambda round_, **state: self.report(problem.id, round_, **state)
        )
        outcomes: list[str] = []
        try:
            for run in range(1, self.config.max_runs + 1):
                outcome = await session.run(run)
                outcomes.append(outcome)
                if outcome == "accepted":
                    iteration = session.transcript[-1]["iteration"]
                    return session.result(
                        self.name,
                        f"accepted: {self.config.passes_to_accept} consecutive "
                        f"passes in run {run} (iteration {iteration})",
                    )
        except BudgetExceeded as error:
            session.end_streak("the budget ran out")
            return session.result(self.name, f"budget: {error}", budget_limited=True)
        return session.result(self.name, f"not accepted in {len(outcomes)} runs ({', '.join(outcomes)})")

    def __repr__(self) -> str:
        return f"AgentStrategy({self.config!r})"
