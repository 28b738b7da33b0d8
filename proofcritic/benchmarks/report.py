"""Reports of a run folder, and the comparison of runs.

``build_report(run)`` rebuilds ``summary.json`` from ``items.jsonl`` (the summary never holds
anything the records do not) and writes ``report.html`` (self-contained: an inline stylesheet,
the plots as base64 PNG data URIs, no script) and ``report.md``: the metrics with their
intervals and notes, the breakdowns of a grade run by competition and by the model that wrote
the proof, and a table of every item (a grade run: human grade, verdict, each verification's
score; a solve run: each sample's self-score, verifier scores and points) where report.html
expands each item to its proof and analyses (very long texts shortened in the middle; the full
texts stay in ``items.jsonl``).

``compare_runs(a, b, ...)`` puts every metric of two or more runs of one kind side by side on
the items that all of them have a value for (paired by id), with each run's difference from
the first (the baseline) and its paired bootstrap interval.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..types import READ_OUT_SOURCES
from . import _plots
from ._run import RunFolder
from .eval_grade import grade_row, summarize_grade_run
from .eval_solve import ANSWER_METRICS, SOLVE_METRICS, mean_or_none, summarize_solve_run
from .metrics import bootstrap_ci, breakdown, paired_differences, small_sample_note

__all__ = ["TEXT_BUDGET", "TEXT_LIMIT", "build_report", "compare_html", "compare_markdown", "compare_runs", "run_kind"]

#: the longest proof or analysis report.html shows whole; a longer one keeps its start and end
TEXT_LIMIT = 8000
#: about how many characters of proofs and analyses report.html holds in all: with many texts
#: each is shortened further, to no less than ``_TEXT_FLOOR``
TEXT_BUDGET = 10_000_000
_TEXT_FLOOR = 500
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{color:#334;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccd;padding:.25em .7em;text-align:right}
th{background:#eef}td:first-child,th:first-child{text-align:left}.figs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}img{max-width:100%;border:1px solid #ddd}code{background:#f4f4f8;padding:0 .2em}
small{color:#667}p.note{color:#555;font-size:.92em;max-width:60em}ul.notes{color:#853;font-size:.92em}
table.items,table.breakdown{font-size:.9em}table.items td,table.items th{text-align:left;vertical-align:top}
table.items{width:100%}table.breakdown small{white-space:nowrap}table.items .n{text-align:right;white-space:nowrap}table.items tbody{border-top:2px solid #99a}
table.items tr.more td{border-top:none;padding:0 .7em .3em}td.miss{background:#fde8e8}tr.err td{color:#a22}
.ro{color:#a55a00;font-weight:600}.none{color:#999}.chips{white-space:normal;word-spacing:.3em}
details summary{cursor:pointer;color:#446;font-size:.92em}details details{margin:.2em 0 .2em 1em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#fafafc;border:1px solid #e4e4ec;padding:.5em;
margin:.3em 0;max-height:32em;overflow:auto;font-size:.92em}table.runs td{text-align:left}"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _ci(low: Any, high: Any) -> str:
    return "—" if low is None or high is None else f"[{_num(low)}, {_num(high)}]"


def run_kind(records: list[dict]) -> str:
    """The kind of a run ("grade", "solve" or "critic") from its records' ``kind`` fields."""
    kinds = Counter(r["kind"] for r in records if r.get("kind") in ("grade", "solve", "critic"))
    if not kinds:
        raise InputError("the run has no grade, solve or critic records to report on")
    return kinds.most_common(1)[0][0]


def _item_tokens(records: list[dict]) -> list[float]:
    return [float(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)) for r in records if (u := r.get("usage"))]


def _verification_rows(counts: dict) -> list[list[str]]:
    """How many verifications had no score, and how many scores came from a read-out."""
    n, unscored = counts.get("verifications", 0), counts.get("unscored_verifications", 0)
    if not n:
        return []
    return [
        ["unscored verifications", f"{_num(unscored)} of {_num(n)}", ""],
        [
            "scores from a read-out (likelihood, guided)",
            f"{_num(counts.get('read_out_scores', 0))} of {_num(n - unscored)}",
            "",
        ],
    ]


_LONG = {
    "kappa": "Cohen's kappa (correct or not)",
    "qwk_points": "quadratic-weighted kappa, points 0-7",
    "qwk_buckets": "quadratic-weighted kappa, 0 / partial / full",
    "qwk_gradingbench": "quadratic-weighted kappa, grades 0/1/6/7",
    "leniency_points": "leniency, points (verifier minus human)",
}
_BUCKET_NAMES = {"0": "0", "0.5": "partial", "1": "full"}


def _grade_parts(summary: dict, records: list[dict]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Metric rows and figures of a grade run."""
    counts = summary["counts"]
    rows = [
        ["items", _num(counts["items"]), ""],
        ["scored", _num(counts["scored"]), ""],
        ["review / no verdict / errors", f"{counts['review']} / {counts['no_verdict']} / {counts['errors']}", ""],
        *_verification_rows(counts),
    ]
    metrics = summary.get("metrics") or {}
    for name in (
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "mae_points",
        "mae_score",
        "pearson",
        "spearman",
        "kappa",
        "qwk_points",
        "qwk_buckets",
        "qwk_gradingbench",
        "leniency_points",
    ):
        interval = metrics.get("intervals", {}).get(name, {})
        if name in metrics:
            rows.append([_LONG.get(name, name), _num(metrics[name]), _ci(interval.get("low"), interval.get("high"))])
    for bucket, lenient in (metrics.get("leniency_by_human_bucket") or {}).items():
        rows.append(
            [
                f"leniency, points (human grade {_BUCKET_NAMES.get(bucket, bucket)}; {lenient['n']} items)",
                _num(lenient["leniency_points"]),
                _ci(lenient["low"], lenient["high"]),
            ]
        )
    calibration = metrics.get("calibration")
    if calibration:
        rows.append(["partial-credit calibration error (0: calibrated)", _num(calibration["error"]), ""])
    where = metrics.get("localisation")
    if where:
        rows.append(
            [
                "annotated errors that a reported issue overlaps",
                _num(where["errors_found"]),
                f"{where['errors']} errors in {where['proofs']} proofs",
            ]
        )
        rows.append(
            [
                "located issues that overlap an annotated error",
                _num(where["issues_on_target"]),
                f"issues located in the proof: {_num(where['issues_located'])} of {where['issues']}",
            ]
        )
    agreement = metrics.get("sample_agreement") or {}
    if agreement.get("proofs"):
        rows.append(
            [
                "agreement between samples: pairwise / Fleiss' kappa",
                f"{_num(agreement['pairwise'])} / {_num(agreement['fleiss_kappa'])}",
                f"{agreement['proofs']} proofs",
            ]
        )
    panel = summary.get("panel")
    if panel:
        rows.append(["judge panel: proofs reconciled", f"{panel['reconciled']} of {panel['proofs']}", ""])
        for name, judge in panel["judges"].items():
            rows.append(
                [
                    f"judge {name}: MAE points / QWK points / leniency",
                    " / ".join(_num(judge.get(k)) for k in ("mae_points", "qwk_points", "leniency_points")),
                    f"{judge['n']} items, {_num(judge['calls'])} calls, {_num(judge['tokens'])} tokens",
                ]
            )
        for pair, agreement in panel["between_judges"].items():
            rows.append([f"judges {pair}: QWK points", _num(agreement["qwk_points"]), f"{agreement['n']} items"])
    rows.append(["tokens (total)", _num(summary["usage"]["total_tokens"]), ""])
    rows.append(["seconds (sum over items)", _num(summary["seconds"]), ""])
    scored = [r for r in records if r.get("kind") == "grade" and r.get("predicted_score") is not None]
    human = [r["human_points"] / r["max_points"] for r in scored]
    predicted = [float(r["predicted_score"]) for r in scored]
    figures = [("Scores", _plots.histogram({"verifier": predicted, "human": human}, "Score distribution", "score"))]
    if metrics.get("confusion_buckets"):
        cm = metrics["confusion_buckets"]
        figures.append(("Confusion", _plots.heatmap(cm["matrix"], cm["labels"], "Human vs verifier grade")))
    figures.append(
        (
            "Calibration",
            _plots.calibration({"verifier": (predicted, human)}, "Calibration", "verifier score", "mean human score"),
        )
    )
    tokens = _item_tokens(records)
    if tokens:
        figures.append(("Tokens", _plots.histogram({"tokens": tokens}, "Tokens per item", "tokens", 20, None)))
    return rows, figures


def _solve_parts(summary: dict, records: list[dict]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Metric rows and figures of a solve run."""
    rows = [
        ["items / scored / errors", f"{summary['items']} / {summary['scored']} / {summary['errors']}", ""],
        ["samples per problem (k)", _num(summary["k"]), ""],
    ]
    for name, m in summary["metrics"].items():
        rows.append([name, _num(m["value"]), _ci(m["low"], m["high"])])
    p = summary["points"]
    for name in ("first", "best_self", "best_verifier", "best"):
        rows.append([f"points ({name})", f"{_num(p[name])} / {_num(p['max'])}", ""])
    a = summary["agreement"]
    rows.append(["self vs verifier: exact agreement", _num(a["exact"]), f"{a['pairs']} samples"])
    rows.append(["self vs verifier: mean |difference|", _num(a["mean_abs_diff"]), ""])
    rows.append(["format failures", _num(summary["format_failures"]), ""])
    rows.append(["samples without a verdict (0 points)", _num(summary.get("no_verdict", 0)), ""])
    answers = summary.get("answers")
    if answers:  # an answer suite: graded by the answer check
        rows.append(
            [
                "answers stated / right (samples)",
                f"{answers['stated']} / {answers['correct']}",
                f"of {answers['samples']}",
            ]
        )
        rows.append(["majority answer right (problems)", _num(answers["majority_correct"]), f"of {summary['scored']}"])
    rows += _verification_rows(summary)
    t, s = summary["tokens"], summary["seconds"]
    rows.append(["tokens (total / per item)", f"{_num(t['total'])} / {_num(t['per_item'])}", ""])
    rows.append(["seconds (total / per item)", f"{_num(s['total'])} / {_num(s['per_item'])}", ""])
    if "cost" in summary:
        rows.append([f"cost, $ ({summary['cost']['model']})", _num(summary["cost"]["total"]), ""])
    samples = [s for r in records if r.get("kind") == "solve" for s in r.get("samples", [])]
    means = [float(s["verifier_mean"]) for s in samples if s.get("verifier_mean") is not None]
    selfs = [float(s["self_score"]) for s in samples if s.get("self_score") is not None]
    figures = [("Scores", _plots.histogram({"verifier mean": means, "self-score": selfs}, "Sample scores", "score"))]
    problems = summary["problems"]
    if problems:
        figures.append(
            (
                "Problems",
                _plots.bars(
                    [q["id"] for q in problems],
                    {
                        "first": [q["points_first"] for q in problems],
                        "best (self)": [q["points_best_self"] for q in problems],
                        "best (verifier)": [q["points_best_verifier"] for q in problems],
                    },
                    "Points per problem",
                    "points",
                    limit=[q["max_points"] for q in problems],
                ),
            )
        )
    pairs = [
        (float(s["self_score"]), float(s["verifier_mean"]))
        for s in samples
        if s.get("self_score") is not None and s.get("verifier_mean") is not None and s.get("proof") is not None
    ]
    figures.append(
        (
            "Calibration",
            _plots.calibration(
                {"self-score": ([x for x, _ in pairs], [y for _, y in pairs])},
                "Self-score calibration",
                "self-score",
                "verifier mean",
            ),
        )
    )
    tokens = _item_tokens(records)
    if tokens:
        figures.append(("Tokens", _plots.histogram({"tokens": tokens}, "Tokens per problem", "tokens", 20, None)))
    return rows, figures


class _Html(str):
    """A table cell that is HTML already (built from escaped parts)."""


def _cell(value: str) -> str:
    return value if isinstance(value, _Html) else html.escape(value)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{f' class={css!r}' if css else ''}><tr>{head}</tr>{body}</table>"


def _md_cell(text: str) -> str:
    """A Markdown table cell: one line, ``|`` escaped, no raw HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows])


#: a report section: title, HTML, Markdown
Section = tuple[str, str, str]


def _notes(data: Any, label: str = "") -> list[str]:
    """Every ``note`` (a text) and ``notes`` (a list of texts) in a summary, each prefixed with
    the metric it sits under (``pearson: ...``), breakdowns and per-problem rows left out: the
    notes any part of proofcritic adds to a summary appear in the report as they are."""
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("note", "notes"):
                texts = (
                    [value]
                    if isinstance(value, str)
                    else [t for t in value if isinstance(t, str)]
                    if isinstance(value, list)
                    else []
                )
                out += [f"{label}: {text}" if label else text for text in texts]
            elif key not in ("breakdowns", "problems"):
                out += _notes(value, label if key in ("metrics", "intervals", "counts") else str(key))
    return list(dict.fromkeys(out))


def _notes_html(notes: list[str]) -> str:
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else ""


def _notes_md(notes: list[str]) -> str:
    return "\n".join(f"- note: {n}" for n in notes)


def _score_chip(score: Any, source: Any) -> tuple[str, str]:
    """One verification's score as HTML and Markdown: † marks a read-out, — no score."""
    if score is None:
        return "<span class='none' title='no score (format failure)'>—</span>", "—"
    text = _num(float(score))
    if source in READ_OUT_SOURCES:
        return f"<span class='ro' title='score from the {html.escape(str(source))} read-out'>{text}†</span>", f"{text}†"
    return text, text


def _chips(scores: list, sources: list | None) -> tuple[str, str]:
    sources = list(sources or [])
    chips = [_score_chip(s, sources[i] if i < len(sources) else None) for i, s in enumerate(scores)]
    return (_Html("<span class='chips'>" + " ".join(h for h, _ in chips) + "</span>"), " ".join(m for _, m in chips))


_CHIP_LEGEND = (
    "Verification scores: † a score from a read-out (the likelihood or guided score modes), — no score "
    "(a format failure)."
)


def _shorten(text: str, limit: int) -> str:
    """``text``, or its start and end with the middle replaced by a line saying how much is left out."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return (
        f"{text[:head]}\n\n[… {len(text) - limit:,} characters left out here: the full text is in items.jsonl …]"
        f"\n\n{text[len(text) - (limit - head) :]}"
    )


def _text_limit(count: int, text_limit: int, text_budget: int) -> int:
    """The length each of ``count`` texts is shortened to."""
    return max(min(text_limit, _TEXT_FLOOR), min(text_limit, text_budget // max(count, 1)))


def _pre(text: str, limit: int) -> str:
    return f"<pre>{html.escape(_shorten(text, limit))}</pre>"


def _details_row(width: int, summary: str, inner: str) -> str:
    return f"<tr class='more'><td colspan='{width}'><details><summary>{summary}</summary>{inner}</details></td></tr>"


def _error_row(record: dict, width: int) -> tuple[str, list[str]]:
    """An error record's row of an items table of ``width`` columns: html, and the markdown
    cells (the id, the message, then empty cells to the width)."""
    message = f"error ({record.get('error_kind') or 'unknown'}): {record.get('error')}"
    row = (
        f"<tbody><tr class='err'><td>{html.escape(str(record.get('id')))}</td>"
        f"<td colspan='{width - 1}'>{html.escape(_shorten(message, 600))}</td></tr></tbody>"
    )
    return row, [str(record.get("id")), message, *[""] * (width - 2)]


def _items_table(header: list[str], numeric: set[str], body: list[str]) -> str:
    """A table of items: the header (numeric columns aligned right) and a ``<tbody>`` per item."""
    head = "".join(f"<th{' class=n' if h in numeric else ''}>{html.escape(h)}</th>" for h in header)
    return f"<table class='items'><thead><tr>{head}</tr></thead>{''.join(body)}</table>"


def _grade_items(summary: dict, records: list[dict], text_limit: int, text_budget: int) -> Section:
    """The table of every item of a grade run."""
    grades = [r for r in records if r.get("kind") == "grade" or "error" in r]
    authors = any((r.get("meta") or {}).get("model_id") for r in grades)
    verified = any(r.get("verifications") for r in grades)
    header = [
        "item",
        "problem",
        *(["proof by"] if authors else []),
        "human",
        "verdict",
        "diff",
        "agree",
        *(["verifications"] if verified else []),
    ]
    count = sum(bool(r.get("proof")) + len(r.get("verifications") or []) for r in grades)
    limit = _text_limit(count, text_limit, text_budget)
    body, md_rows = [], []
    for r in grades:
        if "error" in r or r.get("kind") != "grade":
            row_html, row_md = _error_row(r, len(header))
            body.append(row_html)
            md_rows.append(row_md)
            continue
        meta = r.get("meta") or {}
        top = r.get("max_points")
        problem, competition = str(r.get("problem_id") or ""), str(meta.get("competition") or "")
        if competition and competition not in problem:
            problem = f"{competition} · {problem}" if problem else competition
        human = f"{_num(r.get('human_points'))} / {_num(top)}"
        score = r.get("predicted_score")
        verdict = (
            _num(r.get("predicted_points"))
            if score is not None
            else str(r.get("status") or "no verdict").replace("_", " ")
        )
        if r.get("label_rule"):
            verdict += f" ({r['label_rule']})"
        agree = "—" if score is None else ("✓" if (score >= 1) == (r["human_points"] >= top) else "✗")
        diff = "—" if score is None else f"{r['predicted_points'] - r['human_points']:+.3g}"
        verifications = r.get("verifications") or []
        chips_html, chips_md = _chips(
            [v.get("score") for v in verifications], [v.get("score_source") for v in verifications]
        )
        cells = [
            str(r.get("id")),
            problem,
            *([str(meta.get("model_id") or "—")] if authors else []),
            human,
            verdict,
            diff,
            agree,
        ]
        md_rows.append([*cells, *([chips_md] if verified else [])])
        tds = "".join(
            f"<td{' class=n' if i >= len(cells) - 4 else ''}>{html.escape(c)}</td>" for i, c in enumerate(cells)
        )
        if agree == "✗":
            tds = tds.replace(f"<td class=n>{html.escape(agree)}</td>", f"<td class='n miss'>{agree}</td>")
        rows = [f"<tr>{tds}{f'<td>{chips_html}</td>' if verified else ''}</tr>"]
        parts, what = [], []
        if r.get("proof"):
            parts.append(f"<details open><summary>proof</summary>{_pre(r['proof'], limit)}</details>")
            what.append(f"proof ({len(r['proof']):,} characters)")
        if r.get("reason"):
            parts.append(f"<p class='note'>label rule: {html.escape(str(r['reason']))}</p>")
        for i, v in enumerate(verifications, start=1):
            chip, _ = _score_chip(v.get("score"), v.get("score_source"))
            source = f" ({html.escape(str(v['score_source']))})" if v.get("score_source") else ""
            issues = f", {v['issues']} issue(s)" if v.get("issues") else ""
            ok = "" if v.get("format_ok", True) else ", format failure"
            parts.append(
                f"<details><summary>analysis {i}: score {chip}{source}{issues}{ok}</summary>"
                f"{_pre(str(v.get('raw') or ''), limit)}</details>"
            )
        if verifications:
            what.append(f"{len(verifications)} analys{'is' if len(verifications) == 1 else 'es'}")
        if parts:
            rows.append(_details_row(len(header), html.escape(" · ".join(what)), "".join(parts)))
        body.append("<tbody>" + "".join(rows) + "</tbody>")
    rules = ", ".join(summary.get("rules") or []) or "—"
    intro = (
        f"{len(grades)} items in the order of items.jsonl; verdict by {rules}, in points; diff: verdict - human. "
        "Agree: the verdict and the humans agree on full marks (✓) or not (✗)."
        + (f" {_CHIP_LEGEND}" if verified else "")
    )
    more = (
        f" Each item opens to its proof and analyses (texts over {limit:,} characters are shortened in the "
        "middle; the full texts are in items.jsonl)."
    )
    table = _items_table(header, {"human", "verdict", "diff", "agree"}, body)
    return (
        "Items",
        f"<p class='note'>{html.escape(intro + more)}</p>{table}",
        intro + " Proofs and analyses: report.html, items.jsonl.\n\n" + _md_table(header, md_rows),
    )


def _solve_items(summary: dict, records: list[dict], text_limit: int, text_budget: int) -> Section:
    """The table of every sample of a solve run."""
    solves = [r for r in records if r.get("kind") == "solve" or "error" in r]
    header = ["problem", "sample", "self-score", "verifier scores", "mean", "points", "passed", "stop"]
    count = sum(len(r.get("samples") or []) for r in solves)
    limit = _text_limit(count, text_limit, text_budget)
    body, md_rows = [], []
    for r in solves:
        if "error" in r or r.get("kind") != "solve":
            row_html, row_md = _error_row(r, len(header))
            body.append(row_html)
            md_rows.append(row_md)
            continue
        top = r.get("max_points")
        rows = []
        for s in r.get("samples") or []:
            chips_html, chips_md = _chips(list(s.get("verifier_scores") or []), s.get("score_sources"))
            if "correct" in s:  # an answer sample: the extracted answer and its check instead
                chips_md = (
                    f"answer {s.get('answer')!s} ({'right' if s['correct'] else 'wrong'}; ref. {r.get('answer')})"
                )
                chips_html = html.escape(chips_md)
            stop = str(s.get("stop_reason") or "") + (" (budget)" if s.get("budget_limited") else "")
            cells = [
                str(r.get("id")) if s is r["samples"][0] else "",
                _num(s.get("sample")),
                _num(s.get("self_score")),
                chips_md,
                _num(s.get("verifier_mean")),
                f"{_num(s.get('points'))} / {_num(top)}",
                "✓" if s.get("passed") else "✗",
                stop,
            ]
            md_rows.append([str(r.get("id")), *cells[1:]])
            tds = "".join(
                f"<td class=n>{html.escape(c)}</td>"
                if i in (1, 2, 4, 5, 6)
                else (f"<td>{chips_html}</td>" if i == 3 else f"<td>{html.escape(c)}</td>")
                for i, c in enumerate(cells)
            )
            rows.append(f"<tr>{tds}</tr>")
            if s.get("proof"):
                what = f"sample {_num(s.get('sample'))}: proof ({len(s['proof']):,} characters)"
                rows.append(_details_row(len(header), html.escape(what), _pre(s["proof"], limit)))
        body.append("<tbody>" + "".join(rows) + "</tbody>")
    intro = (
        f"{count} samples of {len(solves)} problems in the order of items.jsonl; points = the verifier mean "
        "times the problem's points; passed: every verification gave 1 (an answer suite's sample: its extracted "
        "answer is right by the answer check, for 1 point). " + _CHIP_LEGEND
    )
    more = (
        f" Each sample opens to its proof (over {limit:,} characters shortened in the middle; the full texts "
        "are in items.jsonl)."
    )
    table = _items_table(header, {"sample", "self-score", "mean", "points", "passed"}, body)
    return (
        "Samples",
        f"<p class='note'>{html.escape(intro + more)}</p>{table}",
        intro + " Proofs: report.html, items.jsonl.\n\n" + _md_table(header, md_rows),
    )


#: the title of a breakdown of a grade run by a field of its items
_BREAKDOWN_TITLES = {"competition": "By competition", "model_id": "By the model that wrote the proof"}
#: the metrics of a breakdown table (summary.json holds precision and recall per group too)
_BREAKDOWN_METRICS = ("accuracy", "balanced_accuracy", "f1", "mae_points", "pearson", "spearman")
#: short column names of metrics
_SHORT = {
    "balanced_accuracy": "balanced acc.",
    "mae_points": "MAE (points)",
    "f1": "F1",
    "pearson": "Pearson",
    "spearman": "Spearman",
}


def _breakdowns(summary: dict, records: list[dict]) -> list[Section]:
    """A table per breakdown of a grade run's metrics, each group with its intervals."""
    metrics = summary.get("metrics") or {}
    rows_all = [grade_row(r) for r in records if r.get("kind") == "grade" and "error" not in r]
    sections = []
    for key, groups in (metrics.get("breakdowns") or {}).items():
        title = _BREAKDOWN_TITLES.get(key, f"By {key}")
        if set(groups) <= {"unknown"}:
            text = f"The data names no {key} for its items."
            sections.append((title, f"<p class='note'>{html.escape(text)}</p>", text))
            continue
        items = breakdown(rows_all, key, len)  # items with and without a verdict
        header = [key, "items", "with a verdict", *(_SHORT.get(name, name) for name in _BREAKDOWN_METRICS)]
        html_rows, md_rows, notes = [], [], []
        for group, m in groups.items():
            intervals = m.get("intervals") or {}
            values = [
                (
                    _num(m.get(name)),
                    _ci((intervals.get(name) or {}).get("low"), (intervals.get(name) or {}).get("high")),
                )
                for name in _BREAKDOWN_METRICS
            ]
            if group_notes := _notes(m):
                notes.append(f"{group}: {'; '.join(group_notes)}")
            start = [group, _num(items.get(group, m.get("n"))), _num(m.get("n"))]
            html_rows.append(
                [
                    *start,
                    *(
                        _Html(html.escape(v) + (f"<br><small>{html.escape(ci)}</small>" if ci != "—" else ""))
                        for v, ci in values
                    ),
                ]
            )
            md_rows.append([*start, *(v if ci == "—" else f"{v} {ci}" for v, ci in values)])
        note = (
            "Each group's metrics with its own bootstrap 95% interval (below each value); precision and recall "
            "per group are in summary.json."
        )
        sections.append(
            (
                title,
                f"<p class='note'>{note}</p>" + _html_table(header, html_rows, "breakdown") + _notes_html(notes),
                "\n\n".join(
                    x
                    for x in (note.replace(" (below each value)", ""), _md_table(header, md_rows), _notes_md(notes))
                    if x
                ),
            )
        )
    return sections


def _solve_problems(summary: dict) -> Section:
    header = ["problem", "first", "best (self)", "best (verifier)", "max", "passed"]
    majority = any("majority_correct" in q for q in summary["problems"])
    header += ["majority answer"] if majority else []
    rows = [
        [
            q["id"],
            _num(q["points_first"]),
            _num(q["points_best_self"]),
            _num(q["points_best_verifier"]),
            _num(q["max_points"]),
            f"{q['passed']}/{q['samples']}",
        ]
        + ([("right" if q.get("majority_correct") else "wrong") if "majority_correct" in q else ""] if majority else [])
        for q in summary["problems"]
    ]
    return "Problems", _html_table(header, rows), _md_table(header, rows)


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def _setting_rows(config: dict) -> list[list[str]]:
    """The configuration as rows, nested settings one row each (``settings.model``)."""
    rows = []
    for key, value in config.items():
        if key == "prices":
            continue
        if isinstance(value, dict) and value:
            rows += [[f"{key}.{k}", str(v)] for k, v in value.items()]
        else:
            rows.append([str(key), str(value)])
    return rows


def build_report(
    run: RunFolder | str | Path, *, text_limit: int = TEXT_LIMIT, text_budget: int = TEXT_BUDGET
) -> tuple[Path, Path]:
    """Rebuild ``summary.json`` from the records, write ``report.html`` and ``report.md``.

    report.html shows each proof and analysis up to ``text_limit`` characters, fewer (down to
    500) when all of them together would pass about ``text_budget``.
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    config = run.config() if run.config_path.exists() else {}
    records = run.records()
    if any(r.get("kind") == "steps" for r in records):  # eval steps: its own summary and tables
        from .eval_steps import write_steps_report

        return write_steps_report(run, records, config)
    if any(r.get("kind") == "formal" for r in records):  # eval formal: pass@k per mode and its budget
        from .eval_formal import write_formal_report

        return write_formal_report(run, records, config)
    if any(r.get("kind") == "critic" for r in records):  # eval critic: its own summary, figures and tables
        from .eval_critic import write_critic_report

        return write_critic_report(run, records, config)
    kind = run_kind(records)
    if kind == "grade":
        summary = summarize_grade_run(records)
        rows, figures = _grade_parts(summary, records)
        sections = [*_breakdowns(summary, records), _grade_items(summary, records, text_limit, text_budget)]
    else:
        summary = summarize_solve_run(records, prices=config.get("prices"), model_name=config.get("model"))
        rows, figures = _solve_parts(summary, records)
        sections = [_solve_problems(summary), _solve_items(summary, records, text_limit, text_budget)]
    run.write_summary(summary)
    notes = _notes(summary)
    title = f"{kind} run: {config.get('suite') or run.path.name}"
    setup = _setting_rows(config)
    header = ["metric", "value", "95% interval"]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Configuration</h2>",
        _html_table(["setting", "value"], setup),
        "<h2>Metrics</h2>",
        _html_table(header, rows),
        _notes_html(notes),
        "<h2>Figures</h2><div class='figs'>",
    ]
    body += [f"<figure><img alt='{html.escape(name)}' src='{uri}'></figure>" for name, uri in figures]
    body.append("</div>")
    body += [f"<h2>{html.escape(name)}</h2>{part}" for name, part, _ in sections]
    run.report_html.write_text(_page(title, "\n".join(body)))
    md = [
        f"# {title}",
        "",
        "## Configuration",
        "",
        _md_table(["setting", "value"], setup),
        "",
        "## Metrics",
        "",
        _md_table(header, rows),
        "",
    ]
    if notes:
        md += [_notes_md(notes), ""]
    md += [f"Figures: see `{run.report_html.name}`.", ""]
    for name, _, part in sections:
        md += [f"## {name}", "", part, ""]
    run.report_md.write_text("\n".join(md))
    return run.report_html, run.report_md


def _paired_rows(records: list[dict], kind: str) -> tuple[dict[str, dict], dict[str, int]]:
    """Per item id, what a paired comparison needs (a grade run: its metrics row, for the items
    with a verdict; a solve run: its problem row), and the counts of the items left out."""
    errors = sum("error" in r for r in records)
    if kind == "grade":
        grades = [r for r in records if r.get("kind") == "grade" and "error" not in r]
        rows = {
            r["id"]: {**grade_row(r), "tokens": _tokens(r)} for r in grades if r.get("predicted_points") is not None
        }
        return rows, {"items": len(records), "errors": errors, "no_value": len(grades) - len(rows)}
    if kind == "critic":  # eval critic: per problem, each metric's (count, of how many) solutions
        from .eval_critic import critic_problem_rows

        rows = critic_problem_rows(records)
        return rows, {"items": len(records), "errors": errors, "no_value": len(records) - errors - len(rows)}
    problems = summarize_solve_run(records)["problems"]
    tokens = {r["id"]: _tokens(r) for r in records if r.get("kind") == "solve"}
    rows = {q["id"]: {**q, "tokens": tokens.get(q["id"], 0.0)} for q in problems}
    return rows, {"items": len(records), "errors": errors, "no_value": len(records) - errors - len(rows)}


def _tokens(record: dict) -> float:
    usage = record.get("usage") or {}
    return float(usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))


def _mean_difference(xs: list[float], ys: list[float], n_resamples: int, seed: int) -> dict[str, Any]:
    """Means of two paired columns, and the mean of B - A with its paired bootstrap interval."""

    def difference(x: list[float], y: list[float]) -> float | None:
        a, b = mean_or_none(x), mean_or_none(y)
        return None if a is None or b is None else b - a

    ci = bootstrap_ci(difference, xs, ys, n_resamples=n_resamples, seed=seed)
    return {
        "a": mean_or_none(xs),
        "b": mean_or_none(ys),
        "difference": ci["estimate"],
        "low": ci["low"],
        "high": ci["high"],
    }


def _differences(kind: str, rows_a: list[dict], rows_b: list[dict], n_resamples: int, seed: int) -> dict[str, dict]:
    """Every metric of run B against run A on the same items (row i of both is one item)."""
    if kind == "grade":
        out = paired_differences(rows_a, rows_b, n_resamples=n_resamples, seed=seed)
    elif kind == "critic":  # shares pooled over each run's solutions, problems resampled together
        from .eval_critic import paired_critic_differences

        out = paired_critic_differences(rows_a, rows_b, n_resamples=n_resamples, seed=seed)
    else:
        out = {
            name: _mean_difference([value(q) for q in rows_a], [value(q) for q in rows_b], n_resamples, seed)
            for name, value in SOLVE_METRICS.items()
        }
        if rows_a and all("correct" in q for q in rows_a + rows_b):  # answer runs: accuracy, maj@k
            out |= {
                name: _mean_difference([value(q) for q in rows_a], [value(q) for q in rows_b], n_resamples, seed)
                for name, value in ANSWER_METRICS.items()
            }
    out["tokens per item"] = _mean_difference(
        [q["tokens"] for q in rows_a], [q["tokens"] for q in rows_b], n_resamples, seed
    )
    return out


def _run_labels(paths: list[Path]) -> list[str]:
    """The runs' folder names where they tell the runs apart, else A, B, C, ..."""
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names) and all(names):
        return names
    return [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(paths))]


def compare_runs(*runs: RunFolder | str | Path, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every metric of two or more runs of one kind, side by side on the items all of them have a
    value for (a grade run: a verdict; a solve run: samples), paired by id, and each run's
    difference from the first run (the baseline) with its paired bootstrap 95% interval (items
    resampled together in both runs).

    Returns ``{"kind", "runs": [{"label", "path", "items", "errors", "no_value", "unpaired",
    "left_out"}], "paired", "n_resamples", "note" (few paired items, or None), "metrics": {name:
    {"values": [one per run], "differences": [None, {"difference", "low", "high"}, ...]}}}``.
    """
    if len(runs) < 2:
        raise InputError("compare needs at least two run folders")
    folders = [r if isinstance(r, RunFolder) else RunFolder(r) for r in runs]
    for folder in folders:
        if not folder.items_path.exists():
            raise InputError(f"{folder.path} is not a run folder (it has no items.jsonl)")
    records = [folder.records() for folder in folders]
    kind = run_kind(records[0])
    for folder, recs in zip(folders, records):
        if (other := run_kind(recs)) != kind:
            raise InputError(f"cannot compare a {kind} run with a {other} run ({folder.path})")
    tables = [_paired_rows(recs, kind) for recs in records]
    paired = [i for i in tables[0][0] if all(i in rows for rows, _ in tables[1:])]
    labels = _run_labels([f.path for f in folders])
    info = []
    for label, folder, (rows, counts) in zip(labels, folders, tables):
        unpaired = len(rows) - len(paired)
        info.append(
            {
                "label": label,
                "path": str(folder.path),
                **counts,
                "unpaired": unpaired,
                "left_out": counts["items"] - len(paired),
            }
        )
    metrics: dict[str, dict[str, Any]] = {}
    base = [tables[0][0][i] for i in paired]
    for j, (rows, _) in enumerate(tables[1:], start=1):
        if not paired:
            break
        for name, d in _differences(kind, base, [rows[i] for i in paired], n_resamples, seed).items():
            entry = metrics.setdefault(
                name, {"values": [d["a"]] + [None] * (len(folders) - 1), "differences": [None] * len(folders)}
            )
            entry["values"][j] = d["b"]
            entry["differences"][j] = {k: d[k] for k in ("difference", "low", "high")}
    return {
        "kind": kind,
        "runs": info,
        "paired": len(paired),
        "n_resamples": n_resamples,
        "note": small_sample_note(len(paired), "paired items"),
        "metrics": metrics,
    }


def _compare_header(comparison: dict) -> list[str]:
    labels = [r["label"] for r in comparison["runs"]]
    base = labels[0]
    diffs = [h for label in labels[1:] for h in (f"{label} - {base}", "95% interval")]
    return ["metric", *labels, *diffs]


def _excludes_zero(d: dict | None) -> bool:
    if not d:
        return False
    return d["low"] is not None and d["high"] is not None and (d["low"] > 0 or d["high"] < 0)


def _compare_rows(comparison: dict, marked: bool = False) -> list[list[str]]:
    rows = []
    for name, m in comparison["metrics"].items():
        row = [name, *(_num(v) for v in m["values"])]
        for d in m["differences"][1:]:
            value = _num(d["difference"])
            row += [
                _Html(f"<b>{html.escape(value)}</b>") if marked and _excludes_zero(d) else value,
                _ci(d["low"], d["high"]),
            ]
        rows.append(row)
    return rows


def _run_rows(comparison: dict) -> list[list[str]]:
    what = "no verdict" if comparison["kind"] == "grade" else "no samples"
    return [
        [
            r["label"],
            r["path"],
            _num(r["items"]),
            _num(comparison["paired"]),
            f"{r['left_out']} ({what}: {r['no_value']}, errors: {r['errors']}, not in every other run: {r['unpaired']})",
        ]
        for r in comparison["runs"]
    ]


_RUN_HEADER = ["run", "folder", "items", "paired", "left out"]


def _compare_intro(comparison: dict) -> str:
    c = comparison
    value = "a verdict" if c["kind"] == "grade" else "samples"
    base = c["runs"][0]["label"]
    return (
        f"{c['paired']} items paired by id (those with {value} in every run). Every metric on the paired items; "
        f"each difference from the baseline {base} with its paired bootstrap 95% interval ({c['n_resamples']} "
        "resamples of the items, resampled together in both runs)." + (f" Note: {c['note']}." if c.get("note") else "")
    )


def compare_markdown(comparison: dict) -> str:
    """The comparison as Markdown."""
    c = comparison
    return "\n".join(
        [
            f"# Comparison of {c['kind']} runs",
            "",
            _md_table(_RUN_HEADER, _run_rows(c)),
            "",
            _compare_intro(c),
            "",
            _md_table(_compare_header(c), _compare_rows(c)),
            "",
        ]
    )


def compare_html(comparison: dict) -> str:
    """The comparison as a self-contained HTML page (differences whose interval excludes 0 in bold)."""
    c = comparison
    body = (
        f"<h1>Comparison of {html.escape(c['kind'])} runs</h1><h2>Runs</h2>"
        + _html_table(_RUN_HEADER, _run_rows(c), "runs")
        + f"<h2>Metrics</h2><p class='note'>{html.escape(_compare_intro(c))} Differences whose interval "
        "excludes 0 are in bold.</p>" + _html_table(_compare_header(c), _compare_rows(c, marked=True))
    )
    return _page("comparison", body)
