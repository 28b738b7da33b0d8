"""Critique-correct evaluation of a critic on an answer suite (CriticBench / RealCritic style).

For every problem of an answer suite (:mod:`.answer_suites`) and each of its ``k`` solutions:

1. **solve**: the generator writes a solution (the statement followed by
   :data:`~.eval_solve.ANSWER_REQUEST`; sample ``j`` with the generator's seed plus ``j``), or a
   recorded solution is read (:func:`load_recorded_solutions`: an ``eval solve`` run folder or a
   JSONL file of ``id`` + ``solution``); its final answer is checked against the reference by
   :func:`proofcritic.answers.check_answer` (math-verify): the truth;
2. **critique**: the critic judges the solution with the ``critique_answer`` prompt (the
   verifier's output protocol; the box holds 1 when the final answer is right, 0 when it is
   wrong): score 1 is the verdict "correct", a lower score "incorrect", no score (a format
   failure in score mode ``text``) no verdict. With tools the critique is a CRITIC conversation
   (:class:`~proofcritic.verifier.CriticVerifier`): the critic may run ``max_tool_calls`` code
   blocks in the sandbox and read their output;
3. **correct**: a solution the critic rejects is rewritten by the corrector (the critic's model,
   or the generator's: ``corrector``) from the solution and the critique (``correct_answer``,
   the generator's output protocol), and the corrected answer is checked the same way.

Each solution ends in one **outcome**: a right one the critic accepts is ``kept``; rejected and
still right after correction ``survived``, wrong after it ``broken``; a wrong one the critic
accepts is ``missed``; rejected and right after correction ``fixed``, still wrong ``not fixed``;
without a verdict ``no verdict`` (nothing is corrected).

The **metrics** (:func:`summarize_critic_run`, each a share of solutions with its 95% bootstrap
interval over solutions; :data:`CRITIC_METRICS`):

- ``generation_accuracy``: the solutions that are right;
- ``critique_accuracy``: verdicts that match the truth, over the solutions with a verdict;
  ``critique_on_correct`` over the right ones (accepted), ``critique_on_incorrect`` over the
  wrong ones (rejected); ``critique_balanced`` their mean (the one defined when only one is);
- ``correction_accuracy``: corrected answers that are right, over the wrong solutions the
  critic rejected (wrong -> right); ``fix_rate``: the same over every wrong solution with a
  verdict (a missed one is not fixed);
- ``break_rate``: corrected answers that are wrong, over the right solutions the critic
  rejected (right -> wrong); ``broken_share``: the same over every right solution with a verdict;
- ``accuracy_after``: the right answers after the critique-correct pass (an accepted solution,
  or one without a verdict, keeps its answer; a rejected one takes its correction's).

One record per problem is appended to ``RUN/items.jsonl`` through
:func:`proofcritic.runner.run_jsonl` as it finishes, so a killed run resumes with the problems
not yet written; with the completion cache on, the model calls of the problems that were in
progress are replayed from it. Every call has its own seed (the sample, the step), so a
rerun asks the same questions. A record: ``{"id", "kind": "critic", "answer", "max_points",
"meta", "samples": [...], "usage", "seconds"}``, each sample ``{"sample", "source", "seed",
"solution", "answer", "answer_rule", "correct", "verdict", "critic_score", "score_source",
"critique", "format_ok", "tool_calls", "corrected", "outcome", "tokens", "calls",
"cached_calls"}``; ``corrected`` is None or ``{"by", "solution", "answer", "answer_rule",
"correct", "format_ok"}``.
"""

from __future__ import annotations

import html
import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from .._roles import Role
from ..answers import check_answer
from ..errors import InputError
from ..generator import parse_generation
from ..io import check_problem
from ..llm import Model, Usage
from ..promptset import PromptSet
from ..runner import RunStats, run_jsonl
from ..types import Generation, Problem, Verification
from ..verifier import Verifier
from ._items import SolveItem
from ._run import RunFolder
from .eval_solve import answer_problem
from .metrics import bootstrap_ci, small_sample_note

__all__ = [
    "CRITIC_METRICS",
    "CRITIC_TEMPLATE_VARIABLES",
    "OUTCOMES",
    "AnswerCritic",
    "Corrector",
    "critique_mode",
    "eval_critic",
    "load_recorded_solutions",
    "summarize_critic_run",
    "write_critic_report",
]

#: the templates of eval critic and their variables: optional templates of a prompt set
CRITIC_TEMPLATE_VARIABLES: dict[str, frozenset[str]] = {
    "critique_answer": frozenset({"problem", "proof", "tools", "max_tool_calls"}),
    "correct_answer": frozenset({"problem", "proof", "critique"}),
}
#: each solution's outcome (see the module), in the order the report shows them
OUTCOMES = ("kept", "survived", "broken", "missed", "fixed", "not fixed", "no verdict")
Verdict = Literal["correct", "incorrect"]
CorrectorName = Literal["critic", "generator"]


class AnswerCritic(Verifier):
    """The critic: a :class:`Verifier` whose prompt is ``critique_answer`` (the prompt set's, else
    the built-in one), read by the verifier's parser and score modes; 1 means "the final answer is
    right". ``messages`` renders it without tools."""

    template = "critique_answer"

    def __init__(self, model: Model, *, prompts: PromptSet | None = None, **kwargs: Any):
        own = (prompts or PromptSet.load()).template_set(self.template, CRITIC_TEMPLATE_VARIABLES[self.template])
        super().__init__(model, prompts=own, **kwargs)

    def messages(self, problem: Problem, proof: str) -> list:
        return self.render(problem=problem, proof=proof, tools=[], max_tool_calls=0)


def _tool_critic(critic: AnswerCritic, tools: Sequence[Any], max_tool_calls: int) -> Any:
    """The critic as a CRITIC conversation: ``critique_answer`` with the tools listed, each code
    block run in the sandbox and its output fed back (``critic_feedback``)."""
    from ..verifier import CriticVerifier

    class _ToolAnswerCritic(CriticVerifier):
        def messages(self, problem: Problem, proof: str) -> list:
            active = self.tools if self.max_tool_calls > 0 else []
            return critic.render(problem=problem, proof=proof, tools=active, max_tool_calls=self.max_tool_calls)

    return _ToolAnswerCritic(critic, tools, max_tool_calls=max_tool_calls)


class Corrector(Role):
    """Rewrites a rejected solution from the critique (``correct_answer``; the generator's output
    protocol, parsed by :func:`~proofcritic.generator.parse_generation`)."""

    template = "correct_answer"

    def __init__(self, model: Model, *, prompts: PromptSet | None = None, **kwargs: Any):
        own = (prompts or PromptSet.load()).template_set(self.template, CRITIC_TEMPLATE_VARIABLES[self.template])
        super().__init__(model, prompts=own, **kwargs)

    async def correct(self, problem: Problem, proof: str, critique: str, *, seed: int) -> Generation:
        [generation] = await self.ask(
            self.render(problem=problem, proof=proof, critique=critique), parse_generation, seed=seed
        )
        return generation


def _seed(base: int | None, sample: int, step: str) -> int:
    return ((base or 0) + zlib.crc32(f"eval-critic/{sample}/{step}".encode())) % 2**31


def _critique_text(verification: Verification) -> str:
    return verification.raw.strip() or "(the reviewer wrote nothing)"


def verdict_of(score: float | None) -> Verdict | None:
    """The critic's verdict from its score: 1 "correct", lower "incorrect", None no verdict."""
    if score is None:
        return None
    return "correct" if score >= 1 else "incorrect"


def outcome_of(correct: bool, verdict: Verdict | None, corrected_right: bool | None) -> str:
    """A solution's outcome (see the module)."""
    if verdict is None:
        return "no verdict"
    if verdict == "correct":
        return "kept" if correct else "missed"
    if correct:
        return "survived" if corrected_right else "broken"
    return "fixed" if corrected_right else "not fixed"


def _answer_fields(gold: str, solution: str) -> dict[str, Any]:
    check = check_answer(gold, solution)
    return {"answer": check.answer, "answer_rule": check.rule, "correct": check.correct}


def load_recorded_solutions(path: str | Path) -> tuple[dict[str, list[str]], str | None]:
    """Recorded solutions by problem id, and the model that wrote them when the source says.

    ``path`` is an ``eval solve`` run folder (its ``items.jsonl``: each sample's ``proof``; the
    model from its ``config.json``), its ``items.jsonl``, or any JSONL file whose lines have an
    ``id`` (or ``problem_id``) and a ``solution`` (or ``proof`` / ``response``; an optional
    ``model``), several lines per id giving several solutions in file order. Raises
    :class:`InputError` for a file that cannot be read or holds no solution."""
    source = Path(path)
    model = None
    if source.is_dir():
        folder = RunFolder(source)
        if folder.config_path.exists():
            model = folder.config().get("model")
        source = folder.items_path
    if not source.exists():
        raise InputError(f"no recorded solutions at {source}")
    solutions: dict[str, list[str]] = {}
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the recorded solutions {source}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{source} line {number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or "error" in record:
            continue
        item_id = record.get("id", record.get("problem_id"))
        if item_id is None:
            raise InputError(f"{source} line {number}: no id (or problem_id)")
        if isinstance(record.get("samples"), list):  # an eval solve record
            texts = [s.get("proof") for s in record["samples"] if isinstance(s, dict)]
        else:
            texts = [next((record[k] for k in ("solution", "proof", "response") if k in record), None)]
            model = model or record.get("model")
        kept = [t for t in texts if isinstance(t, str) and t.strip()]
        solutions.setdefault(str(item_id), []).extend(kept)
    if not any(solutions.values()):
        raise InputError(f"{source} holds no solution (records need an id and a solution, proof or samples)")
    return solutions, model


def critique_mode(generator: str | None, critic: str | None) -> str:
    """``self-critique`` when the critic's model wrote the solutions, else ``cross-model critique``
    (or ``critique of recorded solutions`` when their model is not known)."""
    if generator is None:
        return "critique of recorded solutions (their model is not recorded)"
    return "self-critique" if generator == critic else "cross-model critique"


def _usage_add(total: Usage, usage: Usage | None) -> None:
    if usage is not None:
        total.add(usage)


async def _one_solution(
    item: SolveItem,
    problem: Problem,
    sample: int,
    recorded: str | None,
    generator: Role | None,
    critic: Any,
    corrector: Corrector,
    corrector_name: CorrectorName,
) -> dict[str, Any]:
    """Solve (or read), critique and, when rejected, correct one solution."""
    assert item.answer is not None
    usage = Usage()
    seed = None
    if recorded is None:
        assert generator is not None
        seed = (generator.config.seed or 0) + sample
        [generation] = await generator.generate(problem, n=1, seed=seed)  # type: ignore[attr-defined]
        _usage_add(usage, generation.usage)
        solution = generation.proof
    else:
        solution = recorded
    fields = _answer_fields(item.answer, solution)
    [verification] = await critic.verify(problem, solution, n=1, seed=_seed(critic.config.seed, sample, "critique"))
    _usage_add(usage, verification.usage)
    verdict = verdict_of(verification.score)
    corrected: dict[str, Any] | None = None
    if verdict == "incorrect":
        generation = await corrector.correct(
            problem,
            solution,
            _critique_text(verification),
            seed=_seed(corrector.config.seed, sample, "correct"),
        )
        _usage_add(usage, generation.usage)
        corrected = {"by": corrector_name, "solution": generation.proof, "format_ok": generation.format_ok}
        corrected |= _answer_fields(item.answer, generation.proof)
    return {
        "sample": sample,
        "source": "recorded" if recorded is not None else "generated",
        "seed": seed,
        "solution": solution,
        **fields,
        "verdict": verdict,
        "critic_score": verification.score,
        "score_source": verification.score_source,
        "critique": verification.raw,
        "format_ok": verification.format_ok,
        "tool_calls": [c.model_dump(mode="json") for c in (verification.tool_calls or [])],
        "corrected": corrected,
        "outcome": outcome_of(fields["correct"], verdict, corrected["correct"] if corrected else None),
        "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
        "calls": usage.calls,
        "cached_calls": usage.cached_calls,
    }


async def eval_critic(
    items: Sequence[SolveItem],
    run: RunFolder,
    *,
    critic: AnswerCritic,
    corrector: Corrector,
    generator: Role | None = None,
    recorded: dict[str, list[str]] | None = None,
    corrector_name: CorrectorName = "critic",
    k: int = 1,
    tools: Sequence[Any] = (),
    max_tool_calls: int = 3,
    concurrency: int = 4,
    on_progress: Callable[[RunStats], None] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Critique (and correct) ``k`` solutions of each answer item, write and return the summary.

    The solutions come from ``generator`` (a :class:`~proofcritic.generator.Generator`) or from
    ``recorded`` (:func:`load_recorded_solutions`: the first ``k`` of each id; a problem with none
    recorded is an error record, the others go on). ``tools`` (built tools, e.g. a
    :class:`~proofcritic.tools.PythonTool`) make each critique a CRITIC conversation of up to
    ``max_tool_calls`` runs; the caller closes them. ``info`` (generator, critic, mode, ...) is
    kept in the summary. Problems already in ``run`` are skipped.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if (generator is None) == (recorded is None):
        raise ValueError("give a generator or recorded solutions, not both")
    if any(item.answer is None for item in items):
        raise InputError("eval critic needs an answer suite (each problem with a reference answer)")
    judge: Any = _tool_critic(critic, tools, max_tool_calls) if tools else critic
    by_id = {item.problem.id: item for item in items}
    work = [(item.problem.id, index, {"id": item.problem.id}) for index, item in enumerate(items, start=1)]

    async def process(item_id: str, _record: dict) -> dict:
        item = by_id[item_id]
        check_problem(item.problem)
        started = time.perf_counter()
        problem = answer_problem(item)
        if recorded is not None:
            texts = recorded.get(item_id) or []
            if not texts:
                raise InputError(f"no recorded solution for problem {item_id}")
            sources: list[str | None] = list(texts[:k])
        else:
            sources = [None] * k
        samples = [
            await _one_solution(item, problem, j, text, generator, judge, corrector, corrector_name)
            for j, text in enumerate(sources)
        ]
        return {
            "kind": "critic",
            "answer": item.answer,
            "max_points": item.problem.max_points,
            "meta": item.meta,
            "samples": samples,
            "usage": {
                "calls": sum(s["calls"] for s in samples),
                "cached_calls": sum(s["cached_calls"] for s in samples),
                "prompt_tokens": sum(s["tokens"]["prompt"] for s in samples),
                "completion_tokens": sum(s["tokens"]["completion"] for s in samples),
            },
            "seconds": round(time.perf_counter() - started, 3),
        }

    run.path.mkdir(parents=True, exist_ok=True)
    await run_jsonl(work, run.items_path, process, concurrency=concurrency, on_progress=on_progress)
    wanted = set(by_id)
    records = [r for r in run.records() if r.get("id") in wanted]
    summary = summarize_critic_run(records, info=info)
    run.write_summary(summary)
    return summary


def _share(values: list[float]) -> dict[str, Any]:
    """``{"value", "low", "high", "n"}``: the mean of 0/1 values with its 95% bootstrap interval."""
    if not values:
        return {"value": None, "low": None, "high": None, "n": 0}
    ci = bootstrap_ci(lambda v: sum(v) / len(v), values)
    return {"value": ci["estimate"], "low": ci["low"], "high": ci["high"], "n": len(values)}


def _after(s: dict[str, Any]) -> bool:
    """Whether a solution's answer is right after the critique-correct pass."""
    if s.get("verdict") == "incorrect" and s.get("corrected") is not None:
        return bool(s["corrected"].get("correct"))
    return bool(s.get("correct"))


#: each metric: (the solutions it is over, the value of one of them); see the module
CRITIC_METRICS: dict[str, tuple[Callable[[dict], bool], Callable[[dict], bool]]] = {
    "generation_accuracy": (lambda s: True, lambda s: s["correct"]),
    "critique_accuracy": (
        lambda s: s["verdict"] is not None,
        lambda s: (s["verdict"] == "correct") == s["correct"],
    ),
    "critique_on_correct": (lambda s: s["verdict"] is not None and s["correct"], lambda s: s["verdict"] == "correct"),
    "critique_on_incorrect": (
        lambda s: s["verdict"] is not None and not s["correct"],
        lambda s: s["verdict"] == "incorrect",
    ),
    "correction_accuracy": (
        lambda s: not s["correct"] and s["verdict"] == "incorrect",
        lambda s: s["outcome"] == "fixed",
    ),
    "fix_rate": (lambda s: s["verdict"] is not None and not s["correct"], lambda s: s["outcome"] == "fixed"),
    "break_rate": (lambda s: s["correct"] and s["verdict"] == "incorrect", lambda s: s["outcome"] == "broken"),
    "broken_share": (lambda s: s["verdict"] is not None and s["correct"], lambda s: s["outcome"] == "broken"),
    "accuracy_after": (lambda s: True, _after),
}


def summarize_critic_run(records: Sequence[dict], *, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics of a critic run from its records (error records are counted, not scored)."""
    scored = [r for r in records if r.get("kind") == "critic" and r.get("samples")]
    errors = [r for r in records if "error" in r]
    samples = [s for r in scored for s in r["samples"]]
    metrics = {
        name: _share([float(value(s)) for s in samples if over(s)]) for name, (over, value) in CRITIC_METRICS.items()
    }
    on_right, on_wrong = metrics["critique_on_correct"]["value"], metrics["critique_on_incorrect"]["value"]
    defined = [v for v in (on_right, on_wrong) if v is not None]
    balanced = sum(defined) / len(defined) if defined else None
    metrics = {
        **{k: v for k, v in metrics.items() if k in ("generation_accuracy", "critique_accuracy")},
        "critique_balanced": {"value": balanced, "low": None, "high": None, "n": metrics["critique_accuracy"]["n"]},
        **{k: v for k, v in metrics.items() if k not in ("generation_accuracy", "critique_accuracy")},
    }
    outcomes = Counter(s["outcome"] for s in samples)
    prompt = sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in records)
    completion = sum((r.get("usage") or {}).get("completion_tokens", 0) for r in records)
    seconds = sum(float(r.get("seconds") or 0.0) for r in records)
    n = max(len(records), 1)
    right = sum(bool(s["correct"]) for s in samples)
    summary: dict[str, Any] = {
        "kind": "critic",
        **(info or {}),
        "items": len(records),
        "scored": len(scored),
        "errors": len(errors),
        "solutions": len(samples),
        "k": max((len(r["samples"]) for r in scored), default=0),
        "metrics": metrics,
        "counts": {
            "right": right,
            "wrong": len(samples) - right,
            "stated_answer": sum(s.get("answer") is not None for s in samples),
            "verdicts": sum(s["verdict"] is not None for s in samples),
            "accepted": sum(s["verdict"] == "correct" for s in samples),
            "rejected": sum(s["verdict"] == "incorrect" for s in samples),
            "no_verdict": outcomes.get("no verdict", 0),
            "read_out": sum(s.get("score_source") in ("likelihood", "guided") for s in samples),
            "corrected": sum(s.get("corrected") is not None for s in samples),
            "right_after": sum(_after(s) for s in samples),
            "tool_calls": sum(len(s.get("tool_calls") or []) for s in samples),
        },
        "outcomes": {name: outcomes.get(name, 0) for name in OUTCOMES},
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "total": prompt + completion,
            "per_item": (prompt + completion) / n,
        },
        "seconds": {"total": round(seconds, 3), "per_item": round(seconds / n, 3)},
    }
    notes = []
    if (small := small_sample_note(len(samples), "solutions")) is not None:
        notes.append(small)
    if summary["counts"]["no_verdict"]:
        notes.append(
            f"{summary['counts']['no_verdict']} solution(s) got no verdict (the critique has no score): "
            "left out of the critique and correction metrics, their answers kept"
        )
    if len(defined) == 1 and samples:
        side = "right" if on_right is not None else "wrong"
        notes.append(f"critique balanced is the recall on {side} solutions alone: no other solution had a verdict")
    if summary["counts"]["read_out"]:
        notes.append(
            f"{summary['counts']['read_out']} verdict(s) came from a score read-out (likelihood or guided "
            "choice), not a written score"
        )
    if notes:
        summary["notes"] = notes
    return summary


def critic_problem_rows(records: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per problem with solutions, what ``compare`` pairs: for each metric of
    :data:`CRITIC_METRICS` the (count, of how many) of its solutions, and its ``tokens``."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") != "critic" or not r.get("samples"):
            continue
        row: dict[str, Any] = {}
        for name, (over, value) in CRITIC_METRICS.items():
            chosen = [s for s in r["samples"] if over(s)]
            row[name] = (sum(bool(value(s)) for s in chosen), len(chosen))
        usage = r.get("usage") or {}
        row["tokens"] = float(usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        rows[r["id"]] = row
    return rows


def paired_critic_differences(
    rows_a: Sequence[dict], rows_b: Sequence[dict], *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each metric of run B against run A on the same problems (row i of both is one problem):
    ``{"a", "b", "difference", "low", "high"}``, a metric being the share over the solutions it
    is over (pooled over the problems), the interval a paired bootstrap over problems."""

    def share(pairs: Sequence[tuple[int, int]]) -> float | None:
        count, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        return count / total if total else None

    out: dict[str, dict[str, Any]] = {}
    for name in CRITIC_METRICS:
        xs, ys = [q[name] for q in rows_a], [q[name] for q in rows_b]

        def difference(x: Sequence[tuple[int, int]], y: Sequence[tuple[int, int]]) -> float | None:
            a, b = share(x), share(y)
            return None if a is None or b is None else b - a

        ci = bootstrap_ci(difference, xs, ys, n_resamples=n_resamples, seed=seed)
        out[name] = {"a": share(xs), "b": share(ys), "difference": ci["estimate"], "low": ci["low"], "high": ci["high"]}
    return out


#: headline rows: (label, metric)
_LABELS = (
    ("generation accuracy", "generation_accuracy"),
    ("critique accuracy", "critique_accuracy"),
    ("critique balanced", "critique_balanced"),
    ("critique on right", "critique_on_correct"),
    ("critique on wrong", "critique_on_incorrect"),
    ("correction accuracy", "correction_accuracy"),
    ("fix rate", "fix_rate"),
    ("break rate", "break_rate"),
    ("broken share", "broken_share"),
    ("accuracy after", "accuracy_after"),
)


def _value(m: dict[str, Any]) -> str:
    if m.get("value") is None:
        return "—"
    text = f"{m['value']:.3f}"
    if m.get("low") is not None and m.get("high") is not None:
        text += f" [{m['low']:.3f}, {m['high']:.3f}]"
    return f"{text} (n={m['n']})"


def headline_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows eval critic prints and its report opens with."""
    c = summary["counts"]
    rows = [
        ("critique", str(summary.get("mode") or "—")),
        ("generator", str(summary.get("generator") or "—")),
        ("critic", str(summary.get("critic") or "—")),
        ("corrector", str(summary.get("corrector") or "—")),
        ("tools", str(summary.get("tools") or "none")),
        (
            "solutions",
            f"{summary['solutions']} of {summary['scored']} problems ({summary['errors']} error(s)): "
            f"{c['right']} right, {c['wrong']} wrong; {c['rejected']} rejected, {c['accepted']} accepted, "
            f"{c['no_verdict']} without a verdict; {c['corrected']} corrected; {c['tool_calls']} tool run(s)",
        ),
    ]
    rows += [(label, _value(summary["metrics"][name])) for label, name in _LABELS]
    rows.append(("outcomes", ", ".join(f"{name} {count}" for name, count in summary["outcomes"].items())))
    return rows


def _figures(summary: dict[str, Any], records: list[dict]) -> list[tuple[str, str]]:
    from ._plots import bars, heatmap

    m = summary["metrics"]
    names = [label for label, name in _LABELS if m[name]["value"] is not None]
    values = [m[name]["value"] for label, name in _LABELS if m[name]["value"] is not None]
    samples = [s for r in records if r.get("kind") == "critic" for s in r.get("samples") or []]
    matrix = [
        [
            sum(1 for s in samples if s["correct"] == truth and s["verdict"] == verdict)
            for verdict in ("correct", "incorrect")
        ]
        for truth in (True, False)
    ]
    figures = []
    if names:
        figures.append(("metrics", bars(names, {"share": values}, "Critique and correction", "share of solutions")))
    if samples:
        figures.append(
            (
                "verdicts",
                heatmap(
                    matrix, ["right", "wrong"], "Critic's verdicts", ylabel="answer (math-verify)", xlabel="verdict"
                ),
            )
        )
        counts = summary["outcomes"]
        figures.append(("outcomes", bars(list(counts), {"solutions": list(counts.values())}, "Outcomes", "solutions")))
    return figures


def _short(answer: str | None, limit: int = 60) -> str:
    """An answer as a table cell: None as "none", a long one cut with "..." (items.jsonl keeps it whole)."""
    if answer is None:
        return "none"
    text = " ".join(answer.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _item_rows(records: list[dict]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in records:
        if "error" in r:
            rows.append((str(r.get("id")), "—", "error", str(r.get("error", ""))[:120], "", "", ""))
            continue
        for s in r.get("samples") or []:
            corrected = s.get("corrected") or {}
            rows.append(
                (
                    str(r.get("id")),
                    str(s["sample"]),
                    str(r.get("answer")),
                    f"{_short(s.get('answer'))} ({'right' if s['correct'] else 'wrong'})",
                    str(s.get("verdict") or "no verdict"),
                    f"{_short(corrected.get('answer'))} ({'right' if corrected.get('correct') else 'wrong'})"
                    if corrected
                    else "",
                    s["outcome"],
                )
            )
    return rows


def write_critic_report(run: RunFolder, records: list[dict[str, Any]], config: dict[str, Any]) -> tuple[Path, Path]:
    """Rebuild ``summary.json`` of a critic run (keeping the run's generator, critic and mode) and
    write ``report.md`` and ``report.html``: the headline rows, notes, figures and one row per
    solution (reference, answer, verdict, corrected answer, outcome)."""
    old = run.summary() if run.summary_path.exists() else {}
    info = {k: old.get(k, config.get(k)) for k in ("mode", "generator", "critic", "corrector", "tools")}
    summary = summarize_critic_run(records, info=info)
    run.write_summary(summary)
    title = f"critic run: {config.get('suite') or run.path.name}"
    rows = headline_rows(summary)
    head = ("id", "sample", "reference", "answer", "verdict", "corrected answer", "outcome")
    items = _item_rows(records)
    md = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    md += [f"| {name} | {value.replace('|', '/')} |" for name, value in rows]
    md += ["", *[f"- note: {note}" for note in summary.get("notes", [])], "", "## Solutions", ""]
    md += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    md += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in items]
    md += ["", f"Figures: see `{run.report_html.name}`."]
    run.report_md.write_text("\n".join(md) + "\n")

    from .report import _html_table as table  # one HTML table for every report

    notes = "".join(f"<p>note: {html.escape(note)}</p>" for note in summary.get("notes", []))
    figures = "".join(
        f"<figure><img alt='{html.escape(name)}' src='{uri}'></figure>" for name, uri in _figures(summary, records)
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse;margin-bottom:1em}img{max-width:48%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Metrics</h2>{table(('metric', 'value'), rows)}{notes}"
        f"<h2>Figures</h2>{figures}<h2>Solutions</h2>{table(head, items)}</body></html>"
    )
    run.report_html.write_text(page)
    return run.report_html, run.report_md
