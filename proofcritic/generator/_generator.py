"""The generator role: problem -> proof + self-evaluation with a self-score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..llm import ChatMessage
from ..types import Generation, Problem
from .._roles import Role, usage_of
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
        return self.prompts.render("generate", problem=problem)

    def refine_messages(self, problem: Problem, candidates: Sequence[Candidate]) -> list[ChatMessage]:
        return self.prompts.render("refine", problem=problem, candidates=list(candidates))

    async def generate(self, problem: Problem, n: int = 1, *, seed: int | None = None) -> list[Generation]:
        """``n`` independent proofs, each with its self-evaluation."""
        return await self._run(self.messages(problem), n, seed)

    async def refine(
        self, problem: Problem, candidates: Sequence[Candidate], n: int = 1, *, seed: int | None = None
    ) -> list[Generation]:
        """``n`` new proofs written from ``candidates`` and their analyses."""
        return await self._run(self.refine_messages(problem, candidates), n, seed)

    async def _run(self, messages: list[ChatMessage], n: int, seed: int | None) -> list[Generation]:
        out = []
        for index, completion in enumerate(await self._sample(messages, n, seed)):
            generation = parse_generation(completion.text, completion.finish_reason)
            generation.usage = usage_of(completion, share_prompt=index == 0)
            out.append(generation)
        return out
