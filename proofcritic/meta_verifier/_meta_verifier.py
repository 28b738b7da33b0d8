"""The meta-verifier role: problem + proof + a verification -> is that verification faithful."""

from __future__ import annotations

from ..llm import ChatMessage
from ..types import MetaVerification, Problem, Verification
from .._roles import Role, usage_of
from ._parse import parse_meta_verification


class MetaVerifier(Role):
    """Judges whether the issues a verification reports are real and its score consistent."""

    template = "meta_verify"

    def messages(self, problem: Problem, proof: str, verification: Verification) -> list[ChatMessage]:
        analysis = verification.analysis or verification.raw
        return self.prompts.render(
            "meta_verify", problem=problem, proof=proof, analysis=analysis, score=verification.score
        )

    async def meta_verify(
        self, problem: Problem, proof: str, verification: Verification, n: int = 1, *, seed: int | None = None
    ) -> list[MetaVerification]:
        """``n`` independent meta-verifications of one verification."""
        out = []
        completions = await self._sample(self.messages(problem, proof, verification), n, seed)
        for index, completion in enumerate(completions):
            result = parse_meta_verification(completion.text, completion.finish_reason)
            result.usage = usage_of(completion, share_prompt=index == 0)
            out.append(result)
        return out
