"""``search``: the high-compute search of DeepSeekMath-V2 (SPEC section 5), resumable.

Round 1 samples ``initial_samples`` proofs and verifies each ``verifications`` times (score =
mean). Each later round ranks the pool (all proofs so far) by mean score, then self-score,
takes the ``top_k`` best, and for each of the first ``trials`` of them writes one refinement
prompt showing the proof with up to ``analyses_per_proof`` of its analyses, lowest scores first
and at most ``max_per_score`` per distinct score (so 0 and 0.5 come before 1); each prompt yields
``samples_per_trial`` refined proofs, verified and added to the pool. The search stops when a
proof passes all its verifications (every score 1; ``stop_on_pass=False`` runs every round)
or after ``rounds`` rounds, round 1 included. The answer is the best proof by mean, then self-score (then the earliest);
with ``select`` "knockout" or "swiss" it is the winner of a pairwise tournament among the
``select_pool`` best by mean (seeded in that order, judged on the verifier's model by
:func:`~proofcritic.pipelines.tournament.run_tournament`; its comparisons are in ``plan()``,
cached like every call, so a rerun replays them; the transcript's ``tournament`` step has every
match with both answers' reasons and why the winner won). A spent budget (before or during the
tournament) answers the best mean, marked budget-limited. On the points scale (a
:class:`~proofcritic.verifier.PointsVerifier`) scores are points / max points, so a pass is full
marks on every verification, and a refinement prompt shows each grade as "x / 7 points" with its
issues (template ``points_evaluation``).

Defaults are the RELEASED settings (the paper's prose describes a pool of 64 proofs, the top 64
refined with one proof per pair; the released code uses): 128 initial samples, top 32, 32
trials, 4 samples per trial (the released code's 128 // 32), 64 verifications, 16 rounds. Temperature 1.0 and top_p 0.95
are the roles' default sampling settings.

Decided here: a proof's mean is over its scored verifications (a verification without a score,
e.g. a format failure in the default score mode ``text``, counts for nothing); a proof none of
whose verifications has a score is not ranked; a pass needs every one of the ``verifications``
scored 1, so an unscored one is never a pass. A format failure is not a proof (unless ``keep_invalid``); a proof whose text
repeats an earlier one is recorded as a duplicate and neither verified nor ranked (as in the
released code); a proof refined again in a later round shows its next analyses of each score
(a deterministic stand-in for the released code's shuffle); each refinement request carries
its own seed, derived from the generator's seed (or 0) and its round and trial, so that a prompt
repeated in a later round samples new proofs instead of replaying its cached answer; a round
with nothing to refine ends the search.

State: with a ``state_dir`` the pool is appended to ``<state_dir>/pool.jsonl`` as work finishes,
one ``proof`` line per generated proof (id, round, trial, sample, parent ids, proof text,
self-score and self-analysis, format status) and one ``verification`` line per verified proof
(scores, analyses and the other verification fields; raw outputs stay in the completion cache).
Ids are deterministic (``r<round>-t<trial>-s<sample>-<hash of statement and parents>``), so a
rerun after a kill replays every recorded request from the pool and asks the model only for
what is missing. A replayed request is checked against and charged to the budget with its
recorded calls and tokens, like a cached answer, so budgets decide the same way (up to the
calls that were in flight at once when a budget ran out). One process at a time per state dir.

Adaptive (``adaptive=True``, ``solve --strategy search --adaptive``; see
:mod:`proofcritic.pipelines.adaptive`): each proof's verifications are drawn in batches at the
checkpoints (``batch``, doubling, up to ``verifications``), samples of the same request the fixed
search makes (so the same draws, from the cache on a rerun). After each round's first batch, the
proofs that may still pass all their verifications are drawn until they fail or pass (exact);
then a :class:`~proofcritic.pipelines.adaptive.Race` draws the proofs whose place is open until
the top ``min(top_k, trials)`` (in the last round, or once a proof passed: the answer, or the
``select_pool`` of a tournament) is settled: the chosen set is the fixed search's on the same
draws with probability at least ``confidence``. The order within it, and the analyses a
refinement prompt shows, come from the verifications drawn. The pool file records each proof's
draws as they grow (a later line replaces an earlier), and a rerun replays them prefix by prefix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..budget import BudgetExceeded, CallPlan, current_budget
from ..generator import Candidate
from ..io import JsonlAppender
from ..llm import SampleCount, Usage
from ..types import Generation, Problem, Verification
from ..verifier import aggregate
from ._common import (
    ConfiguredStrategy,
    Roles,
    RoundHook,
    SolveResult,
    gather_within_budget,
    usable,
    verifier_evaluation_text,
)
from .adaptive import AdaptiveOptions, Race, checkpoints, next_checkpoint
from .single import tournament_calls

__all__ = ["Pool", "PoolProof", "SearchConfig", "SearchStrategy", "choose_analyses", "slot_id"]

_GENERATION_FIELDS = ("proof", "self_analysis", "self_score", "format_ok", "format_error", "finish_reason", "usage")


class SearchConfig(AdaptiveOptions):
    """Parameters of the ``search`` strategy; the defaults are the released settings (``adaptive``,
    ``confidence``, ``batch``: :class:`~proofcritic.pipelines.adaptive.AdaptiveOptions`, off)."""

    model_config = ConfigDict(extra="forbid")

    initial_samples: int = Field(128, ge=1, le=4096, description="Proofs sampled in round 1.")
    verifications: SampleCount = Field(64, description="Verifications per proof (score = mean).")
    top_k: int = Field(32, ge=1, description="Best proofs of the pool considered for refinement each round.")
    trials: int = Field(32, ge=1, description="Refinement prompts per round (each refines one of the top proofs).")
    samples_per_trial: SampleCount = Field(4, description="Refined proofs sampled per prompt.")
    analyses_per_proof: int = Field(
        8, ge=1, le=256, description="Analyses shown with a proof in its refinement prompt."
    )
    max_per_score: int = Field(4, ge=1, le=256, description="At most this many shown analyses per distinct score.")
    rounds: int = Field(16, ge=1, le=1000, description="Rounds in all, round 1 (initial sampling) included.")
    keep_invalid: bool = Field(False, description="Let format failures count as proofs (their best-effort text).")
    stop_on_pass: bool = Field(
        True, description="Stop once a proof passes all its verifications (False: run every round)."
    )
    select: Literal["mean", "knockout", "swiss"] = Field(
        "mean",
        description="How the answer is chosen: the best mean (then self-score), or the winner of a pairwise "
        "tournament (knockout or swiss, judged on the verifier's model) among the select_pool best by mean.",
    )
    select_pool: int = Field(8, ge=2, le=256, description="With a tournament: the proofs (best by mean) it is among.")


def slot_id(problem: Problem, round_: int, trial: int, sample: int, parents: list[str]) -> str:
    """Deterministic id of a proof slot; the hash ties it to the statement and the parents."""
    digest = hashlib.sha256("\n".join([problem.statement, *parents]).encode("utf-8")).hexdigest()[:8]
    return f"r{round_:02d}-t{trial:03d}-s{sample:03d}-{digest}"


def choose_analyses(
    verifications: list[Verification], limit: int = 8, per_score: int = 4, rotation: int = 0
) -> list[int]:
    """Indices of the analyses a refinement prompt shows: lowest scores first, at most
    ``per_score`` of each distinct score, ``limit`` in all. Unscored or blank analyses are left
    out. ``rotation`` k starts each score's list k * per_score further on (wrapping)."""
    groups: dict[float, list[int]] = {}
    for index, v in enumerate(verifications):
        if v.score is not None and v.analysis.strip():
            groups.setdefault(v.score, []).append(index)
    chosen: list[int] = []
    for score in sorted(groups):
        indices = groups[score]
        shift = (rotation * per_score) % len(indices)
        chosen += (indices[shift:] + indices[:shift])[:per_score]
    return chosen[:limit]


@dataclass
class PoolProof:
    """One proof of the pool. ``verifications`` are set once this run verified the proof or
    replayed its ``recorded`` verifications (those read from the pool file)."""

    id: str
    round: int
    trial: int
    sample: int
    parents: list[str]
    generation: Generation
    charge: dict[str, int]
    verifications: list[Verification] | None = None
    recorded: list[Verification] | None = None
    verification_charge: dict[str, int] = field(default_factory=dict)

    @property
    def slot(self) -> tuple[int, int, int]:
        return (self.round, self.trial, self.sample)

    @property
    def mean(self) -> float | None:
        return aggregate(self.verifications).mean if self.verifications else None

    def passes(self, n: int) -> bool:
        """Verified ``n`` times, every verification scored 1."""
        vs = self.verifications or []
        return len(vs) == n and all(v.score == 1 for v in vs)


class Pool:
    """The proofs of one problem, in memory and (with a path) appended to a JSONL file."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.proofs: dict[str, PoolProof] = {}
        self._out: JsonlAppender | None = None
        if self.path is not None:
            self._out = JsonlAppender(self.path)  # cuts a partial last line left by a kill
            self._load()

    def _load(self) -> None:
        for raw in self.path.read_bytes().splitlines():  # type: ignore[union-attr]
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if record.get("kind") == "proof" and record.get("id") not in self.proofs:
                self.proofs[record["id"]] = PoolProof(
                    id=record["id"],
                    round=record["round"],
                    trial=record["trial"],
                    sample=record["sample"],
                    parents=list(record["parents"]),
                    generation=Generation.model_validate({k: record[k] for k in _GENERATION_FIELDS if k in record}),
                    charge=record.get("charge", {}),
                )
            elif record.get("kind") == "verification" and record.get("id") in self.proofs:
                proof = self.proofs[record["id"]]
                proof.recorded = [Verification.model_validate(v) for v in record["verifications"]]
                proof.verification_charge = record.get("charge", {})

    def add(self, proof: PoolProof) -> PoolProof:
        """Add and persist ``proof``; an id already present keeps its first record."""
        if proof.id in self.proofs:
            return self.proofs[proof.id]
        self.proofs[proof.id] = proof
        if self._out is not None:
            g = proof.generation
            fields = {k: getattr(g, k) for k in _GENERATION_FIELDS}
            fields["usage"] = g.usage.model_dump()
            self._out.write(
                {
                    "kind": "proof",
                    "id": proof.id,
                    "round": proof.round,
                    "trial": proof.trial,
                    "sample": proof.sample,
                    "parents": proof.parents,
                    **fields,
                    "charge": proof.charge,
                }
            )
        return proof

    def set_verifications(self, proof: PoolProof, verifications: list[Verification], charge: dict[str, int]) -> None:
        """Attach and persist the verifications of ``proof`` (a later line replaces an earlier)."""
        proof.verifications = proof.recorded = verifications
        proof.verification_charge = charge
        if self._out is not None:
            self._out.write(
                {
                    "kind": "verification",
                    "id": proof.id,
                    "round": proof.round,
                    "scores": [v.score for v in verifications],
                    "mean": proof.mean,
                    "verifications": [v.model_dump(mode="json") for v in verifications],
                    "charge": charge,
                }
            )

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


@dataclass
class _Request:
    round: int
    trial: int
    parents: list[str]
    candidates: list[Candidate] | None  # None: sample from the generation prompt
    n: int


def _replay(charges: list[dict[str, int]], usage: Usage, prompt_tokens: int, completion_tokens: int) -> None:
    """Check and charge one recorded request against the current budget as if it were a live
    call (a cached answer is charged too), so that a resumed run stops where a fresh one would."""
    calls = sum(c.get("calls", 0) for c in charges)
    budget = current_budget()
    if budget is not None:
        budget.check()
        budget.charge(calls=calls, tokens=sum(c.get("tokens", 0) for c in charges))
    usage.add(Usage(cached_calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))


class _Search:
    """The state of one problem's search (the pool plus what this run activated)."""

    def __init__(self, config: SearchConfig, problem: Problem, roles: Roles, pool: Pool, on_round: RoundHook | None):
        self.config, self.problem, self.roles, self.pool, self.on_round = config, problem, roles, pool, on_round
        self.active: list[PoolProof] = []  # proofs of this run's requests, in slot order
        self.duplicate_of: dict[str, str] = {}
        self._first_by_text: dict[str, str] = {}
        self.refined_in: dict[str, list[int]] = {}  # proof id -> rounds that refined it
        self.selections: dict[int, list[dict[str, Any]]] = {}
        self.adaptive_steps: list[dict[str, Any]] = []  # adaptive: what each round drew, and why it stopped
        self.usage = Usage()
        # the progress figures, kept as work finishes (a report costs no scan of the pool)
        self._round = 0
        self._candidates = 0  # usable, non-duplicate proofs: the ones verified
        self._verified = 0
        self._verifications = 0
        self._best_mean: float | None = None

    def _report(self) -> None:
        """Tell the progress hook where the search stands: round, pool, verified proofs,
        verifications, the best mean so far."""
        if self.on_round is not None:
            self.on_round(
                self.problem.id,
                self._round,
                {
                    "round": (self._round, self.config.rounds),
                    "pool": len(self.active),
                    "verified": (self._verified, self._candidates),
                    "verifications": self._verifications,
                    "best_mean": self._best_mean,
                },
            )

    def _verified_now(self, proof: PoolProof) -> None:
        self._verified += 1
        self._verifications += len(proof.verifications or [])
        mean = proof.mean
        if mean is not None and (self._best_mean is None or mean > self._best_mean):
            self._best_mean = mean
        self._report()

    # -- the rounds --------------------------------------------------------------------------
    async def run(self) -> SolveResult:
        result = SolveResult(problem_id=self.problem.id, strategy=SearchStrategy.name)
        try:
            result.stop_reason = await self._rounds(result)
        except BudgetExceeded as error:
            result.budget_limited = True
            result.stop_reason = f"budget: {error} (in round {result.rounds})"
        tournament = await self._answer(result)
        result.transcript, result.usage = self._transcript(result.rounds), self.usage
        if self.config.adaptive:
            pool = self._candidates_drawn()
            drawn = sum(len(p.verifications or []) for p in pool)
            planned = self.config.verifications * len(pool)
            result.stop_reason += f"; adaptive: {drawn:,} of {planned:,} verifications drawn"
            result.transcript += self.adaptive_steps
        if tournament is not None:
            result.transcript.append(tournament)
        return result

    async def _rounds(self, result: SolveResult) -> str:
        config = self.config
        for round_ in range(1, config.rounds + 1):
            if round_ == 1:
                requests = [_Request(1, 0, [], None, config.initial_samples)]
            else:
                requests = self._refinements(round_)
                if not requests:
                    return f"no verified proof to refine after round {round_ - 1}"
            result.rounds = self._round = round_
            self._report()
            batches, generate_error = await gather_within_budget(self._generate(r) for r in requests)
            new = [proof for batch in batches if batch for proof in batch]
            for proof in new:
                self._activate(proof)
            self._report()
            todo = [p for p in new if usable(p.generation, config.keep_invalid) and p.id not in self.duplicate_of]
            if config.adaptive:
                first = checkpoints(config.verifications, config.batch)[0]
                _, verify_error = await gather_within_budget(self._draw(p, first) for p in todo)
                if not (generate_error or verify_error):
                    verify_error = await self._settle(round_)
            else:
                _, verify_error = await gather_within_budget(self._verify(p) for p in todo)
            if generate_error or verify_error:
                raise generate_error or verify_error  # type: ignore[misc]
            passed = [p for p in self.ranked() if p.passes(config.verifications)]
            if passed and config.stop_on_pass:
                return f"proof {passed[0].id} passed all {config.verifications} verifications in round {round_}"
        return f"max rounds ({config.rounds}) reached"

    # -- adaptive verification ---------------------------------------------------------------
    def _candidates_drawn(self) -> list[PoolProof]:
        keep = self.config.keep_invalid
        return [
            p
            for p in self.active
            if p.verifications is not None and p.id not in self.duplicate_of and usable(p.generation, keep)
        ]

    def _open(self, round_: int) -> tuple[list[PoolProof], str]:
        """Adaptive: the proofs that need more draws before this round's decisions are settled,
        and what is being decided."""
        config, n = self.config, self.config.verifications
        pool = self._candidates_drawn()
        passed = config.stop_on_pass and any(p.passes(n) for p in pool)
        if config.stop_on_pass and not passed:
            pending = [
                p for p in pool if len(p.verifications or []) < n and all(v.score == 1 for v in p.verifications or [])
            ]
            if pending:  # the likeliest answers first (self-score, then slot), a round's trials at a time
                pending.sort(key=lambda p: (-p.generation.self_score, p.slot))
                return pending[: min(config.top_k, config.trials)], "passes all its verifications"
        final = passed or round_ >= config.rounds
        k = (1 if config.select == "mean" else config.select_pool) if final else min(config.top_k, config.trials)
        race = Race(n=n, k=k, confidence=config.confidence, items=len(pool), batch=config.batch)
        entries = [
            (p.id, [v.score for v in p.verifications or []], (p.generation.self_score, tuple(-x for x in p.slot)))
            for p in pool
        ]
        chosen = set(race.pick(entries))
        what = "the answer" if final and k == 1 else f"the top {k}"
        return [p for p in pool if p.id in chosen], what

    async def _settle(self, round_: int) -> BudgetExceeded | None:
        """Adaptive: draw the open proofs, a checkpoint at a time, until the round's decisions
        are settled; a spent budget is returned (what was drawn stays)."""
        n, batch = self.config.verifications, self.config.batch
        while True:
            todo, _ = self._open(round_)
            if not todo:
                break
            _, error = await gather_within_budget(
                self._draw(p, next_checkpoint(len(p.verifications or []), n, batch)) for p in todo
            )
            if error is not None:
                return error
        pool = self._candidates_drawn()
        drawn = sum(len(p.verifications or []) for p in pool)
        self.adaptive_steps.append(
            {
                "step": "adaptive",
                "round": round_,
                "proofs": len(pool),
                "drawn": drawn,
                "planned": n * len(pool),
                "stopped": "settled: every proof that could pass all its verifications was drawn until it "
                "passed or failed, and the rest until the choice by mean was settled "
                f"(confidence {self.config.confidence:g})",
            }
        )
        return None

    async def _draw(self, proof: PoolProof, upto: int) -> None:
        """Adaptive: have the first ``upto`` verifications of ``proof``: those the pool file
        recorded are replayed (charged like a cached answer), the rest drawn as samples
        ``len(drawn)`` .. ``upto - 1`` of the fixed search's request."""
        upto = min(upto, self.config.verifications)
        have = list(proof.verifications or [])
        if len(have) >= upto:
            return
        recorded = proof.recorded or []
        if len(recorded) > len(have):
            take = recorded[len(have) : upto]
            charge = {
                "calls": sum(v.usage.calls + v.usage.cached_calls for v in take),
                "tokens": sum(v.usage.prompt_tokens + v.usage.completion_tokens for v in take),
            }
            _replay(
                [charge],
                self.usage,
                sum(v.usage.prompt_tokens for v in take),
                sum(v.usage.completion_tokens for v in take),
            )
            have += take
        if len(have) < upto:
            new = await self.roles.verifier.verify(
                self.problem, proof.generation.proof, n=upto - len(have), first=len(have)
            )
            for v in new:
                self.usage.add(v.usage)
            have += [v.model_copy(update={"raw": ""}) for v in new]
            charge = {
                "calls": sum(v.usage.calls + v.usage.cached_calls for v in have)
                + sum(v.score_distribution is not None for v in have),
                "tokens": sum(v.usage.prompt_tokens + v.usage.completion_tokens for v in have),
            }
            self.pool.set_verifications(proof, have, charge)
        first_time = proof.verifications is None
        before = len(proof.verifications or [])
        proof.verifications = have
        if first_time:
            self._verified_now(proof)
        else:
            self._verifications += len(have) - before
            self._report()

    def _activate(self, proof: PoolProof) -> None:
        self.active.append(proof)
        if not usable(proof.generation, self.config.keep_invalid):
            return
        text = proof.generation.proof.strip()
        first = self._first_by_text.setdefault(text, proof.id)
        if first != proof.id:
            self.duplicate_of[proof.id] = first
        else:
            self._candidates += 1

    def ranked(self) -> list[PoolProof]:
        """Verified, non-duplicate proofs of this run: best mean, then self-score, then earliest."""
        keep = self.config.keep_invalid
        scored = [
            p
            for p in self.active
            if p.mean is not None and p.id not in self.duplicate_of and usable(p.generation, keep)
        ]
        return sorted(scored, key=lambda p: (-p.mean, -p.generation.self_score, p.slot))  # type: ignore[operator]

    def _refinements(self, round_: int) -> list[_Request]:
        config = self.config
        requests, selection = [], []
        for trial, proof in enumerate(self.ranked()[: config.top_k][: config.trials]):
            earlier = self.refined_in.setdefault(proof.id, [])
            analyses = proof.verifications or []
            shown = choose_analyses(analyses, config.analyses_per_proof, config.max_per_score, len(earlier))
            earlier.append(round_)
            evaluations = [verifier_evaluation_text(self.roles.verifier, self.problem, analyses[i]) for i in shown]
            candidate = Candidate(proof=proof.generation.proof, evaluations=evaluations)
            requests.append(_Request(round_, trial, [proof.id], [candidate], config.samples_per_trial))
            selection.append(
                {
                    "trial": trial,
                    "proof_id": proof.id,
                    "mean": proof.mean,
                    "self_score": proof.generation.self_score,
                    "analyses": shown,
                }
            )
        self.selections[round_] = selection
        return requests

    # -- one request, replayed from the pool when it is recorded --------------------------------
    async def _generate(self, request: _Request) -> list[PoolProof]:
        ids = [slot_id(self.problem, request.round, request.trial, j, request.parents) for j in range(request.n)]
        recorded = [p for p in (self.pool.proofs.get(i) for i in ids) if p is not None]
        if len(recorded) == len(ids):  # every one of them
            usages = [p.generation.usage for p in recorded]
            _replay(
                [p.charge for p in recorded],
                self.usage,
                sum(u.prompt_tokens for u in usages),
                sum(u.completion_tokens for u in usages),
            )
            return recorded
        generator = self.roles.generator
        if request.candidates is None:
            generations = await generator.generate(self.problem, n=request.n)
        else:
            generator = copy.copy(generator)  # its own seed: a prompt repeated in a later round samples anew
            base = generator.config.seed or 0
            seed = (base + zlib.crc32(f"search/{request.round}/{request.trial}".encode())) % 2**31
            generator.config = generator.config.model_copy(update={"seed": seed})
            generations = await generator.refine(self.problem, request.candidates, n=request.n)
        out = []
        for j, (proof_id, generation) in enumerate(zip(ids, generations)):
            self.usage.add(generation.usage)
            u = generation.usage
            charge = {"calls": int(j == 0), "tokens": u.prompt_tokens + u.completion_tokens}
            fresh = PoolProof(
                proof_id,
                request.round,
                request.trial,
                j,
                request.parents,
                generation.model_copy(update={"raw": ""}),
                charge,
            )
            out.append(self.pool.add(fresh))
        return out

    async def _verify(self, proof: PoolProof) -> None:
        n = self.config.verifications
        recorded = proof.recorded
        if recorded is not None and len(recorded) == n:
            _replay(
                [proof.verification_charge],
                self.usage,
                sum(v.usage.prompt_tokens for v in recorded),
                sum(v.usage.completion_tokens for v in recorded),
            )
            proof.verifications = recorded
            self._verified_now(proof)
            return
        verifications = await self.roles.verifier.verify(self.problem, proof.generation.proof, n=n)
        for v in verifications:
            self.usage.add(v.usage)
        charge = {
            "calls": 1 + sum(v.score_distribution is not None for v in verifications),  # + likelihood read-outs
            "tokens": sum(v.usage.prompt_tokens + v.usage.completion_tokens for v in verifications),
        }
        self.pool.set_verifications(proof, [v.model_copy(update={"raw": ""}) for v in verifications], charge)
        self._verified_now(proof)

    # -- the answer and the transcript ---------------------------------------------------------
    async def _answer(self, result: SolveResult) -> dict[str, Any] | None:
        """Set the answer: the best proof by mean (then self-score), or with ``select`` a
        tournament's winner among the ``select_pool`` best; returns the tournament's transcript
        step (None when none was played)."""
        ranked = self.ranked()
        step = None
        if ranked:
            best = ranked[0]
            if self.config.select != "mean":
                best, step = await self._tournament(result, ranked)
        else:
            unverified = [
                p
                for p in self.active
                if usable(p.generation, self.config.keep_invalid) and p.id not in self.duplicate_of
            ]
            if not unverified:
                result.stop_reason += "; no valid proof"
                return None
            best = min(unverified, key=lambda p: (-p.generation.self_score, p.slot))
            result.stop_reason += "; the answer is unverified"
        result.proof, result.generation, result.proof_id = best.generation.proof, best.generation, best.id
        result.verifications, result.mean_score = list(best.verifications or []), best.mean
        return step

    async def _tournament(
        self, result: SolveResult, ranked: list[PoolProof]
    ) -> tuple[PoolProof, dict[str, Any] | None]:
        """The winner of a ``select`` tournament among the ``select_pool`` best proofs by mean
        (seeded in that order; judged on the verifier's model through
        :func:`~proofcritic.pipelines.tournament.run_tournament`, every comparison cached, so a
        rerun replays them), and the transcript step with every match and its reasons. With one
        proof, a spent budget, or a budget spent during the tournament: the best mean."""
        from .tournament import run_tournament

        select, pool = self.config.select, ranked[: self.config.select_pool]
        if len(pool) < 2:
            result.stop_reason += f"; no {select} tournament: one verified proof"
            return ranked[0], None
        if result.budget_limited:
            result.stop_reason += f"; no {select} tournament (the budget is spent): chose the best mean"
            return ranked[0], None
        try:
            outcome = await run_tournament(
                select, self.roles.verifier, self.problem, [p.generation.proof for p in pool]
            )
        except BudgetExceeded as error:
            result.budget_limited = True
            result.stop_reason += f"; the {select} tournament stopped (budget: {error}): chose the best mean"
            return ranked[0], None
        self.usage.add(outcome.usage)
        winner = pool[outcome.winner]
        record = [0, 0, 0]  # the winner's wins, draws, losses
        matches = []
        for m in outcome.matches:
            if outcome.winner in (m.a, m.b):
                record[0 if m.winner == outcome.winner else 1 if m.winner is None else 2] += 1
            matches.append(
                {
                    "a": pool[m.a].id,
                    "b": pool[m.b].id,
                    "winner": None if m.winner is None else pool[m.winner].id,
                    "choices": [m.forward.choice, m.backward.choice],  # a shown first, then b shown first
                    "reasons": [m.forward.reason, m.backward.reason],
                    "format_errors": [m.forward.format_error, m.backward.format_error],
                }
            )
        how = "the last one standing" if select == "knockout" else "the most match points (ties: Buchholz, seed)"
        why = (
            f"{winner.id} (seed {outcome.winner + 1} of {len(pool)} by mean) won {record[0]}, drew {record[1]} "
            f"and lost {record[2]} of its matches, {outcome.points[outcome.winner]:g} match points: {how}"
        )
        step = {
            "step": "tournament",
            "round": result.rounds,
            "format": select,
            "pool": [{"proof_id": p.id, "mean": p.mean, "points": pts} for p, pts in zip(pool, outcome.points)],
            "matches": matches,
            "winner": winner.id,
            "why": why,
        }
        count = len(outcome.matches)
        result.stop_reason += (
            f"; chose {winner.id} by {select} tournament among the top {len(pool)} by mean "
            f"({count} match{'es' if count != 1 else ''}; its mean {self._shown(winner.mean)}, "
            f"best mean {self._shown(ranked[0].mean)})"
        )
        return winner, step

    def _shown(self, mean: float | None) -> str:
        """A mean for the stop reason: on the points scale in points ("6.5 / 7 points")."""
        if mean is None:
            return "—"
        if self.roles.scale == "points":
            return f"{mean * self.problem.max_points:.3g} / {self.problem.max_points:g} points"
        return f"{mean:.3g}"

    def _transcript(self, rounds: int) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        for round_ in range(1, rounds + 1):
            if round_ in self.selections:
                steps.append({"step": "select", "round": round_, "refine": self.selections[round_]})
            proofs = [p for p in self.active if p.round == round_]
            for p in proofs:
                g = p.generation
                steps.append(
                    {
                        "step": "generate" if round_ == 1 else "refine",
                        "round": round_,
                        "proof_id": p.id,
                        "parents": p.parents,
                        "trial": p.trial,
                        "sample": p.sample,
                        "self_score": g.self_score,
                        "format_ok": g.format_ok,
                        "format_error": g.format_error,
                        "duplicate_of": self.duplicate_of.get(p.id),
                    }
                )
            for p in proofs:
                if p.verifications is not None:
                    steps.append(
                        {
                            "step": "verify",
                            "round": round_,
                            "proof_id": p.id,
                            "scores": [v.score for v in p.verifications],
                            "score_sources": [v.score_source for v in p.verifications],
                            "mean": p.mean,
                        }
                    )
        return steps


class SearchStrategy(ConfiguredStrategy):
    """The released high-compute search; ``SearchStrategy(rounds=4, verifications=8)`` or
    ``SearchStrategy(SearchConfig(...))``. ``state_dir`` makes the pool persistent."""

    config_class = SearchConfig
    name = "search"

    config: SearchConfig

    def plan(self) -> CallPlan:
        """Round 1: one generation request of ``initial_samples`` proofs; each later round up
        to ``min(top_k, trials)`` requests of ``samples_per_trial``; every proof one
        verification request of ``verifications`` samples. At most: a pass may stop it sooner."""
        c = self.config
        refinements = (c.rounds - 1) * min(c.top_k, c.trials)
        proofs = c.initial_samples + refinements * c.samples_per_trial
        requests = len(checkpoints(c.verifications, c.batch)) if c.adaptive else 1  # adaptive: one per checkpoint
        plan = (
            CallPlan()
            .add("generation", 1 + refinements, proofs)
            .add("verification", proofs * requests, proofs * c.verifications)
        )
        later = {1: "", 2: "; round 2"}.get(c.rounds, f"; rounds 2-{c.rounds}")
        if later:
            later += (
                f": {min(c.top_k, c.trials)} refinement prompts x {c.samples_per_trial} proofs, each verified "
                f"{c.verifications} times"
            )
        stop = "; it stops once a proof passes all its verifications" if c.stop_on_pass else ""
        select = ""
        if c.select != "mean":
            pool = min(c.select_pool, proofs)
            plan.add("comparison", tournament_calls(c.select, pool))
            select = f"; the answer by {c.select} tournament among the top {pool} by mean"
        plan.note = f"round 1: {c.initial_samples} proofs x {c.verifications} verifications{later}{stop}{select}"
        return plan

    async def solve(self, problem: Problem, roles: Roles, state_dir: str | Path | None = None) -> SolveResult:
        """Search; a spent budget answers the best proof so far, marked budget-limited."""
        pool = Pool(Path(state_dir) / "pool.jsonl" if state_dir is not None else None)
        try:
            return await _Search(self.config, problem, roles, pool, self.on_round).run()
        finally:
            pool.close()
