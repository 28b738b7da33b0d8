"""``--batch-api`` on grade, label and eval grade (issue #21, point 2), against a real local
server with the files and batches endpoints (``tests/servers/batch_server.py``) whose chat
answers follow the scripted protocol: a proof holding "(unjustified step)" gets score 0 with one
issue, any other 1; a meta-verification confirms the analysis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.batch_server import BatchServer
from servers.scripted_openai_server import FLAW, MODEL_NAME
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.errors import InputError

STATEMENT = "Prove that n^3 - n is divisible by 6 for every integer n."
CLEAN = "Write n^3 - n = (n - 1) n (n + 1): three consecutive integers, so 2 and 3 divide it."
FLAWED = f"Write n^3 - n = (n - 1) n (n + 1). The product is divisible by 6 {FLAW}."
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server() -> Iterator[BatchServer]:
    with BatchServer() as running:
        yield running


def _proofs(path: Path, proofs: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": STATEMENT, "proof": p}) + "\n" for i, p in proofs.items()))
    return path


def _model(server: BatchServer, cache: Path) -> list[str]:
    return ["--model", f"openai/{MODEL_NAME}", "--base-url", server.url, "--api-key", "k", "--cache", str(cache)]


def _cli(*args, status: int | None = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if status is not None:
        assert result.exit_code == status, result.output + result.stderr
    return result


def _records(path: Path) -> list[dict]:
    """The records without what differs between any two runs (time) or between a run that asked
    the model and one answered from the cache (usage)."""
    drop = {"seconds", "usage"}

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(json.loads(line)) for line in path.read_text().splitlines()]


def _chat_bodies(server: BatchServer) -> int:
    return len(server.requests)


def test_grade_batch_gives_the_online_records(server, tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {"a": CLEAN, "b": FLAWED, "c": CLEAN + " Indeed."})
    online = tmp_path / "online.jsonl"
    _cli("grade", "--input", data, "--output", online, "-n", "2", *_model(server, tmp_path / "c1.sqlite"))
    assert len(server.requests) == 3 and not server.batches
    batched = tmp_path / "batched.jsonl"
    result = _cli(
        "grade",
        "--input",
        data,
        "--output",
        batched,
        "-n",
        "2",
        "--batch-api",
        "--batch-interval",
        "0.01",
        *_model(server, tmp_path / "c2.sqlite"),
    )
    assert _records(batched) == _records(online)
    assert len(server.batches) == 1 and server.batches[0]["request_counts"]["total"] == 3
    assert server.polls == 2  # in progress once, then done
    # every chat request of the batch run went through the batch (the server's own 3 calls)
    assert len(server.requests) == 6
    assert all(r["n"] == 2 for r in server.requests[3:])
    assert "submitted 3 request(s) as batch batch_" in result.stderr
    assert "batch API: 1 stage(s), 3 request(s) in 1 batch(es), 3 answered, 0 failed" in result.stderr
    assert "model calls: 0 new, 3 from cache" in result.stderr
    state = json.loads((tmp_path / "batched.jsonl.batch" / "state.json").read_text())
    assert [s["status"] for s in state["stages"]] == ["imported"]
    assert not (tmp_path / "batched.jsonl.batch" / "pass.jsonl").exists()
    # a rerun with the batch API has nothing to submit
    again = _cli(
        "grade", "--input", data, "--output", batched, "-n", "2", "--batch-api", *_model(server, tmp_path / "c2.sqlite")
    )
    assert len(server.batches) == 1 and "0 item(s), 3 already done" in again.stderr.replace("graded ", "")


def test_label_submits_one_batch_per_stage(server, tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {"clean": CLEAN, "flawed": FLAWED})
    common = ["-n", "2", "--m", "2", "--k", "1"]
    online, review = tmp_path / "online.jsonl", tmp_path / "online-review.jsonl"
    _cli(
        "label",
        "--input",
        data,
        "--output",
        online,
        "--review",
        review,
        *common,
        *_model(server, tmp_path / "c1.sqlite"),
    )
    out, out_review = tmp_path / "labels.jsonl", tmp_path / "review.jsonl"
    result = _cli(
        "label",
        "--input",
        data,
        "--output",
        out,
        "--review",
        out_review,
        *common,
        "--batch-api",
        "--batch-interval",
        "0.01",
        *_model(server, tmp_path / "c2.sqlite"),
    )
    assert _records(out) == _records(online)
    assert [r["status"] for r in _records(out)] == ["labeled", "labeled"]
    # stage 1: one verification request per proof (n=2 in one request); stage 2: the
    # meta-verifications of the flawed proof's two analyses (the same request: asked once)
    assert [b["request_counts"]["total"] for b in server.batches] == [2, 1]
    stage_two = server.batches[1]["lines"][0]["body"]["messages"][-1]["content"]
    assert "You are reviewing the work of a grader" in stage_two
    assert "batch API: 2 stage(s), 3 request(s) in 2 batch(es), 3 answered, 0 failed" in result.stderr


def _grade_args(data: Path, output: Path, server: BatchServer, cache: Path) -> list[str]:
    return [
        "grade",
        "--input",
        str(data),
        "--output",
        str(output),
        "--batch-api",
        "--batch-interval",
        "0.05",
        *_model(server, cache),
    ]


def test_a_large_stage_goes_out_as_several_batches(server, tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {f"p{i}": CLEAN + " " * i for i in range(5)})
    output = tmp_path / "out.jsonl"
    result = _cli(*_grade_args(data, output, server, tmp_path / "c.sqlite"), "--batch-max-requests", "2")
    assert [b["request_counts"]["total"] for b in server.batches] == [2, 2, 1]
    assert "batch stage 1 (part 3/3): submitted 1 request(s)" in result.stderr
    assert "batch API: 1 stage(s), 5 request(s) in 3 batch(es), 5 answered, 0 failed" in result.stderr
    assert [r["aggregate"]["mean"] for r in _records(output)] == [1.0] * 5


def test_a_stopped_run_polls_its_batch_again(tmp_path):
    """Killed while its batch is in progress, the rerun polls the same batch: one submission."""
    data = _proofs(tmp_path / "in.jsonl", {"a": CLEAN, "b": FLAWED})
    output, cache = tmp_path / "out.jsonl", tmp_path / "c.sqlite"
    with BatchServer(polls_before_done=10**6) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "proofcritic", *_grade_args(data, output, server, cache)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while server.polls < 2 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert server.polls >= 2, proc.stderr.read() if proc.poll() is not None else "no polls"
        finally:
            proc.kill()
            proc.wait()
        state = json.loads((tmp_path / "out.jsonl.batch" / "state.json").read_text())
        assert [s["status"] for s in state["stages"]] == ["submitted"]
        assert not output.exists() or not output.read_text().strip()
        server.polls_before_done = 0
        result = _cli(*_grade_args(data, output, server, cache))
        assert len(server.batches) == 1  # polled again, not submitted again
        assert f"polling batch {server.batches[0]['id']} submitted earlier" in result.stderr
        assert [r["id"] for r in _records(output)] == ["a", "b"]
        assert [r["aggregate"]["mean"] for r in _records(output)] == [1.0, 0.0]


def test_label_stopped_in_its_second_stage_polls_that_batch_again(tmp_path):
    """Stage 1 answered, the run killed while stage 2's batch is in progress: the rerun polls it;
    one batch per stage in all."""
    data = _proofs(tmp_path / "in.jsonl", {"clean": CLEAN, "flawed": FLAWED})
    out, review = tmp_path / "labels.jsonl", tmp_path / "review.jsonl"
    with BatchServer(polls_before_done=0, hold_from=2) as server:
        args = [
            "label", "--input", data, "--output", out, "--review", review, "-n", "2", "--m", "2", "--k", "1",
            "--batch-api", "--batch-interval", "0.05", *_model(server, tmp_path / "c.sqlite"),
        ]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "proofcritic", *map(str, args)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if len(server.batches) == 2 and server.batches[1]["polled"] >= 2:
                    break
                time.sleep(0.05)
            assert len(server.batches) == 2, proc.stderr.read() if proc.poll() is not None else "no second batch"
        finally:
            proc.kill()
            proc.wait()
        state = json.loads((tmp_path / "labels.jsonl.batch" / "state.json").read_text())
        assert [s["status"] for s in state["stages"]] == ["imported", "submitted"]
        server.hold_from = None
        result = _cli(*args)
        assert [b["request_counts"]["total"] for b in server.batches] == [2, 1]
        assert f"polling batch {server.batches[1]['id']} submitted earlier" in result.stderr
    assert [r["status"] for r in _records(out)] == ["labeled", "labeled"]


def test_expired_batch_and_a_failed_request_are_resubmitted(tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {f"p{i}": CLEAN + " " * i for i in range(4)})
    output = tmp_path / "out.jsonl"
    with BatchServer(expire_batches=1, fail_first=1) as server:
        result = _cli(*_grade_args(data, output, server, tmp_path / "c.sqlite"))
        # batch 1 expired: 2 of 4 answered (1 of them a server error); batch 2: the other 3
        assert [b["request_counts"]["total"] for b in server.batches] == [4, 3]
        assert [b["status"] for b in server.batches] == ["expired", "completed"]
    assert "expired" in result.stderr and "scripted server error" in result.stderr
    assert "the failed ones are resubmitted" in result.stderr
    assert [r["aggregate"]["mean"] for r in _records(output)] == [1.0] * 4


def test_failed_requests_asked_online(tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {"a": CLEAN, "b": FLAWED})
    output = tmp_path / "out.jsonl"
    with BatchServer(fail_first=1) as server:
        result = _cli(*_grade_args(data, output, server, tmp_path / "c.sqlite"), "--batch-retry", "online")
        assert len(server.batches) == 1
        # one chat request made for the batch (the other answered with an error), one online
        assert len(server.requests) == 2
    assert "the failed ones are asked online in the next pass" in result.stderr
    assert "1 request(s) asked online" in result.stderr
    assert "model calls: 1 new, 2 from cache" in result.stderr  # the online one, then the usual run from the cache
    assert [r["aggregate"]["mean"] for r in _records(output)] == [1.0, 0.0]


def test_batches_that_keep_failing_fail_their_items(tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {"a": CLEAN})
    output = tmp_path / "out.jsonl"
    with BatchServer(fail_batches=99) as server:
        result = _cli(*_grade_args(data, output, server, tmp_path / "c.sqlite"), status=1)
        assert len(server.batches) == 3  # each request up to 3 batches
        assert "scripted validation failure" in result.stderr
        (record,) = _records(output)
        assert record["error_kind"] == "backend" and "failed in the batch API" in record["error"]
        assert "scripted validation failure" in record["error"]
        server.fail_batches = 0  # a rerun gives the request a new batch
        _cli(*_grade_args(data, output, server, tmp_path / "c.sqlite"))
        assert len(server.batches) == 4
    assert [r["aggregate"]["mean"] for r in _records(output)] == [1.0]


def test_a_server_without_the_batch_api_is_one_line(tmp_path):
    from servers.scripted_openai_server import ScriptedOpenAIServer

    from proofcritic.errors import BackendError

    data = _proofs(tmp_path / "in.jsonl", {"a": CLEAN})
    with ScriptedOpenAIServer() as plain:
        result = _cli(
            "grade", "--input", data, "--output", tmp_path / "out.jsonl", "--batch-api",
            *_model(plain, tmp_path / "c.sqlite"), status=1,
        )  # fmt: skip
    assert isinstance(result.exception, BackendError)  # the entry point: one line, exit status 2
    assert "uploading the batch file failed" in str(result.exception)
    assert "does this server offer the batch API?" in str(result.exception)


def test_offline_path_writes_requests_and_imports_results(server, tmp_path):
    """--batch-write-only writes the request file; its answers (here from the server's chat
    endpoint, line by line, as vLLM's run_batch writes them) come back with --batch-results."""
    import httpx

    data = _proofs(tmp_path / "in.jsonl", {"clean": CLEAN, "flawed": FLAWED})
    out, review = tmp_path / "labels.jsonl", tmp_path / "review.jsonl"
    args = ["label", "--input", data, "--output", out, "--review", review, "-n", "2", "--m", "1", "--k", "1"]
    model = _model(server, tmp_path / "c.sqlite")
    folder = tmp_path / "labels.jsonl.batch"

    def answer(stage: int) -> Path:
        lines = [json.loads(x) for x in (folder / f"stage-{stage}.requests.jsonl").read_text().splitlines()]
        assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
        rows = []
        for x in lines:
            response = httpx.post(f"{server.url}/chat/completions", json=x["body"])
            rows.append(
                {
                    "id": "r",
                    "custom_id": x["custom_id"],
                    "response": {"status_code": 200, "request_id": "q", "body": response.json()},
                    "error": None,
                }
            )
        path = tmp_path / f"out-{stage}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    first = _cli(*args, *model, "--batch-write-only")
    assert "2 request(s) written to" in first.stderr and "--batch-results" in first.stderr
    assert not out.exists() or not out.read_text().strip()
    second = _cli(*args, *model, "--batch-results", answer(1))
    assert "imported 2 answer(s)" in second.stderr and "batch stage 2: 1 request(s) written" in second.stderr
    third = _cli(*args, *model, "--batch-results", answer(2))
    assert "1 labeled" not in third.stderr and "2 labeled, 0 to review" in third.stderr
    assert not server.batches
    assert [r["status"] for r in _records(out)] == ["labeled", "labeled"]


def test_eval_grade_batch(server, tmp_path):
    data = tmp_path / "graded.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "problem": STATEMENT, "proof": p, "grade": g}) + "\n"
            for i, p, g in (("a", CLEAN, 7), ("b", FLAWED, 0))
        )
    )
    online_run, batch_run = tmp_path / "online", tmp_path / "batched"
    _cli("eval", "grade", "--file", data, "--run", online_run, *_model(server, tmp_path / "c1.sqlite"))
    result = _cli(
        "eval",
        "grade",
        "--file",
        data,
        "--run",
        batch_run,
        "--batch-api",
        "--batch-interval",
        "0.01",
        *_model(server, tmp_path / "c2.sqlite"),
    )
    assert len(server.batches) == 1 and "batch API: 1 stage(s)" in result.stderr
    assert _records(batch_run / "items.jsonl") == _records(online_run / "items.jsonl")
    assert not (batch_run / "batch" / "pass").exists()


def test_bad_input_is_one_clear_line(server, tmp_path):
    data = _proofs(tmp_path / "in.jsonl", {"a": CLEAN})
    out = tmp_path / "out.jsonl"
    # an InputError is one line and exit status 2 in the entry point (proofcritic.cli.main)
    local = _cli("grade", "--input", data, "--output", out, "--batch-api", "--model", "transformers/smollm2", status=1)
    assert isinstance(local.exception, InputError) and "needs an OpenAI-compatible model" in str(local.exception)
    uncached = _cli(
        "grade",
        "--input",
        data,
        "--output",
        out,
        "--batch-api",
        *_model(server, tmp_path / "c"),
        "--no-cache",
        status=1,
    )
    assert isinstance(uncached.exception, InputError) and "drop --no-cache" in str(uncached.exception)
    single = _cli("grade", "--problem", data, "--proof", data, "--batch-api", *_model(server, tmp_path / "c"), status=2)
    assert "a batch API grades a batch" in single.stderr
    missing = _cli(
        "grade",
        "--input",
        data,
        "--output",
        out,
        "--batch-results",
        tmp_path / "nope.jsonl",
        *_model(server, tmp_path / "c"),
        status=2,
    )
    assert "file not found" in missing.stderr
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"custom_id": "pc-unknown", "response": None, "error": None}) + "\n")
    unknown = _cli(
        "grade", "--input", data, "--output", out, "--batch-results", stray, *_model(server, tmp_path / "c"), status=1
    )
    assert "custom_id 'pc-unknown' is in none of this run's request files" in str(unknown.exception)
    assert isinstance(unknown.exception, InputError)
    assert not server.batches
