"""``proofcritic export`` (issue 21 point 3): label runs (human decisions win), grade runs, D_v /
D_mv and step labels written as Hugging Face data sets (save_to_disk Arrow, Parquet, a card),
read back with ``datasets``; unknown shapes and an offline Hub refused with nothing written."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
from scripted import ScriptedBackend
from test_review import PROOFS, _script, make_label_run
from test_step_labels import GOLD, SOLUTION, _roles, answer_script
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.grading import grade_jsonl
from proofcritic.llm import Model
from proofcritic.pipelines.review import Decision, ReviewStore, decisions_path
from proofcritic.pipelines.step_labels import StepLabelConfig, label_steps_jsonl
from proofcritic.runner import prepare_output
from proofcritic.verifier import Verifier

datasets = pytest.importorskip("datasets", reason="datasets is not installed (the hf or train extra)")
pq = pytest.importorskip("pyarrow.parquet")

SETTINGS = {"command": "label", "model": "scripted/test", "prompts": "abc123", "n": 2, "m": 2, "k": 1}


def _export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def _card_counts(folder) -> str:
    return (folder / "README.md").read_text()


def test_label_run_exports_with_human_decisions_winning(tmp_path):
    _, labels, _ = make_label_run(tmp_path)
    prepare_output(labels, SETTINGS, overwrite=False)  # the settings file a label command records
    store = ReviewStore(decisions_path(labels))
    store.record(Decision(id="bad", label=0.5, reviewer="ana", comment="only a gap"))  # overrides the auto 0
    store.record(Decision(id="weak1", label=1, reviewer="bo"))  # settles a review item
    out = tmp_path / "ds"
    result = _export(str(labels), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 5 labels row(s)" in result.output and "human decisions 2" in result.output

    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 5 and {"id", "problem", "proof", "status", "label", "rule", "source", "record"} <= set(
        ds.column_names
    )
    rows = {r["id"]: r for r in ds}
    assert (rows["bad"]["label"], rows["bad"]["rule"], rows["bad"]["source"]) == (0.5, "human", "human")
    assert rows["bad"]["reviewer"] == "ana" and json.loads(rows["bad"]["record"])["auto"]["label"] == 0.0
    assert (rows["weak1"]["status"], rows["weak1"]["label"]) == ("labeled", 1.0)
    assert (rows["weak2"]["status"], rows["weak2"]["label"], rows["weak2"]["source"]) == ("review", None, "auto")
    assert rows["good"]["label"] == 1.0 and rows["good"]["problem"].startswith("Prove")
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == 5 and table.column("id").to_pylist() == [p[0] for p in PROOFS]

    card = _card_counts(out)
    assert "- model: scripted/test" in card and "- prompts: abc123" in card and '"n": 2' in card
    assert "- items: 5" in card and "- labeled: 3" in card and "- review: 2" in card
    assert "- human decisions: 2" in card and "- by score: 0.5: 1, 1.0: 2" in card and "- exported: 20" in card


def test_dv_and_dmv_from_a_label_run(tmp_path):
    _, labels, _ = make_label_run(tmp_path)
    ReviewStore(decisions_path(labels)).record(Decision(id="weak3", label=0, reviewer="ana"))
    assert _export(str(labels), "--out", str(tmp_path / "dv"), "--what", "dv").exit_code == 0
    dv = datasets.load_from_disk(str(tmp_path / "dv"))
    scores = {r["proof"]: (r["reference_score"], r["source"]) for r in dv}
    proofs = dict(PROOFS)
    # the two auto-labels and the human one; the unreviewed review items are not in D_v
    assert scores == {proofs["good"]: (1.0, "label"), proofs["bad"]: (0.0, "label"), proofs["weak3"]: (0.0, "human")}
    assert dv[0]["prompt"][0]["role"] and dv[0]["problem"]["statement"].startswith("Prove")
    result = _export(str(labels), "--out", str(tmp_path / "dmv"), "--what", "dmv")
    assert result.exit_code == 0, result.output
    dmv = datasets.load_from_disk(str(tmp_path / "dmv"))
    assert len(dmv) > 0 and {"analysis", "reference_meta_score"} <= set(dmv.column_names)
    assert "no settings file" in _card_counts(tmp_path / "dmv")


def test_grade_run_and_step_labels(tmp_path):
    source, _, _ = make_label_run(tmp_path)
    graded = tmp_path / "graded.jsonl"
    asyncio.run(grade_jsonl(Verifier(Model(ScriptedBackend(_script)), score_mode="text"), source, graded, n=2))
    result = _export(str(graded), "--out", str(tmp_path / "g"), "--input", str(source))
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in datasets.load_from_disk(str(tmp_path / "g"))}
    assert rows["good"]["scores"] == [1.0, 1.0] and rows["good"]["majority"] == 1.0
    assert rows["weak2"]["proof"] == dict(PROOFS)["weak2"] and len(rows) == 5
    assert "- with a verdict: 5" in _card_counts(tmp_path / "g")
    # a grade run cannot give training sets
    result = _export(str(graded), "--out", str(tmp_path / "x"), "--what", "dv")
    assert result.exit_code != 0 and "grade run: it exports as grades" in str(result.exception)
    assert not (tmp_path / "x").exists()

    steps_in = tmp_path / "steps_in.jsonl"
    steps_in.write_text(json.dumps({"id": "s1", "problem": "Compute x.", "proof": SOLUTION, "answer": GOLD}) + "\n")
    _, roller, _ = _roles(answer_script)
    steps = tmp_path / "steps.jsonl"
    asyncio.run(label_steps_jsonl(roller, None, steps_in, steps, config=StepLabelConfig(n=4, early_stop=False)))
    assert _export(str(steps), "--out", str(tmp_path / "s")).exit_code == 0
    (row,) = datasets.load_from_disk(str(tmp_path / "s"))
    assert row["labels"] == [True, True, False, False] and row["soft_labels"] == [0.75, 0.5, 0.0, 0.0]
    assert row["prompt"] == "Compute x." and len(row["completions"]) == 4
    assert "- steps labeled: 4" in _card_counts(tmp_path / "s")


def test_errors_write_nothing(tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    result = _export(str(other), "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "not a label, grade or label-steps output" in str(result.exception)
    _, labels, _ = make_label_run(tmp_path / "run")
    result = _export(str(labels), "--out", str(tmp_path / "o"), "--what", "steps")
    assert result.exit_code != 0 and "exports as labels or dv or dmv" in str(result.exception)
    # --push-to-hub offline: refused before anything is written
    result = CliRunner().invoke(
        app, ["export", str(labels), "--out", str(tmp_path / "o"), "--push-to-hub", "me/x"], env={"HF_HUB_OFFLINE": "1"}
    )
    assert result.exit_code != 0 and "HF_HUB_OFFLINE" in str(result.exception)
    # a push that fails (here: a Hub endpoint that refuses connections) is one line; the export stays
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "hf_none", "HF_HUB_OFFLINE": "0"}
    pushed = subprocess.run(
        [
            sys.executable,
            "-m",
            "proofcritic",
            "export",
            str(labels),
            "--out",
            str(tmp_path / "p"),
            "--push-to-hub",
            "me/x",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode == 2 and pushed.stderr.splitlines()[0].startswith("exported 5 labels row(s)")
    assert pushed.stderr.splitlines()[1].startswith("error: pushing") and len(pushed.stderr.splitlines()) == 2
    assert "the local export is kept" in pushed.stderr and (tmp_path / "p" / "README.md").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    result = _export(str(labels), "--out", str(full))
    assert result.exit_code != 0 and "not an empty folder" in str(result.exception)
    assert not (tmp_path / "o").exists() and [p.name for p in full.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
