"""The verifier role: analysis with located issues and a score in {0, 0.5, 1}; the step
verifier (``StepVerifier``: a verdict per step and the first wrong step, issue #18).

The tool-interactive verifier (``CriticVerifier``, ``critic_prompts``, ``CRITIC_TEMPLATES``,
``CRITIC_VARIABLES``) is imported on first use (PEP 562): it loads the tools, which grading
without tools never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._constants import check_score_mode  # the score modes are defined there (the CLI's help reads them)
from .._lazy import lazy_names
from ._aggregate import aggregate, counts_note, shown_score
from ._parse import parse_issues, parse_verification
from ._verifier import (
    DEFAULT_SCORE_MODE,
    SCORE_MODES,
    ScoreMode,
    Verifier,
    score_prefix,
)

if TYPE_CHECKING:
    from ._critic import CRITIC_TEMPLATES, CRITIC_VARIABLES, CriticVerifier, critic_prompts, fence_for, tool_turn
    from ._points import (
        SCALES,
        PointsVerifier,
        load_schemes,
        parse_points_verification,
        point_values,
        scheme_for,
        scheme_text,
    )
    from ._steps import (
        STEPS_TEMPLATE,
        VERDICT_MARKS,
        StepVerifier,
        parse_step_verification,
        step_majority,
        step_score,
    )

_LAZY = {
    **dict.fromkeys(
        ("CRITIC_TEMPLATES", "CRITIC_VARIABLES", "CriticVerifier", "critic_prompts", "fence_for", "tool_turn"),
        "._critic",
    ),
    **dict.fromkeys(
        (
            "SCALES",
            "PointsVerifier",
            "load_schemes",
            "parse_points_verification",
            "point_values",
            "scheme_for",
            "scheme_text",
        ),
        "._points",
    ),
    **dict.fromkeys(
        (
            "STEPS_TEMPLATE",
            "VERDICT_MARKS",
            "StepVerifier",
            "parse_step_verification",
            "step_majority",
            "step_score",
        ),
        "._steps",
    ),
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())

__all__ = [
    "CRITIC_TEMPLATES",
    "CRITIC_VARIABLES",
    "DEFAULT_SCORE_MODE",
    "SCALES",
    "SCORE_MODES",
    "STEPS_TEMPLATE",
    "VERDICT_MARKS",
    "CriticVerifier",
    "PointsVerifier",
    "ScoreMode",
    "StepVerifier",
    "Verifier",
    "aggregate",
    "check_score_mode",
    "counts_note",
    "critic_prompts",
    "fence_for",
    "load_schemes",
    "parse_issues",
    "parse_points_verification",
    "parse_step_verification",
    "parse_verification",
    "point_values",
    "scheme_for",
    "scheme_text",
    "score_prefix",
    "shown_score",
    "step_majority",
    "step_score",
    "tool_turn",
]
