"""Auto-labeling by scaled verification (SPEC section 3).

For one proof: run ``n`` verifications. Every verification that carries a score is an
*analysis*; format failures (score ``None``) are not analyses and are only recorded. An analysis
*reports issues* when its score is 0 or 0.5 (a score-1 analysis is never meta-verified, whatever
remarks it lists). Each issue-reporting analysis gets ``m`` meta-verifications, one request with
m samples; the requests of different analyses run concurrently. Each meta score votes:

- it *confirms* the analysis when it is at least ``confirm_at`` (default 1: "V is faithful");
- it *refutes* the analysis when it is at most ``refute_at`` (default 0: "the defects V names
  are all unreasonable");
- otherwise (default: 0.5, "some are unreasonable") and for a meta format failure, it does
  neither.

With strict majorities of ``m`` (the number requested, so that missing meta-verifications
never help): the analysis is **valid** when more than m/2 votes confirm, **refuted** when more
than m/2 votes refute, **undecided** otherwise (an exact half is not a majority).

Unscored verifications (format failures; in the default score mode ``text`` every output
without a written score) neither claim nor confirm anything: the rules see the analyses only, and
the reason says how many verifications were unscored. Scores from a read-out (opt-in score modes)
are analyses like written ones; their ``score_source`` marks them in the evidence.

The rules, first match wins (``rule`` names the one that fired):

1. ``no_analyses``: no verification carries a score -> review queue.
2. ``all_correct``: every analysis scored 1 (no issue claimed) -> label 1.
3. ``confirmed_lowest``: at least ``k`` of the analyses with the lowest score are valid ->
   label = that lowest score.
4. ``all_refuted``: every issue-reporting analysis is refuted (none found a legitimate issue)
   -> label 1.
5. ``not_enough_confirmed``: issues were claimed but not enough confirmed -> review queue.
   This includes the case where the lowest-scored analyses are refuted but some higher one is
   valid: SPEC section 3 only looks at the lowest score, so such a proof goes to a human.

A proof whose budget ran out before it could be labeled goes to review with ``budget_exhausted``.

With ``adaptive=True`` (``label --adaptive``) the same rules run on verifications and
meta-verifications drawn in batches, stopping once the label cannot change
(:func:`proofcritic.pipelines.adaptive.label_adaptively`); the label (status, label, rule) is the
fixed procedure's on the same draws. An analysis whose votes the label did not need has the
verdict ``unsettled``, and the record's ``sampling`` says what was drawn and why it stopped.
``refute_at=0.5`` gives the binary reading (every scored meta vote confirms or refutes).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from copy import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from .._constants import LABEL_PARAMS
from ..budget import Budget, BudgetExceeded, CallPlan
from ..io import (
    JsonlAppender,
    iter_latest,
    latest_offsets,
    merge_jsonl,
    problem_from_record,
    proof_from_record,
    read_index,
    read_record_at,
)
from ..llm import SampleCount, Usage, usage_scope
from ..meta_verifier import MetaVerifier
from ..runner import (
    RETRIED_KINDS,
    JsonlItems,
    RunStats,
    current_item,
    leftover_parts,
    read_items,
    run_jsonl,
)
from ..types import Aggregate, MetaVerification, Problem, Proof, Verification
from ..verifier import Verifier, aggregate, counts_note
from .adaptive import AdaptiveOptions, Sampling
from .scaled import scaled_verify

__all__ = [
    "AnalysisEvidence",
    "LabelConfig",
    "LabelResult",
    "decide",
    "judge",
    "label_counts",
    "label_jsonl",
    "label_proof",
    "majority",
    "reconcile_review",
]

Verdict = Literal["no_issues", "valid", "refuted", "undecided", "unsettled"]
LabelRule = Literal[
    "no_analyses",
    "all_correct",
    "confirmed_lowest",
    "all_refuted",
    "not_enough_confirmed",
    "budget_exhausted",
    "human",  # a reviewer's verdict (``proofcritic review``; pipelines/review.py), never set by the rules
]
Status = Literal["labeled", "review"]


class LabelConfig(AdaptiveOptions):
    """Parameters of auto-labeling. The paper does not publish n, m, k (its search used n=64).

    Defined here once: the service's label request is this model (with the problem fields), and
    co-training's ``label`` parameters are it with other defaults (:meth:`with_defaults`).
    ``adaptive``, ``confidence``, ``batch``: :class:`~proofcritic.pipelines.adaptive.AdaptiveOptions`
    (left out of dumps while ``adaptive`` is off)."""

    model_config = ConfigDict(extra="forbid")

    n: SampleCount = Field(LABEL_PARAMS["n"][0], description=LABEL_PARAMS["n"][1])
    m: SampleCount = Field(LABEL_PARAMS["m"][0], description=LABEL_PARAMS["m"][1])
    k: int = Field(LABEL_PARAMS["k"][0], ge=1, description=LABEL_PARAMS["k"][1])
    confirm_at: float = Field(LABEL_PARAMS["confirm_at"][0], ge=0.0, le=1.0, description=LABEL_PARAMS["confirm_at"][1])
    refute_at: float = Field(LABEL_PARAMS["refute_at"][0], ge=0.0, le=1.0, description=LABEL_PARAMS["refute_at"][1])

    @model_validator(mode="after")
    def _thresholds(self) -> LabelConfig:
        if self.refute_at >= self.confirm_at:
            raise ValueError(
                f"refute_at ({self.refute_at:g}) must be below confirm_at ({self.confirm_at:g}): "
                "a meta score cannot both confirm and refute an analysis"
            )
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be at most n ({self.n}): no proof could have k confirmed analyses")
        return self

    @classmethod
    def with_defaults(cls, **defaults: Any) -> type[LabelConfig]:
        """This model with other defaults (the same fields, bounds, descriptions and checks):
        the base of a config that labels with defaults of its own."""
        fields: dict[str, Any] = {}
        for name, value in defaults.items():
            info = copy(cls.model_fields[name])
            info.default = value
            fields[name] = (cls.model_fields[name].annotation, info)
        return create_model(
            f"{cls.__name__}With{''.join(f'_{k}{v}' for k, v in defaults.items())}", __base__=cls, **fields
        )

    def label_config(self) -> LabelConfig:
        """The labeling parameters alone, as a LabelConfig (from a model built on this one)."""
        return LabelConfig.model_validate(self.model_dump(include=set(LabelConfig.model_fields)))

    def plan(self) -> CallPlan:
        """The model calls labeling one proof makes at most: one verification request of ``n``
        samples, then one meta-verification request of ``m`` samples per analysis that
        reports issues (all ``n`` of them at most). Adaptive: the same samples at most, in one
        request per checkpoint (``batch``, doubling, up to ``n``; meta: ``m // 2 + 1``, then ``m``)."""
        if self.adaptive:
            from .adaptive import checkpoints

            verify_calls = len(checkpoints(self.n, self.batch))
            meta_calls = len(checkpoints(self.m, self.m // 2 + 1))
            return (
                CallPlan()
                .add("verification", verify_calls, self.n)
                .add("meta-verification", self.n * meta_calls, self.n * self.m)
            )
        return CallPlan().add("verification", 1, self.n).add("meta-verification", self.n, self.n * self.m)


class AnalysisEvidence(BaseModel):
    """One analysis (a scored verification), its meta-verifications and what they decided."""

    index: int = Field(..., description="Position among the n verifications.")
    score: float
    reports_issues: bool = Field(..., description="The score is below 1 (0 or 0.5; with points, below full points).")
    meta_scores: list[float | None] = Field(default_factory=list, description="Scores of the meta-verifications.")
    confirmations: int = 0
    refutations: int = 0
    verdict: Verdict = "no_issues"
    verification: Verification
    meta_verifications: list[MetaVerification] = Field(default_factory=list)


class LabelResult(BaseModel):
    """The label of one proof (or why it has none), with all its evidence."""

    problem: Problem
    proof: str
    proof_id: str | None = None
    status: Status
    label: float | None = Field(
        None,
        description="The score in {0, 0.5, 1} (points / max points with a points verifier); None when sent to review.",
    )
    rule: LabelRule
    scale: Literal["ternary", "points"] = Field(
        "ternary", description="The verifier's protocol: ternary scores, or points (`label --scale points`)."
    )
    reason: str = Field("", description="The rule that fired, in words.")
    lowest_score: float | None = None
    valid_lowest: int = Field(0, description="Valid analyses among those with the lowest score.")
    config: LabelConfig
    analyses: list[AnalysisEvidence] = Field(default_factory=list)
    format_failures: list[Verification] = Field(default_factory=list, description="Verifications without a score.")
    aggregate: Aggregate
    budget_limited: bool = False
    usage: Usage = Field(default_factory=Usage)
    sampling: Sampling | None = Field(
        None, description="Adaptive runs: the verifications and meta-verifications drawn, and why sampling stopped."
    )


def majority(scores: Sequence[float | None]) -> float | None:
    """The most frequent score (ties go to the lowest); ``None`` values are left out."""
    counts = Counter(s for s in scores if s is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min(s for s, c in counts.items() if c == top)


def judge(meta_scores: Sequence[float | None], config: LabelConfig) -> tuple[Verdict, int, int]:
    """``(verdict, confirmations, refutations)`` of one issue-reporting analysis."""
    confirmations = sum(1 for s in meta_scores if s is not None and s >= config.confirm_at)
    refutations = sum(1 for s in meta_scores if s is not None and s <= config.refute_at)
    if 2 * confirmations > config.m:
        return "valid", confirmations, refutations
    if 2 * refutations > config.m:
        return "refuted", confirmations, refutations
    return "undecided", confirmations, refutations


def decide(
    analyses: Sequence[AnalysisEvidence], config: LabelConfig
) -> tuple[Status, float | None, LabelRule, str, float | None, int]:
    """Apply the rules: ``(status, label, rule, reason, lowest score, valid lowest)``."""
    if not analyses:
        return "review", None, "no_analyses", "no verification produced a score", None, 0
    lowest = min(a.score for a in analyses)
    if lowest >= 1:
        return "labeled", 1.0, "all_correct", f"all {len(analyses)} analyses scored 1", lowest, 0
    group = [a for a in analyses if a.score == lowest]
    valid = sum(1 for a in group if a.verdict == "valid")
    if valid >= config.k:
        reason = f"{valid} of {len(group)} analyses with the lowest score {lowest:g} are valid (k={config.k})"
        return "labeled", lowest, "confirmed_lowest", reason, lowest, valid
    claims = [a for a in analyses if a.reports_issues]
    if all(a.verdict == "refuted" for a in claims):
        reason = f"all {len(claims)} issue-reporting analyses were refuted by their meta-verifications"
        return "labeled", 1.0, "all_refuted", reason, lowest, valid
    verdicts = Counter(a.verdict for a in claims)
    unsettled = f", {verdicts['unsettled']} unsettled (not needed)" if verdicts["unsettled"] else ""
    reason = (
        f"{valid} of {len(group)} analyses with the lowest score {lowest:g} are valid, k={config.k} needed "
        f"(issue-reporting analyses: {verdicts['valid']} valid, {verdicts['refuted']} refuted, "
        f"{verdicts['undecided']} undecided{unsettled})"
    )
    return "review", None, "not_enough_confirmed", reason, lowest, valid


async def label_proof(
    verifier: Verifier,
    meta_verifier: MetaVerifier,
    problem: Problem,
    proof: Proof | str,
    config: LabelConfig | None = None,
) -> LabelResult:
    """Auto-label one proof (see the module docstring for the rules).

    The result's ``usage`` is what labeling it sent to the model (likelihood read-outs, failed
    requests and retries included; answers from the cache counted apart, without tokens).
    """
    with usage_scope() as usage:
        result = await _label_proof(verifier, meta_verifier, problem, proof, config)
    result.usage = usage
    return result


async def _label_proof(
    verifier: Verifier,
    meta_verifier: MetaVerifier,
    problem: Problem,
    proof: Proof | str,
    config: LabelConfig | None,
) -> LabelResult:
    config = config or LabelConfig()
    proof = proof if isinstance(proof, Proof) else Proof(text=proof)
    if config.adaptive:
        return await _label_adaptive(verifier, meta_verifier, problem, proof, config)
    common: dict[str, Any] = {
        "problem": problem,
        "proof": proof.text,
        "proof_id": proof.id,
        "config": config,
        "scale": verifier.scale,
    }
    try:
        scaled = await scaled_verify(verifier, problem, proof, config.n)
    except BudgetExceeded as error:
        return LabelResult(
            **common,
            status="review",
            rule="budget_exhausted",
            reason=str(error),
            aggregate=aggregate([], problem.max_points),
            budget_limited=True,
        )
    analyses = [
        AnalysisEvidence(index=i, score=v.score, reports_issues=v.score < 1, verification=v)
        for i, v in enumerate(scaled.verifications)
        if v.score is not None
    ]
    claims = [a for a in analyses if a.reports_issues]
    outcomes = await asyncio.gather(
        *(meta_verifier.meta_verify(problem, proof.text, a.verification, n=config.m) for a in claims),
        return_exceptions=True,
    )
    budget_error: BudgetExceeded | None = None
    for analysis, outcome in zip(claims, outcomes):
        if isinstance(outcome, BudgetExceeded):
            budget_error = budget_error or outcome
            metas: list[MetaVerification] = []
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            metas = outcome
        analysis.meta_verifications = metas
        analysis.meta_scores = [mv.score for mv in metas]
        analysis.verdict, analysis.confirmations, analysis.refutations = judge(analysis.meta_scores, config)
    status, label, rule, reason, lowest, valid = decide(analyses, config)
    if budget_error is not None and status == "review":
        rule, reason = "budget_exhausted", f"{budget_error} before every analysis was meta-verified"
    if scaled.format_failures:
        reason += f" ({counts_note(scaled.aggregate)})"
    return LabelResult(
        **common,
        status=status,
        label=label,
        rule=rule,
        reason=reason,
        lowest_score=lowest,
        valid_lowest=valid,
        analyses=analyses,
        format_failures=[scaled.verifications[i] for i in scaled.format_failures],
        aggregate=scaled.aggregate,
        budget_limited=budget_error is not None,
    )


async def _label_adaptive(
    verifier: Verifier, meta_verifier: MetaVerifier, problem: Problem, proof: Proof, config: LabelConfig
) -> LabelResult:
    """:func:`label_proof` with ``config.adaptive``: the same rules on what
    :func:`~proofcritic.pipelines.adaptive.label_adaptively` drew."""
    from .adaptive import label_adaptively

    common: dict[str, Any] = {
        "problem": problem,
        "proof": proof.text,
        "proof_id": proof.id,
        "config": config,
        "scale": verifier.scale,
    }
    try:
        drawn = await label_adaptively(verifier, meta_verifier, problem, proof.text, config)
    except BudgetExceeded as error:
        return LabelResult(
            **common,
            status="review",
            rule="budget_exhausted",
            reason=f"{error} before the verifications settled the label",
            aggregate=aggregate([], problem.max_points),
            budget_limited=True,
        )
    status, label, rule, reason, lowest, valid = decide(drawn.analyses, config)
    if drawn.budget_error is not None and status == "review":
        rule, reason = "budget_exhausted", f"{drawn.budget_error} before the label was settled"
    summary = aggregate(drawn.verifications, problem.max_points)
    if summary.unscored:
        reason += f" ({counts_note(summary)})"
    s = drawn.sampling
    reason += f"; adaptive: {s.drawn} of {s.planned} verifications, {s.meta_drawn} meta-verifications ({s.stopped})"
    return LabelResult(
        **common,
        status=status,
        label=label,
        rule=rule,
        reason=reason,
        lowest_score=lowest,
        valid_lowest=valid,
        analyses=drawn.analyses,
        format_failures=[v for v in drawn.verifications if v.score is None],
        aggregate=summary,
        budget_limited=drawn.budget_error is not None,
        sampling=s,
    )


def reconcile_review(output_path: str | Path, review_path: str | Path, input_path: str | Path) -> None:
    """Make a label run's output and review file agree (after a kill, or after merging the
    parts of ``label --workers``); see :func:`_reconcile`."""
    _reconcile(Path(output_path), Path(review_path), read_items(input_path))


def label_counts(output_path: str | Path) -> Counter[str]:
    """The statuses ("labeled", "review") of a label output's latest records."""
    return Counter(r["status"] for _, r in iter_latest(output_path) if isinstance(r.get("status"), str) and r["status"])


def _reconcile(output_path: Path, review_path: Path, items: JsonlItems) -> None:
    """Make the two files agree after a kill, before a run starts.

    A review item is written to ``review_path`` just before its record goes to ``output_path``
    (with no await in between); a kill between the two writes leaves it in review only, so its
    record is copied to the output (for the ids of ``items``). An output record with status
    "review" missing from the review file (an older or interrupted run) is copied there.
    Streamed: memory holds ids and offsets, never records.
    """
    reviewed, _ = latest_offsets(review_path)
    with JsonlAppender(review_path) as review:
        for item_id, record in iter_latest(output_path):
            if record.get("status") == "review" and item_id not in reviewed:
                review.write(record)
    if not reviewed:
        return
    done = read_index(output_path).latest
    with JsonlAppender(output_path) as output:
        for item_id, _, _ in items:
            if item_id not in reviewed:
                continue
            latest = done.get(item_id)
            if item_id not in done or (latest is not None and latest[0] in RETRIED_KINDS):
                output.write(read_record_at(review_path, reviewed[item_id]))


async def label_jsonl(
    verifier: Verifier,
    meta_verifier: MetaVerifier,
    input_path: str | Path,
    output_path: str | Path,
    review_path: str | Path,
    *,
    config: LabelConfig | None = None,
    max_points: float | None = None,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    concurrency: int = 16,
    on_progress: Callable[[RunStats], None] | None = None,
    items: JsonlItems | None = None,
    worker_of: tuple[Path, Path] | None = None,
) -> RunStats:
    """Auto-label every record of ``input_path`` (the records ``grade`` reads).

    Every item gets one line in ``output_path`` (status "labeled" or "review", or an error
    record); review items are also appended to ``review_path``. Both files resume: a killed
    and rerun batch neither loses nor duplicates an item in either. ``max_calls`` and
    ``max_tokens`` bound each proof's model calls and tokens. ``stats.extra`` counts
    "labeled" and "review" items, those of earlier runs included.

    ``items`` and ``worker_of``: a worker process of ``label --workers`` runs its shard of the
    input (``items``) into parts of the run's output and review files (``output_path``,
    ``review_path``); ``worker_of`` = (the run's output, its review file) says what is done and
    what is in review already. Its counts are of its own items only; the parent makes the files
    agree (:func:`reconcile_review`) after merging the parts.
    """
    config = config or LabelConfig()
    output_path, review_path = Path(output_path), Path(review_path)
    items = items if items is not None else read_items(input_path)  # streamed, never held
    if worker_of is None:
        # a killed --workers run's parts first (review before output, as they are written)
        merge_jsonl(review_path, leftover_parts(review_path))
        merge_jsonl(output_path, leftover_parts(output_path))
        _reconcile(output_path, review_path, items)
        in_review = set(latest_offsets(review_path)[0])
        statuses = {
            k: sys.intern(r["status"])
            for k, r in iter_latest(output_path)
            if isinstance(r.get("status"), str) and r["status"]
        }
        counts = Counter(statuses[item_id] for item_id, _, _ in items if item_id in statuses) if statuses else Counter()
        del statuses
    else:
        in_review = set(latest_offsets(worker_of[1])[0]) | set(latest_offsets(review_path)[0])
        counts = Counter()

    def item_budget(parent: Budget | None) -> Budget | None:
        if max_calls is None and max_tokens is None:
            return parent
        if parent is None:
            return Budget(max_calls=max_calls, max_tokens=max_tokens, name="proof")
        return parent.child(max_calls=max_calls, max_tokens=max_tokens, name="proof")

    def progress(stats: RunStats) -> None:
        stats.extra.update(labeled=counts["labeled"], review=counts["review"])
        if on_progress:
            on_progress(stats)

    with JsonlAppender(review_path) as review:

        async def process(item_id: str, record: dict) -> dict:
            problem = problem_from_record(record, default_id=item_id)
            if max_points is not None:
                problem = problem.model_copy(update={"max_points": max_points})
            proof = proof_from_record(record)
            proof = proof if proof.id is not None else proof.model_copy(update={"id": item_id})
            result = await label_proof(verifier, meta_verifier, problem, proof, config)
            row = result.model_dump(mode="json")
            if result.status == "review" and item_id not in in_review:
                position = current_item()
                assert position is not None  # inside run_jsonl's process
                review.write({"id": item_id, "line": position[1], **row})
                in_review.add(item_id)
            counts[result.status] += 1
            return row  # the runner writes it to the output with no await before

        stats = await run_jsonl(
            items,
            output_path,
            process,
            concurrency=concurrency,
            item_budget=item_budget,
            on_progress=progress,
            done_in=worker_of[0] if worker_of is not None else None,
        )
    stats.extra.update(labeled=counts["labeled"], review=counts["review"])
    return stats
