"""Measure a grader against human grades: one verdict per proof, then the metrics.

A verdict is a score in [0, 1] (``predicted_score``), on the problem's points scale as
``predicted_points``. Where it comes from (``rule``):

- ``"mean"``, ``"min"``, ``"majority"``: n verifications (one request with n samples), then the
  mean, the lowest, or the most frequent score (ties to the lower) of those with a score;
- ``"label"``: the auto-label rule of SPEC section 3 (:func:`label_proof`, n/m/k from
  ``label_config``); a proof sent to the review queue has no verdict;
- ``from_recorded=FIELD``: ``item.recorded[FIELD]`` (e.g. DeepSeekMath-V2's
  ``average_automatic_rating``, the mean of 64 verifications), no model is called.

A proof none of whose verifications has a score (in the default score mode ``text``: all of
them format failures) has no verdict either, never a default score. Items without a verdict are
recorded and counted (``review``, ``no_verdict``) but left out of every metric (agreement,
correlations, confusion matrices); the metrics say how many were left out (``unscored``).
Each record counts its verifications without a score (``unscored``) and the scores that came
from a read-out (``read_out``, opt-in score modes; each verification keeps its
``score_source``); the summary adds them up.

Predicted "correct" means ``predicted_score == 1``: for the mean rule (and a recorded mean)
that is "all n verifications gave 1"; for min the same; for majority "most gave 1".

Adaptive verification (``adaptive=AdaptiveOptions(adaptive=True, ...)``; ``eval grade
--adaptive``), for the mean and label rules:

- ``"mean"``: each proof's verifications are drawn at the checkpoints of
  :func:`~proofcritic.pipelines.adaptive.settle_mean` until the decisions the record is read for
  are settled: "correct" (the cut 1.0: exact, it ends at the first draw below 1) and, with
  ``buckets="gradingbench"``, the 0/1/6/7 bucket (the cuts halfway between them; with
  probability at least ``confidence`` the fixed run's bucket on the same draws).
  ``predicted_score`` is then the mean of the verifications drawn, and the record's
  ``sampling`` says how many were drawn and why sampling stopped. Whole-point grades are not
  settled early: with Hoeffding's interval at n <= 64 a mean within half a point (1/14 of the
  scale) needs about all the draws, so they would cost the fixed procedure's calls;
- ``"label"``: the labeling rule with ``LabelConfig(adaptive=True)`` (exact).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeGuard, get_args

from ..errors import InputError
from ..grading import grade
from ..io import check_problem, check_text
from ..llm import Usage
from ..pipelines.adaptive import AdaptiveOptions
from ..pipelines.label import LabelConfig, label_proof
from ..runner import RunStats, run_jsonl
from ..types import READ_OUT_SOURCES, Verification
from ._items import GradeItem
from ._run import RunFolder
from .metrics import grader_report

Rule = Literal["mean", "min", "majority", "label"]
RULES: tuple[str, ...] = get_args(Rule)


def is_rule(value: str) -> TypeGuard[Rule]:
    """Whether ``value`` names a rule (one of :data:`RULES`)."""
    return value in RULES


def _compact(verification: Verification) -> dict[str, Any]:
    return {
        "score": verification.score,
        "score_source": verification.score_source,  # "likelihood" / "guided": a read-out
        "format_ok": verification.format_ok,
        "issues": len(verification.issues),
        "issue_spans": [list(issue.span) if issue.span else None for issue in verification.issues],
        "raw": verification.raw,
    }


def mean_cuts(buckets: str | None) -> tuple[float, ...]:
    """The cuts (scores in [0, 1]) between the decisions an adaptive mean rule settles:
    "correct" (1.0) and, with ``buckets="gradingbench"``, the midpoints of 0/1/6/7 points."""
    if buckets == "gradingbench":
        return (0.5 / 7, 3.5 / 7, 6.5 / 7, 1.0)
    return (1.0,)


async def _adaptive_mean_verdict(
    item: GradeItem, n: int, verifier: Any, adaptive: AdaptiveOptions, normalizer: Any, buckets: str | None
) -> dict[str, Any]:
    """The mean rule's verdict from verifications drawn until its decisions are settled."""
    from ..llm import usage_scope
    from ..pipelines.adaptive import settle_mean
    from ..verifier import aggregate

    proof = item.proof
    normalized = error = None
    with usage_scope() as usage:
        if normalizer is not None:  # as grade(): the neutral rewrite is graded (the original if it failed)
            rewrite = await normalizer.rewrite(item.problem, proof)
            normalized, error = (rewrite.proof, None) if rewrite.format_ok else (None, rewrite.format_error)
            proof = normalized if normalized is not None else proof
        draws = await settle_mean(
            verifier,
            item.problem,
            proof,
            n,
            mean_cuts(buckets),
            confidence=adaptive.confidence,
            batch=adaptive.batch,
        )
    score = aggregate(draws.verifications, item.problem.max_points).mean
    out: dict[str, Any] = {
        "predicted_score": score,
        "status": "scored" if score is not None else "no_verdict",
        "verifications": [_compact(v) for v in draws.verifications],
        "sampling": draws.sampling().model_dump(),
        "usage": usage.model_dump(),
    }
    if normalizer is not None:
        out["normalized_proof"] = normalized
        out["normalize_error"] = error
    return out


async def _verdict(
    item: GradeItem,
    rule: str,
    n: int,
    verifier: Any,
    meta_verifier: Any,
    label_config: LabelConfig | None,
    normalizer: Any = None,
    adaptive: AdaptiveOptions | None = None,
    buckets: str | None = None,
) -> dict[str, Any]:
    """The verdict fields of one item's record."""
    if rule == "label":
        config = label_config or LabelConfig(n=n, k=min(LabelConfig().k, n))  # k may not exceed n
        if adaptive is not None and adaptive.adaptive:
            config = config.model_copy(
                update={"adaptive": True, "confidence": adaptive.confidence, "batch": adaptive.batch}
            )
        result = await label_proof(verifier, meta_verifier, item.problem, item.proof, config)
        sampling = {"sampling": result.sampling.model_dump()} if result.sampling is not None else {}
        return {
            **sampling,
            "predicted_score": result.label,
            "status": result.status,
            "label_rule": result.rule,
            "reason": result.reason,
            "verifications": [_compact(a.verification) for a in result.analyses]
            + [_compact(v) for v in result.format_failures],
            "meta_scores": [a.meta_scores for a in result.analyses if a.reports_issues],
            "budget_limited": result.budget_limited,
            "usage": result.usage.model_dump(),
        }
    from ..pipelines.panel import Panel

    if isinstance(verifier, Panel):  # a judge panel grades in place of one verifier
        return _panel_verdict(await verifier.grade(item.problem, item.proof))
    if adaptive is not None and adaptive.adaptive and rule == "mean":
        return await _adaptive_mean_verdict(item, n, verifier, adaptive, normalizer, buckets)
    graded = await grade(verifier, item.problem, item.proof, n=n, normalizer=normalizer)
    score = getattr(graded.aggregate, rule)
    out = {
        "predicted_score": score,
        "status": "scored" if score is not None else "no_verdict",
        "verifications": [_compact(v) for v in graded.verifications],
        "usage": graded.usage.model_dump(),
    }
    if normalizer is not None:
        out["normalized_proof"] = graded.normalized_proof
        out["normalize_error"] = graded.normalize_error
    return out


def _rounded(points: float, max_points: float, buckets: str | None) -> float:
    """``points``, or with ``buckets="gradingbench"`` the nearest of 0/1/6/7 (scaled to ``max_points``)."""
    if buckets is None:
        return points
    if buckets != "gradingbench":
        raise InputError(f"buckets must be 'gradingbench' (0/1/6/7) or none, not {buckets!r}")
    from .metrics import gradingbench_bucket

    return gradingbench_bucket(points, max_points) * max_points / 7


def _panel_verdict(result: Any) -> dict[str, Any]:
    """The verdict fields of a panel grade: the panel's score, every judge's first-round
    verifications (flattened, for sample agreement), and per judge its verdicts and tokens."""
    return {
        "predicted_score": result.score,
        "status": "scored" if result.score is not None else "no_verdict",
        "verifications": [_compact(v) for judge in result.judges for v in judge.verifications],
        "panel": {
            "rule": result.rule,
            "spread": result.spread,
            "reconciled": result.reconciled,
            "final_spread": result.final_spread,
            "judges": [
                {
                    "judge": j.judge,
                    "points": j.points,
                    "final_points": j.final_points,
                    "tokens": j.usage.prompt_tokens + j.usage.completion_tokens,
                    "calls": j.usage.calls,
                }
                for j in result.judges
            ],
        },
        "usage": result.usage.model_dump(),
    }


def panel_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """For runs graded by a judge panel: each judge's agreement with the humans (on the items
    where it has a verdict: MAE in points, quadratic-weighted kappa of whole points, kappa of
    "fully correct", leniency), the agreement between each pair of judges (quadratic-weighted
    kappa of their points), how often the panel reconciled, and each judge's calls and tokens."""
    from .metrics import cohen_kappa, mae, mean_difference, points_grade

    graded = [r for r in records if isinstance(r.get("panel"), dict)]
    if not graded:
        return None
    names: list[str] = []
    for r in graded:
        for j in r["panel"]["judges"]:
            if j["judge"] not in names:
                names.append(j["judge"])

    def verdicts(record: dict[str, Any]) -> dict[str, float]:
        return {j["judge"]: j["final_points"] for j in record["panel"]["judges"] if j["final_points"] is not None}

    judges: dict[str, Any] = {}
    for name in names:
        rows = [(r["human_points"], v[name], r["max_points"]) for r in graded if name in (v := verdicts(r))]
        usage = [j for r in graded for j in r["panel"]["judges"] if j["judge"] == name]
        entry: dict[str, Any] = {
            "n": len(rows),
            "calls": sum(j["calls"] for j in usage),
            "tokens": sum(j["tokens"] for j in usage),
        }
        if rows:
            human, judge, _top = zip(*rows)
            entry |= {
                "mae_points": mae(human, judge),
                "leniency_points": mean_difference(human, judge),
                "qwk_points": cohen_kappa(
                    [points_grade(h, m) for h, _, m in rows],
                    [points_grade(p, m) for _, p, m in rows],
                    labels=range(8),
                    weights="quadratic",
                ),
                "kappa": cohen_kappa([h >= m for h, _, m in rows], [p >= m for _, p, m in rows], labels=[False, True]),
            }
        judges[name] = entry
    between: dict[str, Any] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs = [(v[a], v[b], r["max_points"]) for r in graded if a in (v := verdicts(r)) and b in v]
            between[f"{a} vs {b}"] = {
                "n": len(pairs),
                "qwk_points": cohen_kappa(
                    [points_grade(x, m) for x, _, m in pairs],
                    [points_grade(y, m) for _, y, m in pairs],
                    labels=range(8),
                    weights="quadratic",
                )
                if pairs
                else None,
            }
    return {
        "proofs": len(graded),
        "reconciled": sum(bool(r["panel"]["reconciled"]) for r in graded),
        "judges": judges,
        "between_judges": between,
    }


def check_recorded(items: Sequence[GradeItem], field: str) -> None:
    """An InputError (one line, before anything runs) when no item records the grade ``field``,
    naming the grades the items do record; an item that alone lacks it becomes an error record."""
    if any(field in item.recorded for item in items):
        return
    found = sorted({name for item in items for name in item.recorded})
    have = f"the items record: {', '.join(found)}" if found else "the items record no grades"
    raise InputError(f"no item records a grade {field!r} (--from-recorded); {have}")


async def eval_grade(
    items: Sequence[GradeItem],
    run: RunFolder,
    *,
    verifier: Any = None,
    meta_verifier: Any = None,
    n: int = 1,
    rule: Rule = "mean",
    label_config: LabelConfig | None = None,
    from_recorded: str | None = None,
    concurrency: int = 8,
    on_progress: Callable[[RunStats], None] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    normalizer: Any = None,
    buckets: str | None = None,
    adaptive: AdaptiveOptions | None = None,
) -> dict[str, Any]:
    """Grade every item, append its record to ``run.items_path``, write and return the summary.

    ``adaptive`` (rules mean and label; see the module): draw each proof's verifications in
    batches and stop once its decisions are settled.

    ``buckets="gradingbench"`` rounds each predicted grade to the nearest of the four
    IMO-GradingBench / ProofBench grades 0/1/6/7 (on the problem's scale), as those benchmarks
    score graders.

    With a ``normalizer`` (:class:`~proofcritic.pipelines.normalize.Normalizer`, rules other
    than ``label``) each proof is rewritten in a neutral style first and the rewrite is graded;
    the record keeps it (``normalized_proof``) beside the original (``proof``).

    Items already in ``items.jsonl`` are skipped (a killed run resumes; items that failed on a
    backend error are tried again). ``config.json`` is written only when the run folder has none
    (a caller such as the CLI writes its own first). The summary is :func:`summarize_grade_run`
    of all the records in the folder.
    """
    if buckets not in (None, "gradingbench"):
        raise InputError(f"buckets must be 'gradingbench' (0/1/6/7) or none, not {buckets!r}")
    if from_recorded is None:
        if rule not in RULES:
            raise InputError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
        if verifier is None:
            raise InputError("eval_grade needs a verifier (or from_recorded=FIELD to use recorded grades)")
        if rule == "label" and meta_verifier is None:
            raise InputError("the label rule needs a meta-verifier")
        if n < 1:
            raise InputError(f"n must be at least 1, not {n}")
    if adaptive is not None and adaptive.adaptive:
        from ..pipelines.panel import Panel

        if from_recorded is not None or rule not in ("mean", "label") or isinstance(verifier, Panel):
            raise InputError("adaptive verification takes the mean or label rule of one verifier (no recorded grades)")
    if not items:
        raise InputError("eval_grade: no items to grade")
    if from_recorded is not None:
        check_recorded(items, from_recorded)
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, c in Counter(ids).items() if c > 1)
        raise InputError(f"eval_grade: duplicate item ids {duplicates[:5]}")
    source = f"recorded:{from_recorded}" if from_recorded is not None else rule
    if not run.config_path.exists():
        run.create({"command": "eval grade", "rule": source, "n": n, "items": len(items)})
    by_id = {item.id: item for item in items}
    n_used = label_config.n if rule == "label" and label_config is not None else n

    async def process(item_id: str, record: dict) -> dict:
        item = by_id[item_id]
        if from_recorded is not None:
            if from_recorded not in item.recorded:
                raise InputError(f"item {item_id} has no recorded grade {from_recorded!r}")
            score = float(item.recorded[from_recorded])
            verdict: dict[str, Any] = {"predicted_score": score, "status": "scored", "verifications": [], "usage": {}}
        else:
            check_problem(item.problem)  # the input checks of every model command (size, surrogates)
            check_text(item.proof, "the proof")
            verdict = await _verdict(
                item, rule, n, verifier, meta_verifier, label_config, normalizer, adaptive=adaptive, buckets=buckets
            )
        score = verdict["predicted_score"]
        compact = verdict["verifications"]
        verdict["unscored"] = sum(v["score"] is None for v in compact)
        verdict["read_out"] = sum(v["score"] is not None and v["score_source"] in READ_OUT_SOURCES for v in compact)
        return {
            "kind": "grade",
            "problem_id": item.problem.id,
            "proof": item.proof,
            "max_points": item.problem.max_points,
            "human_points": item.human_points,
            "predicted_points": None
            if score is None
            else _rounded(score * item.problem.max_points, item.problem.max_points, buckets),
            "meta": item.meta,
            "rule": source,
            "n": 0 if from_recorded is not None else n_used,
            **verdict,
        }

    work = [(item.id, index + 1, {"id": item.id}) for index, item in enumerate(items)]
    await run_jsonl(work, run.items_path, process, concurrency=concurrency, on_progress=on_progress)
    wanted = set(ids)
    summary = summarize_grade_run(
        [r for r in run.records() if r.get("id") in wanted], n_resamples=n_resamples, seed=seed
    )
    run.write_summary(summary)
    return summary


def grade_row(record: dict[str, Any]) -> dict[str, Any]:
    """The metrics row of a grade record (the input of :func:`~.metrics.grader_report`)."""
    score = record.get("predicted_score")
    return {
        "human_points": record["human_points"],
        "predicted_points": record.get("predicted_points"),
        "max_points": record["max_points"],
        "human_correct": record["human_points"] >= record["max_points"],
        "predicted_correct": score is not None and score >= 1,
        "sample_scores": [v["score"] for v in record.get("verifications") or [] if v.get("score") is not None],
        "error_spans": (record.get("meta") or {}).get("error_spans") or [],
        "issue_spans": [span for v in record.get("verifications") or [] for span in v.get("issue_spans") or []],
        "meta": record.get("meta") or {},
    }


def summarize_grade_run(records: Sequence[dict[str, Any]], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The summary of a grade run, rebuilt from its item records alone.

    ``{"kind", "rules", "counts", "metrics", "usage", "seconds"}``; ``metrics`` is
    :func:`~proofcritic.benchmarks.metrics.grader_report` of the items with a verdict (intervals
    and breakdowns by competition and model_id), or None when no item has one.
    """
    grade_records = [r for r in records if r.get("kind") == "grade" and "error" not in r]
    errors = [r for r in records if "error" in r]
    rows = [grade_row(r) for r in grade_records]
    statuses = Counter(r.get("status", "scored") for r in grade_records)
    usage = Usage()
    for r in grade_records:
        if r.get("usage"):
            usage.add(Usage(**r["usage"]))
    scored = [row for row in rows if row["predicted_points"] is not None]
    panel = panel_summary(grade_records)
    return {
        "kind": "grade",
        "rules": sorted({str(r.get("rule")) for r in grade_records}),
        "counts": {
            "items": len(records),
            "graded": len(grade_records),
            "scored": len(scored),
            "review": statuses.get("review", 0),
            "no_verdict": statuses.get("no_verdict", 0),
            "errors": len(errors),
            "error_kinds": dict(Counter(r.get("error_kind") for r in errors)),
            "budget_limited": sum(bool(r.get("budget_limited")) for r in grade_records),
            "verifications": sum(len(r.get("verifications") or []) for r in grade_records),
            "unscored_verifications": sum(int(r.get("unscored") or 0) for r in grade_records),
            "read_out_scores": sum(int(r.get("read_out") or 0) for r in grade_records),
        },
        "metrics": grader_report(rows, n_resamples=n_resamples, seed=seed) if scored else None,
        **({"panel": panel} if panel is not None else {}),  # (a judge panel's runs only)
        "usage": {**usage.model_dump(), "total_tokens": usage.total_tokens},
        "seconds": round(sum(float(r.get("seconds") or 0) for r in grade_records), 3),
    }
