"""The step verifier (issue #18): problem + the proof cut into numbered steps -> a verdict per
step (correct / incorrect / unjustified, with a short reason) and the first wrong step.

Output protocol (template ``verify_steps``, overridable in a prompt set)::

    <optional analysis>
    ### Step verdicts
    Step 1: correct - <reason>
    Step 2: unjustified - <reason>
    ...
    Based on my evaluation, the first wrong step is:
    \\boxed{3}            (or \\boxed{none})

The parser is strict and never raises: the output is a format failure (``format_ok`` False,
``score`` None, ``first_error`` None) unless it has the ``Step verdicts`` section with exactly one
verdict line for every step, numbered 1..n in order, and a final statement (the marker then a
box, ending the output, as every role's verdict; :mod:`proofcritic.parsing`) holding the number of
the first step judged incorrect, or ``none`` when no step is. Lines under a verdict that are not
verdict lines continue its reason. The verdicts map onto the proof-level protocol: a step
incorrect -> 0, unjustified steps but none incorrect -> 0.5, every step correct -> 1, so a step
verification stands beside (or in for) a verification.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

from .._roles import Role
from ..errors import InputError
from ..llm import ChatMessage
from ..parsing import (
    EVALUATION_MARKER_RE,
    FIRST_ERROR_MARKER,
    FIRST_ERROR_MARKER_RE,
    read_final_box,
    strip_thinking,
    truncation_error,
)
from ..steps import DEFAULT_STEP_MODE, STEP_MODES, Step, StepMode, number_steps, split_steps
from ..types import Problem, StepVerdict, StepVerification

STEPS_TEMPLATE = "verify_steps"
STEPS_VARIABLES = frozenset({"problem", "proof", "steps", "step_count"})
#: how a verdict is marked in a proof (``grade --steps``), and the order of severity
VERDICT_MARKS = {"correct": "✓", "unjustified": "?", "incorrect": "✗"}
_SEVERITY = {"correct": 0, "unjustified": 1, "incorrect": 2}

_SECTION = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*step[ \t]+verdicts[ \t]*:?[ \t]*(?:\*\*|__)?[ \t]*:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_STEP_LINE = re.compile(
    r"^[ \t]*(?:[-*+\u2022][ \t]+)?(?:\*\*|__)?[ \t]*\[?step[ \t]+(\d{1,4})\]?[ \t]*(?:\*\*|__)?[ \t]*[:.)\-\u2013\u2014]?"
    r"[ \t]*(?:\*\*|__)?[ \t]*(.*)$",
    re.IGNORECASE,
)
_VERDICT = re.compile(
    r"(?:\*\*|__)?[ \t]*(correct|incorrect|unjustified)[ \t]*(?:\*\*|__)?(?![\w])[ \t]*(?:[-\u2013\u2014:|,.;][ \t]*)?(.*)$",
    re.IGNORECASE,
)
_NONE = re.compile(r"none|no[ \t]+wrong[ \t]+step", re.IGNORECASE)
_BOX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textsf|texttt)\s*\{([^{}]*)\}")


def step_score(verdicts: Sequence[StepVerdict]) -> float:
    """The proof-level score of a complete set of verdicts: 0 with an incorrect step, 0.5 with
    unjustified steps only, 1 when all are correct."""
    kinds = {v.verdict for v in verdicts}
    return 0.0 if "incorrect" in kinds else 0.5 if "unjustified" in kinds else 1.0


def _first_error_box(content: str, count: int) -> tuple[int | None, str | None]:
    """The first wrong step's index from the final box: ``(index or None for none, error)``."""
    word = _BOX_WRAPPER.sub(r"\1", content).replace("$", "").replace("*", "").strip().rstrip(".").strip()
    if _NONE.fullmatch(word):
        return None, None
    word = re.sub(r"(?i)^step\s*", "", word)
    if word.isdigit() and 1 <= int(word) <= count:
        return int(word) - 1, None
    shown = content if len(content) <= 40 else content[:37] + "..."
    return None, f"the first wrong step {shown!r} is not a step number from 1 to {count} or none"


def _read_verdicts(section: str, count: int, errors: list[str]) -> list[StepVerdict]:
    """The verdict lines of the section, in order; what breaks the protocol goes to ``errors``."""
    verdicts: list[StepVerdict] = []
    numbers: list[int] = []
    for line in section.splitlines():
        match = _STEP_LINE.match(line)
        if match is None:
            if verdicts and line.strip():  # a reason that goes on over several lines
                last = verdicts[-1]
                last.reason = f"{last.reason} {line.strip()}".strip()
            continue
        number = int(match.group(1))
        verdict = _VERDICT.match(match.group(2))
        if verdict is None:
            errors.append(f"step {number}: no verdict (correct, incorrect or unjustified)")
            continue
        numbers.append(number)
        verdicts.append(
            StepVerdict(
                index=max(number - 1, 0),
                verdict=verdict.group(1).lower(),  # type: ignore[arg-type]
                reason=verdict.group(2).strip(),
            )
        )
    repeated = sorted(k for k, c in Counter(numbers).items() if c > 1)
    if repeated:
        errors.append(f"step(s) {', '.join(map(str, repeated))} judged more than once")
    beyond = sorted(k for k in set(numbers) if not 1 <= k <= count)
    if beyond:
        errors.append(f"verdicts for step(s) {', '.join(map(str, beyond))}, but the solution has {count} steps")
    missing = sorted(set(range(1, count + 1)) - set(numbers))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        errors.append(f"no verdict for step(s) {shown} of {count}")
    if not repeated and not beyond and not missing and numbers != sorted(numbers):
        errors.append("the step verdicts are not in the order of the steps")
    return verdicts


def parse_step_verification(text: str, finish_reason: str | None = "stop", *, steps: int) -> StepVerification:
    """Parse one step verifier output for a proof of ``steps`` steps (see the module); never raises."""
    body = strip_thinking(text)
    errors: list[str] = []
    truncated = truncation_error(finish_reason)
    if truncated:
        errors.append(truncated)
    final = read_final_box(body, FIRST_ERROR_MARKER_RE)
    end = final.marker.start() if final.marker is not None else len(body)
    sections = list(_SECTION.finditer(body, 0, end))
    verdicts: list[StepVerdict] = []
    if not sections:
        errors.append("missing the '### Step verdicts' section")
        analysis = body[:end]
    else:
        analysis = body[: sections[-1].start()]
        verdicts = _read_verdicts(body[sections[-1].end() : end], steps, errors)
    opening = EVALUATION_MARKER_RE.search(analysis)
    analysis = (analysis[opening.end() :] if opening is not None else analysis).strip()
    first_error: int | None = None
    if final.marker is None:
        errors.append(f"missing the marker {FIRST_ERROR_MARKER!r}")
    elif final.content is None:
        errors.append(final.error or "no \\boxed{} after the marker")
    else:
        first_error, error = _first_error_box(final.content, steps)
        if error:
            errors.append(error)
        elif not errors:
            judged = next((v.index for v in verdicts if v.verdict == "incorrect"), None)
            if judged != first_error:
                said = "none" if first_error is None else f"step {first_error + 1}"
                errors.append(
                    f"the first wrong step given ({said}) is not the first step judged incorrect "
                    f"({'none' if judged is None else f'step {judged + 1}'})"
                )
    format_ok = not errors
    score = step_score(verdicts) if format_ok else None
    return StepVerification(
        raw=text,
        analysis=analysis,
        verdicts=verdicts,
        first_error=first_error if format_ok else None,
        score=score,
        score_source="text" if score is not None else None,
        text_score=score,
        format_ok=format_ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


def step_majority(verifications: Sequence[StepVerification], count: int) -> list[str | None]:
    """Each step's verdict over the valid step verifications: the most frequent, ties to the
    more severe (incorrect, then unjustified); None for every step when none is valid."""
    valid = [v for v in verifications if v.format_ok]
    if not valid:
        return [None] * count
    shown: list[str | None] = []
    for index in range(count):
        votes = Counter(v.verdicts[index].verdict for v in valid)
        top = max(votes.values())
        shown.append(max((k for k, c in votes.items() if c == top), key=_SEVERITY.__getitem__))
    return shown


class StepVerifier(Role):
    """Judges a proof step by step (see the module). ``mode`` (and ``items``, ``displays``,
    ``headings``) choose how a proof is cut into steps (:func:`proofcritic.steps.split_steps`)
    when the caller does not give the steps. Scores come from the text only."""

    template = STEPS_TEMPLATE
    scale = "ternary"

    def __init__(self, model, *, mode: StepMode = DEFAULT_STEP_MODE, **kwargs):
        if mode not in STEP_MODES:
            raise ValueError(f"step mode must be one of {', '.join(STEP_MODES)}, not {mode!r}")
        split = {key: kwargs.pop(key) for key in ("items", "displays", "headings") if key in kwargs}
        super().__init__(model, **kwargs)
        self.mode: StepMode = mode
        self._split = split
        self._step_prompts = self.prompts.template_set(STEPS_TEMPLATE, STEPS_VARIABLES)

    def split(self, proof: str) -> list[Step]:
        """``proof``'s steps as this verifier cuts them."""
        return split_steps(proof, self.mode, **self._split)

    def messages(self, problem: Problem, proof: str, steps: Sequence[Step]) -> list[ChatMessage]:
        return self._step_prompts.render(
            STEPS_TEMPLATE, problem=problem, proof=proof, steps=number_steps(steps), step_count=len(steps)
        )

    async def verify(
        self,
        problem: Problem,
        proof: str,
        n: int = 1,
        *,
        steps: Sequence[Step] | None = None,
        seed: int | None = None,
        first: int = 0,
    ) -> list[StepVerification]:
        """``n`` independent step verifications of ``proof`` (one request with n samples), on
        ``steps`` (default: :meth:`split`'s); ``first``: samples ``first`` .. ``first + n - 1``."""
        steps = self.split(proof) if steps is None else list(steps)
        if not steps:
            raise InputError("the proof has no steps to verify (only whitespace and separator lines)")
        parse = functools.partial(parse_step_verification, steps=len(steps))
        return await self.ask(self.messages(problem, proof, steps), parse, n, seed=seed, first=first)


__all__ = [
    "STEPS_TEMPLATE",
    "STEPS_VARIABLES",
    "VERDICT_MARKS",
    "StepVerifier",
    "parse_step_verification",
    "step_majority",
    "step_score",
]
