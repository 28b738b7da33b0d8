"""Truncate and resume, and RMaxTS, in ``lean-prove``: scripted models whose continuations make
the search path known, every check decided by the REAL local ``lean`` on prelude term-mode
theorems (their own equality, ``have`` in term mode). The goal of a ``sorry`` as a Kimina server
reports it (the Mathlib path: the local lean reports none) goes through the Kimina stand-in,
which asks the real lean for it."""

from __future__ import annotations

import json

import pytest
from servers.kimina_server import KiminaServer

from proofcritic.lean_checker import KiminaChecker, LeanMessage, LeanResult, LeanServerChecker, LocalLeanChecker
from proofcritic.lean_checker.samples import PRELUDE
from proofcritic.llm import Backend, ChatRequest, Completion, Model
from proofcritic.pipelines.formal import FormalProver
from proofcritic.pipelines.formal_search import (
    SearchOptions,
    cut_attempt,
    extends,
    goal_of,
    resume_prove,
    rmax_prove,
    ucb,
)
from proofcritic.types import Problem

TRANS = "theorem Eq.trans' {α : Sort u} {a b c : α} (h : Eq a b) (k : Eq b c) : Eq a c :=\n  Eq.rec (motive := fun x _ => Eq a x) h k\n"
SWAP = "theorem swap (a b : N) (h : Eq a b) : Eq b a"
CHAIN = "theorem chain (a b c : N) (h1 : Eq a b) (h2 : Eq b c) : Eq a c"
SWAP_STATEMENT = PRELUDE + "\n" + SWAP + " := sorry\n"
CHAIN_STATEMENT = PRELUDE + TRANS + "\n" + CHAIN + " := sorry\n"
SWAP_PROBLEM = Problem(id="swap", statement="Equality is symmetric.")
CHAIN_PROBLEM = Problem(id="chain", statement="Equality is transitive.")
# a whole proof with one wrong argument: `have` in term mode, then an error at column 11
SWAP_WRONG = PRELUDE + "\n" + SWAP + " :=\n  have k : Eq a a := Eq.refl a\n  Eq.symm' (Eq.refl N.zero)\n"


def fenced(code: str) -> str:
    return f"Here it is.\n\n```lean\n{code}```\n"


class Script(Backend):
    """A stand-in for the model: ``script(prompt, seed)`` answers each request (every sample
    alike); records the prompts and seeds asked."""

    name = "script"
    model = "fixed"

    def __init__(self, script):
        self.script = script
        self.asked: list[tuple[str, int | None]] = []

    async def generate(self, request: ChatRequest) -> list[Completion]:
        prompt = "\n".join(m.content for m in request.messages)
        self.asked.append((prompt, request.config.seed))
        text = self.script(prompt, request.config.seed)
        return [Completion(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=10)] * request.config.n


def prover(script) -> tuple[FormalProver, Script]:
    backend = Script(script)
    return FormalProver(Model(backend)), backend


def shown_prefix(prompt: str) -> str:
    """The prefix a continuation prompt shows (the block under 'Your proof so far')."""
    return prompt.split("## Your proof so far", 1)[1].split("```lean\n", 1)[1].split("\n```", 1)[0]


def last_goal(prompt: str) -> str:
    """The goal in the last comment of the prefix a continuation prompt shows ('' in other prompts)."""
    if "## Your proof so far" not in prompt:
        return ""
    return shown_prefix(prompt).rsplit("Lean's goal here:\n", 1)[1].split(" -/", 1)[0]


# --- cutting and goals ----------------------------------------------------------------------------


async def test_a_failed_attempt_is_cut_at_its_first_error_and_the_probe_gives_the_goal(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(SWAP_WRONG)
        cut = cut_attempt(SWAP_STATEMENT, SWAP_WRONG, result)
        # the application's argument, not the declaration-wide error Lean reports at the theorem's head
        theorem_line = PRELUDE.count("\n") + 2
        assert any(m.line == theorem_line for m in result.errors)  # the one passed over
        assert (cut.line, cut.column) == (theorem_line + 2, 11) and cut.goal is None
        prefix = SWAP_WRONG[: cut.offset]
        assert prefix.endswith("  Eq.symm' ")
        probe = await checker.check(prefix + "?_\n")  # what the search's probe sends
    goals = [goal_of(m.text) for m in probe.errors if goal_of(m.text)]
    assert goals == ["a b : N\nh : Eq a b\nk : Eq a a\n⊢ Eq a b"]  # the `have` is in scope


def test_unsolved_goals_keep_the_whole_attempt_and_carry_the_goal():
    # the Mathlib tactic path (the local lean has no tactics): Lean reports the unfinished block
    lean = "import Mathlib\n\ntheorem t (n : ℕ) : n + 0 = n := by\n  intro\n"
    statement = "import Mathlib\n\ntheorem t (n : ℕ) : n + 0 = n := by sorry\n"
    result = LeanResult(
        ok=False,
        status="failed",
        messages=[LeanMessage(severity="error", line=3, column=33, text="unsolved goals\nn : ℕ\n⊢ n + 0 = n")],
    )
    cut = cut_attempt(statement, lean, result)
    assert cut.offset == len(lean.rstrip()) and cut.goal == "n : ℕ\n⊢ n + 0 = n"
    # an attempt without errors but with a sorry is cut at the sorry
    with_sorry = "import Mathlib\n\ntheorem t (n : ℕ) : n + 0 = n := by\n  simp\n  sorry\n"
    cut = cut_attempt(statement, with_sorry, LeanResult(ok=False, status="failed", uses_sorry=True))
    assert (cut.line, cut.column, cut.reason) == (5, 2, "sorry")
    assert extends("a := -- c\n b", "a :=") and not extends("a :=", "a := /- x -/")


def test_ucb_formula():
    assert ucb(0, 0.0, 5, 1.0) == float("inf")
    assert ucb(2, 1.0, 4, 1.0) == pytest.approx(0.5 + (pytest.importorskip("math").log(4) / 2) ** 0.5)
    assert ucb(3, 3.0, 1, 2.0) == 1.0  # ln 1 = 0: no bonus


# --- truncate and resume ----------------------------------------------------------------------


async def test_resume_continues_from_the_cut_with_the_goal_as_a_comment(lean_bin):
    def script(prompt: str, seed: int | None) -> str:
        if "## Your proof so far" not in prompt:
            return fenced(SWAP_WRONG)
        # a plain fence: a continuation needs no `lean` label and no theorem of its own
        return "Then:\n```\nh\n```" if "⊢ Eq a b -/" in shown_prefix(prompt) else fenced("oops\n")

    formal, backend = prover(script)
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await resume_prove(formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, SearchOptions(max_calls=4))
    assert check.passed and check.mode == "resume" and check.stop_reason == "proved in round 2"
    first, second = check.attempts
    assert first.status == "failed" and first.cut.column == 11 and first.probe is not None
    assert second.prefix == check.prefixes[0] and second.prefix.startswith(SWAP_WRONG[: first.cut.offset])
    assert "k : Eq a a\n⊢ Eq a b -/" in second.prefix and second.lean == second.prefix + "h\n"
    assert check.proof == second.lean and check.result.ok
    assert (check.model_calls, check.lean_checks) == (2, 3)  # check, probe, check
    assert shown_prefix(backend.asked[1][0]) == second.prefix.rstrip("\n")
    assert [seed for _, seed in backend.asked] == [1, 2]  # each request its own seed


async def test_resume_stops_at_its_budgets_and_records_why(lean_bin):
    # every continuation fails at the same place: the prefix never grows, the same prefix is resumed
    def script(prompt: str, seed: int | None) -> str:
        return fenced("(Eq.refl N.zero)\n") if "## Your proof so far" in prompt else fenced(SWAP_WRONG)

    formal, _ = prover(script)
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        by_calls = await resume_prove(formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, SearchOptions(max_calls=3))
        by_checks = await resume_prove(
            formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, SearchOptions(max_calls=50, max_checks=5)
        )
    assert not by_calls.passed and len(by_calls.attempts) == 3 and by_calls.model_calls == 3
    assert by_calls.stop_reason.startswith("model call budget spent (3 of 3 calls")
    assert len(by_calls.prefixes) == 1  # the one cut; later cuts were no longer
    assert all(a.prefix == by_calls.prefixes[0] for a in by_calls.attempts[1:])
    assert by_checks.lean_checks <= 5 and by_checks.stop_reason.startswith("Lean check budget spent")


async def test_resume_without_a_cut_asks_for_a_whole_proof_again(lean_bin):
    answers = iter(
        [fenced("no statement here\n"), "no Lean at all", fenced(SWAP_WRONG.replace("(Eq.refl N.zero)", "h"))]
    )
    formal, backend = prover(lambda prompt, seed: next(answers))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await resume_prove(formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, SearchOptions(max_calls=3))
    assert [a.status for a in check.attempts] == ["statement_changed", "no_lean_block", "passed"]
    assert all("## Your proof so far" not in prompt for prompt, _ in backend.asked) and check.prefixes == []


# --- RMaxTS ---------------------------------------------------------------------------------------

ROOT_ANSWERS = [
    # expansion 1: a `have`, then a wrong argument: node n1, goal `k : Eq a b ⊢ Eq b c` (new)
    "have k : Eq a b := h1\n  Eq.trans' k (Eq.refl N.zero)\n",
    # expansion 3: no `have`: node n2, goal `⊢ Eq b c` without k (a new state)
    "Eq.trans' h1 (Eq.refl N.zero)\n",
]


def chain_script(prompt: str, seed: int | None) -> str:
    """The root's continuations in turn; at n1 a wrong one (h1: no new node); at n2 the proof."""
    shown = last_goal(prompt)
    if shown.endswith("⊢ Eq a c"):  # the root
        root_calls = chain_script.roots = getattr(chain_script, "roots", 0) + 1
        return fenced(ROOT_ANSWERS[min(root_calls, 2) - 1])
    if "k : Eq a b" in shown:
        return fenced("h1\n")
    return fenced("h2\n")


async def test_rmax_follows_ucb_with_the_intrinsic_reward(lean_bin, tmp_path):
    chain_script.roots = 0
    formal, _ = prover(chain_script)
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await rmax_prove(
            formal, checker, CHAIN_PROBLEM, CHAIN_STATEMENT, SearchOptions(max_calls=10), state=tmp_path / "s.jsonl"
        )
    # 1: root -> n1 (new state, reward 1); 2: n1 never tried (UCB infinity) -> nothing new (0);
    # 3: root's own arm 1 + sqrt(ln 2) beats n1's 0 + sqrt(ln 2) -> n2 (new, 1); 4: n2 untried -> proof
    assert check.passed and check.stop_reason == "proved at expansion 4 (node n2)"
    nodes = {n["id"]: n for n in check.search["nodes"]}
    assert list(nodes) == ["n0", "n1", "n2"] and nodes["n1"]["parent"] == nodes["n2"]["parent"] == "n0"
    assert nodes["n1"]["goal"] == "a b c : N\nh1 : Eq a b\nh2 : Eq b c\nk : Eq a b\n⊢ Eq b c"
    assert nodes["n2"]["goal"] == "a b c : N\nh1 : Eq a b\nh2 : Eq b c\n⊢ Eq b c"
    assert (nodes["n0"]["visits"], nodes["n0"]["value"]) == (4, 3.0)
    assert (nodes["n0"]["expansions"], nodes["n0"]["expansion_value"]) == (2, 2.0)
    assert (nodes["n1"]["visits"], nodes["n1"]["value"]) == (1, 0.0)
    assert (nodes["n2"]["visits"], nodes["n2"]["value"]) == (1, 1.0)
    assert [a.node for a in check.attempts] == ["n0", "n1", "n0", "n2"]
    assert check.proof.endswith("⊢ Eq b c -/ h2\n") and check.result.ok
    # root probe, then check + probe, check (its cut is not beyond n1: no probe), check + probe, check
    assert (check.model_calls, check.lean_checks) == (4, 7)
    assert check.prefixes == [nodes["n1"]["prefix"], nodes["n2"]["prefix"]]


async def test_rmax_rerun_replays_the_state_and_asks_only_what_is_missing(lean_bin, tmp_path):
    state = tmp_path / "state.jsonl"
    options = SearchOptions(max_calls=10)
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        chain_script.roots = 0
        formal, first_backend = prover(chain_script)
        first = await rmax_prove(formal, checker, CHAIN_PROBLEM, CHAIN_STATEMENT, options, state=state)
        lines = state.read_text().splitlines()
        assert [json.loads(line)["key"] for line in lines] == ["root", "e1", "e2", "e3", "e4"]
        # a kill during expansion 4: its line was never finished
        state.write_text("\n".join(lines[:4]) + "\n" + lines[4][:50])
        chain_script.roots = 2  # the root's answers so far were given
        formal, backend = prover(chain_script)
        again = await rmax_prove(formal, checker, CHAIN_PROBLEM, CHAIN_STATEMENT, options, state=state)
    assert len(backend.asked) == 1 and backend.asked[0][1] == first_backend.asked[3][1]  # expansion 4's seed
    assert again.search["replayed"] == 4 and first.search["replayed"] == 0
    assert again.passed and again.stop_reason == first.stop_reason
    assert again.search["nodes"] == first.search["nodes"]
    assert (again.model_calls, again.lean_checks) == (first.model_calls, first.lean_checks)
    assert [json.loads(line)["key"] for line in state.read_text().splitlines()] == ["root", "e1", "e2", "e3", "e4"]


async def test_rmax_state_of_a_run_that_went_another_way_is_replayed_only_up_to_there(lean_bin, tmp_path):
    state = tmp_path / "state.jsonl"
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        chain_script.roots = 0
        formal, _ = prover(chain_script)
        first = await rmax_prove(formal, checker, CHAIN_PROBLEM, CHAIN_STATEMENT, SearchOptions(), state=state)
        entries = [json.loads(line) for line in state.read_text().splitlines()]
        entries[2]["node"] = "n0"  # as if expansion 2 had been made at the root
        state.write_text("".join(json.dumps(e) + "\n" for e in entries))
        chain_script.roots = 1
        formal, backend = prover(chain_script)
        again = await rmax_prove(formal, checker, CHAIN_PROBLEM, CHAIN_STATEMENT, SearchOptions(), state=state)
    assert len(backend.asked) == 3 and again.search["replayed"] == 2  # the root's goal and expansion 1
    assert again.search["nodes"] == first.search["nodes"] and again.stop_reason == first.stop_reason
    keys = [json.loads(line)["key"] for line in state.read_text().splitlines()]
    assert keys[5:] == ["reset", "e2", "e3", "e4"]


async def test_rmax_budget_and_parallel_expansion_over_the_warm_pool(lean_bin):
    # two expansions at once: the second selection sees the first's virtual loss (both at the
    # root: it has no child yet), each with its own seed; checks go to two warm servers
    def script(prompt: str, seed: int | None) -> str:
        return fenced(ROOT_ANSWERS[seed % 2] if last_goal(prompt).endswith("⊢ Eq a c") else "(Eq.refl N.zero)\n")

    formal, backend = prover(script)
    async with LeanServerChecker(lean_bin, timeout=60, pool_size=2) as checker:
        check = await rmax_prove(
            formal, checker, CHAIN_PROBLEM, CHAIN_STATEMENT, SearchOptions(max_calls=3, parallel=2)
        )
    # the second batch has room for one expansion only: the calls of a batch are reserved when selected
    assert not check.passed and check.stop_reason.startswith("model call budget spent (3 of 3 calls")
    assert [seed for _, seed in backend.asked][:2] == [1, 2] and check.search["expansions"] == 3
    nodes = {n["id"]: n for n in check.search["nodes"]}
    assert {nodes["n1"]["goal"], nodes["n2"]["goal"]} == {
        "a b c : N\nh1 : Eq a b\nh2 : Eq b c\nk : Eq a b\n⊢ Eq b c",
        "a b c : N\nh1 : Eq a b\nh2 : Eq b c\n⊢ Eq b c",
    }
    assert [a.node for a in check.attempts][:2] == ["n0", "n0"]
    assert all(n["visits"] >= 0 for n in nodes.values()) and nodes["n0"]["visits"] == 3  # virtual loss taken back


async def test_a_sorry_goal_from_a_kimina_server(lean_bin):
    """The Mathlib path's goal of an inserted ``sorry`` (the REPL reports it; the local lean does
    not), through the Kimina stand-in."""

    def script(prompt: str, seed: int | None) -> str:
        if "## Your proof so far" not in prompt:
            return fenced(SWAP_WRONG)
        return fenced("h\n") if "⊢ Eq a b -/" in shown_prefix(prompt) else fenced("oops\n")

    formal, _ = prover(script)
    async with KiminaServer(lean_bin, sorry_goals=True) as server, KiminaChecker(server.url, timeout=60) as checker:
        check = await resume_prove(formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, SearchOptions(max_calls=3))
    assert check.passed
    probe = check.attempts[0].probe
    assert probe.sorries and probe.sorries[0].goal.endswith("⊢ Eq a b")
    assert probe.sorries[0].line == check.attempts[0].cut.line
    sent = [body["snippet"]["code"] for kind, body in server.requests if kind == "check"]
    assert "  Eq.symm' sorry\n" in sent[1]  # the probe's hole is a sorry here


def test_lean_prove_search_and_resume_commands(tmp_path, lean_bin, monkeypatch):
    """`lean-prove --search rmax` and `--mode resume`: the model behind a real OpenAI-compatible
    HTTP server, the real lean; a run whose record was lost (a kill before it was written)
    replays the search from `<output>.state/` and asks the model nothing."""
    from servers.tiny_openai_server import TinyOpenAIServer
    from typer.testing import CliRunner

    from proofcritic.cli import app

    class Answers(Backend):
        name, model = "answers", "fixed"

        def __init__(self):
            self.prompts: list[str] = []

        async def generate(self, request: ChatRequest) -> list[Completion]:
            prompt = "\n".join(m.content for m in request.messages)
            self.prompts.append(prompt)
            chain_script.roots = sum(last_goal(p).endswith("⊢ Eq a c") for p in self.prompts[:-1])
            text = chain_script(prompt, request.config.seed)
            return [Completion(text=text, finish_reason="stop", prompt_tokens=5, completion_tokens=5)]

    source = tmp_path / "problems.jsonl"
    source.write_text(
        json.dumps({"id": "chain", "statement": CHAIN_PROBLEM.statement, "lean_statement": CHAIN_STATEMENT}) + "\n"
    )
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    backend = Answers()
    out = tmp_path / "rmax.jsonl"
    with TinyOpenAIServer(backend, "fixed") as server:
        common = ["--input", str(source), "--model", "openai/fixed", "--base-url", server.url, "--api-key", "x"]
        args = ["lean-prove", *common, "--output", str(out), "--search", "rmax", "--max-calls", "6", "--no-cache"]
        first = CliRunner().invoke(app, args)
        asked = len(backend.prompts)
        record = json.loads(out.read_text())
        out.unlink()  # the record lost, the state kept
        again = CliRunner().invoke(app, args)
        replayed = json.loads(out.read_text())
        asked_again = len(backend.prompts) - asked
        resume_out = tmp_path / "resume.jsonl"
        resume = CliRunner().invoke(
            app, ["lean-prove", *common, "--output", str(resume_out), "--mode", "resume", "--max-calls", "3"]
        )
        bad = CliRunner().invoke(app, ["lean-prove", *common, "--output", str(out), "--search", "mcts"])
        mixed = CliRunner().invoke(
            app, ["lean-prove", *common, "--output", str(out), "--search", "rmax", "--attempts", "3"]
        )
    assert first.exit_code == 0, first.output
    assert record["passed"] and record["mode"] == "rmax" and record["stop_reason"] == "proved at expansion 4 (node n2)"
    assert asked == 4 and record["model_calls"] == 4 and record["lean_checks"] == 7
    said = " ".join(first.output.split())
    assert (
        "1 of 1 problem(s) proved in Lean" in said and "4 model call(s), 7 Lean check(s), 0 stopped by a budget" in said
    )
    assert again.exit_code == 0 and asked_again == 0 and replayed["search"]["replayed"] == 5
    assert replayed["search"]["nodes"] == record["search"]["nodes"] and replayed["proof"] == record["proof"]
    settings = json.loads((tmp_path / "rmax.jsonl.settings.json").read_text())
    assert "max_checks" in json.dumps(settings) and "rmax" in json.dumps(settings)
    assert resume.exit_code == 0, resume.output
    done = json.loads(resume_out.read_text())
    assert done["mode"] == "resume" and done["model_calls"] <= 3 and len(done["attempts"]) == done["model_calls"]
    assert bad.exit_code == 2 and "must be one of none, rmax, not 'mcts'" in " ".join(bad.output.split())
    assert mixed.exit_code == 2 and "--attempts counts the rounds of --mode whole" in " ".join(mixed.output.split())


@pytest.mark.slow
async def test_smollm2_searches_within_its_budgets(lean_bin, smol_backend):
    """A real model (SmolLM2, far too small to prove anything) through both modes: every answer
    becomes an attempt with a status, and the budgets stop the search."""
    from proofcritic.llm import GenerateConfig

    formal = FormalProver(Model(smol_backend), config=GenerateConfig(max_tokens=24, temperature=0.0))
    options = SearchOptions(max_calls=2, max_checks=8)
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        resumed = await resume_prove(formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, options)
        searched = await rmax_prove(formal, checker, SWAP_PROBLEM, SWAP_STATEMENT, options)
    for check in (resumed, searched):
        assert not check.passed and check.model_calls == 2 and check.lean_checks <= 8
        assert check.stop_reason.startswith("model call budget spent")
        assert all(
            a.raw.strip() and a.status in {"no_lean_block", "statement_changed", "failed"} for a in check.attempts
        )
        assert check.usage.completion_tokens > 0
    assert searched.search["nodes"][0]["goal"] == "a b : N\nh : Eq a b\n⊢ Eq b a"  # the root's, from the real lean
