"""Reading user files and JSONL records, and appending results so that runs can resume."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

# the default limit on each text of an input, and the environment variable that sets it
from ._constants import DEFAULT_MAX_INPUT_CHARS, MAX_INPUT_CHARS_ENV
from .errors import InputError, InputTooLargeError, validation_line
from .types import Problem, Proof

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

T = TypeVar("T")

_LIMIT: ContextVar[int | None] = ContextVar("proofcritic_max_input_chars", default=None)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: a JSON escape of a surrogate code point (only escapes can put one into a parsed string)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def max_input_chars() -> int:
    """The limit in force: the one set by :func:`input_limit`, else ``PROOFCRITIC_MAX_INPUT_CHARS``,
    else :data:`DEFAULT_MAX_INPUT_CHARS`; 0 means no limit."""
    value = _LIMIT.get()
    if value is not None:
        return value
    raw = os.environ.get(MAX_INPUT_CHARS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_INPUT_CHARS
    if not raw.isdigit():
        raise InputError(f"{MAX_INPUT_CHARS_ENV} must be a whole number of characters (0: no limit), not {raw!r}")
    return int(raw)


@contextmanager
def input_limit(chars: int | None) -> Iterator[None]:
    """Inputs read inside (and in the tasks and threads started inside) are held to ``chars``
    characters per text (0: no limit; None: leave the limit as it is)."""
    if chars is None:
        yield
        return
    if chars < 0:
        raise ValueError("the input limit must be 0 (none) or more characters")
    token = _LIMIT.set(chars)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def check_text(text: str, what: str, limit: int | None = None) -> str:
    """``text`` if it may be sent to a model, else an InputError: a lone surrogate (a JSON
    escape such as ``\\ud800`` that no UTF-8 text can hold), or more characters than ``limit``
    (default: :func:`max_input_chars`; 0: no limit)."""
    found = None if text.isascii() else _SURROGATE.search(text)  # ASCII holds no surrogate
    if found is not None:
        raise InputError(
            f"{what} holds a lone surrogate (\\u{ord(found.group()):04x} at character {found.start() + 1}), "
            "which is not Unicode text"
        )
    limit = max_input_chars() if limit is None else limit
    if limit and len(text) > limit:
        raise InputTooLargeError(
            f"{what} is {len(text):,} characters, over the limit of {limit:,} "
            f"(--max-input-chars or {MAX_INPUT_CHARS_ENV} raise it)"
        )
    return text


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where in a parsed JSON value a string (or a key) holds a lone surrogate, else None."""
    if isinstance(value, str):
        return path or "the value" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SURROGATE.search(str(key)):
                return path or "a key"
            found = _surrogate_path(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


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
        problem = Problem(id=p.stem, statement=check_text(text.strip(), f"problem file {p}"))
    updates: dict[str, Any] = {}
    if reference is not None:
        updates["reference_solution"] = check_text(
            read_text(reference, "reference solution file").strip(), f"reference solution file {reference}"
        )
    if guidelines is not None:
        updates["grading_guidelines"] = check_text(
            read_text(guidelines, "grading guidelines file").strip(), f"grading guidelines file {guidelines}"
        )
    if max_points is not None:
        updates["max_points"] = max_points
    if not updates:
        return problem
    try:  # validated as a whole, so that e.g. max_points keeps its bound
        return Problem.model_validate(problem.model_dump() | updates)
    except ValidationError as error:
        raise InputError(validation_line(error)) from None


def read_proof(path: str | Path) -> Proof:
    """A proof from a text file (its stem is the id), held to the input checks of :func:`check_text`."""
    p = Path(path)
    return Proof(text=check_text(read_text(p, "proof file"), f"proof file {p}"), id=p.stem)


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
        problem = Problem(**fields)
    except ValidationError as error:
        raise InputError(validation_line(error)) from None
    return check_problem(problem)


def check_problem(problem: Problem) -> Problem:
    """``problem`` if its texts pass :func:`check_text` (statement, reference solution, guidelines)."""
    check_text(problem.statement, "the problem statement")
    for field in ("reference_solution", "grading_guidelines"):
        value = getattr(problem, field)
        if value is not None:
            check_text(value, f"the {field.replace('_', ' ')}")
    return problem


def proof_from_record(record: dict) -> Proof:
    value = record.get("proof")
    if isinstance(value, dict):
        value = value.get("text") or value.get("proof")
    if value is None:
        raise InputError("record has no 'proof' field")
    if not isinstance(value, str):
        raise InputError(f"'proof' must be text, not {type(value).__name__}")
    check_text(value, "the proof")
    try:
        return Proof(text=value, id=str(record["id"]) if "id" in record else None)
    except ValidationError as error:
        raise InputError(validation_line(error)) from None


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
            where = _surrogate_path(record) if _SURROGATE_ESCAPE.search(raw) else None
            if where is not None:  # it would fail later, when the text is encoded (cache key, prompt, output)
                yield (
                    number,
                    InputError(
                        f"line {number} holds a lone surrogate (a \\ud800-\\udfff escape without its pair) in {where!r}, "
                        "which is not Unicode text"
                    ),
                )
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

    def write_model(self, head: dict, model: BaseModel, tail: dict) -> None:
        """Append ``{**head, **model.model_dump(mode="json"), **tail}`` as one line, the model
        serialised by pydantic straight to JSON (about a quarter of the CPU of a dict dumped by
        :mod:`json`); a model whose text cannot be UTF-8 (a lone surrogate) is written through
        :meth:`write`, which escapes it."""
        try:
            body = model.model_dump_json()
        except ValueError:  # pydantic's serialisation error: a lone surrogate
            self.write({**head, **model.model_dump(mode="json"), **tail})
            return
        parts = [json.dumps(head, ensure_ascii=False)[1:-1], body[1:-1], json.dumps(tail, ensure_ascii=False)[1:-1]]
        line = "{" + ", ".join(p for p in parts if p) + "}\n"
        os.write(self._fd, line.encode("utf-8"))

    def write_line(self, line: bytes) -> None:
        """Append one complete JSONL line as it is (its newline included)."""
        os.write(self._fd, line)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_jsonl(path: str | Path, parts: Iterable[str | Path]) -> int:
    """Append the complete lines of each file of ``parts`` to ``path`` (a partial last line of
    either, left by a kill, is dropped), then delete the part; the lines appended. A kill between
    the append and the delete leaves a part whose records are merged again next time: its ids
    then have two identical records, which :func:`compact_jsonl` makes one."""
    merged = 0
    with JsonlAppender(path) as out:
        for name in parts:
            part = Path(name)
            if not part.exists():
                continue
            for _, raw in _complete_lines(part):
                out.write_line(raw)
                merged += 1
            part.unlink()
    return merged


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
    record (identical errors share one tuple, so an outage's thousands of error records cost one
    message); and whether some id has more than one record."""

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
    shared: dict[tuple[str, str], tuple[str, str]] = {}
    records = 0
    if p.exists():
        for _, raw in _complete_lines(p):
            found = _record_key(raw, key)
            if found is None:
                continue
            item_id, record = found
            records += 1
            if "error" in record:
                error = (str(record.get("error_kind") or "error"), str(record["error"]))
                latest[item_id] = shared.setdefault(error, error)
            else:
                latest[item_id] = None
    return OutputIndex(latest, records > len(latest))


def latest_offsets(path: str | Path, key: str = "id") -> tuple[dict[str, int], bool]:
    """``({id: byte offset of its latest record}, whether some id has more than one record)`` of a
    JSONL file (streamed; an absent file has none). :func:`read_record_at` reads one back."""
    p = Path(path)
    offsets: dict[str, int] = {}
    records = 0
    if p.exists():
        for offset, raw in _complete_lines(p):
            found = _record_key(raw, key)
            if found is not None:
                records += 1
                offsets[found[0]] = offset
    return offsets, records > len(offsets)


def read_record_at(path: str | Path, offset: int) -> dict:
    """The JSON record of the line that starts at byte ``offset`` of ``path``."""
    with Path(path).open("rb") as handle:
        handle.seek(offset)
        return json.loads(handle.readline())


def iter_latest(path: str | Path, key: str = "id") -> Iterator[tuple[str, dict]]:
    """``(id, record)``: the latest record of each id of a JSONL file (later lines win), in the
    file order of those records, streamed: memory holds one offset per id, never the records
    (:func:`read_done` holds them all). An absent file has none."""
    offsets, duplicates = latest_offsets(path, key)
    if not offsets:
        return
    if not duplicates:  # every record is the latest of its id
        del offsets
        for _, raw in _complete_lines(Path(path)):
            found = _record_key(raw, key)
            if found is not None:
                yield found
        return
    for offset, raw in _complete_lines(Path(path)):
        found = _record_key(raw, key)
        if found is not None and offsets.get(found[0]) == offset:
            yield found


def latest_values(path: str | Path, value: Callable[[dict], T], key: str = "id") -> dict[str, T]:
    """``{id: value(record)}`` for the latest record of each id of a JSONL file (later lines win),
    in one streamed pass: memory holds the small values, never the records (for summaries that
    :func:`iter_latest` would read the file twice for). An absent file has none."""
    values: dict[str, T] = {}
    p = Path(path)
    if p.exists():
        for _, raw in _complete_lines(p):
            found = _record_key(raw, key)
            if found is not None:
                values[found[0]] = value(found[1])
    return values


def compact_jsonl(path: str | Path, order: Iterable[str] = (), key: str = "id") -> bool:
    """Keep only the latest record of each ``key`` in a JSONL file; True when it was rewritten.

    Nothing is written when every id has one record. Otherwise the kept records are written in
    ``order`` (the ids of the run's input, read as they are written: a generator over the input
    streams), then those of other ids in file order, then lines that are no record, to a
    temporary file that replaces ``path`` in one rename: a kill leaves either the old file or the
    new one. Memory holds byte offsets, never records.
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
    tmp = p.with_name(p.name + ".compact.tmp")
    with p.open("rb") as source, tmp.open("wb") as target:

        def copy(span: tuple[int, int]) -> None:
            source.seek(span[0])
            target.write(source.read(span[1]))

        for item_id in order:  # streamed: the order is read as it is written
            span = latest.pop(item_id, None)
            if span is not None:
                copy(span)
        for span in sorted(latest.values()):
            copy(span)
        for span in others:
            copy(span)
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
