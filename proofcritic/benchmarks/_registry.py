"""The registry of named suites: ``SUITES``, ``get_suite`` and ``load_suite``."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from . import answer_suites, competitions, custom, formal_suites, opc, processbench, proofbench, usamo
from ._items import GradeItem, SolveItem
from ._suite import Kind, Suite

#: every named suite, solving suites first
SUITES: dict[str, Suite] = {
    suite.name: suite
    for family in (competitions, proofbench, usamo, answer_suites, opc, custom, processbench, formal_suites)
    for suite in family.SUITES
}


def suite_names(kind: Kind) -> list[str]:
    """The suites of ``kind`` ("solve", "grade" or "steps") that load by name from the data folder, in
    registry order (``problems``, ``graded`` and suites without a copy there need a file)."""
    return [name for name, suite in SUITES.items() if suite.kind == kind and suite.path is not None]


def get_suite(name: str) -> Suite:
    """The suite called ``name``; an unknown name is an InputError that lists the known ones."""
    try:
        return SUITES[name.strip().lower()]
    except KeyError:
        raise InputError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}") from None


def load_suite(
    name: str,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    source: str | Path | None = None,
) -> list[SolveItem] | list[GradeItem]:
    """The items of suite ``name``: read from ``source`` (a file/folder path or a Hugging Face id)
    when given, else from the suite's place in the data root (see :func:`data_root`)."""
    return get_suite(name).load(data_dir=data_dir, limit=limit, source=source)  # type: ignore[return-value]
