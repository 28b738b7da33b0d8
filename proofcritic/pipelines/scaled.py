"""Scaled verification: verify one proof many times, aggregate, and pick the harshest analyses.

The building block of auto-labeling (SPEC section 3) and of the high-compute search (SPEC
section 5, where a proof is verified 64 times and refined against its lowest-scored analyses).
The n verifications are one request with n samples (:meth:`Verifier.verify`), so a backend
that batches, or a server that shares the prompt's cache, serves them at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from ..llm import Usage
from ..types import Aggregate, Problem, Proof, Verification
from ..verifier import Verifier, aggregate

__all__ = ["DEFAULT_N", "ScaledVerification", "lowest_indices", "rank_by_score", "scaled_verify", "summarize"]

#: verifications per proof in the released high-compute search (SPEC section 5)
DEFAULT_N = 64


def lowest_indices(verifications: Sequence[Verification]) -> list[int]:
    """Positions of the verifications that carry the lowest score (format failures left out)."""
    scores = [v.score for v in verifications if v.score is not None]
    if not scores:
        return []
    lowest = min(scores)
    return [i for i, v in enumerate(verifications) if v.score == lowest]


def rank_by_score(
    verifications: Sequence[Verification], limit: int | None = None, per_score: int | None = None
) -> list[int]:
    """Positions of the scored verifications, lowest score first (original order within a score).

    ``per_score`` keeps at most that many of each distinct score, ``limit`` at most that many in
    all. Format failures are never ranked.
    """
    scored = [(i, v.score) for i, v in enumerate(verifications) if v.score is not None]
    taken: dict[float, int] = {}
    out: list[int] = []
    for index, score in sorted(scored, key=lambda pair: pair[1]):  # stable: original order within a score
        if per_score is not None and taken.get(score, 0) >= per_score:
            continue
        taken[score] = taken.get(score, 0) + 1
        out.append(index)
        if limit is not None and len(out) >= limit:
            break
    return out


class ScaledVerification(BaseModel):
    """n verifications of one proof, their aggregate, and which of them scored lowest."""

    problem_id: str
    proof_id: str | None = None
    n: int = Field(..., description="Verifications requested.")
    verifications: list[Verification] = Field(..., description="All n verifications, in sample order.")
    aggregate: Aggregate = Field(..., description="Mean, min, max and majority over the scored ones.")
    lowest_score: float | None = Field(None, description="The lowest score any verification gave (None: none scored).")
    lowest: list[int] = Field(default_factory=list, description="Positions of the verifications with the lowest score.")
    format_failures: list[int] = Field(
        default_factory=list, description="Positions of the verifications without a score."
    )
    usage: Usage = Field(default_factory=Usage)

    @property
    def mean(self) -> float | None:
        return self.aggregate.mean

    @property
    def majority(self) -> float | None:
        return self.aggregate.majority

    def scored(self) -> list[int]:
        """Positions of the verifications that carry a score (the analyses)."""
        return [i for i, v in enumerate(self.verifications) if v.score is not None]

    def lowest_verifications(self) -> list[Verification]:
        """The verifications with the lowest score, in sample order."""
        return [self.verifications[i] for i in self.lowest]

    def ranked(self, limit: int | None = None, per_score: int | None = None) -> list[Verification]:
        """The scored verifications, lowest score first (see :func:`rank_by_score`)."""
        return [self.verifications[i] for i in rank_by_score(self.verifications, limit, per_score)]


def summarize(
    problem: Problem, proof_id: str | None, verifications: list[Verification], n: int | None = None
) -> ScaledVerification:
    """Build the :class:`ScaledVerification` of verifications already made."""
    usage = Usage()
    for v in verifications:
        usage.add(v.usage)
    lowest = lowest_indices(verifications)
    return ScaledVerification(
        problem_id=problem.id,
        proof_id=proof_id,
        n=len(verifications) if n is None else n,
        verifications=verifications,
        aggregate=aggregate(verifications, problem.max_points),
        lowest_score=verifications[lowest[0]].score if lowest else None,
        lowest=lowest,
        format_failures=[i for i, v in enumerate(verifications) if v.score is None],
        usage=usage,
    )


async def scaled_verify(
    verifier: Verifier, problem: Problem, proof: Proof | str, n: int = DEFAULT_N
) -> ScaledVerification:
    """Verify ``proof`` ``n`` times (one request with n samples) and summarise the scores."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    proof = proof if isinstance(proof, Proof) else Proof(text=proof)
    verifications = await verifier.verify(problem, proof.text, n=n)
    return summarize(problem, proof.id, verifications, n)
