"""Judge panels: several verifiers grade a proof, one reconciliation round when they disagree.

MathArena grades with three judges in parallel; when their grades spread by more than 2 points
each judge sees the others' verdicts and grades again, and the panel keeps the minimum. A
:class:`Panel` does this for any verifiers (each its own model, prompts and ``n``; ternary or
points scale, all judges on one scale):

1. every judge grades the proof (its ``n`` samples); its verdict is the mean of its scored
   samples, in points (score x max_points);
2. when the judges' verdicts spread by more than ``threshold`` points (default: 2 on the points
   scale, 0.5 x max_points on the ternary one), each judge is shown its own first answer and
   the others' analyses and verdicts (template ``reconcile``) and grades again in its protocol;
   its new verdict replaces the first where it wrote one;
3. the panel verdict is ``rule`` over the judges' verdicts: ``min`` (default), ``mean``,
   ``median`` or ``majority`` (the most frequent; ties go to the lower grade).

A judge without a scored sample has no verdict and is left out of the rule; a panel with no
judge verdict has none. The record keeps every analysis, the reconciliation, the spreads and the
rule that decided.
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ..errors import InputError, validation_line
from ..io import problem_from_record, proof_from_record
from ..llm import ChatMessage, GenerateConfig, Usage, usage_scope
from ..runner import RunStats, read_items, run_jsonl
from ..types import Problem, Verification
from ..verifier import Verifier, parse_points_verification, parse_verification

PANEL_RULES = ("min", "mean", "median", "majority")
RECONCILE_TEMPLATE = "reconcile"
RECONCILE_VARIABLES = {RECONCILE_TEMPLATE: frozenset({"others", "spread"})}


class JudgeSpec(BaseModel):
    """One judge of a panel as a user writes it: ``--judge MODEL[,key=value...]`` or an entry of
    a panel file."""

    model: str = Field(min_length=1, description="A model spec, e.g. openai/gpt-4o or vllm/NAME.")
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="The environment variable holding its API key.")
    prompts: str | None = Field(None, description="Its prompt set folder (default: the command's).")
    n: int = Field(1, ge=1, le=1024, description="Its verifications per proof.")
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.model


def parse_judge(text: str) -> JudgeSpec:
    """``MODEL[,key=value...]`` (keys: base_url, api_key_env, prompts, n, name) as a JudgeSpec."""
    model, *pairs = [part.strip() for part in text.split(",")]
    fields: dict[str, Any] = {"model": model}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.strip() not in JudgeSpec.model_fields or key.strip() == "model":
            raise InputError(
                f"judge {text!r}: {pair!r} is not key=value with a key of base_url, api_key_env, prompts, n, name"
            )
        fields[key.strip()] = value.strip()
    try:
        return JudgeSpec.model_validate(fields)
    except ValidationError as error:
        raise InputError(f"judge {text!r}: {validation_line(error)}") from None


class PanelFile(BaseModel):
    """A panel file: its judges, and optionally the rule and threshold."""

    judges: list[JudgeSpec] = Field(min_length=1)
    rule: str | None = None
    threshold: float | None = Field(None, ge=0)


def load_panel(path: str | Path) -> PanelFile:
    """A panel file: JSON, ``{"judges": [...], "rule": ..., "threshold": ...}`` or the judge list."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return PanelFile.model_validate({"judges": data} if isinstance(data, list) else data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the panel file {p}: {error}") from None
    except ValidationError as error:
        raise InputError(f"panel file {p}: {validation_line(error)}") from None


class JudgeVerdict(BaseModel):
    """One judge's part of a panel grade."""

    judge: str
    verifications: list[Verification]
    points: float | None = Field(None, description="The mean points of its scored samples (first round).")
    reconciled: Verification | None = Field(None, description="Its second grade, after seeing the others.")
    final_points: float | None = Field(None, description="Its verdict after reconciliation (the first where none).")

    @property
    def usage(self) -> Usage:
        """What this judge's calls cost (its samples and its reconciliation)."""
        total = Usage()
        for v in [*self.verifications, *([self.reconciled] if self.reconciled else [])]:
            total.add(v.usage)
        return total


class PanelResult(BaseModel):
    """A panel's grade of one proof."""

    problem_id: str
    rule: str
    points: float | None = Field(None, description="The panel verdict in points (None: no judge had one).")
    score: float | None = Field(None, description="points / max_points.")
    max_points: float
    spread: float | None = Field(None, description="max - min of the judges' first verdicts, in points.")
    reconciled: bool = False
    final_spread: float | None = None
    judges: list[JudgeVerdict]
    usage: Usage = Field(default_factory=Usage)


def combine(values: Sequence[float], rule: str) -> float | None:
    """The panel rule over judge verdicts (None for none)."""
    if rule not in PANEL_RULES:
        raise ValueError(f"rule must be one of {', '.join(PANEL_RULES)}, not {rule!r}")
    if not values:
        return None
    if rule == "min":
        return min(values)
    if rule == "mean":
        return sum(values) / len(values)
    if rule == "median":
        return float(statistics.median(values))
    counts = Counter(values)
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


class Panel:
    """Judges (verifiers, one scale), a rule and a disagreement threshold (see the module)."""

    def __init__(
        self,
        judges: Sequence[Verifier],
        *,
        rule: str = "min",
        threshold: float | None = None,
        n: int | Sequence[int] = 1,
        names: Sequence[str] | None = None,
    ):
        if not judges:
            raise ValueError("a panel needs at least one judge")
        if rule not in PANEL_RULES:
            raise ValueError(f"rule must be one of {', '.join(PANEL_RULES)}, not {rule!r}")
        scales = {judge.scale for judge in judges}
        if len(scales) != 1:
            raise ValueError("the judges of a panel grade on one scale (all ternary or all points)")
        self.judges = list(judges)
        self.rule = rule
        self.scale = scales.pop()
        self.threshold = threshold
        self.n = [n] * len(judges) if isinstance(n, int) else list(n)
        if len(self.n) != len(self.judges) or min(self.n) < 1:
            raise ValueError("give one n (at least 1) for every judge")
        self.names = list(names) if names is not None else [f"{i + 1}" for i in range(len(judges))]

    def on_scale(self, scale: str, config: GenerateConfig | None = None) -> Panel:
        """The same judges (models, prompt sets, names, n), rule and threshold on ``scale``
        ("ternary": verifiers reading scores from the text; "points": points verifiers), with
        ``config`` over each judge's sampling settings: one panel serves grade requests on
        either scale (the service's). A threshold left to its default follows the new scale."""
        from ..verifier import PointsVerifier

        if scale not in ("ternary", "points"):
            raise ValueError(f"scale must be ternary or points, not {scale!r}")
        judges: list[Verifier] = []
        for judge in self.judges:
            settings = judge.config.merge(config)
            if scale == "points":
                judges.append(PointsVerifier(judge.model, prompts=judge.prompts, config=settings))
            else:
                judges.append(Verifier(judge.model, prompts=judge.prompts, config=settings, score_mode="text"))
        return Panel(judges, rule=self.rule, threshold=self.threshold, n=self.n, names=self.names)

    def threshold_points(self, max_points: float) -> float:
        if self.threshold is not None:
            return self.threshold
        return 2.0 if self.scale == "points" else 0.5 * max_points

    def _parser(self, problem: Problem) -> Any:
        if self.scale == "points":
            return functools.partial(parse_points_verification, max_points=problem.max_points)
        return parse_verification

    async def grade(self, problem: Problem, proof: str) -> PanelResult:
        """The panel's grade of ``proof`` (see the module)."""
        with usage_scope() as usage:
            first = await asyncio.gather(*(j.verify(problem, proof, n=k) for j, k in zip(self.judges, self.n)))
            verdicts = [
                JudgeVerdict(judge=name, verifications=vs, points=_points(vs, problem.max_points))
                for name, vs in zip(self.names, first)
            ]
            known = [v.points for v in verdicts if v.points is not None]
            spread = max(known) - min(known) if len(known) > 1 else None
            reconciled = spread is not None and spread > self.threshold_points(problem.max_points)
            if reconciled:
                assert spread is not None  # reconciled only over a spread
                await asyncio.gather(
                    *(self._reconcile(problem, proof, i, verdicts, spread) for i in range(len(verdicts)))
                )
            for verdict in verdicts:
                again = verdict.reconciled
                if again is not None and again.score is not None:
                    verdict.final_points = again.score * problem.max_points
                else:
                    verdict.final_points = verdict.points
            finals = [v.final_points for v in verdicts if v.final_points is not None]
        points = combine(finals, self.rule)
        return PanelResult(
            problem_id=problem.id,
            rule=self.rule,
            points=points,
            max_points=problem.max_points,
            score=None if points is None else points / problem.max_points,
            spread=spread,
            reconciled=reconciled,
            final_spread=max(finals) - min(finals) if len(finals) > 1 else None,
            judges=verdicts,
            usage=usage,
        )

    async def _reconcile(
        self, problem: Problem, proof: str, index: int, verdicts: list[JudgeVerdict], spread: float
    ) -> None:
        """Judge ``index`` sees its first answer and the others' and grades again."""
        judge, own = self.judges[index], verdicts[index]
        mine = next((v for v in own.verifications if v.score is not None), None)
        if mine is None:
            return  # no grade of its own to reconsider
        others = [
            {"judge": v.judge, "verdict": _shown(v.points, problem.max_points), "analysis": _first_analysis(v)}
            for j, v in enumerate(verdicts)
            if j != index and v.points is not None
        ]
        follow_up = judge.prompts.template_set(RECONCILE_TEMPLATE, RECONCILE_VARIABLES[RECONCILE_TEMPLATE]).render(
            RECONCILE_TEMPLATE, others=others, spread=f"{spread:g} points"
        )
        messages = [*judge.messages(problem, proof), ChatMessage(role="assistant", content=mine.raw), *follow_up]
        [again] = await judge.ask(messages, self._parser(problem))
        own.reconciled = again


async def panel_jsonl(
    panel: Panel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    max_points: float | None = None,
    concurrency: int = 8,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Grade every record of ``input_path`` with ``panel`` into ``output_path`` (one
    :class:`PanelResult` per line, with ``aggregate`` in the shape of ``grade``'s); a killed run
    resumes where it stopped, like ``grade_jsonl``."""

    async def process(item_id: str, record: dict) -> dict:
        problem = problem_from_record(record, default_id=item_id)
        if max_points is not None:
            problem = problem.model_copy(update={"max_points": max_points})
        proof = proof_from_record(record)
        result = await panel.grade(problem, proof.text)
        out = result.model_dump(mode="json")
        out["proof_id"] = proof.id
        return out

    return await run_jsonl(
        read_items(input_path), output_path, process, concurrency=concurrency, on_progress=on_progress
    )


def _points(verifications: Sequence[Verification], max_points: float) -> float | None:
    scores = [v.score for v in verifications if v.score is not None]
    return None if not scores else sum(scores) / len(scores) * max_points


def _first_analysis(verdict: JudgeVerdict) -> str:
    return next((v.analysis for v in verdict.verifications if v.score is not None), "")


def _shown(points: float | None, max_points: float) -> str:
    return "none" if points is None else f"{points:g} of {max_points:g} points"


__all__ = [
    "PANEL_RULES",
    "JudgeSpec",
    "JudgeVerdict",
    "Panel",
    "PanelFile",
    "PanelResult",
    "combine",
    "load_panel",
    "panel_jsonl",
    "parse_judge",
]
