"""Subgoal decomposition in ``lean-prove --decompose``: scripted models whose sketches and lemma
proofs make the path known, every check decided by the REAL local ``lean`` on prelude term-mode
theorems (their own equality, ``have`` steps in term mode; the local lean has no ``sorry``, so
the sketch is checked with ``?_`` holes and Lean's placeholder errors give each step's goal)."""

from __future__ import annotations

import json

import pytest

from proofcritic.lean_checker import LocalLeanChecker
from proofcritic.lean_checker.samples import PRELUDE
from proofcritic.llm import Backend, ChatRequest, Completion, Model
from proofcritic.pipelines.formal import FormalProver
from proofcritic.pipelines.formal_decompose import DecomposeOptions, _hole, decompose_prove, find_steps
from proofcritic.pipelines.formal_search import SearchOptions
from proofcritic.types import Problem

TRANS = "theorem Eq.trans' {α : Sort u} {a b c : α} (h : Eq a b) (k : Eq b c) : Eq a c :=\n  Eq.rec (motive := fun x _ => Eq a x) h k\n"
FLIP = "theorem flip (a b c : N) (h1 : Eq a b) (h2 : Eq b c) : Eq c a"
STATEMENT = PRELUDE + TRANS + "\n" + FLIP + " := sorry\n"
PROBLEM = Problem(id="flip", statement="If a = b and b = c then c = a.")
INFORMAL = "First a = c by transitivity, then c = a by symmetry."
TWO_STEPS = "have hac : Eq a c := sorry\n  have hca : Eq c a := sorry\n  hca\n"


def sketch_of(body: str, head: str = FLIP) -> str:
    return f"{INFORMAL}\n\n```lean\n{PRELUDE}{TRANS}\n{head} :=\n  {body}```\n"


def statement_in(prompt: str) -> str:
    """The Lean statement a prompt shows (its first lean block)."""
    return prompt.split("```lean\n", 1)[1].split("\n```", 1)[0] + "\n"


def proof_of(prompt: str, term: str) -> str:
    return "```lean\n" + statement_in(prompt).replace(":= sorry", ":= " + term) + "```\n"


class Script(Backend):
    """Sketches by ``sketches`` (one a request, in turn; the last one repeats), lemma proofs by
    ``lemmas`` (lemma name -> the proof term, or a callable of the prompt); records every prompt."""

    name, model = "script", "fixed"

    def __init__(self, sketches: list[str], lemmas: dict):
        self.sketches, self.lemmas = sketches, lemmas
        self.prompts: list[str] = []

    def answer(self, prompt: str) -> str:
        if "plan a proof" in prompt:
            done = sum("plan a proof" in p for p in self.prompts[:-1])
            return self.sketches[min(done, len(self.sketches) - 1)]
        statement = statement_in(prompt)
        for lemma, term in sorted(self.lemmas.items(), key=lambda kv: -len(kv[0])):
            if f"theorem {lemma} " in statement:
                return term(prompt) if callable(term) else proof_of(prompt, term)
        return "no idea"

    async def generate(self, request: ChatRequest) -> list[Completion]:
        prompt = "\n".join(m.content for m in request.messages)
        self.prompts.append(prompt)
        text = self.answer(prompt)
        return [Completion(text=text, finish_reason="stop", prompt_tokens=5, completion_tokens=5)] * request.config.n


async def decompose(lean_bin, backend: Script, options: DecomposeOptions | None = None, **kwargs):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        return await decompose_prove(FormalProver(Model(backend)), checker, PROBLEM, STATEMENT, options, **kwargs)


def test_steps_are_the_haves_left_as_sorry():
    sketch = STATEMENT.replace(
        "sorry", "\n  have hac : Eq a c := sorry -- a comment: sorry\n  have : Eq c a := by sorry\n  this"
    )
    steps, problems = find_steps(STATEMENT, sketch)
    assert [(s.name, s.claim, s.tactic) for s in steps] == [("hac", "Eq a c", False), ("this", "Eq c a", True)]
    assert problems == []
    stray = STATEMENT.replace("sorry", "\n  have hac : Eq a c := Eq.trans' h1 h2\n  sorry")
    steps, problems = find_steps(STATEMENT, stray)
    assert steps == [] and len(problems) == 1 and "is not the proof of a step" in problems[0]
    twice = STATEMENT.replace("sorry", "\n  have : Eq a c := sorry\n  have : Eq c a := sorry\n  this")
    assert find_steps(STATEMENT, twice)[1] == ["two steps are named 'this': give each step a name of its own"]


async def test_two_steps_proved_separately_and_the_assembled_proof_checks(lean_bin):
    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": "Eq.trans' h1 h2", "flip_hca": "Eq.symm' hac"})
    check = await decompose(lean_bin, backend)
    assert check.passed and check.mode == "decompose" and check.status == "passed"
    assert check.stop_reason == "proved by decomposition: 2 subgoal(s)"
    assert (check.model_calls, check.lean_checks) == (3, 4)  # sketch + 2 lemmas; sketch, 2 lemmas, assembly
    d = check.decomposition
    assert d["informal"] == INFORMAL and "have hca : Eq c a := sorry" in d["sketch"] and d["unsolved"] == []
    hac, hca = d["subgoals"]
    # each lemma: the theorem's binders and the earlier steps; Lean's goal at the step's hole
    assert (
        "theorem flip_hca (a b c : N) (h1 : Eq a b) (h2 : Eq b c) (hac : Eq a c) :\n    Eq c a := sorry"
        in (hca["statement"])
    )
    assert hca["goal"] == "a b c : N\nh1 : Eq a b\nh2 : Eq b c\nhac : Eq a c\n⊢ Eq c a"
    assert hac["status"] == hca["status"] == "proved" and "Eq.symm' hac" in hca["proof"]
    assert hca["check"]["attempts"][0]["status"] == "passed"
    # the proofs put back: the lemmas before the theorem, each step applied to them
    assert "have hca : Eq c a := (flip_hca a b c h1 h2 hac)" in check.proof
    assert check.proof.index("theorem flip_hac") < check.proof.index("theorem flip (a b c")
    assert check.proof.count("inductive N") == 1 and check.result.ok and "sorry" not in check.proof
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        assert (await checker.check(check.proof)).ok  # the file as recorded checks on its own


async def test_a_sketch_that_changes_the_statement_or_does_not_elaborate_is_refused(lean_bin):
    changed = sketch_of(TWO_STEPS.replace("hca\n", "hac\n"), head=FLIP.replace("Eq c a", "Eq a c"))
    stray = sketch_of("have hac : Eq a c := sorry\n  sorry\n")
    wrong = sketch_of(TWO_STEPS.replace("  hca\n", "  hac\n"))  # hac : Eq a c does not prove Eq c a
    backend = Script([changed, stray, wrong], {})
    check = await decompose(lean_bin, backend, DecomposeOptions(sketch_attempts=3))
    assert not check.passed and check.status == "failed"
    assert check.stop_reason == "no sketch accepted in 3 round(s)"
    first, second, third = check.decomposition["sketches"]
    assert first["status"] == "statement_changed" and "does not keep the theorem" in first["reasons"][0]
    assert first["result"] is None  # refused before Lean
    assert second["status"] == "bad_sketch" and "is not the proof of a step" in second["reasons"][0]
    assert third["status"] == "failed" and third["reasons"][0].startswith("the sketch does not elaborate")
    assert "mismatch" in third["reasons"][0]
    # each new sketch is asked with the reasons the previous one was refused for
    assert "does not keep the theorem" in backend.prompts[1] and "is not the proof of a step" in backend.prompts[2]
    assert check.decomposition["subgoals"] == [] and (check.model_calls, check.lean_checks) == (3, 1)


async def test_a_step_that_fails_at_depth_1_is_decomposed_again(lean_bin):
    def lemma_sketch(prompt: str) -> str:
        return "no proof"  # the whole-proof attempt at flip_hca fails: it is decomposed

    sketches = [
        sketch_of("have hca : Eq c a := sorry\n  hca\n"),
        # the sketch of the lemma flip_hca: its own step
        "Transitivity, then symmetry.\n\n```lean\n"
        + PRELUDE
        + TRANS
        + "\ntheorem flip_hca (a b c : N) (h1 : Eq a b) (h2 : Eq b c) :\n    Eq c a :=\n"
        + "  have hac : Eq a c := sorry\n  Eq.symm' hac\n```\n",
    ]
    backend = Script(sketches, {"flip_hca": lemma_sketch, "flip_hca_hac": "Eq.trans' h1 h2"})
    check = await decompose(lean_bin, backend, DecomposeOptions(max_depth=2))
    assert check.passed, check.stop_reason
    assert check.stop_reason == "proved by decomposition: 1 subgoal(s), 1 decomposed again"
    (hca,) = check.decomposition["subgoals"]
    assert hca["status"] == "decomposed" and hca["check"]["status"] == "no_lean_block"
    inner = hca["decomposition"]
    assert inner["depth"] == 2 and inner["solved"] and inner["informal"] == "Transitivity, then symmetry."
    (hac,) = inner["subgoals"]
    assert hac["lemma"] == "flip_hca_hac" and hac["status"] == "proved" and hac["depth"] == 2
    # nested lemmas come first, each once
    proof = check.proof
    assert proof.index("theorem flip_hca_hac") < proof.index("theorem flip_hca (") < proof.index("theorem flip (")
    assert proof.count("theorem flip_hca_hac") == 1 and check.result.ok


async def test_an_unsolved_step_is_reported_and_the_others_are_still_tried(lean_bin):
    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": "Eq.refl a", "flip_hca": "Eq.symm' hac"})
    check = await decompose(lean_bin, backend, DecomposeOptions(max_depth=1, attempts=2))
    assert not check.passed and check.status == "failed"
    assert check.stop_reason == "1 of 2 subgoal(s) unsolved at depth 1: flip_hac"
    assert check.decomposition["unsolved"] == ["flip_hac"]
    hac, hca = check.decomposition["subgoals"]
    assert hac["status"] == "unsolved" and "depth limit 1 reached" in hac["reason"]
    assert len(hac["check"]["attempts"]) == 2 and hac["check"]["attempts"][0]["status"] == "failed"
    assert hca["status"] == "proved" and hca["proof"] is not None  # kept for a later run or a person
    assert check.proof == check.decomposition["sketch"] and check.decomposition["proof"] is None


async def test_budgets_leave_steps_untried_and_say_so(lean_bin):
    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": "Eq.refl a", "flip_hca": "Eq.symm' hac"})
    options = DecomposeOptions(max_depth=2, attempts=3, search=SearchOptions(max_calls=3, max_checks=20))
    check = await decompose(lean_bin, backend, options)
    hac, hca = check.decomposition["subgoals"]
    assert hac["status"] == "unsolved" and len(hac["check"]["attempts"]) == 2  # 2 of its 3 rounds were left
    assert hac["decomposition"]["reason"].startswith("no sketch accepted: model call budget spent (3 of 3 calls")
    assert hca["status"] == "not_tried" and hca["reason"].startswith("model call budget spent")
    assert check.model_calls == 3 and check.decomposition["unsolved"] == ["flip_hac", "flip_hca"]
    assert "budget spent" in check.stop_reason


async def test_steps_proved_by_truncate_and_resume(lean_bin):
    def hac(prompt: str) -> str:
        if "## Your proof so far" in prompt:
            return "```lean\nh2\n```"
        return proof_of(prompt, "Eq.trans' h1 (Eq.refl N.zero)")  # cut at the wrong argument

    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": hac, "flip_hca": "Eq.symm' hac"})
    options = DecomposeOptions(mode="resume", search=SearchOptions(max_calls=8, max_checks=20))
    check = await decompose(lean_bin, backend, options)
    assert check.passed, check.stop_reason
    first = check.decomposition["subgoals"][0]["check"]
    assert first["mode"] == "resume" and first["stop_reason"] == "proved in round 2"
    assert "Lean's goal here" in check.proof and check.result.ok


async def test_a_rerun_replays_the_state_without_asking_the_model(lean_bin, tmp_path):
    lemmas = {"flip_hac": "Eq.trans' h1 h2", "flip_hca": "Eq.symm' hac"}
    first_backend = Script([sketch_of(TWO_STEPS)], lemmas)
    state = tmp_path / "state" / "d.jsonl"
    first = await decompose(lean_bin, first_backend, state=state)
    # a run killed after the sketch and the first lemma: its state holds those two entries
    lines = state.read_text().splitlines()
    state.write_text("\n".join(lines[:2]) + "\n")
    again_backend = Script([sketch_of(TWO_STEPS)], lemmas)
    again = await decompose(lean_bin, again_backend, state=state)
    assert first.passed and again.passed and again.proof == first.proof
    assert len(again_backend.prompts) == 1 and "theorem flip_hca" in statement_in(again_backend.prompts[0])
    assert again.decomposition["replayed"] == 2
    assert (again.model_calls, again.lean_checks) == (first.model_calls, first.lean_checks)


def test_lean_prove_decompose_command(tmp_path, lean_bin, monkeypatch):
    """`lean-prove --decompose` behind a real OpenAI-compatible HTTP server with the real lean: the
    record, the training example (written once: a rerun that lost the record replays the state and
    adds none), and the options that belong to --decompose."""
    from servers.tiny_openai_server import TinyOpenAIServer
    from typer.testing import CliRunner

    from proofcritic.cli import app

    source = tmp_path / "problems.jsonl"
    source.write_text(json.dumps({"id": "flip", "statement": PROBLEM.statement, "lean_statement": STATEMENT}) + "\n")
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": "Eq.trans' h1 h2", "flip_hca": "Eq.symm' hac"})
    out, train = tmp_path / "decomposed.jsonl", tmp_path / "train.jsonl"
    with TinyOpenAIServer(backend, "fixed") as server:
        common = ["--input", str(source), "--model", "openai/fixed", "--base-url", server.url, "--api-key", "x"]
        args = ["lean-prove", *common, "--output", str(out), "--decompose", "--training-out", str(train), "--no-cache"]
        first = CliRunner().invoke(app, args)
        asked = len(backend.prompts)
        record = json.loads(out.read_text())
        out.unlink()  # the record lost (a kill before it was written), the state kept
        again = CliRunner().invoke(app, args)
        asked_again = len(backend.prompts) - asked
        stray = CliRunner().invoke(app, ["lean-prove", *common, "--output", str(out), "--training-out", str(train)])
        deeper = CliRunner().invoke(
            app, ["lean-prove", *common, "--output", str(tmp_path / "x.jsonl"), "--max-depth", "3"]
        )
        other = CliRunner().invoke(app, [*args, "--max-depth", "3"])  # the same output with other settings
    assert first.exit_code == 0, first.output
    assert record["passed"] and record["mode"] == "decompose" and record["model_calls"] == 3
    said = " ".join(first.output.split())
    assert "1 of 1 problem(s) proved in Lean" in said and "0 subgoal(s) left unsolved" in said
    (example,) = [json.loads(line) for line in train.read_text().splitlines()]
    assert example["problem_id"] == "flip" and example["informal"] == INFORMAL
    assert example["completion"].startswith(INFORMAL + "\n\n```lean\nprelude") and example["proof"] == record["proof"]
    assert "plan a proof" in example["prompt"][-1]["content"]
    assert again.exit_code == 0, again.output
    assert asked_again == 0 and json.loads(out.read_text())["proof"] == record["proof"]
    assert len(train.read_text().splitlines()) == 1
    settings = json.loads((tmp_path / "decomposed.jsonl.settings.json").read_text())
    assert "max_depth" in json.dumps(settings)
    assert stray.exit_code == 2 and "belongs to --decompose" in " ".join(stray.output.split())
    assert deeper.exit_code == 2 and "belongs to --decompose" in " ".join(deeper.output.split())
    # (the installed command prints the InputError as one line with exit status 2; CliRunner keeps it)
    assert "was made with max_depth=2; this run has max_depth=3" in str(other.exception)


async def test_a_sketch_model_of_its_own_and_training_examples_from_the_batch(lean_bin, tmp_path):
    from proofcritic.pipelines.formal import formal_jsonl
    from proofcritic.pipelines.formal_decompose import FormalSketcher

    strong = Script([sketch_of(TWO_STEPS)], {})
    prover_backend = Script(["no sketch here"], {"flip_hac": "Eq.trans' h1 h2", "flip_hca": "Eq.symm' hac"})
    prover = FormalProver(Model(prover_backend))
    items = [("flip", 1, {"id": "flip", "statement": PROBLEM.statement, "lean_statement": STATEMENT})]
    train = tmp_path / "train.jsonl"
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        stats = await formal_jsonl(
            prover,
            checker,
            items,
            tmp_path / "out.jsonl",
            mode="decompose",
            decompose=DecomposeOptions(),
            sketcher=FormalSketcher.beside(prover, Model(strong)),
            training_out=train,
        )
        # without a sketcher of its own the prover's model sketches (and writes no Lean here)
        alone = await formal_jsonl(
            prover, checker, items, tmp_path / "alone.jsonl", mode="decompose", training_out=train
        )
    assert stats.extra["passed"] == 1 and stats.extra["unsolved"] == 0 and stats.extra["model_calls"] == 3
    assert len(strong.prompts) == 1 and all("plan a proof" not in p for p in prover_backend.prompts[:2])
    assert alone.extra["passed"] == 0 and "plan a proof" in prover_backend.prompts[-1]
    record = json.loads((tmp_path / "alone.jsonl").read_text())
    assert record["status"] == "no_lean_block" and record["stop_reason"] == "no sketch accepted in 2 round(s)"
    assert len(train.read_text().splitlines()) == 1


async def test_through_a_kimina_server_the_steps_keep_their_sorry_and_it_reports_their_goals(lean_bin):
    """The Mathlib path (a REPL reports each sorry's goal; the local lean has no sorry) through the
    Kimina stand-in, which asks the real lean for each goal."""
    from servers.kimina_server import KiminaServer

    from proofcritic.lean_checker import KiminaChecker

    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": "Eq.trans' h1 h2", "flip_hca": "Eq.symm' hac"})
    async with KiminaServer(lean_bin, sorry_goals=True) as server, KiminaChecker(server.url, timeout=60) as checker:
        check = await decompose_prove(FormalProver(Model(backend)), checker, PROBLEM, STATEMENT)
    assert check.passed, check.stop_reason
    sent = [body["snippet"]["code"] for kind, body in server.requests if kind == "check"]
    assert "have hac : Eq a c := sorry\n" in sent[0] and "?_" not in sent[0]  # the sketch as written
    hac, hca = check.decomposition["subgoals"]
    assert hac["goal"] == "a b c : N\nh1 : Eq a b\nh2 : Eq b c\n⊢ Eq a c"  # from the server's sorries
    assert hca["goal"].endswith("hac : Eq a c\n⊢ Eq c a")


def test_tactic_steps_are_put_back_as_lemma_applications():
    """The Mathlib shape (tactic steps; the local lean has no tactics): text only."""
    from proofcritic.pipelines.formal_decompose import put_back

    statement = "import Mathlib\n\ntheorem t {x : ℝ} (n : ℕ) [Fact (0 < n)] (h : 0 < x) : 0 < x * n := by sorry\n"
    sketch = statement.replace(
        "by sorry",
        "by\n  have hn : (0 : ℝ) < n := by sorry\n  have : 0 < x * n := by\n    sorry\n  have h2 : 0 < 2 := sorry\n"
        "  exact this",
    )
    steps, problems = find_steps(statement, sketch)
    assert [(s.name, s.claim, s.tactic, s.in_tactic_block) for s in steps] == [
        ("hn", "(0 : ℝ) < n", True, True),
        ("this", "0 < x * n", True, True),
        ("h2", "0 < 2", False, True),
    ]
    assert problems == []
    # the sketch check keeps a sorry in a `by` block (a `?_` there is a goal left open), `?_` in a term
    assert [_hole(LocalLeanChecker(), s) for s in steps] == ["by sorry", "by sorry", "sorry"]
    term_steps, _ = find_steps(STATEMENT, STATEMENT.replace("sorry", "\n  have hac : Eq a c := sorry\n  hac"))
    assert _hole(LocalLeanChecker(), term_steps[0]) == "?_"
    lemmas = [
        (
            "t_hn",
            "import Mathlib\n\ntheorem t_hn {x : ℝ} (n : ℕ) [Fact (0 < n)] (h : 0 < x) :\n    (0 : ℝ) < n := by positivity\n",
        ),
        ("t_this", "import Mathlib\n\n-- a helper\ntheorem t_this ... := by positivity\n"),
        ("t_h2", "import Mathlib\n\ntheorem t_h2 ... := by norm_num\n"),
    ]
    proof = put_back(statement, sketch, lemmas)
    assert (
        "  have hn : (0 : ℝ) < n := (t_hn n h)\n  have : 0 < x * n := (t_this n h hn)\n"
        "  have h2 : 0 < 2 := (t_h2 n h hn this)\n  exact this"
    ) in proof
    assert proof.startswith("import Mathlib\n\ntheorem t_hn {x : ℝ}") and proof.count("import Mathlib") == 1
    assert "-- a helper\ntheorem t_this" in proof  # a lemma file not starting with the preamble: its own chunks
    assert proof.index("theorem t_this") < proof.index("theorem t {x")


async def test_a_step_after_fun_is_refused_with_the_reason(lean_bin):
    every = "theorem every : ∀ x : N, Eq x x"
    statement = PRELUDE + "\n" + every + " := sorry\n"
    backend = Script(
        [f"Each x.\n\n```lean\n{PRELUDE}\n{every} :=\n  fun x =>\n  have h : Eq x x := sorry\n  h\n```\n"], {}
    )
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await decompose_prove(
            FormalProver(Model(backend)), checker, Problem(id="every", statement="x = x"), statement
        )
    sketch = check.decomposition["sketches"][0]
    assert sketch["status"] == "bad_sketch" and "step 'h' has x in scope" in sketch["reasons"][0]
    assert "state the steps before introducing anything" in backend.prompts[1]


def test_a_prompt_set_may_bring_its_own_sketch_template(tmp_path):
    import shutil

    from proofcritic.pipelines.formal_decompose import FormalSketcher
    from proofcritic.promptset import PromptSet

    folder = tmp_path / "mine"
    shutil.copytree(PromptSet.load().directory, folder)
    (folder / "formal_sketch.j2").unlink()
    (folder / "formal_prove.j2").unlink()  # its own sketch template, the built-in proof template
    model = Model(Script([], {}))
    assert (
        "plan a proof" in FormalSketcher(model, prompts=PromptSet.load(folder)).messages(PROBLEM, STATEMENT)[0].content
    )
    (folder / "formal_sketch.txt").write_text("Sketch {problem_id}:\n{lean_statement}\n{feedback}")
    mine = FormalSketcher(model, prompts=PromptSet.load(folder)).messages(PROBLEM, STATEMENT, "- refused")
    assert mine[0].content.startswith("Sketch flip:\nprelude") and mine[0].content.endswith("- refused")


async def test_steps_proved_by_rmax_with_their_own_state_file(lean_bin, tmp_path):
    def hca(prompt: str) -> str:
        return "```lean\nEq.symm' hac\n```" if "## Your proof so far" in prompt else "no proof"

    backend = Script([sketch_of(TWO_STEPS)], {"flip_hac": "Eq.trans' h1 h2", "flip_hca": hca})
    options = DecomposeOptions(mode="rmax", search=SearchOptions(max_calls=8, max_checks=20))
    state = tmp_path / "flip.state" / "decompose-flip.jsonl"
    check = await decompose(lean_bin, backend, options, state=state)
    assert check.passed, check.stop_reason
    hac, hca_ = check.decomposition["subgoals"]
    assert hac["check"]["mode"] == hca_["check"]["mode"] == "rmax"
    assert hca_["check"]["stop_reason"] == "proved at expansion 1 (node n0)"
    # each lemma's search has a state file beside the decomposition's
    assert len(list(state.parent.glob("rmax-flip_flip_hca-*.jsonl"))) == 1


@pytest.mark.slow
async def test_smollm2_gets_a_status_for_every_sketch(lean_bin, smol_backend):
    """A real model (SmolLM2, far too small to sketch a proof): every answer is a sketch attempt
    with a status and reasons, and the budgets are kept."""
    from proofcritic.llm import GenerateConfig

    formal = FormalProver(Model(smol_backend), config=GenerateConfig(max_tokens=48, temperature=0.0))
    options = DecomposeOptions(sketch_attempts=3, search=SearchOptions(max_calls=2, max_checks=8))
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        check = await decompose_prove(formal, checker, PROBLEM, STATEMENT, options)
    assert not check.passed and check.model_calls == 2 and check.lean_checks <= 8
    assert check.stop_reason.startswith("no sketch accepted: model call budget spent (2 of 2 calls")
    sketches = check.decomposition["sketches"]
    assert len(sketches) == 2 and all(s["raw"].strip() and s["status"] != "accepted" and s["reasons"] for s in sketches)
    assert check.usage.completion_tokens > 0


async def test_a_sketch_without_steps_that_checks_is_the_proof(lean_bin):
    backend = Script([sketch_of("Eq.symm' (Eq.trans' h1 h2)\n")], {})
    check = await decompose(lean_bin, backend)
    assert check.passed and check.stop_reason == "proved by decomposition: 0 subgoal(s)"
    assert (check.model_calls, check.lean_checks) == (1, 1)  # the sketch's check was the file's
    assert check.decomposition["reason"] == "solved: the sketch has no step and checks as it is"
