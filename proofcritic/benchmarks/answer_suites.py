"""Answer suites: problems with a short reference answer, graded by the answer check.

``answerbench``: IMO-AnswerBench v2 (``imobench/answerbench_v2.csv``: ``Problem ID, Problem,
Short Answer, Category, Subcategory, Source``; 400 olympiad problems). ``answers``: any
JSONL/JSON/CSV file (``--file``) with a problem column (``problem`` / ``statement`` /
``question``) and an answer column (``answer`` / ``short_answer`` / ``final_answer`` /
``expected_answer`` / ``gold``); ids from ``id`` / ``problem_id``, else ``<file stem>-<line>``.

Items carry their reference answer (:attr:`SolveItem.answer`); ``eval solve`` grades each
sample by :func:`proofcritic.answers.check_answer` instead of the verifier. A right answer is
worth the problem's one point (``max_points`` 1).

:func:`majority_answer` is maj@k's vote: the samples' extracted answers grouped by equivalence
(:func:`proofcritic.answers.answers_match`, each answer against the first of a group), the
largest group wins, a tie goes to the group whose first answer came first.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from ..answers import answers_match
from ..errors import InputError
from ._data import need, normalized, pick
from ._items import SolveItem
from ._suite import Suite, make_problem, text_or_none

__all__ = ["ANSWERBENCH", "ANSWERS", "ANSWER_COLUMNS", "SUITES", "majority_answer"]

#: the columns an answer file's reference answer is read from, first found wins
ANSWER_COLUMNS = ("short_answer", "answer", "final_answer", "expected_answer", "gold")
#: points of a right answer
ANSWER_POINTS = 1.0
_USED = {"id", "problem_id", "problem", "statement", "question", *ANSWER_COLUMNS}


def _answer_item(stem: str, record: dict[str, Any]) -> SolveItem:
    r = normalized(record)
    answer = text_or_none(pick(r, *ANSWER_COLUMNS))
    if answer is None:
        raise InputError(f"no reference answer (tried the columns {', '.join(ANSWER_COLUMNS)})")
    item_id = text_or_none(pick(r, "problem_id", "id")) or f"{stem}-{record.get('_line', 0)}"
    problem = make_problem(
        id=item_id, statement=str(need(r, "problem", "statement", "question")), max_points=ANSWER_POINTS
    )
    meta = {k: v for k, v in r.items() if k not in _USED and not k.startswith("_") and isinstance(v, (str, int, float))}
    return SolveItem(problem=problem, answer=answer, meta=meta)


def majority_answer(answers: Sequence[str | None]) -> dict[str, Any]:
    """The vote of maj@k over the samples' extracted answers (None: no answer, no vote):
    ``{"answer", "votes", "groups", "sample"}``, ``answer`` None when no sample has one;
    ``groups`` is each group's size in order of appearance and ``sample`` the first sample of the
    winning group (its correctness is the majority's)."""
    groups: list[tuple[str, list[int]]] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        for first, members in groups:
            if answers_match(first, answer):
                members.append(index)
                break
        else:
            groups.append((answer, [index]))
    if not groups:
        return {"answer": None, "votes": 0, "groups": [], "sample": None}
    best = max(groups, key=lambda g: len(g[1]))  # max keeps the first of equal sizes
    return {"answer": best[0], "votes": len(best[1]), "groups": [len(m) for _, m in groups], "sample": best[1][0]}


ANSWERBENCH = Suite(
    name="answerbench",
    kind="solve",
    description="IMO-AnswerBench v2: 400 olympiad problems with short answers, graded by the answer check",
    max_points=ANSWER_POINTS,
    path="imobench/answerbench_v2.csv",
    item=partial(_answer_item, "answerbench"),
)

ANSWERS = Suite(
    name="answers",
    kind="solve",
    description="any JSONL/JSON/CSV file of problems with an answer column (pass the file as source)",
    max_points=ANSWER_POINTS,
    item=partial(_answer_item, "answers"),
)

SUITES = [ANSWERBENCH, ANSWERS]
