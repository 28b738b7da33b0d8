"""Aggregate several verifications of one proof: mean, min, max, majority, points."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..types import Aggregate, ScoredOutput, Verification


def aggregate(verifications: Sequence[Verification] | Sequence[ScoredOutput], max_points: float = 7.0) -> Aggregate:
    """Statistics over the verifications that carry a score; format failures are left out and
    counted (``unscored``), as are the scores that came from a read-out (``read_out``).

    With no scored verification the proof has no verdict: mean, min, max, majority and points
    are None (never a default score). The majority is the most frequent score; a tie goes to
    the lowest of the tied scores, the cautious choice for a grader.
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
        read_out=sum(v.read_out for v in verifications),
        mean=mean,
        min=min(scores),
        max=max(scores),
        majority=majority,
        points=mean * max_points,
        max_points=max_points,
    )


def shown_score(verification: ScoredOutput) -> str:
    """A verification's (or meta-verification's) score for people: "—" without one, "0.5 (read-out)" when a read-out gave it."""
    if verification.score is None:
        return "—"
    return f"{verification.score:g} (read-out)" if verification.read_out else f"{verification.score:g}"


def counts_note(result: Aggregate) -> str:
    """What an aggregate rests on: "unscored: 2 of 4", then "; 1 score from a read-out" when any."""
    note = f"unscored: {result.unscored} of {result.n}"
    if result.read_out:
        note += f"; {result.read_out} score{'s' if result.read_out != 1 else ''} from a read-out"
    return note
