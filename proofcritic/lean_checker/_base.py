"""The one interface every Lean checker implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._analysis import DEFAULT_ALLOWED_AXIOMS
from ._types import LeanResult

if TYPE_CHECKING:
    from typing_extensions import Self


class LeanChecker(ABC):
    """Checks Lean 4 files: ``await checker.check(source)`` returns a :class:`LeanResult`.

    Every implementation takes ``timeout`` (seconds per check; a check that runs past it
    returns status ``timeout``), ``allowed_axioms`` and a bound on checks in flight, and can
    be used as an async context manager (``close`` stops any process it started).
    """

    name: str = "lean"

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        allowed_axioms: Iterable[str] = DEFAULT_ALLOWED_AXIOMS,
        probe_axioms: bool = True,
    ):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self.allowed_axioms = frozenset(allowed_axioms)
        self.probe_axioms = probe_axioms

    @abstractmethod
    async def check(self, source: str, *, timeout: float | None = None) -> LeanResult:
        """Check one Lean file given as text."""

    async def check_many(self, sources: Sequence[str], *, timeout: float | None = None) -> list[LeanResult]:
        """Check several files; the checker's own concurrency bound applies."""
        return list(await asyncio.gather(*(self.check(s, timeout=timeout) for s in sources)))

    async def close(self) -> None:  # noqa: B027 - not abstract: a checker may hold nothing
        """Release what the checker holds (processes, connections)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
