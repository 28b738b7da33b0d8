"""Human review of a run: its items as one shape, reviewers' decisions, and their export as labels.

A *run* is one of:

- a label run (``label --output``) or a review queue (``label --review``): label records with
  their evidence (analyses, meta-verifications, the rule that fired);
- a grade run (``grade --input X --output Y``): its records hold the verifications but not the
  texts, so the batch input (``X``) is read beside it for the problems and proofs;
- an eval grade run folder (``eval grade --run DIR``: ``DIR/items.jsonl``): the proofs, the human
  points and each verification's score, raw text and issue spans; the problem statements stay in
  the suite, which the ``review`` command reads again (:func:`fill_problems`) when it can.

Every record becomes a :class:`ReviewItem` (the page's rows and item pages). A reviewer's
:class:`Decision` (a label, or points on the points scale, with a comment, who and when) is
appended at once to the decisions file beside the run (:func:`decisions_path`), one JSON line
each: the latest line of an item wins, so a later decision replaces an earlier one and nothing is
ever rewritten. :func:`export_labels` writes label records that
:func:`proofcritic.training.datasets.examples_from_labels` and ``meta_examples_from_labels`` read
as they read auto-labels: a reviewed item is ``status: labeled`` with the human label, ``rule:
human``, the decision under ``review`` and the automatic outcome under ``auto``; an unreviewed
item of a label run is its auto-label record unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..errors import InputError
from ..io import JsonlAppender, iter_jsonl, iter_latest

__all__ = [
    "Decision",
    "IssueMark",
    "ReviewItem",
    "ReviewRun",
    "ReviewStore",
    "VerificationView",
    "decisions_path",
    "export_labels",
    "fill_problems",
    "load_run",
]

RunKind = Literal["label", "grade", "eval"]

#: the ternary labels a reviewer may give
LABELS: tuple[float, ...] = (0.0, 0.5, 1.0)


class Decision(BaseModel):
    """One reviewer's verdict on one item (a line of the decisions file)."""

    id: str = Field(..., description="The item's id in the run.")
    label: float | None = Field(None, description="The label: 0, 0.5 or 1 (points / max points on the points scale).")
    points: float | None = Field(None, description="Points on the problem's scale (required on the points scale).")
    comment: str = ""
    reviewer: str = Field(..., min_length=1)
    time: str = Field("", description="When it was recorded (UTC, ISO 8601).")

    @model_validator(mode="after")
    def _some_verdict(self) -> Decision:
        if self.label is None and self.points is None:
            raise ValueError("a decision needs a label (0, 0.5, 1) or points")
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"label {self.label:g} is not 0, 0.5 or 1")
        if self.points is not None and not (math.isfinite(self.points) and self.points >= 0):
            raise ValueError("points must be a number of at least 0")
        return self


@dataclass
class IssueMark:
    """One reported issue, where it stands in the proof when it was located."""

    key: str  # "v{verification}-i{issue}": the anchor of its mark in the proof
    severity: str
    location: str
    description: str
    span: tuple[int, int] | None


@dataclass
class VerificationView:
    """One verification as the page shows it, with its meta-verifications (label runs)."""

    index: int
    score: float | None
    points: float | None
    analysis: str
    format_ok: bool
    score_source: str | None
    issues: list[IssueMark]
    verdict: str | None = None  # label runs: no_issues, valid, refuted, undecided, unsettled
    confirmations: int = 0
    refutations: int = 0
    metas: list[dict[str, Any]] = field(default_factory=list)  # score, analysis


@dataclass
class ReviewItem:
    """One record of a run, in the one shape the page and the export use."""

    id: str
    kind: RunKind
    status: str  # labeled / review (label runs), verdict / no_verdict (grade), scored / no_verdict (eval), error
    rule: str | None
    problem: dict[str, Any]  # id, statement (may be empty), reference_solution, grading_guidelines, max_points
    proof: str
    scale: str
    auto_label: float | None
    reason: str
    verifications: list[VerificationView]
    human_points: float | None  # eval runs: the data set's human grade
    record: dict[str, Any]

    @property
    def scores(self) -> list[float]:
        return [v.score for v in self.verifications if v.score is not None]

    @property
    def disagreement(self) -> bool:
        """The scored verifications do not all give the same score."""
        return len(set(self.scores)) > 1


@dataclass
class ReviewRun:
    """A run's items (in file order) and where its decisions are kept."""

    path: Path
    kind: RunKind
    items: list[ReviewItem]
    decisions_file: Path

    def item(self, item_id: str) -> ReviewItem | None:
        return next((i for i in self.items if i.id == item_id), None)


def decisions_path(run: str | Path) -> Path:
    """Where the decisions of a run are kept: ``RUN.reviews.jsonl`` beside a file,
    ``RUN/reviews.jsonl`` in a run folder."""
    run = Path(run)
    if run.is_dir():
        return run / "reviews.jsonl"
    return run.with_name(run.name.removesuffix(".jsonl") + ".reviews.jsonl")


def _issues(index: int, verification: dict[str, Any]) -> list[IssueMark]:
    out = []
    issues = verification.get("issues")
    if isinstance(issues, list):
        for j, issue in enumerate(issues):
            span = issue.get("span")
            out.append(
                IssueMark(
                    key=f"v{index}-i{j}",
                    severity=str(issue.get("severity") or "unspecified"),
                    location=str(issue.get("location") or ""),
                    description=str(issue.get("description") or ""),
                    span=(int(span[0]), int(span[1])) if isinstance(span, list) and len(span) == 2 else None,
                )
            )
    else:  # eval runs keep the count and the spans only
        for j, span in enumerate(verification.get("issue_spans") or []):
            out.append(IssueMark(f"v{index}-i{j}", "issue", "", "", (int(span[0]), int(span[1]))))
    return out


def _view(index: int, verification: dict[str, Any]) -> VerificationView:
    return VerificationView(
        index=index,
        score=verification.get("score"),
        points=verification.get("points"),
        analysis=str(verification.get("analysis") or verification.get("raw") or ""),
        format_ok=bool(verification.get("format_ok", verification.get("score") is not None)),
        score_source=verification.get("score_source"),
        issues=_issues(index, verification),
    )


def _problem(value: Any, fallback_id: str, max_points: Any = None) -> dict[str, Any]:
    problem: dict[str, Any] = (
        dict(value) if isinstance(value, dict) else {"statement": value if isinstance(value, str) else ""}
    )
    problem.setdefault("id", fallback_id)
    problem.setdefault("statement", "")
    if max_points is not None:
        problem["max_points"] = max_points
    problem.setdefault("max_points", 7.0)
    return problem


def _label_item(record: dict[str, Any]) -> ReviewItem:
    views: list[VerificationView] = []
    for analysis in record.get("analyses") or []:
        view = _view(int(analysis.get("index", len(views))), analysis.get("verification") or {})
        view.verdict = analysis.get("verdict")
        view.confirmations = int(analysis.get("confirmations") or 0)
        view.refutations = int(analysis.get("refutations") or 0)
        view.metas = [
            {"score": m.get("score"), "analysis": str(m.get("analysis") or m.get("raw") or "")}
            for m in analysis.get("meta_verifications") or []
        ]
        views.append(view)
    taken = {v.index for v in views}
    for n, failure in enumerate(record.get("format_failures") or []):
        index = n
        while index in taken:
            index += 1
        taken.add(index)
        views.append(_view(index, failure))
    views.sort(key=lambda v: v.index)
    return ReviewItem(
        id=str(record["id"]),
        kind="label",
        status=str(record.get("status") or "review"),
        rule=record.get("rule"),
        problem=_problem(record.get("problem"), str(record["id"])),
        proof=str(record.get("proof") or ""),
        scale=str(record.get("scale") or "ternary"),
        auto_label=record.get("label"),
        reason=str(record.get("reason") or ""),
        verifications=views,
        human_points=None,
        record=record,
    )


def _grade_item(record: dict[str, Any], source: dict[str, Any] | None) -> ReviewItem:
    source = source or {}
    problem_value = source.get("problem", source.get("statement"))
    problem = _problem(problem_value, str(record.get("problem_id") or record["id"]))
    for name in ("reference_solution", "grading_guidelines", "max_points"):
        if source.get(name) is not None:
            problem[name] = source[name]
    aggregate = record.get("aggregate") or {}
    views = [_view(i, v) for i, v in enumerate(record.get("verifications") or [])]
    has_verdict = aggregate.get("mean") is not None
    scale = "points" if any(v.points is not None for v in views) else "ternary"
    return ReviewItem(
        id=str(record["id"]),
        kind="grade",
        status="verdict" if has_verdict else "no_verdict",
        rule=None,
        problem=problem,
        proof=str(source.get("proof") or ""),
        scale=scale,
        auto_label=aggregate.get("mean"),
        reason=f"mean {aggregate['mean']:.3g} over {aggregate.get('valid', 0)} scored verification(s)"
        if has_verdict
        else "no verification wrote a score",
        verifications=views,
        human_points=None,
        record=record,
    )


def _eval_item(record: dict[str, Any]) -> ReviewItem:
    views = [_view(i, v) for i, v in enumerate(record.get("verifications") or [])]
    problem = _problem({"id": record.get("problem_id") or record["id"]}, str(record["id"]), record.get("max_points"))
    predicted = record.get("predicted_points")
    human = record.get("human_points")
    return ReviewItem(
        id=str(record["id"]),
        kind="eval",
        status=str(record.get("status") or "scored"),
        rule=record.get("rule"),
        problem=problem,
        proof=str(record.get("proof") or ""),
        scale="ternary",
        auto_label=record.get("predicted_score"),
        reason=f"predicted {predicted:g} / {problem['max_points']:g} points by the {record.get('rule')} rule"
        if predicted is not None
        else "no verdict",
        verifications=views,
        human_points=human,
        record=record,
    )


def _error_item(record: dict[str, Any], kind: RunKind) -> ReviewItem:
    return ReviewItem(
        id=str(record["id"]),
        kind=kind,
        status="error",
        rule=str(record.get("error_kind") or "error"),
        problem=_problem(record.get("problem"), str(record["id"])),
        proof=str(record.get("proof") or ""),
        scale="ternary",
        auto_label=None,
        reason=str(record.get("error") or ""),
        verifications=[],
        human_points=None,
        record=record,
    )


def _read_sources(path: Path) -> dict[str, dict[str, Any]]:
    """The batch input of a grade run, by item id (``id``, else ``line-N`` as the runner names it)."""
    out: dict[str, dict[str, Any]] = {}
    for line, record in iter_jsonl(path):
        if isinstance(record, InputError):
            continue
        out[str(record.get("id", f"line-{line}"))] = record
    return out


def load_run(path: str | Path, inputs: str | Path | None = None, decisions: str | Path | None = None) -> ReviewRun:
    """Read a run (see the module docstring) into :class:`ReviewItem` s: the latest record of each
    id, in file order. ``inputs`` is a grade run's batch input (needed for its problems and proofs);
    ``decisions`` the decisions file (default :func:`decisions_path`)."""
    path = Path(path)
    if path.is_dir():
        records_path, kind = path / "items.jsonl", "eval"
        if not records_path.exists():
            raise InputError(f"{path} is a folder without items.jsonl: not an eval run folder")
    elif path.exists():
        records_path, kind = path, ""
    else:
        raise InputError(f"run not found: {path}")
    records = [record for _, record in iter_latest(records_path)]
    if not records:
        raise InputError(f"{records_path} holds no record")
    if not kind:
        if any("analyses" in r or r.get("status") in ("labeled", "review") for r in records):
            kind = "label"
        elif any("verifications" in r and "kind" not in r for r in records):
            kind = "grade"
        elif any(r.get("kind") == "grade" for r in records):
            kind = "eval"
        else:
            raise InputError(
                f"{records_path}: neither label records (analyses), grade records (verifications) nor eval grade items"
            )
    sources: dict[str, dict[str, Any]] = {}
    if kind == "grade":
        if inputs is None:
            raise InputError(
                f"{records_path} is a grade run: its records hold no problem or proof; give the batch input it "
                "graded with --input"
            )
        sources = _read_sources(Path(inputs))
    items = []
    for record in records:
        if "error" in record and "verifications" not in record and "analyses" not in record:
            items.append(_error_item(record, kind))  # type: ignore[arg-type]
        elif kind == "label":
            items.append(_label_item(record))
        elif kind == "grade":
            items.append(_grade_item(record, sources.get(str(record["id"]))))
        else:
            items.append(_eval_item(record))
    return ReviewRun(path, kind, items, Path(decisions) if decisions is not None else decisions_path(path))  # type: ignore[arg-type]


def fill_problems(run: ReviewRun, problems: Mapping[str, Mapping[str, Any]]) -> int:
    """Give the items without a problem statement (an eval run's) their problem from
    ``problems`` (item id -> a problem dict, e.g. from the suite the run graded); returns how
    many items got one."""
    filled = 0
    for item in run.items:
        problem = problems.get(item.id)
        if problem is not None and not item.problem.get("statement") and problem.get("statement"):
            item.problem = {**item.problem, **{k: v for k, v in problem.items() if v is not None}}
            filled += 1
    return filled


class ReviewStore:
    """The decisions of one run: an append-only JSONL file, each decision written (and flushed)
    when it is recorded; the latest line of an item is its decision."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.decisions: dict[str, Decision] = {}
        self.lines = 0
        if self.path.exists():
            for _, record in iter_jsonl(self.path):
                if isinstance(record, InputError):
                    continue  # a partial last line of a killed writer: the appender cuts it off
                self.decisions[str(record["id"])] = Decision.model_validate(record)
                self.lines += 1

    def record(self, decision: Decision) -> Decision:
        """Append ``decision`` (its ``time`` set now when empty) and make it the item's."""
        if not decision.time:
            decision = decision.model_copy(update={"time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        with JsonlAppender(self.path) as out:
            out.write(decision.model_dump(mode="json"))
        self.decisions[decision.id] = decision
        self.lines += 1
        return decision

    def get(self, item_id: str) -> Decision | None:
        return self.decisions.get(item_id)


def human_label(decision: Decision, item: ReviewItem) -> float | None:
    """The label a decision gives: its label, else (points scale) points / max points."""
    if decision.label is not None:
        return decision.label
    if item.scale == "points" and decision.points is not None:
        max_points = float(item.problem.get("max_points") or 7.0)
        return min(decision.points, max_points) / max_points
    return None


def _analyses(item: ReviewItem) -> list[dict[str, Any]]:
    """A grade or eval item's verifications as label evidence (never meta-verified)."""
    out = []
    for view, verification in zip(item.verifications, item.record.get("verifications") or []):
        if view.score is None:
            continue
        out.append(
            {
                "index": view.index,
                "score": view.score,
                "reports_issues": view.score < 1,
                "meta_scores": [],
                "confirmations": 0,
                "refutations": 0,
                "verdict": "no_issues" if view.score >= 1 else "undecided",
                "verification": verification,
                "meta_verifications": [],
            }
        )
    return out


def reviewed_record(item: ReviewItem, decision: Decision) -> dict[str, Any] | None:
    """The label record of a reviewed item (None when it cannot be one: no label, no statement)."""
    label = human_label(decision, item)
    if label is None or not item.problem.get("statement"):
        return None
    base: dict[str, Any] = (
        dict(item.record) if item.kind == "label" else {"id": item.id, "problem": item.problem, "proof": item.proof}
    )
    if item.kind != "label":
        base["analyses"] = _analyses(item)
    comment = f": {decision.comment}" if decision.comment else ""
    base.update(
        status="labeled",
        label=label,
        rule="human",
        scale=item.scale,
        reason=f"human review by {decision.reviewer} at {decision.time}{comment}",
        review=decision.model_dump(mode="json"),
        auto={"status": item.status, "label": item.auto_label, "rule": item.rule, "reason": item.reason},
    )
    return base


def export_records(run: ReviewRun, store: ReviewStore) -> Iterator[dict[str, Any]]:
    """The label records of :func:`export_labels`, in the run's order."""
    for item in run.items:
        decision = store.get(item.id)
        if decision is not None:
            record = reviewed_record(item, decision)
            if record is not None:
                yield record
                continue
        if item.kind == "label" and item.status != "error":
            yield item.record


def export_labels(run: ReviewRun, store: ReviewStore, out: str | Path) -> dict[str, int]:
    """Write the run's labels to ``out`` (JSONL, label records; see the module docstring) and
    return the counts: ``records`` written, ``human`` (reviewed items exported with the human
    label), ``auto`` (auto-label records kept), ``left_out`` (reviewed items that could not be
    exported: no usable label, or a run without the problem statement)."""
    counts = {"records": 0, "human": 0, "auto": 0, "left_out": 0}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for record in export_records(run, store):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts["records"] += 1
            counts["human" if record.get("rule") == "human" else "auto"] += 1
    counts["left_out"] = sum(1 for i in run.items if store.get(i.id) is not None) - counts["human"]
    return counts


def facets(items: Iterable[ReviewItem], store: ReviewStore) -> dict[str, dict[str, int]]:
    """Counts for the filters: status, rule, disagreement (yes/no), human grade (yes/no)."""
    out: dict[str, dict[str, int]] = {"status": {}, "rule": {}, "disagree": {}, "human": {}}
    for item in items:
        for name, value in (
            ("status", item.status),
            ("rule", item.rule or "none"),
            ("disagree", "yes" if item.disagreement else "no"),
            ("human", "yes" if store.get(item.id) is not None else "no"),
        ):
            out[name][value] = out[name].get(value, 0) + 1
    return out


def matches(item: ReviewItem, store: ReviewStore, filters: dict[str, str]) -> bool:
    """Whether ``item`` passes the filters (``status``, ``rule``, ``disagree``, ``human``; empty: any)."""
    wanted = {k: v for k, v in filters.items() if v}
    if "status" in wanted and item.status != wanted["status"]:
        return False
    if "rule" in wanted and (item.rule or "none") != wanted["rule"]:
        return False
    if "disagree" in wanted and ("yes" if item.disagreement else "no") != wanted["disagree"]:
        return False
    return not ("human" in wanted and ("yes" if store.get(item.id) is not None else "no") != wanted["human"])
