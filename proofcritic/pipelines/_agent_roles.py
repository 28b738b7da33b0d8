"""The roles of the agent loop (SPEC section 5) that the three core roles do not cover.

- :class:`Improver`: the solver's self-improvement turn (``agent_improve``);
- :class:`Judge`: decides pass/fail from a verification log (``agent_judge``), answering
  ``\\boxed{yes}`` (pass) or ``\\boxed{no}`` (fail);
- :class:`Repairer`: rewrites a failed proof from the bug report (``agent_repair``); the
  solver may dispute items in a ``## Disputes`` section before its ``## Solution``;
- :class:`RebuttalVerifier`: the verifier, shown the solver's disputes (``agent_reverify``).

The templates are optional templates of a prompt set (:data:`~proofcritic.promptset.OPTIONAL_TEMPLATE_VARIABLES`):
:func:`agent_prompts` takes each from the role's own set when it has it, else from the
built-in set.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

from pydantic import Field

from .._roles import Role
from ..generator import parse_generation
from ..llm import ChatMessage, GenerateConfig, Model
from ..parsing import header_kind, read_final_verdict, strip_thinking, truncation_error
from ..promptset import OPTIONAL_TEMPLATE_VARIABLES, PromptSet
from ..types import Generation, Problem, RoleOutput
from ..verifier import DEFAULT_SCORE_MODE, PointsVerifier, ScoreMode, Verifier, scheme_for, scheme_text

__all__ = [
    "AGENT_TEMPLATES",
    "Improver",
    "Judge",
    "Judgement",
    "PointsRebuttalVerifier",
    "RebuttalVerifier",
    "Repair",
    "Repairer",
    "agent_prompts",
    "parse_judgement",
    "parse_repair",
]

AGENT_TEMPLATES: tuple[str, ...] = ("agent_improve", "agent_judge", "agent_repair", "agent_reverify")

# --------------------------------------------------------------------------- prompt sets


@functools.lru_cache(maxsize=32)
def agent_prompts(prompts: PromptSet) -> dict[str, PromptSet]:
    """For each agent template, the prompt set to render it from.

    The folder of ``prompts`` is loaded again with the agent templates added (their templates are
    checked then: a bad one raises :class:`~proofcritic.errors.PromptError`); a template the
    folder lacks comes from the built-in set.
    """
    return {name: prompts.template_set(name, OPTIONAL_TEMPLATE_VARIABLES[name]) for name in AGENT_TEMPLATES}


# --------------------------------------------------------------------------- parsing


class Judgement(RoleOutput):
    """The judge's decision on one verification log."""

    analysis: str = Field("", description="The judge's text before its final box.")
    verdict: Literal["pass", "fail"] | None = Field(None, description="None when the output is a format failure.")


def parse_judgement(text: str, finish_reason: str | None = "stop") -> Judgement:
    """Parse one judge output; never raises. The LAST box decides, and it must be the output's
    final statement (:func:`~proofcritic.parsing.read_final_verdict`: nothing with content
    after it, no other yes/no box); a truncated output fails."""
    body = strip_thinking(text)
    verdict, error = read_final_verdict(body)
    errors = [e for e in [truncation_error(finish_reason), error] if e]
    cut = body.rfind("\\boxed")
    return Judgement(
        raw=text,
        analysis=(body[:cut] if cut >= 0 else body).strip(),
        verdict=None if errors else verdict,
        format_ok=not errors,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


class Repair(Generation):
    """A repaired proof, with the bug-report items the solver disputes."""

    disputes: str = Field("", description="The solver's Disputes section ('' when it disputes nothing).")
    disputed_items: list[str] = Field(default_factory=list, description="One entry per disputed item.")


_DISPUTES_HEADING = re.compile(
    r"[ \t]*(?:#{1,6}[ \t]*|\*\*[ \t]*|__[ \t]*)(?:disputes?|disputed[ \t]+items?|rebuttals?)"
    r"[ \t]*:?[ \t]*(?:\*\*|__)?[ \t]*:?[ \t]*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+")
_NONE = re.compile(
    r"(?:none|no(?:thing)?(?:\s+(?:items?\s+)?(?:is\s+|are\s+)?disputed|\s+disputes?)?|n/?a)[.!]?", re.IGNORECASE
)


def _disputes_span(body: str) -> tuple[int, int] | None:
    """``(start, end)`` of the Disputes section (heading included), ending at the next heading."""
    offset, start = 0, None
    for line in body.splitlines(keepends=True):
        stripped = line.strip()
        if start is None:
            if len(stripped) <= 60 and _DISPUTES_HEADING.fullmatch(line.rstrip("\r\n")):
                start = offset
        elif stripped.startswith("#") or (len(stripped) <= 80 and header_kind(line) is not None):
            return start, offset
        offset += len(line)
    return None if start is None else (start, len(body))


def parse_repair(text: str, finish_reason: str | None = "stop") -> Repair:
    """Parse one repair output; never raises.

    The Disputes section is cut out (wherever it stands) and the rest is parsed as a generator
    output, so that the proof never contains it. Items reading "None" are no dispute.
    """
    body = strip_thinking(text)
    span = _disputes_span(body)
    disputes, items = "", []
    if span is not None:
        section = body[span[0] : span[1]].split("\n", 1)
        content = section[1].strip() if len(section) > 1 else ""
        for line in content.splitlines():
            item = _BULLET.sub("", line, count=1).strip() if _BULLET.match(line) else ""
            if item and not _NONE.fullmatch(item.replace("*", "").replace("`", "").strip()):
                items.append(item)
        if not items and content and not _NONE.fullmatch(content.replace("*", "").replace("`", "").lstrip("-").strip()):
            items = [content]  # free-form prose: one dispute
        disputes = content if items else ""
        body = body[: span[0]] + body[span[1] :]
    generation = parse_generation(body, finish_reason)
    return Repair(**{**generation.model_dump(), "raw": text}, disputes=disputes, disputed_items=items)


# --------------------------------------------------------------------------- roles


class Improver(Role):
    """The solver reviews and improves its own proof."""

    template = "agent_improve"

    async def improve(self, problem: Problem, proof: str, *, seed: int | None = None) -> Generation:
        [generation] = await self.ask(self.render(problem=problem, proof=proof), parse_generation, seed=seed)
        return generation


class Repairer(Role):
    """The solver rewrites a failed proof from the bug report, and may dispute items of it."""

    template = "agent_repair"

    async def repair(self, problem: Problem, proof: str, report: str, *, seed: int | None = None) -> Repair:
        [repaired] = await self.ask(self.render(problem=problem, proof=proof, report=report), parse_repair, seed=seed)
        return repaired


class Judge(Role):
    """Reads a verification log and decides whether the proof passes."""

    template = "agent_judge"

    async def judge(self, problem: Problem, proof: str, log: str, *, seed: int | None = None) -> Judgement:
        [judgement] = await self.ask(self.render(problem=problem, proof=proof, log=log), parse_judgement, seed=seed)
        return judgement


class RebuttalVerifier(Verifier):
    """A verifier shown the earlier bug report and the solver's disputes of it.

    Everything else (parsing, likelihood read-out) is the :class:`~proofcritic.verifier.Verifier`'s.
    """

    template = "agent_reverify"

    def __init__(
        self,
        model: Model,
        *,
        report: str,
        rebuttal: str,
        prompts: PromptSet,
        config: GenerateConfig | None = None,
        score_mode: ScoreMode = DEFAULT_SCORE_MODE,
    ):
        super().__init__(model, prompts=prompts, config=config, score_mode=score_mode)
        self.report = report
        self.rebuttal = rebuttal

    def messages(self, problem: Problem, proof: str) -> list[ChatMessage]:
        return self.render(problem=problem, proof=proof, report=self.report, rebuttal=self.rebuttal)


#: the points-scale re-verification's template and variables (an optional template of a prompt set)
REVERIFY_POINTS = "agent_reverify_points"
REVERIFY_POINTS_VARIABLES = frozenset({"problem", "proof", "scheme", "report", "rebuttal"})


class PointsRebuttalVerifier(PointsVerifier):
    """The points verifier shown the earlier bug report and the solver's disputes of it
    (``agent_reverify_points``: the points prompt, then the disputes); parsing is the
    :class:`~proofcritic.verifier.PointsVerifier`'s."""

    template = REVERIFY_POINTS

    def __init__(self, model: Model, *, report: str, rebuttal: str, **kwargs):
        super().__init__(model, **kwargs)
        self.report = report
        self.rebuttal = rebuttal
        self._rebuttal_prompts = self.prompts.template_set(REVERIFY_POINTS, REVERIFY_POINTS_VARIABLES)

    def messages(self, problem: Problem, proof: str, scheme: object = None) -> list[ChatMessage]:
        chosen = scheme_for(self.scheme, problem.id) if scheme is None else scheme
        return self._rebuttal_prompts.render(
            REVERIFY_POINTS,
            problem=problem,
            proof=proof,
            scheme=scheme_text(chosen),  # type: ignore[arg-type]
            report=self.report,
            rebuttal=self.rebuttal,
        )
