"""Reading user files and JSONL records, and appending results so that runs can resume."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
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
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        os.write(self._fd, line.encode("utf-8"))

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
