"""Suites from the user's own files: problems to solve, or proofs with human grades.

Files are JSONL, a JSON list or CSV (or a Hugging Face id, see :mod:`._data`). Column names are
matched loosely (case, spaces and a parenthesised suffix are ignored: "Points (0-7)" is
``points``), with the names :func:`proofcritic.io.problem_from_record` accepts: ``problem`` /
``statement`` / ``question``, ``solution`` / ``reference_solution``, ``grading_guidelines``,
``problem_id`` / ``id``, ``max_points``. Other scalar columns go into ``meta``.

How a human score column is read (``load_graded_file``):

* labels: ``correct`` / ``incorrect`` (also true/false, pass/fail, yes/no) are full or no points;
  the ProofBench buckets Correct / Almost / Partial / Incorrect are 7/6/1/0 out of 7, rescaled to
  the problem's ``max_points``;
* numbers: ``scale="points"`` reads them as points out of ``max_points``; ``scale="unit"`` as a
  fraction in [0, 1]; ``scale="auto"`` (the default) reads the whole file as fractions when every
  number in the column lies in [0, 1], else as points. A points file whose grades are all 0 or 1
  is thus read as fractions: pass ``scale="points"`` for such data.
* a nested ``model_prediction`` object (DeepSeekMath-V2 outputs) is read as if its fields were
  columns, so ``human_rating`` and ``average_automatic_rating`` (kept in ``recorded``) are found;
* ``max_points``: the argument if given, else a ``max_points`` column, else 7 (IMO style).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

from ..errors import InputError
from ..io import problem_from_record
from ..types import Problem
from ._data import norm_key, normalized, pick
from ._items import BUCKETS, SCALES, GradeItem, SolveItem
from ._suite import Suite, number, text_or_none

Scale = Literal["auto", "points", "unit"]
SCORE_COLUMNS = (
    "human_points",
    "human_score",
    "human_rating",
    "human_label",
    "points",
    "score",
    "grade",
    "label",
)
PROOF_COLUMNS = ("proof", "response", "completion", "model_proof", "output")
_LABELS = {
    "correct": 1.0,
    "true": 1.0,
    "pass": 1.0,
    "yes": 1.0,
    "incorrect": 0.0,
    "false": 0.0,
    "fail": 0.0,
    "no": 0.0,
}
_USED = {
    "id",
    "problem_id",
    "problem_idx",
    "problem",
    "statement",
    "question",
    "solution",
    "reference_solution",
    "reference",
    "grading_guidelines",
    "guidelines",
    "max_points",
    "points_max",
    "model_prediction",
    *PROOF_COLUMNS,
}


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """A normalized record with a nested ``model_prediction`` object (DeepSeekMath-V2 shape) merged in."""
    r = normalized(record)
    nested = r.get("model_prediction")
    if isinstance(nested, dict):
        r = {
            **normalized(nested),
            **{k: v for k, v in r.items() if k != "model_prediction"},
        }
    return r


def _meta(r: dict[str, Any], also: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        k: v
        for k, v in r.items()
        if k not in _USED | also and not k.startswith("_") and isinstance(v, (str, int, float, bool))
    }


def _problem(r: dict[str, Any], default_id: str, max_points: float | None) -> Problem:
    fields = {k: v for k, v in r.items() if not k.startswith("_")}
    if "problem_id" not in fields and "problem_idx" in fields:
        fields["problem_id"] = fields["problem_idx"]
    problem = problem_from_record(fields, default_id=default_id)
    return problem.model_copy(update={"max_points": max_points}) if max_points is not None else problem


def _problem_item(stem: str, max_points: float | None, record: dict[str, Any]) -> SolveItem:
    r = normalized(record)
    return SolveItem(
        problem=_problem(r, f"{stem}-{record.get('_line', 0)}", max_points),
        meta=_meta(r),
    )


def load_problems_file(
    path: str | Path, *, max_points: float | None = None, limit: int | None = None
) -> list[SolveItem]:
    """Problems to solve from a JSONL/JSON/CSV file (see the module docstring for the columns)."""
    stem = Path(str(path)).stem
    suite = Suite(
        name=f"problems:{stem}",
        kind="solve",
        description=f"problems from {path}",
        max_points=max_points,
        item=partial(_problem_item, stem, max_points),
    )
    return cast("list[SolveItem]", suite.load(source=path, limit=limit))  # a "solve" suite's items


def _score_value(value: Any) -> float | str:
    """A number, or a lower-case label."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return text.lower()


def _mark_scale(column: str | None, scale: Scale, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Find the score column and decide, once for the file, whether numbers are fractions."""
    names = (column,) if column else SCORE_COLUMNS
    found = next(
        (n for n in names if any(pick(_flat(rec), n) is not None for rec in records)),
        None,
    )
    if found is None:
        raise InputError(f"no human score column (tried {', '.join(names)}); pass score_column")
    cells = [pick(_flat(rec), found) for rec in records]
    values = [_score_value(c) for c in cells if c is not None]
    numbers = [v for v in values if isinstance(v, float)]
    unit = scale == "unit" or (scale == "auto" and bool(numbers) and all(0 <= v <= 1 for v in numbers))
    return [dict(rec, _score_column=found, _unit=unit) for rec in records]


def _points(value: Any, unit: bool, max_points: float, column: str) -> float:
    score = _score_value(value)
    if isinstance(score, str):
        if score in _LABELS:
            return _LABELS[score] * max_points
        if score.capitalize() in BUCKETS:
            return BUCKETS[score.capitalize()] / SCALES["proofbench"] * max_points
        raise InputError(f"{column} value {value!r} is neither a number nor a known label")
    points = score * max_points if unit else score
    if not 0 <= points <= max_points:
        raise InputError(f"{column} {score:g} is outside 0-{1 if unit else max_points:g}")
    return points


def _graded_item(stem: str, max_points: float | None, record: dict[str, Any]) -> GradeItem:
    r = _flat(record)
    column = record["_score_column"]
    line = record.get("_line", 0)
    problem = _problem(r, f"{stem}-{line}", max_points)
    proof = pick(r, *PROOF_COLUMNS)
    if text_or_none(proof) is None:
        raise InputError(f"no proof (tried {', '.join(PROOF_COLUMNS)})")
    value = pick(r, column)
    if value is None:
        raise InputError(f"no value in the human score column {column!r}")
    points = _points(value, record["_unit"], problem.max_points, column)
    item_id = pick(r, "id", "grading_id")
    return GradeItem(
        id=str(item_id) if item_id is not None else f"{stem}-{line}",
        problem=problem,
        proof=str(proof),
        human_points=points,
        meta=_meta(r, frozenset({norm_key(column)})),
        recorded={k: number(v, k) for k, v in r.items() if k == "average_automatic_rating"},
    )


def load_graded_file(
    path: str | Path,
    *,
    score_column: str | None = None,
    scale: Scale = "auto",
    max_points: float | None = None,
    limit: int | None = None,
) -> list[GradeItem]:
    """Proofs with a human grade from a JSONL/JSON/CSV file; see the module docstring for the scale."""
    if scale not in ("auto", "points", "unit"):
        raise InputError(f"scale must be 'auto', 'points' or 'unit', not {scale!r}")
    stem = Path(str(path)).stem
    suite = _graded_suite(
        f"graded:{stem}",
        f"graded proofs from {path}",
        stem,
        score_column,
        scale,
        max_points,
    )
    return cast("list[GradeItem]", suite.load(source=path, limit=limit))  # a "grade" suite's items


def _graded_suite(
    name: str,
    description: str,
    stem: str,
    column: str | None,
    scale: Scale,
    max_points: float | None,
) -> Suite:
    return Suite(
        name=name,
        kind="grade",
        description=description,
        max_points=max_points,
        prepare=partial(_mark_scale, column, scale),
        item=partial(_graded_item, stem, max_points),
    )


PROBLEMS = Suite(
    name="problems",
    kind="solve",
    max_points=None,
    item=partial(_problem_item, "problems", None),
    description="any JSONL/JSON/CSV file of problems (pass the file as source)",
)
GRADED = _graded_suite(
    "graded",
    "any JSONL/JSON/CSV file of proofs with a human score column (pass the file as source)",
    "graded",
    None,
    "auto",
    None,
)

SUITES = [PROBLEMS, GRADED]
