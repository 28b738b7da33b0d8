"""Output-space shaping and teacher corrections (issue #19: ToRA, SuperCorrect): ``proofcritic shape``.

For every problem with a reference answer (:class:`~proofcritic.benchmarks.SolveItem` with
``answer``), :func:`shape_item`:

1. samples ``k`` trajectories from the student with any solving strategy (``tora`` included):
   trajectory ``j`` runs with every role's seed shifted by ``j``
   (:func:`proofcritic.benchmarks.eval_solve.seeded_roles`), on the statement followed by the
   answer request of the answer suites (:func:`~proofcritic.benchmarks.eval_solve.answer_problem`);
   each solution's final answer is checked by math-verify (:func:`proofcritic.answers.check_answer`);
2. keeps the correct ones;
3. has the teacher (:class:`~proofcritic.pipelines.teacher.TeacherCorrector`, any model) correct
   each wrong one that has solution text: it names the first wrong step (number and quote) and
   writes the solution from there; the corrected solution (the student's text before that step,
   verbatim, then the teacher's continuation) is checked by answer. Up to ``teacher_tries``
   corrections are asked (each with its own seed), stopping at the first verified one. Every
   attempt is kept in the record: the located step and quote, the teacher's reasoning, the
   corrected solution, its answer and whether it was verified (or why it failed the format);
4. optionally (``templates``) asks the teacher for hierarchical thought templates (a high-level
   and a detailed plan, :class:`~proofcritic.pipelines.teacher.ThoughtTemplater`) for each kept
   solution.

:func:`shape_jsonl` runs it over a file on the shared runner (one record per problem, appended as
each finishes; a rerun skips finished problems and the completion cache replays the calls of the
problems in progress), and :func:`write_training_files` then writes, from every record:

- the **SFT file**: ``{id, prompt, completion, source, problem_id}`` rows in TRL's conversational
  prompt-completion form (``prompt``: the student's first prompt; ``completion``: one assistant
  message holding the solution, the text the answer check read): the student's correct solutions
  (``source: student``) and the verified corrections (``source: teacher``); with templates also
  ``high_level_plan`` and ``detailed_plan``. Equal (prompt, completion) rows are written once.
- the **DPO file**: ``{id, prompt, chosen, rejected, problem_id, first_wrong_step,
  shared_prefix_chars}`` rows, one per verified correction: chosen the corrected solution,
  rejected the student's erroneous one (cross-model DPO). Both start with the same student
  text up to the first wrong step, so the pair differs only from there on.

``train sft`` and ``train dpo`` read the files as they are. Each file is written to a temporary
name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._constants import DEFAULT_STEP_MODE, StepMode
from ..answers import check_answer
from ..benchmarks import SolveItem
from ..benchmarks.eval_solve import answer_problem, seeded_roles
from ..budget import Budget, BudgetExceeded, CallPlan
from ..errors import ContextLengthError
from ..io import iter_jsonl
from ..llm import Usage
from ..parsing import EVALUATION_MARKER_RE, SCORE_MARKER_RE, strip_thinking
from ..pipelines import Roles
from ..pipelines.teacher import TeacherCorrector, ThoughtTemplater
from ..runner import RunStats, run_jsonl
from ..types import Problem

__all__ = [
    "ShapeConfig",
    "shape_item",
    "shape_jsonl",
    "shape_plan",
    "shape_summary",
    "student_prompt",
    "training_rows",
    "with_templates",
    "write_training_files",
]


class ShapeConfig(BaseModel):
    """The settings of a shaping run (see the module)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=1, le=1024, description="Trajectories sampled per problem.")
    teacher_tries: int = Field(1, ge=0, le=16, description="Corrections asked per wrong trajectory (0: none).")
    templates: bool = Field(False, description="Ask the teacher for thought templates of each kept solution.")
    step_mode: StepMode = Field(DEFAULT_STEP_MODE, description="How a solution is cut into the steps the teacher sees.")
    show_answer: bool = Field(True, description="Show the teacher the reference answer.")


def shape_plan(strategy: Any, config: ShapeConfig) -> CallPlan:
    """The model calls of one problem at most: ``k`` strategy runs, a correction (or
    ``teacher_tries``) per trajectory, and a template per kept solution."""
    plan = strategy.plan().times(config.k)
    if config.teacher_tries:
        plan = plan + CallPlan().add("correction", config.k * config.teacher_tries)
    if config.templates:
        plan = plan + CallPlan().add("template", config.k)
    return plan


def student_prompt(strategy: Any, roles: Roles, problem: Problem) -> list[dict[str, str]]:
    """The first prompt the strategy sends the student for ``problem`` (``tora``: its
    ``tora_generate`` prompt with the strategy's tools; every other strategy: ``generate``), as
    chat messages."""
    prompts = roles.generator.prompts
    if getattr(strategy, "name", "") == "tora":
        from ..pipelines.tora import TORA_VARIABLES

        config = strategy.config
        tools = strategy.tools if config.max_tool_calls > 0 else []
        messages = prompts.template_set("tora_generate", TORA_VARIABLES["tora_generate"]).render(
            "tora_generate", problem=problem, tools=tools, max_tool_calls=config.max_tool_calls
        )
    else:
        messages = prompts.render("generate", problem=problem)
    return [{"role": m.role, "content": m.content} for m in messages]


def _seed(base: int | None, *parts: Any) -> int:
    key = "/".join(str(p) for p in parts)
    return ((base or 0) + zlib.crc32(key.encode())) % 2**31


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "calls": usage.calls,
        "cached_calls": usage.cached_calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "failed_calls": usage.failed_calls,
    }


async def _templates(
    templater: ThoughtTemplater, problem: Problem, solution: str, seed: int
) -> tuple[dict[str, Any], Usage]:
    output = await templater.write(problem, solution, seed=seed)
    out: dict[str, Any] = {"format_ok": output.format_ok, "format_error": output.format_error, "raw": output.raw}
    if output.templates is not None:
        out |= {"high_level": output.templates.high_level, "detailed": output.templates.detailed}
    return out, output.usage


async def shape_item(
    item: SolveItem,
    *,
    roles: Roles,
    strategy: Any,
    corrector: TeacherCorrector | None,
    templater: ThoughtTemplater | None = None,
    config: ShapeConfig | None = None,
    on_state: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One problem's record (see the module): ``problem``, ``answer``, ``prompt``, ``strategy``,
    ``trajectories`` (each with its check and, when wrong, its ``correction``), ``counts``,
    ``stop_reason`` and ``usage`` (student and teacher together; ``teacher_usage`` apart)."""
    config = config or ShapeConfig()
    if item.answer is None:
        raise ValueError(f"problem {item.problem.id!r} has no reference answer")
    gold = item.answer
    asked = answer_problem(item)
    student, teacher = Usage(), Usage()
    counts = dict.fromkeys(
        ("samples", "correct", "wrong", "no_solution", "corrected", "correction_wrong", "teacher_format_failures"), 0
    )
    counts |= {"templates": 0, "template_failures": 0}
    trajectories: list[dict[str, Any]] = []

    def report(j: int, phase: str) -> None:
        if on_state is not None:
            on_state(
                {
                    "sample": (j + 1, config.k),
                    "step": phase,
                    "correct": counts["correct"],
                    "corrected": counts["corrected"],
                }
            )

    spent: str | None = None  # why a spent budget stopped the problem
    for j in range(config.k):
        if spent is not None:
            break
        report(j, "student")
        own = seeded_roles(roles, j)
        result = await strategy.solve(asked, own)
        student.add(result.usage)
        generation = result.generation
        solution, source = solution_text(result)
        check = check_answer(gold, solution or "")
        counts["samples"] += 1
        trajectory: dict[str, Any] = {
            "sample": j,
            "seed": own.generator.config.seed,
            "solution": solution,
            "solution_source": source,
            "format_ok": generation.format_ok if generation is not None else False,
            "answer": check.answer,
            "answer_rule": check.rule,
            "correct": check.correct,
            "stop_reason": result.stop_reason,
            "budget_limited": result.budget_limited,
            "tool_calls": result.rounds if getattr(strategy, "name", "") == "tora" else None,
        }
        if result.budget_limited:
            spent = result.stop_reason
        kept: str | None = None
        if check.correct:
            counts["correct"] += 1
            kept = solution
        elif not (solution or "").strip():
            counts["no_solution"] += 1
            trajectory["correction"] = {"verified": False, "attempts": [], "reason": "no solution text to correct"}
        else:
            assert solution is not None  # not empty (the branch above)
            counts["wrong"] += 1
            if corrector is not None and config.teacher_tries:
                report(j, "teacher")
                trajectory["correction"] = correction = await _correct(
                    corrector, item.problem, solution, gold, j, config, teacher, counts
                )
                if correction["verified"]:
                    kept = correction["attempts"][correction["chosen"]]["corrected_solution"]
                spent = correction.get("budget") or spent
            else:
                trajectory["correction"] = {"verified": False, "attempts": [], "reason": "corrections are off"}
        if kept is not None and templater is not None:
            report(j, "templates")
            try:
                templates, usage = await _templates(
                    templater, item.problem, kept, _seed(templater.config.seed, "tmpl", j)
                )
            except BudgetExceeded as error:
                spent = f"budget: {error}"
                trajectory["templates"] = {"format_ok": False, "format_error": f"not asked: {spent}"}
            else:
                teacher.add(usage)
                trajectory["templates"] = templates
                counts["templates" if templates["format_ok"] else "template_failures"] += 1
        trajectories.append(trajectory)
    usage = Usage(**student.model_dump())
    usage.add(teacher)
    stop = (
        f"{counts['samples']} trajectories: {counts['correct']} correct, {counts['wrong']} wrong"
        + (
            f" ({counts['corrected']} corrected by the teacher, {counts['correction_wrong']} still wrong)"
            if counts["wrong"]
            else ""
        )
        + (f", {counts['no_solution']} without a solution" if counts["no_solution"] else "")
        + (f"; stopped after {len(trajectories)} of {config.k} by the budget ({spent})" if spent else "")
    )
    return {
        "problem": item.problem.model_dump(mode="json", exclude_none=True),
        "answer": gold,
        "strategy": getattr(strategy, "name", type(strategy).__name__),
        "prompt": student_prompt(strategy, roles, asked),
        "trajectories": trajectories,
        "counts": counts,
        "stop_reason": stop,
        "budget_limited": spent is not None,
        "usage": _usage_dict(usage),
        "teacher_usage": _usage_dict(teacher),
    }


def solution_text(result: Any) -> tuple[str | None, str | None]:
    """The solution of a strategy's result and where it came from: the chosen ``proof``; else,
    from the chosen generation or (none chosen) the transcript's last generation, the
    ``## Solution`` text of a format failure (``format_failure``; without that header, the
    parser's whole output), or its raw text (``raw``); each cut before its first evaluation or
    score marker, since a self-evaluation's boxed score is no answer. ``(None, None)`` when
    nothing is left."""
    if result.proof is not None and result.proof.strip():
        return result.proof, "proof"
    if result.generation is not None:
        proof, raw = result.generation.proof, result.generation.raw
    else:
        steps = [s for s in result.transcript if s.get("step") in ("generate", "refine")]
        if not steps:
            return None, None
        proof, raw = steps[-1].get("proof") or "", steps[-1].get("raw") or ""
    proof = _before_evaluation(proof)
    if proof:
        return proof, "format_failure"
    raw = _before_evaluation(strip_thinking(raw))
    return (raw, "raw") if raw else (None, None)


def _before_evaluation(text: str) -> str:
    """``text`` up to its first evaluation or score marker (a self-evaluation's boxed score is
    no answer), stripped."""
    cuts = [m.start() for m in (EVALUATION_MARKER_RE.search(text), SCORE_MARKER_RE.search(text)) if m is not None]
    return text[: min(cuts)].strip() if cuts else text.strip()


async def _correct(
    corrector: TeacherCorrector,
    problem: Problem,
    solution: str,
    gold: str,
    sample: int,
    config: ShapeConfig,
    usage: Usage,
    counts: dict[str, int],
) -> dict[str, Any]:
    """Up to ``teacher_tries`` corrections of one wrong solution, until one is verified."""
    attempts: list[dict[str, Any]] = []
    chosen: int | None = None
    spent: str | None = None
    for attempt in range(config.teacher_tries):
        try:
            [output] = await corrector.correct(
                problem, solution, gold, seed=_seed(corrector.config.seed, "correct", sample, attempt)
            )
        except BudgetExceeded as error:
            spent = f"budget: {error}"
            break
        except ContextLengthError as error:  # this solution does not fit the teacher: the others may
            counts["teacher_format_failures"] += 1
            attempts.append({"format_ok": False, "format_error": f"the prompt does not fit the teacher: {error}"})
            break  # the same prompt never fits
        usage.add(output.usage)
        record: dict[str, Any] = {
            "format_ok": output.format_ok,
            "format_error": output.format_error,
            "raw": output.raw,
        }
        if output.correction is None:
            counts["teacher_format_failures"] += 1
            attempts.append(record)
            continue
        check = check_answer(gold, output.corrected)
        c = output.correction
        record |= {
            "first_wrong_step": c.step,
            "quote": c.quote,
            "quote_found": c.quote_found,
            "wrong_step_text": corrector.steps(solution)[c.step - 1].text,
            "reasoning": c.reasoning,
            "continuation": c.continuation,
            "prefix_chars": len(output.prefix),
            "corrected_solution": output.corrected,
            "answer": check.answer,
            "verified": check.correct,
        }
        attempts.append(record)
        if check.correct:
            chosen = len(attempts) - 1
            break
    if chosen is not None:
        counts["corrected"] += 1
        reason = f"verified on attempt {chosen + 1} of {config.teacher_tries}"
    elif spent is not None and not attempts:
        reason = f"not asked: {spent}"  # not counted as a failed correction
    else:
        counts["correction_wrong"] += 1
        parsed = [a for a in attempts if a.get("corrected_solution") is not None]
        reason = (
            f"no verified correction in {len(attempts)} attempt(s): "
            f"{len(parsed)} with a wrong answer, {len(attempts) - len(parsed)} format failure(s)"
        )
    if spent is not None and chosen is None and attempts:
        reason += f"; {spent}"
    out: dict[str, Any] = {"verified": chosen is not None, "chosen": chosen, "attempts": attempts, "reason": reason}
    return out | ({"budget": spent} if spent is not None else {})


async def shape_jsonl(
    items: Sequence[SolveItem],
    output_path: str | Path,
    *,
    roles: Roles,
    strategy: Any,
    corrector: TeacherCorrector | None,
    templater: ThoughtTemplater | None = None,
    config: ShapeConfig | None = None,
    concurrency: int = 4,
    max_calls: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """:func:`shape_item` for every item not yet in ``output_path`` (one record per problem,
    appended as it finishes; see :func:`proofcritic.runner.run_jsonl` for resuming).
    ``max_calls``: the model calls of one problem, student's and teacher's together; a problem
    that spends them ends there (its record says so, ``budget_limited``).
    ``stats.extra["running"]`` holds each problem in progress and its state."""
    by_id = {item.problem.id: item for item in items}
    work = [(pid, index, {"id": pid}) for index, pid in enumerate(by_id, start=1)]
    stats = RunStats(total=len(work))
    running: dict[str, tuple[int, dict[str, Any]]] = {}
    own_states: dict[str, dict[str, Any]] = {}
    strategy_states: dict[str, dict[str, Any]] = {}

    def show(problem_id: str) -> None:
        if problem_id in own_states:
            running[problem_id] = (0, {**own_states[problem_id], **strategy_states.get(problem_id, {})})
            if on_progress:
                on_progress(stats)

    def progress(runner_stats: RunStats) -> None:
        nonlocal stats
        stats = runner_stats
        stats.extra["running"] = running
        if on_progress:
            on_progress(stats)

    def on_round(problem_id: str, _round: int, state: dict[str, Any]) -> None:  # the strategy's own hook
        strategy_states[problem_id] = state
        show(problem_id)

    if hasattr(strategy, "on_round") and strategy.on_round is None:
        strategy.on_round = on_round

    async def process(item_id: str, _record: dict) -> dict:
        def on_state(state: dict[str, Any]) -> None:
            own_states[item_id] = state
            strategy_states.pop(item_id, None)
            show(item_id)

        try:
            return await shape_item(
                by_id[item_id],
                roles=roles,
                strategy=strategy,
                corrector=corrector,
                templater=templater,
                config=config,
                on_state=on_state,
            )
        finally:
            for states in (running, own_states, strategy_states):
                states.pop(item_id, None)

    def item_budget(_parent: Budget | None) -> Budget | None:
        return Budget(max_calls, None, name="problem")

    return await run_jsonl(
        work,
        output_path,
        process,
        concurrency=concurrency,
        item_budget=item_budget if max_calls is not None else None,
        on_progress=progress,
    )


# --------------------------------------------------------------------------- the training files


def _records(path: str | Path) -> list[dict[str, Any]]:
    """The latest record of each problem in a shaping output (error records left out)."""
    latest: dict[str, dict[str, Any]] = {}
    for _, record in iter_jsonl(path):
        if isinstance(record, dict) and "id" in record:
            latest[str(record["id"])] = record
    return [r for r in latest.values() if "error" not in r and r.get("trajectories") is not None]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def with_templates(solution: str, high_level: str, detailed: str) -> str:
    """A completion that thinks before it solves: the high-level plan, the detailed plan, then
    the solution, each under its heading (``--templates-in-completion``)."""
    return f"### High-level plan\n\n{high_level}\n\n### Detailed plan\n\n{detailed}\n\n### Solution\n\n{solution}"


def training_rows(
    records: Sequence[dict[str, Any]], *, templates_in_completion: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(sft_rows, dpo_rows)`` from shaping records (see the module). ``templates_in_completion``:
    an SFT row with thought templates has them written before its solution in the completion
    (:func:`with_templates`) as well as in their columns."""
    sft: list[dict[str, Any]] = []
    dpo: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in records:
        prompt = record["prompt"]
        pid = str(record["id"])
        for t in record["trajectories"]:
            correction = t.get("correction") or {}
            chosen = correction["attempts"][correction["chosen"]] if correction.get("verified") else None
            if t.get("correct") and t.get("solution"):
                text, source = t["solution"], "student"
            elif chosen is not None:
                text, source = chosen["corrected_solution"], "teacher"
            else:
                continue
            key = hashlib.sha256(json.dumps([prompt, text], ensure_ascii=False).encode()).hexdigest()
            if key not in seen:
                seen.add(key)
                templates = t.get("templates") or {}
                planned = bool(templates.get("format_ok"))
                shown = text
                if planned and templates_in_completion:
                    shown = with_templates(text, templates["high_level"], templates["detailed"])
                row: dict[str, Any] = {
                    "id": f"{pid}/{t['sample']}",
                    "prompt": prompt,
                    "completion": _assistant(shown),
                    "source": source,
                    "problem_id": pid,
                }
                if planned:
                    row |= {"high_level_plan": templates["high_level"], "detailed_plan": templates["detailed"]}
                sft.append(row)
            if chosen is not None:
                dpo.append(
                    {
                        "id": f"{pid}/{t['sample']}",
                        "prompt": prompt,
                        "chosen": _assistant(chosen["corrected_solution"]),
                        "rejected": _assistant(t["solution"]),
                        "problem_id": pid,
                        "first_wrong_step": chosen["first_wrong_step"],
                        "shared_prefix_chars": chosen["prefix_chars"],
                    }
                )
    return sft, dpo


def _write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def write_training_files(
    records_path: str | Path, sft_path: str | Path, dpo_path: str | Path, *, templates_in_completion: bool = False
) -> dict[str, int]:
    """Write the SFT and DPO files of a shaping output (each replaced whole; see
    :func:`training_rows`); returns the counts ``sft``, ``sft_student``, ``sft_teacher``,
    ``sft_templates``, ``dpo``."""
    sft, dpo = training_rows(_records(records_path), templates_in_completion=templates_in_completion)
    _write_rows(sft, Path(sft_path))
    _write_rows(dpo, Path(dpo_path))
    return {
        "sft": len(sft),
        "sft_student": sum(r["source"] == "student" for r in sft),
        "sft_teacher": sum(r["source"] == "teacher" for r in sft),
        "sft_templates": sum("high_level_plan" in r for r in sft),
        "dpo": len(dpo),
    }


def shape_summary(records_path: str | Path) -> dict[str, int]:
    """The counts of every finished problem of a shaping output added up, and ``problems``."""
    total: dict[str, int] = {"problems": 0}
    for record in _records(records_path):
        total["problems"] += 1
        for key, value in (record.get("counts") or {}).items():
            total[key] = total.get(key, 0) + int(value)
    return total
