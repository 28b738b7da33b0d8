"""Neutral restyling (--normalize): the rewrite is graded, the record keeps both texts, a failed
rewrite falls back to the original; the CLI against a local server; SmolLM2 through the role once."""

from __future__ import annotations

import json

import pytest
from scripted import ScriptedBackend, verification_text
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic import Problem
from proofcritic.cli import app
from proofcritic.grading import grade
from proofcritic.llm import GenerateConfig, Model
from proofcritic.pipelines.normalize import REWRITE_MARKER, Normalizer, parse_rewrite
from proofcritic.verifier import Verifier

PROBLEM = Problem(id="p", statement="Show that 2 + 2 = 4.")


def script(call):
    if "Rewrite the proof below" in call.prompt:
        if "BROKEN" in call.prompt:
            return "I will not rewrite it."
        return f"{REWRITE_MARKER}\n\n2 + 2 = 4 by counting."
    # the verifier: 1 for the plain rewrite, 0 for anything else
    return verification_text(1 if "2 + 2 = 4 by counting." in call.prompt else 0)


def test_parse_rewrite():
    ok = parse_rewrite(f"notes\n{REWRITE_MARKER}\n  The proof.  ")
    assert ok.format_ok and ok.proof == "The proof."
    assert not parse_rewrite("The proof.").format_ok
    assert "empty" in parse_rewrite(f"{REWRITE_MARKER}\n").format_error
    assert not parse_rewrite(f"{REWRITE_MARKER}\nhalf a pro", "length").format_ok


async def test_the_rewrite_is_graded_and_kept():
    model = Model(ScriptedBackend(script))
    result = await grade(
        Verifier(model), PROBLEM, "Obviously, as any fool sees, 2 + 2 = 4.", normalizer=Normalizer(model)
    )
    assert result.normalized_proof == "2 + 2 = 4 by counting." and result.aggregate.mean == 1
    assert result.usage.calls == 2  # the rewrite and the verification
    plain = await grade(Verifier(model), PROBLEM, "Obviously, as any fool sees, 2 + 2 = 4.")
    assert plain.aggregate.mean == 0 and "normalized_proof" not in plain.model_dump()
    failed = await grade(Verifier(model), PROBLEM, "BROKEN proof", normalizer=Normalizer(model))
    assert failed.normalized_proof is None and "missing marker" in failed.normalize_error
    assert failed.aggregate.mean == 0  # the original was graded


def test_grade_cli_normalize(tmp_path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps({"id": "a", "problem": "Show that 2 + 2 = 4.", "proof": "Trivially 2 + 2 = 4!"}) + "\n"
    )
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
            "--normalize",
            "--no-cache",
        ]
        result = CliRunner().invoke(app, args, catch_exceptions=False, env={"OPENAI_API_KEY": "x"})
        assert result.exit_code == 0, result.output + result.stderr
    [record] = map(json.loads, output.read_text().splitlines())
    assert record["normalized_proof"] == "2 + 2 = 4 by counting." and record["aggregate"]["mean"] == 1


@pytest.mark.smollm2
async def test_smollm2_through_the_normalizer(smol_backend):
    normalizer = Normalizer(Model(smol_backend), config=GenerateConfig(max_tokens=32, temperature=0.0))
    rewrite = await normalizer.rewrite(PROBLEM, "Clearly 2 + 2 = 4, as everyone knows.")
    assert rewrite.raw and rewrite.format_ok == bool(rewrite.proof)
