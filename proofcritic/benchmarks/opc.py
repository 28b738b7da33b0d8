"""Open Proof Corpus (INSAIT): LLM-written competition proofs with a binary human verdict.

The bundled copy is a random sample of 100 rows of the test split
(``opc/opc_test_sample100.jsonl``, 36 correct). A verdict is put on the IMO scale: ``correct``
is 7 points and ``incorrect`` 0, so ``human_correct`` is the verdict, ``human_score`` is 1 or 0,
and points compare with the IMO-style suites. Item ids are ``problem_id/model_id`` (a problem
has proofs by several models); ``meta`` keeps ``problem_id``, competition, year, level and
``model_id`` (who wrote the proof).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ._data import need, normalized, pick
from ._items import SCALES, GradeItem
from ._suite import Suite, make_problem, text_or_none

MAX_POINTS = SCALES["imo"]
_VERDICTS = {
    "correct": True,
    "incorrect": False,
    "true": True,
    "false": False,
    "1": True,
    "0": False,
}


def verdict(value: Any) -> bool:
    """A human verdict (``correct``/``incorrect``, a bool or 0/1) as a bool."""
    key = str(value).strip().lower()
    if key not in _VERDICTS:
        raise InputError(f"unknown human_label {value!r} (expected 'correct' or 'incorrect')")
    return _VERDICTS[key]


def _reference(value: Any) -> str | None:
    if isinstance(value, list):
        texts = [t for t in (text_or_none(v) for v in value) if t]
        return texts[0] if texts else None
    return text_or_none(value)


def _error_spans(annotations: Any) -> list[list[int]]:
    """The ``[start, end)`` offsets in the proof of each human-annotated error
    (``original_text_indices``); malformed entries are skipped."""
    spans = []
    for note in annotations if isinstance(annotations, list) else []:
        where = note.get("original_text_indices") if isinstance(note, dict) else None
        if (
            isinstance(where, list)
            and len(where) == 2
            and all(isinstance(i, int) for i in where)
            and where[0] < where[1]
        ):
            spans.append([where[0], where[1]])
    return spans


def _item(record: dict[str, Any]) -> GradeItem:
    r = normalized(record)
    problem_id = str(need(r, "problem_id"))
    model_id = str(pick(r, "model_id") or "unknown")
    correct = verdict(need(r, "human_label", "label"))
    problem = make_problem(
        id=problem_id,
        statement=need(r, "problem", "statement"),
        reference_solution=_reference(pick(r, "reference_solutions", "reference_solution")),
        max_points=MAX_POINTS,
    )
    meta = {
        "problem_id": problem_id,
        "competition": pick(r, "competition"),
        "year": pick(r, "year"),
        "level": pick(r, "level"),
        "model_id": model_id,
        "human_label": "correct" if correct else "incorrect",
    }
    spans = _error_spans(r.get("human_annotations"))
    if spans:
        meta["error_spans"] = spans
    return GradeItem(
        id=f"{problem_id}/{model_id}",
        problem=problem,
        proof=str(need(r, "proof")),
        human_points=MAX_POINTS if correct else 0.0,
        meta=meta,
    )


OPC = Suite(
    name="opc",
    kind="grade",
    description="Open Proof Corpus: LLM proofs with binary human verdicts (correct = 7, incorrect = 0)",
    max_points=MAX_POINTS,
    path="opc/opc_test_sample100.jsonl",
    item=_item,
)

SUITES = [OPC]
