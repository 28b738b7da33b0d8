"""The generator role: problem -> proof + self-evaluation with a self-score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._roles import Role
from ..llm import ChatMessage
from ..types import Generation, Problem
from ._parse import parse_generation


@dataclass
class Candidate:
    """A proof shown to the refinement prompt with the verifier analyses of it."""

    proof: str
    evaluations: list[str] = field(default_factory=list)


class Generator(Role):
    """Writes proofs, and refines them from verifier feedback (SPEC sections 1 and 5)."""

    template = "generate"

    def messages(self, problem: Problem) -> list[ChatMessage]:
        return self.render(problem=problem)

    def refine_messages(self, problem: Problem, candidates: Sequence[Candidate]) -> list[ChatMessage]:
        return self.prompts.render("refine", problem=problem, candidates=list(candidates))

    async def generate(self, problem: Problem, n: int = 1, *, seed: int | None = None) -> list[Generation]:
        """``n`` independent proofs, each with its self-evaluation."""
        return await self.ask(self.messages(problem), parse_generation, n, seed=seed)

    async def refine(
        self, problem: Problem, candidates: Sequence[Candidate], n: int = 1, *, seed: int | None = None
    ) -> list[Generation]:
        """``n`` new proofs written from ``candidates`` and their analyses."""
        return await self.ask(self.refine_messages(problem, candidates), parse_generation, n, seed=seed)
