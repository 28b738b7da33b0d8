"""``eval critic`` (#19 point 5): a critic's verdicts on an answer suite's solutions against the
answer check (math-verify), and the corrections of the solutions it rejects.

The models are scripted (stand-ins for the MODEL only): each solution carries a tag the critic
and the corrector read, so every verdict and every correction is known and the metrics have
hand-computed values. The real roles, parsers, answer check, run folder and report run on them;
with tools, the critic's code runs in the REAL sandbox and its output decides the verdict."""

from __future__ import annotations

import json
import re

import pytest
from scripted import ScriptedBackend, generation_text, verification_text
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic.benchmarks._items import SolveItem
from proofcritic.benchmarks._run import RunFolder
from proofcritic.benchmarks.eval_critic import (
    AnswerCritic,
    Corrector,
    critique_mode,
    eval_critic,
    load_recorded_solutions,
    summarize_critic_run,
)
from proofcritic.benchmarks.eval_solve import ANSWER_REQUEST
from proofcritic.benchmarks.report import build_report, compare_markdown, compare_runs
from proofcritic.cli import app
from proofcritic.errors import InputError
from proofcritic.generator import Generator
from proofcritic.llm import CompletionCache, Model
from proofcritic.tools import PythonTool, SandboxPool
from proofcritic.types import Problem

GOLD = {"p1": "$\\frac{1}{2}$", "p2": "8", "p3": "$1, 2$"}
ITEMS = [
    SolveItem(problem=Problem(id=pid, statement=f"Problem {pid}: find it.", max_points=1.0), answer=gold)
    for pid, gold in GOLD.items()
]
# (problem, sample) -> the generated answer, the critic's verdict (1 / 0 / None: no score), the
# corrector's answer; the comment is the outcome
PLAN = {
    ("p1", 0): ("\\boxed{0.5}", 1, None),  # right, accepted: kept
    ("p1", 1): ("\\boxed{1/3}", 0, "\\boxed{\\frac{1}{2}}"),  # wrong, rejected, corrected right: fixed
    ("p2", 0): ("\\boxed{8}", 0, "\\boxed{9}"),  # right, rejected, corrected wrong: broken
    ("p2", 1): ("\\boxed{7}", 1, None),  # wrong, accepted: missed
    ("p3", 0): ("\\boxed{3}", 0, "\\boxed{3}"),  # wrong, rejected, still wrong: not fixed
    ("p3", 1): ("Final answer: $n \\in \\{2, 1\\}$", None, None),  # right, no verdict
}


def _tag(prompt: str) -> tuple[str, int]:
    match = re.search(r"\[solution (p\d)-(\d)\]", prompt)
    assert match, prompt[-300:]
    return match.group(1), int(match.group(2))


def _script(call) -> str:
    if call.role == "generate":
        assert ANSWER_REQUEST in call.prompt
        pid = re.search(r"Problem (p\d):", call.prompt).group(1)
        sample = call.request.config.seed or 0
        return generation_text(f"[solution {pid}-{sample}] Working.\n\n{PLAN[(pid, sample)][0]}", 1.0)
    key = _tag(call.prompt)
    if call.role == "critique_answer":
        verdict = PLAN[key][1]
        if verdict is None:
            return "I am not sure what to make of this."  # no score marker: no verdict in score mode text
        return verification_text(verdict, analysis=f"Review of {key}.")
    assert call.role == "correct_answer", call.role
    assert f"Review of {key}." in call.prompt  # the critique is shown to the corrector
    return generation_text(f"Corrected.\n\n{PLAN[key][2]}", 1.0)


def _roles(backend, critic_backend=None):
    model = Model(backend)
    critic_model = Model(critic_backend) if critic_backend is not None else model
    return Generator(model), AnswerCritic(critic_model), Corrector(critic_model)


def _metric(summary, name):
    return summary["metrics"][name]["value"]


async def test_known_verdicts_and_corrections_give_known_metrics(tmp_path):
    backend = ScriptedBackend(_script)
    generator, critic, corrector = _roles(backend)
    run = RunFolder(tmp_path / "run")
    summary = await eval_critic(
        ITEMS, run, critic=critic, corrector=corrector, generator=generator, k=2, info={"mode": "self-critique"}
    )
    assert backend.count("generate") == 6 and backend.count("critique_answer") == 6
    assert backend.count("correct_answer") == 3  # only the rejected solutions are corrected
    records = {r["id"]: r for r in run.records()}
    outcomes = {(pid, s["sample"]): s["outcome"] for pid, r in records.items() for s in r["samples"]}
    assert outcomes == {
        ("p1", 0): "kept",
        ("p1", 1): "fixed",
        ("p2", 0): "broken",
        ("p2", 1): "missed",
        ("p3", 0): "not fixed",
        ("p3", 1): "no verdict",
    }
    fixed = records["p1"]["samples"][1]
    assert fixed["answer"] == "1/3" and not fixed["correct"] and fixed["verdict"] == "incorrect"
    assert fixed["corrected"]["by"] == "critic" and fixed["corrected"]["correct"]
    assert fixed["corrected"]["answer"] == "\\frac{1}{2}"
    assert records["p3"]["samples"][1]["correct"] and records["p3"]["samples"][1]["corrected"] is None
    # hand-computed: 3 of 6 right; 5 verdicts, 3 right (p1-0, p1-1, p3-0); on the 2 right
    # solutions with a verdict 1 accepted, on the 3 wrong ones 2 rejected
    assert _metric(summary, "generation_accuracy") == pytest.approx(3 / 6)
    assert _metric(summary, "critique_accuracy") == pytest.approx(3 / 5)
    assert _metric(summary, "critique_on_correct") == pytest.approx(1 / 2)
    assert _metric(summary, "critique_on_incorrect") == pytest.approx(2 / 3)
    assert _metric(summary, "critique_balanced") == pytest.approx((1 / 2 + 2 / 3) / 2)
    # wrong and rejected: p1-1 fixed, p3-0 not; over all 3 wrong with a verdict: 1 fixed
    assert _metric(summary, "correction_accuracy") == pytest.approx(1 / 2)
    assert _metric(summary, "fix_rate") == pytest.approx(1 / 3)
    # right and rejected: p2-0 broken; over the 2 right with a verdict
    assert _metric(summary, "break_rate") == pytest.approx(1.0)
    assert _metric(summary, "broken_share") == pytest.approx(1 / 2)
    # after: p1-0, p1-1 (fixed), p3-1 (no verdict, kept) right
    assert _metric(summary, "accuracy_after") == pytest.approx(3 / 6)
    assert summary["counts"]["rejected"] == 3 and summary["counts"]["no_verdict"] == 1
    assert summary["outcomes"] == {
        "kept": 1,
        "survived": 0,
        "broken": 1,
        "missed": 1,
        "fixed": 1,
        "not fixed": 1,
        "no verdict": 1,
    }
    assert summary["mode"] == "self-critique" and any("no verdict" in note for note in summary["notes"])
    # the report: rebuilt from the records, with the figures and one row per solution
    run.create({"command": "eval critic", "suite": "test", "mode": "self-critique"})
    html_path, md_path = build_report(run)
    md = md_path.read_text()
    assert "| critique balanced | 0.583" in md
    assert "| critique | self-critique |" in md and "| p2 | 0 | 8 | 8 (right) | incorrect | 9 (wrong) | broken |" in md
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert json.loads(run.summary_path.read_text())["metrics"] == summary["metrics"]


def test_summary_with_only_right_solutions_has_undefined_correction_metrics():
    records = [
        {
            "id": "a",
            "kind": "critic",
            "samples": [
                {"correct": True, "verdict": "correct", "outcome": "kept", "corrected": None},
                {"correct": True, "verdict": "incorrect", "outcome": "survived", "corrected": {"correct": True}},
            ],
        },
        {"id": "b", "error": "boom", "error_kind": "input"},
    ]
    summary = summarize_critic_run(records)
    assert summary["errors"] == 1 and summary["solutions"] == 2
    assert _metric(summary, "correction_accuracy") is None and _metric(summary, "fix_rate") is None
    assert _metric(summary, "critique_on_incorrect") is None
    assert _metric(summary, "critique_balanced") == pytest.approx(1 / 2)  # only the right ones: their recall
    assert _metric(summary, "break_rate") == 0.0 and _metric(summary, "accuracy_after") == 1.0


async def test_recorded_solutions_cross_model_and_the_generator_corrects(tmp_path):
    """Solutions recorded by `eval solve` (a run folder) are critiqued by another model; the
    generator's model corrects: the critic's backend never gets a correction call."""
    solve_run = tmp_path / "solve"
    solve_run.mkdir()
    (solve_run / "config.json").write_text(json.dumps({"command": "eval solve", "model": "openai/small"}))
    records = [
        {"id": "p1", "kind": "solve", "samples": [{"proof": "[solution p1-1] Working. \\boxed{1/3}"}]},
        {"id": "p2", "kind": "solve", "samples": [{"proof": "[solution p2-0] \\boxed{8}"}, {"proof": "x"}]},
    ]
    (solve_run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recorded, model_name = load_recorded_solutions(solve_run)
    assert model_name == "openai/small" and recorded["p2"][0].startswith("[solution p2-0]")
    assert critique_mode(model_name, "openai/big") == "cross-model critique"
    assert critique_mode("openai/big", "openai/big") == "self-critique"

    generator_backend, critic_backend = ScriptedBackend(_script), ScriptedBackend(_script)
    _, critic, _ = _roles(generator_backend, critic_backend)
    corrector = Corrector(Model(generator_backend))
    run = RunFolder(tmp_path / "run")
    summary = await eval_critic(
        ITEMS,
        run,
        critic=critic,
        corrector=corrector,
        recorded=recorded,
        corrector_name="generator",
        k=1,
        info={"mode": "cross-model critique"},
    )
    assert critic_backend.count("critique_answer") == 2 and critic_backend.count("correct_answer") == 0
    assert generator_backend.count("correct_answer") == 2 and generator_backend.count("generate") == 0
    by_id = {r["id"]: r for r in run.records()}
    assert by_id["p3"]["error_kind"] and "no recorded solution for problem p3" in by_id["p3"]["error"]
    assert [s["outcome"] for s in by_id["p1"]["samples"]] == ["fixed"]
    assert [s["source"] for s in by_id["p2"]["samples"]] == ["recorded"]  # k=1: the first recorded
    assert by_id["p1"]["samples"][0]["corrected"]["by"] == "generator"
    assert summary["errors"] == 1 and summary["solutions"] == 2


def test_recorded_solutions_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"solution": "no id"}\n')
    with pytest.raises(InputError, match="no id"):
        load_recorded_solutions(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "a", "solution": "  "}\n')
    with pytest.raises(InputError, match="holds no solution"):
        load_recorded_solutions(empty)
    with pytest.raises(InputError, match="no recorded solutions"):
        load_recorded_solutions(tmp_path / "missing")
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"id": "a", "solution": "one", "model": "m"}\n{"id": "a", "proof": "two"}\n')
    assert load_recorded_solutions(plain) == ({"a": ["one", "two"]}, "m")


async def test_resume_after_a_partial_output_and_the_cache_replays(tmp_path):
    """A run that stopped after one problem resumes with the others only; a rerun into a new
    folder with the completion cache makes no new backend call."""
    cache_dir = tmp_path / "cache"
    backend = ScriptedBackend(_script)

    def roles():
        model = Model(backend, cache=CompletionCache(cache_dir))
        return Generator(model), AnswerCritic(model), Corrector(model)

    run = RunFolder(tmp_path / "run")
    generator, critic, corrector = roles()
    await eval_critic(ITEMS[:1], run, critic=critic, corrector=corrector, generator=generator, k=2)
    first = len(backend.calls)
    assert first == 2 + 2 + 1  # p1: two solutions, two critiques, one correction
    lines = run.items_path.read_text().splitlines()
    assert len(lines) == 1
    generator, critic, corrector = roles()
    summary = await eval_critic(ITEMS, run, critic=critic, corrector=corrector, generator=generator, k=2)
    assert len(backend.calls) - first == 2 * (2 + 2) + 2  # p2 and p3 only: p1's calls are not repeated
    assert not any("[solution p1-" in c.prompt for c in backend.calls[first:])
    assert summary["solutions"] == 6 and summary["outcomes"]["fixed"] == 1
    before = len(backend.calls)
    generator, critic, corrector = roles()
    again = await eval_critic(
        ITEMS, RunFolder(tmp_path / "run2"), critic=critic, corrector=corrector, generator=generator, k=2
    )
    assert len(backend.calls) == before  # every call replayed from the cache
    assert again["metrics"] == summary["metrics"]


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=1) as shared:
        yield shared


async def test_with_tools_the_critics_code_runs_and_its_output_decides(tmp_path, pool):
    """With tools the critique is a CRITIC conversation: the critic's program runs in the real
    sandbox, its output is fed back, and the verdict follows what it printed."""

    def script(call):
        if call.role == "generate":
            return generation_text("[solution p2-0] I think it is \\boxed{7}.", 1.0)
        if call.role == "correct_answer":
            return generation_text("Recomputed: \\boxed{8}", 1.0)
        assert call.role == "critique_answer"
        assert "## Checking by running code" in call.prompt
        users = [m.content for m in call.request.messages if m.role == "user"]
        if len(users) == 1:
            assert call.request.config.stop  # a turn that may call a tool stops after a block
            return "Let me compute it.\n\n```python\nprint(2 ** 3)\n```"
        printed = re.search(r"```text\n(.*?)\n```", users[-1], re.DOTALL).group(1).strip()
        return verification_text(
            1 if "\\boxed{" + printed + "}" in call.prompt else 0, analysis=f"It printed {printed}."
        )

    backend = ScriptedBackend(script)
    generator, critic, corrector = _roles(backend)
    run = RunFolder(tmp_path / "run")
    summary = await eval_critic(
        ITEMS[1:2], run, critic=critic, corrector=corrector, generator=generator, tools=[PythonTool(pool)]
    )
    [record] = run.records()
    [sample] = record["samples"]
    assert [c["stdout"] for c in sample["tool_calls"]] == ["8\n"]  # computed by the sandbox
    assert "It printed 8." in sample["critique"] and sample["verdict"] == "incorrect"
    assert sample["outcome"] == "fixed" and summary["counts"]["tool_calls"] == 1
    assert backend.count("critique_answer") == 2  # the block's turn, then the verdict after the output


async def test_non_answer_items_are_refused(tmp_path):
    generator, critic, corrector = _roles(ScriptedBackend(_script))
    items = [SolveItem(problem=Problem(id="x", statement="Prove it."))]
    with pytest.raises(InputError, match="answer suite"):
        await eval_critic(items, RunFolder(tmp_path / "r"), critic=critic, corrector=corrector, generator=generator)


async def test_compare_two_critic_runs_paired_by_problem(tmp_path):
    """`compare` takes critic runs: run B's critic accepts every solution; each metric is the
    share over the solutions it is over, its difference from run A with a paired interval."""

    def lenient(call):
        if call.role == "critique_answer":
            return verification_text(1, analysis="Looks right.")
        return _script(call)

    runs = []
    for name, script in (("strict", _script), ("lenient", lenient)):
        generator, critic, corrector = _roles(ScriptedBackend(script))
        run = RunFolder(tmp_path / name)
        run.create({"command": "eval critic"})
        await eval_critic(ITEMS, run, critic=critic, corrector=corrector, generator=generator, k=2)
        runs.append(run)
    comparison = compare_runs(*runs, n_resamples=200)
    assert comparison["kind"] == "critic" and comparison["paired"] == 3
    m = comparison["metrics"]
    # A: 3 of 5 verdicts right; B: 6 verdicts, the 3 right solutions accepted, the 3 wrong ones too
    assert m["critique_accuracy"]["values"] == pytest.approx([3 / 5, 3 / 6])
    assert m["critique_accuracy"]["differences"][1]["difference"] == pytest.approx(3 / 6 - 3 / 5)
    assert m["critique_on_incorrect"]["values"] == pytest.approx([2 / 3, 0.0])
    assert m["correction_accuracy"]["values"][1] is None  # B rejected nothing: undefined
    assert m["accuracy_after"]["values"] == pytest.approx([0.5, 0.5])
    assert "tokens per item" in m
    text = compare_markdown(comparison)
    assert "# Comparison of critic runs" in text and "| critique_on_incorrect | 0.667 | 0 |" in text


def _answers_file(tmp_path):
    data = tmp_path / "answers.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i.problem.id, "problem": i.problem.statement, "answer": i.answer}) + "\n" for i in ITEMS
        )
    )
    return data


def test_cli_cross_model_critique_through_two_servers(tmp_path):
    """`eval critic` with --critic naming another server's model: the generator's server only
    writes solutions, the critic's server critiques and corrects (--corrector critic); the
    printed summary, summary.json and the report name the cross-model mode and the metrics."""
    data = _answers_file(tmp_path)
    generator_backend, critic_backend = ScriptedBackend(_script), ScriptedBackend(_script)
    run = tmp_path / "run"
    with TinyOpenAIServer(generator_backend, "gen") as gen, TinyOpenAIServer(critic_backend, "crit") as crit:
        args = ["eval", "critic", "--suite", "answers", "--file", str(data), "--run", str(run), "-k", "2"]
        args += ["--model", "openai/gen", "--base-url", gen.url, "--api-key", "x", "--no-cache", "--seed", "0"]
        args += ["--critic", f"openai/crit,base_url={crit.url},name=big-critic"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert generator_backend.count("generate") == 6 and len(generator_backend.calls) == 6
    assert critic_backend.count("critique_answer") == 6 and critic_backend.count("correct_answer") == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mode"] == "cross-model critique" and summary["critic"] == "big-critic"
    assert summary["generator"] == "openai/gen" and summary["corrector"] == "critic (big-critic)"
    assert summary["metrics"]["critique_accuracy"]["value"] == pytest.approx(3 / 5)
    assert summary["metrics"]["correction_accuracy"]["value"] == pytest.approx(1 / 2)
    text = " ".join(result.output.split())
    assert "critique: cross-model critique" in text and "critique accuracy: 0.600" in text
    assert "outcomes: kept 1, survived 0, broken 1, missed 1, fixed 1, not fixed 1, no verdict 1" in text
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["critic"]["model"] == "openai/crit" and config["mode"] == "cross-model critique"
    assert "| critic | big-critic |" in (run / "report.md").read_text()


def test_cli_refusals_and_plan(tmp_path):
    data = _answers_file(tmp_path)
    base = ["eval", "critic", "--run", str(tmp_path / "run")]

    def refused(*extra):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert "give --suite" in refused()
    proofs = tmp_path / "problems.jsonl"
    proofs.write_text(json.dumps({"id": "x", "problem": "Prove it."}) + "\n")
    assert "is not an answer suite" in refused("--suite", "problems", "--file", str(proofs))
    assert "choose critic or generator" in refused("--suite", "answers", "--file", str(data), "--corrector", "me")
    assert "needs --tools" in refused("--suite", "answers", "--file", str(data), "--max-tool-calls", "1")
    missing = refused("--suite", "answers", "--file", str(data), "--solutions", str(tmp_path / "none.jsonl"))
    assert "no recorded solutions" in missing
    plan = CliRunner().invoke(
        app,
        [*base, "--suite", "answers", "--file", str(data), "-k", "2", "--tools", "--max-tool-calls", "2", "--dry-run"],
    )
    assert plan.exit_code == 0, plan.output
    text = " ".join(plan.stdout.split())
    assert "eval critic answers -k 2 (self-critique), 3 problem(s)" in text
    assert "verification" in text and "correction" in text and not (tmp_path / "run").exists()

    def mode(*extra):
        result = CliRunner().invoke(app, [*base, "--suite", "answers", "--file", str(data), "--dry-run", *extra])
        assert result.exit_code == 0, result.output
        return re.search(r"\((self-critique|cross-model critique)\)", result.stdout).group(1)

    # the mode compares the models, not the critic's display name
    assert mode("--model", "openai/gen", "--critic", "openai/gen,name=my-critic") == "self-critique"
    assert mode("--model", "openai/gen", "--critic", "openai/big") == "cross-model critique"
