"""Aggregate several verifications of one proof: mean, min, max, majority, points."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..types import Aggregate, Verification


def aggregate(verifications: Sequence[Verification], max_points: float = 7.0) -> Aggregate:
    """Statistics over the verifications that carry a score; format failures are left out.

    The majority is the most frequent score; a tie goes to the lowest of the tied scores,
    the cautious choice for a grader.
    """
    scores = [v.score for v in verifications if v.score is not None]
    if not scores:
        return Aggregate(n=len(verifications), valid=0, max_points=max_points)
    counts = Counter(scores)
    top = max(counts.values())
    majority = min(s for s, c in counts.items() if c == top)
    mean = sum(scores) / len(scores)
    return Aggregate(
        n=len(verifications),
        valid=len(scores),
        mean=mean,
        min=min(scores),
        max=max(scores),
        majority=majority,
        points=mean * max_points,
        max_points=max_points,
    )
