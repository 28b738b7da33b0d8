"""How the service runs the pipelines: requests in, the existing Python API, results out.

Jobs and the OpenAI-compatible facade both come through here. Each request gets its own
:class:`~proofcritic.llm.Model` over the service's one backend, sharing its completion cache,
retry policy and a concurrency bound with every other request: its ``usage`` then counts
exactly the upstream calls and tokens this request spent (answers from the cache are counted
apart), which is what the service reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..budget import Budget, BudgetExceeded, budget_scope
from ..errors import InputError
from ..grading import grade
from ..io import check_text, input_limit, problem_from_record
from ..llm import (
    Backend,
    ChatMessage,
    ChatRequest,
    Completion,
    GenerateConfig,
    Model,
    RetryPolicy,
    Usage,
)
from ..llm import MaxTokens, Seed, Temperature, TopP
from ..pipelines import Roles, SolveResult, Strategy
from ..pipelines.label import LabelConfig, LabelResult, label_proof
from ..pipelines.solve import STRATEGIES, get_strategy, solve_problem
from ..promptset import PromptSet
from ..types import GradeResult, Problem, Proof
from ..verifier import DEFAULT_SCORE_MODE, ScoreMode

ScoreModeField = Field(None, description="Verifier score mode (default: the service's, text unless `serve --score-mode` says otherwise).")


class Sampling(BaseModel):
    """Sampling settings a request may override (the rest are the service's)."""

    model_config = ConfigDict(extra="forbid")

    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    seed: Seed | None = None

    def config(self) -> GenerateConfig:
        return GenerateConfig(**self.model_dump(exclude_none=True))


class _ProblemRequest(BaseModel):
    """Fields every job request shares: the problem, sampling, and the budget of this request."""

    model_config = ConfigDict(extra="forbid")

    problem: str | dict[str, Any] = Field(
        ..., description="The statement, or an object with statement/problem, reference_solution, grading_guidelines, max_points, id."
    )
    reference_solution: str | None = None
    grading_guidelines: str | None = None
    max_points: float | None = Field(None, gt=0)
    sampling: Sampling = Field(default_factory=Sampling)
    max_calls: int | None = Field(None, ge=1, description="Model calls this request may make (capped by the service's limit).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens this request may spend (capped by the service's limit).")

    def to_problem(self) -> Problem:
        record: dict[str, Any] = dict(self.problem) if isinstance(self.problem, dict) else {"statement": self.problem}
        if isinstance(self.problem, dict) and "statement" not in record and isinstance(record.get("problem"), str):
            record["statement"] = record.pop("problem")
        for key in ("reference_solution", "grading_guidelines", "max_points"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return problem_from_record(record)


class GradeRequest(_ProblemRequest):
    """``POST /v1/grade``: verify a proof ``n`` times and aggregate."""

    proof: str = Field(..., min_length=1)
    n: int = Field(1, ge=1, le=1024, description="Verifications of the proof.")
    score_mode: ScoreMode | None = ScoreModeField


class SolveRequest(_ProblemRequest):
    """``POST /v1/solve``: write a proof with a strategy."""

    strategy: str = Field("refine", description=f"One of: {', '.join(STRATEGIES)}.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy parameters (as the CLI's --set).")
    score_mode: ScoreMode | None = ScoreModeField

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")
        return value


class LabelRequest(_ProblemRequest):
    """``POST /v1/label``: auto-label a proof by scaled verification and meta-verification."""

    proof: str = Field(..., min_length=1)
    n: int = Field(16, ge=1, le=1024)
    m: int = Field(8, ge=1, le=1024)
    k: int = Field(2, ge=1)
    confirm_at: float = Field(1.0, ge=0.0, le=1.0)
    refute_at: float = Field(0.0, ge=0.0, le=1.0)
    score_mode: ScoreMode | None = ScoreModeField

    def label_config(self) -> LabelConfig:
        try:
            return LabelConfig(n=self.n, m=self.m, k=self.k, confirm_at=self.confirm_at, refute_at=self.refute_at)
        except ValidationError as error:
            raise InputError(error.errors()[0].get("msg", str(error)).removeprefix("Value error, ")) from None


REQUESTS: dict[str, type[_ProblemRequest]] = {"grade": GradeRequest, "solve": SolveRequest, "label": LabelRequest}


def check_request(request: _ProblemRequest, max_input_chars: int | None = None) -> None:
    """Everything about a request that can be checked before any model call (InputError if not);
    its texts are held to ``max_input_chars`` (None: the process's limit, see :func:`~proofcritic.io.max_input_chars`)."""
    with input_limit(max_input_chars):
        request.to_problem()
        if isinstance(request, (GradeRequest, LabelRequest)):
            if not request.proof.strip():
                raise InputError("the proof is empty")
            check_text(request.proof, "the proof")
    if isinstance(request, LabelRequest):
        request.label_config()
    if isinstance(request, SolveRequest):
        get_strategy(request.strategy, **request.params)


class _SharedBackend(Backend):
    """The service's backend seen by one request: same calls, same cache identity, one gate.

    The gate bounds the calls in flight across all requests together; closing is left to the
    service, which owns the backend.
    """

    def __init__(self, inner: Backend, gate: Callable[[], asyncio.Semaphore]):
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.default_concurrency = inner.default_concurrency
        self.reports_requests = inner.reports_requests
        self._gate = gate

    async def generate(self, request: ChatRequest) -> list[Completion]:
        async with self._gate():
            return await self.inner.generate(request)

    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        async with self._gate():
            return await self.inner.sequence_logprobs(messages, continuations)

    def cache_identity(self) -> str:
        return self.inner.cache_identity()

    def address(self) -> str:
        return self.inner.address()

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """The shared backend's per-endpoint counters (one entry per base URL of an
        OpenAI-compatible backend; empty for a backend without endpoints)."""
        stats = getattr(self.inner, "endpoint_stats", None)
        return stats() if callable(stats) else []

    async def aclose(self) -> None:
        """The service closes the shared backend once, when it stops."""


class Engine:
    """Runs grade, solve and label requests on the service's model."""

    def __init__(
        self,
        model: Model,
        *,
        prompts: PromptSet | None = None,
        config: GenerateConfig | None = None,
        score_mode: str = DEFAULT_SCORE_MODE,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        retry: RetryPolicy | None = None,
        max_input_chars: int | None = None,
    ):
        self.model = model
        if model.cache is not None:
            # every completion is committed before it is used: a job requeued after a kill -9
            # asks again only the call that was in flight (a batch trades that for fewer commits)
            model.cache.flush_size = 1
        #: characters allowed per text of a request (None: the process's limit; 0: none)
        self.max_input_chars = max_input_chars
        self.retry = retry or model.retry
        """How each request retries a failing upstream call (the service's setting, else the model's)."""
        self.prompts = prompts or PromptSet.load()
        self.config = config or GenerateConfig()
        self.score_mode = score_mode
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self._gates: dict[int, asyncio.Semaphore] = {}
        self._live_models: dict[int, Model] = {}

    def _gate(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        gate = self._gates.get(loop_id)
        if gate is None:
            gate = self._gates[loop_id] = asyncio.Semaphore(self.model.max_concurrency)
        return gate

    def request_model(self) -> Model:
        """A Model for one request: the shared backend, cache, retry and circuit breaker; its own usage."""
        shared = self.model
        model = Model(
            _SharedBackend(shared.backend, self._gate),
            cache=shared.cache,
            max_concurrency=shared.max_concurrency,
            retry=self.retry,
            defaults=shared.defaults,
            breaker=shared.breaker,
        )
        model.likelihood_unsupported = shared.likelihood_unsupported
        model.likelihood_refusal = shared.likelihood_refusal
        self._live_models[id(model)] = model
        return model

    def settle(self, model: Model) -> None:
        """Add a finished request's usage to the service's totals (once)."""
        if self._live_models.pop(id(model), None) is None:
            return
        self.model.usage.add(model.usage)
        if model.likelihood_unsupported:
            self.model.likelihood_unsupported = True
            self.model.likelihood_refusal = model.likelihood_refusal

    def usage_totals(self) -> dict[str, Any]:
        """What every request so far spent upstream, those still running included."""
        total = Usage()
        total.add(self.model.usage)
        for model in list(self._live_models.values()):
            total.add(model.usage)
        return {
            "upstream_calls": total.calls,
            "failed_calls": total.failed_calls,
            "readout_calls": total.readout_calls,
            "cached_calls": total.cached_calls,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "total_tokens": total.total_tokens,
            "requests_running": len(self._live_models),
        }

    def endpoint_stats(self) -> list[dict[str, Any]] | None:
        """Per-endpoint counters of the upstream backend when it has endpoints (the
        OpenAI-compatible backend), else None."""
        stats = getattr(self.model.backend, "endpoint_stats", None)
        return stats() if callable(stats) else None

    def roles(self, model: Model, request: _ProblemRequest) -> Roles:
        return Roles.from_models(
            model,
            prompts=self.prompts,
            config=self.config.merge(request.sampling.config()),
            score_mode=getattr(request, "score_mode", None) or self.score_mode,  # type: ignore[arg-type]
        )

    def _limit(self, own: int | None, cap: int | None) -> int | None:
        if own is None:
            return cap
        return own if cap is None else min(own, cap)

    def check(self, request: _ProblemRequest) -> None:
        """:func:`check_request` under this service's input limit."""
        check_request(request, self.max_input_chars)

    def problem(self, request: _ProblemRequest) -> Problem:
        """The request's problem, held to this service's input limit."""
        with input_limit(self.max_input_chars):
            return request.to_problem()

    def budget(self, request: _ProblemRequest) -> Budget | None:
        calls = self._limit(request.max_calls, self.max_calls)
        tokens = self._limit(request.max_tokens, self.max_tokens)
        return None if calls is None and tokens is None else Budget(calls, tokens, name="request")

    async def grade(self, request: GradeRequest, model: Model) -> GradeResult:
        roles = self.roles(model, request)
        budget = self.budget(request)
        with budget_scope(budget):
            try:
                return await grade(roles.verifier, self.problem(request), Proof(text=request.proof), n=request.n)
            except BudgetExceeded as error:
                raise InputError(f"grading needs more than this request's budget: {error}") from None

    async def solve(
        self,
        request: SolveRequest,
        model: Model,
        *,
        state_dir: Path | None = None,
        on_round: Callable[[str, int, dict[str, Any]], None] | None = None,
    ) -> SolveResult:
        strategy: Strategy = get_strategy(request.strategy, **request.params)
        if on_round is not None and hasattr(strategy, "on_round"):
            strategy.on_round = on_round  # type: ignore[attr-defined]
        budget = self.budget(request)
        return await solve_problem(
            strategy, self.problem(request), self.roles(model, request), state_dir=state_dir,
            max_calls=budget.max_calls if budget else None, max_tokens=budget.max_tokens if budget else None,
        )

    async def label(self, request: LabelRequest, model: Model) -> LabelResult:
        roles = self.roles(model, request)
        with budget_scope(self.budget(request)):
            return await label_proof(
                roles.verifier, roles.meta_verifier, self.problem(request), Proof(text=request.proof),
                request.label_config(),
            )


def usage_json(model: Model, pipeline: Usage | None = None) -> dict[str, Any]:
    """What a request spent upstream (every request sent, failed ones and likelihood read-outs
    included, and their tokens) and what the cache answered."""
    u = model.usage
    out = {
        "upstream_calls": u.calls,
        "failed_calls": u.failed_calls,
        "readout_calls": u.readout_calls,
        "cached_calls": u.cached_calls,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if pipeline is not None:
        out["pipeline_tokens"] = pipeline.total_tokens  # tokens of every answer used, cached ones included
    return out


def answers_usage(result: GradeResult | LabelResult | SolveResult) -> Usage:
    """The usage of every answer a result used, cached ones included (``pipeline_tokens``):
    a grade's verifications, a solve's own count; a label's is what it sent."""
    if isinstance(result, GradeResult):
        total = Usage()
        for verification in result.verifications:
            total.add(verification.usage)
        return total
    return result.usage
