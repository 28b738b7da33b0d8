"""Parse a generator's output into a :class:`~proofcritic.types.Generation` (SPEC section 1).

The protocol: a ``## Solution`` section (the proof), then a ``## Self Evaluation`` section
holding the verifier's markers: the self-analysis after ``Here is my evaluation of the
solution:`` and the self-score ``\\boxed{s'}`` after ``Based on my evaluation, the final
overall score should be:``. Bold or ``###`` variants of the two headers count (see
:func:`proofcritic.parsing.header_kind`).

Sections are cut on the original text (headers are recognised, not rewritten), so the proof
keeps every byte the model wrote, including a ``**Solution.**`` line inside it. The proof is
the text between the FIRST Solution header and the first Self Evaluation header after it.
Best effort when a header is missing: without ``## Solution`` the proof is everything before
the self-evaluation (or the whole text); without ``## Self Evaluation`` it runs to the end.

The self-score is the box directly after the score marker, and that score statement must
be the output's final statement (the rule of :mod:`proofcritic.parsing`: nothing with content
may follow a score statement). A self-score that is missing, does not parse, lies outside
{0, 0.5, 1} or is not the final statement counts as 0. Boxes in the proof (computed answers
such as ``\\boxed{3}``) are never read as a self-score. ``format_ok`` requires: a natural
stop, both headers, both markers and a valid final self-score.
"""

from __future__ import annotations

from ..parsing import (
    EVALUATION_MARKER,
    SCORE_MARKER,
    SCORE_MARKER_RE,
    find_headers,
    read_final_score,
    split_evaluation,
    strip_thinking,
    truncation_error,
)
from ..types import Generation

__all__ = ["parse_generation"]


def parse_generation(text: str, finish_reason: str | None = "stop") -> Generation:
    """Parse one generator output; never raises. ``raw`` keeps the whole text."""
    body = strip_thinking(text)
    headers = find_headers(body)
    solution = next((h for h in headers if h[0] == "solution"), None)
    after = solution[2] if solution is not None else 0
    evaluation = next((h for h in headers if h[0] == "self_evaluation" and h[1] >= after), None)

    errors: list[str] = []
    truncated = truncation_error(finish_reason)
    if truncated:
        errors.append(truncated)
    if solution is None:
        errors.append("missing '## Solution' header")
    if evaluation is None:
        errors.append("missing '## Self Evaluation' section")

    proof_start = solution[2] if solution is not None else 0
    proof_end = evaluation[1] if evaluation is not None else len(body)
    proof = body[proof_start:proof_end].strip()

    self_analysis = ""
    self_score = 0.0
    if evaluation is not None:
        section = body[evaluation[2] :]
        parts = split_evaluation(section)
        self_analysis = parts.analysis
        if not parts.has_evaluation_marker:
            errors.append(f"self evaluation lacks the marker {EVALUATION_MARKER!r}")
        final = read_final_score(section, SCORE_MARKER_RE)
        if final.marker is None:
            errors.append(f"self evaluation lacks the marker {SCORE_MARKER!r}")
        elif final.score is None:
            errors.append(f"self-score: {final.error}")
        else:
            self_score = final.score

    return Generation(
        raw=text,
        proof=proof,
        self_analysis=self_analysis,
        self_score=self_score,
        format_ok=not errors,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )
