"""Points grading (``--scale points``): the verifier grades on the problem's own scale.

Beside the ternary protocol (a score in {0, 0.5, 1}), the points protocol asks for whole points
from 0 to ``problem.max_points`` (7 for IMO-style problems), against the reference solution, the
grading guidelines and, where one is given, a marking scheme (checkpoints with points,
zero-credit items, deductions: the shape of MathArena's ``grading_scheme.json``). The output
keeps the ternary protocol's evaluation marker and issue list; its final statement is
``Based on my evaluation, the final number of points should be:`` followed by ``\\boxed{N}``.
Parsing is strict: a value that is not a whole number on the scale, a second points statement,
or anything after the box is a format failure. A parsed grade has ``points`` = N and
``score`` = N / max_points, so that every aggregate (mean, min, majority, points) works
unchanged on the [0, 1] scale.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..llm import ChatMessage
from ..parsing import (
    EVALUATION_MARKER,
    POINTS_MARKER,
    POINTS_MARKER_RE,
    locate_quote,
    read_final_score,
    split_evaluation,
    strip_thinking,
)
from ..types import Problem, Verification
from ._parse import opening_errors, parse_issues
from ._verifier import Verifier

#: the verifier protocols: ``ternary`` (SPEC section 1, a score in {0, 0.5, 1}) and ``points``
SCALES = ("ternary", "points")
POINTS_TEMPLATE = "verify_points"
POINTS_VARIABLES = {POINTS_TEMPLATE: frozenset({"problem", "proof", "scheme"})}
#: one points grade as a refinement prompt shows it (search's "=== Evaluation ... ===" blocks)
EVALUATION_TEMPLATE = "points_evaluation"
EVALUATION_VARIABLES = frozenset({"problem", "analysis", "points"})


def point_values(max_points: float) -> tuple[int, ...]:
    """The grades of a scale: the whole numbers 0..max_points."""
    if not max_points > 0:
        raise ValueError(f"a points scale needs max_points above 0, not {max_points}")
    return tuple(range(math.floor(max_points) + 1))


def parse_points_verification(text: str, finish_reason: str | None = "stop", *, max_points: float = 7) -> Verification:
    """Parse one points-protocol output (see the module); never raises."""
    body = strip_thinking(text)
    parts = split_evaluation(body)  # the analysis ends at the ternary marker if one is there
    errors = opening_errors(parts, finish_reason)
    final = read_final_score(body, POINTS_MARKER_RE, point_values(max_points))
    analysis = parts.analysis
    if final.marker is None:
        errors.append(f"missing points marker {POINTS_MARKER!r}")
    else:
        head = body[: final.marker.start()]
        start = head.find(EVALUATION_MARKER)
        analysis = (head[start + len(EVALUATION_MARKER) :] if start >= 0 else head).strip()
        if final.error:
            errors.append(final.error)
    format_ok = not errors
    points = final.score if format_ok else None
    score = None if points is None else points / max_points
    return Verification(
        raw=text,
        analysis=analysis,
        score=score,
        score_source="text" if score is not None else None,
        text_score=None if final.score is None else final.score / max_points,
        points=points,
        issues=parse_issues(analysis),
        format_ok=format_ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


def scheme_text(scheme: str | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> str:
    """A marking scheme as the prompt shows it: text as given, or the checkpoints of a
    ``grading_scheme.json`` entry (``{"points", "scheme": [{"title", "points", "desc"}]}`` or
    the list itself) one per line, e.g. ``- Bounding the expression (2 points): ...``."""
    if scheme is None:
        return ""
    if isinstance(scheme, str):
        return scheme.strip()
    items = scheme.get("scheme", []) if isinstance(scheme, Mapping) else scheme
    lines = []
    for item in items:
        points = item.get("points", 0)
        title = str(item.get("title") or "").strip()
        desc = str(item.get("desc") or item.get("description") or "").strip()
        label = f"{title} ({points:g} point{'s' if points != 1 else ''})" if title else f"({points:g} points)"
        lines.append(f"- {label}: {desc}" if desc else f"- {label}")
    return "\n".join(lines)


def load_schemes(path: str | Path) -> str | dict[str, Any]:
    """A marking-scheme file: a text file (one scheme for every problem), or JSON: one entry
    (``{"points", "scheme": [...]}`` or the checkpoint list) for every problem, or a list of
    entries with ``id`` (MathArena's ``grading_scheme.json``) as ``{problem id: entry}``; or
    the JSONL that ``proofcritic rubric --input`` writes (by id)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the marking scheme {p}: {error}") from None
    if p.suffix.lower() == ".jsonl":  # `proofcritic rubric --input` output: one record per problem
        book = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{p}:{number}: not JSON ({error})") from None
            scheme = record.get("scheme") if isinstance(record, dict) else None
            if scheme:  # (records without a valid scheme are left out)
                book[str(record.get("id") or scheme.get("id"))] = scheme
        return {"by_problem": book}
    if p.suffix.lower() != ".json":
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{p}: not JSON ({error})") from None
    if isinstance(data, list) and data and all(isinstance(e, dict) and "id" in e for e in data):
        return {"by_problem": {str(e["id"]): e for e in data}}
    if isinstance(data, (list, dict)):
        return {"all": data}
    raise InputError(f"{p}: a marking scheme is a checkpoint list or an object, not {type(data).__name__}")


def scheme_for(schemes: Any, problem_id: str) -> Any:
    """The scheme of one problem from :func:`load_schemes`' result (or a scheme given as is):
    by its id, else by the id's last part (``usamo2025/3`` -> ``3``); None when none fits."""
    if isinstance(schemes, dict) and "by_problem" in schemes:
        book = schemes["by_problem"]
        return book.get(problem_id) or book.get(re.split(r"[^0-9A-Za-z]+", problem_id)[-1])
    if isinstance(schemes, dict) and set(schemes) == {"all"}:
        return schemes["all"]
    return schemes


class PointsVerifier(Verifier):
    """Grades proofs on each problem's points scale (0..``problem.max_points``), against the
    reference solution, the guidelines and a marking scheme (``scheme=`` here for every problem,
    or per call). Scores are read from the text only (``score_mode`` "text")."""

    template = POINTS_TEMPLATE
    scale = "points"

    def __init__(self, model, *, scheme: str | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None, **kwargs):
        mode = kwargs.pop("score_mode", "text")
        if mode != "text":
            raise ValueError(f"points grading reads the points from the text only (score_mode 'text'), not {mode!r}")
        super().__init__(model, score_mode="text", **kwargs)
        self.scheme = scheme
        self._points_prompts = self.prompts.template_set(POINTS_TEMPLATE, POINTS_VARIABLES[POINTS_TEMPLATE])
        self._evaluation_prompts = self.prompts.template_set(EVALUATION_TEMPLATE, EVALUATION_VARIABLES)

    def evaluation_text(self, problem: Problem, verification: Verification) -> str:
        """``verification`` as a refinement prompt shows it: its analysis (with the issues) and
        "x / max points" (template ``points_evaluation``, overridable in a prompt set)."""
        messages = self._evaluation_prompts.render(
            EVALUATION_TEMPLATE, problem=problem, analysis=verification.analysis, points=verification.points
        )
        return messages[-1].content.strip()

    def messages(self, problem: Problem, proof: str, scheme: Any = None) -> list[ChatMessage]:
        chosen = scheme_for(self.scheme, problem.id) if scheme is None else scheme
        return self._points_prompts.render(self.template, problem=problem, proof=proof, scheme=scheme_text(chosen))

    async def verify(
        self,
        problem: Problem,
        proof: str,
        n: int = 1,
        *,
        seed: int | None = None,
        scheme: Any = None,
        first: int = 0,
    ) -> list[Verification]:
        """``n`` independent points grades of ``proof`` (one request with n samples; ``first``:
        samples ``first`` .. ``first + n - 1`` of it)."""
        messages = self.messages(problem, proof, scheme)
        parse = functools.partial(parse_points_verification, max_points=problem.max_points)
        results = await self.ask(messages, parse, n, seed=seed, first=first)
        for verification in results:
            for issue in verification.issues:
                issue.span = locate_quote(issue.location, proof)
        return results


__all__ = [
    "SCALES",
    "PointsVerifier",
    "load_schemes",
    "parse_points_verification",
    "point_values",
    "scheme_for",
    "scheme_text",
]
