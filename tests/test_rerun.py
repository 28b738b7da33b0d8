"""A rerun gives exactly what a clean run gives: one record per id at the end of every run, the
settings that change results recorded with the output (a rerun with others stops before any
model call), and a non-zero exit status when items failed.

The batch commands run in this process against real OpenAI-compatible HTTP servers on
127.0.0.1 (the protocol-answering scripted server of ``tests/servers``) that refuse every
request while ``down`` and answer once it recovers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers.scripted_openai_server import MODEL_NAME, ScriptedOpenAIServer
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic.benchmarks import RunFolder
from proofcritic.cli import app
from proofcritic.errors import BackendError, InputError
from proofcritic.io import compact_jsonl, read_index
from proofcritic.runner import LeftForRerun, prepare_output, run_jsonl, settings_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STATEMENT = "Prove that n^3 - n is divisible by 6 for every integer n."
PROOF = "Write n^3 - n = (n - 1) n (n + 1): three consecutive integers, so 2 and 3 divide it."
SUMMARY = re.compile(r"^(\d+) of (\d+) items failed: backend error: .+")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _ids(path: Path) -> list[str]:
    return [r["id"] for r in _records(path)]


class Outage:
    """Wraps a server's script: while ``down`` every request fails with an HTTP 400."""

    def __init__(self, script: Callable):
        self.script = script
        self.down = True

    def __call__(self, *args):
        if self.down:
            raise BackendError("scripted outage", status=400)
        return self.script(*args)


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    """The scripted server, down until the test sets ``server.outage.down = False``."""
    with ScriptedOpenAIServer(pass_at=1) as running:
        running.outage = Outage(running.recorder.script)  # type: ignore[attr-defined]
        running.recorder.script = running.outage
        yield running


def _model(server: ScriptedOpenAIServer) -> list[str]:
    return ["--model", f"openai/{MODEL_NAME}", "--base-url", server.url, "--api-key", "x", "--no-cache"]


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def _write_proofs(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": STATEMENT, "proof": PROOF}) + "\n" for i in ids))
    return path


def _fails_then_recovers(server, args: list, output: Path, ids: list[str]) -> None:
    """Run ``args`` against the server while down (exit 1, the summary line, error records),
    then again once it is back: exit 0 and exactly one record per id, none an error."""
    first = _cli(*args)
    assert first.exit_code == 1, first.output + first.stderr
    summary = SUMMARY.match(_last_line(first))
    assert summary and summary.group(2) == str(len(ids)), first.stderr
    assert "scripted outage" in _last_line(first)
    assert all("error" in r for r in _records(output))
    server.outage.down = False
    second = _cli(*args)
    assert second.exit_code == 0, second.output + second.stderr
    records = _records(output)
    assert sorted(r["id"] for r in records) == sorted(ids)  # one record per id: the old errors are gone
    assert not [r for r in records if "error" in r]
    again = _cli(*args)  # nothing left to do: the output stays as it is
    assert again.exit_code == 0 and _records(output) == records


# -- the io and runner layer -----------------------------------------------------------------------


def test_compaction_keeps_the_latest_record_of_each_id_in_input_order(tmp_path):
    out = tmp_path / "out.jsonl"
    rows = [
        {"id": "a", "error": "down", "error_kind": "backend"},
        {"id": "b", "v": 1},
        {"id": "a", "v": 2},
        {"id": "z", "v": 0},
        {"id": "c", "error": "bad", "error_kind": "input"},
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "c", "v"')  # a partial last line
    index = read_index(out)
    assert index.duplicates and index.latest == {"a": None, "b": None, "z": None, "c": ("input", "bad")}
    assert compact_jsonl(out, ["c", "b", "a"]) is True
    assert _records(out) == [rows[4], rows[1], rows[2], rows[3]]  # input order, then other ids
    inode = out.stat().st_ino
    assert compact_jsonl(out, ["c", "b", "a"]) is False and out.stat().st_ino == inode  # no duplicates: untouched
    assert not list(tmp_path.glob("*.tmp"))


async def test_runner_rerun_after_failures_keeps_one_record_per_id(tmp_path):
    out = tmp_path / "out.jsonl"
    items = [(f"i{k}", k + 1, {"k": k}) for k in range(5)]
    state = {"down": True}

    async def process(item_id: str, record: dict) -> dict:
        if state["down"] and record["k"] % 2 == 0:
            raise BackendError("server down")
        return {"value": record["k"]}

    stats = await run_jsonl(items, out, process)
    assert stats.failed == 3 and stats.failure_summary() == "3 of 5 items failed: backend error: server down"
    state["down"] = False
    for _ in range(2):
        stats = await run_jsonl(items, out, process)
        assert _ids(out) == ["i0", "i1", "i2", "i3", "i4"]
        assert [r["value"] for r in _records(out)] == [0, 1, 2, 3, 4]
        assert stats.failed == 0 and stats.failure_summary() is None


async def test_final_errors_still_count_as_failures_on_a_rerun(tmp_path):
    out = tmp_path / "out.jsonl"
    items = [("ok", 1, {}), ("bad", 2, InputError("line 2 is not valid JSON")), ("down", 3, {})]

    async def process(item_id: str, record: dict) -> dict:
        if item_id == "down":
            raise RuntimeError("boom")
        return {}

    first = await run_jsonl(items, out, process)
    second = await run_jsonl(items, out, process)  # "bad" is skipped (final), "down" tried again
    for stats in (first, second):
        assert stats.failure_summary() == (
            "2 of 3 items failed: input error (1): line 2 is not valid JSON; internal error (1): RuntimeError: boom"
        ) or stats.failure_summary() == (
            "2 of 3 items failed: internal error (1): RuntimeError: boom; input error (1): line 2 is not valid JSON"
        )
    assert second.skipped == 2 and sorted(_ids(out)) == ["bad", "down", "ok"]


async def test_an_error_that_stops_runs_leaves_the_rest_for_a_rerun(tmp_path):
    """The hook for a backend's circuit breaker: an exception with ``stops_run`` true."""

    class BreakerOpen(BackendError):
        stops_run = True

    out = tmp_path / "out.jsonl"
    items = [(f"i{k}", k + 1, {"k": k}) for k in range(6)]
    state = {"open": True}
    started: list[str] = []

    async def process(item_id: str, record: dict) -> dict:
        started.append(item_id)
        if state["open"] and record["k"] == 2:
            raise BreakerOpen("circuit open")
        return {}

    stats = await run_jsonl(items, out, process, concurrency=1)
    assert started == ["i0", "i1", "i2"] and stats.stopped == "circuit open"
    assert stats.failure_summary() == (
        "1 of 6 items failed: backend error: circuit open; the run stopped early, 3 item(s) not started (rerun to do them)"
    )
    state["open"] = False
    stats = await run_jsonl(items, out, process, concurrency=1)
    assert _ids(out) == [f"i{k}" for k in range(6)] and stats.failure_summary() is None


async def test_an_item_left_for_a_rerun_gets_no_record_and_no_other_item_starts(tmp_path):
    """``LeftForRerun`` (what a problem that met a spent run budget raises): nothing is written
    for it, no further item starts, the run is not "stopped", and a rerun does the rest."""
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "i4", "line": 5}\n')  # done by an earlier run
    items = [(f"i{k}", k + 1, {"k": k}) for k in range(5)]
    state = {"leave": True}
    started: list[str] = []

    async def process(item_id: str, record: dict) -> dict:
        started.append(item_id)
        if state["leave"] and record["k"] == 1:
            raise LeftForRerun
        return {}

    stats = await run_jsonl(items, out, process, concurrency=1)
    assert started == ["i0", "i1"] and _ids(out) == ["i4", "i0"]
    assert (stats.done, stats.skipped, stats.errors, stats.stopped) == (2, 1, 0, None)
    assert stats.failure_summary() is None
    state["leave"] = False
    stats = await run_jsonl(items, out, process, concurrency=1)
    assert started[2:] == ["i1", "i2", "i3"] and sorted(_ids(out)) == [f"i{k}" for k in range(5)]
    assert (stats.done, stats.skipped) == (5, 2)


def test_settings_are_recorded_and_checked(tmp_path):
    out, review = tmp_path / "g.jsonl", tmp_path / "review.jsonl"
    assert prepare_output(out, {"command": "grade", "n": 1, "sampling": {"temperature": None}}) is None
    assert json.loads(settings_path(out).read_text())["n"] == 1
    out.write_text('{"id": "a"}\n')
    review.write_text('{"id": "a"}\n')
    prepare_output(out, {"command": "grade", "n": 1, "sampling": {"temperature": None}})  # the same: fine
    with pytest.raises(InputError) as caught:
        prepare_output(out, {"command": "grade", "n": 3, "sampling": {"temperature": 0.5}})
    assert str(caught.value) == (
        f"{out} was made with n=1, sampling.temperature=default; this run has n=3, sampling.temperature=0.5 "
        "(use --overwrite to start a fresh output, or another --output)"
    )
    assert prepare_output(out, {"n": 3}, overwrite=True, companions=[review]) is None
    assert not out.exists() and not review.exists()
    out.write_text('{"id": "a"}\n')
    settings_path(out).unlink()  # an output of an older version
    assert "no settings file" in prepare_output(out, {"n": 2})
    assert json.loads(settings_path(out).read_text()) == {"n": 2}


# -- every batch command ---------------------------------------------------------------------------


def test_grade_rerun_after_failures(server, tmp_path):
    source, out = _write_proofs(tmp_path / "in.jsonl", ["p1", "p2", "p3"]), tmp_path / "g.jsonl"
    args = ["grade", "--input", source, "--output", out, "-n", "1", "--score-mode", "text", *_model(server)]
    _fails_then_recovers(server, args, out, ["p1", "p2", "p3"])
    assert all(r["aggregate"]["valid"] == 1 for r in _records(out))


def test_grade_with_other_settings_stops_and_overwrite_starts_fresh(server, tmp_path):
    server.outage.down = False
    out = tmp_path / "g.jsonl"
    base = ["grade", "--input", EXAMPLES / "batch.jsonl", "--output", out, "--score-mode", "text", *_model(server)]
    assert _cli(*base, "-n", "1").exit_code == 0
    calls = len(server.recorder.arrived)
    rerun = subprocess.run(
        [sys.executable, "-m", "proofcritic", *map(str, base), "-n", "3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 2
    assert rerun.stderr.strip().splitlines() == [
        f"error: {out} was made with n=1; this run has n=3 (use --overwrite to start a fresh output, or another --output)"
    ]
    assert len(server.recorder.arrived) == calls  # stopped before any model call
    fresh = _cli(*base, "-n", "3", "--overwrite")
    assert fresh.exit_code == 0, fresh.output + fresh.stderr
    assert "0 already done" in fresh.stderr.replace("\n", " ")
    records = _records(out)
    assert len(records) == 2 and all(len(r["verifications"]) == 3 for r in records)
    assert json.loads(settings_path(out).read_text())["n"] == 3
    settings_path(out).unlink()  # as an older version left it: accepted with a warning
    old = _cli(*base, "-n", "3")
    assert old.exit_code == 0 and "has no settings file" in old.stderr and settings_path(out).exists()


def test_label_rerun_after_failures(server, tmp_path):
    source = _write_proofs(tmp_path / "in.jsonl", ["p1", "p2"])
    out, review = tmp_path / "labels.jsonl", tmp_path / "review.jsonl"
    args = [
        "label",
        "--input",
        source,
        "--output",
        out,
        "--review",
        review,
        "--n",
        "1",
        "--m",
        "1",
        "--k",
        "1",
        "--score-mode",
        "text",
        *_model(server),
    ]
    _fails_then_recovers(server, args, out, ["p1", "p2"])
    assert all(r["status"] == "labeled" for r in _records(out))


def test_solve_rerun_after_failures(server, tmp_path):
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"id": i, "problem": STATEMENT}) + "\n" for i in ("q1", "q2", "q3")))
    out = tmp_path / "s.jsonl"
    args = [
        "solve",
        "--input",
        source,
        "--output",
        out,
        "--strategy",
        "single",
        "--score-mode",
        "text",
        *_model(server),
    ]
    _fails_then_recovers(server, args, out, ["q1", "q2", "q3"])
    assert all(r["proof"] for r in _records(out))


def test_eval_grade_rerun_after_failures(server, tmp_path):
    graded = tmp_path / "graded.jsonl"
    graded.write_text(
        "".join(
            json.dumps({"id": i, "problem": STATEMENT, "proof": PROOF, "points": points}) + "\n"
            for i, points in (("g1", 7), ("g2", 0), ("g3", 7))
        )
    )
    run = tmp_path / "run"
    args = ["eval", "grade", "--file", graded, "--run", run, "-n", "1", "--score-mode", "text", *_model(server)]
    _fails_then_recovers(server, args, run / "items.jsonl", ["g1", "g2", "g3"])
    assert RunFolder(run).summary()["counts"]["items"] == 3
    other = _cli(*args[: -len(_model(server))], "--rule", "min", *_model(server))
    assert other.exit_code != 0 and "was made with rule=mean; this run has rule=min" in str(other.exception)
    fresh = _cli(*args, "--rule", "min", "--overwrite")
    assert fresh.exit_code == 0 and all(r["rule"] == "min" for r in _records(run / "items.jsonl"))


def test_eval_solve_rerun_after_failures(server, tmp_path):
    data = tmp_path / "data"
    (data / "dsmv2" / "inputs").mkdir(parents=True)
    problems = [
        {"id": str(k), "question": STATEMENT, "contest": "IMO2025", "problem_idx": f"IMO2025-{k}"} for k in (1, 2)
    ]
    (data / "dsmv2" / "inputs" / "IMO2025.json").write_text(json.dumps(problems))
    run = tmp_path / "run"
    args = [
        "eval",
        "solve",
        "--suite",
        "imo2025",
        "--data-dir",
        data,
        "--run",
        run,
        "--score-mode",
        "text",
        *_model(server),
    ]
    _fails_then_recovers(server, args, run / "items.jsonl", ["IMO2025-1", "IMO2025-2"])
    assert json.loads((run / "config.json").read_text())["settings"]["strategy"] == "single"


def test_lean_prove_rerun_after_failures(tmp_path, lean_bin, monkeypatch):
    from test_lean_formal import GOOD, PROBLEM, Answers, fenced
    from test_lean_formal import STATEMENT as LEAN_STATEMENT

    source = tmp_path / "problems.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": i, "statement": PROBLEM.statement, "lean_statement": LEAN_STATEMENT}) + "\n"
            for i in ("l1", "l2")
        )
    )
    out = tmp_path / "lean.jsonl"
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    outage = Outage(lambda i, prompt: fenced(GOOD))
    with TinyOpenAIServer(Answers(outage), "fixed") as lean_server:
        lean_server.outage = outage  # type: ignore[attr-defined]
        args = [
            "lean-prove",
            "--input",
            source,
            "--output",
            out,
            "--model",
            "openai/fixed",
            "--base-url",
            lean_server.url,
            "--api-key",
            "x",
            "--no-cache",
        ]
        _fails_then_recovers(lean_server, args, out, ["l1", "l2"])
    assert all(r["passed"] for r in _records(out))
