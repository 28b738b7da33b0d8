"""Parse a meta-verifier's output into a :class:`~proofcritic.types.MetaVerification`.

The protocol (SPEC section 1): a meta-analysis, then the marker
``Based on my analysis, I will rate the "solution evaluation" as:`` followed by
``\\boxed{0}``, ``\\boxed{0.5}`` or ``\\boxed{1}``, as the output's final statement (see
:mod:`proofcritic.parsing`). The analysis is the text before the last marker (the whole text
when it is missing). ``score`` is set only when the output stopped naturally, carries the
marker, has a valid box directly after it, and has nothing with content after a score
statement (a quoted verdict after the real one makes the output fail); otherwise
``format_ok`` is False and ``format_error`` says why.
"""

from __future__ import annotations

from ..parsing import (
    META_SCORE_MARKER,
    META_SCORE_MARKER_RE,
    read_final_score,
    split_meta_evaluation,
    strip_thinking,
    truncation_error,
)
from ..types import MetaVerification

__all__ = ["parse_meta_verification"]


def parse_meta_verification(text: str, finish_reason: str | None = "stop") -> MetaVerification:
    """Parse one meta-verifier output; never raises. ``raw`` keeps the whole text."""
    body = strip_thinking(text)
    analysis, _ = split_meta_evaluation(body)
    errors: list[str] = []
    truncated = truncation_error(finish_reason)
    if truncated:
        errors.append(truncated)
    final = read_final_score(body, META_SCORE_MARKER_RE)
    if final.marker is None:
        errors.append(f"missing score marker {META_SCORE_MARKER!r}")
    elif final.error:
        errors.append(final.error)
    text_score = final.score
    format_ok = not errors
    score = text_score if format_ok else None
    return MetaVerification(
        raw=text,
        analysis=analysis,
        score=score,
        score_source="text" if score is not None else None,
        text_score=text_score,
        format_ok=format_ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )
