"""Solve problems with a strategy: the strategy registry, problem files, and batch solving.

``get_strategy("search", rounds=4)`` builds a strategy by name (``single``, ``refine``,
``search``, ``agent``, ``critic``; each is imported only when asked for). ``solve_problem`` solves one
problem under an optional budget; ``solve_jsonl`` solves every problem of a file on the shared
runner (:mod:`proofcritic.runner`), appending one result line per problem, so that a killed
run, started again, resumes: finished problems are skipped, and each unfinished one starts
again with its strategy's state dir (``<output>.state/<problem>/``) and the completion cache,
which replay everything already answered.

Budgets. ``max_calls`` / ``max_tokens`` bound each problem, ``run_max_calls`` /
``run_max_tokens`` the whole run. A strategy that meets a spent budget returns its best result
so far with ``budget_limited=True``. When the RUN budget is spent, the problems in progress end
that way and are written as final; problems that had not made a single call yet are not
written at all: they are left for a rerun (``stats.extra["left"]`` counts them), and the run
stops once the problems in progress are written.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._constants import STRATEGIES
from ..budget import Budget, BudgetExceeded, budget_scope, current_budget
from ..errors import InputError, first_error, validation_line
from ..io import problem_from_record, read_problem, read_text
from ..runner import JsonlItems, LeftForRerun, RunStats, read_items, run_jsonl
from ..types import Problem
from ._common import Roles, SolveResult, Strategy

__all__ = ["STRATEGIES", "get_strategy", "read_problem_items", "solve_jsonl", "solve_problem", "state_name"]

# STRATEGIES (name -> "module:class", imported lazily) is defined in proofcritic._constants

Item = tuple[str, int, "dict | InputError"]


def get_strategy(name: str, **params: Any) -> Strategy:
    """The strategy ``name`` built with ``params``; unknown names or parameters are InputErrors."""
    target = STRATEGIES.get(name)
    if target is None:
        raise InputError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise InputError(f"strategy {name!r} is not available ({module_name} is missing)") from None
    try:
        return getattr(module, class_name)(**params)
    except ValidationError as error:
        where, _, kind = first_error(error)
        if kind == "extra_forbidden":
            raise InputError(f"strategy {name!r} has no parameter {where!r}") from None
        raise InputError(f"strategy {name!r}: {validation_line(error)}") from None


def state_name(item_id: str) -> str:
    """A folder name for a problem id: the id itself when it is safe, else a cleaned id + hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._")[:80] or "problem"
    if safe != item_id:
        safe += "-" + hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:8]
    return safe


def read_problem_items(path: str | Path) -> list[Item] | JsonlItems:
    """``(id, line, record or InputError)`` for each problem of ``path``.

    ``.jsonl``: one problem per line (as :func:`proofcritic.runner.read_items`). ``.json``: one
    problem object, or a JSON array of problems such as the shared ``dsmv2/inputs/*.json``
    (``{id, question, problem_idx, ...}``: there ``problem_idx``, e.g. ``CMO2024-1``, is the id,
    since ``id`` repeats across files). Any other suffix: the file is the statement.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return read_items(p)
    if suffix != ".json":
        problem = read_problem(p)
        return [(problem.id, 1, problem.model_dump(exclude_none=True))]
    try:
        data = json.loads(read_text(p, "problem file"))
    except json.JSONDecodeError as error:
        raise InputError(f"problem file is not valid JSON ({error.msg}, line {error.lineno}): {p}") from None
    if isinstance(data, dict):
        problem = problem_from_record(data, default_id=p.stem)
        return [(problem.id, 1, data)]
    if not isinstance(data, list):
        raise InputError(f"problem file holds neither a problem object nor a list of problems: {p}")
    items: list[Item] = []
    seen: set[str] = set()
    for index, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            items.append((f"item-{index}", index, InputError(f"item {index} is not a JSON object")))
            continue
        value = next((record[k] for k in ("problem_idx", "problem_id", "id") if record.get(k) is not None), None)
        item_id = str(value) if value is not None else f"item-{index}"
        if item_id in seen:
            item_id = f"{item_id}#item-{index}"
        seen.add(item_id)
        items.append((item_id, index, {**record, "problem_id": item_id}))
    return items


def _with_scheme(roles: Roles, record: dict) -> Roles:
    """The roles for one batch record: with the points scale and a record's own marking scheme
    (``scheme`` or ``marking_scheme``, as in grade's batches), a verifier that uses it."""
    scheme = record.get("scheme") or record.get("marking_scheme")
    if scheme is None or roles.scale != "points":
        return roles
    verifier = copy.copy(roles.verifier)
    verifier.scheme = scheme  # type: ignore[attr-defined]  # a PointsVerifier (roles.scale)
    return dataclasses.replace(roles, verifier=verifier)


def _budget_limited(strategy: Strategy, problem: Problem, error: BudgetExceeded) -> SolveResult:
    """The result of a strategy that let a spent budget escape (it should not)."""
    return SolveResult(
        problem_id=problem.id, strategy=strategy.name, budget_limited=True, stop_reason=f"budget: {error}"
    )


async def solve_problem(
    strategy: Strategy,
    problem: Problem,
    roles: Roles,
    *,
    state_dir: str | Path | None = None,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    budget: Budget | None = None,
) -> SolveResult:
    """Solve one problem within ``max_calls`` / ``max_tokens`` (when given) and inside
    ``budget`` (e.g. a run budget shared with other problems, when given)."""
    if budget is not None:
        scope: Budget | None = budget.child(max_calls, max_tokens)
    else:
        scope = None if max_calls is None and max_tokens is None else Budget(max_calls, max_tokens, name="problem")
    with budget_scope(scope):
        try:
            return (await strategy.solve(problem, roles, state_dir=state_dir)).in_points(roles, problem)
        except BudgetExceeded as error:
            return _budget_limited(strategy, problem, error)


async def solve_jsonl(
    strategy: Strategy,
    roles: Roles,
    input_path: str | Path,
    output_path: str | Path,
    *,
    state_dir: str | Path | None = None,
    concurrency: int = 4,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    run_max_calls: int | None = None,
    run_max_tokens: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Solve every problem of ``input_path`` (see :func:`read_problem_items`) into ``output_path``.

    ``concurrency`` problems run at once (the model bounds the calls in flight). ``state_dir``
    defaults to ``<output_path>.state``. ``stats.extra`` holds ``rounds`` (rounds started, all
    problems together), ``running`` ({problem id: ``(round, state)``}: the strategy's latest
    progress report, see :data:`~proofcritic.pipelines.RoundHook`) and ``left``
    (problems left for a rerun because the run budget was spent); ``on_progress`` is called
    with each report too. See the module docstring for budgets.
    """
    items = read_problem_items(input_path)
    state_root = Path(state_dir) if state_dir is not None else Path(f"{output_path}.state")
    run_budget = None
    if run_max_calls is not None or run_max_tokens is not None:
        run_budget = Budget(run_max_calls, run_max_tokens, name="run")
    per_problem = max_calls is not None or max_tokens is not None
    stats = RunStats(total=len(items))  # the runner's own from its first report on

    def item_budget(parent: Budget | None) -> Budget | None:
        if parent is not None:
            return parent.child(max_calls, max_tokens)
        return Budget(max_calls, max_tokens, name="problem") if per_problem else None

    def on_round(problem_id: str, round_: int, state: dict[str, Any]) -> None:
        running = stats.extra.setdefault("running", {})
        if problem_id not in running or running[problem_id][0] != round_:  # a round started
            stats.extra["rounds"] = stats.extra.get("rounds", 0) + 1
        running[problem_id] = (round_, state)
        if on_progress:
            on_progress(stats)

    def run_budget_spent() -> bool:
        return run_budget is not None and run_budget.exhausted

    async def process(item_id: str, record: dict) -> dict:
        problem = problem_from_record(record, default_id=item_id)
        if run_budget_spent():
            raise LeftForRerun  # not written (a rerun solves it); the runner starts no further problem
        scope = current_budget()
        own = _with_scheme(roles, record)
        try:
            result = await strategy.solve(problem, own, state_dir=state_root / state_name(item_id))
            result.in_points(own, problem)
        except BudgetExceeded as error:
            result = _budget_limited(strategy, problem, error)
        finally:
            stats.extra.get("running", {}).pop(problem.id, None)
        if result.budget_limited and run_budget_spent() and scope is not None and scope.calls == 0:
            raise LeftForRerun  # the run budget was gone before this problem made a call
        return result.model_dump(mode="json")

    def progress(runner_stats: RunStats) -> None:
        nonlocal stats
        stats = runner_stats
        stats.extra.setdefault("rounds", 0)
        if on_progress:
            on_progress(stats)

    hook_owner = strategy if hasattr(strategy, "on_round") and strategy.on_round is None else None
    if hook_owner is not None:
        hook_owner.on_round = on_round
    try:
        stats = await run_jsonl(
            items,
            output_path,
            process,
            concurrency=concurrency,
            budget=run_budget,
            item_budget=item_budget if (run_budget is not None or per_problem) else None,
            on_progress=progress,
        )
    finally:
        if hook_owner is not None:
            hook_owner.on_round = None
    stats.extra["left"] = stats.total - stats.done
    if on_progress:
        on_progress(stats)
    return stats
