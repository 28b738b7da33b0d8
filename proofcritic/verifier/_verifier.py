"""The verifier role: problem + proof (+ reference, guidelines) -> analysis, issues, score."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from ..errors import UnsupportedFeatureError
from ..llm import ChatMessage
from ..parsing import SCORE_MARKER, SCORE_MARKER_RE, find_last, format_score
from ..types import SCORES, Problem, Verification
from .._roles import Role, usage_of
from ._parse import parse_verification

ScoreMode = Literal["text", "auto", "logprob"]
_CONTINUATIONS = ("0}", "0.5}", "1}")


class Verifier(Role):
    """Grades proofs.

    ``score_mode``: ``"text"`` reads the score written in the output only; ``"auto"`` (default)
    falls back to the likelihood read-out when the text has no valid score and the backend can
    score text; ``"logprob"`` always reads the score out by likelihood (the written score is
    kept as ``text_score``).
    """

    template = "verify"

    def __init__(self, model, *, score_mode: ScoreMode = "auto", **kwargs):
        super().__init__(model, **kwargs)
        if score_mode not in ("text", "auto", "logprob"):
            raise ValueError(f"score_mode must be text, auto or logprob, not {score_mode!r}")
        self.score_mode = score_mode

    def messages(self, problem: Problem, proof: str) -> list[ChatMessage]:
        return self.prompts.render(self.template, problem=problem, proof=proof)

    async def verify(
        self, problem: Problem, proof: str, n: int = 1, *, seed: int | None = None
    ) -> list[Verification]:
        """``n`` independent verifications of ``proof`` (one request with n samples)."""
        messages = self.messages(problem, proof)
        completions = await self._sample(messages, n, seed)
        results = []
        for index, completion in enumerate(completions):
            verification = parse_verification(completion.text, completion.finish_reason)
            verification.usage = usage_of(completion, share_prompt=index == 0)
            results.append(verification)
        pending = [
            v for v in results if self.score_mode == "logprob" or (self.score_mode == "auto" and v.score is None)
        ]
        await asyncio.gather(*(self._read_out(messages, v) for v in pending))
        return results

    async def _read_out(self, messages: list[ChatMessage], verification: Verification) -> None:
        """Fill the score distribution by comparing the likelihood of the three scores."""
        if self.model.likelihood_unsupported and self.score_mode != "logprob":
            return  # the backend said so once; do not ask again for every sample
        prefix = score_prefix(verification.raw)
        try:
            totals = await self.model.sequence_logprobs(
                [*messages, ChatMessage(role="assistant", content=prefix)], list(_CONTINUATIONS)
            )
        except UnsupportedFeatureError:
            if self.score_mode == "logprob":
                raise
            return
        top = max(totals)
        weights = [math.exp(t - top) for t in totals]
        total = sum(weights)
        probs = [w / total for w in weights]
        verification.score_distribution = {format_score(s): p for s, p in zip(SCORES, probs)}
        verification.expected_score = sum(s * p for s, p in zip(SCORES, probs))
        verification.score = SCORES[max(range(len(SCORES)), key=probs.__getitem__)]
        verification.score_source = "likelihood"


def score_prefix(raw: str) -> str:
    """The output up to the score marker, followed by the marker and an open ``\\boxed{``."""
    match = find_last(SCORE_MARKER_RE, raw)
    head = raw[: match.start()] if match else raw
    return f"{head.rstrip()}\n\n{SCORE_MARKER}\n\\boxed{{"
