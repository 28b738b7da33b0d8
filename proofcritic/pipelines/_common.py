"""What every pipeline shares: the roles it may use, the result of solving a problem, and the
helpers of the built-in strategies: what counts as a usable proof, the transcript log, the
evaluation text shown to a refinement prompt, a gather that survives a spent budget, and the
verification of a chosen proof for evidence."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, BeforeValidator, Field

from ..budget import BudgetExceeded, CallPlan
from ..generator import Generator
from ..llm import GenerateConfig, Model, Usage
from ..meta_verifier import MetaVerifier
from ..parsing import SCORE_MARKER, format_score
from ..promptset import PromptSet
from ..tools import Tool, get_tool, tool_class
from ..types import Generation, Problem, Verification
from ..verifier import DEFAULT_SCORE_MODE, ScoreMode, Verifier, aggregate


def _tool_names(value: Any) -> Any:
    """``"python, lean"`` -> ``["python", "lean"]``; a list is taken as it is."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


#: a strategy's tools: a list of tool names, or one string of comma-separated names
#: (``--set tools=python,lean``); CRITIC's and ToRA's configs
ToolNames = Annotated[list[str], BeforeValidator(_tool_names)]

T = TypeVar("T")


@dataclass
class Roles:
    """The three roles a pipeline composes. Pipelines use roles, never backends."""

    generator: Generator
    verifier: Verifier
    meta_verifier: MetaVerifier

    @classmethod
    def from_models(
        cls,
        default: Model,
        *,
        generator: Model | None = None,
        verifier: Model | None = None,
        meta_verifier: Model | None = None,
        prompts: PromptSet | None = None,
        config: GenerateConfig | None = None,
        score_mode: ScoreMode = DEFAULT_SCORE_MODE,
        scale: str = "ternary",
        scheme: Any = None,
    ) -> Roles:
        """Each role on its own model if given, else on ``default`` (one model may serve all).

        ``scale`` "points" makes the verifier a :class:`~proofcritic.verifier.PointsVerifier`
        (``scheme``: its marking scheme(s), as ``load_schemes`` returns them); every strategy
        then verifies on the problem's points scale, with scores = points / max points."""
        prompts = prompts or PromptSet.load()
        the_verifier: Verifier
        if scale == "points":
            from ..verifier import PointsVerifier

            the_verifier = PointsVerifier(verifier or default, prompts=prompts, config=config, scheme=scheme)
        elif scale == "ternary":
            if scheme is not None:
                raise ValueError("a marking scheme needs the points scale")
            the_verifier = Verifier(verifier or default, prompts=prompts, config=config, score_mode=score_mode)
        else:
            raise ValueError(f"the scale is ternary or points, not {scale!r}")
        return cls(
            generator=Generator(generator or default, prompts=prompts, config=config),
            verifier=the_verifier,
            meta_verifier=MetaVerifier(meta_verifier or default, prompts=prompts, config=config),
        )

    @property
    def scale(self) -> str:
        """The verifier's protocol: "ternary" or "points"."""
        return getattr(self.verifier, "scale", "ternary")


class SolveResult(BaseModel):
    """The answer of a solving strategy for one problem, with its evidence."""

    problem_id: str
    strategy: str
    proof: str | None = Field(None, description="The chosen proof (None if no proof was produced).")
    generation: Generation | None = Field(None, description="The generation that produced the chosen proof.")
    verifications: list[Verification] = Field(default_factory=list, description="Verifications of the chosen proof.")
    mean_score: float | None = Field(None, description="Mean verifier score of the chosen proof.")
    stop_reason: str = Field("", description="Why the strategy stopped (passed, max iterations, budget, ...).")
    budget_limited: bool = Field(False, description="The strategy stopped because a budget was spent.")
    transcript: list[dict[str, Any]] = Field(default_factory=list, description="Every step, in order.")
    usage: Usage = Field(default_factory=Usage)
    rounds: int = Field(0, description="Rounds (iterations) the strategy ran.")
    proof_id: str | None = Field(None, description="Id of the chosen proof in the strategy's state, if it keeps one.")
    points: float | None = Field(
        None,
        description="With the points scale: the chosen proof's mean points (mean_score x max_points); "
        "left out of dumps without a verdict and on the ternary scale.",
        exclude_if=lambda value: value is None,
    )
    max_points: float | None = Field(
        None,
        description="With the points scale: the problem's points scale (left out of dumps on the ternary scale).",
        exclude_if=lambda value: value is None,
    )

    def in_points(self, roles: Roles, problem: Problem) -> SolveResult:
        """With a points verifier: fill ``points`` and ``max_points`` (else nothing changes)."""
        if roles.scale == "points":
            self.max_points = problem.max_points
            self.points = None if self.mean_score is None else self.mean_score * problem.max_points
        return self


#: progress hook a strategy calls as it starts a round and whenever its own state changes
#: within one: ``(problem id, round number, state)``. ``state`` holds the strategy's figures,
#: named as a progress line shows them (:func:`progress_text`); a round number other than the
#: previous call's for that problem means a round started. The service's round events, the
#: batch's round count and the CLI's live progress all come from it.
RoundHook = Callable[[str, int, dict[str, Any]], None]


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, tuple) and len(value) == 2:
        return f"{_shown(value[0])}/{_shown(value[1])}"
    return str(value)


def progress_text(round_: int, state: dict[str, Any]) -> str:
    """A strategy's state in words: ``round 2/16, pool 130, verified 40/130, best mean 0.75``
    (a name's ``_`` is a space; a pair ``(a, b)`` is ``a/b``; the round from ``state["round"]``
    when the strategy gives its total there, else the hook's number)."""
    fields = {"round": round_, **state}
    return ", ".join(f"{name.replace('_', ' ')} {_shown(value)}" for name, value in fields.items())


class ConfiguredStrategy:
    """Base of the built-in strategies: a validated config object, and a progress hook.

    ``Strategy(config)``, ``Strategy(field=value, ...)`` or both (keywords override the config).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel | None = None, **params: Any):
        base = config.model_dump() if config is not None else {}
        self.config = self.config_class.model_validate({**base, **params})
        self.on_round: RoundHook | None = None

    def report(self, problem_id: str, round_: int, **state: Any) -> None:
        """Tell the progress hook (:data:`RoundHook`), when one is set, where the solve stands."""
        if self.on_round is not None:
            self.on_round(problem_id, round_, state)

    def plan(self) -> CallPlan:
        """The model calls one solve makes at most, from this strategy's settings."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class ToolStrategy(ConfiguredStrategy):
    """A strategy that runs tools (CRITIC, ToRA): its config has ``tools`` (names) and
    ``tool_timeout``; the tools are built on first use and shared by every problem (or given as
    ``tool_objects``); unknown names fail when the strategy is made; :meth:`aclose` releases what
    it built (sandbox pools)."""

    def __init__(self, config: BaseModel | None = None, *, tool_objects: list[Tool] | None = None, **params: Any):
        super().__init__(config, **params)
        self._tools: list[Tool] | None = tool_objects
        if tool_objects is None:
            for name in self.config.tools:  # type: ignore[attr-defined]  # unknown names fail now, not inside a run
                tool_class(name)

    @property
    def tools(self) -> list[Tool]:
        if self._tools is None:
            timeout = self.config.tool_timeout  # type: ignore[attr-defined]
            self._tools = [get_tool(name, timeout=timeout) for name in self.config.tools]  # type: ignore[attr-defined]
        return self._tools

    async def aclose(self) -> None:
        """Release the tools (sandbox pools) this strategy built."""
        for tool in self._tools or []:
            close = getattr(tool, "aclose", None)
            if close is not None:
                await close()
        self._tools = None


# --------------------------------------------------------------------------- strategy helpers


def usable(generation: Generation, keep_invalid: bool = False) -> bool:
    """Whether a generation counts as a proof: it follows the protocol and has proof text
    (with ``keep_invalid``, any generation with proof text counts)."""
    return bool(generation.proof.strip()) and (generation.format_ok or keep_invalid)


def evaluation_text(analysis: str, score: float | None) -> str:
    """An analysis as a refinement prompt shows it: the analysis, then the score marker and box."""
    text = analysis.strip() or "(no analysis written)"
    if score is None:
        return text
    return f"{text}\n\n{SCORE_MARKER}\n\\boxed{{{format_score(score)}}}"


def verifier_evaluation_text(verifier: Verifier, problem: Problem, verification: Verification) -> str:
    """A verifier's analysis as a refinement prompt shows it: on the ternary scale
    :func:`evaluation_text`; a verifier with its own way (the points verifier: the analysis and
    "x / 7 points", from its prompt set) writes it itself."""
    own = getattr(verifier, "evaluation_text", None)
    if own is not None:
        return own(problem, verification)
    return evaluation_text(verification.analysis, verification.score)


def self_evaluation_text(generation: Generation) -> str:
    """The self-analysis of a generation as the next refinement prompt shows it."""
    if generation.self_analysis.strip():
        return evaluation_text(generation.self_analysis, generation.self_score)
    reason = generation.format_error or "no self-evaluation"
    return f"(The previous answer did not follow the required output format: {reason}.)"


async def gather_within_budget(aws: Iterable[Awaitable[T]]) -> tuple[list[T | None], BudgetExceeded | None]:
    """Run ``aws`` concurrently to the end; a spent budget leaves ``None`` in its place.

    Unlike a plain gather, work that finished is kept when another task hits the budget, and
    no task is left running. Other errors are raised once every task is done.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    out: list[T | None] = []
    budget_error: BudgetExceeded | None = None
    for result in results:
        if isinstance(result, BudgetExceeded):
            budget_error = budget_error or result
            out.append(None)
        elif isinstance(result, BaseException):
            raise result
        else:
            out.append(result)
    return out, budget_error


class StepLog:
    """The transcript of one solve, and the usage of the role outputs it saw."""

    def __init__(self) -> None:
        self.transcript: list[dict[str, Any]] = []
        self.usage = Usage()

    def generation(self, step: str, round_: int, generation: Generation, **extra: Any) -> dict[str, Any]:
        """Log a generation (``step`` is "generate" or "refine"); the raw text only on failure."""
        entry: dict[str, Any] = {
            "step": step,
            "round": round_,
            **extra,
            "proof": generation.proof,
            "self_analysis": generation.self_analysis,
            "self_score": generation.self_score,
            "format_ok": generation.format_ok,
            "format_error": generation.format_error,
            "finish_reason": generation.finish_reason,
        }
        if not generation.format_ok:
            entry["raw"] = generation.raw
        self.transcript.append(entry)
        self.usage.add(generation.usage)
        return entry

    def verification(self, round_: int, verifications: list[Verification], **extra: Any) -> dict[str, Any]:
        """Log the verifications of one proof with their scores and analyses."""
        entry = {
            "step": "verify",
            "round": round_,
            **extra,
            "scores": [v.score for v in verifications],
            "score_sources": [v.score_source for v in verifications],  # "likelihood" / "guided": a read-out
            "mean": aggregate(verifications).mean,
            "analyses": [v.analysis for v in verifications],
            "format_errors": [v.format_error for v in verifications],
        }
        self.transcript.append(entry)
        for v in verifications:
            self.usage.add(v.usage)
        return entry

    def note(self, step: str, round_: int, **fields: Any) -> None:
        self.transcript.append({"step": step, "round": round_, **fields})


async def verify_for_evidence(
    problem: Problem, roles: Roles, result: SolveResult, log: StepLog, n: int, round_: int
) -> None:
    """Verify the chosen proof ``n`` times; fill ``verifications`` and ``mean_score``."""
    if n <= 0 or result.proof is None:
        return
    verifications = await roles.verifier.verify(problem, result.proof, n=n)
    log.verification(round_, verifications)
    result.verifications = verifications
    result.mean_score = aggregate(verifications).mean


class Strategy(Protocol):
    """A way to solve one problem with the roles; ``state_dir`` holds state a resume needs."""

    name: str

    async def solve(self, problem: Problem, roles: Roles, state_dir: Any = None) -> SolveResult: ...
