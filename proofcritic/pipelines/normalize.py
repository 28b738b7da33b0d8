"""Neutral restyling (``--normalize``): a proof rewritten in a plain style before it is graded.

MathArena rewrites each proof into a neutral style before its judges see it, so that a grader
scores the mathematics and not the confidence or polish of the writing. The :class:`Normalizer`
(template ``normalize``; output ``Here is the rewritten proof:`` then the proof) is asked to
keep every step, wrong ones included, and to drop what is not mathematics. A failed rewrite
(truncated, no marker, empty) is not used: the original proof is graded and the record says
why. Rewrites are cached like every model call.
"""

from __future__ import annotations

from .._roles import Role
from ..parsing import marker_pattern, strip_thinking, truncation_error
from ..types import Problem, RoleOutput

NORMALIZE_TEMPLATE = "normalize"
NORMALIZE_VARIABLES = {NORMALIZE_TEMPLATE: frozenset({"problem", "proof"})}
REWRITE_MARKER = "Here is the rewritten proof:"
_REWRITE_MARKER_RE = marker_pattern("here", "is", "the", "rewritten", "proof")


class Rewrite(RoleOutput):
    """A normalizer's answer: ``proof`` the rewritten text ("" on a format failure)."""

    proof: str = ""


def parse_rewrite(text: str, finish_reason: str | None = "stop") -> Rewrite:
    """Read a normalizer's answer; never raises."""
    body = strip_thinking(text)
    marker = _REWRITE_MARKER_RE.search(body)
    errors = [e for e in (truncation_error(finish_reason),) if e]
    proof = body[marker.end() :].strip() if marker else ""
    if marker is None:
        errors.append(f"missing marker {REWRITE_MARKER!r}")
    elif not proof:
        errors.append("the rewritten proof is empty")
    ok = not errors
    return Rewrite(
        raw=text,
        proof=proof if ok else "",
        format_ok=ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


class Normalizer(Role):
    """Rewrites a proof in a neutral style, keeping every mathematical step (see the module)."""

    template = NORMALIZE_TEMPLATE

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts = self.prompts.template_set(NORMALIZE_TEMPLATE, NORMALIZE_VARIABLES[NORMALIZE_TEMPLATE])

    async def rewrite(self, problem: Problem, proof: str) -> Rewrite:
        [answer] = await self.ask(self.render(problem=problem, proof=proof), parse_rewrite)
        return answer


__all__ = ["REWRITE_MARKER", "Normalizer", "Rewrite", "parse_rewrite"]
