"""Subgoal decomposition for ``lean-prove --decompose`` (DeepSeek-Prover V2).

**Sketch.** A strong model (the generator, or a model of its own) writes an informal proof and
a Lean *sketch* (template ``formal_sketch``): the statement's file whose proof states its steps
as ``have name : T := sorry`` (``:= by sorry`` in a tactic block) and ends in the term or
tactics that prove the theorem from them. The sketch is refused when it has no Lean block, does
not keep the statement (the check every attempt passes), has a ``sorry`` / ``admit`` other than
the steps' own, declares an axiom, or does not elaborate with only the steps left open. That
last check is one Lean check of the sketch with a *hole* in each step: ``?_`` in term mode (Lean
reports each one's goal as a placeholder error, with its context: the local kernel has no
``sorry``, for a lean without ``Init`` has no ``sorryAx``), ``sorry`` in a ``by`` block and on
a Kimina server (which reports the goal of each). The sketch is accepted when every error is a
hole's placeholder error, or lies on the theorem's head (the declaration as a whole, which a
lean without ``Init`` cannot finish once a hole is left); a step whose goal (Lean's) names a
hypothesis that is neither a binder of the theorem nor an earlier step is refused, for its
lemma would lack it. A refused sketch is asked again with the reasons (``sketch_attempts``).

**Subgoals.** Each step becomes a lemma ``<theorem>_<step>`` stated after the sketch's own lines
before the theorem: the theorem's binders (as written: implicit ones stay implicit), then each
earlier step as an explicit hypothesis, then the step's claim, ``:= sorry``. The lemma is proved
by a mode of ``lean-prove`` (``whole``, ``resume`` or ``rmax``: :class:`DecomposeOptions`); when
that fails and the depth limit allows, the lemma is decomposed again (a sketch of the lemma, its
own steps, recursively). Every step is tried, while the budgets last, so that all unsolved ones
are reported.

**Assembly.** The lemma proofs (each one's file without the lines the sketch had before the
theorem) go before the theorem, and each step's ``sorry`` becomes the lemma applied to the
theorem's explicit binders and the earlier steps. The whole file is checked like any attempt:
the statement kept, no error, no ``sorry``, allowed axioms only.

**Budgets and resuming.** ``max_calls`` and ``max_checks`` count everything done for one problem
(sketches, the lemma provers' calls and checks, the assembly); each lemma's prover gets what is
left. Request seeds follow the calls made before them, so a rerun asks the same questions. With
a state file, each finished sketch, lemma proof and assembly is appended as it finishes; a rerun
replays them without asking the model or Lean (charging the recorded counts), and an RMaxTS
lemma has its own state file beside it. What was in flight is asked again (the completion cache
answers a model call made before the kill).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .._roles import Role
from ..errors import InputError
from ..io import JsonlAppender
from ..lean_checker import LeanChecker, LeanResult, blank_comments_and_strings
from ..llm import ChatMessage, Usage
from ..promptset import PromptSet
from ..types import Problem
from .formal import _DECL_START, _FENCE, FormalCheck, FormalProver, extract_lean, formal_prove, statement_preserved
from .formal_search import (
    _BY,
    SearchOptions,
    _offset,
    _position,
    _read_state,
    resume_prove,
    rmax_prove,
    state_file,
    statement_end,
)

__all__ = [
    "DecomposeOptions",
    "Decomposition",
    "FormalSketcher",
    "SketchAttempt",
    "Subgoal",
    "decompose_prove",
    "decompose_state_file",
    "find_steps",
    "put_back",
    "training_example",
]

SKETCH_TEMPLATE = "formal_sketch"
SKETCH_VARIABLES = frozenset({"problem", "lean_statement", "feedback"})

_STEP = re.compile(
    r"(?<![\w.'])have(?![\w'])\s*(?P<name>[^\s:()\[\]{}⦃⦄]+)?\s*:(?!=)(?P<type>(?:(?!:=).)*?)"
    r":=\s*(?P<by>by\s+)?(?P<sorry>sorry)(?![\w'])",
    re.DOTALL,
)
_SORRY = re.compile(r"(?<![\w.'])(sorry|admit)(?![\w'])")
_PLACEHOLDER = "don't know how to synthesize placeholder"
_OPEN = {"(": ")", "{": "}", "[": "]", "⦃": "⦄"}

SketchStatus = Literal["accepted", "no_lean_block", "statement_changed", "bad_sketch", "failed", "timeout", "error"]
SubgoalStatus = Literal["proved", "decomposed", "unsolved", "not_tried"]


class DecomposeOptions(BaseModel):
    """How ``--decompose`` proves a problem: its sketches, how each subgoal is proved, the budgets."""

    mode: Literal["whole", "resume", "rmax"] = Field("whole", description="How each subgoal's lemma is proved.")
    attempts: int = Field(1, ge=1, description="mode whole: rounds per lemma.")
    max_depth: int = Field(2, ge=1, description="Decompositions nested at most this deep (1: the theorem's only).")
    sketch_attempts: int = Field(2, ge=1, description="Sketches asked per goal (a refused one is asked again).")
    search: SearchOptions = Field(
        default_factory=SearchOptions,
        description="samples, seed, the lemma search's knobs; max_calls / max_checks: for the whole problem.",
    )


class SketchAttempt(BaseModel):
    """One sketch the model wrote, and whether it was accepted."""

    round: int
    raw: str = ""
    informal: str = Field("", description="The output before its Lean block: the informal proof.")
    sketch: str | None = None
    status: SketchStatus = "no_lean_block"
    reasons: list[str] = Field(default_factory=list)
    result: LeanResult | None = Field(None, description="The check of the sketch with a hole in each step.")
    usage: Usage = Field(default_factory=Usage)


class Subgoal(BaseModel):
    """One step of a sketch as a lemma of its own, and what became of it."""

    step: str = Field(..., description="The step's name in the sketch (`this` when it has none).")
    lemma: str = Field(..., description="The lemma's name.")
    claim: str
    goal: str | None = Field(None, description="Lean's goal at the step's hole in the sketch check.")
    statement: str = Field(..., description="The lemma as a Lean statement (a file ending in `sorry`).")
    depth: int
    status: SubgoalStatus = "not_tried"
    reason: str = ""
    proof: str | None = Field(None, description="The lemma's file that checks (when solved).")
    check: FormalCheck | None = Field(None, description="The prover's record for the lemma.")
    decomposition: Decomposition | None = Field(None, description="The lemma's own decomposition, when tried.")


class Decomposition(BaseModel):
    """A goal's sketch, its subgoals and the assembled proof."""

    depth: int
    lean_statement: str
    informal: str | None = None
    sketch: str | None = None
    sketches: list[SketchAttempt] = Field(default_factory=list)
    subgoals: list[Subgoal] = Field(default_factory=list)
    proof: str | None = Field(None, description="The assembled file (lemmas, then the sketch with them applied).")
    result: LeanResult | None = Field(None, description="The check of the assembled file.")
    solved: bool = False
    reason: str = ""

    def unsolved(self) -> list[str]:
        """The lemmas left unproved, the deepest ones named (``a_k/a_k_m``) under their parents."""
        out: list[str] = []
        for sub in self.subgoals:
            if sub.status in ("proved", "decomposed"):
                continue
            inner = sub.decomposition.unsolved() if sub.decomposition is not None else []
            out += [f"{sub.lemma}/{name}" for name in inner] or [sub.lemma]
        return out


Subgoal.model_rebuild()


class FormalSketcher(Role):
    """The model asked for an informal proof and a Lean sketch (template ``formal_sketch``)."""

    template = SKETCH_TEMPLATE

    def __init__(self, model, *, prompts: PromptSet | None = None, config=None):
        super().__init__(model, prompts=prompts, config=config)
        self.prompts = self.prompts.template_set(SKETCH_TEMPLATE, SKETCH_VARIABLES)

    def messages(self, problem: Problem, lean_statement: str, feedback: str = "") -> list[ChatMessage]:
        return self.render(problem=problem, lean_statement=lean_statement, feedback=feedback)

    @classmethod
    def beside(cls, prover: FormalProver, model=None) -> FormalSketcher:
        """A sketcher on the prover's prompt set and sampling settings, and its model unless
        ``model`` (a stronger one) is given."""
        return cls(model or prover.model, prompts=prover.prompts, config=prover.config)


def _sketch_attempt(text: str, finish_reason: str | None) -> SketchAttempt:
    sketch = extract_lean(text)
    fences = list(_FENCE.finditer(text))
    informal = text[: fences[-1].start()].strip() if fences else text.strip()
    return SketchAttempt(round=0, raw=text, informal=informal, sketch=sketch)


# --- reading a sketch ---------------------------------------------------------------------------


@dataclass
class _Step:
    name: str
    claim: str
    start: int  # the `have`
    hole_start: int  # `by sorry` or `sorry`
    hole_end: int
    tactic: bool  # its proof is `by sorry`
    in_tactic_block: bool = False  # it stands in a `by` block (a `have` tactic)


@dataclass
class _Head:
    start: int  # the theorem's declaration
    body: int  # just after its `:=`
    name: str
    binders: list[str]  # as written
    explicit: list[str]  # the names of the explicit binders, in order
    names: set[str] = field(default_factory=set)  # every binder's names


def _theorem_head(lean_statement: str, lean: str) -> _Head | None:
    span = statement_end(lean_statement, lean)
    if span is None:
        return None
    start, body = span
    code = blank_comments_and_strings(lean)
    head = _DECL_START.match(code, start)
    assert head is not None
    keyword = head.group(1)
    position = head.end()
    name = "goal"
    if keyword != "example":
        match = re.compile(r"\s*([^\s(\[{⦃:]+)").match(code, position)
        if match is not None:
            name, position = match.group(1).rstrip("."), match.end()
            if code.startswith("{", position) and match.group(1).endswith("."):  # `foo.{u}`: universes
                position = code.index("}", position) + 1
    binders: list[str] = []
    explicit: list[str] = []
    names: set[str] = set()
    while True:
        while position < body and code[position].isspace():
            position += 1
        opener = code[position] if position < body else ""
        if opener not in _OPEN:
            break
        depth, end = 0, position
        for end in range(position, body):
            if code[end] in _OPEN:
                depth += 1
            elif code[end] in _OPEN.values():
                depth -= 1
                if depth == 0:
                    break
        group = lean[position : end + 1]
        inner = code[position + 1 : end]
        if ":" in inner:
            bound = inner.split(":", 1)[0].split()
            names.update(bound)
            if opener == "(":
                explicit += bound
        binders.append(group)
        position = end + 1
    return _Head(start=start, body=body, name=name, binders=binders, explicit=explicit, names=names)


def find_steps(lean_statement: str, sketch: str) -> tuple[list[_Step], list[str]]:
    """The steps of a sketch (``have name : T := sorry`` in the theorem's proof), and a reason
    for each ``sorry`` / ``admit`` that is not a step's."""
    head = _theorem_head(lean_statement, sketch)
    if head is None:
        return [], ["the sketch does not declare the theorem"]
    code = blank_comments_and_strings(sketch)
    steps: list[_Step] = []
    holes: set[int] = set()
    for match in _STEP.finditer(code, head.body):
        name = match.group("name") or "this"
        claim = " ".join(sketch[match.start("type") : match.end("type")].split())
        start = match.start("by") if match.group("by") else match.start("sorry")
        in_block = _BY.search(code, head.body, match.start()) is not None
        steps.append(_Step(name, claim, match.start(), start, match.end("sorry"), bool(match.group("by")), in_block))
        holes.add(match.start("sorry"))
    problems = []
    names = [step.name for step in steps]
    for name in sorted({n for n in names if names.count(n) > 1}):
        # a later step's lemma takes every earlier step: one shadowed could not be passed to it
        problems.append(f"two steps are named {name!r}: give each step a name of its own")
    for match in _SORRY.finditer(code):
        if match.start() not in holes:
            line, column = _position(sketch, match.start())
            problems.append(
                f"`{match.group(1)}` at {line}:{column} is not the proof of a step `have name : claim := sorry`"
            )
    return steps, problems


def _hole(checker: LeanChecker, step: _Step) -> str:
    """What stands in a step's proof in the sketch check: its own ``by sorry``; ``sorry`` in a
    ``by`` block (a ``?_`` there would be a goal left unsolved) and for a checker that reports the
    goals of sorries (Kimina); else (term mode) ``?_``, whose placeholder error shows the goal."""
    if step.tactic:
        return "by sorry"
    if step.in_tactic_block or getattr(checker, "name", "") == "kimina":
        return "sorry"
    return "?_"


def _context_names(goal: str) -> set[str]:
    """The hypotheses' names in a goal (``a b : N`` lines before the ``⊢``)."""
    names: set[str] = set()
    for line in goal.split("⊢", 1)[0].splitlines():
        if " : " in line and not line.startswith(" "):
            names.update(line.split(" : ", 1)[0].split())
    return names


def _lemma_name(base: str, step: str, taken: set[str]) -> str:
    stem = f"{base}_{step}"
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    taken.add(name)
    return name


def _without_head(preamble: str, proof: str) -> str:
    """A lemma's file without the lines the sketch had before the theorem: the text after
    ``preamble`` when the file starts with it, else each top-level chunk (a line at column 0 and
    the indented lines after it) whose code the preamble does not already have."""
    if proof.startswith(preamble):
        return proof[len(preamble) :].strip("\n") + "\n"
    known = " ".join(blank_comments_and_strings(preamble).split())
    chunks = re.split(r"\n(?=\S)", proof)
    kept = [c for c in chunks if " ".join(blank_comments_and_strings(c).split()) not in known]
    return "\n".join(kept).strip("\n") + "\n"


def put_back(lean_statement: str, sketch: str, lemmas: list[tuple[str, str]]) -> str:
    """The sketch with its steps proved: each lemma's proof (its file without the sketch's lines
    before the theorem) before the theorem, and each step's ``sorry`` (``by sorry``) replaced by
    its lemma (``lemmas``: name and proof, in the steps' order) applied to the theorem's explicit
    binders and the earlier steps."""
    head = _theorem_head(lean_statement, sketch)
    if head is None:
        raise InputError("the sketch does not declare the theorem")
    steps, _ = find_steps(lean_statement, sketch)
    preamble, body = sketch[: head.start], sketch[head.start :]
    for index in reversed(range(min(len(steps), len(lemmas)))):
        step = steps[index]
        use = f"({' '.join([lemmas[index][0], *head.explicit, *(s.name for s in steps[:index])])})"
        body = body[: step.hole_start - head.start] + use + body[step.hole_end - head.start :]
    proved = "\n".join(_without_head(preamble, proof) for _, proof in lemmas)
    return preamble.rstrip("\n") + "\n\n" + proved + ("\n" if proved else "") + body


def training_example(problem: Problem, check: FormalCheck, sketcher: FormalSketcher) -> dict:
    """A solved decomposition as a training example: the sketch prompt, and as the completion
    the informal proof followed by the checked Lean proof."""
    decomposition = check.decomposition or {}
    informal = (decomposition.get("informal") or "").strip()
    proof = check.proof or ""
    messages = sketcher.messages(problem, check.lean_statement)
    return {
        "problem_id": check.problem_id,
        "prompt": [m.model_dump(mode="json") for m in messages],
        "informal": informal,
        "proof": proof,
        "completion": f"{informal}\n\n```lean\n{proof.rstrip()}\n```\n",
        "subgoals": len(decomposition.get("subgoals") or []),
    }


def decompose_state_file(state_dir: str | Path, problem_id: str) -> Path:
    """The state file of one problem's decomposition in ``state_dir``."""
    path = state_file(state_dir, problem_id)
    return path.with_name("decompose" + path.name.removeprefix("rmax"))


# --- the run ------------------------------------------------------------------------------------


@dataclass
class _Decomposer:
    prover: FormalProver
    sketcher: FormalSketcher
    checker: LeanChecker
    options: DecomposeOptions
    problem_id: str
    recorded: dict[str, dict]
    writer: JsonlAppender | None
    fingerprint: str
    state_dir: Path | None
    calls: int = 0
    checks: int = 0
    replayed: int = 0
    usage: Usage = field(default_factory=Usage)

    def left(self) -> tuple[int, int]:
        o = self.options.search
        return o.max_calls - self.calls, o.max_checks - self.checks

    def budget_reason(self) -> str:
        o = self.options.search
        if self.calls >= o.max_calls:
            return (
                f"model call budget spent ({self.calls} of {o.max_calls} calls, {self.checks} of {o.max_checks} checks)"
            )
        return f"Lean check budget spent ({self.checks} of {o.max_checks} checks, {self.calls} of {o.max_calls} calls)"

    def replay(self, key: str) -> dict | None:
        entry = self.recorded.get(key)
        if entry is not None:
            self.calls += entry["calls"]
            self.checks += entry["checks"]
            self.replayed += 1
        return entry

    def log(self, key: str, calls: int, checks: int, value: dict) -> None:
        if self.writer is not None:
            self.writer.write(
                {"fingerprint": self.fingerprint, "key": key, "calls": calls, "checks": checks, "value": value}
            )

    async def lean(self, source: str) -> LeanResult:
        self.checks += 1
        return await self.checker.check(source)

    # -- sketches

    async def sketch(self, problem: Problem, statement: str, round_number: int, feedback: str, key: str):
        entry = self.replay(key)
        if entry is not None:
            attempt = SketchAttempt.model_validate(entry["value"]["attempt"])
            return attempt, entry["value"]["goals"]
        calls, checks = self.calls, self.checks
        seed = self.options.search.seed + self.calls + 1
        self.calls += 1
        attempt = (
            await self.sketcher.ask(self.sketcher.messages(problem, statement, feedback), _sketch_attempt, seed=seed)
        )[0]
        attempt.round = round_number
        goals = await self.judge_sketch(statement, attempt)
        self.log(
            key, self.calls - calls, self.checks - checks, {"attempt": attempt.model_dump(mode="json"), "goals": goals}
        )
        return attempt, goals

    async def judge_sketch(self, statement: str, attempt: SketchAttempt) -> list[str | None]:
        """Check a sketch (see the module's notes); its steps' goals as Lean reported them."""
        sketch = attempt.sketch
        if sketch is None:
            attempt.status, attempt.reasons = "no_lean_block", ["the output has no Lean code block"]
            return []
        kept, why = statement_preserved(statement, sketch)
        if not kept:
            attempt.status, attempt.reasons = "statement_changed", [why]
            return []
        steps, problems = find_steps(statement, sketch)
        if problems:
            attempt.status, attempt.reasons = "bad_sketch", problems
            return []
        head = _theorem_head(statement, sketch)
        assert head is not None  # the statement is kept
        probe, positions = sketch, []
        for step in reversed(steps):
            hole = _hole(self.checker, step)
            probe = probe[: step.hole_start] + hole + probe[step.hole_end :]
        shift = 0
        for step in steps:
            hole = _hole(self.checker, step)
            start = step.hole_start + shift + (len(hole) - len("sorry") if hole.startswith("by") else 0)
            positions.append(_position(probe, start))
            shift += len(hole) - (step.hole_end - step.hole_start)
        result = await self.lean(probe)
        attempt.result = result
        if result.status in ("timeout", "error"):
            attempt.status, attempt.reasons = result.status, list(result.reasons) or [result.error or result.status]
            return []
        goals: list[str | None] = [None] * len(steps)
        for sorry in result.sorries:
            if (sorry.line, sorry.column) in positions and sorry.goal:
                goals[positions.index((sorry.line, sorry.column))] = sorry.goal
        head_errors, others = [], []
        for message in result.errors:
            if message.text.startswith(_PLACEHOLDER) and (message.line, message.column) in positions:
                text = message.text.split("context:\n", 1)[-1].strip()
                goals[positions.index((message.line, message.column))] = text
            elif head.start <= _offset(probe, message.line, message.column) < head.body:  # before every hole
                head_errors.append(message)
            else:
                others.append(message)
        reasons = [r for r in result.reasons if "sorry" not in r and not r.endswith(" error(s)")]
        reasons = [r for r in reasons if not re.match(r"\d+ error\(s\); first at", r)]
        if others:
            first = others[0]
            reasons.insert(
                0, f"the sketch does not elaborate: {first.line}:{first.column}: {first.text.splitlines()[0]}"
            )
        elif head_errors and not any(g is not None for g in goals):
            first = head_errors[0]
            reasons.insert(
                0, f"the theorem does not elaborate: {first.line}:{first.column}: {first.text.splitlines()[0]}"
            )
        for index, (step, goal) in enumerate(zip(steps, goals)):
            if goal is None:
                continue
            known = head.names | {s.name for s in steps[:index]}
            extra = sorted(n for n in _context_names(goal) if n not in known and "✝" not in n)
            if extra:
                reasons.append(
                    f"step {step.name!r} has {', '.join(extra)} in scope, which is neither a binder of the theorem "
                    "nor an earlier step: state the steps before introducing anything"
                )
        if reasons:
            attempt.status, attempt.reasons = ("failed" if others else "bad_sketch"), reasons
            return []
        attempt.status = "accepted"
        return goals

    # -- subgoals

    def subgoals(self, statement: str, sketch: str, goals: list[str | None], depth: int) -> list[Subgoal]:
        head = _theorem_head(statement, sketch)
        assert head is not None
        steps, _ = find_steps(statement, sketch)
        preamble = sketch[: head.start]
        taken = set(re.findall(r"[^\s()\[\]{}⦃⦄:,]+", blank_comments_and_strings(sketch)))
        out: list[Subgoal] = []
        for index, step in enumerate(steps):
            lemma = _lemma_name(head.name, step.name, taken)
            earlier = [f"({s.name} : {s.claim})" for s in steps[:index]]
            binders = " ".join([*head.binders, *earlier])
            lemma_statement = f"{preamble.rstrip()}\n\ntheorem {lemma} {binders} :\n    {step.claim} := sorry\n"
            out.append(
                Subgoal(
                    step=step.name,
                    lemma=lemma,
                    claim=step.claim,
                    goal=goals[index] if index < len(goals) else None,
                    statement=lemma_statement,
                    depth=depth,
                )
            )
        return out

    async def prove_lemma(self, problem: Problem, sub: Subgoal, key: str) -> FormalCheck | None:
        entry = self.replay(key)
        if entry is not None:
            return FormalCheck.model_validate(entry["value"])
        calls_left, checks_left = self.left()
        o = self.options
        n = o.search.samples
        if calls_left < 1 or checks_left < n:
            return None
        seed = o.search.seed + self.calls
        if o.mode == "whole":
            rounds = min(o.attempts, calls_left, checks_left // n)
            check = await formal_prove(
                self.prover, self.checker, problem, sub.statement, samples=n, attempts=rounds, seed=seed + 1
            )
        else:
            search = o.search.model_copy(update={"max_calls": calls_left, "max_checks": checks_left, "seed": seed})
            if o.mode == "resume":
                check = await resume_prove(self.prover, self.checker, problem, sub.statement, search)
            else:
                state = None if self.state_dir is None else state_file(self.state_dir, f"{self.problem_id}::{key}")
                check = await rmax_prove(self.prover, self.checker, problem, sub.statement, search, state=state)
        self.calls += check.model_calls
        self.checks += check.lean_checks
        self.log(key, check.model_calls, check.lean_checks, check.model_dump(mode="json"))
        return check

    async def decompose(self, problem: Problem, statement: str, depth: int, path: str) -> Decomposition:
        result = Decomposition(depth=depth, lean_statement=statement)
        feedback = ""
        goals: list[str | None] = []
        for round_number in range(1, self.options.sketch_attempts + 1):
            calls_left, checks_left = self.left()
            if calls_left < 1 or checks_left < 1:
                result.reason = f"no sketch accepted: {self.budget_reason()}"
                return result
            attempt, goals = await self.sketch(
                problem, statement, round_number, feedback, f"{path}sketch{round_number}"
            )
            self.usage.add(attempt.usage)
            result.sketches.append(attempt)
            if attempt.status == "accepted":
                break
            feedback = "\n".join(f"- {reason}" for reason in attempt.reasons)
        else:
            result.reason = f"no sketch accepted in {self.options.sketch_attempts} round(s)"
            return result
        result.informal, result.sketch = attempt.informal, attempt.sketch
        assert attempt.sketch is not None
        result.subgoals = self.subgoals(statement, attempt.sketch, goals, depth)
        if not result.subgoals and attempt.result is not None and attempt.result.ok:
            # a sketch without steps that checks is a proof: its check was the whole file's
            result.proof, result.result, result.solved = attempt.sketch, attempt.result, True
            result.reason = "solved: the sketch has no step and checks as it is"
            return result
        for sub in result.subgoals:
            await self.solve(problem, result, sub, path)
        open_ = [s for s in result.subgoals if s.status not in ("proved", "decomposed")]
        if open_:
            names = ", ".join(s.lemma for s in open_)
            result.reason = f"{len(open_)} of {len(result.subgoals)} subgoal(s) unsolved at depth {depth}: {names}"
            return result
        await self.assemble(statement, attempt.sketch, result, f"{path}assemble")
        return result

    async def solve(self, problem: Problem, parent: Decomposition, sub: Subgoal, path: str) -> None:
        lemma_problem = Problem(
            id=f"{problem.id}/{sub.lemma}",
            statement=(
                f"Prove the lemma `{sub.lemma}`: `{sub.claim}`, under the hypotheses of its Lean statement. "
                f"It is one step of this proof:\n\n{parent.informal or ''}\n\nof this problem:\n\n{problem.statement}"
            ),
        )
        key = f"{path}{sub.lemma}"
        check = await self.prove_lemma(lemma_problem, sub, key)
        if check is None:
            sub.status, sub.reason = "not_tried", self.budget_reason()
            return
        sub.check = check
        self.usage.add(check.usage)
        if check.passed:
            sub.status, sub.proof = "proved", check.proof
            sub.reason = check.stop_reason
            return
        why = f"{self.options.mode} proof failed ({check.stop_reason})"
        if sub.depth >= self.options.max_depth:
            sub.status, sub.reason = "unsolved", f"{why}; depth limit {self.options.max_depth} reached"
            return
        inner = await self.decompose(lemma_problem, sub.statement, sub.depth + 1, f"{key}/")
        sub.decomposition = inner
        if inner.solved:
            sub.status, sub.proof, sub.reason = "decomposed", inner.proof, f"{why}; solved by decomposition"
        else:
            sub.status, sub.reason = "unsolved", f"{why}; decomposition: {inner.reason}"

    async def assemble(self, statement: str, sketch: str, result: Decomposition, key: str) -> None:
        proof = put_back(statement, sketch, [(sub.lemma, sub.proof or "") for sub in result.subgoals])
        result.proof = proof
        entry = self.replay(key)
        if entry is not None:
            result.result = LeanResult.model_validate(entry["value"])
        else:
            kept, why = statement_preserved(statement, proof)
            if not kept:
                result.reason = f"the assembled proof does not keep the statement: {why}"
                return
            if self.left()[1] < 1:
                result.reason = f"not assembled: {self.budget_reason()}"
                return
            result.result = await self.lean(proof)
            self.log(key, 0, 1, result.result.model_dump(mode="json"))
        result.solved = result.result.ok
        result.reason = (
            f"solved: {len(result.subgoals)} subgoal(s), the assembled proof checks"
            if result.solved
            else "the assembled proof does not check: " + "; ".join(result.result.reasons)
        )


async def decompose_prove(
    prover: FormalProver,
    checker: LeanChecker,
    problem: Problem,
    lean_statement: str,
    options: DecomposeOptions | None = None,
    *,
    sketcher: FormalSketcher | None = None,
    state: str | Path | None = None,
) -> FormalCheck:
    """Subgoal decomposition (see the module's notes). ``sketcher``: the model that writes the
    sketches (default: the prover's model, prompts and sampling); ``state``: the state file to
    resume from and append to. The record's ``decomposition`` has the informal proof, the
    sketches, every subgoal with its prover's record and lemma proof, and the assembled check."""
    if not lean_statement.strip():
        raise InputError(f"problem {problem.id} has an empty Lean statement")
    options = options or DecomposeOptions()
    if sketcher is None:
        sketcher = FormalSketcher.beside(prover)
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                problem.statement,
                lean_statement,
                options.model_dump(mode="json", exclude={"search": {"max_calls", "max_checks"}}),
            ]
        ).encode()
    ).hexdigest()[:16]
    state_path = Path(state) if state is not None else None
    writer = JsonlAppender(state_path) if state_path is not None else None
    run = _Decomposer(
        prover,
        sketcher,
        checker,
        options,
        problem.id,
        _read_state(state_path, fingerprint),
        writer,
        fingerprint,
        state_path.parent if state_path is not None else None,
    )
    try:
        decomposition = await run.decompose(problem, lean_statement, 1, "")
    finally:
        if writer is not None:
            writer.close()
    unsolved = decomposition.unsolved()
    check = FormalCheck(
        problem_id=problem.id,
        lean_statement=lean_statement,
        mode="decompose",
        passed=decomposition.solved,
        proof=decomposition.proof or decomposition.sketch,
        result=decomposition.result,
        usage=run.usage,
        model_calls=run.calls,
        lean_checks=run.checks,
    )
    if decomposition.solved:
        check.status = "passed"
        deeper = sum(s.status == "decomposed" for s in decomposition.subgoals)
        check.stop_reason = f"proved by decomposition: {len(decomposition.subgoals)} subgoal(s)" + (
            f", {deeper} decomposed again" if deeper else ""
        )
    else:
        last = decomposition.sketches[-1].status if decomposition.sketches else "no_attempt"
        if decomposition.sketch is None and last in ("no_lean_block", "statement_changed", "timeout", "error"):
            check.status = last  # attempt statuses too
        else:
            check.status = "failed" if decomposition.sketches else "no_attempt"
        check.stop_reason = decomposition.reason
        spent = run.calls >= options.search.max_calls or run.checks >= options.search.max_checks
        if spent and "budget spent" not in check.stop_reason:
            check.stop_reason += f" ({run.budget_reason()})"
    check.decomposition = decomposition.model_dump(mode="json") | {"unsolved": unsolved, "replayed": run.replayed}
    return check
