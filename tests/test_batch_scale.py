"""Batches at scale: the input is streamed and the resume index holds ids, not records, so the
memory a batch holds does not grow with its input; a run killed (SIGKILL) mid-way resumes
without losing or repeating finished work; ``perf/cli_scale.py`` runs as a smoke check.

The runner is driven with a small grading step that is real code (the records are parsed into a
problem and a proof, as ``grade`` does) and with the real CLI against the scripted
OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from servers.scripted_openai_server import MODEL_NAME, ScriptedOpenAIServer

from proofcritic.grading import batch_verdicts
from proofcritic.io import (
    iter_latest,
    problem_from_record,
    proof_from_record,
    read_index,
)
from proofcritic.runner import count_items, current_item, read_items, run_jsonl

ROOT = Path(__file__).resolve().parents[1]
PROOF = "Write n^3 - n = (n - 1) n (n + 1): three consecutive integers, so 2 and 3 divide it. " * 24  # ~2 KB


def _write(path: Path, count: int, *, extra: str = "") -> Path:
    with path.open("w") as out:
        for i in range(count):
            out.write(json.dumps({"id": f"p{i}", "problem": f"Prove case {i}.", "proof": f"{i}. {PROOF}"}) + "\n")
        out.write(extra)
    return path


async def _grade_step(item_id: str, record: dict) -> dict:
    """The parsing ``grade`` does, then a verdict: real code, no model."""
    problem = problem_from_record(record, default_id=item_id)
    proof = proof_from_record(record)
    await asyncio.sleep(0)
    return {
        "problem_id": problem.id,
        "chars": len(proof.text),
        "line": current_item()[1],
        "verifications": [{"score": 1.0, "score_source": "text"}],
    }


def _peak(source: Path, output: Path, concurrency: int = 8) -> int:
    """tracemalloc's peak over a batch run, above what was held before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stats = asyncio.run(run_jsonl(read_items(source), output, _grade_step, concurrency=concurrency))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert stats.done == stats.total == count_items(source) and stats.errors == 0
    return peak


def test_a_batch_holds_no_records_its_memory_stays_flat(tmp_path):
    """8x the items (2 KB proofs) costs at most ~250 bytes more per item: ids in the index,
    not records (holding the records alone would be over 2 KB per item)."""
    small, large = 500, 4000
    peak_small = _peak(_write(tmp_path / "s.jsonl", small), tmp_path / "s.out.jsonl")
    peak_large = _peak(_write(tmp_path / "l.jsonl", large), tmp_path / "l.out.jsonl")
    per_item = (peak_large - peak_small) / (large - small)
    assert per_item < 250, (peak_small, peak_large, per_item)
    # a resume over the finished output: the scan and the skip hold ids only, too
    resume = _peak(tmp_path / "l.jsonl", tmp_path / "l.out.jsonl")
    assert resume < peak_small + (large - small) * 250, (resume, peak_small)
    assert [r["line"] for _, r in iter_latest(tmp_path / "l.out.jsonl")] == list(range(1, large + 1))


def test_streamed_input_keeps_ids_bad_lines_duplicates_and_order(tmp_path):
    source = _write(tmp_path / "in.jsonl", 3, extra='not json\n\n{"id": "p1", "problem": "P", "proof": "again"}\n')
    items = read_items(source)
    assert len(items) == 5 == count_items(source)  # the blank line is no item
    assert [i for i, _, _ in items] == ["p0", "p1", "p2", "line-4", "p1#line-6"]  # read again: the same
    out = tmp_path / "out.jsonl"
    stats = asyncio.run(run_jsonl(items, out, _grade_step, concurrency=1))
    assert stats.failure_summary() == "1 of 5 items failed: input error: line 4 is not valid JSON: Expecting value"
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p0", "p1", "p2", "line-4", "p1#line-6"]
    index = read_index(out)
    assert index.latest["line-4"] == ("input", "line 4 is not valid JSON: Expecting value") and not index.duplicates
    assert (
        batch_verdicts(out)
        == "verdicts: 4 of 4 proof(s), 0 without a verdict; unscored: 0 of 4 verifications; scores from a read-out: 0"
    )


async def test_an_interrupted_streamed_run_resumes_without_loss_or_repeats(tmp_path):
    source, out = _write(tmp_path / "in.jsonl", 60), tmp_path / "out.jsonl"
    calls: list[str] = []

    async def step(item_id: str, record: dict) -> dict:
        calls.append(item_id)
        await asyncio.sleep(0.001)
        return await _grade_step(item_id, record)

    task = asyncio.ensure_future(run_jsonl(read_items(source), out, step, concurrency=4))
    while _lines(out) < 20:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with out.open("a") as handle:
        handle.write('{"id": "p59", "proble')  # a kill during a write leaves a partial line
    finished = [json.loads(x)["id"] for x in out.read_text().splitlines()[:-1]]
    calls.clear()
    stats = await run_jsonl(read_items(source), out, step, concurrency=4)
    assert stats.skipped == len(finished) and sorted(calls) == sorted({f"p{i}" for i in range(60)} - set(finished))
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert len(ids) == 60 and set(ids) == {f"p{i}" for i in range(60)}  # one record per id, none lost


def _lines(path: Path) -> int:
    return sum(1 for raw in path.read_bytes().splitlines(keepends=True) if raw.endswith(b"\n")) if path.exists() else 0


def test_the_cli_killed_mid_batch_resumes_without_loss_or_repeats(tmp_path):
    """``grade`` in a subprocess, SIGKILLed mid-batch, then run again (no cache, so a repeated
    call would reach the server): every proof graded once, one record per id."""
    count = 40
    source, out = _write(tmp_path / "in.jsonl", count), tmp_path / "out.jsonl"
    with ScriptedOpenAIServer(delay=0.1) as server:
        args = _grade_args(source, out, server.url, "--concurrency", "4")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _lines(out) < 10 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        finished = _lines(out)
        sent = len(server.recorder.arrived)
        assert 10 <= finished < count, child.stderr.read().decode()
        again = _run(args, env)
        assert again.returncode == 0, again.stderr
        assert f"{finished} already done" in again.stderr
        # the rerun sent one request per proof not finished before the kill, none for the others
        assert len(server.recorder.arrived) - sent == count - finished
        assert len(set(server.recorder.arrived)) == count
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"p{i}" for i in range(count))
    assert not [r for r in records if "error" in r]


def test_cli_scale_smoke(tmp_path):
    """perf/cli_scale.py with tiny sizes: every figure printed, next to its target."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "perf" / "cli_scale.py"),
            "--levels",
            "4",
            "--waves",
            "2",
            "--memory-sizes",
            "10,20",
            "--memory-concurrency",
            "8",
            "--latency",
            "0.05",
            "--help-runs",
            "1",
            "--keep",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for figure in (
        "start-up: `proofcritic --help`",
        "client CPU per request at 4 in flight",
        "peak memory at     20 proofs",
        "peak memory 20 / 10 proofs",
        "target",
    ):
        assert figure in done.stdout, done.stdout
    assert len((tmp_path / "work" / "m20.out.jsonl").read_text().splitlines()) == 20


def _grade_args(source: Path, out: Path, url: str, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "proofcritic",
        "grade",
        "--input",
        str(source),
        "--output",
        str(out),
        "--model",
        f"openai/{MODEL_NAME}",
        "--base-url",
        url,
        "--api-key",
        "x",
        "--no-cache",
        *more,
    ]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def _records(path: Path) -> dict[str, dict]:
    records = [json.loads(x) for x in path.read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records), "one record per id"
    return by_id


def _verdicts(records: dict[str, dict]) -> dict[str, list]:
    return {i: [(v["score"], v["analysis"]) for v in r["verifications"]] for i, r in records.items()}


def test_workers_grade_the_shards_of_a_batch_as_one_process_does(tmp_path):
    """``grade --workers 3``: every proof graded once, by one request, with the records (ids
    made unique over the whole input, a bad line an input error) and verdicts of a
    one-process run; no part file is left."""
    count = 25
    extra = "not json\n" + json.dumps({"id": "p3", "problem": "Prove again.", "proof": "3. " + PROOF}) + "\n"
    source = _write(tmp_path / "in.jsonl", count, extra=extra)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with ScriptedOpenAIServer() as server:
        one = _run(_grade_args(source, tmp_path / "one.jsonl", server.url, "--concurrency", "6"), env)
        sent = len(server.recorder.arrived)
        many = _run(
            _grade_args(source, tmp_path / "many.jsonl", server.url, "--concurrency", "6", "--workers", "3"), env
        )
        assert len(server.recorder.arrived) - sent == sent == count + 1  # the bad line asks nothing
    assert one.returncode == many.returncode == 1, many.stderr  # the bad line's input error
    assert "3 worker processes, 6 requests in flight in all" in many.stderr
    assert f"graded {count + 2} item(s), 0 already done, 1 error record(s)" in many.stderr
    first, second = _records(tmp_path / "one.jsonl"), _records(tmp_path / "many.jsonl")
    assert set(first) == set(second) == {f"p{i}" for i in range(count)} | {"line-26", "p3#line-27"}
    assert second["line-26"]["error_kind"] == "input"
    assert _verdicts({k: v for k, v in first.items() if "error" not in v}) == _verdicts(
        {k: v for k, v in second.items() if "error" not in v}
    )
    assert not list(tmp_path.glob("many.jsonl.part-*"))


@pytest.mark.parametrize("again_with", [["--workers", "2"], []])
def test_workers_killed_mid_batch_resume_without_loss_or_repeats(tmp_path, again_with):
    """``grade --workers 2`` SIGKILLed mid-batch (the parent: its workers stop too), then run
    again, with workers or in one process: the parts left are merged first and only the missing
    proofs are asked for."""
    count = 40
    source, out = _write(tmp_path / "in.jsonl", count), tmp_path / "out.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with ScriptedOpenAIServer(delay=0.1) as server:
        args = _grade_args(source, out, server.url, "--concurrency", "4", "--workers", "2")
        child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        parts = [tmp_path / "out.jsonl.part-0", tmp_path / "out.jsonl.part-1"]
        deadline = time.monotonic() + 60
        while sum(_lines(p) for p in parts) < 10 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        time.sleep(1.5)  # the workers see their parent gone within half a second and stop
        finished = sum(_lines(p) for p in parts)
        sent = len(server.recorder.arrived)
        assert 10 <= finished < count and _lines(out) == 0
        time.sleep(0.5)
        assert sum(_lines(p) for p in parts) == finished, "a worker wrote on after its parent was killed"
        again_args = _grade_args(source, out, server.url, "--concurrency", "4", *again_with)
        again = _run(again_args, env)
        assert again.returncode == 0, again.stderr
        assert f"{finished} already done" in again.stderr
        assert len(server.recorder.arrived) - sent == count - finished  # in flight at the kill: asked again
        assert len(set(server.recorder.arrived)) == count
    assert set(_records(out)) == {f"p{i}" for i in range(count)}
    assert not list(tmp_path.glob("out.jsonl.part-*"))


def test_workers_are_refused_where_they_cannot_run(tmp_path):
    source = _write(tmp_path / "in.jsonl", 2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "proofcritic",
            "grade",
            "--problem",
            str(source),
            "--proof",
            str(source),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert single.returncode == 2 and "worker processes grade a batch" in single.stderr


def _failing_part(spec, shard, shards, part, concurrency):
    """A worker target (module level, so a spawned worker imports it): shard 1 fails after
    writing one record; the others write theirs."""
    from proofcritic.cli._workers import WorkerResult
    from proofcritic.io import JsonlAppender
    from proofcritic.llm import Usage
    from proofcritic.runner import RunStats, ShardItems

    items = list(ShardItems(spec, shard, shards))
    with JsonlAppender(part) as out:
        for item_id, line, _ in items:
            out.write({"id": item_id, "line": line, "verifications": []})
            if shard == 1:
                raise ValueError("shard one broke")
    return WorkerResult(RunStats(total=len(items), done=len(items)), Usage())


def test_a_failed_worker_is_reported_and_what_the_workers_wrote_is_kept(tmp_path):
    from rich.console import Console

    from proofcritic.cli._workers import WorkerFailed, run_workers

    source, out = _write(tmp_path / "in.jsonl", 9), tmp_path / "out.jsonl"
    with pytest.raises(WorkerFailed, match="worker 1 of 3 failed: ValueError: shard one broke"):
        run_workers(
            _failing_part,
            source,
            input_path=source,
            output=out,
            workers=3,
            concurrency=3,
            label="test",
            console=Console(stderr=True),
        )
    kept = sorted(json.loads(x)["id"] for x in out.read_text().splitlines())
    assert kept == ["p0", "p1", "p2", "p3", "p5", "p6", "p8"]  # shards 0 and 2 whole, shard 1's first
    assert not list(tmp_path.glob("out.jsonl.part-*"))


def test_a_model_record_is_the_dict_record_and_a_lone_surrogate_is_escaped(tmp_path):
    """JsonlAppender.write_model (grade's records): the same JSON as the dict written by
    ``write``; a text that cannot be UTF-8 is escaped, not a crash."""
    from proofcritic.io import JsonlAppender
    from proofcritic.llm import ChatMessage

    good, bad = ChatMessage(role="user", content="∀ n, é"), ChatMessage(role="user", content="x")
    object.__setattr__(bad, "content", "a\ud800b")  # as a server's "\ud800" escape decodes
    with JsonlAppender(tmp_path / "m.jsonl") as out:
        out.write_model({"id": "a", "line": 1}, good, {"seconds": 0.5})
        out.write({"id": "a", "line": 1, **good.model_dump(mode="json"), "seconds": 0.5})
        out.write_model({"id": "b"}, bad, {})
    first, second, third = (json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines())
    assert first == second and list(first) == ["id", "line", *good.model_dump(), "seconds"]
    assert third["content"] == "a\ud800b"


async def test_the_verdict_line_kept_during_a_run_is_the_one_read_from_the_output(tmp_path):
    """grade_jsonl counts the verdicts as it goes, so the closing line needs no second pass over
    the output; it is the line read from the file (scored, unscored and without a verdict mixed),
    and a resumed run (items skipped) reads the file."""
    from scripted import ScriptedBackend, verification_text

    from proofcritic.grading import batch_verdicts, grade_jsonl
    from proofcritic.llm import Model
    from proofcritic.verifier import Verifier

    def script(call):
        case = int(call.prompt.split("Prove case ")[1].split(".")[0])
        return "no verdict here" if (case + call.index) % 3 == 0 else verification_text(0.5 * (case % 3))

    source, out = _write(tmp_path / "in.jsonl", 12, extra="not json\n"), tmp_path / "out.jsonl"
    verifier = Verifier(Model(ScriptedBackend(script)))
    stats = await grade_jsonl(verifier, source, out, n=2, concurrency=4)
    kept = batch_verdicts(out, stats=stats)
    assert kept == batch_verdicts(out) and stats.extra["verdict_counts"][0] == 12
    assert "without a verdict" in kept and "unscored: 8 of 24 verifications" in kept
    again = await grade_jsonl(verifier, source, out, n=2, concurrency=4)
    assert again.skipped == 13 and batch_verdicts(out, stats=again) == kept


def test_label_workers_label_as_one_process_does_with_the_review_file_in_step(tmp_path):
    """``label --workers 3``: the same statuses and labels as one process, the review file
    holding exactly the proofs in review (flawed proofs run out of their per-proof budget after
    the verification, so they go to review; clean ones are labeled), and no part left."""
    from servers.scripted_openai_server import proof_text

    source = tmp_path / "in.jsonl"
    with source.open("w") as out:
        for i in range(12):
            proof = proof_text(1 if i % 2 else 2, 2)  # odd: flawed, even: clean
            out.write(json.dumps({"id": f"p{i}", "problem": f"Prove case {i}.", "proof": proof}) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = {}
    with ScriptedOpenAIServer() as server:
        for name, more in (("one", []), ("many", ["--workers", "3"])):
            args = [sys.executable, "-m", "proofcritic", "label", "--input", str(source)]
            args += ["--output", str(tmp_path / f"{name}.jsonl"), "--review", str(tmp_path / f"{name}.review.jsonl")]
            args += ["--model", f"openai/{MODEL_NAME}", "--base-url", server.url, "--api-key", "x", "--no-cache"]
            args += ["--n", "2", "--m", "1", "--k", "1", "--max-calls", "1", "--concurrency", "6", *more]
            done = _run(args, env)
            assert done.returncode == 0, done.stderr
            runs[name] = done.stderr
    assert "3 worker processes" in runs["many"] and "6 labeled, 6 to review" in runs["many"]
    one, many = _records(tmp_path / "one.jsonl"), _records(tmp_path / "many.jsonl")
    assert {k: (r["status"], r.get("label")) for k, r in one.items()} == {
        k: (r["status"], r.get("label")) for k, r in many.items()
    }
    assert {k for k, r in many.items() if r["status"] == "review"} == {f"p{i}" for i in range(1, 12, 2)}
    assert set(_records(tmp_path / "many.review.jsonl")) == set(_records(tmp_path / "one.review.jsonl"))
    assert set(_records(tmp_path / "many.review.jsonl")) == {f"p{i}" for i in range(1, 12, 2)}
    assert not list(tmp_path.glob("*.part-*"))


def test_overwrite_removes_the_parts_a_killed_workers_run_left(tmp_path):
    """Parts left beside an output are earlier results: --overwrite removes them with it, so
    none of their records reaches the fresh output."""
    from proofcritic.runner import part_path, prepare_output

    out = tmp_path / "out.jsonl"  # only its part exists: the run was killed before any merge
    part_path(out, 0).write_text(json.dumps({"id": "stale"}) + "\n")
    assert "has no settings file" in prepare_output(out, {"n": 1})
    with pytest.raises(Exception, match="was made with"):
        prepare_output(out, {"n": 2})  # the parts count as results made with other settings
    prepare_output(out, {"n": 2}, overwrite=True)
    assert not out.exists() and not part_path(out, 0).exists()
