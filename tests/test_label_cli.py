"""`proofcritic label` and `proofcritic meta-verify` end to end on the embedded SmolLM2 model,
run in this process (so the model loads once), plus the input checks that need no model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from scripted import verification_text
from typer.testing import CliRunner

from proofcritic.cli._label import label_command, meta_verify_command, read_verification
from proofcritic.errors import InputError
from proofcritic.pipelines.label import majority

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHORT = ["--max-tokens", "16", "--temperature", "0.8", "--seed", "1"]


def _app() -> typer.Typer:
    """The main app once it registers both commands; until then, a stand-in with the same names."""
    from proofcritic.cli import app

    names = {c.name for c in app.registered_commands}
    if {"label", "meta-verify"} <= names:
        return app
    local = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    local.command("label")(label_command)
    local.command("meta-verify")(meta_verify_command)
    return local


def _calls(stderr: str) -> tuple[int, int]:
    match = re.search(r"model calls: (\d+) new, (\d+) from cache", stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True, status: int = 0):
        result = runner.invoke(_app(), list(args), catch_exceptions=not ok)
        if ok:
            assert result.exit_code == status, result.output + result.stderr
        return result

    return invoke


@pytest.mark.smollm2
def test_label_batch_with_a_bad_line_then_resume(run, smollm2_dir, tmp_path):
    lines = (EXAMPLES / "batch.jsonl").read_text().splitlines()
    source = tmp_path / "proofs.jsonl"
    source.write_text("\n".join([lines[0], "{this is not json", lines[1]]) + "\n")
    out, review = tmp_path / "labels.jsonl", tmp_path / "review.jsonl"
    args = [
        "label",
        "--input",
        str(source),
        "--output",
        str(out),
        "--review",
        str(review),
        "--n",
        "1",
        "--m",
        "1",
        "--k",
        "1",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
        "--score-mode",
        "auto",  # 16 tokens never hold a score: opt in to the likelihood read-out
    ]
    first = run(*args, status=1)  # the bad line failed: exit status 1, after the output is written
    by_id = {r["id"]: r for r in _records(out)}
    assert set(by_id) == {"cubes-correct", "cubes-flawed", "line-2"}
    assert by_id["line-2"]["error_kind"] == "input"
    for key in ("cubes-correct", "cubes-flawed"):
        record = by_id[key]
        assert record["status"] in ("labeled", "review") and record["config"]["n"] == 1
        assert len(record["analyses"]) + len(record["format_failures"]) == 1
        for analysis in record["analyses"]:  # 16 tokens: scores come from the likelihood read-out
            assert analysis["verification"]["score_source"] == "likelihood"
            assert len(analysis["meta_scores"]) == (1 if analysis["reports_issues"] else 0)
    to_review = sorted(k for k in ("cubes-correct", "cubes-flawed") if by_id[k]["status"] == "review")
    assert sorted(r["id"] for r in _records(review)) == to_review
    assert "processed 3 item(s), 0 already done, 1 error record(s)" in first.stderr.replace("\n", " ")
    assert (
        first.stderr.strip().splitlines()[-1].startswith("1 of 3 items failed: input error: line 2 is not valid JSON")
    )
    assert _calls(first.stderr)[0] > 0

    second = run(*args, status=1)
    assert _calls(second.stderr) == (0, 0)
    assert len(_records(out)) == 3 and len(_records(review)) == len(to_review)
    assert "0 item(s), 3 already done" in second.stderr.replace("\n", " ")


@pytest.mark.smollm2
def test_meta_verify_from_raw_text_and_from_json(run, smollm2_dir, tmp_path):
    raw = tmp_path / "verification.txt"
    raw.write_text(verification_text(0, [("Among any two consecutive integers", "Critical Error", "false claim")]))
    common = [
        "meta-verify",
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--proof",
        str(EXAMPLES / "proof_flawed.md"),
        "-n",
        "2",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
    ]
    first = run(*common, "--verification", str(raw), status=1)  # 16 tokens hold no meta score: exit status 1
    out = first.stdout
    assert "verification under review: score 0" in out
    assert "meta-verification 1" in out and "meta-verification 2" in out
    assert "majority over 0/2 scored: — (no meta score)" in out
    assert first.stderr.strip().splitlines()[-1].startswith("no meta score: every meta-verification failed the format")
    assert _calls(first.stderr) == (1, 0)  # one request with n=2

    record = tmp_path / "verification.json"  # the same verification as a `grade --json` element
    record.write_text(json.dumps({"verifications": [read_verification(raw).model_dump(mode="json")]}))
    second = run(*common, "--verification", str(record), "--json", status=1)
    data = json.loads(second.stdout)
    assert data["verification_score"] == 0 and len(data["scores"]) == 2 and len(data["meta_verifications"]) == 2
    assert all(m["raw"] for m in data["meta_verifications"])
    assert data["scores"] == [m["score"] for m in data["meta_verifications"]]
    assert data["valid"] == sum(s is not None for s in data["scores"]) and data["majority"] == majority(data["scores"])
    assert _calls(second.stderr) == (0, 1)  # same prompt as the raw-text run: served from the cache


def test_read_verification_forms(tmp_path):
    text = verification_text(0.5, [("step 1", "Justification Gap", "why?")])
    raw = tmp_path / "v.txt"
    raw.write_text(text)
    parsed = read_verification(raw)
    assert parsed.score == 0.5 and parsed.issues and parsed.raw == text
    many = tmp_path / "g.json"
    many.write_text(json.dumps({"verifications": [parsed.model_dump(mode="json"), {"raw": "x", "score": 1}]}))
    with pytest.raises(InputError, match=r"holds 2 verifications .* choose one with --index 1 to --index 2"):
        read_verification(many)
    assert read_verification(many, 2).score == 1
    with pytest.raises(InputError, match="out of range"):
        read_verification(many, 3)
    broken = tmp_path / "b.json"
    broken.write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        read_verification(broken)
    empty = tmp_path / "e.json"
    empty.write_text('{"score": 1}')
    with pytest.raises(InputError, match="neither 'analysis' nor 'raw'"):
        read_verification(empty)
    bad = tmp_path / "s.json"
    bad.write_text('{"raw": "x", "score": "high"}')
    with pytest.raises(InputError, match="score"):
        read_verification(bad)


def test_label_usage_errors(run, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    base = ["label", "--input", str(source), "--output", str(tmp_path / "o.jsonl")]
    result = run(*base, "--review", str(tmp_path / "r.jsonl"), "--confirm-at", "0.5", "--refute-at", "0.5", ok=False)
    assert result.exit_code == 2 and "refute_at" in result.output + result.stderr
    result = run(*base, "--review", str(tmp_path / "o.jsonl"), ok=False)
    assert result.exit_code == 2 and "three different files" in result.output + result.stderr
    result = run(*base, ok=False)
    assert result.exit_code == 2 and "--review" in result.output + result.stderr
    missing = run("label", "--input", str(tmp_path / "nope.jsonl"), "--output", "o", "--review", "r", ok=False)
    assert isinstance(missing.exception, InputError) and "input file not found" in str(missing.exception)
