"""Evaluate a solving strategy on a suite: k samples per problem, each graded by the verifier.

For every problem the strategy runs ``k`` times; sample ``j > 0`` runs with the seed shifted by
``j`` so that the completion cache does not hand back sample 0 again. Each sample's final proof
is verified ``verify_n`` times (verifications the strategy already made count towards that);
the verifier is the grader. One record per problem is appended to ``RUN/items.jsonl`` through
:func:`proofcritic.runner.run_jsonl`, so a killed run resumes where it stopped.

A record: ``{"id", "kind": "solve", "max_points", "meta", "strategy", "samples": [...], "usage"}``,
each sample ``{"sample", "seed", "proof", "self_score", "verifier_scores", "score_sources",
"unscored", "read_out", "verifier_mean", "passed", "points", "format_failures", "tokens", "calls",
"seconds", "stop_reason", "budget_limited"}``. :func:`summarize_solve_run` turns the records into
the run's metrics.

The verifier mean is over the scored verifications (``unscored`` counts the others; in the
default score mode ``text`` a format failure has no score). A sample with a proof but no scored
verification has no verdict: its ``points`` are None, it scores 0 in every metric and the
summary counts it (``no_verdict``). ``score_sources`` marks each score that came from a read-out
("likelihood", "guided": opt-in score modes); ``read_out`` counts them.

Answer items (:attr:`SolveItem.answer`, the answer suites of :mod:`.answer_suites`) are graded
by the answer check instead of the verifier: the strategy solves the statement followed by
:data:`ANSWER_REQUEST`, each sample's proof gets ``answer`` (extracted), ``answer_rule`` and
``correct`` (:func:`proofcritic.answers.check_answer`), ``passed`` = ``correct`` and ``points``
the problem's maximum or 0; no verification is added (the strategy's own still run). The
record adds ``answer`` (the reference) and ``majority`` (:func:`.answer_suites.majority_answer`
and whether its answer is right), and the summary ``accuracy`` and ``maj@k``
(:data:`ANSWER_METRICS`) and the ``answers`` counts.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..answers import check_answer
from ..io import check_problem
from ..llm import Usage
from ..pipelines import Roles, SolveResult, Strategy
from ..runner import RunStats, run_jsonl
from ..types import Problem
from ._items import SolveItem
from ._run import RunFolder
from .answer_suites import majority_answer
from .metrics import bootstrap_ci, small_sample_note

__all__ = [
    "ANSWER_METRICS",
    "ANSWER_REQUEST",
    "SOLVE_METRICS",
    "answer_problem",
    "eval_solve",
    "mean_or_none",
    "seeded_roles",
    "summarize_solve_run",
]

#: what an answer item's statement is followed by when a strategy solves it
ANSWER_REQUEST = "This problem has a short final answer: end your solution with it, written as \\boxed{...}."

#: nearest point of the score scale, for exact agreement of a self-score with a verifier mean
_SCALE = (0.0, 0.5, 1.0)


def seeded_roles(roles: Roles, sample: int) -> Roles:
    """The roles for sample ``sample``: unchanged for 0, else every role's seed shifted by it."""
    if sample == 0:
        return roles

    def shift(role: Any) -> Any:
        clone = copy.copy(role)
        clone.config = role.config.model_copy(update={"seed": (role.config.seed or 0) + sample})
        return clone

    return Roles(
        generator=shift(roles.generator), verifier=shift(roles.verifier), meta_verifier=shift(roles.meta_verifier)
    )


def _format_failures(result: SolveResult) -> int:
    """Generations and verifications of the transcript that broke the output protocol."""
    count = 0
    for step in result.transcript:
        if step.get("step") in ("generate", "refine") and step.get("format_ok") is False:
            count += 1
        count += sum(1 for error in step.get("format_errors") or [] if error)
    return count


def answer_problem(item: SolveItem) -> Problem:
    """The problem a strategy is given for an answer item: the statement with
    :data:`ANSWER_REQUEST` after it (the item keeps the statement as written)."""
    return item.problem.model_copy(update={"statement": f"{item.problem.statement.rstrip()}\n\n{ANSWER_REQUEST}"})


async def _one_sample(item: SolveItem, roles: Roles, strategy: Strategy, sample: int, verify_n: int) -> dict[str, Any]:
    """Run the strategy once and verify its answer up to ``verify_n`` times; an answer item's
    sample is graded by the answer check instead (no verification is added)."""
    problem = item.problem
    started = time.perf_counter()
    result = await strategy.solve(problem if item.answer is None else answer_problem(item), roles)
    usage = Usage(**result.usage.model_dump())
    verifications = list(result.verifications)
    failures = _format_failures(result)
    check = None if item.answer is None else check_answer(item.answer, result.proof or "")
    if check is None and result.proof is not None and len(verifications) < verify_n:
        extra = await roles.verifier.verify(problem, result.proof, n=verify_n - len(verifications))
        for v in extra:
            usage.add(v.usage)
            failures += not v.format_ok
        verifications += extra
    scores = [v.score for v in verifications]
    valid = [s for s in scores if s is not None]
    # a proof none of whose verifications has a score has no verdict (points None, counted 0)
    mean = sum(valid) / len(valid) if valid else (0.0 if result.proof is None else None)
    generation = result.generation
    graded: dict[str, Any] = {}
    if check is not None:  # an answer item: the answer check is the grade
        graded = {"answer": check.answer, "answer_rule": check.rule, "correct": check.correct}
        graded |= {"passed": check.correct, "points": problem.max_points * check.correct}
    return {
        "sample": sample,
        "seed": roles.generator.config.seed,
        "proof": result.proof,
        "self_score": generation.self_score if generation is not None else None,
        "verifier_scores": scores,
        "score_sources": [v.score_source for v in verifications],  # "likelihood" / "guided": a read-out
        "unscored": len(scores) - len(valid),
        "read_out": sum(v.read_out for v in verifications),
        "verifier_mean": mean,
        "passed": bool(scores) and all(s == 1.0 for s in scores),
        "points": None if mean is None else mean * problem.max_points,
        "format_failures": failures,
        "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
        "calls": usage.calls,
        "cached_calls": usage.cached_calls,
        "seconds": round(time.perf_counter() - started, 3),
        "stop_reason": result.stop_reason,
        "budget_limited": result.budget_limited,
        "rounds": result.rounds,
    } | graded


async def eval_solve(
    items: Sequence[SolveItem],
    run: RunFolder,
    *,
    roles: Roles,
    strategy: Strategy,
    k: int = 1,
    verify_n: int = 1,
    concurrency: int = 4,
    prices: dict[str, dict[str, float]] | None = None,
    model_name: str | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    tournament: str | None = None,
) -> dict[str, Any]:
    """Solve each item ``k`` times with ``strategy``, grade each answer, write and return the summary.

    ``tournament`` ("knockout" or "swiss") also picks one of the k answers by a pairwise
    tournament judged on the verifier's model (:mod:`proofcritic.pipelines.tournament`), seeded
    by self-score: the summary's ``best_tournament`` beside best@k by self-score and by verifier.

    ``concurrency`` problems run at once (their ``k`` samples run one after another, so a
    killed run loses at most the problems in progress). Problems already in ``run`` are skipped.
    ``prices`` ({model: {"prompt": $/1M, "completion": $/1M}}) with ``model_name`` adds a cost.
    """
    if k < 1 or verify_n < 0:
        raise ValueError("k must be at least 1 and verify_n at least 0")
    by_id = {item.problem.id: item for item in items}
    work = [(item.problem.id, index, {"id": item.problem.id}) for index, item in enumerate(items, start=1)]

    async def process(item_id: str, _record: dict) -> dict:
        item = by_id[item_id]
        check_problem(item.problem)  # the input checks of every model command (size, surrogates)
        item, own = with_rubric(item, roles)
        samples = [await _one_sample(item, seeded_roles(own, j), strategy, j, verify_n) for j in range(k)]
        usage = {
            "calls": sum(s["calls"] for s in samples),
            "cached_calls": sum(s["cached_calls"] for s in samples),
            "prompt_tokens": sum(s["tokens"]["prompt"] for s in samples),
            "completion_tokens": sum(s["tokens"]["completion"] for s in samples),
        }
        out = {
            "kind": "solve",
            "max_points": item.problem.max_points,
            "meta": item.meta,
            "strategy": strategy.name,
            "samples": samples,
            "usage": usage,
            "budget_limited": any(s["budget_limited"] for s in samples),
        }
        if item.answer is not None:
            vote = majority_answer([s["answer"] for s in samples])
            vote["correct"] = vote["sample"] is not None and samples[vote["sample"]]["correct"]
            out |= {"answer": item.answer, "majority": vote}
        if tournament is not None:
            out["tournament"] = await _tournament(item, roles, samples, tournament, usage)
        return out

    run.path.mkdir(parents=True, exist_ok=True)
    await run_jsonl(work, run.items_path, process, concurrency=concurrency, on_progress=on_progress)
    wanted = set(by_id)
    records = [r for r in run.records() if r.get("id") in wanted]
    summary = summarize_solve_run(records, prices=prices, model_name=model_name)
    run.write_summary(summary)
    return summary


def with_rubric(item: SolveItem, roles: Roles) -> tuple[SolveItem, Roles]:
    """On the points scale, a suite's human marking scheme (``meta["rubric"]``: USAMO 2025's
    ``grading_scheme.json`` entry) becomes the points verifier's scheme for that item, and the
    guidelines written from it are dropped so the prompt shows it once; otherwise unchanged."""
    rubric = item.meta.get("rubric")
    if not rubric or getattr(roles, "scale", "ternary") != "points":
        return item, roles
    verifier = copy.copy(roles.verifier)
    verifier.scheme = rubric  # type: ignore[attr-defined]  # a PointsVerifier (the points scale)
    problem = item.problem.model_copy(update={"grading_guidelines": None})
    return item.model_copy(update={"problem": problem}), dataclasses.replace(roles, verifier=verifier)


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for no values."""
    return sum(values) / len(values) if len(values) else None


def _nearest(score: float) -> float:
    return min(_SCALE, key=lambda s: abs(s - score))


def _best(samples: list[dict], key: str) -> dict:
    """The sample with the highest ``key`` (missing counts as -1); ties go to the first."""
    return max(samples, key=lambda s: -1.0 if s.get(key) is None else s[key])


def _metric(values: list[float]) -> dict[str, Any]:
    """``{"value", "low", "high", "n"}``: the mean with its 95% percentile bootstrap interval."""
    if not values:
        return {"value": None, "low": None, "high": None, "n": 0}
    ci = bootstrap_ci(mean_or_none, values)
    return {"value": ci["estimate"], "low": ci["low"], "high": ci["high"], "n": len(values)}


async def _tournament(item: SolveItem, roles: Roles, samples: list[dict], kind: str, usage: dict) -> dict[str, Any]:
    """The sample a tournament over the answers picks (seeded by self-score), its matches, and
    its cost added to ``usage``. With fewer than two answers the best (or only) one wins unplayed."""
    from ..pipelines.tournament import run_tournament

    with_proof = [i for i, s in enumerate(samples) if s.get("proof")]
    seeded = sorted(with_proof, key=lambda i: -(samples[i].get("self_score") or 0.0))
    if len(seeded) < 2:
        return {"format": kind, "winner": seeded[0] if seeded else None, "matches": 0}
    outcome = await run_tournament(kind, roles.verifier, item.problem, [samples[i]["proof"] for i in seeded])
    usage["calls"] += outcome.usage.calls
    usage["cached_calls"] += outcome.usage.cached_calls
    usage["prompt_tokens"] += outcome.usage.prompt_tokens
    usage["completion_tokens"] += outcome.usage.completion_tokens
    return {"format": kind, "winner": seeded[outcome.winner], "matches": len(outcome.matches), "points": outcome.points}


#: each solve metric's value on one problem, from its row of the summary's ``problems``; a
#: metric of the run is the mean over problems
SOLVE_METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "score": lambda q: q["points_first"] / q["max_points"],
    "best_self": lambda q: q["points_best_self"] / q["max_points"],
    "best_verifier": lambda q: q["points_best_verifier"] / q["max_points"],
    "pass@1": lambda q: q["passed"] / q["samples"],
    "pass@k": lambda q: float(q["passed"] > 0),
}
#: the metrics of answer items (graded by the answer check), added when every problem has one:
#: accuracy is the share of right samples (over all k), maj@k whether the majority answer is right
ANSWER_METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "accuracy": lambda q: q["correct"] / q["samples"],
    "maj@k": lambda q: float(q["majority_correct"]),
}


def summarize_solve_run(
    records: Sequence[dict], *, prices: dict[str, dict[str, float]] | None = None, model_name: str | None = None
) -> dict[str, Any]:
    """Metrics of a solve run from its records (error records are counted, not scored).

    Scores are fractions of a problem's maximum. ``pass@1`` is the mean over problems of the
    fraction of samples that pass all their verifications; ``pass@k`` counts a problem when any
    sample does. ``best@k (self)`` / ``best@k (verifier)`` score the sample chosen by the
    self-score / the verifier mean. Agreement compares each sample's self-score with its
    verifier mean rounded to the nearest of 0, 0.5, 1.
    """
    scored = [r for r in records if r.get("kind") == "solve" and r.get("samples")]
    errors = [r for r in records if "error" in r]
    problems = []
    pairs: list[tuple[float, float]] = []
    format_failures = no_verdict = verifications = unscored = read_out = answered = answer_samples = 0
    for r in scored:
        samples, top = r["samples"], float(r.get("max_points") or 7.0)
        points = [s["points"] or 0.0 for s in samples]
        chosen_self, chosen_ver = _best(samples, "self_score"), _best(samples, "verifier_mean")
        row = {
            "id": r["id"],
            "max_points": top,
            "points_first": points[0],
            "points_best": max(points),
            "points_best_self": chosen_self["points"] or 0.0,
            "points_best_verifier": chosen_ver["points"] or 0.0,
            "passed": sum(bool(s["passed"]) for s in samples),
            "samples": len(samples),
        }
        if r.get("answer") is not None:  # an answer item: graded by the answer check
            row["correct"] = sum(bool(s.get("correct")) for s in samples)
            row["majority_correct"] = bool((r.get("majority") or {}).get("correct"))
            answered += sum(s.get("answer") is not None for s in samples)
            answer_samples += len(samples)
        picked = (r.get("tournament") or {}).get("winner")
        if r.get("tournament") is not None:
            row["points_best_tournament"] = (samples[picked]["points"] or 0.0) if picked is not None else 0.0
        problems.append(row)
        for s in samples:
            format_failures += s.get("format_failures", 0)
            no_verdict += s.get("proof") is not None and s.get("verifier_mean") is None and "correct" not in s
            verifications += len(s.get("verifier_scores") or [])
            unscored += s.get("unscored", sum(x is None for x in s.get("verifier_scores") or []))
            read_out += s.get("read_out", 0)
            if s.get("self_score") is not None and s.get("verifier_mean") is not None and s.get("proof") is not None:
                pairs.append((float(s["self_score"]), float(s["verifier_mean"])))
    prompt = sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in records)
    completion = sum((r.get("usage") or {}).get("completion_tokens", 0) for r in records)
    seconds = sum(float(r.get("seconds") or 0.0) for r in records)
    n = max(len(records), 1)
    summary: dict[str, Any] = {
        "kind": "solve",
        "items": len(records),
        "scored": len(scored),
        "errors": len(errors),
        "k": max((len(r["samples"]) for r in scored), default=0),
        "metrics": {name: _metric([value(row) for row in problems]) for name, value in SOLVE_METRICS.items()}
        | (
            {"best_tournament": _metric([p["points_best_tournament"] / p["max_points"] for p in problems])}
            if problems and all("points_best_tournament" in p for p in problems)
            else {}
        )
        | (
            {name: _metric([value(row) for row in problems]) for name, value in ANSWER_METRICS.items()}
            if problems and all("correct" in p for p in problems)
            else {}
        ),
        "points": {
            "first": sum(p["points_first"] for p in problems),
            "best": sum(p["points_best"] for p in problems),
            "best_self": sum(p["points_best_self"] for p in problems),
            "best_verifier": sum(p["points_best_verifier"] for p in problems),
            "max": sum(p["max_points"] for p in problems),
        },
        "agreement": {
            "pairs": len(pairs),
            "exact": sum(a == _nearest(b) for a, b in pairs) / len(pairs) if pairs else None,
            "mean_abs_diff": sum(abs(a - b) for a, b in pairs) / len(pairs) if pairs else None,
        },
        **(
            {
                "answers": {
                    "samples": answer_samples,
                    "stated": answered,
                    "correct": sum(p.get("correct", 0) for p in problems),
                    "majority_correct": sum(p.get("majority_correct", False) for p in problems),
                }
            }
            if answer_samples
            else {}
        ),
        "format_failures": format_failures,
        # samples with a proof but no scored verification: no verdict, counted 0 points
        "no_verdict": no_verdict,
        "verifications": verifications,
        "unscored_verifications": unscored,
        "read_out_scores": read_out,
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "total": prompt + completion,
            "per_item": (prompt + completion) / n,
        },
        "seconds": {"total": round(seconds, 3), "per_item": round(seconds / n, 3)},
        "problems": problems,
    }
    small = small_sample_note(len(problems), "problems")
    if small:  # every metric is a mean over problems
        summary["notes"] = [small]
    price = (prices or {}).get(model_name or "")
    if price:
        cost = prompt / 1e6 * price.get("prompt", 0.0) + completion / 1e6 * price.get("completion", 0.0)
        summary["cost"] = {"model": model_name, "total": cost, "per_item": cost / n}
    return summary
