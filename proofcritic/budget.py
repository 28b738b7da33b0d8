"""Budgets on model calls and tokens, per problem and per run.

A pipeline runs each problem inside ``with budget_scope(run_budget.child(...))``; every model
call made in that scope (in any task started from it) is checked against the scope's budget and
its parents before it starts, and charged after. A call that finds a budget spent raises
:class:`BudgetExceeded`; pipelines catch it and return their best result so far, marked as
budget-limited.

Cached answers are charged like new ones, so a run that resumes after a kill replays the
same decisions and stops at the same point. The check happens before a call, so calls already
in flight when a budget runs out still finish: a budget can be overshot by at most the number of
concurrent calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import ProofcriticError


class BudgetExceeded(ProofcriticError):
    """A call or token budget is spent."""


@dataclass
class Budget:
    """Limits on calls and tokens (``None``: no limit), with what has been spent so far."""

    max_calls: int | None = None
    max_tokens: int | None = None
    name: str = "run"
    parent: Budget | None = None
    calls: int = 0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def child(self, max_calls: int | None = None, max_tokens: int | None = None, name: str = "problem") -> Budget:
        """A budget inside this one: spending in the child is spent in this one too."""
        return Budget(max_calls=max_calls, max_tokens=max_tokens, name=name, parent=self)

    def spent_reason(self) -> str | None:
        """Why this budget or a parent is spent, or ``None`` while there is budget left."""
        budget: Budget | None = self
        while budget is not None:
            if budget.max_calls is not None and budget.calls >= budget.max_calls:
                return f"{budget.name} budget of {budget.max_calls} calls is spent"
            if budget.max_tokens is not None and budget.tokens >= budget.max_tokens:
                return f"{budget.name} budget of {budget.max_tokens} tokens is spent"
            budget = budget.parent
        return None

    @property
    def exhausted(self) -> bool:
        return self.spent_reason() is not None

    def check(self) -> None:
        """Raise :class:`BudgetExceeded` if this budget or a parent is spent."""
        reason = self.spent_reason()
        if reason is not None:
            raise BudgetExceeded(reason)

    def charge(self, calls: int = 0, tokens: int = 0) -> None:
        budget: Budget | None = self
        while budget is not None:
            with budget._lock:
                budget.calls += calls
                budget.tokens += tokens
            budget = budget.parent


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("proofcritic_budget", default=None)


def current_budget() -> Budget | None:
    """The budget of the running scope, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def budget_scope(budget: Budget | None) -> Iterator[Budget | None]:
    """Charge model calls made inside this block (and tasks started from it) to ``budget``."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


#: what the samples of each kind of call are, in words
_SAMPLE_NOUNS = {
    "generation": "proofs",
    "verification": "verifications",
    "meta-verification": "meta-verifications",
    "judge": "verdicts",
    "read-out": "read-outs",
}


@dataclass
class CallPlan:
    """The model calls a piece of work plans, at most (a strategy may stop sooner), by kind
    (``generation``, ``verification``, ``meta-verification``, ``judge``, ``read-out``): the
    requests and the samples they ask for (one request may ask for n samples; a budget's
    ``--max-calls`` counts requests). Each strategy and batch command computes its own
    (``SearchStrategy.plan()``, ...); the CLI prints it before a large run and for ``--dry-run``."""

    calls: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    note: str = ""
    """How the numbers come about, in words (kept by :meth:`times`, not by ``+``)."""

    def add(self, kind: str, calls: int, samples: int | None = None) -> CallPlan:
        """Add ``calls`` requests of ``kind`` asking for ``samples`` samples (default: one
        each); returns this plan."""
        if calls:
            self.calls[kind] = self.calls.get(kind, 0) + calls
            self.samples[kind] = self.samples.get(kind, 0) + (calls if samples is None else samples)
        return self

    def __add__(self, other: CallPlan) -> CallPlan:
        out = CallPlan(dict(self.calls), dict(self.samples))
        for kind, calls in other.calls.items():
            out.add(kind, calls, other.samples.get(kind, calls))
        return out

    def times(self, k: int) -> CallPlan:
        """This plan repeated ``k`` times (``k`` items, or ``k`` runs of one problem)."""
        return CallPlan(
            {kind: c * k for kind, c in self.calls.items()},
            {kind: s * k for kind, s in self.samples.items()},
            self.note,
        )

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def text(self) -> str:
        """``2,529 model calls: 481 generation (2,048 proofs), 2,048 verification (131,072 verifications)``."""
        if not self.calls:
            return "no model calls"
        parts = []
        for kind, calls in self.calls.items():
            samples = self.samples.get(kind, calls)
            noun = _SAMPLE_NOUNS.get(kind, "samples")
            parts.append(
                f"{calls:,} {kind}" + ("" if samples == calls and kind == "read-out" else f" ({samples:,} {noun})")
            )
        total = self.total_calls
        return f"{total:,} model call{'' if total == 1 else 's'}: " + ", ".join(parts)
