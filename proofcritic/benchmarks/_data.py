"""Where suite data lives and how records are read from it.

The data root is found once per call: an explicit ``data_dir`` wins; otherwise the first
existing of ``./shared/data`` and ``../shared/data``, tried relative to the current directory
and then to the repository root (the folder above the ``proofcritic`` package). Only the CLI
reads environment variables; it passes ``--data-dir`` here.

Records come from JSON lists, JSONL or CSV files, or from a Hugging Face dataset id
(``hf:owner/name`` or ``hf:owner/name:split``, or a bare ``owner/name`` that is not a path);
``datasets`` is imported only then.
"""

from __future__ import annotations

import csv
import io as _io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingDependencyError
from ..io import iter_jsonl, read_text

#: the package's repository root: proofcritic/benchmarks/_data.py -> parents[2]
REPO_ROOT = Path(__file__).resolve().parents[2]
_RELATIVE = (Path("shared") / "data", Path("..") / "shared" / "data")
_HF_BARE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv", ".txt", ".tex", ".parquet"}


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder the bundled suites are read from (see the module docstring for the order)."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise InputError(f"data folder not found: {root}")
        return root
    tried: list[Path] = []
    for base in (Path.cwd(), REPO_ROOT):
        for relative in _RELATIVE:
            candidate = (base / relative).resolve()
            if candidate in tried:
                continue
            tried.append(candidate)
            if candidate.is_dir():
                return candidate
    listing = ", ".join(str(p) for p in tried)
    raise InputError(f"no data folder found (tried {listing}); pass data_dir / --data-dir")


def norm_key(name: str) -> str:
    """A column name reduced for matching: ``"Points (0-7)"`` -> ``"points"``, ``"Problem ID"`` -> ``"problem_id"``."""
    name = re.sub(r"\(.*?\)", "", str(name)).strip().lower()
    return re.sub(r"[\s\-]+", "_", name)


def normalized(record: dict[str, Any]) -> dict[str, Any]:
    """The record with normalized keys; blank strings dropped (first of two clashing keys wins)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, str) and not value.strip():
            continue
        out.setdefault(norm_key(key), value)
    return out


def pick(record: dict[str, Any], *names: str) -> Any:
    """The first non-blank value of a normalized record among ``names`` (normalized too)."""
    for name in names:
        value = record.get(norm_key(name))
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def need(record: dict[str, Any], *names: str, where: str = "record") -> Any:
    """Like :func:`pick`, but a missing value is an InputError naming the columns tried."""
    value = pick(record, *names)
    if value is None:
        raise InputError(f"{where}: no value in column {' / '.join(repr(n) for n in names)}")
    return value


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``.json`` (list of objects), ``.jsonl`` or ``.csv`` file; bad lines are InputErrors."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        if not p.is_file():
            raise InputError(f"data file not found: {p}")
        records = []
        for number, record in iter_jsonl(p):
            if isinstance(record, InputError):
                raise InputError(f"{p}: {record}")
            record.setdefault("_line", number)
            records.append(record)
        return records
    text = read_text(p, "data file")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{p} is not valid JSON ({error.msg}, line {error.lineno})") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("problems", [data]))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{p} is not a JSON list of objects")
        return [dict(r, _line=i) for i, r in enumerate(data, start=1)]
    if suffix in {".csv", ".tsv"}:
        reader = csv.DictReader(_io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise InputError(f"{p} has no header row")
        return [dict(row, _line=i) for i, row in enumerate(reader, start=2)]
    raise InputError(f"unsupported data file type {suffix or '(none)'!r}: {p} (use .json, .jsonl or .csv)")


def hf_spec(source: str) -> tuple[str, str | None] | None:
    """``(dataset id, split)`` when ``source`` names a Hugging Face dataset rather than a path."""
    if source.startswith("hf:"):
        name, _, split = source[3:].lstrip("/").partition(":")
        return name, split or None
    if Path(source).expanduser().exists() or Path(source).suffix.lower() in _FILE_SUFFIXES:
        return None
    return (source, None) if _HF_BARE.match(source) else None


def hf_records(dataset_id: str, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset (needs network and the ``eval`` extra)."""
    try:
        import datasets  # optional dependency, imported on use
    except ImportError:
        raise MissingDependencyError("datasets", "hf") from None
    try:
        loaded = datasets.load_dataset(dataset_id, split=split or "train")
    except Exception as error:  # noqa: BLE001 - the hub raises many kinds; the user needs one line
        raise InputError(f"could not load Hugging Face dataset {dataset_id!r}: {error}") from None
    return [dict(row, _line=i) for i, row in enumerate(_rows(loaded), start=1)]


def _rows(loaded: Any) -> Iterable[dict[str, Any]]:
    return (dict(row) for row in loaded)


def records_from(source: str | Path) -> list[dict[str, Any]]:
    """Records from a file path or a Hugging Face dataset id (see :func:`hf_spec`)."""
    spec = hf_spec(str(source)) if isinstance(source, str) else None
    if spec is not None:
        return hf_records(*spec)
    return read_records(source)
