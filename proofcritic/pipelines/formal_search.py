"""Proof search with Lean's feedback for ``lean-prove`` (DeepSeek-Prover V1.5): truncate and
resume, and RMaxTS, a tree search over proof prefixes.

**Cut.** A failed attempt is cut at its first error: the earliest error Lean reports inside the
proof (after the theorem's ``:=``; errors located on the theorem's head, before its ``:=``, are
about the declaration as a whole and are passed over), or at the first ``sorry`` / ``admit`` of
an attempt without errors. An ``unsolved goals`` error (a tactic block that is fine but
unfinished) cuts at the end of the attempt: everything is kept. An attempt whose only faults are
axioms, or whose error lies before the theorem (in a lemma of its own), has no cut.

**Goal.** The goal shown at a cut is taken from the message that cut it when that message carries
one (``unsolved goals``, ``don't know how to synthesize placeholder``: every message with a
``⊢``), else from a *probe*: the prefix with a hole at the cut checked once more (``sorry``
for a checker that reports the goals of sorries, a Kimina server; otherwise ``?_`` in term
mode; in a ``by`` block ``skip`` at the start of a line, nothing inside one, and Lean reports the
unsolved goals). A probe is a Lean check like any other and counts in the budget. The prefix shown to the model ends in a comment
with that goal, ``/- Lean's goal here: ... -/``, and the model writes what follows; the comment
stays in the file (Lean ignores it). A continuation that itself keeps the statement (a whole file)
is taken as a whole file.

**Truncate and resume** (:func:`resume_prove`): a whole-proof round first (``samples`` proofs),
then, while the budgets last, ``samples`` continuations of the current prefix; the current prefix
moves to the longest new cut that is longer than it and whose prefix checks; a round without one
resumes from the same prefix with a new seed; an attempt with no cut at all falls back to a new
whole proof (with Lean's messages, as ``--mode whole`` does) when nothing was cut yet.

**RMaxTS** (:func:`rmax_prove`): the nodes are prefixes that check (Lean reports errors only at
or after the cut), the root being the statement without its ``sorry``. Each iteration selects
``parallel`` nodes by UCB with virtual loss, expands each by ``samples`` sampled continuations
(one model call), checks them, and adds the cut prefix of each failed continuation that goes
beyond the node as a child (one node per distinct prefix). The reward of an expansion is 1 when a
continuation is a complete proof (the search stops), else the intrinsic reward of RMax: 1 when it
added a node whose goal state was never seen before in this tree (the goal text with whitespace
normalised; a node without a reported goal counts its prefix as its state), else 0. The reward is
backed up along the selected path. Selection descends from the root; at a node ``v`` the arms are
its children ``c`` and ``v`` itself (expanding ``v`` again, with its own expansion counts), each
scored ``W(a) / N(a) + C * sqrt(ln N(v) / N(a))`` (``N(v)``: the visits of ``v``, ``W``, ``N``:
the arm's reward sum and visits; an arm never tried scores infinity; ties go to ``v`` itself,
then to the older child); the descent stops at ``v`` when ``v`` wins or has no children.

**Budgets** (per problem): ``max_calls`` model requests and ``max_checks`` Lean checks (probes
included). A round or expansion is started only when its call and the checks it may need (one
per continuation plus one probe per continuation) are left; what it does not use is given back.

**State.** With ``state`` (a file), :func:`rmax_prove` appends every finished expansion (its
node, the continuations, their checks and probes) as one JSON line; a rerun after a kill replays
them without asking the model or Lean again (charging the budgets with the recorded counts, so it
decides the same), then goes on, asking only for what is missing; a request that was in flight
is answered from the completion cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from .._roles import Role
from ..errors import InputError
from ..io import JsonlAppender
from ..lean_checker import LeanChecker, LeanResult, blank_comments_and_strings
from ..llm import ChatMessage
from ..promptset import PromptSet
from ..types import Problem
from .formal import (
    _DECL_START,
    _FENCE,
    Cut,
    FormalAttempt,
    FormalCheck,
    FormalProver,
    _feedback,
    _written_attempt,
    extract_lean,
    statement_preserved,
)

__all__ = [
    "Cut",
    "FormalContinuer",
    "SearchNode",
    "SearchOptions",
    "cut_attempt",
    "extends",
    "goal_of",
    "resume_prove",
    "rmax_prove",
    "state_file",
    "statement_end",
    "ucb",
]

RESUME_TEMPLATE = "formal_resume"
RESUME_VARIABLES = frozenset({"problem", "lean_statement", "prefix"})

_BY = re.compile(r"(?<![\w.'])by(?![\w'])")
_ASSIGN = re.compile(r":=")
_STATEMENT_SORRY = re.compile(r"(?<![\w.'])sorry\s*$")
_SORRY = re.compile(r"(?<![\w.'])(sorry|admit)(?![\w'])")


class SearchOptions(BaseModel):
    """Budgets and knobs of ``--mode resume`` and ``--search rmax`` (per problem)."""

    samples: int = Field(1, ge=1, description="Continuations (or whole proofs) per model call.")
    max_calls: int = Field(16, ge=1, description="Model requests per problem.")
    max_checks: int = Field(64, ge=1, description="Lean checks per problem, probes included.")
    parallel: int = Field(1, ge=1, description="RMaxTS: expansions selected and run at once.")
    exploration: float = Field(1.0, ge=0, description="RMaxTS: the UCB constant C.")
    seed: int = Field(0, description="Base seed; request k is sampled with seed + k.")


class SearchNode(BaseModel):
    """A node of the RMaxTS tree: a prefix that checks, and its statistics."""

    id: str
    parent: str | None = None
    prefix: str
    goal: str | None = None
    new_state: bool = Field(False, description="Its goal state was not seen before in the tree (intrinsic reward 1).")
    visits: int = 0
    value: float = 0.0
    expansions: int = Field(0, description="Expansions made at this node (the 'expand here' arm's visits).")
    expansion_value: float = 0.0
    from_attempt: int | None = Field(
        None, description="Index (in the record's attempts) of the attempt it was cut from."
    )


class FormalContinuer(Role):
    """The generator asked to continue a Lean prefix (template ``formal_resume``)."""

    template = RESUME_TEMPLATE

    def __init__(self, model, *, prompts: PromptSet | None = None, config=None):
        super().__init__(model, prompts=prompts, config=config)
        self.prompts = self.prompts.template_set(RESUME_TEMPLATE, RESUME_VARIABLES)

    def messages(self, problem: Problem, lean_statement: str, prefix: str) -> list[ChatMessage]:
        return self.render(problem=problem, lean_statement=lean_statement, prefix=prefix)

    @classmethod
    def beside(cls, prover: FormalProver) -> FormalContinuer:
        """A continuer on the prover's model, prompt set and sampling settings."""
        continuer = cls.__new__(cls)
        Role.__init__(continuer, prover.model, prompts=prover.prompts, config=prover.config)
        # the prover's set (the user's, when it has formal_prove), else the built-in one
        continuer.prompts = prover.prompts.template_set(RESUME_TEMPLATE, RESUME_VARIABLES)
        return continuer


# --- cutting ------------------------------------------------------------------------------------


def _offset(text: str, line: int, column: int) -> int:
    """The offset of 1-based ``line``, 0-based ``column`` in ``text`` (clamped to the text)."""
    lines = text.split("\n")
    if line < 1:
        return 0
    if line > len(lines):
        return len(text)
    start = sum(len(part) + 1 for part in lines[: line - 1])
    return min(start + min(max(column, 0), len(lines[line - 1])), len(text))


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def statement_end(lean_statement: str, lean: str) -> tuple[int, int] | None:
    """Where the theorem of ``lean_statement`` starts in ``lean`` and the offset just after its
    ``:=`` (the first one after the theorem's keyword, outside comments and strings); ``None``
    when the file does not declare it."""
    statement = blank_comments_and_strings(lean_statement)
    heads = list(_DECL_START.finditer(statement))
    if not heads:
        return None
    words = statement[heads[-1].start() :].split()
    name = next((w for w, prev in zip(words[1:], words) if prev in ("theorem", "lemma", "example")), None)
    code = blank_comments_and_strings(lean)
    for head in _DECL_START.finditer(code):
        rest = code[head.end() :].split()
        if head.group(1) == "example" or (name is not None and rest and rest[0] == name):
            assign = _ASSIGN.search(code, head.end())
            if assign is not None:
                return head.start(), assign.end()
    return None


def goal_of(text: str) -> str | None:
    """The goal a Lean message carries (the hypotheses and the ``⊢`` line(s)), else ``None``."""
    if "⊢" not in text:
        return None
    if "context:\n" in text:
        return text.split("context:\n", 1)[1].strip()
    first, _, rest = text.partition("\n")
    return (rest or first).strip()


def cut_attempt(lean_statement: str, lean: str, result: LeanResult) -> Cut | None:
    """Where a failed attempt is cut (see the module's notes), or ``None``."""
    span = statement_end(lean_statement, lean)
    if span is None:
        return None
    head_start, body_start = span
    candidates: list[tuple[int, Cut]] = []
    for message in result.errors:
        offset = _offset(lean, message.line, message.column)
        first_line = message.text.splitlines()[0] if message.text else ""
        if first_line.startswith("unsolved goals"):
            end = len(lean.rstrip())
            line, column = _position(lean, end)
            candidates.append(
                (end, Cut(line=line, column=column, offset=end, reason=first_line, goal=goal_of(message.text)))
            )
            continue
        if head_start <= offset < body_start:
            continue  # on the theorem's head: about the declaration as a whole
        candidates.append(
            (
                offset,
                Cut(
                    line=message.line,
                    column=message.column,
                    offset=offset,
                    reason=first_line,
                    goal=goal_of(message.text),
                ),
            )
        )
    if not candidates and not result.errors:
        code = blank_comments_and_strings(lean)
        for match in _SORRY.finditer(code, body_start):
            line, column = _position(lean, match.start())
            candidates.append(
                (match.start(), Cut(line=line, column=column, offset=match.start(), reason=match.group(1)))
            )
            break
    if not candidates:
        return None
    offset, cut = min(candidates, key=lambda c: c[0])
    if offset < body_start:
        return None  # an error before the theorem (a lemma of the attempt's own): nothing to keep
    return cut


def _tactic_mode(prefix: str, body_start: int) -> bool:
    return bool(_BY.search(blank_comments_and_strings(prefix), body_start))


def _hole(checker: LeanChecker, prefix: str, body_start: int) -> str:
    """What a probe puts at the cut: ``sorry`` for a checker that reports the goals of sorries
    (Kimina); in a ``by`` block ``skip`` at the start of a line (nothing inside one), so that Lean
    reports the unsolved goals; ``?_`` in a term, whose placeholder error shows the goal."""
    if getattr(checker, "name", "") == "kimina":
        return "sorry"
    if _tactic_mode(prefix, body_start):
        return "skip" if not prefix[prefix.rfind("\n") + 1 :].strip() else ""
    return "?_"


def _with_goal(prefix: str, goal: str | None) -> str:
    """The prefix shown to the model and kept in the file: the goal in a comment at its end (on
    the cut line when the cut is inside a line, so that what follows stays on that line)."""
    shown = (goal or "Lean reported no goal at this point").replace("-/", "- /")
    comment = f"/- Lean's goal here:\n{shown} -/"
    head = prefix.rstrip(" \t")
    if head.endswith("\n") or not head:
        indent = prefix[len(head) :]
        return f"{prefix}{comment}\n{indent}"
    sep = "" if prefix[-1:].isspace() else " "
    return f"{prefix}{sep}{comment} "


def _code(text: str) -> str:
    return " ".join(blank_comments_and_strings(text).split())


def extends(prefix: str, base: str) -> bool:
    """Whether ``prefix`` goes beyond ``base``: its code (comments and strings blanked,
    whitespace normalised) starts with ``base``'s and is longer."""
    mine, theirs = _code(prefix), _code(base)
    return len(mine) > len(theirs) and mine.startswith(theirs)


def continuation_block(text: str) -> str | None:
    """The continuation in a model output: the last fenced ``lean`` block, else the last fenced
    block of any kind (a continuation needs no theorem of its own); ``None`` without one."""
    found = extract_lean(text)
    if found is not None:
        return found
    bodies = [m.group(2).strip("\n") for m in _FENCE.finditer(text) if m.group(2).strip()]
    return bodies[-1] + "\n" if bodies else None


def continued_file(lean_statement: str, shown: str, block: str) -> str:
    """The file a continuation makes: ``shown`` (the prefix with its goal comment) and the block,
    the block alone when it keeps the statement itself (a whole file), the echoed prefix dropped."""
    stripped = block.lstrip()
    if stripped.startswith(shown.strip()):
        return shown + stripped[len(shown.strip()) :].lstrip("\n")
    if statement_preserved(lean_statement, block)[0]:
        return block
    return shown + block


# --- the shared machinery -----------------------------------------------------------------------


@dataclass
class _Run:
    prover: FormalProver
    continuer: FormalContinuer
    checker: LeanChecker
    problem: Problem
    lean_statement: str
    options: SearchOptions
    check: FormalCheck
    calls: int = 0
    checks: int = 0
    reserved: int = 0
    reserved_calls: int = 0
    requests: int = 0  # seeds: request k is sampled with options.seed + k

    def can_start(self, checks_needed: int) -> bool:
        """Whether one more model call and ``checks_needed`` checks fit in the budgets, beside
        what the expansions already selected in this batch hold (``reserved_calls``, ``reserved``)."""
        return (
            self.calls + self.reserved_calls < self.options.max_calls
            and self.checks + self.reserved + checks_needed <= self.options.max_checks
        )

    def next_seed(self) -> int:
        self.requests += 1
        return self.options.seed + self.requests

    async def lean(self, source: str) -> LeanResult:
        self.checks += 1
        return await self.checker.check(source)

    async def judge(self, attempt: FormalAttempt) -> None:
        """Check one written attempt (the statement kept, then Lean), as ``formal_prove`` does."""
        if attempt.lean is None:
            return
        kept, why = statement_preserved(self.lean_statement, attempt.lean)
        if not kept:
            attempt.status, attempt.reasons = "statement_changed", [why]
            return
        attempt.result = await self.lean(attempt.lean)
        attempt.status, attempt.ok = attempt.result.status, attempt.result.ok
        attempt.reasons = list(attempt.result.reasons)

    async def whole(self, round_number: int, feedback: str) -> list[FormalAttempt]:
        self.calls += 1
        written = await self.prover.write(
            self.problem, self.lean_statement, self.options.samples, feedback=feedback, seed=self.next_seed()
        )
        await asyncio.gather(*(self.judge(a) for a in written))
        for attempt in written:
            attempt.attempt = round_number
        return written

    async def continue_from(
        self, shown: str, round_number: int, n: int, seed: int | None = None
    ) -> list[FormalAttempt]:
        self.calls += 1
        messages = self.continuer.messages(self.problem, self.lean_statement, shown)
        seed = self.next_seed() if seed is None else seed
        written = await self.continuer.ask(messages, _written_attempt, n, seed=seed)
        for index, attempt in enumerate(written):
            attempt.attempt, attempt.sample, attempt.prefix = round_number, index, shown
            block = continuation_block(attempt.raw)
            if block is not None:
                attempt.lean = continued_file(self.lean_statement, shown, block)
                attempt.status, attempt.reasons = "failed", []
        await asyncio.gather(*(self.judge(a) for a in written))
        return written

    async def prefix_state(self, attempt: FormalAttempt, base: str | None) -> tuple[str, str | None, bool] | None:
        """The prefix an attempt is cut to, its goal, and whether it was probed; ``None`` without
        a cut, when the prefix does not go beyond ``base`` (then it is not probed), or when it
        does not check (a probe shows an error before the cut)."""
        if attempt.lean is None or attempt.result is None or attempt.status != "failed":
            return None
        cut = cut_attempt(self.lean_statement, attempt.lean, attempt.result)
        if cut is None:
            return None
        attempt.cut = cut
        prefix = attempt.lean[: cut.offset]
        if base is not None and not extends(prefix, base):
            return None
        if cut.goal is not None:
            return prefix, cut.goal, False
        span = statement_end(self.lean_statement, attempt.lean)
        assert span is not None  # a cut needs it
        probe = await self.lean(prefix + _hole(self.checker, prefix, span[1]) + "\n")
        attempt.probe = probe
        goal = None
        for sorry in probe.sorries:
            if (sorry.line, sorry.column) >= (cut.line, cut.column) and sorry.goal:
                goal = sorry.goal
                break
        for message in probe.errors:
            offset = _offset(prefix, message.line, message.column)
            if span[0] <= offset < span[1] and not message.text.startswith("unsolved goals"):
                continue
            if offset < cut.offset and not message.text.startswith("unsolved goals"):
                return None  # the prefix alone does not check
            goal = goal or goal_of(message.text)
        return prefix, goal, True


def _cut_length(lean_statement: str, attempt: FormalAttempt) -> int:
    """The length of the code an attempt would keep (-1 without a cut)."""
    if attempt.lean is None or attempt.result is None or attempt.status != "failed":
        return -1
    cut = cut_attempt(lean_statement, attempt.lean, attempt.result)
    return -1 if cut is None else len(_code(attempt.lean[: cut.offset]))


def _state_key(goal: str | None, prefix: str) -> str:
    return " ".join(goal.split()) if goal is not None else "prefix:" + prefix


def _finish(run: _Run, stop_reason: str) -> FormalCheck:
    check = run.check
    for attempt in check.attempts:
        check.usage.add(attempt.usage)
        if attempt.lean is not None and not check.passed:
            check.proof, check.result = attempt.lean, attempt.result
        check.status = attempt.status if not check.passed else "passed"
    passing = next((a for a in check.attempts if a.ok), None)
    if passing is not None:
        check.passed, check.proof, check.result, check.status = True, passing.lean, passing.result, "passed"
    check.model_calls, check.lean_checks, check.stop_reason = run.calls, run.checks, stop_reason
    return check


def _new_run(prover, checker, problem, lean_statement, options, mode) -> _Run:
    if not lean_statement.strip():
        raise InputError(f"problem {problem.id} has an empty Lean statement")
    check = FormalCheck(problem_id=problem.id, lean_statement=lean_statement, mode=mode)
    return _Run(prover, FormalContinuer.beside(prover), checker, problem, lean_statement, options, check)


def _budget_reason(run: _Run) -> str:
    o = run.options
    if run.calls >= o.max_calls:
        return f"model call budget spent ({run.calls} of {o.max_calls} calls, {run.checks} of {o.max_checks} checks)"
    return f"Lean check budget spent ({run.checks} of {o.max_checks} checks, {run.calls} of {o.max_calls} calls)"


# --- truncate and resume ------------------------------------------------------------------------


async def resume_prove(
    prover: FormalProver,
    checker: LeanChecker,
    problem: Problem,
    lean_statement: str,
    options: SearchOptions | None = None,
) -> FormalCheck:
    """Truncate and resume (see the module's notes); every attempt (with the prefix it continued,
    its cut and probe) in the record."""
    options = options or SearchOptions()
    run = _new_run(prover, checker, problem, lean_statement, options, "resume")
    n = options.samples
    prefix: str | None = None  # the current prefix, shown with its goal comment
    feedback = ""
    round_number = 0
    while run.can_start(2 * n):
        round_number += 1
        if prefix is None:
            written = await run.whole(round_number, feedback)
        else:
            written = await run.continue_from(prefix, round_number, n)
        run.check.attempts.extend(written)
        if any(a.ok for a in written):
            return _finish(run, f"proved in round {round_number}")
        best: tuple[str, str | None] | None = None
        # the longest cut first; its prefix is probed only when its message carries no goal
        for attempt in sorted(written, key=lambda a: -_cut_length(run.lean_statement, a)):
            if run.checks >= options.max_checks:
                break
            state = await run.prefix_state(attempt, prefix)
            if state is not None:
                best = state[:2]
                break
        if best is not None:
            prefix = _with_goal(*best)
            run.check.prefixes.append(prefix)
        elif prefix is None:
            feedback = _feedback(written[0]) if written else ""
    return _finish(run, _budget_reason(run))


# --- RMaxTS -------------------------------------------------------------------------------------


def ucb(visits: int, value: float, parent_visits: int, exploration: float) -> float:
    """An arm's UCB score: ``value / visits + C * sqrt(ln parent_visits / visits)``, infinity
    for an arm never tried."""
    if visits == 0:
        return math.inf
    return value / visits + exploration * math.sqrt(math.log(max(parent_visits, 1)) / visits)


@dataclass
class _Tree:
    nodes: dict[str, SearchNode] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    by_prefix: dict[str, str] = field(default_factory=dict)
    states: set[str] = field(default_factory=set)

    def add(self, node: SearchNode) -> None:
        self.nodes[node.id] = node
        self.children[node.id] = []
        if node.parent is not None:
            self.children[node.parent].append(node.id)
        self.by_prefix[node.prefix] = node.id

    def select(self, exploration: float) -> list[str]:
        """The path (root first) to the node to expand, by UCB (see the module's notes)."""
        path = ["n0"]
        while True:
            node = self.nodes[path[-1]]
            kids = self.children[node.id]
            if not kids:
                return path
            total = max(node.visits, 1)
            best, best_score = None, ucb(node.expansions, node.expansion_value, total, exploration)
            for kid in kids:
                child = self.nodes[kid]
                s = ucb(child.visits, child.value, total, exploration)
                if s > best_score:
                    best, best_score = kid, s
            if best is None:
                return path
            path.append(best)

    def visit(self, path: list[str], reward: float, sign: int = 1) -> None:
        for node_id in path:
            self.nodes[node_id].visits += sign
            self.nodes[node_id].value += sign * reward
        self.nodes[path[-1]].expansions += sign
        self.nodes[path[-1]].expansion_value += sign * reward


def state_file(state_dir: str | Path, problem_id: str) -> Path:
    """The state file of one problem's RMaxTS in ``state_dir``: its id made safe for a file name,
    and a hash of the id (so two ids never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", problem_id)[:60]
    return Path(state_dir) / f"rmax-{safe}-{hashlib.sha256(problem_id.encode()).hexdigest()[:8]}.jsonl"


def _read_state(path: Path | None, fingerprint: str) -> dict[str, dict]:
    """The expansions recorded in a state file for this problem and these options, by key."""
    if path is None or not path.is_file():
        return {}
    out: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint or "key" not in entry:
            continue
        if entry["key"] == "reset":  # a run that went another way: its later expansions are void
            out = {k: v for k, v in out.items() if not (k.startswith("e") and int(k[1:]) >= entry["from"])}
            continue
        out[entry["key"]] = entry
    return out


async def rmax_prove(
    prover: FormalProver,
    checker: LeanChecker,
    problem: Problem,
    lean_statement: str,
    options: SearchOptions | None = None,
    *,
    state: str | Path | None = None,
) -> FormalCheck:
    """RMaxTS (see the module's notes); the record has every attempt and the tree's nodes."""
    options = options or SearchOptions()
    run = _new_run(prover, checker, problem, lean_statement, options, "rmax")
    fingerprint = hashlib.sha256(
        json.dumps(
            [problem.statement, lean_statement, options.model_dump(exclude={"max_calls", "max_checks"})]
        ).encode()
    ).hexdigest()[:16]
    state_path = Path(state) if state is not None else None
    recorded = _read_state(state_path, fingerprint)
    writer = JsonlAppender(state_path) if state_path is not None else None
    try:
        return await _rmax(run, options, recorded, writer, fingerprint)
    finally:
        if writer is not None:
            writer.close()


async def _rmax(run: _Run, options: SearchOptions, recorded: dict[str, dict], writer, fingerprint: str) -> FormalCheck:
    problem, lean_statement, checker = run.problem, run.lean_statement, run.checker
    replayed = 0

    def log(entry: dict) -> None:
        if writer is not None and entry["key"] not in recorded:
            writer.write({"fingerprint": fingerprint, **entry})

    tree = _Tree()
    match = _STATEMENT_SORRY.search(lean_statement.rstrip())
    span = statement_end(lean_statement, lean_statement)
    if match is None or span is None:
        raise InputError(f"problem {problem.id}: the Lean statement does not end its theorem in `sorry`")
    root_prefix = lean_statement.rstrip()[: match.start()].rstrip() + "\n  "
    # the root's goal: the statement with a hole (one check)
    if "root" in recorded:
        entry = recorded["root"]
        root_goal, run.checks = entry["goal"], run.checks + entry["checks"]
        replayed += 1
    else:
        before = run.checks
        probe = await run.lean(root_prefix + _hole(checker, root_prefix, span[1]) + "\n")
        root_goal = next((s.goal for s in probe.sorries if s.goal), None)
        root_goal = root_goal or next((goal_of(m.text) for m in probe.errors if goal_of(m.text)), None)
        log({"key": "root", "goal": root_goal, "checks": run.checks - before})
    root = SearchNode(id="n0", prefix=_with_goal(root_prefix, root_goal), goal=root_goal, new_state=True)
    tree.add(root)
    tree.states.add(_state_key(root_goal, root.prefix))
    expansion = 0
    stop_reason = ""
    per_expansion = 2 * options.samples

    async def expand(index: int, node_id: str) -> dict:
        """One expansion: the continuations of a node, their checks and cut prefixes."""
        key = f"e{index}"
        if key in recorded:
            if recorded[key]["node"] == node_id:
                return recorded[key] | {"replayed": True}
            # the recorded run expanded another node here (it ran other code): replay nothing from here on
            for stale in [k for k in recorded if k.startswith("e") and int(k[1:]) >= index]:
                del recorded[stale]
            if writer is not None:
                writer.write({"fingerprint": fingerprint, "key": "reset", "from": index})
        node = tree.nodes[node_id]
        calls_before, checks_before = run.calls, run.checks
        # expansion k is sampled with seed + k, replayed or not, so a rerun asks what the first run would have
        written = await run.continue_from(node.prefix, index, options.samples, seed=options.seed + index)
        states: list[dict | None] = []
        for attempt in written:
            attempt.node = node_id
            if attempt.ok:
                states.append(None)
                continue
            found = await run.prefix_state(attempt, node.prefix)
            states.append(None if found is None else {"prefix": found[0], "goal": found[1]})
        entry = {
            "key": key,
            "node": node_id,
            "attempts": [a.model_dump(mode="json") for a in written],
            "states": states,
            "calls": run.calls - calls_before,
            "checks": run.checks - checks_before,
        }
        log(entry)
        return entry

    while not run.check.passed:
        paths: list[list[str]] = []
        while len(paths) < options.parallel and run.can_start(per_expansion):
            path = tree.select(options.exploration)
            tree.visit(path, 0.0)  # virtual loss: the next selection of this batch looks elsewhere
            paths.append(path)
            run.reserved += per_expansion
            run.reserved_calls += 1
        if not paths:
            stop_reason = _budget_reason(run)
            break
        first = expansion + 1
        entries = await asyncio.gather(*(expand(first + i, p[-1]) for i, p in enumerate(paths)))
        run.reserved = run.reserved_calls = 0
        for offset, (path, entry) in enumerate(zip(paths, entries)):
            expansion = first + offset
            tree.visit(path, 0.0, sign=-1)
            if entry.get("replayed"):
                replayed += 1
                run.calls += entry["calls"]
                run.checks += entry["checks"]
            attempts = [FormalAttempt.model_validate(a) for a in entry["attempts"]]
            base = len(run.check.attempts)
            run.check.attempts.extend(attempts)
            reward = 0.0
            for i, (attempt, found) in enumerate(zip(attempts, entry["states"])):
                if attempt.ok:
                    reward = 1.0
                    if not run.check.passed:
                        run.check.passed = True
                        stop_reason = f"proved at expansion {expansion} (node {path[-1]})"
                    continue
                if found is None:
                    continue
                prefix = _with_goal(found["prefix"], found["goal"])
                if prefix in tree.by_prefix or not extends(found["prefix"], tree.nodes[path[-1]].prefix):
                    continue
                key = _state_key(found["goal"], prefix)
                new = key not in tree.states
                tree.states.add(key)
                child = SearchNode(
                    id=f"n{len(tree.nodes)}",
                    parent=path[-1],
                    prefix=prefix,
                    goal=found["goal"],
                    new_state=new,
                    from_attempt=base + i,
                )
                tree.add(child)
                run.check.prefixes.append(prefix)
                reward = max(reward, 1.0 if new else 0.0)
            tree.visit(path, reward)
    check = _finish(run, stop_reason)
    check.search = {
        "expansions": expansion,
        "replayed": replayed,
        "exploration": options.exploration,
        "parallel": options.parallel,
        "nodes": [n.model_dump(mode="json") for n in tree.nodes.values()],
    }
    return check
