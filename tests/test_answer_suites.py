"""Answer suites (#19 point 1): AnswerBench and any file with an answer column, solved by a
scripted generator whose answers are known (right, wrong, equivalent forms), graded by the
answer check (math-verify) with no verifier call: accuracy, pass@k and maj@k have known values."""

from __future__ import annotations

import csv
import json

import pytest
from scripted import ScriptedBackend, generation_text

from proofcritic.benchmarks import load_suite
from proofcritic.benchmarks._run import RunFolder
from proofcritic.benchmarks.answer_suites import majority_answer
from proofcritic.benchmarks.eval_solve import ANSWER_REQUEST, eval_solve, summarize_solve_run
from proofcritic.benchmarks.report import build_report
from proofcritic.errors import InputError
from proofcritic.llm import Model
from proofcritic.pipelines._common import Roles
from proofcritic.pipelines.single import SingleStrategy

# the AnswerBench header; p1's answer is 1/2, p2's {1, 2}, p3's 8
ROWS = [
    ("p1", "Compute $x$ where $2x = 1$.", "$\\frac{1}{2}$"),
    ("p2", "Find all $n$ with $n^2 - 3n + 2 = 0$.", "$1, 2$"),
    ("p3", "Find the smallest value.", "8"),
]
# the scripted generator's answer per (problem, sample): right, equivalent forms, wrong, none
ANSWERS = {
    ("p1", 0): "\\boxed{0.5}",  # right, another form
    ("p1", 1): "\\boxed{\\dfrac{2}{4}}",  # right, another form
    ("p1", 2): "\\boxed{1/3}",  # wrong
    ("p2", 0): "\\boxed{3}",  # wrong
    ("p2", 1): "Final answer: $n \\in \\{2, 1\\}$",  # right (a set, another order)
    ("p2", 2): "\\boxed{3}",  # wrong again: the majority (3) is wrong
    ("p3", 0): "I could not finish.",  # no stated answer: the last line is not 8
    ("p3", 1): "\\boxed{7}",
    ("p3", 2): "\\boxed{8}",
}


def _write_answerbench(path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Problem ID", "Problem", "Short Answer", "Category", "Subcategory", "Source"])
        for pid, statement, answer in ROWS:
            writer.writerow([pid, statement, answer, "Algebra", "Test", "made up"])


def _script(call) -> str:
    assert call.role == "generate", "an answer suite needs no verification"
    assert ANSWER_REQUEST in call.prompt
    pid = next(p for p, statement, _ in ROWS if statement in call.prompt)
    seed = call.request.config.seed or 0
    return generation_text(f"Working.\n\n{ANSWERS[(pid, seed)]}", 1.0)


async def test_answerbench_accuracy_pass_and_majority(tmp_path):
    data = tmp_path / "data"
    (data / "imobench").mkdir(parents=True)
    _write_answerbench(data / "imobench" / "answerbench_v2.csv")
    items = load_suite("answerbench", data_dir=data)
    assert [i.answer for i in items] == [a for *_, a in ROWS] and items[0].problem.max_points == 1.0
    assert items[0].meta == {"category": "Algebra", "subcategory": "Test", "source": "made up"}
    backend = ScriptedBackend(_script)
    run = RunFolder(tmp_path / "run")
    summary = await eval_solve(
        items, run, roles=Roles.from_models(Model(backend)), strategy=SingleStrategy(verify_n=0), k=3, verify_n=2
    )
    assert backend.count("generate") == 9 and len(backend.calls) == 9  # no verification at all
    records = {r["id"]: r for r in run.records()}
    p1 = records["p1"]
    assert p1["answer"] == "$\\frac{1}{2}$"
    assert [s["correct"] for s in p1["samples"]] == [True, True, False]
    assert p1["samples"][0]["answer"] == "0.5" and p1["samples"][0]["answer_rule"] == "boxed"
    assert p1["samples"][0]["points"] == 1.0 and p1["samples"][2]["points"] == 0.0
    assert p1["majority"] == {"answer": "0.5", "votes": 2, "groups": [2, 1], "sample": 0, "correct": True}
    p2 = records["p2"]
    assert [s["correct"] for s in p2["samples"]] == [False, True, False]
    assert p2["samples"][1]["answer_rule"] == "final_answer"
    assert p2["majority"]["answer"] == "3" and p2["majority"]["votes"] == 2 and not p2["majority"]["correct"]
    p3 = records["p3"]
    assert [s["correct"] for s in p3["samples"]] == [False, False, True]
    assert p3["majority"]["groups"] == [1, 1, 1] and not p3["majority"]["correct"]  # a tie: the first group
    m = summary["metrics"]
    assert m["accuracy"]["value"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    assert m["pass@k"]["value"] == 1.0
    assert m["maj@k"]["value"] == pytest.approx(1 / 3)
    assert m["score"]["value"] == pytest.approx(1 / 3)  # first samples: right, wrong, wrong
    assert m["maj@k"]["n"] == 3 and m["maj@k"]["low"] <= m["maj@k"]["value"] <= m["maj@k"]["high"]
    assert summary["answers"] == {"samples": 9, "stated": 9, "correct": 4, "majority_correct": 1}
    assert summary["no_verdict"] == 0 and summary["verifications"] == 0
    assert json.loads(run.summary_path.read_text())["metrics"]["maj@k"]["value"] == pytest.approx(1 / 3)
    # rebuilt from the records alone (``proofcritic report``): the same metrics
    assert summarize_solve_run(run.records())["metrics"] == summary["metrics"]
    # resumed: nothing is asked again
    await eval_solve(items, run, roles=Roles.from_models(Model(backend)), strategy=SingleStrategy(verify_n=0), k=3)
    assert len(backend.calls) == 9
    # the report: the answer counts, each sample's answer and check, the majority per problem
    run.create({"command": "eval solve", "suite": "answerbench", "strategy": "single", "model": "m"})
    _, md_path = build_report(run)
    report = md_path.read_text()
    assert "| maj@k | 0.333 | [0, 1] |" in report and "| accuracy | 0.444 |" in report
    assert "| answers stated / right (samples) | 9 / 4 |" in report
    assert "answer 0.5 (right; ref. $\\frac{1}{2}$)" in report and "answer 1/3 (wrong;" in report
    assert "| majority answer |" in report and "| p2 |" in report


def test_eval_solve_cli_answer_file_plans_no_verification(tmp_path):
    from typer.testing import CliRunner

    from proofcritic.cli import app

    path = tmp_path / "mine.csv"
    path.write_text("problem,answer\nWhat is 1+1?,2\nWhat is 2+2?,4\n")
    args = ["eval", "solve", "--suite", "answers", "--file", str(path), "-k", "2", "--dry-run", "--model", "openai/x"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    out = " ".join(shown.output.split())
    assert "verify_n=0" in out and "graded by the answer check" in out, out
    assert "verification" not in out.replace("verify_n", ""), out
    missing = CliRunner().invoke(app, ["eval", "solve", "--suite", "answers", "--dry-run", "--model", "openai/x"])
    assert missing.exit_code != 0


def test_generic_answer_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"question": "What is 1+1?", "final_answer": "2", "level": 1})
        + "\n"
        + json.dumps({"id": "q2", "problem": "What is 2+2?", "answer": "4"})
        + "\n"
    )
    items = load_suite("answers", source=path)
    assert [(i.problem.id, i.answer) for i in items] == [("answers-1", "2"), ("q2", "4")]
    assert items[0].meta == {"level": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "What is 3+3?", "solution": "6"}) + "\n")
    with pytest.raises(InputError, match="no reference answer"):
        load_suite("answers", source=bad)


def test_majority_groups_equivalent_answers():
    vote = majority_answer(["\\frac{1}{2}", None, "3", "0.5", "1/2", "3"])
    assert vote == {"answer": "\\frac{1}{2}", "votes": 3, "groups": [3, 2], "sample": 0}
    assert majority_answer([None, None])["answer"] is None


async def test_compare_answer_runs_has_accuracy_and_majority(tmp_path):
    """``compare`` of two answer runs pairs maj@k and accuracy as well: a generator that is
    always right against the scripted one (accuracy 4/9, maj@k 1/3)."""
    from proofcritic.benchmarks.report import compare_runs

    data = tmp_path / "data"
    (data / "imobench").mkdir(parents=True)
    _write_answerbench(data / "imobench" / "answerbench_v2.csv")
    items = load_suite("answerbench", data_dir=data)
    gold = {pid: answer for pid, _, answer in ROWS}

    def always_right(call):
        pid = next(p for p, statement, _ in ROWS if statement in call.prompt)
        return generation_text(f"Final answer: {gold[pid]}", 1.0)

    runs = []
    for name, script in (("a", _script), ("b", always_right)):
        run = RunFolder(tmp_path / name)
        roles = Roles.from_models(Model(ScriptedBackend(script)))
        await eval_solve(items, run, roles=roles, strategy=SingleStrategy(verify_n=0), k=3)
        runs.append(run)
    metrics = compare_runs(*runs, n_resamples=200)["metrics"]
    assert metrics["maj@k"]["values"] == [pytest.approx(1 / 3), 1.0]
    assert metrics["maj@k"]["differences"][1]["difference"] == pytest.approx(2 / 3)
    assert metrics["accuracy"]["values"] == [pytest.approx(4 / 9), 1.0]
