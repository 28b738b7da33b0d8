"""`proofcritic grade` end to end on the embedded SmolLM2 model: single, JSON, batch, cache, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.types import SCORES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# 24 tokens never hold the output protocol: these tests opt in to the likelihood read-out
SHORT = ["--max-tokens", "24", "--temperature", "0.8", "--seed", "1", "--score-mode", "auto"]


def _calls(stderr: str) -> tuple[int, int]:
    match = re.search(r"model calls: (\d+) new, (\d+) from cache", stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


@pytest.fixture
def run(smollm2_dir):
    """Run the CLI in this process, so SmolLM2 stays loaded across tests."""
    runner = CliRunner()

    def invoke(*args: str, status: int = 0):
        result = runner.invoke(app, ["grade", *args], catch_exceptions=False)
        assert result.exit_code == status, result.output + result.stderr
        return result

    return invoke


@pytest.mark.smollm2
def test_single_proof_prints_samples_and_aggregate(run, tmp_path):
    result = run(
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--proof",
        str(EXAMPLES / "proof_flawed.md"),
        "-n",
        "2",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
    )
    out = result.stdout
    assert "verification 1" in out and "verification 2" in out
    # 24 tokens cannot hold the protocol: each sample is a format failure scored by likelihood
    assert out.count("format failure") == 2 and "by likelihood" in out
    assert re.search(r"aggregate over 2/2 scored: mean [\d.]+, .* -> [\d.]+ / 7 points", out.replace("\n", " "))


@pytest.mark.smollm2
def test_json_output_and_cache_makes_no_new_calls(run, tmp_path):
    args = [
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--proof",
        str(EXAMPLES / "proof_correct.md"),
        "-n",
        "3",
        "--json",
        "--max-points",
        "10",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
    ]
    first = run(*args)
    data = json.loads(first.stdout)
    assert len(data["verifications"]) == 3
    for v in data["verifications"]:
        assert v["raw"] and v["finish_reason"] == "length" and v["format_ok"] is False
        assert v["score"] in SCORES and v["score_source"] == "likelihood"
        assert abs(sum(v["score_distribution"].values()) - 1) < 1e-6
    agg = data["aggregate"]
    assert agg["max_points"] == 10 and agg["points"] == pytest.approx(agg["mean"] * 10)
    assert data["usage"]["completion_tokens"] == 3 * 24
    new, _ = _calls(first.stderr)
    assert new == 1 + 3  # one request with n=3, and one likelihood read-out per sample

    second = run(*args)
    assert _calls(second.stderr) == (0, 4)
    again = json.loads(second.stdout)["verifications"]
    assert [v["raw"] for v in again] == [v["raw"] for v in data["verifications"]]
    assert [v["score_distribution"] for v in again] == [v["score_distribution"] for v in data["verifications"]]
    assert all(v["usage"]["cached_calls"] + v["usage"]["calls"] <= 1 and v["usage"]["calls"] == 0 for v in again)


@pytest.mark.smollm2
def test_batch_with_a_bad_line_and_resume(run, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = (EXAMPLES / "batch.jsonl").read_text().splitlines()
    source.write_text(
        "\n".join([lines[0], "{this is not json", '{"id": "empty", "problem": "P", "proof": "  "}', lines[1]]) + "\n"
    )
    out = tmp_path / "out.jsonl"
    args = ["--input", str(source), "--output", str(out), "-n", "2", "--cache", str(tmp_path / "c.sqlite"), *SHORT]
    first = run(*args, status=1)  # two items failed: exit status 1, after the output is written
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert set(by_id) == {"cubes-correct", "cubes-flawed", "line-2", "empty"}
    assert by_id["line-2"]["error_kind"] == "input" and "not valid JSON" in by_id["line-2"]["error"]
    assert "empty" in by_id["empty"]["error"]
    for key in ("cubes-correct", "cubes-flawed"):
        assert len(by_id[key]["verifications"]) == 2 and by_id[key]["aggregate"]["valid"] == 2
    assert "graded 4 item(s), 0 already done, 2 error record(s)" in first.stderr.replace("\n", " ")
    assert first.stderr.strip().splitlines()[-1].startswith("2 of 4 items failed: input error: ")

    second = run(*args, status=1)  # everything is done: nothing is graded again, nothing is asked of the model
    assert out.read_text().count("\n") == 4
    assert second.stderr.strip().splitlines()[-1] == first.stderr.strip().splitlines()[-1]  # input errors are final
    assert "0 item(s), 4 already done" in second.stderr.replace("\n", " ")
    assert _calls(second.stderr) == (0, 0)


def test_grade_through_an_openai_compatible_server(tiny_backend, tmp_path):
    """The CLI on the OpenAI-compatible backend, configured from the standard environment
    variables, against a real HTTP server that serves a tiny model."""
    try:
        from servers.tiny_openai_server import TinyOpenAIServer
    except ImportError:
        from tests.servers.tiny_openai_server import TinyOpenAIServer

    with TinyOpenAIServer(tiny_backend, "tiny-verifier", api_key="sekret") as server:
        env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sekret"}
        args = [
            "grade",
            "--problem",
            str(EXAMPLES / "problem.md"),
            "--proof",
            str(EXAMPLES / "proof_correct.md"),
            "--backend",
            "openai",
            "--model",
            "tiny-verifier",
            "-n",
            "2",
            "--json",
            "--cache",
            str(tmp_path / "c.sqlite"),
            *SHORT,
        ]
        result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert [v["score_source"] for v in data["verifications"]] == ["likelihood", "likelihood"]
        chat = [r for r in server.requests if "prompt_logprobs" not in r]
        scoring = [r for r in server.requests if "prompt_logprobs" in r]
        assert len(chat) == 1 and chat[0]["n"] == 2 and chat[0]["max_tokens"] == 24
        assert len(scoring) == 2 * 3  # three score continuations per sample

        wrong = CliRunner().invoke(
            app, [*args, "--no-cache"], env={**env, "OPENAI_API_KEY": "nope"}, catch_exceptions=True
        )
        assert wrong.exit_code != 0 and "refused the API key" in str(wrong.exception)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proofcritic", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "proof file not found"),
        (lambda d: (d / "proof.md").write_text("   \n"), "proof file is empty"),
        (lambda d: (d / "proof.md").write_bytes(b"\x00\x01\x02PK"), "proof file is binary"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, setup, message):
    setup(tmp_path)
    result = _cli("grade", "--problem", str(EXAMPLES / "problem.md"), "--proof", str(tmp_path / "proof.md"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert lines[0].endswith(str(tmp_path / "proof.md"))


def test_usage_errors():
    result = _cli("grade", "--problem", str(EXAMPLES / "problem.md"))
    assert result.returncode == 2 and "--proof" in result.stderr
    result = _cli("grade", "--input", "x.jsonl")
    assert result.returncode == 2 and "--output" in result.stderr
    result = _cli(
        "grade",
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--proof",
        str(EXAMPLES / "proof_correct.md"),
        "--model",
        "nobackend",
    )
    assert result.returncode == 2 and "does not name its backend" in result.stderr
