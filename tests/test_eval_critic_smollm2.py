"""``eval critic`` end to end on the embedded SmolLM2 model: two answer items, short generations,
self-critique with the sandbox tool offered; the verdicts are read out by likelihood (score mode
auto), so every solution has one. A rerun of the finished folder asks nothing, and a new folder
on the same cache replays every call."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from proofcritic.cli import app

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_eval_critic_on_smollm2(smollm2_dir, tmp_path):
    data = tmp_path / "mine.jsonl"
    rows = [
        {"id": "a", "problem": "What is 2 + 3?", "answer": "5"},
        {"id": "b", "problem": "What is 4 * 4?", "answer": "16"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def args(run):
        return [
            "eval",
            "critic",
            "--suite",
            "answers",
            "--file",
            str(data),
            "--run",
            str(run),
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--max-tokens",
            "24",
            "--temperature",
            "0",
            "--score-mode",
            "auto",
            "--tools",
            "--max-tool-calls",
            "1",
        ]

    run = tmp_path / "run"
    result = CliRunner().invoke(app, args(run), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    counts = summary["counts"]
    assert summary["mode"] == "self-critique" and summary["solutions"] == 2
    assert counts["verdicts"] == 2 and counts["read_out"] == 2  # 24 tokens hold no score: read out
    assert counts["corrected"] == counts["rejected"] and counts["accepted"] + counts["rejected"] == 2
    assert sum(summary["outcomes"].values()) == 2
    assert summary["metrics"]["critique_accuracy"]["n"] == 2
    text = " ".join(result.output.split())
    assert "critique: self-critique" in text and re.search(r"critique accuracy: [0-9.]+ ", text)
    records = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    assert {r["answer"] for r in records} == {"5", "16"}
    assert all(s["source"] == "generated" and s["verdict"] for r in records for s in r["samples"])
    assert "| critique | self-critique |" in (run / "report.md").read_text()
    calls = sum(r["usage"]["calls"] for r in records)

    items_before = (run / "items.jsonl").read_text()
    again = CliRunner().invoke(app, args(run), catch_exceptions=False)  # finished: nothing to redo
    assert again.exit_code == 0 and (run / "items.jsonl").read_text() == items_before

    replay = tmp_path / "replay"
    third = CliRunner().invoke(app, args(replay), catch_exceptions=False)
    assert third.exit_code == 0, third.output
    replayed = [json.loads(line) for line in (replay / "items.jsonl").read_text().splitlines()]
    assert sum(r["usage"]["calls"] for r in replayed) == 0
    assert sum(r["usage"]["cached_calls"] for r in replayed) == calls
    assert json.loads((replay / "summary.json").read_text())["metrics"] == summary["metrics"]
