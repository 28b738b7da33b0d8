"""The typed protocol shared by the three roles (SPEC section 1).

Scores are in {0, 0.5, 1}; ``None`` means the output did not carry a valid score (a format
failure). Every record keeps the raw model text so that nothing is lost in parsing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from .llm import Usage
from .steps import Step

SCORES: tuple[float, ...] = (0.0, 0.5, 1.0)
Severity = Literal["critical_error", "justification_gap", "unspecified"]
ScoreSource = Literal["text", "likelihood", "guided"]
#: score sources that are a read-out (opt-in score modes), not a score the model wrote
READ_OUT_SOURCES: tuple[str, ...] = ("likelihood", "guided")


class Problem(BaseModel):
    """A problem statement with the optional material a grader may use."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field("problem", description="Identifier, unique within a data set.")
    statement: str = Field(..., description="The problem in LaTeX/Markdown.")
    reference_solution: str | None = Field(None, description="A reference solution, shown to the verifier.")
    grading_guidelines: str | None = Field(None, description="What earns partial credit.")
    max_points: float = Field(7.0, gt=0, description="Points of a fully correct proof (IMO 7, Putnam 10, CMO 21).")

    @field_validator("statement")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the problem statement is empty")
        return value

    def points(self, score: float | None) -> float | None:
        """Map a score in [0, 1] linearly onto this problem's points scale."""
        return None if score is None else score * self.max_points


class Proof(BaseModel):
    """A natural-language proof of a problem."""

    model_config = ConfigDict(extra="forbid")

    text: str
    id: str | None = None

    @field_validator("text")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the proof is empty")
        return value


class Issue(BaseModel):
    """One defect a verifier reports."""

    location: str | None = Field(None, description="A quote from the proof or a step reference.")
    severity: Severity = "unspecified"
    description: str = ""
    span: tuple[int, int] | None = Field(
        None, description="[start, end) character offsets of the quoted location in the proof, where it is found there."
    )


class RoleOutput(BaseModel):
    """Fields every role result shares."""

    raw: str = Field("", description="The whole model output.")
    format_ok: bool = Field(False, description="The output follows the role's protocol and has a valid score.")
    format_error: str | None = Field(None, description="Why the output is a format failure.")
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)


class Generation(RoleOutput):
    """The generator's proof and self-evaluation."""

    proof: str = ""
    self_analysis: str = ""
    self_score: float = Field(0.0, description="The self-score; 0 when it does not parse (SPEC).")


class ToolCall(BaseModel):
    """One tool run of a tool-interactive (CRITIC) verification, as the model asked for it."""

    tool: str = Field(..., description="The tool's name (python, lean).")
    code: str = Field(..., description="The code block the model wrote.")
    said: str = Field("", description="The model's turn that ended with the code block.")
    output: str = Field("", description="The tool output as the model was shown it.")
    ok: bool = Field(False, description="The code ran to the end without an error or a limit.")
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    limit_hit: str | None = None
    duration: float = 0.0


class ScoredOutput(RoleOutput):
    """The output of a role that ends in a score (verifier, meta-verifier): the score written
    in the text, or one read out of the model in an opt-in score mode (see
    :mod:`proofcritic._readout`)."""

    analysis: str = ""
    score: float | None = Field(None, description="The final score in {0, 0.5, 1}, or None.")
    score_source: ScoreSource | None = Field(None, description="Where the score came from.")
    text_score: float | None = Field(None, description="The score written in the text, if valid.")
    score_distribution: dict[str, float] | None = Field(
        None, description="Likelihood of each score {'0','0.5','1'} when read out by likelihood."
    )
    expected_score: float | None = Field(None, description="Expected score under score_distribution.")

    @property
    def read_out(self) -> bool:
        """The score came from a read-out (likelihood or guided choice), not from the text."""
        return self.score is not None and self.score_source in READ_OUT_SOURCES


class Verification(ScoredOutput):
    """One verifier analysis of a proof."""

    issues: list[Issue] = Field(default_factory=list)
    points: float | None = Field(
        None,
        description="A points grade's points (--scale points; then score is points / max_points); left out of dumps otherwise.",
        exclude_if=lambda value: value is None,
    )
    tool_calls: list[ToolCall] | None = Field(
        None,
        description="Tool runs of a tool-interactive verification, in order (None: no tools; left out of dumps).",
        exclude_if=lambda value: value is None,
    )


StepVerdictKind = Literal["correct", "incorrect", "unjustified"]
STEP_VERDICTS: tuple[str, ...] = ("correct", "incorrect", "unjustified")


class StepVerdict(BaseModel):
    """The step verifier's verdict on one step (``index`` as in :class:`proofcritic.steps.Step`)."""

    index: int = Field(..., ge=0, description="The step's index (from 0; the prompt numbers it index + 1).")
    verdict: StepVerdictKind
    reason: str = Field("", description="The short reason the verifier gave.")


class StepVerification(ScoredOutput):
    """One step verifier output: a verdict for every step, in order, and the first wrong step.

    ``score`` maps the verdicts onto the proof-level protocol: 0 when a step is incorrect, 0.5
    when steps are unjustified but none incorrect, 1 when every step is correct; None (with
    ``format_ok`` false) when the output does not give one verdict per step, in order.
    """

    verdicts: list[StepVerdict] = Field(default_factory=list)
    first_error: int | None = Field(
        None, description="Index of the first incorrect step (from 0); None when no step is incorrect or no verdict."
    )

    @property
    def unjustified(self) -> list[int]:
        """Indices of the steps judged unjustified."""
        return [v.index for v in self.verdicts if v.verdict == "unjustified"]


class MetaVerification(ScoredOutput):
    """A meta-verifier's judgement of one verification (``score``: the meta score)."""


class Aggregate(BaseModel):
    """Aggregate of several verifications of one proof, over the scored ones only.

    A proof with no scored verification has no verdict: every statistic is None.
    """

    n: int = Field(..., description="Verifications requested.")
    valid: int = Field(..., description="Verifications with a score.")
    read_out: int = Field(0, description="Scores among them that came from a read-out (likelihood or guided).")
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    majority: float | None = Field(None, description="Most frequent score; ties go to the lower score.")
    points: float | None = Field(None, description="mean on the problem's points scale.")
    max_points: float = 7.0

    @computed_field(description="Verifications without a score (format failures), left out of the statistics.")  # type: ignore[prop-decorator]
    @property
    def unscored(self) -> int:
        return self.n - self.valid


class GradeResult(BaseModel):
    """Everything ``grade`` found out about one proof."""

    problem_id: str
    proof_id: str | None = None
    verifications: list[Verification]
    aggregate: Aggregate
    usage: Usage = Field(default_factory=Usage)
    normalized_proof: str | None = Field(
        None,
        description="With --normalize: the rewritten proof the verifier graded (left out of dumps otherwise).",
        exclude_if=lambda value: value is None,
    )
    normalize_error: str | None = Field(
        None,
        description="With --normalize: why the rewrite was not used (the original was graded).",
        exclude_if=lambda value: value is None,
    )
    steps: list[Step] | None = Field(
        None,
        description="With --steps: the graded proof's steps (left out of dumps otherwise).",
        exclude_if=lambda value: value is None,
    )
    step_verifications: list[StepVerification] | None = Field(
        None,
        description="With --steps: the step verifier's n outputs (a verdict per step, the first wrong step).",
        exclude_if=lambda value: value is None,
    )
    step_aggregate: Aggregate | None = Field(
        None,
        description="With --steps: the step verifications' scores aggregated as the verifications' are.",
        exclude_if=lambda value: value is None,
    )
