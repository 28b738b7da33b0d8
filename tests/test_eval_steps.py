"""``eval steps`` (issue #18): the ProcessBench-format loader and metrics (accuracy on erroneous and
on correct solutions, their harmonic mean F1) on rows written in that shape, the first wrong step
against the Open Proof Corpus's human error annotations (same / before / after / missed), resumed
runs, the command line against a local OpenAI-compatible server, and the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scripted import ScriptedBackend, step_verification_text
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic.benchmarks import RunFolder, load_suite
from proofcritic.benchmarks.eval_steps import eval_steps, predicted_step, relation, summarize_steps_run
from proofcritic.benchmarks.processbench import first_error_step
from proofcritic.cli import app
from proofcritic.errors import InputError
from proofcritic.llm import Model
from proofcritic.steps import split_steps
from proofcritic.verifier import StepVerifier, parse_step_verification

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder not found: {DATA}")

# ProcessBench rows: (id, label, what the scripted verifier answers: a 1-based first wrong step,
# None for "no wrong step", "garbage" for an output outside the protocol)
ROWS = [
    ("same", 1, 2),
    ("before", 2, 1),
    ("after", 0, 3),
    ("missed", 1, None),
    ("unreadable", 2, "garbage"),
    ("clean", -1, None),
    ("alarm", -1, 2),
]


def write_rows(path: Path) -> Path:
    lines = []
    for name, label, _ in ROWS:
        steps = [f"Step one of {name}.", "Then $x = 2$.", "\n\nSo $y = 3$.  ", "Hence the answer is 5."]
        row = {"id": name, "generator": "m", "problem": f"Problem {name}: find y.", "steps": steps, "label": label}
        lines.append(json.dumps({**row, "final_answer_correct": label < 0}))
    path.write_text("\n".join(lines) + "\n")
    return path


def script(call):
    name = re.search(r"Problem (\w+): find y", call.prompt).group(1)
    answer = next(a for n, _, a in ROWS if n == name)
    if answer == "garbage":
        return "Every step looks fine to me."
    verdicts = ["correct"] * 4
    if answer is not None:
        verdicts[answer - 1] = "incorrect"
    return step_verification_text(verdicts)


def test_processbench_rows_load_with_their_steps_and_labels(tmp_path):
    items = load_suite("processbench", source=write_rows(tmp_path / "pb.jsonl"))
    assert [i.id for i in items] == [r[0] for r in ROWS] and [i.label for i in items] == [r[1] for r in ROWS]
    first = items[0]
    assert [s.text for s in first.steps] == [
        "Step one of same.",
        "Then $x = 2$.",
        "So $y = 3$.",
        "Hence the answer is 5.",
    ]
    assert all(first.proof[s.start : s.end] == s.text for s in first.steps)
    assert first.meta == {"generator": "m", "final_answer_correct": False}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "problem": "p", "steps": ["a", "b"], "label": 2}) + "\n")
    with pytest.raises(InputError, match="not -1 or a step index below 2"):
        load_suite("processbench", source=bad)
    bad.write_text(json.dumps({"id": "x", "problem": "p", "steps": [], "label": -1}) + "\n")
    with pytest.raises(InputError, match="steps"):
        load_suite("processbench", source=bad)
    with pytest.raises(InputError, match="pass its file path or the Hugging Face id Qwen/ProcessBench"):
        load_suite("processbench")


async def test_f1_accuracies_and_relations_on_processbench_rows(tmp_path):
    items = load_suite("processbench", source=write_rows(tmp_path / "pb.jsonl"))
    backend = ScriptedBackend(script)
    run = RunFolder(tmp_path / "run")
    summary = await eval_steps(items, run, verifier=StepVerifier(Model(backend)), n=1)
    m, c = summary["metrics"], summary["counts"]
    # erroneous: same, before, after, missed, unreadable (1 of 5 right); correct: clean, alarm (1 of 2)
    assert m["accuracy_erroneous"] == pytest.approx(1 / 5) and m["accuracy_correct"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 * 0.2 * 0.5 / 0.7)
    assert m["first_error"] == {"same": 1, "before": 1, "after": 1, "missed": 1, "no_verdict": 1}
    assert m["false_alarms"] == 1 and m["mean_distance"] == 0  # same 0, before -2 (step 1 for 3), after +2
    assert m["mean_abs_distance"] == pytest.approx(4 / 3)
    assert c["erroneous"] == 5 and c["correct"] == 2 and c["no_verdict"] == 1 and c["steps"] == 28
    assert any("counted as wrong" in note for note in summary["notes"])
    records = {r["id"]: r for r in run.records()}
    assert records["before"]["predicted"] == 0 and records["before"]["relation"] == "before"
    assert records["unreadable"]["status"] == "no_verdict" and records["unreadable"]["predicted"] is None
    # the verifier saw ProcessBench's own steps, numbered
    prompt = next(call.prompt for call in backend.calls if "Problem same" in call.prompt)
    assert "[Step 3]\nSo $y = 3$." in prompt and "[Step 4]\nHence the answer is 5." in prompt
    # a rerun resumes: nothing is asked again, the summary is the same
    again = await eval_steps(items, run, verifier=StepVerifier(Model(backend)), n=1)
    assert len(backend.calls) == len(ROWS) and again["metrics"] == m


def test_prediction_rules():
    def v(first):
        verdicts = ["correct"] * 4
        if first is not None:
            verdicts[first] = "incorrect"
        return parse_step_verification(step_verification_text(verdicts), steps=4)

    assert predicted_step([v(2), v(2), v(None)]) == 2
    assert predicted_step([v(3), v(None)]) == 3  # a tie goes to the earliest wrong step, -1 last
    assert predicted_step([v(3), v(1)]) == 1
    assert predicted_step([v(None), parse_step_verification("x", steps=4)]) == -1
    assert predicted_step([parse_step_verification("x", steps=4)]) is None
    assert [relation(p, 2) for p in (2, 1, 3, -1, None)] == ["same", "before", "after", "missed", "no_verdict"]
    assert [relation(p, -1) for p in (-1, 0, None)] == ["correct", "false_alarm", "no_verdict"]
    assert summarize_steps_run([])["metrics"]["f1"] is None


def test_first_error_step_from_spans():
    text = "First step.\n\nSecond step here.\n\n---\n\nThird."
    steps = split_steps(text)
    assert first_error_step([[20, 25]], steps) == 1  # inside step 2
    assert first_error_step([[40, 44], [5, 15]], steps) == 0  # the first error is the earliest span
    assert first_error_step([[31, 34]], steps) == 2  # on the separator: the step after it
    assert first_error_step([], steps) == -1


@needs_data
async def test_opc_rows_with_human_annotations(tmp_path):
    items = load_suite("opc-steps", data_dir=DATA)
    assert len(items) == 11 and all(i.error_spans and i.steps is None for i in items)
    rows = [json.loads(line) for line in (DATA / "opc" / "opc_test_sample100.jsonl").read_text().splitlines()]
    annotated = {f"{r['problem_id']}/{r['model_id']}": r for r in rows if r["human_annotations"]}
    assert {i.id for i in items} == set(annotated)
    # the ellipse proof: the first annotation covers the heading "1.  An ellipse ... exists"
    ellipse = next(i for i in items if "(c)  Tangency." in i.proof)
    steps = split_steps(ellipse.proof)
    label = first_error_step(ellipse.error_spans, steps)
    assert steps[label].text.startswith("1.  An ellipse")

    labels = {i.id: first_error_step(i.error_spans, split_steps(i.proof)) for i in items}
    order = sorted(labels)

    def answer(call):  # per proof: the annotated step, the one before, the one after, or none
        item_id = next(k for k in order if all(s.text in call.prompt for s in split_steps(annotated[k]["proof"])))
        count = len(split_steps(annotated[item_id]["proof"]))
        shift = [0, -1, 1, None][order.index(item_id) % 4]
        verdicts = ["correct"] * count
        if shift is not None:
            verdicts[min(max(labels[item_id] + shift, 0), count - 1)] = "incorrect"
        return step_verification_text(verdicts)

    summary = await eval_steps(
        items, RunFolder(tmp_path / "opc"), verifier=StepVerifier(Model(ScriptedBackend(answer)))
    )
    relations = summary["metrics"]["first_error"]
    assert sum(relations.values()) == 11 and relations["missed"] == 2 and relations["no_verdict"] == 0
    assert relations["same"] >= 3 and relations["before"] + relations["after"] >= 3
    assert summary["metrics"]["accuracy_correct"] is None and summary["metrics"]["f1"] is None


def test_eval_steps_cli_against_a_local_server(tmp_path):
    rows = write_rows(tmp_path / "pb.jsonl")
    run = tmp_path / "run"
    with TinyOpenAIServer(ScriptedBackend(script), "roles") as server:
        args = ["eval", "steps", "--file", str(rows), "--run", str(run), "--model", "openai/roles"]
        args += ["--base-url", server.url, "--no-cache", "--step-mode", "lines"]
        result = CliRunner().invoke(app, args, catch_exceptions=False, env={"OPENAI_API_KEY": "x"})
        assert result.exit_code == 0, result.output + result.stderr
        assert len(server.requests) == len(ROWS)
        # another step mode is another setting: the rerun stops before any call
        again = CliRunner().invoke(app, [*args[:-1], "paragraphs"], env={"OPENAI_API_KEY": "x"})
        assert again.exit_code != 0 and "made with step_mode=lines; this run has step_mode=paragraphs" in str(
            again.exception
        )
        assert len(server.requests) == len(ROWS)
    assert "F1: 0.2857" in result.output and "same 1, before 1, after 1, missed 1, no verdict 1" in result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "steps" and summary["counts"]["verified"] == len(ROWS)
    assert "| F1 | 0.2857 |" in (run / "report.md").read_text() and (run / "report.html").exists()
    report = CliRunner().invoke(app, ["report", str(run)], catch_exceptions=False)
    assert report.exit_code == 0 and "accuracy (correct): 0.5" in report.output
    wrong = CliRunner().invoke(app, ["eval", "steps", "--suite", "opc", "--run", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "opc is a grade suite; use `eval grade`" in wrong.stderr


def test_the_other_eval_commands_send_a_steps_suite_to_eval_steps(tmp_path):
    for command in ("grade", "solve"):
        result = CliRunner().invoke(app, ["eval", command, "--suite", "opc-steps", "--run", str(tmp_path / command)])
        assert result.exit_code == 2 and "opc-steps is a steps suite; use `eval steps`" in result.stderr
