"""USAMO 2025 (MathArena): six problems graded 0-7 by a points rubric.

The folder holds ``problems/N.tex``, ``solutions/N.tex`` and ``grading_scheme.json`` (a list of
``{id, points, scheme: [{title, points, desc}]}``). The rubric becomes readable grading
guidelines; the problem's ``max_points`` is the scheme's total; the structured rubric is kept
in ``meta["rubric"]``. Item ids are ``USAMO2025-N``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_text
from ._data import need, normalized, pick
from ._items import SCALES, SolveItem
from ._suite import Suite, make_problem, number, text_or_none

CONTEST = "USAMO2025"


def rubric_text(scheme: list[dict[str, Any]], total: float) -> str:
    """A points rubric as guidelines a grader can read."""
    lines = [f"Points rubric ({total:g} points in total; award the points of each item the proof achieves):"]
    for entry in scheme:
        points = number(entry.get("points"), "rubric points")
        unit = "point" if points == 1 else "points"
        title = str(entry.get("title", "")).strip()
        desc = str(entry.get("desc", "")).strip()
        lines.append(f"- {title} ({points:g} {unit}): {desc}" if desc else f"- {title} ({points:g} {unit})")
    return "\n".join(lines)


def read_folder(folder: Path) -> list[dict[str, Any]]:
    """One record per ``problems/N.tex``: ``{id, problem, solution, points, scheme}``."""
    scheme_path = folder / "grading_scheme.json"
    try:
        schemes = json.loads(read_text(scheme_path, "grading scheme"))
    except json.JSONDecodeError as error:
        raise InputError(f"{scheme_path} is not valid JSON ({error.msg})") from None
    by_id = {str(s.get("id")): s for s in schemes if isinstance(s, dict)}
    files = sorted((folder / "problems").glob("*.tex"), key=lambda f: (len(f.stem), f.stem))
    if not files:
        raise InputError(f"no problems/*.tex in {folder}")
    records = []
    for number_, tex in enumerate(files, start=1):
        solution = folder / "solutions" / tex.name
        scheme = by_id.get(tex.stem, {})
        records.append(
            {
                "id": tex.stem,
                "problem": read_text(tex, "problem file").strip(),
                "solution": read_text(solution, "solution file").strip() if solution.exists() else None,
                "points": scheme.get("points"),
                "scheme": scheme.get("scheme", []),
                "_line": number_,
            }
        )
    return records


def _item(record: dict[str, Any]) -> SolveItem:
    r = normalized(record)
    local_id = str(need(r, "id", "problem_idx"))
    scheme = record.get("scheme") or []
    total = number(pick(r, "points") or SCALES["usamo"], "points")
    if scheme and sum(number(s.get("points"), "rubric points") for s in scheme) != total:
        raise InputError(f"rubric of problem {local_id} does not add up to {total:g} points")
    problem = make_problem(
        id=local_id if local_id.startswith(CONTEST) else f"{CONTEST}-{local_id}",
        statement=need(r, "problem", "statement"),
        reference_solution=text_or_none(pick(r, "solution")),
        grading_guidelines=rubric_text(scheme, total) if scheme else None,
        max_points=total,
    )
    return SolveItem(problem=problem, meta={"contest": CONTEST, "rubric": scheme})


USAMO2025 = Suite(
    name="usamo2025",
    kind="solve",
    description="USAMO 2025 (MathArena): 6 problems, 0-7 points by a points rubric",
    max_points=SCALES["usamo"],
    path="matharena-usamo2025",
    read=read_folder,
    item=_item,
)

SUITES = [USAMO2025]
