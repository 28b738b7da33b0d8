"""IMO-ProofBench (solving) and IMO-GradingBench (grading), Google DeepMind's IMO benchmarks.

ProofBench v2 (``imobench/proofbench_v2.csv``): 60 problems with a reference solution and
grading guidelines; ``proofbench-basic`` keeps the 30 ``PB-Basic-*`` rows and
``proofbench-advanced`` the 30 ``PB-Advanced-*`` rows. Answers are graded 0-7 and reported in
the buckets Correct 7, Almost 6, Partial 1, Incorrect 0.

IMO-GradingBench: 1000 human-graded proofs, not in the data folder; load it by path (or a
Hugging Face id) with ``load_suite("imo-gradingbench", source=PATH)``. Columns ``Grading ID,
Problem ID, Problem, Solution, Grading guidelines, Response, Points (0-7), Reward
(Incorrect/Partial/Almost/Correct), Problem Source``; human points are ``Points``, or the
bucket's points where ``Points`` is blank.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..types import Problem
from ._data import data_root, need, normalized, pick
from ._items import BUCKETS, SCALES, GradeItem, SolveItem
from ._suite import Suite, make_problem, number, text_or_none

if TYPE_CHECKING:
    from ..pipelines.formal import FormalProblem

MAX_POINTS = SCALES["proofbench"]


def _problem(r: dict[str, Any]) -> Problem:
    return make_problem(
        id=str(need(r, "problem_id", "id")),
        statement=need(r, "problem", "statement"),
        reference_solution=text_or_none(pick(r, "solution", "reference_solution")),
        grading_guidelines=text_or_none(pick(r, "grading_guidelines")),
        max_points=MAX_POINTS,
    )


def _solve_item(record: dict[str, Any]) -> SolveItem:
    r = normalized(record)
    meta = {
        "level": pick(r, "level"),
        "category": pick(r, "category", "type"),
        "source": pick(r, "source"),
        "answer": text_or_none(pick(r, "short_answer", "answer")),
    }
    return SolveItem(problem=_problem(r), meta=meta)


def _level_is(prefix: str):
    def keep(record: dict[str, Any]) -> bool:
        return str(pick(normalized(record), "problem_id", "id") or "").startswith(prefix)

    return keep


def bucket_of(points: float) -> str:
    """The ProofBench bucket nearest below ``points`` on the 0-7 scale (7 Correct, 6 Almost, 1 Partial)."""
    for name, floor in sorted(BUCKETS.items(), key=lambda kv: -kv[1]):
        if points >= floor:
            return name
    return "Incorrect"


def _bucket_name(value: Any) -> str:
    name = str(value).strip().capitalize()
    if name not in BUCKETS:
        raise InputError(f"unknown reward bucket {value!r} (expected one of {', '.join(BUCKETS)})")
    return name


def _grading_item(record: dict[str, Any]) -> GradeItem:
    r = normalized(record)
    reward = pick(r, "reward", "bucket", "grade")
    bucket = _bucket_name(reward) if reward is not None else None
    points_cell = pick(r, "points", "human_points")
    if points_cell is not None:
        points = number(points_cell, "Points")
    elif bucket is not None:
        points = BUCKETS[bucket]
    else:
        raise InputError("no 'Points' and no 'Reward' value")
    if not 0 <= points <= MAX_POINTS:
        raise InputError(f"Points {points:g} is outside 0-{MAX_POINTS:g}")
    problem = _problem(r)
    meta = {
        "bucket": bucket or bucket_of(points),
        "source": pick(r, "problem_source", "source"),
        "problem_id": problem.id,
    }
    return GradeItem(
        id=str(need(r, "grading_id", "id")),
        problem=problem,
        proof=str(need(r, "response", "proof")),
        human_points=points,
        meta=meta,
    )


PROOFBENCH_BASIC = Suite(
    name="proofbench-basic",
    kind="solve",
    description="IMO-ProofBench Basic: 30 pre-IMO to IMO-medium problems, 0-7 points in buckets 7/6/1/0",
    max_points=MAX_POINTS,
    path="imobench/proofbench_v2.csv",
    where=_level_is("PB-Basic"),
    item=_solve_item,
    buckets=BUCKETS,
)

PROOFBENCH_ADVANCED = Suite(
    name="proofbench-advanced",
    kind="solve",
    description="IMO-ProofBench Advanced: 30 IMO-level problems, 0-7 points in buckets 7/6/1/0",
    max_points=MAX_POINTS,
    path="imobench/proofbench_v2.csv",
    where=_level_is("PB-Advanced"),
    item=_solve_item,
    buckets=BUCKETS,
)

IMO_GRADINGBENCH = Suite(
    name="imo-gradingbench",
    kind="grade",
    description="IMO-GradingBench: human-graded proofs in four buckets (load the CSV by path)",
    max_points=MAX_POINTS,
    path=None,
    item=_grading_item,
    buckets=BUCKETS,
)

SUITES = [PROOFBENCH_BASIC, PROOFBENCH_ADVANCED, IMO_GRADINGBENCH]


def load_lean_problems(path: str | Path | None = None, *, data_dir: str | Path | None = None) -> list[FormalProblem]:
    """IMO-ProofBench's problems with their Lean statements (``imobench/lean_proof_bench.csv``
    under the data folder), or those of another CSV in its layout at ``path``. The statements
    import Mathlib: a Lake project with Mathlib (``project=``) or a Kimina server checks them."""
    from ..pipelines.formal import read_lean_problems

    return read_lean_problems(data_root(data_dir) / "imobench" / "lean_proof_bench.csv" if path is None else path)
