"""DPO preference pairs from refinement traces: a flawed proof and the repair that beat it.

A solve result's ``transcript`` lists its steps in order. Steps that carry a ``proof``
(generate, refine, solve, improve, repair) introduce a proof; a later ``verify`` step (with
``mean``, or ``score``) scores the latest proof. A proof never verified falls back to its
``self_score`` when ``use_self_scores`` is on. Every later proof whose score beats an earlier
proof of the same problem by more than ``min_gain`` makes one pair: chosen = the later proof,
rejected = the earlier one, prompt = the generator's prompt for the problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_PROOF_STEPS = frozenset({"generate", "refine", "solve", "improve", "repair"})


def _statement(record: Mapping[str, Any], problems: Mapping[str, Any] | None) -> tuple[str, Any] | None:
    """(problem id, Problem or statement) for a record, from the record itself or ``problems``."""
    pid = str(record.get("problem_id") or record.get("id") or "problem")
    problem = record.get("problem")
    if problem is None and record.get("statement"):
        problem = record["statement"]
    if problem is None and problems is not None:
        problem = problems.get(pid)
    return (pid, problem) if problem is not None else None


def scored_proofs(transcript: Iterable[Mapping[str, Any]], *, use_self_scores: bool = False) -> list[tuple[str, float]]:
    """The proofs of a transcript, in order, each with its verifier (or self) score; unscored ones left out."""
    proofs: list[dict[str, Any]] = []
    for entry in transcript:
        step = entry.get("step")
        if step in _PROOF_STEPS and str(entry.get("proof") or "").strip():
            if entry.get("usable") is False or entry.get("format_ok") is False:
                proofs.append({"proof": None})  # a format failure: nothing to learn from as either side
                continue
            proofs.append({"proof": entry["proof"].strip(), "self": entry.get("self_score"), "scores": []})
        elif step == "verify" and proofs and proofs[-1]["proof"] is not None:
            score = entry.get("mean", entry.get("score"))
            if isinstance(score, (int, float)):
                proofs[-1]["scores"].append(float(score))
    out: list[tuple[str, float]] = []
    for item in proofs:
        if item["proof"] is None:
            continue
        if item["scores"]:
            out.append((item["proof"], sum(item["scores"]) / len(item["scores"])))
        elif use_self_scores and isinstance(item["self"], (int, float)):
            out.append((item["proof"], float(item["self"])))
    return out


def _prompt(problem: Any, prompts: Any) -> list[dict[str, str]]:
    from ..promptset import PromptSet
    from ..types import Problem

    if not isinstance(problem, Problem):
        problem = Problem(statement=problem) if isinstance(problem, str) else Problem.model_validate(problem)
    messages = (prompts or PromptSet.load()).render("generate", problem=problem)
    return [{"role": m.role, "content": m.content} for m in messages]


def pairs_from_traces(
    records: Iterable[Any],
    problems: Mapping[str, Any] | None = None,
    *,
    min_gain: float = 0.0,
    use_self_scores: bool = False,
    prompts: Any = None,
) -> list[dict[str, Any]]:
    """Preference pairs ``{"prompt", "chosen", "rejected", "problem_id", "chosen_score", "rejected_score"}``.

    ``records``: solve results (``SolveResult`` or their JSON dicts) with a ``transcript``, and
    either a ``problem``/``statement`` or a ``problem_id`` found in ``problems`` (id -> Problem,
    dict or statement). Records without a statement or without two scored proofs give no pair.
    """
    pairs: list[dict[str, Any]] = []
    for given in records:
        record = given.model_dump(mode="json") if hasattr(given, "model_dump") else given
        found = _statement(record, problems)
        if found is None:
            continue
        pid, problem = found
        proofs = scored_proofs(record.get("transcript") or [], use_self_scores=use_self_scores)
        prompt = None
        seen: set[tuple[str, str]] = set()
        for i, (worse, worse_score) in enumerate(proofs):
            for better, better_score in proofs[i + 1 :]:
                if better_score - worse_score > min_gain and better != worse and (better, worse) not in seen:
                    seen.add((better, worse))
                    prompt = prompt or _prompt(problem, prompts)
                    pairs.append(
                        {
                            "prompt": prompt,
                            "chosen": [{"role": "assistant", "content": better}],
                            "rejected": [{"role": "assistant", "content": worse}],
                            "problem_id": pid,
                            "chosen_score": better_score,
                            "rejected_score": worse_score,
                        }
                    )
    return pairs
