"""Pairwise tournaments: pick the best of several proofs of one problem by comparing them.

A :class:`Comparator` is shown two proofs and names the more complete and rigorous one
(template ``compare``; its final statement ``Based on my comparison, the better proof is:``
``\\boxed{1}`` or ``\\boxed{2}``, read strictly). Every match is asked in both orders, so that
a judge that prefers a position cancels itself out: the two answers agreeing make a win, and
disagreeing ones (or a format failure in either) make a draw (half a point each).

Two formats over a pool:

- :func:`knockout`: single elimination. Each round pairs the pool in seed order (the first with
  the last, ...); an odd one out gets a bye; a drawn match goes to the better seed. The last one
  standing wins. ``len(pool) - 1`` matches.
- :func:`swiss`: ``rounds`` rounds (default ``ceil(log2(len(pool)))``); each round pairs players
  with equal or close points who have not met (by standing, top down), one bye per round to the
  lowest player without one. Winner: most points, then the Buchholz score (the points of the
  opponents met), then seed.

Seeds are the pool order (callers may sort by another score first, e.g. a self-score or a
verifier mean). Matches are cached like every model call, so a rerun repeats nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from .._roles import Role
from ..llm import Usage, usage_scope
from ..parsing import marker_pattern, read_final_score, strip_thinking, truncation_error
from ..types import Problem, RoleOutput

FORMATS = ("knockout", "swiss")
COMPARE_TEMPLATE = "compare"
COMPARE_VARIABLES = {COMPARE_TEMPLATE: frozenset({"problem", "first", "second"})}
COMPARE_MARKER = "Based on my comparison, the better proof is:"
COMPARE_MARKER_RE = marker_pattern("based", "on", "my", "comparison,?", "the", "better", "proof", "is")


class Comparison(RoleOutput):
    """One answer of the comparator: ``choice`` 1 or 2 (None: a format failure)."""

    choice: int | None = None
    reason: str = ""


def parse_comparison(text: str, finish_reason: str | None = "stop") -> Comparison:
    """Read a comparator's answer; never raises."""
    body = strip_thinking(text)
    final = read_final_score(body, COMPARE_MARKER_RE, (1, 2))
    errors = [e for e in (truncation_error(finish_reason),) if e]
    if final.marker is None:
        errors.append(f"missing marker {COMPARE_MARKER!r}")
    elif final.error:
        errors.append(final.error)
    ok = not errors
    reason = (body[: final.marker.start()] if final.marker is not None else body).strip()
    return Comparison(
        raw=text,
        choice=int(final.score) if ok and final.score is not None else None,
        reason=reason,
        format_ok=ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


class Match(BaseModel):
    """One match between pool members ``a`` and ``b`` (indices), asked in both orders."""

    a: int
    b: int
    winner: int | None = Field(None, description="The index of the winner; None for a draw.")
    forward: Comparison = Field(description="a shown first")
    backward: Comparison = Field(description="b shown first")


class Comparator(Role):
    """Which of two proofs of a problem is more complete and rigorous (see the module)."""

    template = COMPARE_TEMPLATE

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts = self.prompts.template_set(COMPARE_TEMPLATE, COMPARE_VARIABLES[COMPARE_TEMPLATE])

    async def compare(self, problem: Problem, first: str, second: str) -> Comparison:
        """One answer: ``first`` shown as proof 1."""
        [answer] = await self.ask(self.render(problem=problem, first=first, second=second), parse_comparison)
        return answer

    async def match(self, problem: Problem, pool: Sequence[str], a: int, b: int) -> Match:
        """``pool[a]`` against ``pool[b]`` in both orders; a win needs both answers to agree."""
        forward, backward = await asyncio.gather(
            self.compare(problem, pool[a], pool[b]), self.compare(problem, pool[b], pool[a])
        )
        winner = None
        if forward.choice is not None and backward.choice is not None:
            first_says = a if forward.choice == 1 else b
            second_says = b if backward.choice == 1 else a
            winner = first_says if first_says == second_says else None
        return Match(a=a, b=b, winner=winner, forward=forward, backward=backward)


class Tournament(BaseModel):
    """The outcome of a tournament over a pool of proofs."""

    format: str
    winner: int = Field(description="The index in the pool of the proof picked.")
    points: list[float] = Field(description="Match points of each pool member (win 1, draw 0.5).")
    matches: list[Match]
    usage: Usage = Field(default_factory=Usage)


async def knockout(comparator: Comparator, problem: Problem, pool: Sequence[str]) -> Tournament:
    """Single elimination over ``pool`` (seeded in pool order; see the module)."""
    _check(pool)
    points = [0.0] * len(pool)
    matches: list[Match] = []
    alive = list(range(len(pool)))
    with usage_scope() as usage:
        while len(alive) > 1:
            pairs = [(alive[i], alive[-1 - i]) for i in range(len(alive) // 2)]
            bye = [alive[len(alive) // 2]] if len(alive) % 2 else []
            played = await asyncio.gather(*(comparator.match(problem, pool, a, b) for a, b in pairs))
            winners = []
            for game in played:
                _score(points, game)
                winners.append(
                    game.winner if game.winner is not None else min(game.a, game.b)
                )  # a draw: the better seed
            matches += played
            alive = sorted(winners + bye)
    return Tournament(format="knockout", winner=alive[0], points=points, matches=matches, usage=usage)


async def swiss(comparator: Comparator, problem: Problem, pool: Sequence[str], rounds: int | None = None) -> Tournament:
    """A Swiss tournament over ``pool`` (see the module)."""
    _check(pool)
    n = len(pool)
    rounds = max(1, math.ceil(math.log2(n))) if rounds is None else rounds
    if rounds < 1:
        raise ValueError("a Swiss tournament needs at least 1 round")
    points = [0.0] * n
    met: set[frozenset[int]] = set()
    opponents: list[list[int]] = [[] for _ in range(n)]
    byes: set[int] = set()
    matches: list[Match] = []
    with usage_scope() as usage:
        for _ in range(rounds if n > 1 else 0):
            standing = sorted(range(n), key=lambda i: (-points[i], i))
            if n % 2:  # the lowest player without a bye sits out, with a point
                sitter = next((i for i in reversed(standing) if i not in byes), standing[-1])
                byes.add(sitter)
                points[sitter] += 1
                standing.remove(sitter)
            pairs = _pairs(standing, met)
            played = await asyncio.gather(*(comparator.match(problem, pool, a, b) for a, b in pairs))
            for game in played:
                _score(points, game)
                met.add(frozenset((game.a, game.b)))
                opponents[game.a].append(game.b)
                opponents[game.b].append(game.a)
            matches += played
    buchholz = [sum(points[o] for o in opponents[i]) for i in range(n)]
    winner = min(range(n), key=lambda i: (-points[i], -buchholz[i], i))
    return Tournament(format="swiss", winner=winner, points=points, matches=matches, usage=usage)


async def run_tournament(format: str, judge: Role, problem: Problem, pool: Sequence[str]) -> Tournament:
    """A ``format`` ("knockout" or "swiss") tournament over ``pool`` (seeded in its order),
    judged by a :class:`Comparator` on ``judge``'s model, prompts and sampling (a verifier,
    say)."""
    if format not in FORMATS:
        raise ValueError(f"a tournament is {' or '.join(FORMATS)}, not {format!r}")
    comparator = Comparator(judge.model, prompts=judge.prompts, config=judge.config)
    return await (knockout if format == "knockout" else swiss)(comparator, problem, pool)


def _pairs(standing: list[int], met: set[frozenset[int]]) -> list[tuple[int, int]]:
    """Pair players top down, each with the next one it has not met (a rematch only when no
    other is left)."""
    left = list(standing)
    pairs = []
    while len(left) > 1:
        first = left.pop(0)
        partner = next((p for p in left if frozenset((first, p)) not in met), left[0])
        left.remove(partner)
        pairs.append((first, partner))
    return pairs


def _score(points: list[float], game: Match) -> None:
    if game.winner is None:
        points[game.a] += 0.5
        points[game.b] += 0.5
    else:
        points[game.winner] += 1


def _check(pool: Sequence[str]) -> None:
    if not pool:
        raise ValueError("a tournament needs at least one proof")


__all__ = [
    "COMPARE_MARKER",
    "FORMATS",
    "Comparator",
    "Comparison",
    "Match",
    "Tournament",
    "knockout",
    "parse_comparison",
    "run_tournament",
    "swiss",
]
