"""Live progress of a model-using run: on a terminal a display redrawn in place, elsewhere (a
log file, a pipe, CI) one plain line on stderr every ``PROOFCRITIC_PROGRESS_INTERVAL`` seconds.

What it shows comes from one place each: the model calls (done, in flight, from the cache,
failed) and tokens from the :class:`~proofcritic.llm.Model`'s own accounting; the items of a
batch from the runner's :class:`~proofcritic.runner.RunStats` (the ``on_progress`` callback);
a solving strategy's own state (search: round, pool, verified proofs, verifications, best mean;
refine, agent, critic: round or iteration and the best self-score or latest verdict) from the
strategy's progress hook (:data:`~proofcritic.pipelines.RoundHook`), the same hook the
service turns into its ``round`` events.

A run that ends before the first interval prints no line. ``PROOFCRITIC_PROGRESS_INTERVAL=0``
turns the plain lines off (the terminal display stays).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

    from .llm import Model
    from .runner import RunStats

__all__ = ["DEFAULT_INTERVAL", "PROGRESS_INTERVAL_ENV", "LiveProgress", "progress_interval"]

PROGRESS_INTERVAL_ENV = "PROOFCRITIC_PROGRESS_INTERVAL"
#: seconds between the plain progress lines when stderr is not a terminal
DEFAULT_INTERVAL = 10.0
#: strategy states a line shows at most (the most recently reported)
_STATES_SHOWN = 3


def progress_interval() -> float:
    """Seconds between plain progress lines: ``PROOFCRITIC_PROGRESS_INTERVAL`` (default 10; 0:
    no lines). A value that is not a number of seconds, 0 or more, is an input error."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise InputError(
            f"{PROGRESS_INTERVAL_ENV} must be a number of seconds, 0 or more (0: no progress lines), not {raw!r}"
        )
    return value


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class LiveProgress:
    """The progress of one run, shown while the ``with`` block runs.

    ``label`` names the work (``grading``, ``search``); ``models`` are the models whose calls
    and tokens it shows; ``batch`` shows items done of the total (from :meth:`update`), with
    ``extra(stats)`` words after them (``3 labeled, 1 to review``). :meth:`update` is a
    runner's ``on_progress``; :meth:`on_round` a strategy's progress hook. ``interval``:
    seconds between plain lines (default :func:`progress_interval`); ``transient``: the
    terminal display is cleared at the end (default: for a run that is not a batch).
    """

    def __init__(
        self,
        label: str,
        console: Console,
        models: Sequence[Model | None] = (),
        *,
        batch: bool = False,
        extra: Callable[[RunStats], str] | None = None,
        interval: float | None = None,
        transient: bool | None = None,
    ):
        self.label = label
        self.console = console
        self.models = [m for m in models if m is not None]
        self.batch = batch
        self.extra = extra
        self.interval = progress_interval() if interval is None else interval
        self.transient = (not batch) if transient is None else transient
        self.stats: RunStats | None = None
        self._states: dict[str, tuple[int, dict[str, Any]]] = {}
        self._started = time.monotonic()
        self._live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the sources ---------------------------------------------------------------------------
    def update(self, stats: RunStats) -> None:
        """A runner's ``on_progress``: the batch's items (and a solve batch's strategy states)."""
        self.stats = stats

    __call__ = update  # the LiveProgress is itself an ``on_progress`` callback

    def on_round(self, problem_id: str, round_: int, state: dict[str, Any]) -> None:
        """A strategy's progress hook: its latest state for ``problem_id``."""
        self._states.pop(problem_id, None)  # re-inserted last: the dict's order is recency
        self._states[problem_id] = (round_, state)

    # -- what it shows -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _items(self) -> str:
        stats = self.stats
        if stats is None:
            return "starting"
        parts = [f"{stats.done:,}/{stats.total:,} items"]
        if stats.errors:
            parts.append(f"{stats.errors:,} error(s)")
        if self.extra is not None:
            parts.append(self.extra(stats))
        worked = stats.done - stats.skipped
        if worked > 0 and stats.done < stats.total:
            parts.append(f"ETA {_clock(self.elapsed() * (stats.total - stats.done) / worked)}")
        return ", ".join(p for p in parts if p)

    def _calls(self) -> str:
        calls = cached = failed = in_flight = tokens = 0
        for model in self.models:
            usage = model.usage
            calls += usage.calls
            cached += usage.cached_calls
            failed += usage.failed_calls
            tokens += usage.prompt_tokens + usage.completion_tokens
            in_flight += model.in_flight
        text = f"calls {calls:,} done, {in_flight:,} in flight"
        if cached:
            text += f", {cached:,} from cache"
        if failed:
            text += f", {failed:,} failed"
        return f"{text}; tokens {tokens:,}"

    def _strategy_states(self) -> list[str]:
        from .pipelines import progress_text

        states = dict(self._states)  # copied at once: the hook may add one meanwhile
        running = (self.stats.extra.get("running") if self.stats is not None else None) or {}
        states.update(dict(running))
        shown = list(states.items())[-_STATES_SHOWN:]
        lines = [f"{problem_id}: {progress_text(round_, state)}" for problem_id, (round_, state) in shown]
        if len(states) > len(shown):
            lines.append(f"(and {len(states) - len(shown)} more in progress)")
        return lines

    def line(self) -> str:
        """The plain progress line: label, items, calls, tokens, elapsed, strategy states."""
        parts = [self._items()] if self.batch else []
        if self.models:
            parts.append(self._calls())
        parts.append(f"elapsed {_clock(self.elapsed())}")
        parts.extend(self._strategy_states())
        return f"progress: {self.label}: " + "; ".join(parts)

    def _render(self) -> Any:
        head = Table.grid(padding=(0, 1))
        row: list[Any] = [Text(self.label, style="bold")]
        if self.batch:
            stats = self.stats
            row.append(
                ProgressBar(
                    total=stats.total if stats is not None else None,
                    completed=stats.done if stats is not None else 0,
                    width=30,
                )
            )
            row.append(Text(self._items()))
        row.append(Text(f"{self._calls() + '; ' if self.models else ''}elapsed {_clock(self.elapsed())}"))
        head.add_row(*row)  # the grid takes as many columns as the row has
        return Group(head, *(Text("  " + s, style="dim") for s in self._strategy_states()))

    # -- showing it ----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._started = time.monotonic()
        if self.console.is_terminal:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=4,
                transient=self.transient,
                redirect_stdout=False,
            )
            self._live.start()
        elif self.interval > 0:
            self._thread = threading.Thread(target=self._lines, name="proofcritic-progress", daemon=True)
            self._thread.start()
        return self

    def _lines(self) -> None:
        while not self._stop.wait(self.interval):
            self.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._live is not None:
            self._live.stop()
            self._live = None
