"""Reports and comparisons of run folders: hand-written records, runs made by ``eval_grade`` and
``eval_solve`` on the scripted model (the per-item tables, breakdowns, read-out marks, escaping,
comparisons of 2 and 3 runs), the ``report`` / ``compare`` / ``eval`` commands, a
headless-Chromium screenshot of a report, and SmolLM2 end to end."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from scripted import ScriptedBackend, generation_text, verification_text
from typer.testing import CliRunner

from proofcritic.benchmarks._items import GradeItem, SolveItem
from proofcritic.benchmarks._run import RunFolder
from proofcritic.benchmarks.eval_grade import eval_grade
from proofcritic.benchmarks.eval_solve import eval_solve
from proofcritic.benchmarks.report import (
    _ci,
    _num,
    build_report,
    compare_html,
    compare_markdown,
    compare_runs,
)
from proofcritic.cli import app
from proofcritic.cli._eval import compare_command, eval_app, report_command
from proofcritic.llm import Model
from proofcritic.pipelines._common import Roles
from proofcritic.pipelines.single import SingleStrategy
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

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
        lines.append(
            {
                "id": f"p{i}",
                "kind": "grade",
                "max_points": 7.0,
                "human_points": human,
                "predicted_score": predicted,
                "predicted_points": predicted * 7,
                "status": "scored",
                "rule": "mean",
                "meta": {"competition": "X"},
                "seconds": 0.5,
                "usage": {"calls": 1, "cached_calls": 0, "prompt_tokens": 100 + i, "completion_tokens": 50 * i},
            }
        )
    lines.append({"id": "bad", "error": "boom", "error_kind": "input"})
    run.items_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def solve_run(path: Path) -> RunFolder:
    run = RunFolder(path)
    run.create(
        {
            "command": "eval solve",
            "suite": "hand",
            "strategy": "single",
            "model": "m",
            "prices": {"m": {"prompt": 1.0, "completion": 4.0}},
        }
    )
    lines = []
    for i, (scores, selfs) in enumerate([([1.0, 0.5], [1.0, 1.0]), ([0.0, 1.0], [0.5, 1.0]), ([0.5, 0.5], [0.0, 0.5])]):
        samples = [
            {
                "sample": j,
                "proof": f"proof {i}.{j}",
                "self_score": selfs[j],
                "verifier_scores": [scores[j]],
                "verifier_mean": scores[j],
                "passed": scores[j] == 1.0,
                "points": scores[j] * 7,
                "format_failures": 0,
                "tokens": {"prompt": 10, "completion": 20},
                "seconds": 1.0,
            }
            for j in range(2)
        ]
        lines.append(
            {
                "id": f"P{i}",
                "kind": "solve",
                "max_points": 7.0,
                "samples": samples,
                "seconds": 2.0,
                "usage": {"calls": 4, "cached_calls": 0, "prompt_tokens": 20, "completion_tokens": 40},
            }
        )
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
    assert comparison["kind"] == "grade" and comparison["paired"] == 11
    assert [r["label"] for r in comparison["runs"]] == ["a", "b"]
    assert [(r["items"], r["errors"], r["unpaired"], r["left_out"]) for r in comparison["runs"]] == [
        (13, 1, 1, 2),
        (12, 1, 0, 1),
    ]
    acc = comparison["metrics"]["accuracy"]
    d = acc["differences"][1]
    assert acc["differences"][0] is None and d["difference"] == pytest.approx(acc["values"][1] - acc["values"][0])
    assert d["low"] <= d["difference"] <= d["high"]
    same = compare_runs(a, a)["metrics"]["mae_score"]["differences"][1]
    assert same["difference"] == 0 and same["low"] == same["high"] == 0
    with pytest.raises(Exception, match="cannot compare a grade run with a solve run"):
        compare_runs(a, solve_run(tmp_path / "s"))
    with pytest.raises(Exception, match="at least two run folders"):
        compare_runs(a)
    with pytest.raises(Exception, match="is not a run folder"):
        compare_runs(a, tmp_path / "nothing")


def test_report_and_compare_commands(tmp_path):
    a, b = grade_run(tmp_path / "a"), grade_run(tmp_path / "b", shift=0.5)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(a.path)], catch_exceptions=False)
    assert result.exit_code == 0 and "accuracy" in result.stdout and a.report_html.exists()
    result = runner.invoke(
        app, ["compare", str(a.path), str(b.path), "--out", str(tmp_path / "cmp")], catch_exceptions=False
    )
    assert result.exit_code == 0 and "b - a" in result.stdout and "| accuracy |" in result.stdout
    assert (tmp_path / "cmp" / "compare.html").exists() and (tmp_path / "cmp" / "compare.json").exists()
    result = runner.invoke(app, ["compare", str(a.path)])
    assert result.exit_code == 2 and "at least two run folders" in result.output


# Runs made by eval_grade / eval_solve on the scripted model (the real roles, parsers and
# pipelines): proofs with HTML and LaTeX in them, format failures, likelihood read-outs.

EVIL = "Let $a < b$ & $b<c$. <script>alert('x')</script> Hence $\\frac{a}{c} < 1$ && done. " + "Step. " * 40
#: verifier scores of the two verifications of each proof (None: a format failure)
LENIENT = {1: (1, 1), 2: (1, 1), 3: (1, 1), 4: (1, 1), 5: (1, 1), 6: (None, 1), 8: (None, None)}
STRICT = {1: (1, 1), 2: (0, 0.5), 3: (1, 0.5), 4: (0.5, 0.5), 5: (1, 1), 6: (None, 0), 8: (None, None)}


def scripted_grade_items() -> list[GradeItem]:
    def item(k: int, human: float, competition: str, model_id: str, proof: str | None = None) -> GradeItem:
        problem = Problem(id=f"P{k}", statement=f"Problem {k}: prove that it holds.", max_points=7)
        return GradeItem(
            id=f"g{k}",
            problem=problem,
            proof=proof or f"Proof number {k}: by induction.",
            human_points=human,
            meta={"competition": competition, "model_id": model_id},
        )

    return [
        item(1, 7, "imo", "m1"),
        item(2, 0, "imo", "m2"),
        item(3, 7, "imo", "m1", f"Proof number 3: {EVIL}"),
        item(4, 1, "usamo", "m2"),
        item(5, 7, "usamo", "m1"),
        item(6, 0, "usamo", "m2"),
        item(7, 7, "usamo", "m1", "a lone surrogate \ud800 is an input error"),
        item(8, 0, "usamo", "m2"),
    ]


def _grader(scores: dict[int, tuple]):
    def script(call) -> str:
        number = int(re.search(r"Proof number (\d+)", call.prompt).group(1))
        score = scores[number][call.index]
        return (
            "I could not decide."
            if score is None
            else verification_text(score, analysis=f"Analysis of proof {number}.")
        )

    return script


def _likelihood(text: str) -> float:
    return 0.0 if text.endswith("{0.5}") else -3.0  # the read-out reads 0.5


async def scripted_grade_run(path: Path, scores: dict[int, tuple], score_mode: str = "text") -> RunFolder:
    """A real eval_grade run of 8 proofs (2 verifications each, the mean rule): one input error,
    in text mode one proof without a verdict, in auto mode read-out scores."""
    model = Model(ScriptedBackend(_grader(scores), likelihood=_likelihood))
    run = RunFolder(path)
    await eval_grade(
        scripted_grade_items(),
        run,
        verifier=Verifier(model, score_mode=score_mode),
        n=2,
        concurrency=1,
        n_resamples=200,
    )
    build_report(run)
    return run


def _md_rows(md: str, section: str) -> list[list[str]]:
    """The rows of the first table under ``## section`` of a Markdown report, as lists of cells."""
    part = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [
        [c.strip() for c in line.strip("|").split(" | ")]
        for line in part.splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    ]


async def test_grade_report_items_breakdowns_and_escaping(tmp_path):
    run = await scripted_grade_run(tmp_path / "strict", STRICT)
    summary = run.summary()
    assert summary["counts"]["errors"] == 1 and summary["counts"]["no_verdict"] == 1
    md = run.report_md.read_text()
    rows = {r[0]: r for r in _md_rows(md, "Items")}
    assert rows["item"] == ["item", "problem", "proof by", "human", "verdict", "diff", "agree", "verifications"]
    assert rows["g1"] == ["g1", "imo · P1", "m1", "7 / 7", "7", "+0", "✓", "1 1"]
    assert rows["g3"] == ["g3", "imo · P3", "m1", "7 / 7", "5.25", "-1.75", "✗", "1 0.5"]
    assert rows["g6"] == ["g6", "usamo · P6", "m2", "0 / 7", "0", "+0", "✓", "— 0"]  # a format failure has no score
    assert rows["g8"][3:] == ["0 / 7", "no verdict", "—", "—", "— —"]
    assert rows["g7"][1].startswith("error (input)")
    # the breakdowns, each group with its items and its intervals
    groups = summary["metrics"]["breakdowns"]
    for section, key, expected in (
        ("By competition", "competition", {"imo": ("3", "3"), "usamo": ("4", "3")}),
        ("By the model that wrote the proof", "model_id", {"m1": ("3", "3"), "m2": ("4", "3")}),
    ):
        table = {r[0]: r for r in _md_rows(md, section)}
        assert table[key][:5] == [key, "items", "with a verdict", "accuracy", "balanced acc."]
        for group, counts in expected.items():
            m = groups[key][group]
            ci = m["intervals"]["accuracy"]
            assert tuple(table[group][1:3]) == counts
            assert table[group][3] == f"{_num(m['accuracy'])} {_ci(ci['low'], ci['high'])}" and ci["low"] is not None
    assert groups["competition"]["imo"]["accuracy"] == pytest.approx(2 / 3)
    page = run.report_html.read_text()
    assert "<h2>By competition</h2>" in page and "<h2>By the model that wrote the proof</h2>" in page
    # the proof and its analyses, escaped, behind expanders; nothing of the proof's markup is live
    assert "<script>" not in page and "<script" not in page.lower()
    assert html.escape("<script>alert('x')</script>") in page and "&amp;&amp; done" in page
    assert "$\\frac{a}{c} &lt; 1$" in page and "<link" not in page and "src='http" not in page
    assert page.count("<details") >= 7 + 13  # one per item with a verdict or none, one per proof and analysis
    assert "Analysis of proof 3." in page and "<span class='none' title='no score (format failure)'>—</span>" in page
    assert "<td class='n miss'>✗</td>" in page  # g3's disagreement is marked
    error = page[page.index("<tr class='err'>") :]
    assert error.startswith("<tr class='err'><td>g7</td>") and "error (input)" in error[:400]


async def test_grade_report_marks_read_out_scores_and_shortens_long_texts(tmp_path):
    run = await scripted_grade_run(tmp_path / "auto", STRICT, score_mode="auto")
    rows = {r[0]: r for r in _md_rows(run.report_md.read_text(), "Items")}
    assert rows["g6"][-1] == "0.5† 0"  # the format failure read out by likelihood
    assert rows["g8"][4:] == ["3.5", "+3.5", "✓", "0.5† 0.5†"]  # a verdict from read-outs alone
    page = run.report_html.read_text()
    assert "<span class='ro' title='score from the likelihood read-out'>0.5†</span>" in page
    build_report(run, text_limit=60)
    page = run.report_html.read_text()
    cuts = re.findall(r"\[… ([\d,]+) characters left out here: the full text is in items.jsonl …\]", page)
    proof = next(r["proof"] for r in run.records() if r["id"] == "g3")
    assert str(len(proof) - 60) in cuts and "texts over 60 characters are shortened" in page
    assert html.escape(proof[:40]) in page and html.escape(proof) not in page


def _solver():
    failed = []

    def script(call) -> str:
        seed = call.request.config.seed or 0
        if call.role == "generate":
            pid = "a" if "statement a" in call.prompt else "b"
            text = f"PROOF-{pid}-{seed}" + (f" {EVIL}" if pid == "b" else "")
            return generation_text(text, {0: 1.0, 1: 0.5}[seed])
        if "PROOF-a-0" in call.prompt:
            return verification_text(0.5)
        if "PROOF-b-1" in call.prompt and not failed:
            failed.append(call)
            return "No verdict here."  # a format failure: read out by likelihood
        return verification_text(1)

    return script


async def scripted_solve_run(path: Path) -> RunFolder:
    roles = Roles.from_models(Model(ScriptedBackend(_solver(), likelihood=_likelihood)), score_mode="auto")
    items = [SolveItem(problem=Problem(id=p, statement=f"Prove statement {p}.")) for p in ("a", "b")]
    run = RunFolder(path)
    await eval_solve(items, run, roles=roles, strategy=SingleStrategy(verify_n=1), k=2, verify_n=2)
    build_report(run)
    return run


async def test_solve_report_lists_every_sample(tmp_path):
    run = await scripted_solve_run(tmp_path / "s")
    md = run.report_md.read_text()
    rows = _md_rows(md, "Samples")
    assert rows[0] == ["problem", "sample", "self-score", "verifier scores", "mean", "points", "passed", "stop"]
    assert [r[:7] for r in rows[1:]] == [
        ["a", "0", "1", "0.5 0.5", "0.5", "3.5 / 7", "✗"],
        ["a", "1", "0.5", "1 1", "1", "7 / 7", "✓"],
        ["b", "0", "1", "1 1", "1", "7 / 7", "✓"],
        ["b", "1", "0.5", "0.5† 1", "0.75", "5.25 / 7", "✗"],
    ]
    assert {r[0] for r in _md_rows(md, "Problems")} == {"problem", "a", "b"}
    page = run.report_html.read_text()
    assert "<script" not in page.lower() and html.escape("<script>alert('x')</script>") in page
    assert page.count("<details>") == 4 and "sample 1: proof (" in page and "0.5†</span>" in page


async def test_compare_two_and_three_scripted_runs(tmp_path):
    strict = await scripted_grade_run(tmp_path / "strict", STRICT)
    auto = await scripted_grade_run(tmp_path / "auto", STRICT, score_mode="auto")
    lenient = await scripted_grade_run(tmp_path / "lenient", LENIENT)
    two = compare_runs(strict, auto, n_resamples=300)
    # g7 is an input error in every run; g8 has a verdict only where the read-out gave one
    assert two["paired"] == 6
    assert [(r["label"], r["errors"], r["no_value"], r["unpaired"], r["left_out"]) for r in two["runs"]] == [
        ("strict", 1, 1, 0, 2),
        ("auto", 1, 0, 1, 2),
    ]
    three = compare_runs(strict, lenient, auto, n_resamples=300)
    assert three["paired"] == 6 and [r["label"] for r in three["runs"]] == ["strict", "lenient", "auto"]
    metrics = three["metrics"]
    assert {
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "mae_points",
        "mae_score",
        "pearson",
        "spearman",
        "tokens per item",
    } <= set(metrics)
    acc = metrics["accuracy"]
    # on g1-g6 the strict grader agrees with the humans on 5 (all but g3), the lenient one on 3
    assert acc["values"] == [pytest.approx(5 / 6), pytest.approx(3 / 6), pytest.approx(5 / 6)]
    lenient_diff, auto_diff = acc["differences"][1], acc["differences"][2]
    assert lenient_diff["difference"] == pytest.approx(-1 / 3) and lenient_diff["low"] <= -1 / 3 <= lenient_diff["high"]
    assert (
        auto_diff["difference"] == 0 and auto_diff["low"] == auto_diff["high"] == 0
    )  # g6's read-out keeps its verdict
    md = compare_markdown(three)
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header == (
        "| metric | strict | lenient | auto | lenient - strict | 95% interval | auto - strict | 95% interval |"
    )
    row = next(line for line in md.splitlines() if line.startswith("| accuracy |"))
    assert row == (
        f"| accuracy | 0.833 | 0.5 | 0.833 | -0.333 | {_ci(lenient_diff['low'], lenient_diff['high'])} | 0 | [0, 0] |"
    )
    assert "6 items paired by id" in md and "| strict |" in md and "not in every other run: 1" in md
    assert "Note: n = 6 paired items, too few (under 10)" in md
    page = compare_html(three)
    assert "<script" not in page and "<link" not in page
    bold = []
    for name, m in metrics.items():  # a difference whose interval excludes 0 is in bold
        d = m["differences"][1]
        row = page.split(f"<tr><td>{html.escape(name)}</td>", 1)[1].split("</tr>", 1)[0]
        excludes = d["low"] is not None and (d["low"] > 0 or d["high"] < 0)
        assert (f"<b>{_num(d['difference'])}</b>" in row) == excludes, name
        bold += [name] * excludes
    assert "accuracy" not in bold and "tokens per item" in bold  # the strict grader is told more
    result = CliRunner().invoke(
        app,
        ["compare", str(strict.path), str(lenient.path), str(auto.path), "--out", str(tmp_path / "cmp")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0 and "| accuracy | 0.833 | 0.5 | 0.833 | -0.333 |" in result.stdout
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["paired"] == 6 and len(saved["runs"]) == 3


async def test_compare_solve_runs_pairs_by_problem(tmp_path):
    a = await scripted_solve_run(tmp_path / "a")
    b = await scripted_solve_run(tmp_path / "b")
    lines = b.items_path.read_text().splitlines()
    b.items_path.write_text(lines[0] + "\n")  # B has problem a only
    comparison = compare_runs(a, b, n_resamples=100)
    assert comparison["paired"] == 1 and comparison["runs"][0]["unpaired"] == 1
    assert set(comparison["metrics"]) == {"score", "best_self", "best_verifier", "pass@1", "pass@k", "tokens per item"}
    assert comparison["metrics"]["score"]["values"] == [0.5, 0.5]
    assert comparison["metrics"]["score"]["differences"][1]["difference"] == 0


def _screenshot(page: Path, shot: Path, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--hide-scrollbars",  # a page taller than the window keeps its right edge clear
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                f"--window-size=1200,{height}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


@pytest.mark.chromium
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
async def test_report_renders_in_headless_chromium(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    run = await scripted_grade_run(tmp_path / "g", STRICT, score_mode="auto")
    html_path = run.report_html
    opened = tmp_path / "opened.html"  # every expander open: the proofs and analyses laid out
    opened.write_text(html_path.read_text().replace("<details>", "<details open>"))
    keep = Path(tempfile.gettempdir())
    for page, name, height in ((html_path, "report", 4000), (opened, "report-opened", 6000)):
        shot = tmp_path / f"{name}.png"
        _screenshot(page, shot, height)
        assert shot.exists() and shot.stat().st_size > 20_000
        pixels = image.imread(shot)
        assert pixels.shape[0] == height and pixels.shape[1] == 1200
        assert float(pixels[..., :3].std()) > 0.05  # text, tables and plots, not a blank page
        # nothing wider than the window: the rightmost column of pixels is the page's background
        assert float(pixels[:, -30:, :3].std()) < 0.02
        shutil.copy(shot, keep / f"proofcritic-{name}-screenshot.png")  # for a person to look at


@pytest.mark.skipif(not (DATA / "dsmv2" / "outputs").exists(), reason="shared data not present")
def test_eval_grade_from_recorded_end_to_end(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "grade",
            "--suite",
            "dsmv2-human",
            "--from-recorded",
            "average_automatic_rating",
            "--run",
            str(run),
            "--data-dir",
            str(DATA),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["scored"] > 50 and summary["metrics"]["pearson"] > 0.3
    assert (run / "report.html").read_text().count(PNG) >= 3 and "pearson" in result.stdout
    md = (run / "report.md").read_text()
    competitions = {r[0]: r for r in _md_rows(md, "By competition")}
    assert set(competitions) == {
        "competition",
        "CMO2024",
        "IMO2025",
        "Putnam2024",
        "IMO-ProofBench-Basic",
        "IMO-ProofBench-Advanced",
    }
    assert competitions["Putnam2024"][1:3] == ["12", "12"] and competitions["CMO2024"][1:3] == ["6", "6"]
    models = {r[0]: r for r in _md_rows(md, "By the model that wrote the proof")}
    assert models["deepseek-math-v2"][1:3] == ["84", "84"]
    items = _md_rows(md, "Items")
    assert len(items) == 85 and items[1][:5] == ["CMO2024-1", "CMO2024-1", "deepseek-math-v2", "21 / 21", "21"]
    records = RunFolder(run).records()
    assert all(r["proof"] for r in records)  # the full proofs stay in items.jsonl
    config = json.loads((run / "config.json").read_text())
    assert config["from_recorded"] == "average_automatic_rating" and config["model"] is None


SMOL = ["--max-tokens", "16", "--temperature", "0.8", "--seed", "1", "--score-mode", "text", "--limit", "2"]


@pytest.mark.smollm2
@pytest.mark.skipif(not (DATA / "dsmv2").exists(), reason="shared data not present")
def test_eval_solve_and_grade_on_smollm2(smollm2_dir, tmp_path):
    runner = CliRunner()
    cache = ["--cache", str(tmp_path / "c.sqlite"), "--data-dir", str(DATA)]
    result = runner.invoke(
        app,
        [
            "eval",
            "solve",
            "--suite",
            "imo2025",
            "--run",
            str(tmp_path / "s"),
            "-k",
            "2",
            "--set",
            "keep_invalid=true",
            *SMOL,
            *cache,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    records = RunFolder(tmp_path / "s").records()
    assert len(records) == 2 and all(len(r["samples"]) == 2 for r in records)
    assert (tmp_path / "s" / "report.html").read_text().count(PNG) >= 3
    result = runner.invoke(
        app,
        ["eval", "grade", "--suite", "dsmv2-human", "--run", str(tmp_path / "g"), *SMOL, *cache],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert len(RunFolder(tmp_path / "g").records()) == 2 and (tmp_path / "g" / "report.md").exists()
