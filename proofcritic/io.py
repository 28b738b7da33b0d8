"""Reading user files and JSONL records, and appending results so that runs can resume."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import InputError
from .types import Problem, Proof


def read_text(path: str | Path, what: str = "file") -> str:
    """Text of a UTF-8 file; a missing, binary, undecodable or empty file is an InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} is a directory, not a file: {p}")
    data = p.read_bytes()
    if b"\x00" in data:
        raise InputError(f"{what} is binary, not text: {p}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{what} is not valid UTF-8 text ({error.reason} at byte {error.start}): {p}") from None
    if not text.strip():
        raise InputError(f"{what} is empty: {p}")
    return text


def read_problem(
    path: str | Path,
    *,
    reference: str | Path | None = None,
    guidelines: str | Path | None = None,
    max_points: float | None = None,
) -> Problem:
    """A problem from a text/Markdown file (the statement) or a JSON file (Problem fields)."""
    p = Path(path)
    text = read_text(p, "problem file")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"problem file is not valid JSON ({error.msg}, line {error.lineno}): {p}") from None
        problem = problem_from_record(data if isinstance(data, dict) else {"statement": data}, default_id=p.stem)
    else:
        problem = Problem(id=p.stem, statement=text.strip())
    updates: dict[str, Any] = {}
    if reference is not None:
        updates["reference_solution"] = read_text(reference, "reference solution file").strip()
    if guidelines is not None:
        updates["grading_guidelines"] = read_text(guidelines, "grading guidelines file").strip()
    if max_points is not None:
        updates["max_points"] = max_points
    return problem.model_copy(update=updates) if updates else problem


#: field names accepted in JSONL records, first match wins
_ALIASES = {
    "statement": ("statement", "problem", "question", "Problem"),
    "reference_solution": ("reference_solution", "reference", "solution", "Solution"),
    "grading_guidelines": ("grading_guidelines", "guidelines", "grading guidelines", "Grading guidelines"),
    "max_points": ("max_points", "points_max"),
}


def _first(record: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return value
    return None


def problem_from_record(record: dict, default_id: str = "problem") -> Problem:
    """A Problem from a record: either nested (``{"problem": {...}}``) or flat fields."""
    nested = record.get("problem")
    if isinstance(nested, dict):
        return problem_from_record(nested, default_id=str(record.get("id", default_id)))
    fields: dict[str, Any] = {"id": str(record.get("problem_id", record.get("id", default_id)))}
    for field, names in _ALIASES.items():
        value = _first(record, names)
        if value is not None:
            fields[field] = value
    if "statement" not in fields:
        raise InputError("record has no problem statement (field 'problem' or 'statement')")
    try:
        return Problem(**fields)
    except ValidationError as error:
        raise InputError(_one_line(error)) from None


def proof_from_record(record: dict) -> Proof:
    value = record.get("proof")
    if isinstance(value, dict):
        value = value.get("text") or value.get("proof")
    if value is None:
        raise InputError("record has no 'proof' field")
    if not isinstance(value, str):
        raise InputError(f"'proof' must be text, not {type(value).__name__}")
    try:
        return Proof(text=value, id=str(record["id"]) if "id" in record else None)
    except ValidationError as error:
        raise InputError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(x) for x in first.get("loc", ()))
    message = first.get("msg", str(error)).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | InputError]]:
    """``(line number, record)`` for each non-blank line; a bad line yields an InputError instead."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    with p.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, InputError(f"line {number} is not UTF-8 text")
                continue
            except json.JSONDecodeError as error:
                yield number, InputError(f"line {number} is not valid JSON: {error.msg}")
                continue
            if not isinstance(record, dict):
                yield number, InputError(f"line {number} is not a JSON object")
                continue
            yield number, record


class JsonlAppender:
    """Appends one JSON record per line, each with one write and a flush, so a killed run
    leaves at most one partial line, which the next run cuts off before appending."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _repair(self) -> None:
        """Cut a partial last line, reading the file backwards from its end only."""
        if not self.path.exists():
            return
        with self.path.open("r+b") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end == 0:
                return
            handle.seek(end - 1)
            if handle.read(1) == b"\n":
                return
            while end > 0:
                start = max(0, end - 65536)
                handle.seek(start)
                cut = handle.read(end - start).rfind(b"\n")
                if cut >= 0:
                    handle.truncate(start + cut + 1)
                    return
                end = start
            handle.truncate(0)

    def write(self, record: dict) -> None:
        try:
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a value: written as a JSON escape
            line = (json.dumps(record) + "\n").encode("ascii")
        os.write(self._fd, line)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_done(path: str | Path, key: str = "id") -> dict[str, dict]:
    """Records already in an output file, by ``key`` (later lines win); partial lines ignored."""
    p = Path(path)
    done: dict[str, dict] = {}
    if not p.exists():
        return done
    for raw in p.read_bytes().splitlines():
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and key in record:
            done[str(record[key])] = record
    return done


@dataclass(frozen=True)
class OutputIndex:
    """What a resumed run needs of an output file, without holding its records: for each id,
    ``None`` when its latest record is a result, or ``(error_kind, error)`` when it is an error
    record; and whether some id has more than one record."""

    latest: dict[str, tuple[str, str] | None]
    duplicates: bool


def _complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, line)`` of each line that ends in a newline (a partial last line, left by a
    kill, is no record: the next append cuts it off)."""
    with path.open("rb") as handle:
        offset = 0
        for raw in handle:
            if raw.endswith(b"\n"):
                yield offset, raw
            offset += len(raw)


def _record_key(raw: bytes, key: str) -> tuple[str, dict] | None:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or key not in record:
        return None
    return str(record[key]), record


def read_index(path: str | Path, key: str = "id") -> OutputIndex:
    """The :class:`OutputIndex` of an output file (streamed: one line in memory at a time)."""
    p = Path(path)
    latest: dict[str, tuple[str, str] | None] = {}
    records = 0
    if p.exists():
        for _, raw in _complete_lines(p):
            found = _record_key(raw, key)
            if found is None:
                continue
            item_id, record = found
            records += 1
            if "error" in record:
                latest[item_id] = (str(record.get("error_kind") or "error"), str(record["error"]))
            else:
                latest[item_id] = None
    return OutputIndex(latest, records > len(latest))


def compact_jsonl(path: str | Path, order: Iterable[str] = (), key: str = "id") -> bool:
    """Keep only the latest record of each ``key`` in a JSONL file; True when it was rewritten.

    Nothing is written when every id has one record. Otherwise the kept records are written in
    ``order`` (the ids of the run's input), then those of other ids in file order, then lines
    that are no record, to a temporary file that replaces ``path`` in one rename: a kill leaves
    either the old file or the new one. Memory holds byte offsets, never records.
    """
    p = Path(path)
    if not p.exists():
        return False
    latest: dict[str, tuple[int, int]] = {}
    others: list[tuple[int, int]] = []
    records = 0
    for offset, raw in _complete_lines(p):
        found = _record_key(raw, key)
        if found is None:
            if raw.strip():
                others.append((offset, len(raw)))
            continue
        records += 1
        latest[found[0]] = (offset, len(raw))
    if records == len(latest):
        return False
    spans = [latest.pop(item_id) for item_id in order if item_id in latest]
    spans += sorted(latest.values()) + others
    tmp = p.with_name(p.name + ".compact.tmp")
    with p.open("rb") as source, tmp.open("wb") as target:
        for offset, size in spans:
            source.seek(offset)
            target.write(source.read(size))
        target.flush()
        os.fsync(target.fileno())
    os.replace(tmp, p)
    return True


def write_json(path: str | Path, data: Any) -> None:
    """Write a JSON file through a temporary file and a rename, so a kill never leaves half a file."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, p)
