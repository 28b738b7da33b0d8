"""The records evaluation suites are made of, and the points scales they use (SPEC section 6)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..steps import Step
from ..types import Problem

#: points of a full solution per competition family (SPEC section 6)
SCALES: dict[str, float] = {"imo": 7.0, "usamo": 7.0, "proofbench": 7.0, "putnam": 10.0, "cmo": 21.0}
#: IMO-ProofBench / IMO-GradingBench buckets and their points
BUCKETS: dict[str, float] = {"Correct": 7.0, "Almost": 6.0, "Partial": 1.0, "Incorrect": 0.0}


class SolveItem(BaseModel):
    """A problem of a solving suite (the problem carries its own ``max_points``)."""

    problem: Problem
    answer: str | None = Field(
        None, description="The reference short answer (answer suites): samples are graded by the answer check."
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="competition, year, level, source, answer, ...")


class GradeItem(BaseModel):
    """A proof with a human grade, for measuring a grader against humans."""

    id: str
    problem: Problem
    proof: str
    human_points: float = Field(..., description="The human grade on the problem's points scale.")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="competition, model_id (who wrote the proof), bucket, ..."
    )
    recorded: dict[str, float] = Field(
        default_factory=dict, description="Grades already in the data, in [0, 1] (e.g. average_automatic_rating)."
    )

    @property
    def human_score(self) -> float:
        """The human grade in [0, 1]."""
        return self.human_points / self.problem.max_points

    @property
    def human_correct(self) -> bool:
        """Whether humans judged the proof fully correct (full points)."""
        return self.human_points >= self.problem.max_points


class StepItem(BaseModel):
    """A solution with its first wrong step known, for measuring a step verifier (``eval steps``).

    ProcessBench rows give their ``steps`` and ``label`` (the index of the first wrong step, -1
    when every step is right); ``proof`` is then the steps joined by blank lines and each step's
    offsets point into it. Rows that give a proof and human error annotations instead (the Open
    Proof Corpus) leave ``steps`` and ``label`` None: the run cuts the proof with its step mode,
    and the label is the step where the first annotated error (``error_spans``) begins.
    """

    id: str
    problem: Problem
    proof: str
    steps: list[Step] | None = Field(None, description="The given steps (None: cut by the run's step mode).")
    label: int | None = Field(
        None, ge=-1, description="First wrong step's index, -1 for none (None: from error_spans)."
    )
    error_spans: list[list[int]] = Field(
        default_factory=list, description="[start, end) offsets in the proof of human-annotated errors."
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="generator, subset, competition, model_id, ...")
