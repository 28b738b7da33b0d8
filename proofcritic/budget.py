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
    parent: "Budget | None" = None
    calls: int = 0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def child(self, max_calls: int | None = None, max_tokens: int | None = None, name: str = "problem") -> "Budget":
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
