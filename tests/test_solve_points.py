"""Solving on the points scale (``solve --scale points``) and tournaments inside the search
(``--set select=knockout|swiss``): scripted models whose points grades make the ranking, the
passes and the best proof known; resume from the state dir and the completion cache; the CLI
against a local OpenAI-compatible server; SmolLM2 through ``solve --scale points`` once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scripted import ScriptedBackend, generation_text
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic.budget import Budget, budget_scope
from proofcritic.cli import app
from proofcritic.llm import CompletionCache, Model
from proofcritic.parsing import EVALUATION_MARKER, POINTS_MARKER, SCORE_MARKER
from proofcritic.pipelines import Roles
from proofcritic.pipelines.search import SearchStrategy
from proofcritic.pipelines.solve import solve_problem
from proofcritic.pipelines.tournament import COMPARE_MARKER
from proofcritic.types import Problem

PROBLEM = Problem(id="p1", statement="Prove that there are infinitely many primes.", max_points=7)
PROOF = re.compile(r"PROOF\[([^\]]+)\]")
QUALITY = re.compile(
    r"## Proof 1\s+PROOF\[[^\]]+\] quality (\d+)\..*## Proof 2\s+PROOF\[[^\]]+\] quality (\d+)\.", re.DOTALL
)
ROOT = Path(__file__).resolve().parents[1]


def points_text(points: int, name: str, index: int) -> str:
    """A points grade of proof ``name`` (its ``index``-th) with one located issue unless full marks."""
    issue = (
        "- None"
        if points == 7
        else f'- **Location:** "step 2" | **Severity:** Justification Gap | **Issue:** gap-{name}-{index}'
    )
    return f"{EVALUATION_MARKER}\nAnalysis of {name} #{index}.\n\n### Issues\n\n{issue}\n\n{POINTS_MARKER}\n\\boxed{{{points}}}"


def model(grades: dict[str, list[int]], quality: dict[str, int] | None = None, cache: CompletionCache | None = None):
    """Initial proofs G<i>; a refinement of P is P.r<i>. Verification i of P gets
    ``grades[P][i]`` points; the comparator prefers the higher ``quality`` (by the text)."""
    quality = quality or {}

    def script(call):
        if call.role == "compare":
            first, second = map(int, QUALITY.search(call.prompt).groups())
            choice = 1 if first > second else 2
            return f"Proof {choice} closes every case.\n\n{COMPARE_MARKER}\n\\boxed{{{choice}}}"
        if call.role == "verify":
            name = PROOF.search(call.prompt).group(1)
            return points_text(grades[name][call.index], name, call.index)
        if call.role == "generate":
            name = f"G{call.index}"
        else:
            parent = re.search(r"--- Solution 1 ---\s+PROOF\[([^\]]+)\]", call.prompt).group(1)
            name = f"{parent}.r{call.index}"
        return generation_text(f"PROOF[{name}] quality {quality.get(name, 0)}.", 0.5)

    backend = ScriptedBackend(script)
    return backend, Roles.from_models(Model(backend, cache=cache), scale="points")


async def test_search_ranks_refines_and_passes_on_points():
    """Means are points / 7: G2 (7, 6) ranks first but is no pass; its refinement prompt shows
    each grade as "x / 7 points" with the issues; the refinement's full marks on both
    verifications are a pass, which stops the search; the result reports points."""
    grades = {"G0": [3, 3], "G1": [5, 6], "G2": [7, 6], "G2.r0": [7, 7]}
    backend, roles = model(grades)
    strategy = SearchStrategy(initial_samples=3, verifications=2, top_k=1, trials=1, samples_per_trial=1, rounds=3)
    result = await solve_problem(strategy, PROBLEM, roles)
    assert result.proof_id and result.proof.startswith("PROOF[G2.r0]")
    assert result.stop_reason.startswith(f"proof {result.proof_id} passed all 2 verifications in round 2")
    assert (result.mean_score, result.points, result.max_points) == (1.0, 7.0, 7.0)
    assert [v.points for v in result.verifications] == [7, 7]
    select = next(s for s in result.transcript if s["step"] == "select")
    assert [r["mean"] for r in select["refine"]] == [pytest.approx(13 / 14)]
    [refine] = [c for c in backend.calls if c.role == "refine"]
    assert "7 / 7 points" in refine.prompt and "6 / 7 points" in refine.prompt
    assert "gap-G2-1" in refine.prompt and "Analysis of G2 #0." in refine.prompt
    assert SCORE_MARKER not in refine.prompt.split("## Earlier attempts")[1].split("## Your task now")[0]
    # the ternary default is unchanged: no points on the result
    ternary = Roles.from_models(Model(ScriptedBackend(lambda call: "")))
    assert ternary.scale == "ternary" and roles.scale == "points"


async def test_a_points_pass_needs_full_marks_on_every_verification():
    _, roles = model({"G0": [7, 6], "G1": [6, 6], "G0.r0": [7, 6], "G1.r0": [6, 6]})
    strategy = SearchStrategy(initial_samples=2, verifications=2, top_k=2, trials=2, samples_per_trial=1, rounds=2)
    result = await solve_problem(strategy, PROBLEM, roles)
    assert result.stop_reason.startswith("max rounds (2) reached") and result.points == pytest.approx(6.5)


SEARCH = {"initial_samples": 4, "verifications": 1, "rounds": 1, "select_pool": 3}
GRADES = {"G0": [6], "G1": [5], "G2": [4], "G3": [1]}  # by mean: G0, G1, G2, G3
QUALITY_OF = {"G0": 2, "G1": 9, "G2": 4, "G3": 10}  # the best of the top 3 is G1 (G3 is not in the pool)


@pytest.mark.parametrize("select, matches", [("knockout", 2), ("swiss", 2)])
async def test_search_answers_the_tournament_winner_among_the_best_by_mean(select, matches):
    backend, roles = model(GRADES, QUALITY_OF)
    strategy = SearchStrategy(**SEARCH, select=select)
    result = await solve_problem(strategy, PROBLEM, roles)
    assert result.proof.startswith("PROOF[G1]") and result.points == 5.0
    assert f"by {select} tournament among the top 3 by mean ({matches} matches" in result.stop_reason
    assert backend.count("compare") == 2 * matches  # each match asked in both orders
    step = result.transcript[-1]
    assert step["step"] == "tournament" and step["format"] == select and step["winner"] == result.proof_id
    assert [p["mean"] for p in step["pool"]] == [pytest.approx(x / 7) for x in (6, 5, 4)]  # seeds by mean
    assert len(step["matches"]) == matches and "won" in step["why"] and step["why"].startswith(result.proof_id)
    won = [m for m in step["matches"] if m["winner"] == result.proof_id]
    assert won and all(
        r == "Proof 1 closes every case." or r == "Proof 2 closes every case." for r in won[0]["reasons"]
    )
    assert strategy.plan().calls["comparison"] == 2 * matches
    plain = await solve_problem(SearchStrategy(**SEARCH), PROBLEM, model(GRADES, QUALITY_OF)[1])
    assert plain.proof.startswith("PROOF[G0]") and "tournament" not in plain.stop_reason


async def test_the_tournament_is_budgeted_and_a_rerun_repeats_no_comparison(tmp_path):
    """Killed (a spent budget) in the tournament: the answer falls back to the best mean,
    marked budget-limited; the rerun replays the pool from the state dir and the finished
    comparisons from the completion cache: only the missing ones reach the model."""
    reference_backend, roles = model(GRADES, QUALITY_OF)
    reference = await SearchStrategy(**SEARCH, select="knockout").solve(PROBLEM, roles, state_dir=tmp_path / "ref")
    total = len(reference_backend.calls)  # 1 generation of 4 samples, 4 verifications, 4 comparisons

    cache = CompletionCache(tmp_path / "cache.sqlite", flush_size=1)
    first, roles = model(GRADES, QUALITY_OF, cache)
    with budget_scope(Budget(max_calls=7, name="problem")):  # 1 + 4 + 2 of the 4 comparisons
        stopped = await SearchStrategy(**SEARCH, select="knockout").solve(PROBLEM, roles, state_dir=tmp_path / "s")
    assert stopped.budget_limited and "the knockout tournament stopped (budget:" in stopped.stop_reason
    assert stopped.proof.startswith("PROOF[G0]") and first.count("compare") == 2

    rerun, roles = model(GRADES, QUALITY_OF, cache)
    resumed = await SearchStrategy(**SEARCH, select="knockout").solve(PROBLEM, roles, state_dir=tmp_path / "s")
    assert [c.role for c in rerun.calls] == ["compare", "compare"]  # only the comparisons not yet answered
    asked = {c.prompt for c in first.calls if c.role == "compare"}
    assert not asked & {c.prompt for c in rerun.calls}
    assert (resumed.proof_id, resumed.stop_reason, resumed.transcript) == (
        reference.proof_id,
        reference.stop_reason,
        reference.transcript,
    )
    assert len(first.calls) + len(rerun.calls) - 4 == total - 4  # generation and verifications once, from the pool

    again, roles = model(GRADES, QUALITY_OF, cache)  # all recorded: nothing reaches the model
    done = await SearchStrategy(**SEARCH, select="knockout").solve(PROBLEM, roles, state_dir=tmp_path / "s")
    assert again.calls == [] and done.transcript == reference.transcript
    cache.close()


def test_solve_cli_points_scale_search_with_tournament(tmp_path):
    """`solve --input ... --scale points --strategy search --set select=knockout` against a local
    server: each record reports points on its problem's scale, a record's own scheme reaches the
    verifier prompt, the batch summary gives the points; a scheme without the scale, and another
    score mode than text, are usage errors."""
    grades = {"G0": [5], "G1": [6], "G2": [2]}
    backend, _ = model(grades, {"G0": 8, "G1": 1, "G2": 3})
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"id": "a", "problem": "Show x.", "max_points": 7},
        {"id": "b", "problem": "Show y.", "max_points": 7, "scheme": "Two points for the lemma."},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TinyOpenAIServer(backend, "roles") as server:
        common = ["--model", "openai/roles", "--base-url", server.url, "--no-cache"]
        args = ["solve", "--input", str(source), "--output", str(output), "--strategy", "search", *common]
        args += ["--initial-samples", "3", "--verifications", "1", "--rounds", "1", "--scale", "points"]
        args += ["--set", "select=knockout", "--set", "select_pool=2"]
        result = CliRunner().invoke(app, args, catch_exceptions=False, env={"OPENAI_API_KEY": "x"})
        assert result.exit_code == 0, result.output + result.stderr
        prompts = [json.dumps(body["messages"]) for body in server.requests]
    records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    for record in records.values():  # G1 (6) and G0 (5) play; G0 wins on quality
        assert record["proof"].startswith("PROOF[G0]") and (record["points"], record["max_points"]) == (5, 7)
        assert record["verifications"][0]["points"] == 5 and record["transcript"][-1]["step"] == "tournament"
    assert sum("Two points for the lemma." in p for p in prompts) == 3  # problem b's three verifications
    assert "points: mean 5 / 7 over 2 problem(s) with a verdict (0 without)" in result.stderr
    for bad, hint in (
        (["--scheme", str(source)], "needs --scale points"),
        (["--scale", "points", "--score-mode", "auto"], "--score-mode text"),
    ):
        out = CliRunner().invoke(app, ["solve", "--problem", str(ROOT / "examples" / "problem.md"), *bad])
        assert out.exit_code == 2 and hint in " ".join((out.output + out.stderr).split()), out.output + out.stderr


@pytest.mark.smollm2
def test_solve_points_scale_on_smollm2(smollm2_dir, tmp_path):
    """`solve --scale points` end to end on the real model with tiny settings: whatever it writes
    is parsed without an exception, every verification is a points grade or a format failure
    with a reason, and the record says which scale it used."""
    args = ["solve", "--problem", str(ROOT / "examples" / "problem.md"), "--strategy", "search", "--scale", "points"]
    args += ["--initial-samples", "2", "--verifications", "1", "--rounds", "1", "--keep-invalid", "--json"]
    args += ["--max-tokens", "16", "--temperature", "0.8", "--seed", "1", "--cache", str(tmp_path / "c.sqlite")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output + result.stderr
    data = json.loads(result.stdout)
    assert data["strategy"] == "search" and data["max_points"] == 7
    verify = [s for s in data["transcript"] if s["step"] == "verify"]
    assert verify and all(len(s["scores"]) == 1 for s in verify)
    for v in data["verifications"]:
        assert (v.get("points") is None) == (not v["format_ok"]) and (v["format_ok"] or v["format_error"])
    assert ("points" in data) == any(v.get("points") is not None for v in data["verifications"])


async def test_eval_solve_grades_on_points(tmp_path):
    """`eval solve --scale points`: the grader is the points verifier, so each sample's scores
    are points / max points, its points are on the problem's scale and a pass is full marks."""
    from proofcritic.benchmarks._items import SolveItem
    from proofcritic.benchmarks._run import RunFolder
    from proofcritic.benchmarks.eval_solve import eval_solve
    from proofcritic.pipelines.single import SingleStrategy

    grades = {"G0": [7, 7]}
    backend, roles = model(grades)
    items = [SolveItem(problem=Problem(id=p, statement=f"Prove statement {p}.", max_points=m)) for p, m in (("a", 7),)]
    await eval_solve(items, RunFolder(tmp_path / "run"), roles=roles, strategy=SingleStrategy(verify_n=0), verify_n=2)
    [record] = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    [sample] = record["samples"]
    assert sample["verifier_scores"] == [1.0, 1.0] and sample["points"] == 7 and sample["passed"] is True
    assert backend.count("verify") == 2


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "dsmv2").exists(), reason="shared data not present")
def test_eval_solve_cli_takes_the_scale():
    base = ["eval", "solve", "--suite", "imo2025", "--dry-run", "--model", "openai/x"]
    shown = CliRunner().invoke(app, [*base, "--scale", "points"])
    assert shown.exit_code == 0 and "scale=points" in shown.output, shown.output
    plain = CliRunner().invoke(app, base)
    assert plain.exit_code == 0 and "scale=" not in plain.output  # the ternary default is not shown
    critic = CliRunner().invoke(app, [*base, "--scale", "points", "--strategy", "critic"])
    assert critic.exit_code == 0 and "scale=points" in critic.output, critic.output
    refused = CliRunner().invoke(app, [*base, "--scale", "points", "--score-mode", "auto"])
    assert refused.exit_code == 2 and "--score-mode text" in " ".join(refused.output.split())


async def test_agent_on_points_passes_on_full_marks_and_shows_the_grade():
    """The agent loop on the points scale: a pass is full marks read from the grade (no judge
    call); a failing grade's bug report shows "x / 7 points" and the issues to the repair; the
    repair's disputes reach a points re-verification (agent_reverify_points)."""
    from scripted import repair_text

    from proofcritic.pipelines.agent import AgentStrategy

    def script(call):
        if call.role == "generate":
            return generation_text("PROOF[first]", 1)
        if call.role == "agent_improve":
            return generation_text("PROOF[improved]", 1)
        if call.role == "agent_repair":
            return repair_text("PROOF[repaired]", 1, disputes=[("step 2", "it follows from the lemma")])
        name = PROOF.search(call.prompt).group(1)
        return points_text({"improved": 5, "repaired": 7}[name], name, 0)

    backend = ScriptedBackend(script)
    roles = Roles.from_models(Model(backend), scale="points")
    result = await solve_problem(AgentStrategy(passes_to_accept=2, max_runs=1), PROBLEM, roles)
    assert result.proof == "PROOF[repaired]" and result.stop_reason.startswith("accepted")
    assert (result.points, result.max_points) == (7.0, 7.0)
    assert backend.count("agent_judge") == 0
    verdicts = [(e["passed"], e["reason"]) for e in result.transcript if e["step"] == "verdict"]
    assert verdicts == [(False, "grade: 5 / 7 points"), (True, "grade: 7 / 7 points"), (True, "grade: 7 / 7 points")]
    [repair] = [c for c in backend.calls if c.role == "agent_repair"]
    assert "5 / 7 points" in repair.prompt and "gap-improved-0" in repair.prompt
    reverify = [c for c in backend.calls if c.role == "agent_reverify"]
    assert reverify and all("it follows from the lemma" in c.prompt and POINTS_MARKER in c.prompt for c in reverify)
    templates = [e.get("template") for e in result.transcript if e["step"] == "verify"]
    assert templates == ["verify_points", "agent_reverify_points", "agent_reverify_points"]


@pytest.mark.slow
def test_a_search_killed_in_its_tournament_resumes_without_repeating_a_comparison(tmp_path):
    """`solve --strategy search --set select=knockout` in a subprocess, killed (SIGKILL) while
    the knockout's second round is being answered: the rerun replays the pool from the state dir
    and the first round's comparisons from the completion cache, asks only the comparisons that
    were not answered, and answers the knockout's winner."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    n = 8
    grades = {f"G{i}": [6 - i % 3] for i in range(n)}  # no pass: every verification below 7
    quality = {f"G{i}": (i * 5) % n for i in range(n)}  # G3 has the best quality (7)
    release = threading.Event()

    class Slow(ScriptedBackend):
        """Answers comparisons after the first round's only once released."""

        async def generate(self, request):
            import asyncio

            text = "\n".join(m.content for m in request.messages)
            answered = sum(1 for c in self.calls if c.role == "compare")
            if "Decide which one is the more complete" in text and answered >= n:
                while not release.is_set():
                    await asyncio.sleep(0.05)
            return await super().generate(request)

    backend = Slow(model(grades, quality)[0].script)
    source, out, cache = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "c.sqlite"
    source.write_text(json.dumps({"id": "p", "problem": "Show that primes are infinite.", "max_points": 7}) + "\n")
    with TinyOpenAIServer(backend, "roles") as server:
        command = [sys.executable, "-m", "proofcritic", "solve", "--input", str(source), "--output", str(out)]
        command += ["--strategy", "search", "--initial-samples", str(n), "--verifications", "1", "--rounds", "1"]
        command += ["--scale", "points", "--set", "select=knockout", "--set", f"select_pool={n}"]
        command += ["--model", "openai/roles", "--base-url", server.url, "--cache", str(cache)]
        env = {**os.environ, "OPENAI_API_KEY": "x"}
        with open(tmp_path / "first.err", "wb") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline and backend.count("compare") < n:
                time.sleep(0.05)
            time.sleep(2.5)  # the second round's requests arrive; the cache commits the first round's answers
            killed = process.poll() is None
            if killed:
                process.send_signal(signal.SIGKILL)
            process.wait()
        assert killed, (tmp_path / "first.err").read_text()[-3000:]
        first = list(backend.calls)
        assert sum(c.role == "compare" for c in first) == n  # round 1 answered, round 2 held back
        assert not out.exists() or not out.read_text().strip()
        release.set()  # the killed client's held-back requests are answered now, to nobody
        time.sleep(0.5)
        backend.calls.clear()
        rerun = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    roles = [c.role for c in backend.calls]
    assert roles == ["compare"] * (n // 2 + n // 4)  # rounds 2 and 3 only: nothing else asked again
    assert not {c.prompt for c in first} & {c.prompt for c in backend.calls}
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["proof"] == "PROOF[G3] quality 7." and record["points"] == 6  # G0 ranks first by mean (6 too)
    step = record["transcript"][-1]
    assert step["step"] == "tournament" and len(step["matches"]) == n - 1 and step["winner"] == record["proof_id"]


async def test_critic_on_points_grades_with_tools_and_passes_on_full_marks():
    """The critic strategy on the points scale: the critique opens with the points prompt and
    the tools (critic_verify_points), a real sandboxed run's output comes back, the conversation
    is parsed as a points grade, the revision prompt shows "4 / 7 points", and full marks pass."""
    from proofcritic.pipelines.critic import CriticStrategy
    from proofcritic.tools import PythonTool, SandboxPool

    critiques = iter([4, 7])

    def script(call):
        messages = call.request.messages
        if call.role == "verify":
            if len(messages) == 1:
                return f"{EVALUATION_MARKER}\n\nLet me check.\n\n```python\nprint(6 * 7)"
            name = PROOF.search(messages[0].content).group(1)
            return points_text(next(critiques), name, 0)
        if "## Critique" in messages[0].content:
            return generation_text("PROOF[revised] quality 1.", 0.5)
        return generation_text("PROOF[first] quality 0.", 0.5)

    backend = ScriptedBackend(script)
    with SandboxPool(workers=1) as pool:
        strategy = CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1)
        result = await solve_problem(strategy, PROBLEM, Roles.from_models(Model(backend), scale="points"))
    assert result.stop_reason == "passed at round 1" and result.proof.startswith("PROOF[revised]")
    assert (result.points, result.max_points) == (7.0, 7.0)
    openings = [c.request.messages[0].content for c in backend.calls if c.role == "verify"]
    assert all("final number of points" in o and "Checking claims by running code" in o for o in openings)
    assert all(SCORE_MARKER not in o for o in openings)
    [revise] = [c for c in backend.calls if "## Critique" in c.request.messages[0].content]
    prompt = revise.request.messages[0].content
    assert "The grader awarded 4 / 7 points." in prompt and "42" in prompt and "gap-first-0" in prompt
    assert result.verifications[0].points == 7 and result.verifications[0].tool_calls[0].stdout == "42\n"


def test_grade_cli_points_with_tools_runs_code_and_reports_points(tmp_path):
    """`grade --scale points --tools python` (CRITIC on the points scale): the critique runs
    real sandboxed code, sees its output, and the grade is parsed as points."""

    def script(call):
        messages = call.request.messages
        if len(messages) == 1:
            return f"{EVALUATION_MARKER}\n\nLet me check.\n\n```python\nprint(6 * 7)"
        assert "42" in messages[-1].content
        return points_text(5, "given", 0)

    backend = ScriptedBackend(script)
    problem, proof = tmp_path / "problem.md", tmp_path / "proof.md"
    problem.write_text(PROBLEM.statement)
    proof.write_text("PROOF[given] quality 1.")
    with TinyOpenAIServer(backend, "roles") as server:
        args = ["grade", "--problem", str(problem), "--proof", str(proof), "--scale", "points", "--tools", "python"]
        args += ["--model", "openai/roles", "--base-url", server.url, "--no-cache", "--json", "--max-tool-calls", "1"]
        result = CliRunner().invoke(app, args, catch_exceptions=False, env={"OPENAI_API_KEY": "x"})
    assert result.exit_code == 0, result.output + result.stderr
    record = json.loads(result.stdout)
    [v] = record["verifications"]
    assert v["points"] == 5 and v["tool_calls"][0]["stdout"] == "42\n"
    assert "final number of points" in json.dumps(server.requests[0]["messages"])


async def test_eval_solve_on_points_grades_by_the_suites_human_scheme(tmp_path):
    """USAMO 2025's human marking scheme (a solve item's ``meta["rubric"]``) is the points
    verifier's scheme on the points scale, shown once (not again as guidelines); on the ternary
    scale the item is graded with the guidelines as before."""
    from proofcritic.benchmarks._items import SolveItem
    from proofcritic.benchmarks._run import RunFolder
    from proofcritic.benchmarks.eval_solve import eval_solve
    from proofcritic.benchmarks.usamo import rubric_text
    from proofcritic.pipelines.single import SingleStrategy

    rubric = [
        {"title": "Key lemma", "points": 3, "desc": "proves the LEMMA-X bound"},
        {"title": "Finish", "points": 4, "desc": "closes FINISH-Y"},
    ]
    problem = Problem(id="usamo2025-1", statement="Prove it.", max_points=7, grading_guidelines=rubric_text(rubric, 7))
    item = SolveItem(problem=problem, meta={"rubric": rubric})
    backend, roles = model({"G0": [5]})
    await eval_solve([item], RunFolder(tmp_path / "run"), roles=roles, strategy=SingleStrategy(verify_n=0), verify_n=1)
    [prompt] = [c.prompt for c in backend.calls if c.role == "verify"]
    assert "## Marking scheme" in prompt and "## Grading guidelines" not in prompt
    assert prompt.count("LEMMA-X") == 1 and "Key lemma (3 points)" in prompt
