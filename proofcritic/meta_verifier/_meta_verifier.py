"""The meta-verifier role: problem + proof + a verification -> is that verification faithful."""

from __future__ import annotations

from .._readout import ScoreReadout
from .._roles import Role
from ..llm import ChatMessage
from ..parsing import META_SCORE_MARKER, META_SCORE_MARKER_RE
from ..types import MetaVerification, Problem, Verification
from ..verifier import DEFAULT_SCORE_MODE, ScoreMode, check_score_mode
from ._parse import parse_meta_verification

#: the template that reviews a points grade (``--scale points``), and its variables
POINTS_TEMPLATE = "meta_verify_points"
POINTS_VARIABLES = frozenset({"problem", "proof", "analysis", "points"})


class MetaVerifier(ScoreReadout, Role):
    """Judges whether the issues a verification reports are real and its score consistent.

    ``score_mode`` as the verifier's (see :mod:`proofcritic._readout`): ``"text"`` (default)
    reads the meta score written after the meta-verifier's marker only, so a format failure has
    no meta score; ``"auto"``, ``"logprob"`` and ``"guided"`` read one out of the model (opt-in,
    marked by the result's ``score_source``).
    """

    template = "meta_verify"
    score_marker = META_SCORE_MARKER
    score_marker_re = META_SCORE_MARKER_RE

    def __init__(self, model, *, score_mode: ScoreMode = DEFAULT_SCORE_MODE, **kwargs):
        super().__init__(model, **kwargs)
        self.score_mode = check_score_mode(score_mode)

    def messages(self, problem: Problem, proof: str, verification: Verification) -> list[ChatMessage]:
        analysis = verification.analysis or verification.raw
        if verification.points is not None:
            # a points grade (--scale points) is reviewed against the points scale, not the ternary rubric
            prompts = self.prompts.template_set(POINTS_TEMPLATE, POINTS_VARIABLES)
            return prompts.render(
                POINTS_TEMPLATE, problem=problem, proof=proof, analysis=analysis, points=verification.points
            )
        return self.render(problem=problem, proof=proof, analysis=analysis, score=verification.score)

    async def meta_verify(
        self,
        problem: Problem,
        proof: str,
        verification: Verification,
        n: int = 1,
        *,
        seed: int | None = None,
        first: int = 0,
    ) -> list[MetaVerification]:
        """``n`` independent meta-verifications of one verification; their meta scores as the
        score mode asks (read-outs of the unscored ones in ``auto``/``guided``). ``first``: they
        are samples ``first`` .. ``first + n - 1`` of that request (drawn in batches)."""
        messages = self.messages(problem, proof, verification)
        out = await self.ask(messages, parse_meta_verification, n, seed=seed, first=first)
        await self.fill_scores(messages, out)
        return out
