"""Data sets out (``proofcritic export``, issue 21): a run as a Hugging Face ``datasets`` data set.

What a run can be exported as (``what``):

- ``labels``: a label run (``label --output`` or its ``--review`` queue), one row per proof;
  when the run has review decisions (``RUN.reviews.jsonl``) the human decision wins, exactly as
  ``review --export`` writes it (:func:`proofcritic.pipelines.review.export_records`);
- ``dv`` / ``dmv``: the training sets :mod:`proofcritic.training.datasets` builds from those
  label records (:func:`examples_from_labels`, :func:`meta_examples_from_labels`, rows of
  :func:`to_rows`);
- ``grades``: a grade run (``grade --output``), one row per proof with its scores and aggregate
  (problem and proof joined from the batch input when it is given);
- ``steps``: a ``label-steps`` output, TRL's stepwise columns with the soft labels.

The folder holds the data set as ``save_to_disk`` writes it (``datasets.load_from_disk(DIR)``),
the same rows as Parquet (``data/train-00000-of-00001.parquet``) and a dataset card
(``README.md``: model, prompts hash and settings from ``<output>.settings.json``, counts, the
export's date). Everything is built in memory and written to a temporary folder that is renamed
into place at the end: an error leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import iter_jsonl, iter_latest

__all__ = ["WHATS", "Export", "export_run", "hub_offline", "push_to_hub", "read_export"]

WHATS: tuple[str, ...] = ("labels", "grades", "dv", "dmv", "steps")
PARQUET = "data/train-00000-of-00001.parquet"


@dataclass
class Export:
    """An export built in memory: its rows, what they are, and the card's facts."""

    what: str
    kind: str  # the run's shape: label, grade, steps
    run: Path
    rows: list[dict[str, Any]]
    counts: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def _shape(records: list[dict[str, Any]]) -> str:
    if any("completions" in r and "labels" in r for r in records):
        return "steps"
    if any("analyses" in r or r.get("status") in ("labeled", "review") for r in records):
        return "label"
    if any("verifications" in r and "kind" not in r for r in records):
        return "grade"
    return ""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _problem_columns(problem: Any) -> dict[str, Any]:
    problem = problem if isinstance(problem, dict) else {"statement": problem}
    return {
        "problem": problem.get("statement"),
        "reference_solution": problem.get("reference_solution"),
        "grading_guidelines": problem.get("grading_guidelines"),
        "max_points": float(problem.get("max_points") or 7.0),
    }


def _label_row(record: dict[str, Any]) -> dict[str, Any]:
    human = record.get("rule") == "human"
    review = record.get("review") or {}
    return {
        "id": str(record.get("id") or record.get("proof_id") or ""),
        **_problem_columns(record.get("problem")),
        "proof": record.get("proof"),
        "status": record.get("status"),
        "label": record.get("label"),
        "rule": record.get("rule"),
        "scale": record.get("scale", "ternary"),
        "reason": record.get("reason", ""),
        "source": "human" if human else "auto",
        "reviewer": review.get("reviewer") if human else None,
        "scores": [a.get("score") for a in record.get("analyses") or []],
        "record": _json(record),
    }


def _by_score(values: list[Any]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}


def _label_export(run: Path, what: str, decisions: Path | None, items: list[dict[str, Any]]) -> Export:
    from ..pipelines.review import ReviewStore, export_records, load_run

    loaded = load_run(run, decisions=decisions)
    store = ReviewStore(loaded.decisions_file)
    records = list(export_records(loaded, store))
    human = sum(1 for r in records if r.get("rule") == "human")
    counts: dict[str, Any] = {
        "items": len(items),
        "labeled": sum(1 for r in records if r.get("status") == "labeled"),
        "review": sum(1 for r in records if r.get("status") == "review"),
        "errors": sum(1 for r in items if "error" in r),
        "human decisions": human,
        "by score": _by_score([r.get("label") for r in records if r.get("status") == "labeled"]),
    }
    if what == "labels":
        rows = [_label_row(r) for r in records]
    else:
        from .datasets import examples_from_labels, meta_examples_from_labels, to_rows

        examples = examples_from_labels(records) if what == "dv" else meta_examples_from_labels(records)
        rows = to_rows(examples)
    return Export(what, "label", run, rows, counts)


def _grade_export(run: Path, items: list[dict[str, Any]], input_path: Path | None) -> Export:
    from ..pipelines.review import Decision, ReviewStore, decisions_path

    sources: dict[str, dict[str, Any]] = {}
    if input_path is not None:
        for line, record in iter_jsonl(input_path):
            if not isinstance(record, InputError):
                sources[str(record.get("id", f"line-{line}"))] = record
    store = ReviewStore(decisions_path(run))
    rows = []
    for record in items:
        source = sources.get(str(record.get("id")), {})
        aggregate = record.get("aggregate") or {}
        decision: Decision | None = store.get(str(record.get("id")))
        rows.append(
            {
                "id": str(record.get("id")),
                **_problem_columns(source.get("problem")),
                "proof": source.get("proof"),
                "scores": [v.get("score") for v in record.get("verifications") or []],
                "mean": aggregate.get("mean"),
                "majority": aggregate.get("majority"),
                "points": aggregate.get("points"),
                "unscored": aggregate.get("unscored"),
                "error": record.get("error"),
                "human_label": decision.label if decision else None,
                "human_points": decision.points if decision else None,
                "reviewer": decision.reviewer if decision else None,
                "record": _json(record),
            }
        )
    majorities = [r["majority"] for r in rows if r["error"] is None]
    counts: dict[str, Any] = {
        "items": len(rows),
        "with a verdict": sum(1 for m in majorities if m is not None),
        "without a verdict": sum(1 for m in majorities if m is None),
        "errors": sum(1 for r in rows if r["error"] is not None),
        "human decisions": sum(1 for r in rows if r["reviewer"] is not None),
        "by score": _by_score([m for m in majorities if m is not None]),
    }
    if input_path is None:
        counts["note"] = "no --input given: problem and proof columns are empty"
    return Export("grades", "grade", run, rows, counts)


def _steps_export(run: Path, items: list[dict[str, Any]]) -> Export:
    rows: list[dict[str, Any]] = [
        {
            "id": str(r.get("id") or ""),
            "prompt": str(r.get("prompt", "")),
            "completions": list(r.get("completions") or []),
            "labels": [bool(x) for x in r.get("labels") or []],
            "soft_labels": [float(x) for x in r.get("soft_labels") or []],
            "status": r.get("status"),
            "first_bad_step": r.get("first_bad_step"),
            "judge": r.get("judge"),
        }
        for r in items
        if "error" not in r
    ]
    counts: dict[str, Any] = {
        "items": len(items),
        "labeled": sum(1 for r in rows if r["status"] == "labeled"),
        "budget_exhausted": sum(1 for r in rows if r["status"] == "budget_exhausted"),
        "errors": len(items) - len(rows),
        "steps labeled": sum(len(r["labels"]) for r in rows),
        "by first bad step": _by_score([r["first_bad_step"] for r in rows]),
    }
    return Export("steps", "steps", run, rows, counts)


_DEFAULT = {"label": "labels", "grade": "grades", "steps": "steps"}
_ALLOWED = {"label": ("labels", "dv", "dmv"), "grade": ("grades",), "steps": ("steps",)}


def read_export(
    run: str | Path, what: str | None = None, input_path: str | Path | None = None, decisions: str | Path | None = None
) -> Export:
    """Read ``run`` into an :class:`Export` (nothing written): see the module docstring for the
    shapes; an unknown shape, or ``what`` the run cannot give, is an :class:`InputError`."""
    run = Path(run)
    if what is not None and what not in WHATS:
        raise InputError(f"--what {what}: choose one of {', '.join(WHATS)}")
    if not run.is_file():
        raise InputError(f"{run}: not a run output file (a label, grade or label-steps output JSONL)")
    items = [record for _, record in iter_latest(run)]
    kind = _shape(items)
    if not kind:
        raise InputError(
            f"{run}: not a label, grade or label-steps output: no label records (analyses, status), grade records "
            "(verifications) or step labels (completions, labels)"
        )
    what = what or _DEFAULT[kind]
    if what not in _ALLOWED[kind]:
        raise InputError(f"{run} is a {kind} run: it exports as {' or '.join(_ALLOWED[kind])}, not {what}")
    if kind == "label":
        export = _label_export(run, what, Path(decisions) if decisions else None, items)
    elif kind == "grade":
        export = _grade_export(run, items, Path(input_path) if input_path else None)
    else:
        export = _steps_export(run, items)
    if not export.rows:
        raise InputError(f"{run}: no {what} row to export ({_json(export.counts)})")
    from ..runner import settings_path

    try:
        export.settings = json.loads(settings_path(run).read_text())
    except (OSError, ValueError):
        export.settings = {}
    return export


def _card(export: Export, date: str) -> str:
    settings = export.settings
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*",
        "tags:",
        "- proofcritic",
        "---",
        "",
        f"# proofcritic export: {export.what} of {export.run.name}",
        "",
        f"- exported: {date}",
        f"- run: `{export.run}` ({export.kind} run)",
        f"- rows: {len(export.rows)}",
        f"- model: {settings.get('model') or 'unknown (no settings file beside the run)'}",
        f"- prompts: {settings.get('prompts') or 'unknown'}",
        "",
        "## Counts",
        "",
    ]
    for key, value in export.counts.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
            lines.append(f"- {key}: {shown}")
        else:
            lines.append(f"- {key}: {value}")
    lines += ["", "## Settings", ""]
    if settings:
        lines += ["```json", json.dumps(settings, indent=2, ensure_ascii=False), "```"]
    else:
        lines.append("No `<output>.settings.json` beside the run.")
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_from_disk("DIR")  # or: datasets.load_dataset("parquet", data_files="DIR/data/*.parquet")',
        "```",
        "",
    ]
    return "\n".join(lines)


@contextmanager
def _quiet() -> Iterator[None]:
    """The library's progress bars off (the command prints its own summary), as they were after."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def export_run(export: Export, out: str | Path) -> Path:
    """Write ``export`` into the folder ``out`` (which must not exist or be empty): the data set
    (``save_to_disk``), its Parquet file and the card. Written to a temporary folder first and
    renamed into place, so a failure leaves nothing."""
    try:
        from datasets import Dataset
    except ImportError:  # pragma: no cover - depends on the environment
        from ..errors import missing

        raise missing("datasets", "hf") from None
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder: export into a new folder")
    dataset = Dataset.from_list(export.rows)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with _quiet():
            dataset.save_to_disk(str(staging))
            (staging / "data").mkdir()
            dataset.to_parquet(str(staging / PARQUET))
        (staging / "README.md").write_text(_card(export, date), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off here (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def push_to_hub(folder: str | Path, repo: str) -> None:
    """Push an exported folder to the Hub data set ``repo``: the rows through the library's
    ``push_to_hub`` (needs network and a token: ``huggingface-cli login`` or ``HF_TOKEN``), then
    the card. A failure is an :class:`InputError` in one line."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    folder = Path(folder)
    try:
        with _quiet():
            load_from_disk(str(folder)).push_to_hub(repo)
        HfApi().upload_file(
            path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md", repo_id=repo, repo_type="dataset"
        )
    except Exception as error:  # noqa: BLE001 - network, auth, repo name: the libraries raise many types
        message = " ".join(str(error).split()) or type(error).__name__
        raise InputError(f"pushing {folder} to the Hub ({repo}) failed: {message}; the local export is kept") from None
