"""``critic``: repair a proof with tool-interactive critique (CRITIC, SPEC section 5).

Write a proof (the generator, with self-evaluation), then repeat: the verifier critiques the
current proof while running code (:class:`~proofcritic.verifier.CriticVerifier`);
if it passes, stop; otherwise the generator revises the proof from the critiques, code and
outputs included (``critic_revise``), and the revision is critiqued again. The stop rules:

- **passed**: every critique of the current proof scores 1 (format failures do not pass);
- **unchanged**: a revision whose proof, normalised (whitespace runs collapsed, ends
  stripped), equals the current proof's: another critique would repeat the last one;
- **max rounds**: ``max_rounds`` revisions (4 by default, as the CRITIC paper) were made and
  critiqued.

A revision that breaks the generator's protocol (cut off, no proof text) is not used: the
current proof stays and the next round revises it again with a fresh seed. The answer is the
critiqued proof with the best mean critique score, the latest on ties; its critiques (with
their tool transcripts) are the result's ``verifications``.

Every model call has its own seed, derived from ``seed`` (else the role's, else 0) and the
round and step, so a rerun replays the same conversation from the completion cache (tool runs
are repeated; they are deterministic for deterministic code). ``state_dir`` is not used.

On the points scale (roles whose verifier is a :class:`~proofcritic.verifier.PointsVerifier`,
``solve --strategy critic --scale points``) each critique grades points (``critic_verify_points``),
a pass is full marks on every critique, the means are points / max points, and the revision
prompt shows each critique followed by "The grader awarded x / 7 points.".
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .._roles import Role
from ..budget import BudgetExceeded, CallPlan
from ..generator import parse_generation
from ..llm import Seed
from ..parsing import format_score
from ..types import Generation, Problem, Verification
from ..verifier import CriticVerifier, aggregate, critic_prompts
from ._common import Roles, SolveResult, StepLog, ToolNames, ToolStrategy, usable

__all__ = ["CriticConfig", "CriticStrategy", "normalise_proof"]


def normalise_proof(text: str) -> str:
    """The proof text compared by the *unchanged* rule: whitespace runs as one space, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


class CriticConfig(BaseModel):
    """Parameters of the ``critic`` strategy."""

    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(4, ge=0, le=64, description="Revisions at most (CRITIC: 4); each is critiqued again.")
    max_tool_calls: int = Field(3, ge=0, le=64, description="Tool runs per critique at most.")
    verify_n: int = Field(1, ge=1, le=64, description="Critiques of each proof (all must score 1 to pass).")
    tools: ToolNames = Field(default_factory=lambda: ["python"], description="Tools the critic may use.")
    tool_timeout: float = Field(10.0, gt=0, le=600, description="Seconds per tool run.")
    keep_invalid: bool = Field(False, description="Let format failures with proof text count as proofs.")
    seed: Seed | None = Field(None, description="Base of the per-call seeds; None: each role's own seed, else 0.")


class _Reviser(Role):
    """The generator asked to revise a proof from tool-interactive critiques (``critic_revise``;
    its ``prompts`` are the set that has the template, see :func:`critic_prompts`)."""

    template = "critic_revise"

    async def revise(self, problem: Problem, proof: str, critiques: list[str], *, seed: int) -> Generation:
        messages = self.render(problem=problem, proof=proof, critiques=critiques)
        [generation] = await self.ask(messages, parse_generation, seed=seed)
        return generation


def critique_text(verification: Verification, problem: Problem | None = None) -> str:
    """A critique as the revision prompt shows it: the whole conversation (checks and outputs);
    a points grade (with ``problem``, for its scale) ends with "The grader awarded x / 7 points."."""
    text = verification.raw.strip() or "(the grader wrote nothing)"
    if verification.points is not None and problem is not None:
        text += f"\n\nThe grader awarded {verification.points:g} / {problem.max_points:g} points."
    return text


def passed(verifications: list[Verification]) -> bool:
    return bool(verifications) and all(v.score == 1 for v in verifications)


class CriticStrategy(ToolStrategy):
    """Generate, then critique with tools and revise until the proof passes or stops changing.

    ``CriticStrategy(max_rounds=4, max_tool_calls=3)``; ``tools=["python"]`` by default. The
    tools are built on first use and shared by every problem this strategy solves; ``aclose``
    releases them.
    """

    config_class = CriticConfig
    name = "critic"

    config: CriticConfig

    def plan(self) -> CallPlan:
        """The first proof and up to ``max_rounds`` revisions, each critiqued ``verify_n`` times;
        a critique is a conversation of up to ``1 + max_tool_calls`` calls."""
        c = self.config
        proofs = 1 + c.max_rounds
        critiques = proofs * c.verify_n
        return CallPlan().add("generation", proofs).add("verification", critiques * (1 + c.max_tool_calls), critiques)

    def _seed(self, role: Role, round_: int, step: str) -> int:
        base = self.config.seed if self.config.seed is not None else (role.config.seed or 0)
        return (base + zlib.crc32(f"critic/{round_}/{step}".encode())) % 2**31

    async def solve(self, problem: Problem, roles: Roles, state_dir: str | Path | None = None) -> SolveResult:
        config = self.config
        log = StepLog()
        result = SolveResult(problem_id=problem.id, strategy=self.name)
        critic = CriticVerifier(roles.verifier, self.tools, max_tool_calls=config.max_tool_calls)
        reviser = _Reviser(
            roles.generator.model,
            prompts=critic_prompts(roles.generator.prompts)["critic_revise"],
            config=roles.generator.config,
        )
        critiqued: list[tuple[int, str, Generation, list[Verification]]] = []
        try:
            result.stop_reason = await self._loop(problem, roles, critic, reviser, log, result, critiqued)
        except BudgetExceeded as error:
            result.budget_limited = True
            result.stop_reason = f"budget: {error} (after {result.rounds} round(s))"
        self._choose(result, critiqued)
        result.transcript, result.usage = log.transcript, log.usage
        return result

    async def _critique(
        self, problem, critic: CriticVerifier, proof: str, round_: int, log: StepLog
    ) -> list[Verification]:
        verifications = await critic.verify(
            problem, proof, n=self.config.verify_n, seed=self._seed(critic.verifier, round_, "verify")
        )
        entry = log.verification(round_, verifications)
        entry["step"] = "critique"
        entry["tool_calls"] = [[c.model_dump(mode="json") for c in (v.tool_calls or [])] for v in verifications]
        return verifications

    async def _loop(
        self,
        problem,
        roles: Roles,
        critic: CriticVerifier,
        reviser: _Reviser,
        log: StepLog,
        result: SolveResult,
        critiqued: list,
    ) -> str:
        config = self.config
        self.report(problem.id, 0, round=(0, config.max_rounds), step="generate")
        generator = roles.generator
        generation = (await generator.generate(problem, n=1, seed=self._seed(generator, 0, "generate")))[0]
        log.generation("generate", 0, generation)
        if not usable(generation, config.keep_invalid):
            return f"no valid initial proof ({generation.format_error or 'no proof text'})"
        current = generation
        self.report(problem.id, 0, round=(0, config.max_rounds), step="critique")
        verifications = await self._critique(problem, critic, current.proof, 0, log)
        critiqued.append((0, current.proof, current, verifications))
        for round_ in range(1, config.max_rounds + 1):
            if passed(verifications):
                return f"passed at round {round_ - 1}"
            self.report(
                problem.id,
                round_,
                round=(round_, config.max_rounds),
                step="revise",
                critique_mean=aggregate(verifications).mean,
                verdict="fail",
            )
            result.rounds = round_
            revision = await reviser.revise(
                problem,
                current.proof,
                [critique_text(v, problem) for v in verifications],
                seed=self._seed(generator, round_, "revise"),
            )
            log.generation("revise", round_, revision)
            if not usable(revision, config.keep_invalid):
                log.note("revision_unusable", round_, reason=revision.format_error or "no proof text")
                continue
            if normalise_proof(revision.proof) == normalise_proof(current.proof):
                return f"proof unchanged at round {round_}"
            current = revision
            self.report(problem.id, round_, round=(round_, config.max_rounds), step="critique")
            verifications = await self._critique(problem, critic, current.proof, round_, log)
            critiqued.append((round_, current.proof, current, verifications))
        if passed(verifications):
            return f"passed at round {result.rounds}"
        return f"max rounds ({config.max_rounds}) reached"

    def _choose(self, result: SolveResult, critiqued: list) -> None:
        best = None
        best_mean = -1.0
        for round_, proof, generation, verifications in critiqued:
            mean = aggregate(verifications).mean
            value = -0.5 if mean is None else mean
            if best is None or value >= best_mean:
                best, best_mean = (round_, proof, generation, verifications), value
        if best is None:
            return
        round_, proof, generation, verifications = best
        result.proof, result.generation, result.verifications = proof, generation, verifications
        result.mean_score = aggregate(verifications).mean
        result.proof_id = f"round-{round_}"
        if not result.stop_reason.startswith("passed") and not result.budget_limited:
            result.stop_reason += f"; chose round {round_} (critique mean {format_score(result.mean_score)})"
