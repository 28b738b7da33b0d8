"""``eval formal`` and the formal suites (issue #20 point 5): miniF2F-style files (JSONL rows
``name``/``header``/``formal_statement``, a ``.lean`` file of theorems) read into problems;
pass@k per mode with the budget used, every check decided by the REAL local ``lean`` on
prelude term-mode theorems, the model behind a real OpenAI-compatible HTTP server or a
scripted backend; a run resumed per sample. The lean-proofbench statements import Mathlib: here
they are loaded and planned, and checking them is the checker's set-up error."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic.benchmarks import RunFolder, load_suite
from proofcritic.benchmarks.eval_formal import eval_formal, pass_at_k
from proofcritic.benchmarks.formal_suites import load_formal_file, with_sorry
from proofcritic.cli import app
from proofcritic.errors import BackendError, InputError
from proofcritic.lean_checker import LocalLeanChecker
from proofcritic.lean_checker.samples import PRELUDE, numeral
from proofcritic.llm import Backend, ChatRequest, Completion, Model
from proofcritic.pipelines.formal import FormalProver
from proofcritic.pipelines.formal_search import SearchOptions

TWO = f"theorem two_two : Eq (N.add {numeral(2)} {numeral(2)}) {numeral(4)}"
SWAP = "theorem swap (a b : N) (h : Eq a b) : Eq b a"
GOOD_TWO = PRELUDE + "\n" + TWO + " :=\n  Eq.refl _\n"
WRONG_SWAP = PRELUDE + "\n" + SWAP + " :=\n  Eq.refl a\n"
ROWS = [  # miniF2F's shape: the statement ends in `:=` with no proof, the header apart
    {
        "name": "two_two",
        "split": "test",
        "informal_prefix": "/-- Show that two plus two is four. -/\n",
        "header": PRELUDE,
        "formal_statement": TWO + " :=\n",
    },
    {"name": "swap", "split": "test", "header": PRELUDE, "formal_statement": SWAP + " := sorry"},
]


def fenced(code: str) -> str:
    return f"Here it is.\n\n```lean\n{code}```\n"


class Answers(Backend):
    """A scripted model: ``script(prompt)`` answers each request (every sample alike)."""

    name = "answers"
    model = "fixed"

    def __init__(self, script: Callable[[str], str], fail: Callable[[str, int | None], bool] | None = None):
        self.script, self.fail = script, fail
        self.asked: list[tuple[str, int | None]] = []

    async def generate(self, request: ChatRequest) -> list[Completion]:
        prompt = "\n".join(m.content for m in request.messages)
        if self.fail is not None and self.fail(prompt, request.config.seed):
            raise BackendError("the server went away")
        self.asked.append((prompt, request.config.seed))
        text = self.script(prompt)
        return [Completion(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=10)] * request.config.n


def script(prompt: str) -> str:
    return fenced(GOOD_TWO) if "two_two" in prompt else fenced(WRONG_SWAP)


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_minif2f_rows_and_a_lean_file_become_problems(tmp_path):
    rows = tmp_path / "minif2f.jsonl"
    write_rows(rows, ROWS)
    two, swap = load_formal_file(rows)
    assert two.problem.id == "two_two" and two.problem.statement == "Show that two plus two is four."
    assert two.lean_statement == PRELUDE + "/-- Show that two plus two is four. -/\n" + TWO + " := sorry\n"
    assert swap.problem.statement == "Prove the Lean theorem `swap` as stated."
    assert swap.lean_statement.endswith(SWAP + " := sorry\n")
    # a .lean file: the header (PRELUDE, whose Eq.symm' has a proof), then each declaration that
    # ends in sorry with the docstring above it; a lemma with a proof is context for those after it
    lemma = "theorem swap' (a b : N) (h : Eq a b) : Eq b a := Eq.symm' h\n"
    lean = tmp_path / "problems.lean"
    lean.write_text(
        PRELUDE + "\n/-- Two plus two is four. -/\n" + TWO + " := by\n  sorry\n\n" + lemma + "\n" + SWAP + " :=\n"
    )
    first, second = load_formal_file(lean)
    assert (first.problem.id, first.problem.statement) == ("two_two", "Two plus two is four.")
    assert first.lean_statement == PRELUDE.rstrip() + "\n\n/-- Two plus two is four. -/\n" + TWO + " := by\n  sorry\n"
    assert second.problem.id == "swap" and second.lean_statement.endswith(lemma + "\n" + SWAP + " := sorry\n")
    assert TWO not in second.lean_statement and second.lean_statement.startswith(PRELUDE)
    assert with_sorry("theorem t : x := by") == "theorem t : x := by sorry\n"
    with pytest.raises(InputError, match="does not end"):
        with_sorry("theorem t : x")
    bad = tmp_path / "bad.jsonl"
    write_rows(bad, [{"name": "x", "header": PRELUDE}])
    with pytest.raises(InputError, match="formal_statement"):
        load_formal_file(bad)


def test_lean_proofbench_loads_its_60_mathlib_statements():
    items = load_suite("lean-proofbench")
    assert len(items) == 60 and items[0].problem.id == "PB-Basic-001"
    assert all(
        i.lean_statement.startswith("import Mathlib") and i.lean_statement.rstrip().endswith("sorry") for i in items
    )


def test_pass_at_k():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 3, 2) == 1.0


def test_eval_formal_command_pass_at_k_per_mode_with_the_budget(tmp_path, lean_bin, monkeypatch):
    rows = tmp_path / "minif2f.jsonl"
    write_rows(rows, ROWS)
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    monkeypatch.setenv("PROOFCRITIC_PROGRESS_INTERVAL", "0.01")
    backend = Answers(script)
    run = tmp_path / "run"
    with TinyOpenAIServer(backend, "fixed") as server:
        args = [
            "eval",
            "formal",
            "--file",
            str(rows),
            "--run",
            str(run),
            "--mode",
            "whole,resume",
            "--mode",
            "rmax",
            "-k",
            "2",
            *("--max-calls", "2", "--max-checks", "6"),
            *("--model", "openai/fixed", "--base-url", server.url, "--api-key", "x", "--no-cache"),
        ]
        first = CliRunner().invoke(app, args)
        asked = len(backend.asked)
        again = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["modes"] == ["whole", "resume", "rmax"]
    for mode in summary["modes"]:
        m = summary["metrics"][mode]
        assert (m["problems"], m["solved"], m["samples_per_problem"]) == (2, 1, 2), (mode, m)
        assert m["pass_at"]["1"]["value"] == 0.5 and m["pass_at"]["2"]["value"] == 0.5
    whole, resume, rmax = (summary["metrics"][m]["budget"] for m in ("whole", "resume", "rmax"))
    assert whole["model_calls"] == 4 and whole["lean_checks"] == 4  # one call and one check per sample
    # swap never passes: resume and rmax spend its budget (2 calls per sample), two_two passes at once
    assert resume["model_calls"] == 2 * 1 + 2 * 2 and resume["budget_stops"] == 2
    assert rmax["model_calls"] == 2 * 1 + 2 * 2 and rmax["budget_stops"] == 2
    assert rmax["lean_checks"] <= 2 * 1 + 2 * 6
    assert asked == 4 + 6 + 6
    records = {r["id"]: r for r in map(json.loads, (run / "items.jsonl").read_text().splitlines())}
    swap = records["swap"]["modes"]["resume"]["samples"]
    assert [s["seed"] for s in swap] == [0, 3]  # sample j starts at seed + j * (max calls + 1)
    assert all("budget spent" in s["stop_reason"] for s in swap)
    assert records["two_two"]["modes"]["whole"]["samples"][0]["proof"] == GOOD_TWO
    report = (run / "report.md").read_text()
    assert "| whole (whole proof) | 0.5" in report and "truncate and resume" in report
    assert "pass@2" in first.output and "whole" in first.output
    # the progress line says what the samples did so far (a plain line on a pipe, every interval)
    assert "samples passed," in first.stderr and "Lean checks" in first.stderr, first.stderr
    # the rerun: every problem done, nothing asked again, the same summary
    assert again.exit_code == 0, again.output
    assert len(backend.asked) == asked
    assert json.loads((run / "summary.json").read_text())["metrics"] == summary["metrics"]


async def test_a_run_stopped_mid_problem_resumes_without_repeating_finished_samples(tmp_path, lean_bin):
    rows = tmp_path / "minif2f.jsonl"
    write_rows(rows, ROWS)
    items = load_formal_file(rows)
    run = RunFolder(tmp_path / "run")
    options = SearchOptions(max_calls=2, max_checks=6)
    # the server fails every request of swap's second resume sample (seeds 4 and 5: it starts at
    # seed 0 + 1 * (2 calls + 1) and asks with seed + 1, + 2)
    down = Answers(script, fail=lambda prompt, seed: "swap" in prompt and seed in (4, 5))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        kwargs = {"checker": checker, "modes": ["whole", "resume"], "k": 2, "options": options}
        first = await eval_formal(items, run, prover=FormalProver(Model(down)), **kwargs)
        assert first["counts"] == {"items": 2, "done": 1, "errors": 1, "error_kinds": {"backend": 1}}
        asked = [seed for prompt, seed in down.asked if "swap" in prompt]
        assert sorted(asked) == [0, 1, 2, 2]  # whole: seeds 0 and 0 + 1 * (1 round + 1); resume sample 0: 1, 2
        up = Answers(script)
        second = await eval_formal(items, run, prover=FormalProver(Model(up)), **kwargs)
    # only the missing sample was run: no request for two_two, none for swap's finished samples
    assert sorted(seed for _, seed in up.asked) == [4, 5] and all("swap" in p for p, _ in up.asked)
    assert second["counts"]["done"] == 2 and second["counts"]["errors"] == 0
    assert second["metrics"]["resume"]["pass_at"]["2"]["value"] == 0.5


def test_lean_proofbench_needs_mathlib_so_the_local_lean_stops_before_any_model_call(tmp_path, lean_bin, monkeypatch):
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    backend = Answers(script)
    with TinyOpenAIServer(backend, "fixed") as server:
        common = ["eval", "formal", "--suite", "lean-proofbench", "--run", str(tmp_path / "run"), "--limit", "2"]
        plan = CliRunner().invoke(app, [*common, "-k", "4", "--mode", "whole,rmax", "--dry-run"])
        result = CliRunner().invoke(
            app, [*common, "--model", "openai/fixed", "--base-url", server.url, "--api-key", "x"]
        )
    assert plan.exit_code == 0 and "2 problem(s)" in plan.output and "dry run" in plan.output
    assert "per problem: at most 68 model calls: 4 whole proof" in plan.output and "64 rmax proof" in plan.output
    assert "in all: at most 136 model calls" in plan.output
    assert result.exit_code != 0
    assert "Init" in str(result.exception) or "Init" in result.output
    assert backend.asked == []
    # the other eval commands send a formal suite to eval formal
    for kind in ("solve", "grade"):
        wrong = CliRunner().invoke(app, ["eval", kind, "--suite", "lean-proofbench", "--limit", "1"])
        assert wrong.exit_code == 2 and "formal suite; use `eval formal`" in wrong.output, wrong.output


TRANS = "theorem Eq.trans' {α : Sort u} {a b c : α} (h : Eq a b) (k : Eq b c) : Eq a c :=\n  Eq.rec (motive := fun x _ => Eq a x) h k\n"
FLIP = "theorem flip (a b c : N) (h1 : Eq a b) (h2 : Eq b c) : Eq c a"


def decomposing(prompt: str) -> str:
    """A sketch of two `have` steps when asked to plan, else each step's lemma proved by a term."""
    if "plan a proof" in prompt:
        body = "have hac : Eq a c := sorry\n  have hca : Eq c a := sorry\n  hca\n"
        return f"By transitivity, then symmetry.\n\n```lean\n{PRELUDE}{TRANS}\n{FLIP} :=\n  {body}```\n"
    statement = prompt.split("```lean\n", 1)[1].split("\n```", 1)[0] + "\n"
    term = "Eq.trans' h1 h2" if "theorem flip_hac " in statement else "Eq.symm' hac"
    return fenced(statement.replace(":= sorry", ":= " + term))


async def test_decompose_is_a_mode_of_eval_formal(tmp_path, lean_bin):
    rows = tmp_path / "flip.jsonl"
    write_rows(rows, [{"name": "flip", "header": PRELUDE + TRANS, "formal_statement": FLIP + " :="}])
    items = load_formal_file(rows)
    backend = Answers(decomposing)
    run = RunFolder(tmp_path / "run")
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        summary = await eval_formal(
            items, run, prover=FormalProver(Model(backend)), checker=checker, modes=["decompose"], k=1
        )
    m = summary["metrics"]["decompose"]
    assert m["solved"] == 1 and m["pass_at"]["1"]["value"] == 1.0
    # the sketch and two lemmas; the sketch's check, two lemma checks and the assembly's
    assert (m["budget"]["model_calls"], m["budget"]["lean_checks"]) == (3, 4)
    (record,) = run.records()
    (sample,) = record["modes"]["decompose"]["samples"]
    assert sample["check"]["mode"] == "decompose" and sample["check"]["decomposition"]["unsolved"] == []
    assert "(flip_hca a b c h1 h2 hac)" in sample["proof"]
    from proofcritic.benchmarks.report import build_report

    build_report(run)
    assert "| decompose (subgoal decomposition) | 1 " in (run.path / "report.md").read_text()


def test_lean_prove_reads_minif2f_files_too(tmp_path, lean_bin, monkeypatch):
    """`lean-prove --input` takes a .lean file of theorems and miniF2F rows (a bad row is an error item)."""
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    lean = tmp_path / "problems.lean"
    lean.write_text(PRELUDE + "\n/-- Two plus two is four. -/\n" + TWO + " := sorry\n\n" + SWAP + " := sorry\n")
    rows = tmp_path / "minif2f.jsonl"
    write_rows(rows, [*ROWS, {"name": "broken", "header": PRELUDE}])
    backend = Answers(script)
    with TinyOpenAIServer(backend, "fixed") as server:
        model = ["--model", "openai/fixed", "--base-url", server.url, "--api-key", "x", "--no-cache"]
        from_lean = CliRunner().invoke(
            app, ["lean-prove", "--input", str(lean), "--output", str(tmp_path / "a.jsonl"), *model]
        )
        from_rows = CliRunner().invoke(
            app, ["lean-prove", "--input", str(rows), "--output", str(tmp_path / "b.jsonl"), *model]
        )
    assert from_lean.exit_code == 0, from_lean.output
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    assert records["two_two"]["passed"] is True and records["swap"]["passed"] is False
    assert backend.asked[0][0].count("Two plus two is four.") >= 1  # the docstring is the problem's text
    assert from_rows.exit_code == 1  # the broken row is an input error record
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())}
    assert records["two_two"]["passed"] is True and records["broken"]["error_kind"] == "input"
    assert "formal_statement" in records["broken"]["error"]
