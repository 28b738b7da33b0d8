"""Parse a meta-verifier's output into a :class:`~proofcritic.types.MetaVerification`.

The protocol (SPEC section 1): a meta-analysis, then the marker
``Based on my analysis, I will rate the "solution evaluation" as:`` followed by
``\\boxed{0}``, ``\\boxed{0.5}`` or ``\\boxed{1}``. The analysis is the text before the last
marker (the whole text when it is missing). ``score`` is set only when the output stopped
naturally, carries the marker, and has a valid box after it; otherwise ``format_ok`` is
False and ``format_error`` says why.
"""

from __future__ import annotations

from ..parsing import (
    META_SCORE_MARKER,
    read_score,
    split_meta_evaluation,
    strip_thinking,
    truncation_error,
)
from ..types import MetaVerification

__all__ = ["parse_meta_verification"]


def parse_meta_verification(text: str, finish_reason: str | None = "stop") -> MetaVerification:
    """Parse one meta-verifier output; never raises. ``raw`` keeps the whole text."""
    body = strip_thinking(text)
    analysis, score_part = split_meta_evaluation(body)
    errors: list[str] = []
    truncated = truncation_error(finish_reason)
    if truncated:
        errors.append(truncated)
    score: float | None = None
    if score_part is None:
        errors.append(f"missing score marker {META_SCORE_MARKER!r}")
    else:
        score, score_error = read_score(score_part)
        if score_error:
            errors.append(score_error)
    format_ok = not errors
    return MetaVerification(
        raw=text,
        analysis=analysis,
        score=score if format_ok else None,
        format_ok=format_ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )
