"""Judge panels: parallel judges, one reconciliation round when they spread too far, the panel
rules, on scripted judges (each its own model) and SmolLM2 as one judge once."""

from __future__ import annotations

import pytest
from scripted import ScriptedBackend, verification_text

from proofcritic import Problem
from proofcritic.llm import GenerateConfig, Model
from proofcritic.parsing import EVALUATION_MARKER, POINTS_MARKER
from proofcritic.pipelines.panel import Panel, combine
from proofcritic.verifier import PointsVerifier, Verifier

PROBLEM = Problem(id="p", statement="Prove that 1 + 1 = 2.", max_points=7)


def points_text(points: int, analysis: str) -> str:
    return f"{EVALUATION_MARKER}\n{analysis}\n\n### Issues\n\n- None\n\n{POINTS_MARKER}\n\\boxed{{{points}}}"


def points_judge(first: int, second: int, name: str):
    """A points judge that grades ``first``, and ``second`` when asked to reconcile."""
    backend = ScriptedBackend(lambda call: points_text(second if call.role == "reconcile" else first, f"Judge {name} read it."))
    return PointsVerifier(Model(backend)), backend


async def test_judges_that_disagree_reconcile_once_and_the_minimum_decides():
    (a, ba), (b, bb), (c, bc) = points_judge(7, 5, "A"), points_judge(1, 3, "B"), points_judge(6, 6, "C")
    result = await Panel([a, b, c], names=["A", "B", "C"]).grade(PROBLEM, "1 + 1 = 2.")
    assert result.spread == 6 and result.reconciled
    assert [j.final_points for j in result.judges] == [5, 3, 6] and result.points == 3 and result.final_spread == 3
    assert ba.count("reconcile") == bb.count("reconcile") == bc.count("reconcile") == 1
    # judge B's reconciliation prompt shows the others' grades and analyses, not its own as another's
    prompt = next(call.prompt for call in bb.calls if call.role == "reconcile")
    assert "Grader A (grade: 7 of 7 points)" in prompt and "Judge A read it." in prompt and "Grader B" not in prompt
    assert result.usage.calls == 6


async def test_close_judges_do_not_reconcile():
    (a, ba), (b, _) = points_judge(6, 0, "A"), points_judge(7, 0, "B")
    result = await Panel([a, b], rule="mean").grade(PROBLEM, "proof")
    assert result.spread == 1 and not result.reconciled and result.points == pytest.approx(6.5)
    assert ba.count("reconcile") == 0


async def test_ternary_judges_use_half_the_scale_as_threshold():
    one = Verifier(Model(ScriptedBackend(lambda call: verification_text(1))))
    zero = Verifier(Model(ScriptedBackend(lambda call: verification_text(0 if call.role != "reconcile" else 0.5))))
    result = await Panel([one, zero]).grade(PROBLEM, "proof")
    assert result.spread == 7 and result.reconciled and result.points == pytest.approx(3.5)  # min(7, 3.5)
    mixed = [one, PointsVerifier(Model(ScriptedBackend(lambda call: points_text(3, ""))))]
    with pytest.raises(ValueError, match="one scale"):
        Panel(mixed)


def test_rules():
    assert combine([3, 5, 5, 7], "min") == 3 and combine([3, 5, 5, 7], "median") == 5
    assert combine([3, 5, 5, 7], "mean") == 5 and combine([3, 3, 7, 7], "majority") == 3
    assert combine([], "min") is None
    with pytest.raises(ValueError):
        combine([1], "max")


@pytest.mark.smollm2
async def test_smollm2_as_one_judge(smol_backend):
    smol = Verifier(Model(smol_backend), config=GenerateConfig(max_tokens=24, temperature=0.0))
    scripted = Verifier(Model(ScriptedBackend(lambda call: verification_text(1))))
    result = await Panel([smol, scripted]).grade(PROBLEM, "1 + 1 = 2 by the successor axiom.")
    assert result.judges[1].points == 7
    assert result.points is not None  # at least the scripted judge has a verdict
