"""The verifier role: analysis with located issues and a score in {0, 0.5, 1}."""

from ._aggregate import aggregate, counts_note, shown_score
from ._parse import parse_issues, parse_verification
from ._verifier import (
    DEFAULT_SCORE_MODE,
    SCORE_MODES,
    ScoreMode,
    Verifier,
    score_prefix,
)

__all__ = [
    "DEFAULT_SCORE_MODE",
    "SCORE_MODES",
    "ScoreMode",
    "Verifier",
    "aggregate",
    "counts_note",
    "parse_issues",
    "parse_verification",
    "score_prefix",
    "shown_score",
]
