"""Marking schemes from a problem and its reference solution (``proofcritic rubric``).

A :class:`RubricWriter` (template ``rubric``) writes the scheme a panel of markers would use:
checkpoints with whole points that add up to the problem's scale, zero-credit items and
deductions, as one fenced JSON block ending its answer, in the shape of MathArena's
``grading_scheme.json`` entries (``{"points", "scheme": [{"title", "points", "desc"}]}``, plus
``zero_credit`` and ``deductions``). The parser is strict: no JSON block, invalid JSON, a
checkpoint without whole points, or checkpoints that do not add up to the scale are format
failures. A user edits the file and gives it to points grading (``grade --scale points
--scheme FILE``).
"""

from __future__ import annotations

import functools
import json
import re

from pydantic import BaseModel, Field, ValidationError

from .._roles import Role
from ..errors import validation_line
from ..parsing import strip_thinking, truncation_error
from ..types import Problem, RoleOutput

RUBRIC_TEMPLATE = "rubric"
RUBRIC_VARIABLES = {RUBRIC_TEMPLATE: frozenset({"problem"})}
_JSON_BLOCK = re.compile(r"```json[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL | re.IGNORECASE)


class Checkpoint(BaseModel):
    title: str = Field(min_length=1)
    points: int = Field(ge=0, strict=True)
    desc: str = ""


class Deduction(BaseModel):
    desc: str = Field(min_length=1)
    points: float = Field(gt=0)


class Scheme(BaseModel):
    """A marking scheme (the shape of a ``grading_scheme.json`` entry, with more fields)."""

    id: str | None = None
    points: int = Field(gt=0)
    scheme: list[Checkpoint] = Field(min_length=1)
    zero_credit: list[str] = Field(default_factory=list)
    deductions: list[Deduction] = Field(default_factory=list)


class RubricOutput(RoleOutput):
    """A rubric writer's answer: ``scheme`` None on a format failure."""

    scheme: Scheme | None = None


def parse_rubric(text: str, finish_reason: str | None = "stop", *, max_points: float = 7) -> RubricOutput:
    """Read a rubric writer's answer; never raises."""
    body = strip_thinking(text)
    errors = [e for e in (truncation_error(finish_reason),) if e]
    blocks = list(_JSON_BLOCK.finditer(body))
    scheme = None
    if not blocks:
        errors.append("no ```json block")
    else:
        last = blocks[-1]
        if body[last.end() :].strip():
            errors.append("text follows the JSON block")
        try:
            scheme = Scheme.model_validate(json.loads(last.group(1)))
        except json.JSONDecodeError as error:
            errors.append(f"the JSON block does not parse: {error}")
        except ValidationError as error:
            errors.append(f"the scheme is malformed: {validation_line(error)}")
        if scheme is not None:
            total = sum(c.points for c in scheme.scheme)
            if scheme.points != max_points or total != max_points:
                errors.append(
                    f"the checkpoints add up to {total} and the scheme says {scheme.points}, "
                    f"not the problem's {max_points:g} points"
                )
    ok = not errors
    return RubricOutput(
        raw=text,
        scheme=scheme if ok else None,
        format_ok=ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


class RubricWriter(Role):
    """Writes a problem's marking scheme (see the module)."""

    template = RUBRIC_TEMPLATE

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts = self.prompts.template_set(RUBRIC_TEMPLATE, RUBRIC_VARIABLES[RUBRIC_TEMPLATE])

    async def write(self, problem: Problem, n: int = 1) -> list[RubricOutput]:
        """``n`` schemes (one request); each scheme's ``id`` is the problem's."""
        parse = functools.partial(parse_rubric, max_points=problem.max_points)
        answers = await self.ask(self.render(problem=problem), parse, n)
        for answer in answers:
            if answer.scheme is not None:
                answer.scheme.id = problem.id
        return answers


__all__ = ["Checkpoint", "Deduction", "RubricOutput", "RubricWriter", "Scheme", "parse_rubric"]
