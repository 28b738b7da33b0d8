"""``solve --strategy tora`` (#19 point 2): the generator runs ```python blocks mid-solution.

The model is scripted (a stand-in for the MODEL only): its turns are written here, and each code
block it writes runs in the REAL sandbox (SandboxPool), whose real output must reach the next
turn's prompt, the transcript and the parsed solution; a tool output that changes the answer
changes what the answer check says."""

from __future__ import annotations

import pytest
from scripted import ScriptedBackend, generation_text, verification_text

from proofcritic.benchmarks._items import SolveItem
from proofcritic.benchmarks._run import RunFolder
from proofcritic.benchmarks.eval_solve import eval_solve
from proofcritic.budget import Budget, budget_scope
from proofcritic.llm import Model
from proofcritic.pipelines import Roles
from proofcritic.pipelines.solve import get_strategy
from proofcritic.pipelines.tora import TOOL_STOP, ToraStrategy, tora_text
from proofcritic.tools import PythonTool, SandboxPool
from proofcritic.types import Problem

PROBLEM = Problem(id="sum", statement="Find the sum of the squares of the integers from 1 to 20.")


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as shared:
        yield shared


def code_turn(code: str, before: str = "Let me compute it.") -> str:
    """A generator turn that asks for a run, cut before the closing fence (as a backend that
    honours the stop string returns it)."""
    return f"{before}\n\n```python\n{code}"


def feedbacks(call) -> list[str]:
    return [m.content for m in call.request.messages if m.role == "user"][1:]


def answer_from_output(call) -> str:
    """The final turn: the answer is the number the first run printed (read from the prompt)."""
    first = feedbacks(call)[0]
    value = first.split("```output\n", 1)[1].split("\n", 1)[0].strip()
    return generation_text(f"By the computation the sum is {value}.\n\n\\boxed{{{value}}}", 1.0)


async def test_code_runs_in_the_sandbox_and_its_output_is_fed_back(pool):
    def script(call):
        if call.role == "verify":
            return verification_text(1.0)
        assert call.role == "tora"
        turn = len(feedbacks(call))
        if turn == 0:
            assert call.request.config.stop and TOOL_STOP[0] in call.request.config.stop
            return code_turn("print(sum(k * k for k in range(1, 21)))")
        if turn == 1:
            return code_turn("print(1 / 0)", before="And a check that fails.")
        return answer_from_output(call) if "2870" in call.prompt else "no output seen"

    backend = ScriptedBackend(script)
    strategy = ToraStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=4)
    result = await strategy.solve(PROBLEM, Roles.from_models(Model(backend)))
    assert backend.count("tora") == 3 and backend.count("verify") == 1
    first, second = (feedbacks(c) for c in backend.calls[1:3])
    assert "```output\n2870\n```" in first[0] and "3 more blocks" in first[0]  # computed by the sandbox
    assert "did not run to the end" in second[1] and "ZeroDivisionError" in second[1]
    assert result.proof is not None and "\\boxed{2870}" in result.proof
    assert result.stop_reason == "solved after 2 code run(s), 1 with an error or a limit"
    assert result.rounds == 2 and result.mean_score == 1.0
    tools = [s for s in result.transcript if s["step"] == "tool"]
    assert [t["stdout"] for t in tools] == ["2870\n", ""]
    assert tools[0]["ok"] and not tools[1]["ok"] and tools[1]["error"].startswith("ZeroDivisionError")
    generate = next(s for s in result.transcript if s["step"] == "generate")
    assert generate["tool_calls"] == 2 and generate["answer"] == "2870"
    raw = generate["raw"]  # the whole conversation: code, outputs and errors, in order
    assert raw.index("range(1, 21)") < raw.index("```output\n2870") < raw.index("1 / 0") < raw.index("ZeroDivision")


async def test_max_tool_calls_then_no_stop_and_no_run(pool):
    runs = []

    def script(call):
        turn = len(feedbacks(call))
        if turn < 2:
            runs.append(turn)
            return code_turn(f"print('run', {turn})")
        assert not call.request.config.stop  # the final turn may not call a tool
        assert "You cannot run any more code" in feedbacks(call)[-1]
        return generation_text("```python\nprint('never run')\n```\nDone: \\boxed{1}", 0.5)

    backend = ScriptedBackend(script)
    strategy = ToraStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=2, verify_n=0)
    result = await strategy.solve(PROBLEM, Roles.from_models(Model(backend)))
    assert len(backend.calls) == 3 and result.rounds == 2
    assert [s["stdout"] for s in result.transcript if s["step"] == "tool"] == ["run 0\n", "run 1\n"]
    assert "never run" in result.proof and result.stop_reason.endswith("(the code-run limit reached)")
    assert strategy.plan().calls == {"generation": 3}


async def test_timeout_is_reported_to_the_model(pool):
    def script(call):
        if not feedbacks(call):
            return code_turn("while True:\n    pass")
        assert "time limit" in feedbacks(call)[-1]
        return generation_text("The search did not finish. \\boxed{0}", 0.0)

    strategy = ToraStrategy(tool_objects=[PythonTool(pool, timeout=1)], verify_n=0)
    result = await strategy.solve(PROBLEM, Roles.from_models(Model(ScriptedBackend(script))))
    [tool] = [s for s in result.transcript if s["step"] == "tool"]
    assert tool["limit_hit"] == "timeout" and not tool["ok"]


async def test_budget_and_registry(pool):
    def script(call):
        return code_turn(f"print({len(feedbacks(call))})")

    strategy = ToraStrategy(tool_objects=[PythonTool(pool)], verify_n=0)
    with budget_scope(Budget(max_calls=2)):
        result = await strategy.solve(PROBLEM, Roles.from_models(Model(ScriptedBackend(script))))
    assert result.budget_limited and result.stop_reason.startswith("budget") and result.proof is None
    assert get_strategy("tora").config.max_tool_calls == 4
    assert get_strategy("tora", tools="python", max_tool_calls=2).config.tools == ["python"]
    assert tora_text(["a ```python\nx\n```", "b"], ["1"]) == "a ```python\nx\n```\n\n```output\n1\n```\n\nb"


async def test_eval_solve_answer_suite_with_tora_the_output_changes_the_answer(pool, tmp_path):
    """On an answer item the tool output is the answer: the real sandbox's 2870 is right; a
    scripted run that computes the wrong range gets 2470, which the answer check marks wrong."""

    def script(call):
        if not feedbacks(call):
            upper = 21 if call.request.config.seed % 2 == 0 else 20  # the two samples' seeds differ by 1
            return code_turn(f"print(sum(k * k for k in range(1, {upper})))")
        return answer_from_output(call)

    backend = ScriptedBackend(script)
    strategy = ToraStrategy(tool_objects=[PythonTool(pool)], verify_n=0)
    items = [SolveItem(problem=PROBLEM.model_copy(update={"max_points": 1.0}), answer="2870")]
    run = RunFolder(tmp_path / "run")
    summary = await eval_solve(items, run, roles=Roles.from_models(Model(backend)), strategy=strategy, k=2)
    [record] = run.records()
    answers = [s["answer"] for s in record["samples"]]
    correct = [s["correct"] for s in record["samples"]]
    assert sorted(answers) == ["2470", "2870"] and correct == [a == "2870" for a in answers]
    assert summary["metrics"]["accuracy"]["value"] == 0.5 and summary["metrics"]["pass@k"]["value"] == 1.0
    assert backend.count("verify") == 0
