"""Evaluate Lean proving on a formal suite: pass@k per mode, with the budget each mode used.

For every problem (a :class:`~proofcritic.pipelines.formal.FormalProblem`) and every mode
(``whole``: whole proofs retried with Lean's messages, ``resume``: truncate and resume,
``rmax``: RMaxTS, ``decompose``: subgoal decomposition), the mode runs ``k`` times as independent samples; sample ``j`` starts from
the seed ``seed + j * stride`` (``stride`` is one more than the mode's most requests, so no two
samples share a seed). A sample passes when Lean accepts its proof (statement kept, no sorry,
allowed axioms only: :func:`~proofcritic.pipelines.formal.formal_prove`'s rules).

Resuming: each finished sample is appended to ``RUN/samples.jsonl`` as it finishes (with its
whole :class:`~proofcritic.pipelines.formal.FormalCheck`); a rerun takes those from there
without asking the model or Lean again, and runs only what is missing (an ``rmax`` sample that
was killed mid-way replays its expansions, a ``decompose`` sample its sketches and lemmas, from
``RUN/search-state/``). One record per problem is
appended to ``RUN/items.jsonl`` once all its samples are done.

A record: ``{"id", "kind": "formal", "problem_id", "lean_statement", "k", "modes": {MODE:
{"passed", "n", "model_calls", "lean_checks", "tokens", "budget_stops", "samples": [...]}},
"usage"}``, each sample ``{"mode", "sample", "seed", "passed", "status", "model_calls",
"lean_checks", "tokens", "stop_reason", "budget_stop", "proof", "check"}``.
:func:`summarize_formal_run` turns the records into pass@1 and pass@k per mode (the unbiased
estimator 1 - C(n-c, k) / C(n, k) averaged over problems, with a bootstrap 95% interval over
problems) and the budget used (model calls, Lean checks, tokens; totals and per problem).
"""

from __future__ import annotations

import asyncio
import html
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..io import JsonlAppender, iter_jsonl
from ..llm import Usage
from ..runner import RunStats, run_jsonl
from ._run import RunFolder
from .metrics import bootstrap_ci, small_sample_note

if TYPE_CHECKING:
    from ..lean_checker import LeanChecker
    from ..pipelines.formal import FormalCheck, FormalProblem, FormalProver
    from ..pipelines.formal_decompose import DecomposeOptions, FormalSketcher
    from ..pipelines.formal_search import SearchOptions

__all__ = [
    "FORMAL_MODES",
    "MODE_NAMES",
    "eval_formal",
    "formal_headline",
    "mode_stride",
    "pass_at_k",
    "summarize_formal_run",
    "write_formal_report",
]

#: the modes ``eval formal`` runs
FORMAL_MODES = ("whole", "resume", "rmax", "decompose")
MODE_NAMES = {
    "whole": "whole proof",
    "resume": "truncate and resume",
    "rmax": "tree search, RMaxTS",
    "decompose": "subgoal decomposition",
}
SAMPLES_FILE = "samples.jsonl"
STATE_DIR = "search-state"


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of a problem with ``c`` passing samples out of ``n``: 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n = {n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mode_stride(mode: str, attempts: int, options: SearchOptions) -> int:
    """How far apart the base seeds of two samples of ``mode`` lie: one more than its most requests."""
    return (attempts if mode == "whole" else options.max_calls) + 1


def _sample_key(problem_id: str, mode: str, sample: int) -> str:
    return json.dumps([problem_id, mode, sample])


def _read_samples(path: Path) -> dict[str, dict[str, Any]]:
    """The finished samples of an earlier run, by key (a line cut by a kill is skipped)."""
    if not path.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for _, entry in iter_jsonl(path):
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            out[entry["key"]] = entry["sample"]
    return out


def _sample_record(mode: str, sample: int, seed: int, check: FormalCheck) -> dict[str, Any]:
    return {
        "mode": mode,
        "sample": sample,
        "seed": seed,
        "passed": check.passed,
        "status": check.status,
        "model_calls": check.model_calls,
        "lean_checks": check.lean_checks,
        "tokens": check.usage.prompt_tokens + check.usage.completion_tokens,
        "attempts": len(check.attempts),
        "stop_reason": check.stop_reason,
        "budget_stop": "budget spent" in check.stop_reason,
        "proof": check.proof if check.passed else None,
        "check": check.model_dump(mode="json"),
    }


async def eval_formal(
    items: Sequence[FormalProblem],
    run: RunFolder,
    *,
    prover: FormalProver,
    checker: LeanChecker,
    modes: Sequence[str] = ("whole",),
    k: int = 1,
    attempts: int = 1,
    options: SearchOptions | None = None,
    decompose: DecomposeOptions | None = None,
    sketcher: FormalSketcher | None = None,
    concurrency: int = 4,
    on_progress: Callable[[RunStats], None] | None = None,
) -> dict[str, Any]:
    """Run every mode ``k`` times on every problem, append one record per problem to
    ``run.items_path`` (resumable per sample, see the module docstring), write and return the
    summary. ``attempts`` is ``whole``'s rounds; ``options`` the budgets and knobs of the
    others (and ``samples``, the proofs per model call, and ``seed`` for all); ``decompose``:
    how ``decompose`` proves each subgoal and how deep it nests (its ``search`` is ``options``),
    ``sketcher`` the model that writes its sketches (default: the prover's)."""
    from ..pipelines.formal import formal_prove
    from ..pipelines.formal_decompose import DecomposeOptions, decompose_prove, decompose_state_file
    from ..pipelines.formal_search import SearchOptions, resume_prove, rmax_prove, state_file

    options = options or SearchOptions()
    if not items:
        raise InputError("eval_formal: no items")
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    unknown = [m for m in modes if m not in FORMAL_MODES]
    if unknown or not modes:
        raise InputError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMAL_MODES)}")
    ids = [item.problem.id for item in items]
    duplicates = sorted(i for i, c in Counter(ids).items() if c > 1)
    if duplicates:
        raise InputError(f"eval_formal: duplicate problem ids {duplicates[:5]}")
    if not run.config_path.exists():
        run.create({"command": "eval formal", "modes": list(modes), "k": k, "items": len(items)})
    by_id = {item.problem.id: item for item in items}
    finished = _read_samples(run.path / SAMPLES_FILE)
    # live counts of this run's samples (stats.extra, for the progress line): finished ones read
    # back from samples.jsonl count as replayed, not as new model calls or Lean checks
    counts = {"samples": 0, "passed": 0, "replayed": 0, "model_calls": 0, "lean_checks": 0}
    appender = JsonlAppender(run.path / SAMPLES_FILE)
    state_dir = run.path / STATE_DIR

    async def one(item: FormalProblem, mode: str, sample: int) -> dict[str, Any]:
        key = _sample_key(item.problem.id, mode, sample)
        if key in finished:
            counts["replayed"] += 1
            return {**finished[key], "replayed": True}
        seed = options.seed + sample * mode_stride(mode, attempts, options)
        sample_options = options.model_copy(update={"seed": seed})
        if mode == "whole":
            check = await formal_prove(
                prover,
                checker,
                item.problem,
                item.lean_statement,
                samples=options.samples,
                attempts=attempts,
                seed=seed,
            )
        elif mode == "resume":
            check = await resume_prove(prover, checker, item.problem, item.lean_statement, sample_options)
        elif mode == "rmax":
            state = state_file(state_dir, f"{item.problem.id}#{sample}")
            check = await rmax_prove(prover, checker, item.problem, item.lean_statement, sample_options, state=state)
        else:  # decompose: the budgets and seed of options cover the whole problem
            how = (decompose or DecomposeOptions()).model_copy(update={"search": sample_options})
            state = decompose_state_file(state_dir, f"{item.problem.id}#{sample}")
            check = await decompose_prove(
                prover, checker, item.problem, item.lean_statement, how, sketcher=sketcher, state=state
            )
        record = _sample_record(mode, sample, seed, check)
        appender.write({"key": key, "sample": record})
        finished[key] = record
        counts["samples"] += 1
        counts["passed"] += check.passed
        counts["model_calls"] += check.model_calls
        counts["lean_checks"] += check.lean_checks
        return record

    async def process(item_id: str, record: dict) -> dict:
        item = by_id[item_id]
        jobs = [(mode, j) for mode in modes for j in range(k)]
        outcomes = await asyncio.gather(*(one(item, mode, j) for mode, j in jobs), return_exceptions=True)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:  # the samples that finished are kept in samples.jsonl for the rerun
            raise failed
        done = [o for o in outcomes if isinstance(o, dict)]
        usage = Usage()
        per_mode: dict[str, dict[str, Any]] = {}
        for mode in modes:
            samples = [s for s in done if s["mode"] == mode]
            for s in samples:
                if not s.get("replayed"):
                    usage.add(Usage.model_validate(s["check"].get("usage") or {}))
            per_mode[mode] = {
                "passed": sum(bool(s["passed"]) for s in samples),
                "n": len(samples),
                "model_calls": sum(s["model_calls"] for s in samples),
                "lean_checks": sum(s["lean_checks"] for s in samples),
                "tokens": sum(s["tokens"] for s in samples),
                "budget_stops": sum(bool(s["budget_stop"]) for s in samples),
                "samples": samples,
            }
        return {
            "kind": "formal",
            "problem_id": item.problem.id,
            "lean_statement": item.lean_statement,
            "k": k,
            "modes": per_mode,
            "usage": usage.model_dump(),
        }

    def progress(stats: RunStats) -> None:
        stats.extra.update(counts)
        if on_progress is not None:
            on_progress(stats)

    work = [(item.problem.id, index + 1, {"id": item.problem.id}) for index, item in enumerate(items)]
    try:
        await run_jsonl(work, run.items_path, process, concurrency=concurrency, on_progress=progress)
    finally:
        appender.close()
    wanted = set(ids)
    summary = summarize_formal_run([r for r in run.records() if r.get("id") in wanted])
    run.write_summary(summary)
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _interval(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"value": None, "low": None, "high": None}
    ci = bootstrap_ci(lambda column: _mean(list(column)), values, n_resamples=1000, seed=0)
    return {"value": ci["estimate"], "low": ci["low"], "high": ci["high"]}


def summarize_formal_run(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a formal run, rebuilt from its item records alone: per mode pass@1 and
    pass@k (k the samples per problem; also each power of two below it) with intervals, the
    problems solved, the budget used, the samples' final statuses; counts and notes."""
    done = [r for r in records if r.get("kind") == "formal" and "error" not in r]
    errors = [r for r in records if "error" in r]
    modes: list[str] = []
    for r in done:
        modes += [m for m in r["modes"] if m not in modes]
    metrics: dict[str, Any] = {}
    for mode in modes:
        rows = [r["modes"][mode] for r in done if mode in r["modes"] and r["modes"][mode]["n"]]
        n = min((row["n"] for row in rows), default=0)
        ks = sorted({1, n} | {2**e for e in range(1, max(n, 1).bit_length()) if 2**e < n}) if n else []
        samples = [s for row in rows for s in row["samples"]]
        entry: dict[str, Any] = {
            "problems": len(rows),
            "samples_per_problem": n,
            "solved": sum(row["passed"] > 0 for row in rows),
            "samples": len(samples),
            "passed_samples": sum(row["passed"] for row in rows),
            "pass_at": {str(kk): _interval([pass_at_k(row["n"], row["passed"], kk) for row in rows]) for kk in ks},
            "budget": {
                "model_calls": sum(row["model_calls"] for row in rows),
                "lean_checks": sum(row["lean_checks"] for row in rows),
                "tokens": sum(row["tokens"] for row in rows),
                "budget_stops": sum(row["budget_stops"] for row in rows),
                "model_calls_per_problem": _mean([row["model_calls"] for row in rows]),
                "lean_checks_per_problem": _mean([row["lean_checks"] for row in rows]),
            },
            "statuses": dict(Counter(str(s.get("status")) for s in samples)),
        }
        metrics[mode] = entry
    notes = []
    note = small_sample_note(len(done), "problems")
    if note:
        notes.append(note)
    kinds = Counter(r.get("error_kind") for r in errors)
    if kinds.get("setup"):
        first = next(r for r in errors if r.get("error_kind") == "setup")
        notes.append(
            f"{kinds['setup']} problem(s) could not be checked (set-up error, tried again by a rerun): {first['error']}"
        )
    if errors and len(errors) > kinds.get("setup", 0):
        notes.append(f"{len(errors) - kinds.get('setup', 0)} problem(s) failed with other errors; see the items")
    return {
        "kind": "formal",
        "modes": modes,
        "counts": {
            "items": len(records),
            "done": len(done),
            "errors": len(errors),
            "error_kinds": dict(kinds),
        },
        "metrics": metrics,
        "problems": [
            {"id": r.get("id"), **{m: f"{r['modes'][m]['passed']}/{r['modes'][m]['n']}" for m in r["modes"]}}
            for r in done
        ],
        "notes": notes,
    }


def _value(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _with_interval(entry: dict[str, Any]) -> str:
    text = _value(entry.get("value"))
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.3g}, {entry['high']:.3g}]"
    return text


def _mode_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for mode in summary["modes"]:
        m = summary["metrics"][mode]
        budget = m["budget"]
        n = m["samples_per_problem"]
        rows.append(
            [
                f"{mode} ({MODE_NAMES.get(mode, mode)})",
                _with_interval(m["pass_at"].get("1", {})),
                f"pass@{n} " + _with_interval(m["pass_at"].get(str(n), {})) if n else "—",
                f"{m['solved']} of {m['problems']}",
                f"{budget['model_calls']:,} ({_value(budget['model_calls_per_problem'])} per problem)",
                f"{budget['lean_checks']:,} ({_value(budget['lean_checks_per_problem'])} per problem)",
                f"{budget['tokens']:,}",
                str(budget["budget_stops"]),
            ]
        )
    return rows


_MODE_HEADER = ["mode", "pass@1", "pass@k", "solved", "model calls", "Lean checks", "tokens", "budget stops"]


def formal_headline(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) lines of a formal summary, as the command prints them."""
    c = summary["counts"]
    rows = [("problems", f"{c['done']} done of {c['items']}, {c['errors']} error record(s)")]
    for row in _mode_rows(summary):
        rows.append(
            (
                row[0].split(" ", 1)[0],
                f"pass@1 {row[1]}; {row[2]}; solved {row[3]}; model calls {row[4]}; Lean checks {row[5]}; "
                f"budget stops {row[7]}",
            )
        )
    rows += [("note", note) for note in summary["notes"]]
    return rows


def write_formal_report(run: RunFolder, records: list[dict[str, Any]], config: dict[str, Any]) -> tuple[Path, Path]:
    """Rebuild ``summary.json`` of a formal run and write ``report.md`` and ``report.html``: the
    configuration, a row per mode (pass@1, pass@k, solved, budget), the notes, and a row per
    problem (each mode's passing samples; report.html shows the first proof that passed)."""
    summary = summarize_formal_run(records)
    run.write_summary(summary)
    title = f"formal run: {config.get('suite') or run.path.name}"
    setup = [
        [str(key), json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
        for key, value in config.items()
    ]
    modes = summary["modes"]
    problem_header = ["problem", *modes, "statuses"]
    problem_rows: list[list[str]] = []
    proofs: list[tuple[str, str]] = []
    for r in records:
        if "error" in r or r.get("kind") != "formal":
            problem_rows.append([str(r.get("id")), *["error"] * len(modes), f"{r.get('error_kind')}: {r.get('error')}"])
            continue
        cells: list[str] = []
        statuses: Counter[str] = Counter()
        for mode in modes:
            entry = r["modes"].get(mode)
            cells.append(f"{entry['passed']}/{entry['n']}" if entry else "—")
            for s in entry["samples"] if entry else []:
                statuses[f"{mode}:{s['status']}"] += 1
                if s["passed"] and not any(p[0] == str(r["id"]) for p in proofs):
                    proofs.append((str(r["id"]), s.get("proof") or ""))
        problem_rows.append([str(r["id"]), *cells, ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))])

    def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        return out + ["| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in row) + " |" for row in rows]

    md = [f"# {title}", "", "## Configuration", "", *md_table(["setting", "value"], setup), "", "## Modes", ""]
    md += md_table(_MODE_HEADER, _mode_rows(summary))
    md += ["", *[f"- note: {note}" for note in summary["notes"]], "", "## Problems", ""]
    md += md_table(problem_header, problem_rows)
    run.report_md.write_text("\n".join(md) + "\n")

    from .report import _html_table as table  # one HTML table for every report

    notes = "".join(f"<p>note: {html.escape(note)}</p>" for note in summary["notes"])
    shown = "".join(
        f"<details><summary>{html.escape(pid)}</summary><pre>{html.escape(proof)}</pre></details>"
        for pid, proof in proofs
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse;margin-bottom:1em}pre{background:#f6f6f8;padding:.5em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Configuration</h2>{table(('setting', 'value'), setup)}"
        f"<h2>Modes</h2>{table(_MODE_HEADER, _mode_rows(summary))}{notes}"
        f"<h2>Problems</h2>{table(problem_header, problem_rows)}"
        f"<h2>Proofs that passed</h2>{shown or '<p>none</p>'}</body></html>"
    )
    run.report_html.write_text(page)
    return run.report_html, run.report_md
