"""Long work shows progress: the model's calls in flight, plain progress lines when stderr is
not a terminal, a live display on a terminal, the strategies' own state (search: round, pool,
verified proofs, verifications, best mean), the planned calls of a large run, and ``--dry-run``.

The slow runs use the scripted OpenAI-compatible server with a delay per call and a short
``PROOFCRITIC_PROGRESS_INTERVAL``, so they show what a run of minutes shows in a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from scripted import ScriptedBackend, generation_text, verification_text
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.errors import InputError
from proofcritic.llm import (
    Backend,
    ChatMessage,
    ChatRequest,
    Completion,
    GenerateConfig,
    Model,
)
from proofcritic.pipelines import Roles
from proofcritic.pipelines.label import LabelConfig
from proofcritic.pipelines.refine import RefineConfig
from proofcritic.pipelines.search import SearchConfig, SearchStrategy
from proofcritic.progress import PROGRESS_INTERVAL_ENV
from proofcritic.types import Problem

try:  # tests/ is on sys.path when it is not a package
    from servers.fault_server import FaultServer
    from servers.scripted_openai_server import MODEL_NAME, ScriptedOpenAIServer
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.servers.fault_server import FaultServer
    from tests.servers.scripted_openai_server import MODEL_NAME, ScriptedOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
STATEMENT = "Show that 6 divides n^3 - n for every integer n."
PROOF = "Write n^3 - n = (n - 1) n (n + 1): three consecutive integers, so 2 and 3 divide it."
LINE = re.compile(r"^progress: (?P<label>[^:]+): (?P<body>.*)$", re.MULTILINE)


def _cli(*args: str, interval: float | None = None):
    env = {PROGRESS_INTERVAL_ENV: str(interval)} if interval is not None else {}
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def _served(server) -> list[str]:
    return ["--model", f"openai/{MODEL_NAME}", "--base-url", server.url, "--api-key", "k", "--no-cache"]


def _files(tmp_path: Path) -> tuple[Path, Path]:
    problem, proof = tmp_path / "problem.md", tmp_path / "proof.md"
    problem.write_text(STATEMENT)
    proof.write_text(PROOF)
    return problem, proof


def _lines(stderr: str) -> list[re.Match]:
    return list(LINE.finditer(stderr))


def _number(text: str, pattern: str) -> int:
    return int(re.search(pattern, text).group(1).replace(",", ""))


# -- the model's own accounting ---------------------------------------------------------------------


class _Slow(Backend):
    """Answers every request after ``delay`` seconds."""

    name, model = "slow", "m"

    def __init__(self, delay: float):
        self.delay = delay

    async def generate(self, request: ChatRequest) -> list[Completion]:
        await asyncio.sleep(self.delay)
        return [Completion(text="answer", prompt_tokens=3, completion_tokens=1)]


def test_the_model_counts_its_calls_in_flight():
    model = Model(_Slow(0.3), max_concurrency=3)
    request = ChatRequest(messages=[ChatMessage(role="user", content="hi")], config=GenerateConfig())
    seen: list[int] = []

    async def run() -> None:
        calls = asyncio.gather(
            *(model.generate(request.model_copy(update={"config": GenerateConfig(seed=i)})) for i in range(5))
        )
        task = asyncio.ensure_future(calls)
        await asyncio.sleep(0.1)
        seen.append(model.in_flight)  # the first three sent, two wait for a slot
        await asyncio.sleep(0.3)
        seen.append(model.in_flight)  # the last two
        await task

    asyncio.run(run())
    assert seen == [3, 2] and model.in_flight == 0 and model.usage.calls == 5


# -- plain progress lines without a terminal ----------------------------------------------------------


def test_a_slow_batch_without_a_terminal_prints_progress_lines_and_a_quick_one_none(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"p{i}", "problem": STATEMENT, "proof": PROOF}) + "\n" for i in range(4))
    )
    with ScriptedOpenAIServer(delay=0.0) as server:  # quick, and the default interval (10 s): no line at all
        quick = _cli("grade", "--input", source, "--output", tmp_path / "quick.jsonl", *_served(server))
    assert quick.exit_code == 0, quick.stderr
    assert "progress:" not in quick.stderr

    interval = 0.4
    with ScriptedOpenAIServer(delay=0.6) as server:
        started = time.monotonic()
        slow = _cli(
            "grade",
            "--input",
            source,
            "--output",
            tmp_path / "slow.jsonl",
            "-n",
            "2",
            "--concurrency",
            "1",
            *_served(server),
            interval=interval,
        )
        took = time.monotonic() - started
    assert slow.exit_code == 0, slow.stderr
    lines = _lines(slow.stderr)
    # a line every interval, not more often (4 calls of 0.6 s one at a time: about 2.4 s)
    assert 3 <= len(lines) <= took / interval + 1, (len(lines), took, slow.stderr)
    for line in lines:
        assert line["label"] == "grading"
        assert re.search(
            r"\d/4 items(, ETA [\d:]+)?; calls \d+ done, [01] in flight; tokens [\d,]+; elapsed 0:00:0\d", line["body"]
        ), line[0]
    first, last = lines[0]["body"], lines[-1]["body"]
    assert _number(last, r"calls (\d+) done") > _number(first, r"calls (\d+) done")
    assert _number(last, r"tokens ([\d,]+)") > _number(first, r"tokens ([\d,]+)") >= 0
    assert "ETA" in last
    # the bar is gone: a non-terminal run no longer prints a progress bar at the end
    assert "━" not in slow.stderr


def test_grading_one_proof_shows_its_call_in_flight(tmp_path):
    problem, proof = _files(tmp_path)
    with ScriptedOpenAIServer(delay=1.5) as server:
        result = _cli("grade", "--problem", problem, "--proof", proof, *_served(server), interval=0.4)
    assert result.exit_code == 0, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) >= 2
    assert all(line["label"] == "grading" for line in lines)
    assert "calls 0 done, 1 in flight; tokens 0; elapsed 0:00:0" in lines[0]["body"]
    assert "items" not in lines[0]["body"]  # one proof, not a batch


def test_a_bad_progress_interval_is_one_line_before_any_model_loads(tmp_path):
    problem, proof = _files(tmp_path)
    result = CliRunner().invoke(
        app,
        ["grade", "--problem", str(problem), "--proof", str(proof), "--model", "transformers/no-such-model"],
        env={PROGRESS_INTERVAL_ENV: "soon"},
    )
    # an InputError: the entry point prints it as one line with exit status 2
    assert isinstance(result.exception, InputError), result.exception
    assert str(result.exception).startswith(f"{PROGRESS_INTERVAL_ENV} must be a number of seconds, 0 or more")


# -- the strategies' own state ------------------------------------------------------------------------


def test_search_reports_round_pool_verifications_and_best_mean():
    """The hook sees every round start, and the figures of the pool as they change."""

    texts = itertools.count()

    def script(call):
        if call.role == "verify":
            return verification_text(1 if "Attempt 2" in call.prompt else 0, analysis="checked")
        attempt = 1 if call.role == "generate" else 2
        return generation_text(f"Attempt {attempt}, text {next(texts)}.", 0.5)  # no two alike: no duplicates

    strategy = SearchStrategy(
        initial_samples=3, verifications=2, top_k=2, trials=2, samples_per_trial=2, rounds=2, stop_on_pass=False
    )
    reports: list[tuple[str, int, dict]] = []
    strategy.on_round = lambda problem_id, round_, state: reports.append((problem_id, round_, dict(state)))
    result = asyncio.run(
        strategy.solve(Problem(id="p", statement=STATEMENT), Roles.from_models(Model(ScriptedBackend(script))))
    )

    assert {r[0] for r in reports} == {"p"} and sorted({r[1] for r in reports}) == [1, 2]
    assert reports[0][2] == {"round": (1, 2), "pool": 0, "verified": (0, 0), "verifications": 0, "best_mean": None}
    means = [state["best_mean"] for _, _, state in reports]
    assert means[-1] == 1.0 == result.mean_score and 0.0 in means  # round 1's best was 0
    final = reports[-1][2]
    assert final["pool"] == 3 + 2 * 2 and final["verified"] == (7, 7) and final["verifications"] == 14
    assert final["round"] == (2, 2)


def test_a_search_batch_without_a_terminal_shows_the_search_state(tmp_path):
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "problem": STATEMENT}) + "\n" for i in range(2)))
    with ScriptedOpenAIServer(delay=0.5, pass_at=2) as server:
        result = _cli(
            "solve",
            "--input",
            source,
            "--output",
            tmp_path / "out.jsonl",
            "--strategy",
            "search",
            "--initial-samples",
            "2",
            "--verifications",
            "2",
            "--top-k",
            "1",
            "--trials",
            "1",
            "--samples-per-trial",
            "1",
            "--rounds",
            "2",
            "--no-stop-on-pass",
            *_served(server),
            interval=0.3,
        )
    assert result.exit_code == 0, result.stderr
    lines = _lines(result.stderr)
    assert lines and all(line["label"] == "search" for line in lines)
    states = " ".join(line["body"] for line in lines)
    assert re.search(
        r"q[01]: round [12]/2, pool \d+, verified \d+/\d+, verifications \d+, best mean (—|0|1)", states
    ), states
    assert re.search(r"/2 items, [\d,]+ rounds, 0 budget-limited", states)
    assert "best mean 0" in states or "best mean 1" in states  # a mean once a proof is verified


def test_a_terminal_shows_the_live_display(tmp_path):
    """On a terminal (a pty) the display is drawn and redrawn while the run goes on."""
    problem, _ = _files(tmp_path)
    with ScriptedOpenAIServer(delay=0.7, pass_at=2) as server:
        master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "200", PROGRESS_INTERVAL_ENV: "0"}  # 0: no plain lines, the display stays
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proofcritic",
                "solve",
                "--problem",
                str(problem),
                "--strategy",
                "refine",
                "--max-iters",
                "3",
                *_served(server),
            ],
            stdout=subprocess.PIPE,
            stderr=slave,
            cwd=ROOT,
            env=env,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        out, _ = process.communicate(timeout=30)
        os.close(master)
    assert process.returncode == 0, seen.decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
    assert re.search(r"refine calls 0 done, 1 in flight; tokens 0; elapsed 0:00:0\d", text)
    assert re.search(r"calls [1-9] done, [01] in flight; tokens [\d,]+; elapsed 0:00:0\d", text)
    assert "round 1/3, best self score —" in text and "round 2/3, best self score 0" in text
    assert "\x1b[2K" in seen.decode(errors="replace")  # drawn over itself, not printed line after line
    assert "progress:" not in text and "Attempt 2." in out.decode()


# -- the plan of a run, and --dry-run -------------------------------------------------------------------


def _plan_numbers(text: str, unit: str) -> str:
    match = re.search(rf"per {unit}: at most (.*)", text)
    assert match, text
    return match.group(1).strip()


def test_dry_run_prints_the_search_plan_without_a_model_or_a_request(tmp_path):
    problem, _ = _files(tmp_path)
    c = SearchConfig()
    refinements = (c.rounds - 1) * min(c.top_k, c.trials)
    proofs = c.initial_samples + refinements * c.samples_per_trial
    assert (proofs, c.initial_samples, c.verifications) == (2048, 128, 64)  # the released settings
    calls = 1 + refinements + proofs
    with FaultServer() as server:
        result = _cli(
            "solve",
            "--problem",
            problem,
            "--strategy",
            "search",
            "--dry-run",
            "--score-mode",
            "text",
            "--model",
            "openai/served-model",
            "--base-url",
            server.url,
            "--api-key",
            "k",
        )
        assert server.requests == []
    assert result.exit_code == 0, result.stderr
    assert _plan_numbers(result.stdout, "problem") == (
        f"{calls:,} model calls: {1 + refinements:,} generation ({proofs:,} proofs), "
        f"{proofs:,} verification ({proofs * c.verifications:,} verifications)"
    )
    assert "round 1: 128 proofs x 64 verifications" in result.stdout
    assert (
        "initial_samples=128" in result.stdout and "verifications=64" in result.stdout and "rounds=16" in result.stdout
    )
    # no model is loaded: a model that does not exist is never looked for
    missing = _cli(
        "solve",
        "--problem",
        problem,
        "--strategy",
        "refine",
        "--dry-run",
        "--score-mode",
        "text",
        "--model",
        "transformers/no-such-model",
    )
    assert missing.exit_code == 0, missing.stderr
    r = RefineConfig()
    assert _plan_numbers(missing.stdout, "problem").startswith(
        f"{r.max_iters + 1} model calls: {r.max_iters} generation"
    )


def test_dry_run_of_the_batch_commands_counts_items_and_calls_and_sends_nothing(tmp_path):
    graded = tmp_path / "graded.jsonl"
    graded.write_text(
        "".join(json.dumps({"id": f"g{i}", "problem": STATEMENT, "proof": PROOF, "points": 7}) + "\n" for i in range(5))
    )
    data = tmp_path / "data"
    (data / "dsmv2" / "inputs").mkdir(parents=True)
    problems = [
        {"id": str(k), "question": STATEMENT, "contest": "IMO2025", "problem_idx": f"IMO2025-{k}"} for k in (1, 2, 3)
    ]
    (data / "dsmv2" / "inputs" / "IMO2025.json").write_text(json.dumps(problems))
    label = LabelConfig()
    refine = RefineConfig()
    with FaultServer() as server:
        model = ["--model", "openai/served-model", "--base-url", server.url, "--api-key", "k", "--score-mode", "text"]
        grade = _cli("grade", "--input", graded, "--output", tmp_path / "g.jsonl", "-n", "4", "--dry-run", *model)
        readouts = _cli(
            "grade",
            "--input",
            graded,
            "--output",
            tmp_path / "g.jsonl",
            "-n",
            "4",
            "--dry-run",
            *model[:-2],
            "--score-mode",
            "auto",
        )
        labels = _cli(
            "label",
            "--input",
            graded,
            "--output",
            tmp_path / "l.jsonl",
            "--review",
            tmp_path / "r.jsonl",
            "--dry-run",
            *model,
        )
        solve = _cli(
            "eval",
            "solve",
            "--suite",
            "imo2025",
            "--data-dir",
            data,
            "--run",
            tmp_path / "s",
            "--strategy",
            "refine",
            "-k",
            "2",
            "--dry-run",
            *model,
        )
        egrade = _cli("eval", "grade", "--file", graded, "--run", tmp_path / "e", "-n", "3", "--dry-run", *model)
        assert server.requests == []
    for result in (grade, readouts, labels, solve, egrade):
        assert result.exit_code == 0, result.stderr
        assert "dry run: nothing was loaded or called" in result.stdout
    assert not any(p.exists() for p in (tmp_path / "g.jsonl", tmp_path / "l.jsonl", tmp_path / "s", tmp_path / "e"))

    assert "plan: grade, 5 proof(s)" in grade.stdout
    assert _plan_numbers(grade.stdout, "proof") == "1 model call: 1 verification (4 verifications)"
    assert "in all: at most 5 model calls: 5 verification (20 verifications)" in grade.stdout
    # a read-out score mode may add one call per verification
    assert _plan_numbers(readouts.stdout, "proof") == "5 model calls: 1 verification (4 verifications), 4 read-out"

    meta = label.n * label.m
    assert _plan_numbers(labels.stdout, "proof") == (
        f"{1 + label.n} model calls: 1 verification ({label.n} verifications), "
        f"{label.n} meta-verification ({meta} meta-verifications)"
    )
    assert f"in all: at most {5 * (1 + label.n)} model calls" in labels.stdout

    per_sample = refine.max_iters + 1 + 1  # the refinements, its evidence, the grader's verification
    assert "plan: eval solve imo2025 --strategy refine -k 2, 3 problem(s)" in solve.stdout
    assert _plan_numbers(solve.stdout, "problem") == (
        f"{2 * per_sample} model calls: {2 * refine.max_iters} generation ({2 * refine.max_iters} proofs), "
        "4 verification (4 verifications)"
    )
    assert "k=2" in solve.stdout and f"max_iters={refine.max_iters}" in solve.stdout

    assert _plan_numbers(egrade.stdout, "proof") == "1 model call: 1 verification (3 verifications)"
    assert "plan:" in egrade.stdout and "5 proof(s)" in egrade.stdout


def test_a_large_run_prints_its_plan_before_it_starts(tmp_path):
    problem, _ = _files(tmp_path)
    with ScriptedOpenAIServer() as server:
        result = _cli(
            "solve",
            "--problem",
            problem,
            "--strategy",
            "search",
            "--max-calls",
            "2",
            "--score-mode",
            "text",
            *_served(server),
        )
        small = _cli("solve", "--problem", problem, "--strategy", "single", "--score-mode", "text", *_served(server))
    plan = result.stderr.find("plan: solve --strategy search, 1 problem(s)")
    assert 0 <= plan < result.stderr.find("model calls: "), result.stderr
    assert "per problem: at most 2,529 model calls" in result.stderr
    assert small.exit_code == 0 and "plan:" not in small.stderr  # 2 calls: nothing to warn about
