"""The formal step: for a problem with a Lean statement, ask the generator for a Lean proof and
let a Lean checker decide.

problem + ``lean_statement`` -> the ``formal_prove`` prompt -> the model writes a complete Lean
file in a fenced ``lean`` block -> the block is extracted -> the statement must be kept as given
(its ``open``/``variable`` lines and the theorem up to ``:=``, compared without comments and
with whitespace normalised) -> the checker (a local ``lean``, a Lake project with Mathlib, a warm
server or a Kimina server) -> a typed :class:`FormalCheck`. A failed attempt can be retried
with Lean's messages shown to the model (``attempts``). :func:`join_evidence` adds the check to
a :class:`~proofcritic.pipelines.SolveResult`'s evidence (its transcript).

Every way an attempt can fail is a status, never an exception: ``no_lean_block`` (the output
has no Lean code), ``statement_changed``, and the checker's ``failed`` / ``timeout`` /
``error``. A checker that lacks a library every file needs (a lean without ``Init``, no
Mathlib) is not a failed proof: its :class:`~proofcritic.errors.SetupError` propagates (a batch
records the item as a set-up error, tried again by a rerun, and starts no more items).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from .._roles import Role
from ..errors import InputError
from ..io import JsonlAppender, problem_from_record
from ..lean_checker import LeanChecker, LeanResult, blank_comments_and_strings
from ..llm import ChatMessage, Usage
from ..promptset import PromptSet
from ..runner import RunStats, read_items, run_jsonl
from ..types import Problem
from ._common import SolveResult

if TYPE_CHECKING:
    from .formal_decompose import DecomposeOptions, FormalSketcher
    from .formal_search import SearchOptions

__all__ = [
    "FormalAttempt",
    "FormalCheck",
    "FormalProblem",
    "FormalProver",
    "extract_lean",
    "formal_jsonl",
    "formal_prove",
    "join_evidence",
    "read_formal_items",
    "read_lean_problems",
    "statement_preserved",
]

TEMPLATE = "formal_prove"
#: the variables of the ``formal_prove`` template: ``problem`` (Problem), ``lean_statement`` and
#: ``feedback`` (strings; ``feedback`` is empty on a first attempt). A prompt set (``--prompts``)
#: may carry its own ``formal_prove.j2`` / ``.txt``; otherwise the built-in one is used.
FORMAL_VARIABLES: dict[str, frozenset[str]] = {TEMPLATE: frozenset({"problem", "lean_statement", "feedback"})}
AttemptStatus = Literal["passed", "failed", "timeout", "error", "no_lean_block", "statement_changed"]

_FENCE = re.compile(r"```[ \t]*(lean4?|)[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL | re.IGNORECASE)
_SORRY_TAIL = re.compile(r":=\s*(?:by\s+)?sorry\s*$")
_DECL_START = re.compile(
    r"^[ \t]*(?:@\[[^\]]*\]\s*)*(?:(?:private|protected|noncomputable)\s+)*(theorem|lemma|example)\b", re.MULTILINE
)


class FormalProblem(BaseModel):
    """A problem with its Lean 4 statement (a file whose theorem ends in ``sorry``)."""

    problem: Problem
    lean_statement: str


class Cut(BaseModel):
    """Where an attempt was cut: 1-based line, 0-based column (code points), offset in the file."""

    line: int
    column: int
    offset: int
    reason: str = Field("", description="The message (or token) that cut it.")
    goal: str | None = Field(None, description="The goal that message carries, if any.")


class FormalAttempt(BaseModel):
    """One Lean proof the model wrote, and what became of it."""

    attempt: int = Field(..., description="1-based round (a later round sees the previous round's Lean messages).")
    sample: int = Field(0, description="Index of the sample within its round.")
    raw: str = Field("", description="The whole model output.")
    finish_reason: str | None = None
    lean: str | None = Field(None, description="The Lean file extracted from the output.")
    status: AttemptStatus
    ok: bool = False
    reasons: list[str] = Field(default_factory=list)
    result: LeanResult | None = Field(None, description="The checker's result (None when nothing was checked).")
    usage: Usage = Field(default_factory=Usage)
    prefix: str | None = Field(
        None,
        description="--mode resume / --search rmax: the kept prefix (with its goal comment) this attempt continued.",
    )
    node: str | None = Field(None, description="--search rmax: the tree node this attempt expanded.")
    cut: Cut | None = Field(None, description="Where this failed attempt was cut (resume, rmax).")
    probe: LeanResult | None = Field(None, description="The check of the cut prefix with a hole, when one was needed.")


class FormalCheck(BaseModel):
    """The formal evidence for one problem: did any attempt produce a proof Lean accepts."""

    problem_id: str
    lean_statement: str
    passed: bool = False
    proof: str | None = Field(None, description="The Lean file that passed (else the last one written).")
    result: LeanResult | None = Field(None, description="The checker's result for ``proof``.")
    status: AttemptStatus | Literal["no_attempt"] = "no_attempt"
    attempts: list[FormalAttempt] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    mode: Literal["whole", "resume", "rmax", "decompose"] = "whole"
    model_calls: int = Field(0, description="Model requests made for this problem.")
    lean_checks: int = Field(0, description="Lean checks made for this problem (probes included).")
    stop_reason: str = ""
    prefixes: list[str] = Field(default_factory=list, description="resume / rmax: every prefix kept, in order.")
    search: dict | None = Field(None, description="--search rmax: expansions, replayed, the tree's nodes.")
    decomposition: dict | None = Field(
        None,
        description="--decompose: the informal proof, the sketches, each subgoal with its attempts and lemma "
        "proof, the assembled check, the unsolved lemmas (pipelines.formal_decompose.Decomposition).",
    )

    def evidence(self) -> dict:
        """The transcript entry :func:`join_evidence` adds."""
        return {
            "step": "formal",
            "passed": self.passed,
            "status": self.status,
            "attempts": len(self.attempts),
            "reasons": self.attempts[-1].reasons if self.attempts else [],
            "backend": self.result.backend if self.result else None,
            "messages": [str(m) for m in self.result.messages] if self.result else [],
            "proof": self.proof,
        }


def extract_lean(text: str) -> str | None:
    """The Lean file in a model output: the last fenced ``lean``/``lean4`` block, else the last
    unlabelled block that declares a theorem or lemma; ``None`` when there is none."""
    labelled: list[str] = []
    plain: list[str] = []
    for match in _FENCE.finditer(text):
        body = match.group(2).strip("\n")
        if not body.strip():
            continue
        (labelled if match.group(1) else plain).append(body)
    if labelled:
        return labelled[-1] + "\n"
    for body in reversed(plain):
        if _DECL_START.search(body):
            return body + "\n"
    return None


def _normalise(code: str) -> str:
    code = code.replace(":=", " := ")
    return " ".join(code.split())


def statement_preserved(lean_statement: str, lean: str) -> tuple[bool, str]:
    """Whether ``lean`` keeps the statement: each of its lines before the theorem (imports,
    ``open``, ``variable``...) and the theorem itself up to ``:=``."""
    statement = blank_comments_and_strings(lean_statement).rstrip()
    statement = _SORRY_TAIL.sub("", statement)
    match = None
    for match in _DECL_START.finditer(statement):  # noqa: B007 - the last one is wanted
        pass
    if match is None:
        return False, "the Lean statement declares no theorem"
    head, theorem = statement[: match.start()], statement[match.start() :]
    code = _normalise(blank_comments_and_strings(lean))
    for line in head.splitlines():
        if line.strip() and _normalise(line) not in code:
            return False, f"the proof lacks the statement's line {line.strip()!r}"
    if _normalise(theorem) + " :=" not in code:
        first = " ".join(theorem.split())[:80]
        return False, f"the proof does not keep the theorem as stated ({first}...)"
    return True, ""


class FormalProver(Role):
    """The generator asked for a Lean proof (template ``formal_prove``)."""

    template = TEMPLATE

    def __init__(self, model, *, prompts: PromptSet | None = None, config=None):
        super().__init__(model, prompts=prompts, config=config)
        self.prompts = self.prompts.template_set(TEMPLATE, FORMAL_VARIABLES[TEMPLATE])  # the given set's, else built in

    def messages(self, problem: Problem, lean_statement: str, feedback: str = "") -> list[ChatMessage]:
        return self.render(problem=problem, lean_statement=lean_statement, feedback=feedback)

    async def write(
        self, problem: Problem, lean_statement: str, n: int = 1, *, feedback: str = "", seed: int | None = None
    ) -> list[FormalAttempt]:
        """``n`` Lean proofs, extracted but not checked yet (status ``no_lean_block`` or ``failed``)."""
        attempts = await self.ask(self.messages(problem, lean_statement, feedback), _written_attempt, n, seed=seed)
        for index, attempt in enumerate(attempts):
            attempt.sample = index
        return attempts


def _written_attempt(text: str, finish_reason: str | None) -> FormalAttempt:
    """One output as an attempt not checked yet (its Lean block extracted, if it has one)."""
    lean = extract_lean(text)
    return FormalAttempt(
        attempt=0,
        raw=text,
        finish_reason=finish_reason,
        lean=lean,
        status="failed" if lean is not None else "no_lean_block",
        reasons=[] if lean is not None else ["the output has no Lean code block"],
    )


def _feedback(attempt: FormalAttempt, limit: int = 3000) -> str:
    lines = [f"- {reason}" for reason in attempt.reasons]
    if attempt.result is not None:
        lines += [
            f"{m.line}:{m.column}: {m.severity}: {m.text}"
            for m in attempt.result.messages
            if m.severity != "information"
        ]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[:limit] + "\n[...]"


async def formal_prove(
    prover: FormalProver,
    checker: LeanChecker,
    problem: Problem,
    lean_statement: str,
    *,
    samples: int = 1,
    attempts: int = 1,
    seed: int | None = None,
) -> FormalCheck:
    """Up to ``attempts`` rounds of ``samples`` Lean proofs each; stop at the first that passes.

    A round after a failed one shows the model the Lean messages of the previous round's first
    sample. The result names the passing proof, or the last one written.
    """
    if not lean_statement.strip():
        raise InputError(f"problem {problem.id} has an empty Lean statement")
    check = FormalCheck(problem_id=problem.id, lean_statement=lean_statement)
    feedback = ""
    for round_number in range(1, attempts + 1):
        round_seed = None if seed is None else seed + round_number - 1
        written = await prover.write(problem, lean_statement, samples, feedback=feedback, seed=round_seed)
        check.model_calls += 1
        for attempt in written:
            attempt.attempt = round_number
            check.usage.add(attempt.usage)
            if attempt.lean is not None:
                kept, why = statement_preserved(lean_statement, attempt.lean)
                if not kept:
                    attempt.status, attempt.reasons = "statement_changed", [why]
                else:
                    attempt.result = await checker.check(attempt.lean)
                    check.lean_checks += 1
                    attempt.status, attempt.ok = attempt.result.status, attempt.result.ok
                    attempt.reasons = list(attempt.result.reasons)
            check.attempts.append(attempt)
            if attempt.lean is not None:
                check.proof, check.result = attempt.lean, attempt.result
            check.status = attempt.status
            if attempt.ok:
                check.passed = True
                check.stop_reason = f"proved in round {round_number}"
                return check
        feedback = _feedback(written[0]) if written else ""
    check.stop_reason = f"no proof passed in {attempts} round(s)"
    return check


def join_evidence(result: SolveResult, check: FormalCheck) -> SolveResult:
    """``result`` with the formal check added to its evidence (a ``formal`` transcript entry)."""
    return result.model_copy(update={"transcript": [*result.transcript, check.evidence()]})


def read_lean_problems(path: str | Path) -> list[FormalProblem]:
    """The problems of a CSV with a ``Lean Statement`` column (IMO-ProofBench's layout; the
    benchmark's own file: :func:`proofcritic.benchmarks.load_lean_problems`)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"Lean problem file not found: {file}")
    with file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out: list[FormalProblem] = []
    for number, row in enumerate(rows, start=2):
        lean = (row.get("Lean Statement") or row.get("lean_statement") or "").strip()
        statement = (row.get("Problem") or row.get("problem") or "").strip()
        if not lean or not statement:
            continue
        problem = Problem(
            id=(row.get("Problem ID") or row.get("id") or f"row-{number}").strip(),
            statement=statement,
            reference_solution=(row.get("Solution") or "").strip() or None,
            grading_guidelines=(row.get("Grading guidelines") or "").strip() or None,
        )
        out.append(FormalProblem(problem=problem, lean_statement=lean + "\n"))
    if not out:
        raise InputError(f"{file} has no rows with a problem and a Lean statement")
    return out


def read_formal_items(
    path: str | Path, *, ids: Sequence[str] | None = None, limit: int | None = None
) -> list[tuple[str, int, dict | InputError]]:
    """Batch items from a CSV with a ``Lean Statement`` column (IMO-ProofBench's layout) or a
    JSONL file whose records have ``lean_statement`` and the problem fields; ``ids`` keeps
    those problems only, ``limit`` the first ones."""
    file = Path(path)
    if file.suffix.lower() == ".csv":
        items: list[tuple[str, int, dict | InputError]] = [
            (fp.problem.id, number, {"problem": fp.problem.model_dump(), "lean_statement": fp.lean_statement})
            for number, fp in enumerate(read_lean_problems(file), start=1)
        ]
    else:
        items = list(read_items(file))  # filtered and cut below; Lean batches are small
    if ids:
        wanted = set(ids)
        unknown = wanted - {item_id for item_id, _, _ in items}
        if unknown:
            raise InputError(f"no problem with id {', '.join(sorted(unknown))} in {file}")
        items = [item for item in items if item[0] in wanted]
    return items[:limit] if limit is not None else items


async def formal_jsonl(
    prover: FormalProver,
    checker: LeanChecker,
    items: list[tuple[str, int, dict | InputError]],
    output: str | Path,
    *,
    samples: int = 1,
    attempts: int = 1,
    concurrency: int = 4,
    on_progress: Callable[[RunStats], None] | None = None,
    mode: Literal["whole", "resume", "rmax", "decompose"] = "whole",
    options: SearchOptions | None = None,
    state_dir: str | Path | None = None,
    decompose: DecomposeOptions | None = None,
    sketcher: FormalSketcher | None = None,
    training_out: str | Path | None = None,
) -> RunStats:
    """:func:`formal_prove` for every item (``mode`` "resume": :func:`~.formal_search.resume_prove`,
    "rmax": :func:`~.formal_search.rmax_prove` with ``options``, its state in ``state_dir``, one
    file per problem), one :class:`FormalCheck` record per line of ``output``; a rerun skips the
    problems already there. ``stats.extra["passed"]`` counts the proofs Lean accepted in this run; ``model_calls`` and ``lean_checks`` what they cost,
    ``budget_stops`` the problems a per-problem budget stopped (resume, rmax, decompose).

    ``mode`` "decompose": :func:`~.formal_decompose.decompose_prove` with ``decompose`` (its
    sketches by ``sketcher``, default the prover's model), its state in ``state_dir``;
    ``stats.extra["unsolved"]`` counts the subgoals left unproved; each solved decomposition is
    appended to ``training_out`` (JSONL, :func:`~.formal_decompose.training_example`) unless a
    line for its problem is there already."""
    from .formal_decompose import FormalSketcher, decompose_prove, decompose_state_file, training_example
    from .formal_search import resume_prove, rmax_prove, state_file

    stats_passed = 0
    spent = {"model_calls": 0, "lean_checks": 0, "budget_stops": 0}
    if mode == "decompose":
        spent["unsolved"] = 0
    trained = _written_ids(training_out)
    appender = JsonlAppender(training_out) if training_out is not None else None

    async def process(item_id: str, record: dict) -> dict:
        nonlocal stats_passed
        problem = problem_from_record(record, default_id=item_id)
        lean_statement = record.get("lean_statement")
        if not isinstance(lean_statement, str) or not lean_statement.strip():
            raise InputError("record has no 'lean_statement' text")
        if mode == "resume":
            check = await resume_prove(prover, checker, problem, lean_statement, options)
        elif mode == "rmax":
            state = state_file(state_dir, item_id) if state_dir is not None else None
            check = await rmax_prove(prover, checker, problem, lean_statement, options, state=state)
        elif mode == "decompose":
            state = decompose_state_file(state_dir, item_id) if state_dir is not None else None
            check = await decompose_prove(
                prover, checker, problem, lean_statement, decompose, sketcher=sketcher, state=state
            )
            spent["unsolved"] += len((check.decomposition or {}).get("unsolved", []))
            if check.passed and appender is not None and check.problem_id not in trained:
                trained.add(check.problem_id)
                appender.write(training_example(problem, check, sketcher or FormalSketcher.beside(prover)))
        else:
            check = await formal_prove(prover, checker, problem, lean_statement, samples=samples, attempts=attempts)
        stats_passed += check.passed
        spent["model_calls"] += check.model_calls
        spent["lean_checks"] += check.lean_checks
        spent["budget_stops"] += "budget spent" in check.stop_reason
        return check.model_dump(mode="json")

    def progress(stats: RunStats) -> None:
        stats.extra["passed"] = stats_passed
        stats.extra.update(spent)
        if on_progress is not None:
            on_progress(stats)

    try:
        stats = await run_jsonl(items, output, process, concurrency=concurrency, on_progress=progress)
    finally:
        if appender is not None:
            appender.close()
    stats.extra["passed"] = stats_passed
    stats.extra.update(spent)
    return stats


def _written_ids(path: str | Path | None) -> set[str]:
    """The problem ids a JSONL file (a training-example file) has lines for already."""
    if path is None or not Path(path).is_file():
        return set()
    ids = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill (the appender cuts it off)
        if isinstance(record, dict) and isinstance(record.get("problem_id"), str):
            ids.add(record["problem_id"])
    return ids
