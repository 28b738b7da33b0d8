"""Marking schemes (`proofcritic rubric`): the strict parser, the role on a scripted model, the
command (one problem and a batch) against a local server, schemes fed to points grading, and
SmolLM2 through the role once."""

from __future__ import annotations

import json

import pytest
from scripted import ScriptedBackend
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic import Problem
from proofcritic.cli import app
from proofcritic.llm import GenerateConfig, Model
from proofcritic.pipelines.rubric import RubricWriter, parse_rubric
from proofcritic.verifier import load_schemes, scheme_text
from proofcritic.verifier._points import scheme_for

GOOD = {
    "points": 7,
    "scheme": [
        {"title": "Lemma", "points": 3, "desc": "Proves the lemma."},
        {"title": "Finish", "points": 4, "desc": "Concludes."},
    ],
    "zero_credit": ["The answer alone."],
    "deductions": [{"desc": "Arithmetic slip", "points": 1}],
}


def block(data) -> str:
    return f"Plan first.\n\n```json\n{json.dumps(data)}\n```"


@pytest.mark.parametrize(
    "text, error",
    [
        (block(GOOD), None),
        (block({**GOOD, "points": 6}), "add up to 7 and the scheme says 6"),
        (block({**GOOD, "scheme": GOOD["scheme"][:1]}), "add up to 3"),
        (block({**GOOD, "scheme": [{"title": "Half", "points": 3.5, "desc": ""}] * 2}), "malformed"),
        (block(GOOD) + "\nA last word.", "text follows the JSON block"),
        ("```json\n{not json}\n```", "does not parse"),
        ("No block at all.", "no ```json block"),
    ],
)
def test_parse_rubric(text, error):
    out = parse_rubric(text, max_points=7)
    assert out.format_ok == (error is None)
    if error:
        assert error in out.format_error and out.scheme is None
    else:
        assert [c.points for c in out.scheme.scheme] == [3, 4] and out.scheme.deductions[0].points == 1


async def test_rubric_writer_sets_the_problem_id():
    writer = RubricWriter(Model(ScriptedBackend(lambda call: block(GOOD))))
    [answer] = await writer.write(Problem(id="p9", statement="Show it.", reference_solution="Like this."))
    assert answer.scheme.id == "p9" and answer.format_ok


def test_rubric_command_one_problem_and_a_batch_feed_points_grading(tmp_path):
    def script(call):
        if call.role == "rubric":
            return block(GOOD if "Show x." in call.prompt else {**GOOD, "points": 5})  # the second never adds up
        return "unused"

    problem = tmp_path / "problem.md"
    problem.write_text("Show x.")
    reference = tmp_path / "ref.md"
    reference.write_text("Because.")
    batch = tmp_path / "problems.jsonl"
    batch.write_text(
        json.dumps({"id": "a", "problem": "Show x."}) + "\n" + json.dumps({"id": "b", "problem": "Show y."}) + "\n"
    )
    with TinyOpenAIServer(ScriptedBackend(script), "roles") as server:
        common = ["--model", "openai/roles", "--base-url", server.url, "--no-cache"]
        env = {"OPENAI_API_KEY": "x"}
        one = CliRunner().invoke(
            app,
            [
                "rubric",
                "--problem",
                str(problem),
                "--reference",
                str(reference),
                "--output",
                str(tmp_path / "scheme.json"),
                *common,
            ],
            env=env,
            catch_exceptions=False,
        )
        assert one.exit_code == 0, one.output + one.stderr
        many = CliRunner().invoke(
            app,
            ["rubric", "--input", str(batch), "--output", str(tmp_path / "schemes.jsonl"), *common],
            env=env,
            catch_exceptions=False,
        )
        assert many.exit_code == 0, many.output + many.stderr
    scheme = json.loads((tmp_path / "scheme.json").read_text())
    assert scheme["points"] == 7 and sum(c["points"] for c in scheme["scheme"]) == 7
    assert "Lemma (3 points)" in scheme_text(scheme_for(load_schemes(tmp_path / "scheme.json"), "any"))
    book = load_schemes(tmp_path / "schemes.jsonl")
    assert set(book["by_problem"]) == {"a"}  # b's scheme did not add up: left out
    records = [json.loads(line) for line in (tmp_path / "schemes.jsonl").read_text().splitlines()]
    assert {r["id"]: r["scheme"] is None for r in records} == {"a": False, "b": True}


@pytest.mark.smollm2
async def test_smollm2_through_the_rubric_writer(smol_backend):
    writer = RubricWriter(Model(smol_backend), config=GenerateConfig(max_tokens=48, temperature=0.0))
    [answer] = await writer.write(Problem(id="p", statement="Prove that 2 + 2 = 4.", reference_solution="Count."))
    assert answer.raw and answer.format_ok == (answer.scheme is not None)
    if not answer.format_ok:
        assert answer.format_error
