"""Measure a step verifier (``eval steps``, issue #18): where does it say a solution first goes wrong?

Each item is verified ``n`` times by the :class:`~proofcritic.verifier.StepVerifier` (one request
of n samples) on its steps (ProcessBench's given steps, or the proof cut by the run's step mode).
The prediction is the first wrong step of the valid samples (their most frequent answer, -1 for
"no step is wrong"; a tie goes to the earliest step); an item none of whose samples follows the
protocol has no prediction (``status: no_verdict``).

Metrics, as ProcessBench scores them: the accuracy on the erroneous items (prediction equal to
the label), the accuracy on the correct ones (prediction -1), and their harmonic mean, ``f1``.
An item without a prediction counts as wrong in both (ProcessBench counts an unreadable answer
so), and the summary says how many there were. Against the first error a human marked (and on
any erroneous item), the prediction is ``same`` step, ``before`` it, ``after`` it, or ``missed``
(no wrong step predicted); ``no_verdict`` apart. On correct items a predicted error is a
``false_alarm``.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from ..io import check_problem, check_text
from ..llm import Usage
from ..runner import RunStats, run_jsonl
from ..steps import Step
from ..types import StepVerification
from ._items import StepItem
from ._run import RunFolder
from .processbench import first_error_step

RELATIONS = ("same", "before", "after", "missed", "no_verdict")


def predicted_step(verifications: Sequence[StepVerification]) -> int | None:
    """The first wrong step the valid samples give most often (-1: none); ties to the earliest
    step (-1 last); None when no sample is valid."""
    answers = [-1 if v.first_error is None else v.first_error for v in verifications if v.format_ok]
    if not answers:
        return None
    counts = Counter(answers)
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    wrong = [a for a in tied if a >= 0]
    return min(wrong) if wrong else -1


def relation(predicted: int | None, label: int) -> str:
    """Where the prediction stands against the label: same / before / after / missed /
    no_verdict (erroneous items), correct / false_alarm / no_verdict (label -1)."""
    if predicted is None:
        return "no_verdict"
    if label < 0:
        return "correct" if predicted < 0 else "false_alarm"
    if predicted < 0:
        return "missed"
    return "same" if predicted == label else "before" if predicted < label else "after"


def _compact(verification: StepVerification) -> dict[str, Any]:
    return {
        "score": verification.score,
        "format_ok": verification.format_ok,
        "format_error": verification.format_error,
        "first_error": verification.first_error,
        "verdicts": [v.verdict for v in verification.verdicts],
        "reasons": [v.reason for v in verification.verdicts],
        "raw": verification.raw,
    }


def resolve(item: StepItem, split: Callable[[str], list[Step]]) -> tuple[list[Step], int]:
    """The item's steps and label: as given, or ``split``'s steps of its proof and the step of
    its first annotated error."""
    if item.steps is not None and item.label is not None:
        return item.steps, item.label
    steps = split(item.proof)
    return steps, first_error_step(item.error_spans, steps)


async def eval_steps(
    items: Sequence[StepItem],
    run: RunFolder,
    *,
    verifier: Any,
    n: int = 1,
    concurrency: int = 8,
    on_progress: Callable[[RunStats], None] | None = None,
) -> dict[str, Any]:
    """Verify every item's steps, append its record to ``run.items_path`` (resumable, as every
    eval run), write and return the summary (:func:`summarize_steps_run` of the folder's records)."""
    if not items:
        raise InputError("eval_steps: no items")
    if n < 1:
        raise InputError(f"n must be at least 1, not {n}")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"eval_steps: duplicate item ids {sorted(i for i, c in Counter(ids).items() if c > 1)[:5]}")
    if not run.config_path.exists():
        run.create({"command": "eval steps", "n": n, "items": len(items)})
    by_id = {item.id: item for item in items}

    async def process(item_id: str, record: dict) -> dict:
        item = by_id[item_id]
        check_problem(item.problem)
        check_text(item.proof, "the proof")
        steps, label = resolve(item, verifier.split)
        if not steps:
            raise InputError("the proof has no steps")
        verifications = await verifier.verify(item.problem, item.proof, n=n, steps=steps)
        predicted = predicted_step(verifications)
        usage = Usage()
        for v in verifications:
            usage.add(v.usage)
        return {
            "kind": "steps",
            "problem_id": item.problem.id,
            "proof": item.proof,
            "steps": [[s.start, s.end] for s in steps],
            "step_count": len(steps),
            "label": label,
            "predicted": predicted,
            "relation": relation(predicted, label),
            "distance": predicted - label if predicted is not None and predicted >= 0 and label >= 0 else None,
            "status": "scored" if predicted is not None else "no_verdict",
            "n": n,
            "verifications": [_compact(v) for v in verifications],
            "unscored": sum(not v.format_ok for v in verifications),
            "meta": item.meta,
            "usage": usage.model_dump(),
        }

    work = [(item.id, index + 1, {"id": item.id}) for index, item in enumerate(items)]
    await run_jsonl(work, run.items_path, process, concurrency=concurrency, on_progress=on_progress)
    wanted = set(ids)
    summary = summarize_steps_run([r for r in run.records() if r.get("id") in wanted])
    run.write_summary(summary)
    return summary


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarize_steps_run(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a steps run, rebuilt from its item records alone: ProcessBench's two
    accuracies and F1, the relation of the predicted first wrong step to the label, counts."""
    done = [r for r in records if r.get("kind") == "steps" and "error" not in r]
    errors = [r for r in records if "error" in r]
    erroneous = [r for r in done if r["label"] >= 0]
    correct = [r for r in done if r["label"] < 0]
    acc_error = _share(sum(r["relation"] == "same" for r in erroneous), len(erroneous))
    acc_correct = _share(sum(r["relation"] == "correct" for r in correct), len(correct))
    f1 = (
        None
        if acc_error is None or acc_correct is None
        else 0.0
        if acc_error + acc_correct == 0
        else 2 * acc_error * acc_correct / (acc_error + acc_correct)
    )
    relations = Counter(r["relation"] for r in erroneous)
    distances = [r["distance"] for r in erroneous if r.get("distance") is not None]
    usage = Usage()
    for r in done:
        if r.get("usage"):
            usage.add(Usage(**r["usage"]))
    notes = []
    if not correct:
        notes.append("no item without an error: accuracy on correct items and F1 are undefined")
    if not erroneous:
        notes.append("no item with an error: accuracy on erroneous items and F1 are undefined")
    no_verdict = sum(r["status"] == "no_verdict" for r in done)
    if no_verdict:
        notes.append(f"{no_verdict} item(s) without a valid step verification, counted as wrong")
    return {
        "kind": "steps",
        "counts": {
            "items": len(records),
            "verified": len(done),
            "erroneous": len(erroneous),
            "correct": len(correct),
            "no_verdict": no_verdict,
            "errors": len(errors),
            "error_kinds": dict(Counter(r.get("error_kind") for r in errors)),
            "steps": sum(int(r.get("step_count") or 0) for r in done),
            "verifications": sum(len(r.get("verifications") or []) for r in done),
            "unscored_verifications": sum(int(r.get("unscored") or 0) for r in done),
        },
        "metrics": {
            "accuracy_erroneous": acc_error,
            "accuracy_correct": acc_correct,
            "f1": f1,
            "first_error": {name: relations.get(name, 0) for name in RELATIONS},
            "false_alarms": sum(r["relation"] == "false_alarm" for r in correct),
            "mean_abs_distance": sum(abs(d) for d in distances) / len(distances) if distances else None,
            "mean_distance": sum(distances) / len(distances) if distances else None,
        },
        "notes": notes,
        "usage": {**usage.model_dump(), "total_tokens": usage.total_tokens},
    }


def _value(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def headline_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) of a steps summary's headline metrics, as the command and the reports show them."""
    m, c = summary["metrics"], summary["counts"]
    relations = m["first_error"]
    rows = [
        ("items", f"{c['verified']} verified of {c['items']} ({c['erroneous']} with an error, {c['correct']} without)"),
        ("accuracy (erroneous)", _value(m["accuracy_erroneous"])),
        ("accuracy (correct)", _value(m["accuracy_correct"])),
        ("F1", _value(m["f1"])),
        ("first wrong step", ", ".join(f"{name.replace('_', ' ')} {relations[name]}" for name in RELATIONS)),
        ("false alarms", str(m["false_alarms"])),
        ("mean |distance|", _value(m["mean_abs_distance"]) + " steps"),
        ("no verdict", f"{c['no_verdict']} item(s); unscored {c['unscored_verifications']} of {c['verifications']}"),
    ]
    return rows


def write_steps_report(run: RunFolder, records: list[dict[str, Any]], config: dict[str, Any]) -> tuple[Any, Any]:
    """Rebuild ``summary.json`` of a steps run and write ``report.md`` and ``report.html``: the
    headline metrics, the notes and one row per item (label, prediction, relation, samples)."""
    summary = summarize_steps_run(records)
    run.write_summary(summary)
    title = f"steps run: {config.get('suite') or run.path.name}"
    rows = headline_rows(summary)
    items = [
        (
            str(r.get("id")),
            _value(r.get("step_count")),
            _value(r.get("label")),
            _value(r.get("predicted")) if "error" not in r else "error",
            str(r.get("relation") or r.get("error", "")[:80]),
            " ".join(
                "—"
                if v.get("first_error") is None and not v.get("format_ok")
                else str(-1 if v.get("first_error") is None else v["first_error"])
                for v in r.get("verifications") or []
            ),
        )
        for r in records
    ]
    head = ("id", "steps", "label", "predicted", "relation", "samples' first wrong step")
    md = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    md += [f"| {name} | {value} |" for name, value in rows]
    md += ["", *[f"- note: {note}" for note in summary["notes"]], "", "## Items", ""]
    md += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    md += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in items]
    run.report_md.write_text("\n".join(md) + "\n")

    from .report import _html_table as table  # one HTML table for every report

    notes = "".join(f"<p>note: {html.escape(note)}</p>" for note in summary["notes"])
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse;margin-bottom:1em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Metrics</h2>{table(('metric', 'value'), rows)}{notes}"
        f"<h2>Items</h2>{table(head, items)}</body></html>"
    )
    run.report_html.write_text(page)
    return run.report_html, run.report_md
