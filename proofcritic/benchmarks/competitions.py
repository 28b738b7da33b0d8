"""Competition suites from DeepSeekMath-V2's release (SPEC section 6).

Solving: IMO 2025 (7 points a problem), CMO 2024 and CMO 2025 (21), Putnam 2024 (10), read
from ``dsmv2/inputs/*.json`` (``{id, question, answer, contest, problem_idx}``; ``answer`` is the
string "null" for proof-only problems). Item ids are ``problem_idx`` (e.g. "IMO2025-1"), else
``contest-id``.

Grading: ``dsmv2-human``, the 84 proofs DeepSeekMath-V2 published with human points, read from
``dsmv2/outputs/*.jsonl``; human points are on each file's scale (IMO and ProofBench 7, CMO 21,
Putnam 10) and the verifier average is kept as ``recorded["average_automatic_rating"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ._data import need, normalized, pick, read_records
from ._items import SCALES, GradeItem, SolveItem
from ._suite import Suite, make_problem, number, text_or_none


def scale_of(name: str) -> float:
    """The points scale of a competition or file name ("IMO2025", "CMO2024", "IMO-ProofBench-Basic", ...)."""
    key = name.lower().replace("_", "-")
    for family in ("proofbench", "usamo", "putnam", "cmo", "imo"):
        if family in key:
            return SCALES[family]
    raise InputError(f"unknown points scale for {name!r} (expected IMO, USAMO, CMO, Putnam or ProofBench)")


def _solve_item(max_points: float, record: dict[str, Any]) -> SolveItem:
    r = normalized(record)
    contest = text_or_none(pick(r, "contest", "competition"))
    local_id = text_or_none(pick(r, "id"))
    item_id = text_or_none(pick(r, "problem_idx", "problem_id")) or "-".join(x for x in (contest, local_id) if x)
    answer = text_or_none(pick(r, "answer"))
    problem = make_problem(
        id=item_id or f"problem-{record.get('_line')}",
        statement=need(r, "question", "problem", "statement"),
        max_points=max_points,
    )
    meta = {"contest": contest, "answer": answer, "proof_only": answer is None}
    return SolveItem(problem=problem, meta=meta)


def _competition(name: str, stem: str, title: str) -> Suite:
    max_points = scale_of(stem)
    return Suite(
        name=name,
        kind="solve",
        description=f"{title}, {max_points:g} points a problem (DeepSeekMath-V2 inputs)",
        max_points=max_points,
        path=f"dsmv2/inputs/{stem}.json",
        item=lambda record: _solve_item(max_points, record),
    )


IMO2025 = _competition("imo2025", "IMO2025", "IMO 2025")
CMO2024 = _competition("cmo2024", "CMO2024", "China Mathematical Olympiad 2024")
CMO2025 = _competition("cmo2025", "CMO2025", "China Mathematical Olympiad 2025")
PUTNAM2024 = _competition("putnam2024", "Putnam2024", "Putnam 2024")


def read_outputs(folder: Path) -> list[dict[str, Any]]:
    """Every record of ``folder/*.jsonl`` (or one file), tagged with its file stem as ``_file``."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else [folder]
    if not files:
        raise InputError(f"no .jsonl files in {folder}")
    return [dict(record, _file=f.stem) for f in files for record in read_records(f)]


def _human_item(record: dict[str, Any]) -> GradeItem:
    r = normalized(record)
    competition = str(record.get("_file") or pick(r, "competition", "contest") or "")
    prediction = record.get("model_prediction")
    if not isinstance(prediction, dict):
        raise InputError("no 'model_prediction' object")
    p = normalized(prediction)
    problem_id = str(need(r, "problem_idx", "problem_id", "id"))
    problem = make_problem(
        id=problem_id,
        statement=need(r, "question", "problem"),
        reference_solution=text_or_none(pick(r, "solution")),
        grading_guidelines=text_or_none(pick(r, "grading_guidelines")),
        max_points=scale_of(competition),
    )
    meta = {"competition": competition, "model_id": "deepseek-math-v2"}
    for key in ("level", "source", "type"):
        if pick(r, key) is not None:
            meta[key] = pick(r, key)
    recorded = {}
    if pick(p, "average_automatic_rating") is not None:
        recorded["average_automatic_rating"] = number(p["average_automatic_rating"], "average_automatic_rating")
    return GradeItem(
        id=problem_id,
        problem=problem,
        proof=str(need(p, "proof", where="model_prediction")),
        human_points=number(need(p, "human_rating", where="model_prediction"), "human_rating"),
        meta=meta,
        recorded=recorded,
    )


DSMV2_HUMAN = Suite(
    name="dsmv2-human",
    kind="grade",
    description="84 DeepSeekMath-V2 proofs with human points (IMO 2025, CMO 2024, Putnam 2024, ProofBench)",
    max_points=None,
    path="dsmv2/outputs",
    read=read_outputs,
    item=_human_item,
)

SUITES = [IMO2025, CMO2024, CMO2025, PUTNAM2024, DSMV2_HUMAN]
