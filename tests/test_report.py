"""Reports and comparisons of run folders: hand-written records, the ``report`` / ``compare`` /
``eval`` commands, a headless-Chromium screenshot of a report, and SmolLM2 end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.benchmarks._run import RunFolder
from proofcritic.benchmarks.report import build_report, compare_runs
from proofcritic.cli import app
from proofcritic.cli._eval import compare_command, eval_app, report_command

pytest.importorskip("matplotlib")

_names = [c.name for c in app.registered_commands]
if "report" not in _names:
    app.command("report")(report_command)
if "compare" not in _names:
    app.command("compare")(compare_command)
if "eval" not in [g.name for g in app.registered_groups]:
    app.add_typer(eval_app, name="eval")

PNG = "data:image/png;base64,"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def grade_run(path: Path, shift: float = 0.0) -> RunFolder:
    """A grade run of 12 proofs on a 7-point scale; ``shift`` moves some verdicts."""
    run = RunFolder(path)
    run.create({"command": "eval grade", "suite": "hand", "rule": "mean"})
    lines = []
    for i in range(12):
        human = [0, 1, 6, 7][i % 4]
        predicted = min(1.0, [0.0, 0.5, 0.5, 1.0][i % 4] + (shift if i % 3 == 0 else 0.0))
        lines.append({"id": f"p{i}", "kind": "grade", "max_points": 7.0, "human_points": human,
                      "predicted_score": predicted, "predicted_points": predicted * 7, "status": "scored",
                      "rule": "mean", "meta": {"competition": "X"}, "seconds": 0.5,
                      "usage": {"calls": 1, "cached_calls": 0, "prompt_tokens": 100 + i, "completion_tokens": 50 * i}})
    lines.append({"id": "bad", "error": "boom", "error_kind": "input"})
    run.items_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def solve_run(path: Path) -> RunFolder:
    run = RunFolder(path)
    run.create({"command": "eval solve", "suite": "hand", "strategy": "single", "model": "m",
                "prices": {"m": {"prompt": 1.0, "completion": 4.0}}})
    lines = []
    for i, (scores, selfs) in enumerate([([1.0, 0.5], [1.0, 1.0]), ([0.0, 1.0], [0.5, 1.0]), ([0.5, 0.5], [0.0, 0.5])]):
        samples = [{"sample": j, "proof": f"proof {i}.{j}", "self_score": selfs[j], "verifier_scores": [scores[j]],
                    "verifier_mean": scores[j], "passed": scores[j] == 1.0, "points": scores[j] * 7,
                    "format_failures": 0, "tokens": {"prompt": 10, "completion": 20}, "seconds": 1.0} for j in range(2)]
        lines.append({"id": f"P{i}", "kind": "solve", "max_points": 7.0, "samples": samples, "seconds": 2.0,
                      "usage": {"calls": 4, "cached_calls": 0, "prompt_tokens": 20, "completion_tokens": 40}})
    run.items_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_grade_report_embeds_its_plots(tmp_path):
    run = grade_run(tmp_path / "g")
    html_path, md_path = build_report(run)
    page = html_path.read_text()
    assert page.count(PNG) >= 4  # histogram, confusion, calibration, tokens
    assert "<link" not in page and "src='http" not in page  # self-contained
    assert "accuracy" in page and "95% interval" in page
    summary = run.summary()
    assert summary["kind"] == "grade" and summary["counts"]["errors"] == 1 and summary["counts"]["scored"] == 12
    assert "| accuracy |" in md_path.read_text()


def test_solve_report_and_cost(tmp_path):
    run = solve_run(tmp_path / "s")
    html_path, md_path = build_report(run)
    assert html_path.read_text().count(PNG) >= 4  # scores, problems, calibration, tokens
    summary = run.summary()
    assert summary["metrics"]["pass@k"]["value"] == pytest.approx(2 / 3)
    assert summary["points"] == {"first": 10.5, "best": 17.5, "best_self": 17.5, "best_verifier": 17.5, "max": 21.0}
    assert summary["cost"]["total"] == pytest.approx((60 * 1.0 + 120 * 4.0) / 1e6)
    assert "| P1 |" in md_path.read_text()


def test_compare_runs_pairs_the_shared_items(tmp_path):
    a, b = grade_run(tmp_path / "a"), grade_run(tmp_path / "b", shift=0.5)
    lines = b.items_path.read_text().splitlines()
    b.items_path.write_text("\n".join(lines[1:]) + "\n")  # B lacks p0
    comparison = compare_runs(a, b)
    assert comparison["kind"] == "grade" and comparison["shared"] == 11
    acc = comparison["metrics"]["accuracy"]
    assert acc["difference"] == pytest.approx(acc["b"] - acc["a"])
    assert acc["low"] <= acc["difference"] <= acc["high"]
    same = compare_runs(a, a)["metrics"]["abs_error"]
    assert same["difference"] == 0 and same["low"] == same["high"] == 0
    with pytest.raises(Exception, match="cannot compare a grade run with a solve run"):
        compare_runs(a, solve_run(tmp_path / "s"))


def test_report_and_compare_commands(tmp_path):
    a, b = grade_run(tmp_path / "a"), grade_run(tmp_path / "b", shift=0.5)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(a.path)], catch_exceptions=False)
    assert result.exit_code == 0 and "accuracy" in result.stdout and a.report_html.exists()
    result = runner.invoke(app, ["compare", str(a.path), str(b.path), "--out", str(tmp_path / "cmp")],
                           catch_exceptions=False)
    assert result.exit_code == 0 and "B - A" in result.stdout and "| accuracy |" in result.stdout
    assert (tmp_path / "cmp" / "compare.html").exists() and (tmp_path / "cmp" / "compare.json").exists()


@pytest.mark.chromium
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    run = grade_run(tmp_path / "g")
    html_path, _ = build_report(run)
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,2000",
                        html_path.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    pixels = image.imread(shot)
    assert pixels.shape[0] == 2000 and pixels.shape[1] == 1200
    assert float(pixels[..., :3].std()) > 0.05  # text, tables and plots, not a blank page
    keep = Path(tempfile.gettempdir()) / "proofcritic-report-screenshot.png"
    shutil.copy(shot, keep)  # for a person to look at


@pytest.mark.skipif(not (DATA / "dsmv2" / "outputs").exists(), reason="shared data not present")
def test_eval_grade_from_recorded_end_to_end(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval", "grade", "--suite", "dsmv2-human", "--from-recorded",
                                      "average_automatic_rating", "--run", str(run), "--data-dir", str(DATA)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["scored"] > 50 and summary["metrics"]["pearson"] > 0.3
    assert (run / "report.html").read_text().count(PNG) >= 3 and "pearson" in result.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["from_recorded"] == "average_automatic_rating" and config["model"] is None


SMOL = ["--max-tokens", "16", "--temperature", "0.8", "--seed", "1", "--score-mode", "text", "--limit", "2"]


@pytest.mark.smollm2
@pytest.mark.skipif(not (DATA / "dsmv2").exists(), reason="shared data not present")
def test_eval_solve_and_grade_on_smollm2(smollm2_dir, tmp_path):
    runner = CliRunner()
    cache = ["--cache", str(tmp_path / "c.sqlite"), "--data-dir", str(DATA)]
    result = runner.invoke(app, ["eval", "solve", "--suite", "imo2025", "--run", str(tmp_path / "s"), "-k", "2",
                                 "--set", "keep_invalid=true", *SMOL, *cache], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = RunFolder(tmp_path / "s").records()
    assert len(records) == 2 and all(len(r["samples"]) == 2 for r in records)
    assert (tmp_path / "s" / "report.html").read_text().count(PNG) >= 3
    result = runner.invoke(app, ["eval", "grade", "--suite", "dsmv2-human", "--run", str(tmp_path / "g"),
                                 *SMOL, *cache], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(RunFolder(tmp_path / "g").records()) == 2 and (tmp_path / "g" / "report.md").exists()
