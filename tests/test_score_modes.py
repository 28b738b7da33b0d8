"""Honest default scores (issue 13, point 1): the default score mode is ``text`` everywhere, so a
verification that wrote no valid score has none and earns no points; aggregates are over the
scored verifications and say how many were unscored; a proof with no scored verification has no
verdict. The read-outs (``auto``, ``logprob``, ``guided``) are opt-in and every score they give
is marked as such.

The model is the scripted one (``tests/scripted.py``) given a likelihood, so that it can be
read out like a real backend: its verifier outputs never follow the protocol (the situation of
the embedded SmolLM2), and the likelihood favours ``\\boxed{0.5}``. With the old default
(``auto``) every such verification came out 0.5, i.e. 3.5 of 7 points. The commands run in this
process against it served over real HTTP (``tests/servers/tiny_openai_server.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import click
import pytest
import typer.main
from scripted import ScriptedBackend, generation_text, meta_text, verification_text
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic import Problem, Verifier, grade, grade_proof
from proofcritic.benchmarks import GradeItem, RunFolder, SolveItem
from proofcritic.benchmarks.eval_grade import eval_grade
from proofcritic.benchmarks.eval_solve import eval_solve
from proofcritic.benchmarks.report import build_report
from proofcritic.cli import app
from proofcritic.llm import Model
from proofcritic.meta_verifier import MetaVerifier
from proofcritic.pipelines import Roles
from proofcritic.pipelines.label import LabelConfig, label_proof
from proofcritic.pipelines.single import SingleStrategy
from proofcritic.types import Verification
from proofcritic.verifier import (
    DEFAULT_SCORE_MODE,
    SCORE_MODES,
    aggregate,
    counts_note,
    shown_score,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROBLEM = Problem(id="p", statement="Show that n^3 - n is divisible by 6 for every integer n.", max_points=7)
PROOF = "n^3 - n = (n - 1) n (n + 1), a product of three consecutive integers."
#: a verifier output without the protocol (no markers, no score)
NO_PROTOCOL = "The proof looks fine to me, every step follows."


def likes(score: float):
    """A likelihood under which the read-out picks ``score``."""
    ending = f"\\boxed{{{score:g}}}"
    return lambda text: 0.0 if text.endswith(ending) else -3.0


def _script(call) -> str:
    if call.role == "verify":
        return NO_PROTOCOL
    if call.role == "generate":
        return generation_text(PROOF, 1)
    if call.role == "meta_verify":
        return meta_text(1)
    raise AssertionError(call.role)


def backend(script=_script) -> ScriptedBackend:
    return ScriptedBackend(script, likelihood=likes(0.5))


# -- the default, defined once ------------------------------------------------------------------------


def test_the_default_is_text_everywhere():
    assert DEFAULT_SCORE_MODE == "text" and DEFAULT_SCORE_MODE in SCORE_MODES
    from proofcritic.pipelines._agent_roles import RebuttalVerifier
    from proofcritic.server import ServerSettings
    from proofcritic.server._service import GradingService as Engine

    model = Model(backend(), cache=None)
    assert Verifier(model).score_mode == "text"
    assert inspect.signature(RebuttalVerifier).parameters["score_mode"].default == "text"
    assert Roles.from_models(model).verifier.score_mode == "text"
    assert ServerSettings(model=model).score_mode == "text"
    assert Engine(model).score_mode == "text"
    assert inspect.signature(grade_proof).parameters["score_mode"].default == "text"
    root = typer.main.get_command(app)
    context = click.Context(root)
    for path in (["grade"], ["label"], ["solve"], ["serve"], ["eval", "grade"], ["eval", "solve"]):
        command = root
        for name in path:
            command = command.get_command(context, name)
        [option] = [p for p in command.params if p.name == "score_mode"]
        assert option.default == "text", path


def test_an_unknown_score_mode_is_refused_in_the_same_words_everywhere(tmp_path):
    """One check (issue 15): the verifier, the meta-verifier, the service's settings and the
    command line all name the modes and the value given."""
    from proofcritic.server import ServerSettings

    model = Model(backend(), cache=None)
    words = "must be one of text, auto, logprob, guided, not 'bogus'"
    for make in (
        lambda: Verifier(model, score_mode="bogus"),
        lambda: MetaVerifier(model, score_mode="bogus"),
        lambda: ServerSettings(model=model, score_mode="bogus", db_path=tmp_path / "jobs.sqlite"),
    ):
        with pytest.raises(ValueError, match=words):
            make()
    result = CliRunner().invoke(app, ["grade", "--problem", "p.md", "--proof", "q.md", "--score-mode", "bogus"])
    assert result.exit_code == 2 and words in " ".join((result.output + (result.stderr or "")).split())


# -- the verifier and the aggregate -------------------------------------------------------------------


async def test_a_format_failure_has_no_score_and_no_read_out_by_default():
    scripted = backend()
    [v] = await Verifier(Model(scripted, cache=None)).verify(PROBLEM, PROOF)
    assert v.score is None and v.score_source is None and not v.format_ok and not v.read_out
    assert scripted.scored == []  # no read-out was asked for
    assert shown_score(v) == "—"
    # opting in reads it out, and marks it
    [v] = await Verifier(Model(scripted, cache=None), score_mode="auto").verify(PROBLEM, PROOF)
    assert (v.score, v.score_source, v.read_out, v.format_ok) == (0.5, "likelihood", True, False)
    assert shown_score(v) == "0.5 (read-out)"


async def test_guided_scores_are_marked_as_read_outs():
    def script(call):
        return "0.5}" if call.request.config.choices else NO_PROTOCOL

    [v] = await Verifier(Model(ScriptedBackend(script), cache=None), score_mode="guided").verify(PROBLEM, PROOF)
    assert (v.score, v.score_source, v.read_out) == (0.5, "guided", True)
    assert shown_score(v) == "0.5 (read-out)"


def test_aggregates_are_over_scored_verifications_and_count_the_others():
    vs = [
        Verification(score=1, score_source="text"),
        Verification(score=0.5, score_source="likelihood"),
        Verification(),
        Verification(),
    ]
    a = aggregate(vs, max_points=7)
    assert (a.n, a.valid, a.unscored, a.read_out, a.mean, a.points) == (4, 2, 2, 1, 0.75, 5.25)
    assert a.model_dump()["unscored"] == 2  # in every record
    assert counts_note(a) == "unscored: 2 of 4; 1 score from a read-out"
    none = aggregate([Verification(), Verification()], max_points=7)
    assert (none.valid, none.unscored, none.mean, none.majority, none.points) == (0, 2, None, None, None)
    assert counts_note(none) == "unscored: 2 of 2"


def test_grading_a_proof_without_a_scored_verification_gives_no_verdict_and_no_points():
    result = grade_proof(PROBLEM, PROOF, model=Model(backend(), cache=None), n=2)
    assert result.aggregate.valid == 0 and result.aggregate.unscored == 2
    assert result.aggregate.mean is None and result.aggregate.points is None  # never 0.5 or 3.5 points
    opted = asyncio.run(grade(Verifier(Model(backend(), cache=None), score_mode="auto"), PROBLEM, PROOF, n=2))
    assert opted.aggregate.points == 3.5 and opted.aggregate.read_out == 2
    assert all(v.score_source == "likelihood" for v in opted.verifications)


# -- label and the strategies --------------------------------------------------------------------------


async def test_label_sees_only_scored_analyses():
    def script(call):  # verification 0 finds a gap, the others write no score; the meta-verifier confirms
        if call.role == "verify":
            found = call.index == 0 and PROOF in call.prompt
            return verification_text(0.5, [("step 1", "Justification Gap", "why?")]) if found else NO_PROTOCOL
        return meta_text(1)

    scripted = backend(script)
    model = Model(scripted, cache=None)
    result = await label_proof(Verifier(model), MetaVerifier(model), PROBLEM, PROOF, LabelConfig(n=3, m=1, k=1))
    assert (result.status, result.label, result.rule) == ("labeled", 0.5, "confirmed_lowest")
    assert len(result.analyses) == 1 and len(result.format_failures) == 2
    assert "(unscored: 2 of 3)" in result.reason
    assert scripted.count("meta_verify") == 1  # unscored verifications are never meta-verified

    nothing = await label_proof(
        Verifier(model), MetaVerifier(model), PROBLEM, "Another proof.", LabelConfig(n=2, m=1, k=1)
    )
    assert (nothing.status, nothing.rule, nothing.label) == ("review", "no_analyses", None)
    assert scripted.count("meta_verify") == 1 and scripted.scored == []


async def test_a_strategy_answer_without_a_scored_verification_has_no_mean():
    result = await SingleStrategy(verify_n=2).solve(PROBLEM, Roles.from_models(Model(backend(), cache=None)))
    assert result.proof == PROOF and result.mean_score is None
    assert [v.score for v in result.verifications] == [None, None]
    [step] = [s for s in result.transcript if s["step"] == "verify"]
    assert step["scores"] == [None, None] and step["score_sources"] == [None, None]


# -- eval grade and eval solve ---------------------------------------------------------------------------


def _grade_items() -> list[GradeItem]:
    return [
        GradeItem(
            id=f"g{k}",
            problem=Problem(id=f"p{k}", statement=f"Problem {k}: show that 1 + 1 = 2."),
            proof=f"Proof P{k}. By definition.",
            human_points=7,
        )
        for k in (1, 2)
    ]


def _grade_script(call):  # g1 is scored 1 by its first verification; everything else writes no score
    if "Proof P1." in call.prompt and call.index == 0:
        return verification_text(1)
    return NO_PROTOCOL


async def test_eval_grade_counts_a_proof_without_a_scored_verification_as_no_verdict(tmp_path):
    run = RunFolder(tmp_path / "text")
    summary = await eval_grade(
        _grade_items(), run, verifier=Verifier(Model(backend(_grade_script), cache=None)), n=2, n_resamples=20
    )
    records = {r["id"]: r for r in run.records()}
    assert records["g1"]["predicted_score"] == 1 and records["g1"]["unscored"] == 1
    assert [v["score_source"] for v in records["g1"]["verifications"]] == ["text", None]
    assert records["g2"]["predicted_score"] is None and records["g2"]["predicted_points"] is None
    assert records["g2"]["status"] == "no_verdict" and records["g2"]["unscored"] == 2
    counts = summary["counts"]
    assert (counts["scored"], counts["no_verdict"]) == (1, 1)
    assert (counts["verifications"], counts["unscored_verifications"], counts["read_out_scores"]) == (4, 3, 0)
    # no verdict: left out of the agreement metrics, and counted there
    assert summary["metrics"]["n"] == 1 and summary["metrics"]["unscored"] == 1
    assert summary["metrics"]["confusion_binary"]["matrix"] == [[0, 0], [0, 1]]
    build_report(run)
    report = (run.path / "report.md").read_text()
    assert "| unscored verifications | 3 of 4 |" in report
    assert "| scores from a read-out (likelihood, guided) | 0 of 1 |" in report

    opted = RunFolder(tmp_path / "auto")
    summary = await eval_grade(
        _grade_items(),
        opted,
        n=2,
        n_resamples=20,
        verifier=Verifier(Model(backend(_grade_script), cache=None), score_mode="auto"),
    )
    records = {r["id"]: r for r in opted.records()}
    assert [v["score_source"] for v in records["g2"]["verifications"]] == ["likelihood", "likelihood"]
    assert records["g2"]["predicted_score"] == 0.5 and records["g2"]["read_out"] == 2
    assert (summary["counts"]["unscored_verifications"], summary["counts"]["read_out_scores"]) == (0, 3)


async def test_eval_solve_counts_a_sample_without_a_verdict_as_0_points(tmp_path):
    items = [SolveItem(problem=PROBLEM)]
    run = RunFolder(tmp_path / "text")
    summary = await eval_solve(
        items,
        run,
        roles=Roles.from_models(Model(backend(), cache=None)),
        strategy=SingleStrategy(verify_n=1),
        verify_n=2,
    )
    [sample] = run.records()[0]["samples"]
    assert sample["proof"] == PROOF and sample["verifier_scores"] == [None, None]
    assert sample["verifier_mean"] is None and sample["points"] is None and not sample["passed"]
    assert (sample["unscored"], sample["read_out"], sample["score_sources"]) == (2, 0, [None, None])
    assert summary["points"]["first"] == 0 and summary["metrics"]["score"]["value"] == 0
    assert summary["no_verdict"] == 1
    assert (summary["verifications"], summary["unscored_verifications"], summary["read_out_scores"]) == (2, 2, 0)
    build_report(run)
    assert "| samples without a verdict (0 points) | 1 |" in (run.path / "report.md").read_text()

    opted = RunFolder(tmp_path / "auto")
    summary = await eval_solve(
        items,
        opted,
        strategy=SingleStrategy(verify_n=1),
        verify_n=2,
        roles=Roles.from_models(Model(backend(), cache=None), score_mode="auto"),
    )
    [sample] = opted.records()[0]["samples"]
    assert sample["points"] == 3.5 and sample["score_sources"] == ["likelihood", "likelihood"]
    assert summary["no_verdict"] == 0 and summary["read_out_scores"] == 2


# -- the commands -----------------------------------------------------------------------------------------


@pytest.fixture
def server():
    scripted = backend()
    with TinyOpenAIServer(scripted, "roles") as running:
        running.scripted = scripted  # type: ignore[attr-defined]
        yield running


def _model(server) -> list[str]:
    return ["--model", "openai/roles", "--base-url", server.url, "--api-key", "k", "--no-cache"]


def _cli(*args, status: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == status, result.output + result.stderr
    return result


def _flat(text: str) -> str:
    return " ".join(text.split())


def _readouts(server) -> int:
    return sum("prompt_logprobs" in r for r in server.requests)


def test_grade_command_default_and_opt_in(server, tmp_path):
    args = [
        "grade",
        "--problem",
        EXAMPLES / "problem.md",
        "--proof",
        EXAMPLES / "proof_correct.md",
        "-n",
        "2",
        *_model(server),
    ]
    result = _cli(*args, status=1)  # no verdict: exit status 1, as solve without a valid proof
    out = _flat(result.stdout)
    assert out.count("score — format failure") == 2
    assert "aggregate: no verdict: no verification out of 2 produced a score (unscored: 2 of 2)" in out
    assert "points" not in out and _readouts(server) == 0
    assert result.stderr.strip().splitlines()[-1] == (
        "no verdict: none of the 2 verification(s) wrote a valid score; --score-mode auto reads a score out by likelihood"
    )
    data = json.loads(_cli(*args, "--json", status=1).stdout)
    assert data["aggregate"]["points"] is None and data["aggregate"]["unscored"] == 2
    assert [v["score"] for v in data["verifications"]] == [None, None]

    out = _flat(_cli(*args, "--score-mode", "auto").stdout)
    assert out.count("score 0.5 (read-out)") == 2
    assert "-> 3.5 / 7 points (unscored: 0 of 2; 2 scores from a read-out)" in out
    data = json.loads(_cli(*args, "--score-mode", "auto", "--json").stdout)
    assert [v["score_source"] for v in data["verifications"]] == ["likelihood", "likelihood"]
    assert data["aggregate"]["read_out"] == 2


def test_grade_and_solve_batches_say_how_many_have_no_verdict(server, tmp_path):
    out = tmp_path / "graded.jsonl"
    result = _cli("grade", "--input", EXAMPLES / "batch.jsonl", "--output", out, "-n", "2", *_model(server))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["aggregate"]["points"] is None for r in records)
    assert (
        "verdicts: 0 of 2 proof(s), 2 without a verdict; unscored: 4 of 4 verifications; scores from a read-out: 0"
    ) in _flat(result.stderr)

    opted = tmp_path / "opted.jsonl"
    result = _cli(
        "grade",
        "--input",
        EXAMPLES / "batch.jsonl",
        "--output",
        opted,
        "-n",
        "2",
        "--score-mode",
        "auto",
        *_model(server),
    )
    assert (
        "verdicts: 2 of 2 proof(s), 0 without a verdict; unscored: 0 of 4 verifications; "
        "scores from a read-out: 4" in _flat(result.stderr)
    )

    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "q1", "problem": PROBLEM.statement}) + "\n")
    solved = tmp_path / "solved.jsonl"
    result = _cli(
        "solve", "--input", problems, "--output", solved, "--strategy", "single", "--verify-n", "2", *_model(server)
    )
    assert "verdicts: 0 of 1 proof(s), 1 without a verdict; unscored: 2 of 2 verifications" in _flat(result.stderr)


def test_solve_command_shows_no_verdict_and_marks_read_outs(server):
    args = ["solve", "--problem", EXAMPLES / "problem.md", "--strategy", "single", "--verify-n", "2", *_model(server)]
    out = _flat(_cli(*args).stdout)
    assert "verification scores: —, —; mean — (no verdict) (unscored: 2 of 2)" in out
    out = _flat(_cli(*args, "--score-mode", "auto").stdout)
    assert (
        "verification scores: 0.5 (read-out), 0.5 (read-out); mean 0.5 (unscored: 0 of 2; 2 scores from a read-out)"
    ) in out


def test_label_command_default_sends_unscored_proofs_to_review(server, tmp_path):
    source = tmp_path / "proofs.jsonl"
    source.write_text(json.dumps({"id": "x", "problem": PROBLEM.statement, "proof": PROOF}) + "\n")
    out, review = tmp_path / "labels.jsonl", tmp_path / "review.jsonl"
    result = _cli(
        "label",
        "--input",
        source,
        "--output",
        out,
        "--review",
        review,
        "--n",
        "2",
        "--m",
        "1",
        "--k",
        "1",
        *_model(server),
    )
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["status"], record["rule"], record["label"]) == ("review", "no_analyses", None)
    assert record["aggregate"]["unscored"] == 2 and "(unscored: 2 of 2)" in record["reason"]
    assert server.scripted.count("meta_verify") == 0 and _readouts(server) == 0
    assert "unscored: 2 of 2 verifications; scores from a read-out: 0" in _flat(result.stderr)


def _suite(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "dsmv2" / "inputs").mkdir(parents=True)
    problems = [{"id": "1", "question": PROBLEM.statement, "contest": "IMO2025", "problem_idx": "IMO2025-1"}]
    (data / "dsmv2" / "inputs" / "IMO2025.json").write_text(json.dumps(problems))
    return data


def test_eval_commands_print_no_verdict_and_read_out_counts(server, tmp_path):
    run = tmp_path / "solve"
    result = _cli(
        "eval",
        "solve",
        "--suite",
        "imo2025",
        "--data-dir",
        _suite(tmp_path),
        "--run",
        run,
        "--verify-n",
        "2",
        *_model(server),
    )
    out = _flat(result.stdout)
    assert "points: 0 / 7" in out
    assert "no verdict: 1 sample(s) with a proof but no scored verification, counted 0 points" in out
    assert "unscored: 2 of 2 verifications" in out and "read-out scores: 0 of 0 scores" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["no_verdict"] == 1 and json.loads((run / "config.json").read_text())["score_mode"] == "text"

    graded = tmp_path / "graded.jsonl"
    graded.write_text(json.dumps({"id": "g1", "problem": PROBLEM.statement, "proof": PROOF, "points": 7}) + "\n")
    run = tmp_path / "grade"
    result = _cli("eval", "grade", "--file", graded, "--run", run, "-n", "2", *_model(server))
    out = _flat(result.stdout)
    assert "items: 0 scored of 1" in out and "no verdict: 1 item(s), left out of the metrics" in out
    assert "unscored: 2 of 2 verifications" in out
    run = tmp_path / "grade-auto"
    result = _cli("eval", "grade", "--file", graded, "--run", run, "-n", "2", "--score-mode", "auto", *_model(server))
    assert "read-out scores: 2 of 2 scores" in _flat(result.stdout)
    assert json.loads((run / "summary.json").read_text())["counts"]["read_out_scores"] == 2


# -- the service -----------------------------------------------------------------------------------------------


def test_the_service_defaults_to_text_and_marks_read_outs(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app

    settings = ServerSettings(model=Model(backend(), cache=None), db_path=tmp_path / "jobs.sqlite")
    body = {
        "model": "proofcritic/grade",
        "messages": [{"role": "user", "content": f"{PROBLEM.statement}\n## Proof\n{PROOF}"}],
    }
    with TestClient(create_app(settings)) as client:
        plain = client.post("/v1/chat/completions", json=body).json()
        opted = client.post("/v1/chat/completions", json={**body, "proofcritic": {"score_mode": "auto"}}).json()
        refused = client.post("/v1/chat/completions", json={**body, "proofcritic": {"score_mode": "sometimes"}})
    content, evidence = plain["choices"][0]["message"]["content"], plain["proofcritic"]
    assert content.startswith("No score: none of the 1 verifications produced one, so the proof has no verdict.")
    assert evidence["mean_score"] is None and evidence["aggregate"]["unscored"] == 1
    assert evidence["verifications"][0]["score"] is None
    content, evidence = opted["choices"][0]["message"]["content"], opted["proofcritic"]
    assert content.startswith("Score: 0.5 ") and "(unscored: 0 of 1; 1 score from a read-out)" in content
    assert "## Verification 1: score 0.5 (read-out)" in content
    assert evidence["verifications"][0]["score_source"] == "likelihood" and evidence["aggregate"]["read_out"] == 1
    assert refused.status_code == 400
