"""How ``grade --steps`` shows the step verifications (issue #18): each one's score, first wrong
step and the steps it did not judge correct (with reasons), the proof with each step marked by its
majority verdict, and the aggregate of the step scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ..types import GradeResult, Problem


def show_steps(console: Console, problem: Problem, result: GradeResult) -> None:
    from rich.markup import escape

    from ..verifier import VERDICT_MARKS, step_majority

    steps = result.steps or []
    verifications = result.step_verifications or []
    for index, v in enumerate(verifications, start=1):
        if not v.format_ok:
            console.print(
                f"[bold]step verification {index}[/]: score — [red]format failure:[/] {escape(v.format_error or '')}"
            )
            continue
        first = "none" if v.first_error is None else f"step {v.first_error + 1}"
        console.print(
            f"[bold]step verification {index}[/]: score {v.score:g}; first wrong step: {first} (of {len(steps)})"
        )
        for verdict in v.verdicts:
            if verdict.verdict != "correct":
                colour = "red" if verdict.verdict == "incorrect" else "yellow"
                console.print(
                    f"  - step {verdict.index + 1} [{colour}]{VERDICT_MARKS[verdict.verdict]} {verdict.verdict}[/]: "
                    f"{escape(verdict.reason)}"
                )
    shown = step_majority(verifications, len(steps))
    valid = sum(v.format_ok for v in verifications)
    if valid:
        marks = [f"[{step.number} {VERDICT_MARKS[kind or 'correct']}] " for step, kind in zip(steps, shown)]
        console.print(
            f"[bold]the proof, each step marked by its majority verdict over {valid} valid step verification(s)[/] "
            f"({VERDICT_MARKS['correct']} correct, {VERDICT_MARKS['unjustified']} unjustified, "
            f"{VERDICT_MARKS['incorrect']} incorrect):"
        )
        # the steps as the proof has them (what lies between steps is whitespace and separator lines)
        console.print("\n\n".join(mark + step.text for mark, step in zip(marks, steps)), markup=False, highlight=False)
    a = result.step_aggregate
    if a is None or a.valid == 0:
        console.print(
            f"[bold]step aggregate[/]: no verdict: no step verification out of {len(verifications)} was valid"
        )
        return
    console.print(
        f"[bold]step aggregate[/] over {a.valid}/{a.n} valid: mean {a.mean:.3g}, min {a.min:g}, majority "
        f"{a.majority:g} -> {a.points:.3g} / {problem.max_points:g} points"
    )
