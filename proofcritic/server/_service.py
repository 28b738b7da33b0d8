"""How the service runs the pipelines: requests in, the existing Python API, results out.

Jobs and the OpenAI-compatible facade both come through here. Every request runs on the
service's one :class:`~proofcritic.llm.Model` (its completion cache, retry policy, circuit
breaker and concurrency bound shared by all), inside its own usage scope
(:func:`~proofcritic.llm.usage_scope`): the Model counts each upstream call once, into its own
``usage`` and into every open scope, so a request's scope holds exactly the upstream calls and
tokens this request spent (answers from the cache are counted apart), which is what the
service reports.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..budget import Budget, BudgetExceeded, budget_scope
from ..errors import InputError
from ..grading import grade
from ..io import check_text, input_limit, problem_from_record
from ..llm import (
    GenerateConfig,
    Model,
    RetryPolicy,
    SampleCount,
    SamplingOptions,
    Usage,
    usage_scope,
)
from ..pipelines import Roles, SolveResult, Strategy
from ..pipelines.label import LabelConfig, LabelResult, label_proof
from ..pipelines.normalize import Normalizer
from ..pipelines.panel import Panel, PanelResult
from ..pipelines.solve import STRATEGIES, get_strategy, solve_problem
from ..promptset import PromptSet
from ..types import GradeResult, Problem, Proof
from ..verifier import DEFAULT_SCORE_MODE, PointsVerifier, ScoreMode

ScoreModeField = Field(
    None, description="Verifier score mode (default: the service's, text unless `serve --score-mode` says otherwise)."
)


class _ProblemRequest(BaseModel):
    """Fields every job request shares: the problem, sampling (the settings a request may
    override, the rest are the service's), and the budget of this request."""

    model_config = ConfigDict(extra="forbid")

    problem: str | dict[str, Any] = Field(
        ...,
        description="The statement, or an object with statement/problem, reference_solution, grading_guidelines, max_points, id.",
    )
    reference_solution: str | None = None
    grading_guidelines: str | None = None
    max_points: float | None = Field(None, gt=0)
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    max_calls: int | None = Field(
        None, ge=1, description="Model calls this request may make (capped by the service's limit)."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Tokens this request may spend (capped by the service's limit)."
    )

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
    n: SampleCount = Field(1, description="Verifications of the proof.")
    score_mode: ScoreMode | None = ScoreModeField
    scale: Literal["ternary", "points"] = Field(
        "ternary", description="ternary: a score in {0, 0.5, 1}; points: whole points 0..max_points (text scores only)."
    )
    scheme: str | list[dict[str, Any]] | dict[str, Any] | None = Field(
        None,
        description="With scale points: a marking scheme (text, or a grading_scheme.json entry or checkpoint list).",
    )
    normalize: bool = Field(False, description="Grade a neutral rewrite of the proof (the result keeps it).")
    panel: bool = Field(
        False,
        description="Grade with the service's judge panel (`serve --judge`/`--panel`) on this request's scale: "
        "the result is the panel's record (each judge's verdicts, the reconciliation, the rule that decided).",
    )

    @model_validator(mode="after")
    def _points_only(self) -> GradeRequest:
        if self.scale == "points" and self.score_mode not in (None, "text"):
            raise ValueError("points grading reads the points from the text: score_mode text")
        if self.scheme is not None and self.scale != "points":
            raise ValueError("a marking scheme needs scale points")
        if self.panel and (self.n != 1 or self.score_mode not in (None, "text") or self.normalize or self.scheme):
            raise ValueError(
                "a panel request takes each judge's n from the service's panel and reads scores from the text: "
                "leave n, score_mode, normalize and scheme unset"
            )
        return self


class SolveRequest(_ProblemRequest):
    """``POST /v1/solve``: write a proof with a strategy."""

    strategy: str = Field("refine", description=f"One of: {', '.join(STRATEGIES)}.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy parameters (as the CLI's --set).")
    score_mode: ScoreMode | None = ScoreModeField
    scale: Literal["ternary", "points"] = Field(
        "ternary",
        description="ternary: verifier scores in {0, 0.5, 1}; points: every verification of the strategy grades "
        "whole points 0..max_points (ranking and passes on points / max_points).",
    )
    scheme: str | list[dict[str, Any]] | dict[str, Any] | None = Field(
        None,
        description="With scale points: a marking scheme (text, or a grading_scheme.json entry or checkpoint list).",
    )

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _points_only(self) -> SolveRequest:
        if self.scale == "points" and self.score_mode not in (None, "text"):
            raise ValueError("points grading reads the points from the text: score_mode text")
        if self.scheme is not None and self.scale != "points":
            raise ValueError("a marking scheme needs scale points")
        return self


class LabelRequest(_ProblemRequest, LabelConfig):
    """``POST /v1/label``: auto-label a proof by scaled verification and meta-verification (the
    labeling parameters n, m, k, confirm_at, refute_at are :class:`LabelConfig`'s)."""

    proof: str = Field(..., min_length=1)
    score_mode: ScoreMode | None = ScoreModeField


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
    if isinstance(request, SolveRequest):
        get_strategy(request.strategy, **request.params)


class GradingService:
    """Runs grade, solve and label requests on the service's model (the jobs API and the
    OpenAI-compatible facade share one). Not an inference engine: those are the servers behind
    the model (vLLM, SGLang; :mod:`proofcritic.engines`)."""

    def __init__(
        self,
        model: Model,
        *,
        prompts: PromptSet | None = None,
        config: GenerateConfig | None = None,
        score_mode: ScoreMode = DEFAULT_SCORE_MODE,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        retry: RetryPolicy | None = None,
        max_input_chars: int | None = None,
        panel: Panel | None = None,
    ):
        self.model = model
        #: the judge panel grade requests may ask for (None: none configured)
        self.panel = panel
        if model.cache is not None:
            # every completion is committed before it is used: a job requeued after a kill -9
            # asks again only the call that was in flight (a batch trades that for fewer commits)
            model.cache.flush_size = 1
        #: characters allowed per text of a request (None: the process's limit; 0: none)
        self.max_input_chars = max_input_chars
        self.retry = model.retry = retry or model.retry
        """How each request retries a failing upstream call (the service's setting, else the model's)."""
        for judge in self.judge_models():  # the panel's calls are the service's calls: same policy
            judge.retry = retry or judge.retry
            if judge.cache is not None:
                judge.cache.flush_size = 1
        self.prompts = prompts or PromptSet.load()
        self.config = config or GenerateConfig()
        self.score_mode = score_mode
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self._running: dict[int, AbstractContextManager[Usage]] = {}

    def start_request(self) -> Usage:
        """Open the usage scope of one request, in the running task (close it with :meth:`settle`
        in the same task): the Usage it returns counts the upstream calls made from there on."""
        scope = usage_scope()
        usage = scope.__enter__()
        self._running[id(usage)] = scope
        return usage

    def settle(self, usage: Usage) -> None:
        """Close a finished request's usage scope (once)."""
        scope = self._running.pop(id(usage), None)
        if scope is not None:
            scope.__exit__(None, None, None)

    def usage_totals(self) -> dict[str, Any]:
        """What every request so far spent upstream, those still running included (the Model's
        own count)."""
        total = self.model.usage
        return {
            "upstream_calls": total.calls,
            "failed_calls": total.failed_calls,
            "readout_calls": total.readout_calls,
            "cached_calls": total.cached_calls,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "total_tokens": total.total_tokens,
            "requests_running": len(self._running),
        }

    def judge_models(self) -> list[Model]:
        """The panel's models (each once), none without a panel."""
        models: list[Model] = []
        for judge in self.panel.judges if self.panel is not None else []:
            if all(judge.model is not m for m in models):
                models.append(judge.model)
        return models

    def panel_stats(self) -> dict[str, Any] | None:
        """The configured panel (None without one): its judges (name, model, n, and what each
        judge's model has spent upstream), its rule and its threshold."""
        if self.panel is None:
            return None
        judges = []
        for name, judge, n in zip(self.panel.names, self.panel.judges, self.panel.n):
            spent = judge.model.usage
            judges.append(
                {
                    "name": name,
                    "model": judge.model.name,
                    "n": n,
                    "usage": {
                        "upstream_calls": spent.calls,
                        "failed_calls": spent.failed_calls,
                        "cached_calls": spent.cached_calls,
                        "total_tokens": spent.total_tokens,
                    },
                }
            )
        threshold = self.panel.threshold
        return {
            "judges": judges,
            "rule": self.panel.rule,
            "threshold": threshold if threshold is not None else "default (2 points; ternary: half the scale)",
        }

    def endpoint_stats(self) -> list[dict[str, Any]] | None:
        """Per-endpoint counters of the upstream backend when it has endpoints (the
        OpenAI-compatible backend), else None."""
        return self.model.backend.endpoint_stats() or None

    def roles(self, request: _ProblemRequest) -> Roles:
        solve = request if isinstance(request, SolveRequest) else None  # (grade builds its points verifier itself)
        return Roles.from_models(
            self.model,
            prompts=self.prompts,
            config=self.config.merge(request.sampling.as_config()),
            score_mode=getattr(request, "score_mode", None) or self.score_mode,
            scale=solve.scale if solve else "ternary",
            scheme=solve.scheme if solve else None,
        )

    def _limit(self, own: int | None, cap: int | None) -> int | None:
        if own is None:
            return cap
        return own if cap is None else min(own, cap)

    def check(self, request: _ProblemRequest) -> None:
        """:func:`check_request` under this service's input limit; a panel request needs a panel."""
        if isinstance(request, GradeRequest) and request.panel and self.panel is None:
            raise InputError(
                'this service has no judge panel: leave out "panel", or start the service with one '
                "(`proofcritic serve --judge SPEC --judge SPEC ...` or `--panel FILE`)"
            )
        check_request(request, self.max_input_chars)

    def problem(self, request: _ProblemRequest) -> Problem:
        """The request's problem, held to this service's input limit."""
        with input_limit(self.max_input_chars):
            return request.to_problem()

    def budget(self, request: _ProblemRequest) -> Budget | None:
        calls = self._limit(request.max_calls, self.max_calls)
        tokens = self._limit(request.max_tokens, self.max_tokens)
        return None if calls is None and tokens is None else Budget(calls, tokens, name="request")

    async def grade(self, request: GradeRequest) -> GradeResult:
        roles = self.roles(request)
        budget = self.budget(request)
        with budget_scope(budget):
            try:
                verifier = roles.verifier
                if request.scale == "points":
                    verifier = PointsVerifier(self.model, prompts=self.prompts, config=roles.verifier.config)
                normalizer = (
                    Normalizer(self.model, prompts=self.prompts, config=roles.verifier.config)
                    if request.normalize
                    else None
                )
                return await grade(
                    verifier,
                    self.problem(request),
                    Proof(text=request.proof),
                    n=request.n,
                    scheme=request.scheme,
                    normalizer=normalizer,
                )
            except BudgetExceeded as error:
                raise InputError(f"grading needs more than this request's budget: {error}") from None

    async def grade_with_panel(self, request: GradeRequest) -> PanelResult:
        """Grade with the service's panel, on the request's scale and sampling, within its budget."""
        if self.panel is None:
            raise InputError("this service has no judge panel")
        panel = self.panel.on_scale(request.scale, request.sampling.as_config())
        with budget_scope(self.budget(request)):
            try:
                return await panel.grade(self.problem(request), request.proof)
            except BudgetExceeded as error:
                raise InputError(f"panel grading needs more than this request's budget: {error}") from None

    async def solve(
        self,
        request: SolveRequest,
        *,
        state_dir: Path | None = None,
        on_round: Callable[[str, int, dict[str, Any]], None] | None = None,
    ) -> SolveResult:
        strategy: Strategy = get_strategy(request.strategy, **request.params)
        if on_round is not None and hasattr(strategy, "on_round"):
            strategy.on_round = on_round
        budget = self.budget(request)
        try:
            return await solve_problem(
                strategy,
                self.problem(request),
                self.roles(request),
                state_dir=state_dir,
                max_calls=budget.max_calls if budget else None,
                max_tokens=budget.max_tokens if budget else None,
            )
        finally:  # a strategy with tools (critic, tora) built its sandbox pool for this request
            close = getattr(strategy, "aclose", None)
            if close is not None:
                await close()

    async def label(self, request: LabelRequest) -> LabelResult:
        roles = self.roles(request)
        with budget_scope(self.budget(request)):
            return await label_proof(
                roles.verifier,
                roles.meta_verifier,
                self.problem(request),
                Proof(text=request.proof),
                request.label_config(),
            )


def usage_json(u: Usage, pipeline: Usage | None = None) -> dict[str, Any]:
    """What a request spent upstream (every request sent, failed ones and likelihood read-outs
    included, and their tokens) and what the cache answered: its usage scope
    (:meth:`GradingService.start_request`)."""
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


def answers_usage(result: GradeResult | LabelResult | SolveResult | PanelResult) -> Usage:
    """The usage of every answer a result used, cached ones included (``pipeline_tokens``):
    a grade's verifications, a panel's judges' verifications and reconciliations, a solve's
    own count; a label's is what it sent."""
    if isinstance(result, GradeResult):
        total = Usage()
        for verification in result.verifications:
            total.add(verification.usage)
        return total
    if isinstance(result, PanelResult):
        total = Usage()
        for judge in result.judges:
            total.add(judge.usage)
        return total
    return result.usage
