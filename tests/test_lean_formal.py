"""The formal step: a model asked for a Lean proof, checked by the real ``lean``.

The model is a scripted stand-in (it answers fixed texts) or SmolLM2; the checker is always
the real binary on prelude files (the IMO-ProofBench statements need Mathlib, which the
local binary lacks: they are only loaded here, and shown to be a set-up error).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proofcritic.benchmarks import load_lean_problems
from proofcritic.errors import SetupError
from proofcritic.lean_checker import (
    LocalLeanChecker,
)
from proofcritic.lean_checker.samples import PRELUDE, PRELUDE_LINES, numeral
from proofcritic.llm import Backend, ChatRequest, Completion, GenerateConfig, Model
from proofcritic.pipelines import SolveResult
from proofcritic.pipelines.formal import (
    FormalProver,
    extract_lean,
    formal_prove,
    join_evidence,
    statement_preserved,
)
from proofcritic.types import Problem

PROBLEM = Problem(id="two-plus-two", statement="Show that two plus two is four.")
THEOREM = f"theorem two_two : Eq (N.add {numeral(2)} {numeral(2)}) {numeral(4)}"
STATEMENT = PRELUDE + "\n-- the problem, formally\n" + THEOREM + " := sorry\n"
GOOD = PRELUDE + "\n" + THEOREM + " :=\n  Eq.refl _\n"
WRONG = PRELUDE + "\n" + THEOREM + " :=\n  Eq.refl N.zero\n"


class Answers(Backend):
    """A stand-in for a model: answers the i-th request with ``script(i, prompt)``."""

    name = "answers"
    model = "fixed"

    def __init__(self, script: Callable[[int, str], str]):
        self.script = script
        self.prompts: list[str] = []

    async def generate(self, request: ChatRequest) -> list[Completion]:
        prompt = "\n".join(m.content for m in request.messages)
        self.prompts.append(prompt)
        text = self.script(len(self.prompts) - 1, prompt)
        return [Completion(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=10)] * request.config.n


def fenced(code: str, prose: str = "Here is the proof.") -> str:
    return f"{prose}\n\n```lean\n{code}```\n"


def prover(script) -> tuple[FormalProver, Answers]:
    backend = Answers(script)
    return FormalProver(Model(backend)), backend


def test_extract_lean_takes_the_last_lean_block():
    text = "Draft:\n```lean\ntheorem a : X := sorry\n```\nFinal:\n```lean4\ntheorem a : X := y\n```\n```\nnot lean\n```"
    assert extract_lean(text) == "theorem a : X := y\n"
    assert extract_lean("```\ntheorem b : Y := z\n```") == "theorem b : Y := z\n"
    assert extract_lean("no code here") is None
    assert extract_lean("```lean\ntheorem cut : X :=\n  by simp") == "theorem cut : X :=\n  by simp\n"


def test_statement_must_be_kept():
    assert statement_preserved(STATEMENT, GOOD) == (True, "")
    changed = GOOD.replace(f"{numeral(4)} :=", f"{numeral(4)} → Eq N.zero N.zero :=")
    ok, why = statement_preserved(STATEMENT, changed)
    assert not ok and "theorem" in why
    ok, why = statement_preserved(STATEMENT, GOOD.replace("prelude\n", "", 1))
    assert not ok and "'prelude'" in why


async def test_correct_lean_proof_passes(lean_bin):
    formal, backend = prover(lambda i, prompt: fenced(GOOD))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await formal_prove(formal, checker, PROBLEM, STATEMENT)
    assert check.passed and check.status == "passed" and check.result.ok
    assert check.proof == GOOD and len(check.attempts) == 1
    assert check.result.axioms["two_two"] == []
    assert THEOREM in backend.prompts[0] and PROBLEM.statement in backend.prompts[0]
    assert check.usage.calls == 1


async def test_lean_messages_go_back_to_the_model(lean_bin):
    formal, backend = prover(lambda i, prompt: fenced(WRONG if i == 0 else GOOD))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await formal_prove(formal, checker, PROBLEM, STATEMENT, attempts=3)
    assert check.passed and [a.status for a in check.attempts] == ["failed", "passed"]
    first = check.attempts[0].result.errors[0]
    assert first.line == PRELUDE_LINES + 3 and first.text.startswith("Type mismatch")
    assert "Type mismatch" not in backend.prompts[0]
    assert f"{first.line}:{first.column}: error: Type mismatch" in backend.prompts[1]


async def test_every_failure_is_a_status(lean_bin):
    answers = {
        0: "I could not do it.",
        1: fenced(GOOD.replace(numeral(4) + " :=", numeral(3) + " :=")),
        2: fenced(STATEMENT),
    }
    formal, _ = prover(lambda i, prompt: answers[i])
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await formal_prove(formal, checker, PROBLEM, STATEMENT, attempts=3)
    assert not check.passed
    assert [a.status for a in check.attempts] == ["no_lean_block", "statement_changed", "failed"]
    assert check.attempts[1].result is None  # a changed statement is not even checked
    assert check.attempts[2].result.uses_sorry and check.status == "failed"


async def test_formal_check_joins_the_evidence(lean_bin):
    formal, _ = prover(lambda i, prompt: fenced(GOOD))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await formal_prove(formal, checker, PROBLEM, STATEMENT)
    solved = SolveResult(
        problem_id=PROBLEM.id, strategy="single", proof="Two plus two is four.", transcript=[{"step": "generate"}]
    )
    joined = join_evidence(solved, check)
    assert joined.transcript[0] == {"step": "generate"} and solved.transcript == [{"step": "generate"}]
    entry = joined.transcript[-1]
    assert entry["step"] == "formal" and entry["passed"] is True and entry["proof"] == GOOD
    assert SolveResult.model_validate_json(joined.model_dump_json()).transcript[-1]["status"] == "passed"


async def test_proofbench_statements_load_and_need_mathlib(lean_bin):
    problems = load_lean_problems()
    assert len(problems) == 60 and problems[0].problem.id == "PB-Basic-001"
    assert all("import Mathlib" in p.lean_statement and "sorry" in p.lean_statement for p in problems)
    first = problems[0]
    # the model keeps the statement; the prelude-only lean cannot import Mathlib (it has not even
    # Init): a set-up error that says how to give it a Lake project, not a failed proof
    formal, _ = prover(lambda i, prompt: fenced(first.lean_statement.replace(":= by sorry", ":= by\n  ext f\n  simp")))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        with pytest.raises(SetupError, match=r"no Init library .*--project DIR"):
            await formal_prove(formal, checker, first.problem, first.lean_statement)


@pytest.mark.slow
async def test_smollm2_fails_cleanly(lean_bin, smol_backend):
    formal = FormalProver(Model(smol_backend), config=GenerateConfig(max_tokens=16, temperature=0.0))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await formal_prove(formal, checker, PROBLEM, STATEMENT, attempts=1)
    assert not check.passed and len(check.attempts) == 1
    attempt = check.attempts[0]
    assert attempt.raw.strip() and attempt.status in {"no_lean_block", "statement_changed", "failed"}
    assert attempt.reasons
    assert check.usage.completion_tokens > 0


async def test_a_prompt_set_may_bring_its_own_formal_template(tmp_path):
    import shutil

    from proofcritic.promptset import PromptSet

    folder = tmp_path / "mine"
    shutil.copytree(PromptSet.load().directory, folder)
    (folder / "formal_prove.j2").unlink()
    without = FormalProver(Model(Answers(lambda i, p: "")), prompts=PromptSet.load(folder))
    assert "Replace the `sorry`" in without.messages(PROBLEM, STATEMENT)[0].content  # the built-in one
    (folder / "formal_prove.txt").write_text("Prove {problem_id} in Lean:\n{lean_statement}\n{feedback}")
    mine = FormalProver(Model(Answers(lambda i, p: "")), prompts=PromptSet.load(folder))
    assert mine.messages(PROBLEM, STATEMENT, "fix line 3")[0].content.startswith("Prove two-plus-two in Lean:\nprelude")
    (folder / "formal_prove.txt").write_text("Prove {lean_proof}")
    from proofcritic.errors import PromptError

    with pytest.raises(PromptError, match="lean_proof"):
        FormalProver(Model(Answers(lambda i, p: "")), prompts=PromptSet.load(folder))


def test_lean_prove_command_over_a_real_openai_server(tmp_path, lean_bin, monkeypatch):
    """`proofcritic lean-prove`: the model behind a real OpenAI-compatible HTTP server (a fixed
    answer per problem), the real lean, a resumable JSONL output."""
    import json

    from servers.tiny_openai_server import TinyOpenAIServer
    from typer.testing import CliRunner

    from proofcritic.cli import app

    other_theorem = f"theorem three : Eq (N.add {numeral(1)} {numeral(2)}) {numeral(3)}"
    other_statement = PRELUDE + "\n" + other_theorem + " := sorry\n"

    def script(i: int, prompt: str) -> str:
        return fenced(GOOD) if "two_two" in prompt else fenced(PRELUDE + "\n" + other_theorem + " := Eq.refl N.zero\n")

    source = tmp_path / "problems.jsonl"
    rows = [
        {"id": "p1", "statement": PROBLEM.statement, "lean_statement": STATEMENT},
        {"id": "p2", "statement": "Show that one plus two is three.", "lean_statement": other_statement},
        {"id": "p3", "statement": "No Lean statement here."},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    backend = Answers(script)
    with TinyOpenAIServer(backend, "fixed") as server:
        args = [
            "lean-prove",
            "--input",
            str(source),
            "--output",
            str(out),
            "--attempts",
            "2",
            "--model",
            "openai/fixed",
            "--base-url",
            server.url,
            "--api-key",
            "x",
            "--no-cache",
        ]
        first = CliRunner().invoke(app, args)
        calls = len(backend.prompts)
        again = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output  # p3 failed: the batch exits 1 with a summary line
    assert (
        first.stderr.strip().splitlines()[-1] == "1 of 3 items failed: input error: record has no 'lean_statement' text"
    )
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["p1"].get("passed") is True and len(records["p1"]["attempts"]) == 1, records["p1"]
    assert records["p2"]["passed"] is False and [a["status"] for a in records["p2"]["attempts"]] == ["failed", "failed"]
    assert "Type mismatch" in records["p2"]["attempts"][1]["result"]["messages"][0]["text"]
    assert records["p3"]["error_kind"] == "input" and "lean_statement" in records["p3"]["error"]
    assert calls == 3  # p1 once, p2 twice
    assert "1 of 3 problem(s) proved in Lean" in first.output
    assert len(backend.prompts) == calls  # resumed: nothing asked again
    # the input error is final: the rerun reports what the first run did
    assert again.exit_code == 1 and again.stderr.strip().splitlines()[-1] == first.stderr.strip().splitlines()[-1]
