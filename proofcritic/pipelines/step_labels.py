"""Step labels by rollouts (Math-Shepherd; issue #18, ``proofcritic label-steps``).

A solution is split into steps (:func:`proofcritic.steps.split_steps`). For each step ``i`` the
*prefix* is the solution's text up to the end of step ``i``; the generator continues it ``n``
times (template ``rollout``: the problem, the prefix, "write the remaining steps") and each
*rollout* (prefix + continuation) is judged:

- **answer problems** (the record has an ``answer``): the rollout's final answer is checked
  against it (:func:`proofcritic.answers.check_answer`, math-verify);
- **proofs**: one verification of the rollout by the verifier; it succeeds when it scores 1
  (full marks on the points scale).

The last step's prefix is the whole solution: it is not continued, it is judged itself (the
answer check once; the verifier up to ``n`` times, sample ``j`` of one request).

Labels per step: **soft** = successes / rollouts judged (Math-Shepherd's soft estimation),
**hard** = at least one success (hard estimation). With ``early_stop`` (default) a step's
rollouts are drawn in batches (``batch``, doubling, up to ``n``; sample ``j`` is always sample
``j`` of the one fixed request, so its cache slot is the same) and drawing stops at the first
success: the hard labels are those of the full ``n``, the soft label is then the share among
the rollouts drawn (``soft_exact`` false). ``early_stop=False`` draws all ``n`` (exact soft
labels).

A budget that runs out leaves the steps not yet settled unlabeled: the record says
``status: "budget_exhausted"``, its ``labels`` stop before the first unsettled step, and a rerun
on the same cache replays what was asked and goes on.

The record (:class:`StepLabelResult`) is in TRL's stepwise format, ``prompt`` (the problem),
``completions`` (the step texts) and ``labels`` (hard labels), with the soft labels, the steps
with their offsets, and every rollout with its judgement as evidence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .._roles import Role
from ..answers import AnswerCheck, check_answer
from ..budget import Budget, BudgetExceeded, CallPlan
from ..errors import InputError
from ..io import problem_from_record, proof_from_record
from ..llm import SampleCount, Usage, usage_scope
from ..parsing import strip_thinking, truncation_error
from ..runner import RunStats, read_items, run_jsonl
from ..steps import DEFAULT_STEP_MODE, Step, StepMode, split_steps
from ..types import Problem, RoleOutput, Verification
from ..verifier import Verifier
from .adaptive import checkpoints

__all__ = [
    "ROLLOUT_TEMPLATE",
    "Roller",
    "Rollout",
    "StepEvidence",
    "StepLabelConfig",
    "StepLabelResult",
    "label_steps",
    "label_steps_jsonl",
    "record_answer",
]

ROLLOUT_TEMPLATE = "rollout"
ROLLOUT_VARIABLES = {ROLLOUT_TEMPLATE: frozenset({"problem", "prefix", "answer"})}
#: fields of an input record that hold a problem's short answer, first match wins
ANSWER_FIELDS = ("answer", "short_answer", "Short Answer", "final_answer")
StepStatus = Literal["labeled", "budget_exhausted"]


class StepLabelConfig(BaseModel):
    """Parameters of step labeling by rollouts."""

    model_config = ConfigDict(extra="forbid")

    n: SampleCount = Field(8, description="Rollouts per step (Math-Shepherd's N).")
    early_stop: bool = Field(True, description="Stop a step's rollouts at its first success (hard labels exact).")
    batch: int = Field(1, ge=1, description="With early_stop: rollouts drawn first, doubling up to n.")
    step_mode: StepMode = Field(DEFAULT_STEP_MODE, description="How the solution is split (proofcritic.steps).")

    def plan(self, steps: int = 1) -> CallPlan:
        """The model calls labeling a solution of ``steps`` steps makes at most: per step but the
        last, the rollout requests and one verification per rollout (proofs; none for answers);
        the last step, its verifications."""
        requests = len(checkpoints(self.n, self.batch)) if self.early_stop else 1
        inner = max(steps - 1, 0)
        return (
            CallPlan()
            .add("rollout", inner * requests, inner * self.n)
            .add("verification (proofs only)", inner * self.n + requests, inner * self.n + self.n)
        )


class Rollout(RoleOutput):
    """One continuation of a prefix and its judgement."""

    sample: int = Field(0, description="Sample index in the step's rollout request (0 for the last step's text).")
    continuation: str = ""
    passed: bool = False
    answer: AnswerCheck | None = Field(None, description="Answer problems: the extracted answer and its check.")
    verification: Verification | None = Field(None, description="Proofs: the verification of prefix + continuation.")


class StepEvidence(BaseModel):
    """One step's rollouts and labels."""

    step: Step
    hard: bool | None = Field(None, description="Some rollout succeeded; None when the budget ran out first.")
    soft: float | None = Field(None, description="Successes / rollouts judged.")
    soft_exact: bool = Field(False, description="All n rollouts were judged (no early stop).")
    successes: int = 0
    judged: int = 0
    rollouts: list[Rollout] = Field(default_factory=list)


class StepLabelResult(BaseModel):
    """A solution's step labels, in TRL's stepwise format, with the evidence."""

    id: str | None = None
    prompt: str = Field(..., description="The problem statement (TRL stepwise: prompt).")
    completions: list[str] = Field(..., description="The steps' texts (TRL stepwise: completions).")
    labels: list[bool] = Field(..., description="Hard labels of the steps settled (all of them when labeled).")
    soft_labels: list[float] = Field(default_factory=list, description="Soft labels of the same steps.")
    status: StepStatus = "labeled"
    reason: str = ""
    judge: Literal["answer", "verifier"]
    answer: str | None = None
    problem: Problem
    solution: str
    first_bad_step: int | None = Field(None, description="Index of the first step with hard label false.")
    steps: list[StepEvidence] = Field(default_factory=list)
    config: StepLabelConfig
    usage: Usage = Field(default_factory=Usage)
    budget_limited: bool = False


class Continuation(RoleOutput):
    """A rollout's text: the continuation written after the prefix."""

    text: str = ""


def parse_continuation(text: str, finish_reason: str | None = "stop") -> Continuation:
    """A rollout's continuation; never raises (an empty or truncated one is judged all the same)."""
    body = strip_thinking(text).strip()
    errors = [e for e in (truncation_error(finish_reason), "" if body else "empty continuation") if e]
    return Continuation(
        raw=text,
        text=body,
        format_ok=not errors,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )


class Roller(Role):
    """The generator continuing a prefix of a solution (template ``rollout``)."""

    template = ROLLOUT_TEMPLATE

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts = self.prompts.template_set(ROLLOUT_TEMPLATE, ROLLOUT_VARIABLES[ROLLOUT_TEMPLATE])

    async def roll(self, problem: Problem, prefix: str, answer: bool, n: int, first: int = 0) -> list[Continuation]:
        """Samples ``first`` .. ``first + n - 1`` of the continuations of ``prefix``."""
        messages = self.render(problem=problem, prefix=prefix, answer=answer)
        return await self.ask(messages, parse_continuation, n, first=first)


def record_answer(record: dict) -> str | None:
    """The short answer of an input record (fields :data:`ANSWER_FIELDS`), None without one."""
    nested = record.get("problem")
    for source in (record, nested if isinstance(nested, dict) else {}):
        for name in ANSWER_FIELDS:
            value = source.get(name)
            if value is not None and str(value).strip():
                return str(value)
    return None


async def _judge(
    verifier: Verifier | None, problem: Problem, answer: str | None, text: str, sample: int
) -> tuple[bool, AnswerCheck | None, Verification | None]:
    if answer is not None:
        check = check_answer(answer, text)
        return check.correct, check, None
    assert verifier is not None
    [verification] = await verifier.verify(problem, text, 1, first=sample)
    return verification.score is not None and verification.score >= 1, None, verification


async def _label_step(
    roller: Roller,
    verifier: Verifier | None,
    problem: Problem,
    solution: str,
    step: Step,
    last: bool,
    answer: str | None,
    config: StepLabelConfig,
) -> StepEvidence:
    evidence = StepEvidence(step=step)
    prefix = solution[: step.end]
    if last and answer is not None:  # the whole solution, checked once: nothing random
        passed, check, _ = await _judge(None, problem, answer, solution, 0)
        evidence.rollouts.append(Rollout(passed=passed, answer=check, format_ok=True))
        evidence.hard, evidence.soft, evidence.soft_exact = passed, float(passed), True
        evidence.successes, evidence.judged = int(passed), 1
        return evidence
    stops = checkpoints(config.n, config.batch) if config.early_stop else [config.n]
    drawn = 0
    for stop in stops:
        if last:
            assert verifier is not None
            found = await verifier.verify(problem, solution, stop - drawn, first=drawn)
            rollouts = [
                Rollout(
                    sample=drawn + j,
                    passed=v.score is not None and v.score >= 1,
                    verification=v,
                    format_ok=True,
                    usage=v.usage,
                )
                for j, v in enumerate(found)
            ]
        else:
            continuations = await roller.roll(problem, prefix, answer is not None, stop - drawn, first=drawn)
            judged = await asyncio.gather(
                *(
                    _judge(verifier, problem, answer, f"{prefix}\n\n{c.text}", drawn + j)
                    for j, c in enumerate(continuations)
                )
            )
            rollouts = [
                Rollout(
                    **c.model_dump(exclude={"text"}),
                    sample=drawn + j,
                    continuation=c.text,
                    passed=passed,
                    answer=check,
                    verification=verification,
                )
                for j, (c, (passed, check, verification)) in enumerate(zip(continuations, judged))
            ]
        evidence.rollouts += rollouts
        drawn = stop
        if config.early_stop and any(r.passed for r in rollouts):
            break
    evidence.judged = len(evidence.rollouts)
    evidence.successes = sum(r.passed for r in evidence.rollouts)
    evidence.hard = evidence.successes > 0
    evidence.soft = evidence.successes / evidence.judged
    evidence.soft_exact = evidence.judged == config.n
    return evidence


async def label_steps(
    roller: Roller,
    verifier: Verifier | None,
    problem: Problem,
    solution: str,
    *,
    answer: str | None = None,
    config: StepLabelConfig | None = None,
    item_id: str | None = None,
) -> StepLabelResult:
    """Label every step of ``solution`` by rollouts (see the module docstring). ``answer``: the
    problem's short answer (then rollouts are checked against it, no verifier needed)."""
    config = config or StepLabelConfig()
    if answer is None and verifier is None:
        raise ValueError("a proof (no answer) needs a verifier to judge its rollouts")
    steps = split_steps(solution, config.step_mode)
    with usage_scope() as usage:
        outcomes = await asyncio.gather(
            *(
                _label_step(roller, verifier, problem, solution, s, s.index == len(steps) - 1, answer, config)
                for s in steps
            ),
            return_exceptions=True,
        )
    evidence: list[StepEvidence] = []
    budget_error: BudgetExceeded | None = None
    for step, outcome in zip(steps, outcomes):
        if isinstance(outcome, BudgetExceeded):
            budget_error = budget_error or outcome
            evidence.append(StepEvidence(step=step))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            evidence.append(outcome)
    settled = next((i for i, e in enumerate(evidence) if e.hard is None), len(evidence))
    labels = [bool(e.hard) for e in evidence[:settled]]
    first_bad = next((i for i, good in enumerate(labels) if not good), None)
    rollouts = sum(e.judged for e in evidence)
    if budget_error is not None:
        status: StepStatus = "budget_exhausted"
        reason = f"{budget_error}: {settled} of {len(steps)} steps labeled in order ({rollouts} rollouts judged)"
    else:
        status = "labeled"
        bad = labels.count(False)
        reason = (
            f"{len(steps)} steps, {len(steps) - bad} good, {bad} bad"
            + (f" (first bad: step {first_bad + 1})" if first_bad is not None else "")
            + f"; {rollouts} rollouts judged by the {'answer check' if answer is not None else 'verifier'}"
        )
        if not steps:
            reason = "the solution has no steps"
    return StepLabelResult(
        id=item_id,
        prompt=problem.statement,
        completions=[s.text for s in steps],
        labels=labels,
        soft_labels=[e.soft or 0.0 for e in evidence[:settled]],
        status=status,
        reason=reason,
        judge="answer" if answer is not None else "verifier",
        answer=answer,
        problem=problem,
        solution=solution,
        first_bad_step=first_bad,
        steps=evidence,
        config=config,
        usage=usage,
        budget_limited=budget_error is not None,
    )


async def label_steps_jsonl(
    roller: Roller,
    verifier: Verifier | None,
    input_path: str | Path,
    output_path: str | Path,
    *,
    config: StepLabelConfig | None = None,
    judge: Literal["auto", "answer", "verifier"] = "auto",
    max_calls: int | None = None,
    max_tokens: int | None = None,
    concurrency: int = 4,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Label the steps of every record of ``input_path`` (``problem``, ``proof``: the solution,
    optional ``answer``); one record per solution in ``output_path``, resumed like ``label``'s
    (finished ids skipped, answers from the cache). ``max_calls`` / ``max_tokens`` bound each
    solution's model calls and tokens. ``judge``: ``auto`` checks the answer of records that have
    one and verifies the others; ``answer`` makes a record without an answer an error record;
    ``verifier`` ignores answers. ``stats.extra`` counts the steps labeled good and bad in this
    run."""
    config = config or StepLabelConfig()
    counts = {"good_steps": 0, "bad_steps": 0}

    def item_budget(parent: Budget | None) -> Budget | None:
        if max_calls is None and max_tokens is None:
            return parent
        if parent is None:
            return Budget(max_calls=max_calls, max_tokens=max_tokens, name="solution")
        return parent.child(max_calls=max_calls, max_tokens=max_tokens, name="solution")

    def progress(stats: RunStats) -> None:
        stats.extra.update(counts)
        if on_progress:
            on_progress(stats)

    async def process(item_id: str, record: dict) -> dict:
        problem = problem_from_record(record, default_id=item_id)
        proof = proof_from_record(record)
        answer = record_answer(record) if judge != "verifier" else None
        if answer is None and judge == "answer":
            raise InputError("record has no answer ('answer' or 'short_answer'), and --judge is answer")
        result = await label_steps(
            roller,
            verifier,
            problem,
            proof.text,
            answer=answer,
            config=config,
            item_id=proof.id or item_id,
        )
        counts["good_steps"] += result.labels.count(True)
        counts["bad_steps"] += result.labels.count(False)
        return result.model_dump(mode="json")

    stats = await run_jsonl(
        read_items(input_path),
        output_path,
        process,
        concurrency=concurrency,
        item_budget=item_budget,
        on_progress=progress,
    )
    stats.extra.update(counts)
    return stats
