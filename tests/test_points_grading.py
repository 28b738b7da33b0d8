"""Points grading (--scale points): the strict parser, the role on a scripted model, marking
schemes, the CLI against a local OpenAI-compatible server, and SmolLM2 through the role once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scripted import ScriptedBackend
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic import Problem
from proofcritic.cli import app
from proofcritic.llm import Model
from proofcritic.parsing import EVALUATION_MARKER, POINTS_MARKER
from proofcritic.verifier import PointsVerifier, parse_points_verification, scheme_text
from proofcritic.verifier._points import load_schemes, scheme_for

USAMO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "matharena-usamo2025" / "grading_scheme.json"


def points_text(points: str | float, issues: str = "- None", tail: str = "") -> str:
    value = points if isinstance(points, str) else f"{points:g}"
    return f"{EVALUATION_MARKER}\nChecked.\n\n### Issues\n\n{issues}\n\n{POINTS_MARKER}\n\\boxed{{{value}}}{tail}"


@given(st.integers(0, 21))
def test_every_whole_number_on_the_scale_parses(points):
    v = parse_points_verification(points_text(points), max_points=21)
    assert v.format_ok and v.points == points and v.score == pytest.approx(points / 21)


@pytest.mark.parametrize(
    "text, why",
    [
        (points_text(8), "not one of 0, 1, 2, 3, 4, 5, 6, 7"),  # outside the scale
        (points_text(-1), "not one of"),
        (points_text("6.5"), "not one of"),  # points are whole
        (points_text("six"), "not a number"),
        (points_text(6, tail=f"\n\n{POINTS_MARKER} \\boxed{{7}}"), "not the end of the output"),  # two verdicts
        (points_text(6, tail="\nAnd more."), "not the end of the output"),
        (points_text(6).replace(POINTS_MARKER, "Final points:"), "missing points marker"),
        # the ternary protocol's statement is no points grade
        (
            f"{EVALUATION_MARKER}\nok\n\nBased on my evaluation, the final overall score should be: \\boxed{{1}}",
            "missing points marker",
        ),
    ],
)
def test_format_failures(text, why):
    v = parse_points_verification(text, max_points=7)
    assert not v.format_ok and v.score is None and v.points is None
    assert why in (v.format_error or "")


def test_truncated_output_fails_but_keeps_what_it_wrote():
    v = parse_points_verification(points_text(5), "length", max_points=7)
    assert not v.format_ok and v.score is None and v.text_score == pytest.approx(5 / 7)


def test_scheme_text_and_lookup():
    entry = {
        "id": "3",
        "points": 7,
        "scheme": [
            {"title": "Key lemma", "points": 3, "desc": "Proves the lemma."},
            {"title": "Finish", "points": 1, "desc": ""},
        ],
    }
    assert scheme_text(entry) == "- Key lemma (3 points): Proves the lemma.\n- Finish (1 point)"
    assert scheme_text("  Award 7 for a proof. ") == "Award 7 for a proof."
    book = {"by_problem": {"3": entry}}
    assert scheme_for(book, "3") is entry and scheme_for(book, "usamo2025/3") is entry and scheme_for(book, "4") is None


@pytest.mark.skipif(not USAMO.exists(), reason="no USAMO 2025 data")
def test_usamo_human_schemes_load_by_problem():
    schemes = load_schemes(USAMO)
    first = scheme_for(schemes, "usamo2025-1")
    assert first["points"] == 7 and sum(item["points"] for item in first["scheme"]) == 7
    assert "Interchanging the floor and mod (3 points)" in scheme_text(first)


async def test_points_verifier_on_the_scripted_model():
    seen = []

    def script(call):
        seen.append(call.prompt)
        return points_text([7, 4, 9][call.index])  # the third is off the scale

    verifier = PointsVerifier(
        Model(ScriptedBackend(script)), scheme={"all": [{"title": "Lemma", "points": 4, "desc": "d"}]}
    )
    problem = Problem(id="p", statement="Prove it.", max_points=7, reference_solution="The reference.")
    results = await verifier.verify(problem, "My proof.", n=3)
    assert [v.points for v in results] == [7, 4, None] and [v.format_ok for v in results] == [True, True, False]
    assert results[1].score == pytest.approx(4 / 7)
    prompt = seen[0]
    assert "0 to 7 points" in prompt and "- Lemma (4 points): d" in prompt and "The reference." in prompt
    # a per-call scheme wins over the verifier's
    await verifier.verify(problem, "Other proof.", scheme="Only the answer counts.")
    assert "Only the answer counts." in seen[-1] and "Lemma" not in seen[-1]
    with pytest.raises(ValueError, match="text only"):
        PointsVerifier(Model(ScriptedBackend(script)), score_mode="auto")


def test_grade_cli_points_scale_batch(tmp_path):
    """`grade --scale points` against a local OpenAI-compatible server: points per record, a
    record's own scheme in the prompt, points in the aggregate; a scheme without the scale fails."""

    def script(call):
        return points_text(3 if "Proof B" in call.prompt else 7)

    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"id": "a", "problem": "Show x.", "proof": "Proof A.", "max_points": 7},
        {"id": "b", "problem": "Show y.", "proof": "Proof B.", "max_points": 7, "scheme": "Half for the lemma."},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TinyOpenAIServer(ScriptedBackend(script), "roles") as server:
        args = [
            "grade",
            "--input",
            str(source),
            "--output",
            str(output),
            "--model",
            "openai/roles",
            "--base-url",
            server.url,
            "--scale",
            "points",
            "--no-cache",
        ]
        result = CliRunner().invoke(app, args, catch_exceptions=False, env={"OPENAI_API_KEY": "x"})
        assert result.exit_code == 0, result.output + result.stderr
        prompts = [json.dumps(body["messages"]) for body in server.requests]
    records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert records["a"]["verifications"][0]["points"] == 7 and records["a"]["aggregate"]["points"] == pytest.approx(7)
    assert records["b"]["verifications"][0]["points"] == 3 and records["b"]["aggregate"]["points"] == pytest.approx(3)
    assert sum("Half for the lemma." in p for p in prompts) == 1
    bad = CliRunner().invoke(
        app,
        [
            "grade",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o2.jsonl"),
            "--scheme",
            str(tmp_path / "in.jsonl"),
            "--model",
            "openai/roles",
        ],
    )
    assert bad.exit_code == 2 and re.search(r"needs\s+--scale\s+points", bad.output + bad.stderr)


@pytest.mark.smollm2
async def test_smollm2_through_the_points_role(smol_backend):
    """The real model through the points protocol: whatever it writes is parsed without an
    exception, and a failure says why."""
    from proofcritic.llm import GenerateConfig

    verifier = PointsVerifier(Model(smol_backend), config=GenerateConfig(max_tokens=48, temperature=0.0))
    problem = Problem(id="p", statement="Prove that the sum of two even numbers is even.", max_points=7)
    [v] = await verifier.verify(problem, "Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even.")
    assert v.raw
    assert v.format_ok == (v.points is not None)
    if not v.format_ok:
        assert v.format_error


def test_eval_grade_cli_points_scale(tmp_path):
    """`eval grade --scale points` on a graded file against a local server: the verifier's points
    become the predicted points, measured against the human points."""

    def script(call):
        return points_text(6 if "Proof B" in call.prompt else 2)

    graded = tmp_path / "graded.jsonl"
    rows = [
        {"id": "a", "problem": "Show x.", "proof": "Proof A.", "points": 1, "max_points": 7},
        {"id": "b", "problem": "Show y.", "proof": "Proof B.", "points": 7, "max_points": 7},
    ]
    graded.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TinyOpenAIServer(ScriptedBackend(script), "roles") as server:
        args = [
            "eval",
            "grade",
            "--file",
            str(graded),
            "--score-column",
            "points",
            "--run",
            str(tmp_path / "run"),
            "--model",
            "openai/roles",
            "--base-url",
            server.url,
            "--scale",
            "points",
            "--no-cache",
        ]
        result = CliRunner().invoke(app, args, catch_exceptions=False, env={"OPENAI_API_KEY": "x"})
        assert result.exit_code == 0, result.output + result.stderr
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "items.jsonl").read_text().splitlines())}
    assert records["a"]["predicted_points"] == pytest.approx(2) and records["b"]["predicted_points"] == pytest.approx(6)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["leniency_points"] == pytest.approx(((2 - 1) + (6 - 7)) / 2)
    bad = CliRunner().invoke(app, ["eval", "grade", "--file", str(graded), "--scale", "points", "--rule", "label"])
    assert bad.exit_code == 2


async def test_eval_grade_rounds_to_the_gradingbench_buckets(tmp_path):
    """buckets="gradingbench": predicted grades 7, 4 (tie 1/6 would go down; 4 is nearer 6) and
    2 become 7, 6 and 1 points."""
    from proofcritic.benchmarks import GradeItem, RunFolder
    from proofcritic.benchmarks.eval_grade import eval_grade

    points = {"Proof A.": 7, "Proof B.": 4, "Proof C.": 2}
    verifier = PointsVerifier(
        Model(ScriptedBackend(lambda call: points_text(next(v for k, v in points.items() if k in call.prompt))))
    )
    items = [
        GradeItem(id=k[-2], problem=Problem(id="p", statement="Show it."), proof=k, human_points=7) for k in points
    ]
    await eval_grade(items, RunFolder(tmp_path / "run"), verifier=verifier, buckets="gradingbench", n_resamples=20)
    records = {r["id"]: r["predicted_points"] for r in RunFolder(tmp_path / "run").records()}
    assert records == {"A": 7, "B": 6, "C": 1}
    with pytest.raises(Exception, match="gradingbench"):
        await eval_grade(items, RunFolder(tmp_path / "r2"), verifier=verifier, buckets="quartiles")


async def test_labeling_on_the_points_scale(tmp_path):
    """A points verifier in the labeling rule: the lowest grade (3 of 7), confirmed by the
    meta-verifier, is the label (3/7); the meta-verifier reviews the points grade, not a
    ternary score."""
    from scripted import meta_text

    from proofcritic.meta_verifier import MetaVerifier
    from proofcritic.pipelines.label import LabelConfig, label_proof

    meta_prompts = []

    def script(call):
        if call.role == "meta_verify":
            meta_prompts.append(call.prompt)
            return meta_text(1)
        return points_text(
            [7, 3, 3][call.index], issues='- **Location:** "x" | **Severity:** Critical Error | **Issue:** gap'
        )

    model = Model(ScriptedBackend(script))
    problem = Problem(id="p", statement="Show it.", max_points=7)
    result = await label_proof(
        PointsVerifier(model), MetaVerifier(model), problem, "A proof.", LabelConfig(n=3, m=1, k=2)
    )
    assert result.status == "labeled" and result.rule == "confirmed_lowest"
    assert result.label == pytest.approx(3 / 7)
    assert len(meta_prompts) == 2 and all("The grader's points: 3 of 7" in p for p in meta_prompts)
    assert not any("0.5 for a generally correct solution" in p for p in meta_prompts)
