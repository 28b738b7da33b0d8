"""Reports of a run folder, and the comparison of two runs.

``build_report(run)`` rebuilds ``summary.json`` from ``items.jsonl`` (the summary never holds
anything the records do not) and writes ``report.html`` (self-contained: an inline stylesheet
and the plots as base64 PNG data URIs) and ``report.md``. ``compare_runs(a, b)`` puts the
headline metrics of two runs of the same kind side by side, with the difference over the items
both runs share and its paired bootstrap interval.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import _plots
from ._run import RunFolder
from .eval_grade import summarize_grade_run
from .eval_solve import mean_or_none, summarize_solve_run
from .metrics import bootstrap_ci

__all__ = ["HEADLINES", "build_report", "compare_html", "compare_markdown", "compare_runs", "run_kind"]

#: headline metrics per run kind: name -> (per-item value, description)
HEADLINES: dict[str, dict[str, str]] = {
    "grade": {"accuracy": "verdict correct/incorrect agrees with humans", "abs_error": "|predicted - human| score"},
    "solve": {"score": "score of the first sample (fraction of max)", "pass@k": "some sample passes every verification"},
}
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{color:#334;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccd;padding:.25em .7em;text-align:right}
th{background:#eef}td:first-child,th:first-child{text-align:left}.figs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}img{max-width:100%;border:1px solid #ddd}code{background:#f4f4f8;padding:0 .2em}"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _ci(low: Any, high: Any) -> str:
    return "—" if low is None or high is None else f"[{_num(low)}, {_num(high)}]"


def run_kind(records: list[dict]) -> str:
    """The kind of a run ("grade" or "solve") from its records' ``kind`` fields."""
    kinds = Counter(r["kind"] for r in records if r.get("kind") in ("grade", "solve"))
    if not kinds:
        raise InputError("the run has no grade or solve records to report on")
    return kinds.most_common(1)[0][0]


def _item_tokens(records: list[dict]) -> list[float]:
    return [float(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)) for r in records if (u := r.get("usage"))]


def _verification_rows(counts: dict) -> list[list[str]]:
    """How many verifications had no score, and how many scores came from a read-out."""
    n, unscored = counts.get("verifications", 0), counts.get("unscored_verifications", 0)
    if not n:
        return []
    return [["unscored verifications", f"{_num(unscored)} of {_num(n)}", ""],
            ["scores from a read-out (likelihood, guided)", f"{_num(counts.get('read_out_scores', 0))} of {_num(n - unscored)}", ""]]


def _grade_parts(summary: dict, records: list[dict]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Metric rows and figures of a grade run."""
    counts = summary["counts"]
    rows = [["items", _num(counts["items"]), ""], ["scored", _num(counts["scored"]), ""],
            ["review / no verdict / errors", f"{counts['review']} / {counts['no_verdict']} / {counts['errors']}", ""],
            *_verification_rows(counts)]
    metrics = summary.get("metrics") or {}
    for name in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "mae_points", "mae_score",
                 "pearson", "spearman"):
        interval = metrics.get("intervals", {}).get(name, {})
        if name in metrics:
            rows.append([name, _num(metrics[name]), _ci(interval.get("low"), interval.get("high"))])
    rows.append(["tokens (total)", _num(summary["usage"]["total_tokens"]), ""])
    rows.append(["seconds (sum over items)", _num(summary["seconds"]), ""])
    scored = [r for r in records if r.get("kind") == "grade" and r.get("predicted_score") is not None]
    human = [r["human_points"] / r["max_points"] for r in scored]
    predicted = [float(r["predicted_score"]) for r in scored]
    figures = [("Scores", _plots.histogram({"verifier": predicted, "human": human}, "Score distribution", "score"))]
    if metrics.get("confusion_buckets"):
        cm = metrics["confusion_buckets"]
        figures.append(("Confusion", _plots.heatmap(cm["matrix"], cm["labels"], "Human vs verifier grade")))
    figures.append(("Calibration", _plots.calibration({"verifier": (predicted, human)}, "Calibration",
                                                       "verifier score", "mean human score")))
    tokens = _item_tokens(records)
    if tokens:
        figures.append(("Tokens", _plots.histogram({"tokens": tokens}, "Tokens per item", "tokens", 20, None)))
    return rows, figures


def _solve_parts(summary: dict, records: list[dict]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Metric rows and figures of a solve run."""
    rows = [["items / scored / errors", f"{summary['items']} / {summary['scored']} / {summary['errors']}", ""],
            ["samples per problem (k)", _num(summary["k"]), ""]]
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
        figures.append(("Problems", _plots.bars(
            [q["id"] for q in problems],
            {"first": [q["points_first"] for q in problems], "best (self)": [q["points_best_self"] for q in problems],
             "best (verifier)": [q["points_best_verifier"] for q in problems]},
            "Points per problem", "points", limit=[q["max_points"] for q in problems])))
    pairs = [(float(s["self_score"]), float(s["verifier_mean"])) for s in samples
             if s.get("self_score") is not None and s.get("verifier_mean") is not None and s.get("proof") is not None]
    figures.append(("Calibration", _plots.calibration({"self-score": ([x for x, _ in pairs], [y for _, y in pairs])},
                                                       "Self-score calibration", "self-score", "verifier mean")))
    tokens = _item_tokens(records)
    if tokens:
        figures.append(("Tokens", _plots.histogram({"tokens": tokens}, "Tokens per problem", "tokens", 20, None)))
    return rows, figures


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows])


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def build_report(run: RunFolder | str | Path) -> tuple[Path, Path]:
    """Rebuild ``summary.json`` from the records, write ``report.html`` and ``report.md``."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    config = run.config() if run.config_path.exists() else {}
    records = run.records()
    kind = run_kind(records)
    if kind == "grade":
        summary = summarize_grade_run(records)
        rows, figures = _grade_parts(summary, records)
    else:
        summary = summarize_solve_run(records, prices=config.get("prices"), model_name=config.get("model"))
        rows, figures = _solve_parts(summary, records)
    run.write_summary(summary)
    title = f"{kind} run: {config.get('suite') or run.path.name}"
    setup = [[str(k), str(v)] for k, v in config.items() if k != "prices"]
    header = ["metric", "value", "95% interval"]
    body = [f"<h1>{html.escape(title)}</h1>", "<h2>Configuration</h2>", _html_table(["setting", "value"], setup),
            "<h2>Metrics</h2>", _html_table(header, rows), "<h2>Figures</h2><div class='figs'>"]
    body += [f"<figure><img alt='{html.escape(name)}' src='{uri}'></figure>" for name, uri in figures]
    body.append("</div>")
    if kind == "solve":
        problem_rows = [[q["id"], _num(q["points_first"]), _num(q["points_best_self"]), _num(q["points_best_verifier"]),
                         _num(q["max_points"]), f"{q['passed']}/{q['samples']}"] for q in summary["problems"]]
        problem_header = ["problem", "first", "best (self)", "best (verifier)", "max", "passed"]
        body += ["<h2>Problems</h2>", _html_table(problem_header, problem_rows)]
    run.report_html.write_text(_page(title, "\n".join(body)))
    md = [f"# {title}", "", "## Configuration", "", _md_table(["setting", "value"], setup), "",
          "## Metrics", "", _md_table(header, rows), ""]
    if kind == "solve":
        md += ["## Problems", "", _md_table(problem_header, problem_rows), ""]
    md.append(f"Figures: see `{run.report_html.name}`.")
    run.report_md.write_text("\n".join(md) + "\n")
    return run.report_html, run.report_md


def _item_values(records: list[dict], kind: str) -> dict[str, dict[str, float]]:
    """Per item id, the value of each headline metric (items without one are left out)."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        if r.get("kind") != kind or "error" in r:
            continue
        if kind == "grade" and r.get("predicted_score") is not None:
            human = r["human_points"] / r["max_points"]
            predicted = float(r["predicted_score"])
            out[r["id"]] = {"accuracy": float((human >= 1) == (predicted >= 1)), "abs_error": abs(predicted - human)}
        elif kind == "solve" and r.get("samples"):
            first = (r["samples"][0]["points"] or 0.0) / float(r.get("max_points") or 7.0)
            out[r["id"]] = {"score": first, "pass@k": float(any(s["passed"] for s in r["samples"]))}
    return out


def compare_runs(run_a: RunFolder | str | Path, run_b: RunFolder | str | Path, *, n_resamples: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """Headline metrics of two runs of one kind on the items both have, with B - A and its
    paired bootstrap 95% interval (items resampled together in both runs)."""
    a = run_a if isinstance(run_a, RunFolder) else RunFolder(run_a)
    b = run_b if isinstance(run_b, RunFolder) else RunFolder(run_b)
    records_a, records_b = a.records(), b.records()
    kind = run_kind(records_a)
    if run_kind(records_b) != kind:
        raise InputError(f"cannot compare a {kind} run with a {run_kind(records_b)} run")
    values_a, values_b = _item_values(records_a, kind), _item_values(records_b, kind)
    shared = [i for i in values_a if i in values_b]
    metrics = {}
    for name, description in HEADLINES[kind].items():
        xs, ys = [values_a[i][name] for i in shared], [values_b[i][name] for i in shared]
        entry: dict[str, Any] = {"description": description, "a": mean_or_none(xs), "b": mean_or_none(ys),
                                 "difference": None, "low": None, "high": None}
        if shared:
            ci = bootstrap_ci(lambda x, y: mean_or_none(y) - mean_or_none(x), xs, ys, n_resamples=n_resamples, seed=seed)
            entry.update(difference=ci["estimate"], low=ci["low"], high=ci["high"])
        metrics[name] = entry
    return {"kind": kind, "a": str(a.path), "b": str(b.path), "items_a": len(values_a), "items_b": len(values_b),
            "shared": len(shared), "metrics": metrics}


def _compare_rows(comparison: dict) -> list[list[str]]:
    return [[name, _num(m["a"]), _num(m["b"]), _num(m["difference"]), _ci(m["low"], m["high"])]
            for name, m in comparison["metrics"].items()]


_COMPARE_HEADER = ["metric", "A", "B", "B - A", "95% interval (paired)"]


def compare_markdown(comparison: dict) -> str:
    """The comparison as Markdown."""
    c = comparison
    return "\n".join([f"# Comparison of {c['kind']} runs", "", f"- A: `{c['a']}` ({c['items_a']} items)",
                      f"- B: `{c['b']}` ({c['items_b']} items)", f"- items in both: {c['shared']}", "",
                      _md_table(_COMPARE_HEADER, _compare_rows(c)), ""])


def compare_html(comparison: dict) -> str:
    """The comparison as a self-contained HTML page."""
    c = comparison
    body = (f"<h1>Comparison of {c['kind']} runs</h1><ul><li>A: <code>{html.escape(c['a'])}</code> ({c['items_a']} items)"
            f"</li><li>B: <code>{html.escape(c['b'])}</code> ({c['items_b']} items)</li><li>items in both: {c['shared']}"
            f"</li></ul>" + _html_table(_COMPARE_HEADER, _compare_rows(c)))
    return _page("comparison", body)
