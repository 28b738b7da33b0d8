"""The verifier role: problem + proof (+ reference, guidelines) -> analysis, issues, score."""

from __future__ import annotations

from .._constants import DEFAULT_SCORE_MODE, SCORE_MODES, ScoreMode, check_score_mode
from .._readout import GUIDED_CHOICES, ScoreReadout, score_prefix
from .._roles import Role
from ..llm import ChatMessage
from ..parsing import locate_quote
from ..types import Problem, Verification
from ._parse import parse_verification

# ScoreMode, SCORE_MODES and DEFAULT_SCORE_MODE are defined in proofcritic._constants (the
# command line's help needs them without this module's imports)


class Verifier(ScoreReadout, Role):
    """Grades proofs.

    ``score_mode``: ``"text"`` (default) reads the score written in the output only, so a format
    failure has no score; the read-outs are opt-in: ``"auto"`` falls back to the likelihood read-out when the text has no valid score and the backend can
    score text; ``"logprob"`` always reads the score out by likelihood (the written score is
    kept as ``text_score``); ``"guided"``: when the text has no valid score, the analysis is
    continued after the score marker with the server forced to one of ``0}``, ``0.5}``, ``1}``
    (guided choice, greedy; ``score_source`` "guided"); where the backend cannot constrain its
    output it falls back to the likelihood read-out, then to the format failure. In every mode
    ``format_ok`` is decided by the written output alone (the format reward stays honest), and a
    score from a read-out is marked by its ``score_source`` ("likelihood" or "guided").
    """

    template = "verify"
    scale = "ternary"  # the protocol: a score in {0, 0.5, 1} (PointsVerifier: "points")

    def __init__(self, model, *, score_mode: ScoreMode = DEFAULT_SCORE_MODE, **kwargs):
        super().__init__(model, **kwargs)
        self.score_mode = check_score_mode(score_mode)

    def messages(self, problem: Problem, proof: str) -> list[ChatMessage]:
        return self.render(problem=problem, proof=proof)

    async def verify(
        self, problem: Problem, proof: str, n: int = 1, *, seed: int | None = None, first: int = 0
    ) -> list[Verification]:
        """``n`` independent verifications of ``proof`` (one request with n samples); ``first``:
        they are samples ``first`` .. ``first + n - 1`` of that request (drawn in batches)."""
        messages = self.messages(problem, proof)
        results = await self.ask(messages, parse_verification, n, seed=seed, first=first)
        for verification in results:
            for issue in verification.issues:  # each quoted location, found in the proof
                issue.span = locate_quote(issue.location, proof)
        await self.fill_scores(messages, results)  # the score mode's read-outs (see proofcritic._readout)
        return results


__all__ = [
    "DEFAULT_SCORE_MODE",
    "GUIDED_CHOICES",
    "SCORE_MODES",
    "ScoreMode",
    "Verifier",
    "check_score_mode",
    "score_prefix",
]
