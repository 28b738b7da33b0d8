"""``proofcritic solve``: the strategy registry, problem files, batch solving with budgets
(scripted model), every strategy end to end on SmolLM2, and a SIGKILL-and-resume run of the
search in a subprocess on the tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scripted import ScriptedBackend, generation_text, verification_text
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.cli._solve import solve_command
from proofcritic.errors import InputError
from proofcritic.llm import Model
from proofcritic.pipelines import Roles
from proofcritic.pipelines.search import SearchStrategy
from proofcritic.pipelines.single import SingleStrategy
from proofcritic.pipelines.solve import (
    STRATEGIES,
    get_strategy,
    read_problem_items,
    solve_jsonl,
    state_name,
)

if "solve" not in [c.name for c in app.registered_commands]:
    app.command("solve")(solve_command)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_INPUTS = ROOT.parent / "shared" / "data" / "dsmv2" / "inputs"
SHORT = ["--max-tokens", "16", "--temperature", "0.8", "--seed", "1", "--score-mode", "text"]


def _calls(stderr: str) -> tuple[int, int]:
    match = re.search(r"model calls: (\d+) new, (\d+) from cache", stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_problems(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": f"Prove statement number {i}."}) + "\n" for i in ids))
    return path


def scripted_roles() -> tuple[ScriptedBackend, Roles]:
    def script(call):
        if call.role == "verify":
            return verification_text(0.5)
        return generation_text(f"PROOF[{len(backend.calls)}]", 0.5)

    backend = ScriptedBackend(script)
    return backend, Roles.from_models(Model(backend))


# -- the registry and problem files ---------------------------------------------------------------
def test_registry_builds_every_strategy_by_name():
    assert set(STRATEGIES) == {"single", "refine", "search", "agent", "critic", "tora"}
    for name in STRATEGIES:
        assert get_strategy(name).name == name
    assert get_strategy("search", rounds=3, top_k=4).config.rounds == 3
    with pytest.raises(InputError, match="unknown strategy 'best'"):
        get_strategy("best")
    with pytest.raises(InputError, match="strategy 'single' has no parameter 'rounds'"):
        get_strategy("single", rounds=3)
    with pytest.raises(InputError, match="strategy 'search': initial_samples"):
        get_strategy("search", initial_samples=0)


def test_problem_files_jsonl_json_list_and_markdown(tmp_path):
    items = read_problem_items(_write_problems(tmp_path / "p.jsonl", ["a", "b"]))
    assert [i[0] for i in items] == ["a", "b"]
    (tmp_path / "list.json").write_text(
        json.dumps([{"id": "1", "question": "Q one", "problem_idx": "X-1"}, {"id": "1", "question": "Q two"}, 7])
    )
    items = read_problem_items(tmp_path / "list.json")
    assert [i[0] for i in items] == ["X-1", "1", "item-3"]
    assert items[0][2]["problem_id"] == "X-1" and isinstance(items[2][2], InputError)
    ((kind, _, record),) = read_problem_items(EXAMPLES / "problem.md")
    assert kind == "problem" and "divisible" in record["statement"]
    assert state_name("cubes-1") == "cubes-1" and state_name("imo/2025 #1").startswith("imo_2025_1-")


@pytest.mark.skipif(not (SHARED_INPUTS / "IMO2025.json").exists(), reason="shared data not present")
def test_the_shared_data_format_reads_as_problems():
    items = read_problem_items(SHARED_INPUTS / "IMO2025.json")
    assert [i[0] for i in items] == [f"IMO2025-{k}" for k in range(1, 7)]
    from proofcritic.io import problem_from_record

    problem = problem_from_record(items[0][2])
    assert problem.id == "IMO2025-1" and len(problem.statement) > 50


# -- batch solving with budgets (scripted model) ------------------------------------------------
async def test_run_budget_finishes_started_problems_and_leaves_the_rest(tmp_path):
    source, out = _write_problems(tmp_path / "in.jsonl", ["a", "b", "c"]), tmp_path / "out.jsonl"
    backend, roles = scripted_roles()
    stats = await solve_jsonl(SingleStrategy(verify_n=1), roles, source, out, concurrency=2, run_max_calls=3)
    records = _records(out)
    # a: generation + verification; b: its generation spends the run budget, so it ends limited;
    # c never made a call: it is left for a rerun, not written
    assert [r["id"] for r in records] == ["a", "b"] and len(backend.calls) == 3
    assert not records[0]["budget_limited"] and records[0]["mean_score"] == 0.5
    assert records[1]["budget_limited"] and records[1]["stop_reason"] == "budget: run budget of 3 calls is spent"
    assert records[1]["proof"] is not None and records[1]["verifications"] == []
    assert stats.extra["left"] == 1 and stats.budget_limited == 1 and stats.done == 2

    stats = await solve_jsonl(SingleStrategy(verify_n=1), roles, source, out, concurrency=2, run_max_calls=3)
    assert [r["id"] for r in _records(out)] == ["a", "b", "c"] and stats.skipped == 2 and stats.extra["left"] == 0


async def test_problem_budget_and_state_dirs(tmp_path):
    source, out = _write_problems(tmp_path / "in.jsonl", ["a/1", "b"]), tmp_path / "out.jsonl"
    _, roles = scripted_roles()
    seen = []
    strategy = SearchStrategy(initial_samples=2, verifications=2, top_k=1, trials=1, samples_per_trial=1, rounds=3)
    stats = await solve_jsonl(
        strategy, roles, source, out, max_calls=4, on_progress=lambda s: seen.append(s.extra.get("rounds"))
    )
    records = {r["id"]: r for r in _records(out)}
    assert set(records) == {"a/1", "b"} and all(r["budget_limited"] for r in records.values())
    assert all(r["stop_reason"].startswith("budget: problem budget of 4 calls is spent") for r in records.values())
    assert stats.budget_limited == 2 and max(x for x in seen if x is not None) == 4  # rounds 1 and 2 of each
    pools = sorted(p.parent.name for p in (tmp_path / "out.jsonl.state").glob("*/pool.jsonl"))
    assert pools == [state_name("a/1"), "b"] and strategy.on_round is None


# -- every strategy end to end on SmolLM2 ---------------------------------------------------------
@pytest.fixture
def solve(smollm2_dir):
    """Run ``proofcritic solve`` in this process, so SmolLM2 stays loaded across tests."""

    def invoke(*args: str, status: int = 0):
        result = CliRunner().invoke(app, ["solve", *args], catch_exceptions=False)
        assert result.exit_code == status, result.output + result.stderr
        return result

    return invoke


@pytest.mark.smollm2
def test_single_on_smollm2(solve, tmp_path):
    result = solve(
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--strategy",
        "single",
        "--keep-invalid",
        "--json",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
    )
    data = json.loads(result.stdout)
    assert data["strategy"] == "single" and data["proof"] and data["generation"]["format_ok"] is False
    assert len(data["verifications"]) == 1 and data["verifications"][0]["format_ok"] is False
    assert [s["step"] for s in data["transcript"]] == ["generate", "verify"]
    assert _calls(result.stderr) == (2, 0)


@pytest.mark.smollm2
def test_refine_on_smollm2_treats_format_failures_as_such(solve, tmp_path):
    result = solve(
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--strategy",
        "refine",
        "--max-iters",
        "2",
        "--verify-n",
        "0",
        "--json",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
        status=1,
    )
    data = json.loads(result.stdout)
    assert data["rounds"] == 2 and [s["step"] for s in data["transcript"]] == ["generate", "refine"]
    assert data["proof"] is None and data["stop_reason"] == "max iterations (2) reached; no valid generation to answer"
    # one problem without a valid proof: the reason on stderr, exit status 1
    assert result.stderr.strip().splitlines()[-1] == (
        "no valid proof: max iterations (2) reached; no valid generation to answer; "
        "--keep-invalid lets a format failure's text count"
    )
    assert _calls(result.stderr) == (2, 0)


@pytest.mark.smollm2
def test_search_batch_on_smollm2_resumes(solve, tmp_path):
    source = tmp_path / "problems.json"  # the shared data's JSON list format
    source.write_text(
        json.dumps(
            [
                {"id": "1", "question": "Prove that 2 + 2 = 4.", "answer": "null", "problem_idx": "T-1"},
                {"id": "2", "question": "Prove that 3 is odd.", "answer": "null", "problem_idx": "T-2"},
            ]
        )
    )
    out = tmp_path / "out.jsonl"
    args = [
        "--input",
        str(source),
        "--output",
        str(out),
        "--strategy",
        "search",
        "--initial-samples",
        "1",
        "--verifications",
        "1",
        "--rounds",
        "2",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
    ]
    first = solve(*args)
    records = {r["id"]: r for r in _records(out)}
    assert set(records) == {"T-1", "T-2"}
    for r in records.values():  # 16 tokens cannot hold the protocol: nothing to verify or refine
        assert r["proof"] is None and r["stop_reason"] == "no verified proof to refine after round 1; no valid proof"
    assert (tmp_path / "out.jsonl.state" / "T-1" / "pool.jsonl").exists()
    assert _calls(first.stderr) == (2, 0)
    second = solve(*args)
    assert "0 problem(s), 2 already done" in second.stderr.replace("\n", " ") and _calls(second.stderr) == (0, 0)


@pytest.mark.smollm2
def test_agent_on_smollm2(solve, tmp_path):
    result = solve(
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--strategy",
        "agent",
        "--set",
        "max_runs=1",
        "--set",
        "max_iterations=1",
        "--set",
        "passes_to_accept=1",
        "--set",
        "self_improve=false",
        "--json",
        "--cache",
        str(tmp_path / "c.sqlite"),
        *SHORT,
        status=1,
    )
    data = json.loads(result.stdout)
    assert data["strategy"] == "agent" and data["stop_reason"].startswith("not accepted") and data["proof"] is None
    assert result.stderr.strip().splitlines()[-1].startswith("no valid proof: not accepted")


def test_usage_errors():
    runner = CliRunner()
    result = runner.invoke(app, ["solve", "--input", "x.jsonl"])
    assert result.exit_code == 2 and "--output" in result.output
    result = runner.invoke(app, ["solve", "--problem", str(EXAMPLES / "problem.md"), "--rounds", "3"])
    assert result.exit_code == 2 and "has no option --rounds" in result.output


# -- SIGKILL in the middle of a search, then the same command again ------------------------------
_LAUNCH = (
    "from proofcritic.cli import app, main\n"
    "from proofcritic.cli._solve import solve_command\n"
    "if 'solve' not in [c.name for c in app.registered_commands]: app.command('solve')(solve_command)\n"
    "main()\n"
)


def _cache_rows(path: Path) -> dict[str, float]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, created FROM entries").fetchall())


def _pool_lines(state: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in state.glob("*/pool.jsonl"))


@pytest.mark.slow
def test_search_killed_mid_run_resumes_without_loss_duplicates_or_repeated_calls(tiny_model_dir, tmp_path):
    source, out, cache = (
        _write_problems(tmp_path / "in.jsonl", ["a", "b", "c"]),
        tmp_path / "out.jsonl",
        tmp_path / "c.sqlite",
    )
    probe = "from proofcritic.cli import app; print('solve' in [c.name for c in app.registered_commands])"
    registered = (
        subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True).stdout.strip()
        == "True"
    )
    entry = [sys.executable, "-m", "proofcritic"] if registered else [sys.executable, "-c", _LAUNCH]
    command = [
        *entry,
        "solve",
        "--input",
        str(source),
        "--output",
        str(out),
        "--strategy",
        "search",
        "--model",
        f"transformers/{tiny_model_dir}",
        "--cache",
        str(cache),
        "--max-tokens",
        "8",
        "--initial-samples",
        "2",
        "--verifications",
        "1",
        "--top-k",
        "2",
        "--trials",
        "2",
        "--samples-per-trial",
        "1",
        "--rounds",
        "5",
        "--keep-invalid",
        "--no-stop-on-pass",
        # the tiny model writes no score: the read-out gives the analyses scores to refine from
        "--score-mode",
        "auto",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    state = tmp_path / "out.jsonl.state"
    with open(tmp_path / "first.err", "wb") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline and _pool_lines(state) < 20:
            time.sleep(0.02)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
    assert killed, "the first run ended before it could be killed:\n" + (tmp_path / "first.err").read_text()[-3000:]
    written = [r["id"] for r in _records(out)] if out.exists() else []
    assert len(written) < 3, "the kill came too late to test a resume"
    before = _cache_rows(cache)

    rerun = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    records = _records(out)
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]  # each problem exactly once
    assert [r["id"] for r in records[: len(written)]] == written
    for r in records:
        assert "error" not in r and r["rounds"] == 5 and r["stop_reason"] == "max rounds (5) reached"
    for pool in state.glob("*/pool.jsonl"):
        lines = [json.loads(line) for line in pool.read_text().splitlines()]
        for kind in ("proof", "verification"):
            ids = [x["id"] for x in lines if x["kind"] == kind]
            assert len(ids) == len(set(ids)), f"duplicate {kind} records in {pool}"
        assert max(x["round"] for x in lines) == 5

    after = _cache_rows(cache)
    # nothing answered before the kill was asked again: every cached row is untouched ...
    assert all(after.get(key) == created for key, created in before.items())
    # ... and every new call of the rerun is accounted for by new rows: one request (its samples
    # share a key prefix) or one likelihood read-out (three continuation rows) per call
    new_keys = set(after) - set(before)
    chat_requests = {key.rsplit(":", 1)[0] for key in new_keys if ":" in key}
    readouts = [key for key in new_keys if ":" not in key]
    assert len(readouts) % 3 == 0
    new_calls, _ = _calls(rerun.stderr)
    assert new_calls == len(chat_requests) + len(readouts) // 3 > 0
    assert f"{len(written)} already done" in rerun.stderr.replace("\n", " ")
