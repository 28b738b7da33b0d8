"""A teacher's corrections of a student's solution, and its thought templates (issue #19:
SuperCorrect; used by ``proofcritic shape``).

:class:`TeacherCorrector` (template ``teacher_correct``) is shown the student's solution cut into
numbered steps (:func:`proofcritic.steps.split_steps`) and, when given, the reference answer. It
names the **first wrong step** (its number and a short verbatim quote from it), explains the error,
and writes the solution from that step on. Its output protocol, strictly parsed by
:func:`parse_correction`::

    ### First wrong step
    Step 3: "so x = 5"
    ### Why it is wrong
    <reasoning>
    ### Corrected solution from step 3
    <text replacing step 3 and every later step, ending with \\boxed{...}>

A step number outside the solution's steps, a missing or empty section, or a truncated output is
a format failure (``correction`` None, ``format_error`` says why). The quote is located in the
named step (:func:`proofcritic.parsing.locate_quote`, or as a substring when it is short); a quote that is not found there is kept
(``quote_found`` false), the step number decides. :meth:`TeacherCorrector.correct` then builds
the corrected solution: the student's text up to the start of the wrong step, kept verbatim, and
the teacher's continuation; so a (corrected, erroneous) pair shares that prefix.

:class:`ThoughtTemplater` (template ``thought_templates``) writes a solution's hierarchical
thought templates: a high-level plan (the idea, reusable on similar problems) and a detailed
plan (the steps), parsed by :func:`parse_templates`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from .._constants import DEFAULT_STEP_MODE, StepMode
from .._roles import Role
from ..parsing import locate_quote, strip_thinking, truncation_error
from ..steps import Step, number_steps, split_steps
from ..types import Problem, RoleOutput

__all__ = [
    "TEACHER_VARIABLES",
    "Correction",
    "CorrectionOutput",
    "TeacherCorrector",
    "Templates",
    "TemplatesOutput",
    "ThoughtTemplater",
    "parse_correction",
    "parse_templates",
]

#: the teacher's templates and their variables: optional templates of a prompt set
TEACHER_VARIABLES: dict[str, frozenset[str]] = {
    "teacher_correct": frozenset({"problem", "steps", "step_count", "answer"}),
    "thought_templates": frozenset({"problem", "solution"}),
}

_HEADING = re.compile(r"^[ \t]*#{2,4}[ \t]*\**[ \t]*(.+?)[ \t]*\**[ \t]*:?[ \t]*$", re.MULTILINE)
_STEP_LINE = re.compile(r"^\s*\**\s*step\s*\[?\s*(\d+)\s*\]?\s*\**\s*[:.\-–]?\s*(.*)$", re.IGNORECASE | re.DOTALL)


def _sections(body: str, names: dict[str, re.Pattern[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """The text under each heading whose title matches one of ``names`` (the first heading of
    each name; the text runs to the next heading of any of them), and the titles found."""
    found: list[tuple[str, str, int, int]] = []
    for match in _HEADING.finditer(body):
        title = match.group(1).strip()
        for name, pattern in names.items():
            if pattern.fullmatch(title) and all(f[0] != name for f in found):
                found.append((name, title, match.start(), match.end()))
                break
    texts: dict[str, str] = {}
    titles: dict[str, str] = {}
    for index, (name, title, _, end) in enumerate(found):
        stop = found[index + 1][2] if index + 1 < len(found) else len(body)
        texts[name] = body[end:stop].strip()
        titles[name] = title
    return texts, titles


class Correction(BaseModel):
    """What a teacher wrote about one wrong solution."""

    step: int = Field(..., ge=1, description="The first wrong step, numbered from 1 as the prompt shows it.")
    quote: str = Field("", description="The teacher's verbatim quote from that step.")
    quote_found: bool = Field(False, description="The quote was found in the named step's text.")
    reasoning: str = Field(..., description="Why the step is wrong (the teacher's explanation).")
    continuation: str = Field(..., description="The teacher's text replacing the wrong step and all later ones.")


class CorrectionOutput(RoleOutput):
    """A teacher's answer: ``correction`` None on a format failure. :meth:`TeacherCorrector.correct`
    fills ``prefix`` (the student's text before the wrong step, kept) and ``corrected`` (prefix +
    continuation)."""

    correction: Correction | None = None
    prefix: str = ""
    corrected: str = ""


_CORRECTION_SECTIONS = {
    "step": re.compile(r"first\s+(?:wrong|incorrect|erroneous)\s+step", re.IGNORECASE),
    "why": re.compile(r"why\s+it\s+is\s+wrong|(?:the\s+)?error|explanation|reasoning", re.IGNORECASE),
    "fix": re.compile(r"corrected\s+solution.*", re.IGNORECASE),
}


def parse_correction(text: str, finish_reason: str | None = "stop", *, steps: list[Step]) -> CorrectionOutput:
    """Read a teacher's correction of a solution cut into ``steps``; never raises."""
    body = strip_thinking(text)
    errors = [e for e in (truncation_error(finish_reason),) if e]
    sections, _ = _sections(body, _CORRECTION_SECTIONS)
    missing: list[str] = []
    for key, title in (("step", "First wrong step"), ("why", "Why it is wrong"), ("fix", "Corrected solution")):
        if not sections.get(key):
            missing.append(title)
    if missing:
        errors.append("no (or an empty) section " + ", ".join(f"'### {m}'" for m in missing))
    correction = None
    if sections.get("step"):
        first_line = sections["step"].strip().splitlines()[0]
        match = _STEP_LINE.match(first_line)
        if match is None:
            if re.search(r"\bnone\b", first_line, re.IGNORECASE):
                errors.append("the teacher found no wrong step")
            else:
                errors.append(f"the first wrong step is not written as 'Step k: \"quote\"' ({first_line[:80]!r})")
        else:
            number = int(match.group(1))
            if not 1 <= number <= len(steps):
                errors.append(f"step {number} is not one of the solution's steps 1 to {len(steps)}")
            elif not errors:
                quote = match.group(2).strip().strip("\"'“”‘’`").strip()
                correction = Correction(
                    step=number,
                    quote=quote,
                    quote_found=_found(quote, steps[number - 1].text),
                    reasoning=sections["why"],
                    continuation=sections["fix"],
                )
    ok = not errors and correction is not None
    return CorrectionOutput(
        raw=text,
        correction=correction if ok else None,
        format_ok=ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


def _found(quote: str, text: str) -> bool:
    """Whether the quote stands in the step: located as an issue's quote is, or (a quote too
    short for that) contained in it, whitespace collapsed."""
    if locate_quote(quote, text) is not None:
        return True
    quote = " ".join(quote.split())
    return bool(quote) and quote in " ".join(text.split())


class TeacherCorrector(Role):
    """Finds a solution's first wrong step and corrects it from there (see the module)."""

    template = "teacher_correct"

    def __init__(self, model, *, step_mode: StepMode = DEFAULT_STEP_MODE, show_answer: bool = True, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts = self.prompts.template_set(self.template, TEACHER_VARIABLES[self.template])
        self.step_mode: StepMode = step_mode
        self.show_answer = show_answer

    def steps(self, solution: str) -> list[Step]:
        """The steps the teacher is shown."""
        return split_steps(solution, self.step_mode)

    async def correct(
        self, problem: Problem, solution: str, answer: str | None = None, n: int = 1, *, seed: int | None = None
    ) -> list[CorrectionOutput]:
        """``n`` corrections of ``solution`` (one request; ``seed`` overrides the configured one),
        each with ``prefix`` and ``corrected`` filled when it parses. ``answer``: the reference
        answer, shown unless the corrector was made with ``show_answer=False``."""
        steps = self.steps(solution)
        if not steps:
            raise ValueError("an empty solution has no step to correct")
        messages = self.render(
            problem=problem,
            steps=number_steps(steps),
            step_count=len(steps),
            answer=answer if self.show_answer else None,
        )
        outputs = await self.ask(messages, lambda t, f: parse_correction(t, f, steps=steps), n, seed=seed)
        for output in outputs:
            if output.correction is not None:
                output.prefix = solution[: steps[output.correction.step - 1].start]
                output.corrected = output.prefix + output.correction.continuation
        return outputs


class Templates(BaseModel):
    """A solution's hierarchical thought templates."""

    high_level: str = Field(..., description="The key idea and strategy, reusable on similar problems.")
    detailed: str = Field(..., description="The solution's steps: what to do and why.")


class TemplatesOutput(RoleOutput):
    """A teacher's thought templates: ``templates`` None on a format failure."""

    templates: Templates | None = None


_TEMPLATE_SECTIONS = {
    "high": re.compile(r"high[\s-]*level\s+(?:plan|template|thought).*", re.IGNORECASE),
    "detailed": re.compile(r"detailed\s+(?:plan|template|thought|solution).*", re.IGNORECASE),
}


def parse_templates(text: str, finish_reason: str | None = "stop") -> TemplatesOutput:
    """Read a teacher's two-level plan; never raises."""
    body = strip_thinking(text)
    errors = [e for e in (truncation_error(finish_reason),) if e]
    sections, _ = _sections(body, _TEMPLATE_SECTIONS)
    for key, title in (("high", "High-level plan"), ("detailed", "Detailed plan")):
        if not sections.get(key):
            errors.append(f"no (or an empty) section '### {title}'")
    ok = not errors
    return TemplatesOutput(
        raw=text,
        templates=Templates(high_level=sections["high"], detailed=sections["detailed"]) if ok else None,
        format_ok=ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


class ThoughtTemplater(Role):
    """Writes a solution's high-level and detailed plans (see the module)."""

    template = "thought_templates"

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts = self.prompts.template_set(self.template, TEACHER_VARIABLES[self.template])

    async def write(self, problem: Problem, solution: str, *, seed: int | None = None) -> TemplatesOutput:
        """One pair of plans for ``solution``."""
        [output] = await self.ask(self.render(problem=problem, solution=solution), parse_templates, 1, seed=seed)
        return output
