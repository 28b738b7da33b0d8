"""The verifier role: analysis with located issues and a score in {0, 0.5, 1}."""

from ._aggregate import aggregate
from ._parse import parse_issues, parse_verification
from ._verifier import ScoreMode, Verifier, score_prefix

__all__ = ["ScoreMode", "Verifier", "aggregate", "parse_issues", "parse_verification", "score_prefix"]
