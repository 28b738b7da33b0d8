"""Adaptive verification compute (issue #17): draw a proof's verifications in small batches and
stop as soon as the decision that consumes them is settled.

**Draws.** A fixed procedure asks one request for ``n`` samples. An adaptive one asks for samples
``a .. b-1`` of that same request (``Verifier.verify(..., n=b - a, first=a)``; the meta-verifier
alike) at the cumulative checkpoints of :func:`checkpoints`: ``batch``, ``2 * batch``,
``4 * batch``, ... and ``n`` (each later request doubles what was drawn, so a proof that needs all
``n`` costs about ``log2(n / batch) + 1`` requests). Sample i is cached as sample i of the request
(with a ``seed``, it is drawn with ``seed + i``), so an adaptive run and a fixed run on one cache
see the same draws, and a killed adaptive run resumes with the same decisions: its draws come
back from the cache.

**Exact decisions** (identical to the fixed procedure's on the same draws, whatever the scores):

- "passes all n" (:func:`verify_until_fail`): stops at the first checkpoint where a drawn
  verification is not 1 (an unscored one is no pass either); "the mean over the scored ones is
  1" (:func:`settle_mean` with the cut 1.0) likewise;
- a strict majority of ``m`` votes (:func:`vote_settled`): stops once the rest cannot change it;
- the labeling rule (``LabelConfig(adaptive=True)``, :func:`label_adaptively`): see there.

**Mean-based decisions** carry a stated error bound. :func:`mean_bounds` gives an interval that
holds the mean the fixed procedure would compute from all ``n`` draws, from the first ``t`` of
them, except with probability ``delta`` (Hoeffding on the difference between the draws to come
and those made, for scores in [0, 1]; exact at ``t = n``). :class:`Race` uses these intervals
for a top-k (or best) choice among many proofs (racing): a proof leaves the race once at least
``k`` others surely rank above it, or fewer than ``k`` others can; the error budget
``1 - confidence`` is split over the proofs and the checkpoints (a union bound), so the chosen
set differs from the fixed procedure's on the same draws with probability at most
``1 - confidence``. :func:`settle_mean` decides which bucket between given cuts holds one
proof's mean (e.g. whole points of a mean grade) the same way.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from .._constants import ADAPTIVE_PARAMS
from ..budget import BudgetExceeded
from ..llm import SampleCount
from ..types import MetaVerification, Problem, Verification

if TYPE_CHECKING:
    from ..meta_verifier import MetaVerifier
    from .label import AnalysisEvidence, LabelConfig

__all__ = [
    "AdaptiveLabel",
    "AdaptiveOptions",
    "Draws",
    "Race",
    "Sampling",
    "checkpoints",
    "draw_verifications",
    "label_adaptively",
    "mean_bounds",
    "next_checkpoint",
    "settle_mean",
    "verify_until_fail",
    "vote_settled",
]

#: the lowest score any verification can give (ternary 0; points 0 / max points)
LOWEST_SCORE = 0.0


class AdaptiveOptions(BaseModel):
    """The options of adaptive verification, shared by the configs that consume n verifications
    (``LabelConfig``, ``SearchConfig``): off by default, so the fixed procedures stay as they were."""

    model_config = ConfigDict(extra="forbid")

    adaptive: bool = Field(ADAPTIVE_PARAMS["adaptive"][0], description=ADAPTIVE_PARAMS["adaptive"][1])
    confidence: float = Field(
        ADAPTIVE_PARAMS["confidence"][0], gt=0.5, lt=1.0, description=ADAPTIVE_PARAMS["confidence"][1]
    )
    batch: SampleCount = Field(ADAPTIVE_PARAMS["batch"][0], description=ADAPTIVE_PARAMS["batch"][1])

    @model_serializer(mode="wrap")
    def _drop_while_off(self, handler: Any) -> Any:
        # a fixed run's records and settings stay what they were before these options existed
        data = handler(self)
        if isinstance(data, dict) and not self.adaptive:
            for name in ("adaptive", "confidence", "batch"):
                data.pop(name, None)
        return data


class Sampling(BaseModel):
    """How many samples an adaptive decision drew and why it stopped (each record carries one)."""

    planned: int = Field(..., description="Verifications the fixed procedure draws (n).")
    drawn: int = Field(..., description="Verifications drawn.")
    requests: int = Field(0, description="Verification requests made (one per batch; from the cache included).")
    meta_planned: int | None = Field(
        None, description="Meta-verifications the fixed rule makes of the analyses drawn (m per issue-reporting one)."
    )
    meta_drawn: int | None = Field(None, description="Meta-verifications drawn.")
    meta_requests: int | None = Field(None, description="Meta-verification requests made.")
    stopped: str = Field("", description="Why sampling stopped, in words.")


def checkpoints(n: int, batch: int) -> list[int]:
    """The cumulative draws at which an adaptive decision looks: ``batch``, ``2 * batch``,
    ``4 * batch``, ... then ``n`` (``[n]`` when ``batch >= n``)."""
    out, t = [], max(1, batch)
    while t < n:
        out.append(t)
        t *= 2
    return [*out, n]


def next_checkpoint(drawn: int, n: int, batch: int) -> int:
    """The first checkpoint past ``drawn`` (``n`` at most)."""
    return next((c for c in checkpoints(n, batch) if c > drawn), n)


async def draw_verifications(
    verifier: Any, problem: Problem, proof: str, have: list[Verification], upto: int, **kwargs: Any
) -> list[Verification]:
    """Samples ``len(have)`` .. ``upto - 1`` of the fixed request for ``proof``'s verifications
    (one request); returns them (``have`` is not changed)."""
    start = len(have)
    if upto <= start:
        return []
    return await verifier.verify(problem, proof, n=upto - start, first=start, **kwargs)


@dataclass
class Draws:
    """The verifications of one proof drawn so far, in sample order, and the requests they took."""

    n: int
    verifications: list[Verification] = field(default_factory=list)
    requests: int = 0
    stopped: str = ""

    @property
    def drawn(self) -> int:
        return len(self.verifications)

    @property
    def scores(self) -> list[float | None]:
        return [v.score for v in self.verifications]

    async def draw(self, verifier: Any, problem: Problem, proof: str, upto: int, **kwargs: Any) -> None:
        """Draw up to ``upto`` verifications in all (one request)."""
        new = await draw_verifications(verifier, problem, proof, self.verifications, min(upto, self.n), **kwargs)
        if new:
            self.verifications += new
            self.requests += 1

    def sampling(self) -> Sampling:
        return Sampling(planned=self.n, drawn=self.drawn, requests=self.requests, stopped=self.stopped)


async def verify_until_fail(verifier: Any, problem: Problem, proof: str, n: int, batch: int, **kwargs: Any) -> Draws:
    """Decide "passes all n" exactly: draw at the checkpoints and stop after the first batch holding a
    verification that is not 1 (the proof fails whatever the rest would say) or at ``n``. The
    pass/fail decision equals the fixed procedure's on the same draws."""
    draws = Draws(n)
    for upto in checkpoints(n, batch):
        await draws.draw(verifier, problem, proof, upto, **kwargs)
        failed = next((i for i, v in enumerate(draws.verifications) if v.score != 1), None)
        if failed is not None:
            score = draws.verifications[failed].score
            shown = "no score" if score is None else f"score {score:g}"
            draws.stopped = (
                f"fails: verification {failed + 1} has {shown}; stopped after {draws.drawn} of {n} verifications"
            )
            return draws
    draws.stopped = f"passes: all {n} verifications scored 1"
    return draws


# --------------------------------------------------------------------------- majorities


def vote_settled(votes_for: int, votes_against: int, drawn: int, m: int) -> dict[str, bool]:
    """What the rest of ``m`` votes can still change, after ``drawn`` of them: ``is_for`` (more
    than m/2 are for), ``can_be_for``, ``is_against``, ``can_be_against`` (strict majorities of
    ``m``, as :func:`proofcritic.pipelines.label.judge` counts them)."""
    rest = m - drawn
    return {
        "is_for": 2 * votes_for > m,
        "can_be_for": 2 * (votes_for + rest) > m,
        "is_against": 2 * votes_against > m,
        "can_be_against": 2 * (votes_against + rest) > m,
    }


# --------------------------------------------------------------------------- mean bounds


def mean_bounds(scores: Sequence[float | None], n: int, delta: float) -> tuple[float, float] | None:
    """An interval for the mean over the scored ones of all ``n`` draws (what the fixed
    procedure computes), from the first ``len(scores)`` of them (``None``: no score).

    Exact once all ``n`` are drawn; before that it holds except with probability at most
    ``delta``. With ``k`` scored draws of mean ``x`` so far and ``r = n - len(scores)`` draws to
    come, of which ``j <= r`` will carry a score, the fixed mean is
    ``x + j / (k + j) * (y - x)`` with ``y`` the mean of the ``j`` to come; ``y - x`` is a weighted
    sum of independent scores in [0, 1] with mean 0, so by Hoeffding
    ``|fixed mean - x| <= sqrt(log(2 / delta) / 2 * j / (k * (k + j)))`` except with probability
    ``delta``; the bound grows with ``j``, so ``j = r`` covers every case. The interval is also
    cut to what the scores can reach at all (every draw to come 0 or unscored; every one 1).
    ``None`` when no draw has a score yet (the mean may stay undefined)."""
    t = len(scores)
    scored = [s for s in scores if s is not None]
    k, rest = len(scored), max(0, n - t)
    if not k:
        return None
    total = float(sum(scored))
    mean = total / k
    if rest == 0:
        return mean, mean
    half = math.sqrt(math.log(2.0 / delta) / 2.0 * rest / (k * (k + rest)))
    lowest, highest = total / (k + rest), max(mean, (total + rest) / (k + rest))
    return max(lowest, mean - half), min(highest, mean + half)


async def settle_mean(
    verifier: Any,
    problem: Problem,
    proof: str,
    n: int,
    cuts: Sequence[float],
    *,
    confidence: float = 0.99,
    batch: int = 4,
    **kwargs: Any,
) -> Draws:
    """Which of the buckets between ``cuts`` (values in [0, 1]) holds the mean of ``n``
    verifications (the number of cuts at or below it), for a decision that reads no more than
    that (e.g. whole points: cuts halfway between them; "all n scored 1": the cut 1.0).

    Draws at the checkpoints until the interval of :func:`mean_bounds` (``delta`` =
    ``(1 - confidence) / looks``, a union bound over the checkpoints before the last) holds no cut
    strictly above its low end and at or below its high end; then the bucket is the fixed
    procedure's on the same draws with probability at least ``confidence``. A cut that only an
    all-1 run can reach (1.0) is exact: the interval's high end is below 1 as soon as one draw
    is. ``stopped`` names the interval and the draws."""
    looks = max(1, len(checkpoints(n, batch)) - 1)
    delta = (1.0 - confidence) / looks
    draws = Draws(n)
    for upto in checkpoints(n, batch):
        await draws.draw(verifier, problem, proof, upto, **kwargs)
        bounds = mean_bounds(draws.scores, n, delta)
        if bounds is None:
            if draws.drawn >= n:
                draws.stopped = f"no score in all {n} verifications"
            continue
        lo, hi = bounds
        if draws.drawn >= n or not any(lo < cut <= hi for cut in cuts):
            draws.stopped = (
                f"the mean of {n} lies in [{lo:.3g}, {hi:.3g}] (confidence {confidence:g}), "
                f"one bucket of the cuts {', '.join(f'{c:g}' for c in cuts)}: stopped after {draws.drawn} of {n}"
            )
            break
    return draws


# --------------------------------------------------------------------------- racing


@dataclass
class Race:
    """A top-``k`` choice by mean among proofs, each with up to ``n`` draws (racing).

    The fixed procedure ranks by the mean of all ``n`` draws, ties broken by ``tiebreak`` (larger
    first; e.g. the self-score, then the earlier slot), and takes the first ``k``; a proof none
    of whose draws has a score is not ranked. :meth:`decide` says, from the draws so far, which
    proofs are surely in that top ``k``, which are surely out, and which need more draws. With
    ``items`` proofs and the checkpoints of ``checkpoints(n, batch)``, every interval holds at
    once except with probability at most ``1 - confidence`` (each proof's interval at each
    checkpoint before the last gets ``(1 - confidence) / (items * looks)``); then the top ``k``
    found equals the fixed procedure's on the same draws.
    """

    n: int
    k: int
    confidence: float
    items: int
    batch: int

    @property
    def delta(self) -> float:
        looks = max(1, len(checkpoints(self.n, self.batch)) - 1)  # the last look is exact
        return (1.0 - self.confidence) / (max(1, self.items) * looks)

    def bounds(self, scores: Sequence[float | None]) -> tuple[float, float]:
        """The mean's interval, with ``-1`` standing for "not ranked" (no scored draw)."""
        found = mean_bounds(scores, self.n, self.delta)
        if found is None:
            return (-1.0, -1.0) if len(scores) >= self.n else (-1.0, 1.0)
        return found

    def decide(
        self, entries: Sequence[tuple[Hashable, Sequence[float | None], tuple]]
    ) -> tuple[list[Hashable], list[Hashable], list[Hashable]]:
        """``(in, out, open)`` for ``entries`` of ``(key, scores so far, tiebreak)``: the keys
        surely in the top ``k``, surely out of it, and still open (they need more draws)."""
        bounds = {key: self.bounds(scores) for key, scores, _ in entries}
        tie = {key: tb for key, _, tb in entries}
        lows = sorted((bounds[key][0], tie[key]) for key in tie)  # sort keys: (bound, tiebreak)
        highs = sorted((bounds[key][1], tie[key]) for key in tie)
        inside: list[Hashable] = []
        outside: list[Hashable] = []
        open_: list[Hashable] = []
        for key, _, _ in entries:
            lo, hi = bounds[key]
            if hi < 0:  # surely not ranked
                outside.append(key)
                continue
            # proofs that surely rank above this one: their lowest (mean, tiebreak) beats its highest
            surely_above = len(lows) - bisect.bisect_right(lows, (hi, tie[key]))
            # proofs that may rank above it (itself excluded): their highest reaches its lowest
            maybe_above = len(highs) - bisect.bisect_left(highs, (lo, tie[key])) - 1
            if surely_above >= self.k:
                outside.append(key)
            elif maybe_above < self.k and lo >= 0:
                inside.append(key)
            else:
                open_.append(key)
        return inside, outside, open_

    def pick(self, entries: Sequence[tuple[Hashable, Sequence[float | None], tuple]]) -> list[Hashable]:
        """The open proofs to draw next (none: the choice is settled): the ``k`` minus the surely
        chosen ones that rank highest by their optimistic (upper bound, tiebreak), among the open
        ones with draws left. Drawing the likeliest members first settles a pool with many exact
        ties (many proofs at mean 1) once ``k`` of them are drawn out, and the order never
        changes the guarantee: each proof's interval is bounded at each of its checkpoints."""
        inside, _, open_ = self.decide(entries)
        drawn = {key: len(scores) for key, scores, _ in entries}
        tie = {key: tb for key, _, tb in entries}
        left = [key for key in open_ if drawn[key] < self.n]
        if not left:
            return []
        bounds = {key: self.bounds(scores) for key, scores, _ in entries}
        left.sort(key=lambda key: (bounds[key][1], tie[key]), reverse=True)
        return left[: max(1, self.k - len(inside))]


# --------------------------------------------------------------------------- labeling


@dataclass
class AdaptiveLabel:
    """What :func:`label_adaptively` drew: every verification (sample order), the analyses (the
    scored ones, with their meta-verifications and verdicts), the :class:`Sampling` record, and
    the budget error that stopped the meta-verifications, if one did."""

    verifications: list[Verification]
    analyses: list[AnalysisEvidence]
    sampling: Sampling
    budget_error: BudgetExceeded | None = None


async def label_adaptively(
    verifier: Any,
    meta_verifier: MetaVerifier,
    problem: Problem,
    proof: str,
    config: LabelConfig,
) -> AdaptiveLabel:
    """The labeling rule of SPEC section 3 with early stopping; the label (status, label, rule)
    equals the fixed procedure's on the same draws.

    Verifications are drawn at the checkpoints. After each batch, the analyses with the lowest
    possible score (0) are meta-verified until ``k`` of them are valid: then the label is 0
    whatever the rest would say (no lower score exists, and valid analyses stay valid), and
    sampling stops. Otherwise all ``n`` are drawn; then only what the rules read is
    meta-verified: the analyses with the lowest score, until ``k`` are valid or fewer than ``k``
    can be (rule ``confirmed_lowest`` settled); if not, the issue-reporting analyses until one
    cannot be refuted (review) or all are refuted (``all_refuted``). Each analysis is
    meta-verified at its own checkpoints (``m // 2 + 1`` first: the least that can decide a
    majority, then the rest), and no further once what the rule asks of it is decided. An
    analysis whose verdict the label did not need keeps the votes drawn, verdict "unsettled".

    A budget spent while drawing verifications propagates (``BudgetExceeded``: the label
    cannot be decided); one spent while meta-verifying stops there and is returned with what was
    drawn (the rules then decide only what they can: a review item becomes ``budget_exhausted``).
    """
    from .label import AnalysisEvidence, judge

    n, m, k = config.n, config.m, config.k
    draws = Draws(n)
    analyses: list[AnalysisEvidence] = []
    meta_requests = 0
    meta_first = min(m, m // 2 + 1)

    def state(a: AnalysisEvidence) -> dict[str, bool]:
        return vote_settled(a.confirmations, a.refutations, len(a.meta_verifications), m)

    async def meta_step(a: AnalysisEvidence) -> None:
        nonlocal meta_requests
        have = len(a.meta_verifications)
        upto = next_checkpoint(have, m, meta_first)
        new: list[MetaVerification] = await meta_verifier.meta_verify(
            problem, proof, a.verification, n=upto - have, first=have
        )
        meta_requests += 1
        a.meta_verifications = [*a.meta_verifications, *new]
        a.meta_scores = [mv.score for mv in a.meta_verifications]
        _, a.confirmations, a.refutations = judge(a.meta_scores, config)

    async def settle_valid(group: list[AnalysisEvidence]) -> bool:
        """Meta-verify ``group`` (in order, ``k`` minus the valid ones at a time) until ``k``
        are valid (True) or fewer than ``k`` can be (False)."""
        while True:
            valid = [a for a in group if state(a)["is_for"]]
            if len(valid) >= k:
                return True
            open_ = [a for a in group if not state(a)["is_for"] and state(a)["can_be_for"]]
            if len(valid) + len(open_) < k:
                return False
            await asyncio.gather(*(meta_step(a) for a in open_[: k - len(valid)]))

    async def meta_phase() -> str:
        """All n drawn: meta-verify only what the rules read; returns why it stopped."""
        claims = [a for a in analyses if a.reports_issues]
        if not analyses:
            return f"all {n} verifications drawn; none has a score"
        if not claims:
            return f"all {n} verifications drawn; every analysis scored 1 (nothing to meta-verify)"
        lowest = min(a.score for a in analyses)
        if await settle_valid([a for a in analyses if a.score == lowest]):
            return f"all {n} verifications drawn; {k} analyses with the lowest score {lowest:g} confirmed"
        while True:
            if any(not state(a)["can_be_against"] for a in claims):
                return (
                    f"all {n} verifications drawn; fewer than k={k} lowest-score analyses can be valid "
                    "and an issue-reporting analysis cannot be refuted"
                )
            open_ = [a for a in claims if not state(a)["is_against"]]
            if not open_:
                return f"all {n} verifications drawn; every issue-reporting analysis refuted"
            await asyncio.gather(*(meta_step(a) for a in open_))

    stopped = ""
    budget_error: BudgetExceeded | None = None
    for upto in checkpoints(n, config.batch):
        before = draws.drawn
        await draws.draw(verifier, problem, proof, upto)
        for index in range(before, draws.drawn):
            v = draws.verifications[index]
            if v.score is not None:
                analyses.append(
                    AnalysisEvidence(index=index, score=v.score, reports_issues=v.score < 1, verification=v)
                )
        zeros = [a for a in analyses if a.score <= LOWEST_SCORE]
        if draws.drawn >= n or len(zeros) < k:
            continue
        try:
            settled = await settle_valid(zeros)
        except BudgetExceeded as error:
            budget_error, stopped = error, f"budget: {error} (after {draws.drawn} of {n} verifications)"
            break
        if settled:
            stopped = (
                f"{k} analyses with the lowest possible score {LOWEST_SCORE:g} were confirmed after "
                f"{draws.drawn} of {n} verifications: no later one can change the label"
            )
            break
    if not stopped:
        try:
            stopped = await meta_phase()
        except BudgetExceeded as error:
            budget_error, stopped = error, f"budget: {error} (while meta-verifying)"
    claims = [a for a in analyses if a.reports_issues]
    for a in claims:
        verdict, a.confirmations, a.refutations = judge(a.meta_scores, config)
        s = state(a)
        if verdict == "undecided" and (s["can_be_for"] or s["can_be_against"]):
            verdict = "unsettled"  # its votes stopped (or never started): the label did not need them
        a.verdict = verdict
    sampling = draws.sampling()
    sampling.stopped = stopped
    sampling.meta_planned = m * len(claims)
    sampling.meta_drawn = sum(len(a.meta_verifications) for a in claims)
    sampling.meta_requests = meta_requests
    return AdaptiveLabel(draws.verifications, analyses, sampling, budget_error)
