"""The CRITIC loops end to end on the embedded SmolLM2 model, with small limits.

A prompt set whose ``critic_verify`` asks for a code block makes the real model write one
(greedy), so the real stop string, the real sandbox and the real follow-up turn all run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.llm import GenerateConfig, Model
from proofcritic.promptset import PromptSet
from proofcritic.tools import PythonTool
from proofcritic.types import Problem
from proofcritic.verifier import CriticVerifier, Verifier

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "proofcritic" / "prompts" / "default"


@pytest.fixture(scope="module")
def code_prompts(tmp_path_factory) -> Path:
    """The built-in prompt set with a ``critic_verify`` that asks for a program."""
    folder = tmp_path_factory.mktemp("code-prompts")
    for template in DEFAULT_PROMPTS.glob("*.j2"):
        shutil.copy(template, folder / template.name)
    (folder / "critic_verify.j2").write_text(
        "{#- problem: {{ problem.id }}, proof: {{ proof | length }}, runs: {{ max_tool_calls }} -#}\n"
        "Write a short Python program that prints the value of 17 * 23. "
        "Reply with only a ```{{ tools[0].language }} code block.\n"
    )
    return folder


def _calls(stderr: str) -> tuple[int, int]:
    match = re.search(r"model calls: (\d+) new, (\d+) from cache", stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


async def test_smollm2_writes_code_that_runs_and_gets_its_output(smol_backend, code_prompts):
    model = Model(smol_backend)
    verifier = Verifier(
        model,
        prompts=PromptSet.load(code_prompts),
        config=GenerateConfig(temperature=0, max_tokens=40),
        score_mode="auto",
    )
    critic = CriticVerifier(verifier, [PythonTool(timeout=20)], max_tool_calls=1)
    try:
        [v] = await critic.verify(Problem(statement="Compute 17 * 23."), "It is 391.")
    finally:
        await critic.aclose()
    assert len(v.tool_calls) == 1
    call = v.tool_calls[0]
    assert "17" in call.code and "23" in call.code
    assert call.ok and call.stdout.strip() == "391"  # the model's program, run in the sandbox
    assert call.said.rstrip().endswith("```")  # the turn was cut at the block (stop string or cut)
    assert "Output of the code:\n```text\n391" in v.raw
    assert v.usage.calls == 2  # the block's turn, then the final turn after the output
    # 40 tokens hold no score: it is read out by likelihood after the whole conversation
    assert v.score_source == "likelihood" and set(v.score_distribution) == {"0", "0.5", "1"}
    assert abs(sum(v.score_distribution.values()) - 1) < 1e-6


def test_grade_with_tools_on_smollm2(smollm2_dir, code_prompts, tmp_path):
    """``grade --tools python`` keeps the tool transcript in the JSON; without --tools the
    output has no tool_calls key at all."""
    runner = CliRunner()
    base = [
        "grade",
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--proof",
        str(EXAMPLES / "proof_correct.md"),
        "--json",
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--max-tokens",
        "40",
        "--temperature",
        "0",
        "--score-mode",
        "text",
    ]
    tooled = runner.invoke(
        app,
        [*base, "--prompts", str(code_prompts), "--tools", "python", "--max-tool-calls", "1"],
        catch_exceptions=False,
    )
    # exit status 1 when the verification wrote no score (SmolLM2 rarely does): no verdict
    assert tooled.exit_code == (0 if json.loads(tooled.stdout)["aggregate"]["valid"] else 1), tooled.output
    [v] = json.loads(tooled.stdout)["verifications"]
    assert [c["stdout"].strip() for c in v["tool_calls"]] == ["391"]
    assert _calls(tooled.stderr) == (2, 0)
    again = runner.invoke(
        app,
        [*base, "--prompts", str(code_prompts), "--tools", "python", "--max-tool-calls", "1"],
        catch_exceptions=False,
    )
    [w] = json.loads(again.stdout)["verifications"]
    assert (
        _calls(again.stderr) == (0, 2)
        and w["raw"] == v["raw"]
        and w["tool_calls"][0]["code"] == v["tool_calls"][0]["code"]
    )
    plain = runner.invoke(app, [*base, "--max-tokens", "16"], catch_exceptions=False)
    assert plain.exit_code == (0 if json.loads(plain.stdout)["aggregate"]["valid"] else 1), plain.output
    assert "tool_calls" not in json.loads(plain.stdout)["verifications"][0]
    bad = runner.invoke(app, [*base, "--tools", "matlab"])
    assert bad.exit_code == 2 and "unknown tool 'matlab'" in bad.output


def test_solve_critic_on_smollm2(smollm2_dir, tmp_path):
    """``solve --strategy critic`` with one round: generate, critique (with tools offered),
    revise, and a stop rule."""
    result = CliRunner().invoke(
        app,
        [
            "solve",
            "--problem",
            str(EXAMPLES / "problem.md"),
            "--strategy",
            "critic",
            "--max-rounds",
            "1",
            "--max-tool-calls",
            "1",
            "--keep-invalid",
            "--json",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--max-tokens",
            "16",
            "--temperature",
            "0.8",
            "--seed",
            "1",
            "--score-mode",
            "text",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["strategy"] == "critic"
    steps = [s["step"] for s in data["transcript"]]
    assert steps[:3] == ["generate", "critique", "revise"]
    assert re.match(r"(max rounds \(1\) reached|proof unchanged at round 1|passed at round \d)", data["stop_reason"])
    assert data["proof"] and len(data["verifications"]) == 1
    assert "tool_calls" in data["verifications"][0]
    bad = CliRunner().invoke(app, ["solve", "--problem", str(EXAMPLES / "problem.md"), "--max-rounds", "2"])
    assert bad.exit_code == 2 and "has no option --max-rounds" in bad.output
