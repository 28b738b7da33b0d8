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
    backend = ScriptedBackend(
        lambda call: points_text(second if call.role == "reconcile" else first, f"Judge {name} read it.")
    )
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


def test_grade_cli_with_a_panel_batch_and_one_proof(tmp_path):
    """`grade --judge A --judge B` against two local servers (one model each): the judges grade,
    disagree by more than the threshold, reconcile, and the minimum decides; one proof prints
    each judge and the panel; a judge spec with a bad key is one error line."""
    import json

    from servers.tiny_openai_server import TinyOpenAIServer
    from typer.testing import CliRunner

    from proofcritic.cli import app

    generous = ScriptedBackend(lambda call: points_text(5 if call.role == "reconcile" else 7, "Fine."))
    strict = ScriptedBackend(lambda call: points_text(3 if call.role == "reconcile" else 1, "A gap."))
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"id": "a", "problem": "Show x.", "proof": "Proof."}) + "\n")
    (tmp_path / "problem.md").write_text("Show x.")
    (tmp_path / "proof.md").write_text("Proof.")
    with TinyOpenAIServer(generous, "roles") as one, TinyOpenAIServer(strict, "roles") as two:
        judges = [
            "--judge",
            f"openai/roles,base_url={one.url},name=generous",
            "--judge",
            f"openai/roles,base_url={two.url},name=strict",
        ]
        common = ["--scale", "points", "--no-cache", *judges]
        env = {"OPENAI_API_KEY": "x"}
        batch = CliRunner().invoke(
            app, ["grade", "--input", str(source), "--output", str(output), *common], env=env, catch_exceptions=False
        )
        assert batch.exit_code == 0, batch.output + batch.stderr
        single = CliRunner().invoke(
            app,
            ["grade", "--problem", str(tmp_path / "problem.md"), "--proof", str(tmp_path / "proof.md"), *common],
            env=env,
            catch_exceptions=False,
        )
        assert single.exit_code == 0, single.output + single.stderr
    [record] = map(json.loads, output.read_text().splitlines())
    assert record["spread"] == 6 and record["reconciled"] and record["points"] == 3 and record["rule"] == "min"
    assert [j["final_points"] for j in record["judges"]] == [5, 3]
    assert "judge generous: 7 points, after reconciling 5 points" in single.stdout
    assert "panel (min): 3 points / 7 points" in single.stdout
    bad = CliRunner().invoke(
        app,
        ["grade", "--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--judge", "openai/roles,colour=blue"],
    )
    assert bad.exit_code != 0 and "not key=value" in (bad.output + bad.stderr + str(bad.exception))


def test_eval_grade_with_a_panel_reports_each_judge(tmp_path):
    """`eval grade --judge ... --judge ...` on a graded file: the panel's verdict is measured, and
    the summary gives each judge's agreement with the humans and the judges' agreement."""
    import json

    from servers.tiny_openai_server import TinyOpenAIServer
    from typer.testing import CliRunner

    from proofcritic.cli import app

    exact = ScriptedBackend(lambda call: points_text(7 if "Proof A" in call.prompt else 0, "Exact."))
    harsh = ScriptedBackend(lambda call: points_text(0, "Harsh."))
    graded = tmp_path / "graded.jsonl"
    rows = [
        {"id": "a", "problem": "Show x.", "proof": "Proof A.", "points": 7, "max_points": 7},
        {"id": "b", "problem": "Show y.", "proof": "Proof B.", "points": 0, "max_points": 7},
    ]
    graded.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TinyOpenAIServer(exact, "roles") as one, TinyOpenAIServer(harsh, "roles") as two:
        args = [
            "eval",
            "grade",
            "--file",
            str(graded),
            "--score-column",
            "points",
            "--run",
            str(tmp_path / "run"),
            "--scale",
            "points",
            "--panel-rule",
            "mean",
            "--no-cache",
            "--judge",
            f"openai/roles,base_url={one.url},name=exact",
            "--judge",
            f"openai/roles,base_url={two.url},name=harsh",
        ]
        result = CliRunner().invoke(app, args, env={"OPENAI_API_KEY": "x"}, catch_exceptions=False)
        assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    panel = summary["panel"]
    assert panel["proofs"] == 2 and panel["reconciled"] == 1  # a: 7 vs 0 -> reconcile (both keep their grade)
    assert panel["judges"]["exact"]["mae_points"] == 0 and panel["judges"]["harsh"]["mae_points"] == pytest.approx(3.5)
    assert panel["judges"]["exact"]["calls"] == 3  # two proofs, one reconciliation
    assert "exact vs harsh" in panel["between_judges"]
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "items.jsonl").read_text().splitlines())}
    assert records["a"]["predicted_points"] == pytest.approx(3.5) and records["b"]["predicted_points"] == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "judge exact: MAE points / QWK points / leniency" in report and "judges exact vs harsh" in report
