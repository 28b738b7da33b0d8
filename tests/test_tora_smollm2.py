"""``solve --strategy tora`` end to end on the embedded SmolLM2 model, with small limits.

A prompt set whose ``tora_generate`` asks for a code block makes the real model write one
(greedy), so the real stop string, the real sandbox, the real follow-up turn and the cache
(a rerun asks nothing new) all run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.cli import app

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "proofcritic" / "prompts" / "default"


def test_solve_tora_on_smollm2(smollm2_dir, tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    for template in DEFAULT_PROMPTS.glob("*.j2"):
        shutil.copy(template, folder / template.name)
    (folder / "tora_generate.j2").write_text(
        "{#- problem: {{ problem.id }}, runs: {{ max_tool_calls }} -#}\n"
        "Write a short Python program that prints the value of 17 * 23. "
        "Reply with only a ```{{ tools[0].language }} code block.\n"
    )
    args = [
        "solve",
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--strategy",
        "tora",
        "--max-tool-calls",
        "1",
        "--verify-n",
        "0",
        "--keep-invalid",
        "--json",
        "--prompts",
        str(folder),
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--max-tokens",
        "40",
        "--temperature",
        "0",
    ]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    data = json.loads(first.stdout)
    assert data["strategy"] == "tora"
    [tool] = [s for s in data["transcript"] if s["step"] == "tool"]
    assert "17" in tool["code"] and tool["ok"] and tool["stdout"].strip() == "391"  # run in the sandbox
    generate = next(s for s in data["transcript"] if s["step"] == "generate")
    assert "```output\n391\n```" in generate["raw"] and generate["tool_calls"] == 1
    assert re.search(r"model calls: 2 new, 0 from cache", first.stderr), first.stderr
    again = CliRunner().invoke(app, args, catch_exceptions=False)
    assert re.search(r"model calls: 0 new, 2 from cache", again.stderr), again.stderr

    def timeless(transcript):  # a run's duration differs; everything else is replayed
        return [{k: v for k, v in step.items() if k != "duration"} for step in transcript]

    assert timeless(json.loads(again.stdout)["transcript"]) == timeless(data["transcript"])


def test_eval_solve_answers_file_with_tora_on_smollm2(smollm2_dir, tmp_path):
    """``eval solve --suite answers --file`` with ``--strategy tora`` on SmolLM2: no verification,
    the answer check's counts in the printed headline, summary and report."""
    data = tmp_path / "mine.jsonl"
    data.write_text(
        json.dumps({"id": "a", "problem": "What is 2 + 3?", "answer": "5"})
        + "\n"
        + json.dumps({"id": "b", "problem": "What is 4 * 4?", "answer": "16"})
        + "\n"
    )
    run = tmp_path / "run"
    args = ["eval", "solve", "--suite", "answers", "--file", str(data), "--strategy", "tora", "-k", "2"]
    args += ["--set", "max_tool_calls=0", "--keep-invalid", "--run", str(run), "--cache", str(tmp_path / "c.sqlite")]
    args += ["--max-tokens", "24", "--temperature", "0.8", "--seed", "3"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verifications"] == 0 and summary["answers"]["samples"] == 4
    assert {"accuracy", "pass@k", "maj@k"} <= set(summary["metrics"])
    assert summary["metrics"]["maj@k"]["n"] == 2
    text = " ".join(result.output.split())
    assert re.search(r"answers: \d of 4 samples stated an answer, \d right; the majority answer right on \d of 2", text)
    records = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    assert {r["answer"] for r in records} == {"5", "16"} and all("majority" in r for r in records)
    assert "answers stated / right (samples)" in (run / "report.md").read_text()
