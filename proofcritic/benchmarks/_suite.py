"""The ``Suite`` record: one declarative definition per benchmark (data + solve + score).

A suite says where its data lives (``path``, relative to the data root), how that location is
read into records (``read``; JSON/JSONL/CSV by default), an optional pass over all records
(``prepare``), which records it keeps (``where``) and how a record becomes an item (``item``).
Solving suites make :class:`SolveItem`; grading suites
make :class:`GradeItem` (a proof with human points); step suites make :class:`StepItem` (a
solution with its first wrong step). ``max_points`` is the suite's points scale
(``None`` when it varies per item) and ``buckets`` the named grades it is scored in, if any.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from ..errors import InputError, validation_line
from ..types import Problem
from ._data import data_root, hf_records, hf_spec, read_records
from ._items import GradeItem, SolveItem, StepItem

if TYPE_CHECKING:  # formal suites make FormalProblems (imported where made: pipelines load slowly)
    from ..pipelines.formal import FormalProblem

    Item = SolveItem | GradeItem | StepItem | FormalProblem
else:
    Item = SolveItem | GradeItem | StepItem
Kind = Literal["solve", "grade", "steps", "formal"]


@dataclass(frozen=True)
class Suite:
    """A named benchmark: its data, what it is for, and its points scale."""

    name: str
    kind: Kind
    description: str
    max_points: float | None
    item: Callable[[dict[str, Any]], Item]
    path: str | None = None
    read: Callable[[Path], list[dict[str, Any]]] = read_records
    where: Callable[[dict[str, Any]], bool] | None = None
    prepare: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
    buckets: dict[str, float] | None = None
    hf_id: str | None = None

    def load(
        self,
        data_dir: str | Path | None = None,
        limit: int | None = None,
        source: str | Path | None = None,
    ) -> list[Item]:
        """The suite's items: from ``source`` (a path or Hugging Face id) if given, else from the data root."""
        if limit is not None and limit < 0:
            raise InputError(f"limit must be >= 0, got {limit}")
        records, origin = self._records(data_dir, source)
        if self.prepare is not None:
            records = self.prepare(records)
        items: list[Item] = []
        seen: set[str] = set()
        for record in records:
            if self.where is not None and not self.where(record):
                continue
            try:
                item = self.item(record)
            except ValidationError as error:
                raise InputError(f"{origin} record {record.get('_line', '?')}: {validation_line(error)}") from None
            except InputError as error:
                raise InputError(f"{origin} record {record.get('_line', '?')}: {error}") from None
            key = item_id(item)
            if key in seen:
                raise InputError(f"{origin}: duplicate item id {key!r} in suite {self.name!r}")
            seen.add(key)
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
        if not items and limit != 0:
            raise InputError(f"suite {self.name!r} found no items in {origin}")
        return items

    def _records(self, data_dir: str | Path | None, source: str | Path | None) -> tuple[list[dict[str, Any]], str]:
        if source is not None:
            spec = hf_spec(source) if isinstance(source, str) else None
            if spec is not None:
                return hf_records(*spec), f"hf:{spec[0]}"
            return self.read(Path(source).expanduser()), str(source)
        if self.path is None:
            hint = f" or the Hugging Face id {self.hf_id}" if self.hf_id else ""
            raise InputError(f"suite {self.name!r} has no copy in the data folder; pass its file path{hint} as source")
        location = data_root(data_dir) / self.path
        if not location.exists():
            raise InputError(f"data for suite {self.name!r} not found: {location}")
        return self.read(location), str(location)


def item_id(item: Item) -> str:
    """The id an item is known by in a run (unique within a suite)."""
    return item.id if isinstance(item, (GradeItem, StepItem)) else item.problem.id


def make_problem(**fields: Any) -> Problem:
    """A Problem whose invalid fields (an empty statement, ...) become an InputError."""
    try:
        return Problem(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        raise InputError(validation_line(error)) from None


def text_or_none(value: Any) -> str | None:
    """A stripped string, or None for blanks and the string ``"null"`` (DeepSeekMath-V2 inputs)."""
    if value is None:
        return None
    text = str(value).strip()
    return None if not text or text.lower() in {"null", "none", "nan"} else text


def number(value: Any, what: str) -> float:
    """A float from a JSON/CSV cell; anything else is an InputError naming ``what``."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not a number: {value!r}") from None
