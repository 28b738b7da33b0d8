"""Step suites (``eval steps``, issue #18): where a solution first goes wrong.

- ``processbench``: rows in ProcessBench's format, ``{id, problem, steps, label}`` with ``label``
  the index (from 0) of the first wrong step or -1 when every step is right (optional
  ``generator``, ``final_answer_correct``). No copy is bundled: give a JSON/JSONL file, or the
  Hugging Face id with a split (``hf:Qwen/ProcessBench:gsm8k``; needs the ``hf`` extra and network).
- ``opc-steps``: the Open Proof Corpus rows that carry ``human_annotations`` (11 of the bundled
  100): the proof is cut into steps by the run's step mode, and the label is the step where the
  first annotated error (the smallest ``original_text_indices`` start) begins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..steps import Step, join_steps
from ._data import need, normalized, pick
from ._items import StepItem
from ._suite import Suite, make_problem
from .opc import MAX_POINTS, _error_spans, _reference


def first_error_step(spans: Sequence[Sequence[int]], steps: Sequence[Step]) -> int:
    """The index of the step where the first of ``spans`` (``[start, end)`` offsets) begins: the
    first step the span overlaps; for a span wholly between steps, the step after it (the last
    step when none follows); -1 without spans."""
    if not spans or not steps:
        return -1
    start, end = min((int(s), int(e)) for s, e in spans)
    for step in steps:
        if step.start < end and step.end > start:
            return step.index
    return next((step.index for step in steps if step.start >= start), steps[-1].index)


def _processbench_item(record: dict[str, Any]) -> StepItem:
    r = normalized(record)
    raw_steps = need(r, "steps")
    if not isinstance(raw_steps, list) or not raw_steps or not all(isinstance(s, str) for s in raw_steps):
        raise InputError("'steps' must be a non-empty list of strings")
    try:
        label = int(need(r, "label"))
    except (TypeError, ValueError):
        raise InputError(f"'label' must be a step index or -1, not {r.get('label')!r}") from None
    if not -1 <= label < len(raw_steps):
        raise InputError(f"'label' {label} is not -1 or a step index below {len(raw_steps)}")
    proof, steps = join_steps(raw_steps)
    item_id = str(pick(r, "id") or f"line-{record.get('_line', '?')}")
    meta = {k: v for k in ("generator", "final_answer_correct", "subset") if (v := pick(r, k)) is not None}
    return StepItem(
        id=item_id,
        problem=make_problem(id=item_id, statement=need(r, "problem", "question")),
        proof=proof,
        steps=steps,
        label=label,
        meta=meta,
    )


def _opc_step_item(record: dict[str, Any]) -> StepItem:
    r = normalized(record)
    problem_id = str(need(r, "problem_id"))
    model_id = str(pick(r, "model_id") or "unknown")
    return StepItem(
        id=f"{problem_id}/{model_id}",
        problem=make_problem(
            id=problem_id,
            statement=need(r, "problem", "statement"),
            reference_solution=_reference(pick(r, "reference_solutions", "reference_solution")),
            max_points=MAX_POINTS,
        ),
        proof=str(need(r, "proof")),
        error_spans=_error_spans(r.get("human_annotations")),
        meta={
            "problem_id": problem_id,
            "competition": pick(r, "competition"),
            "model_id": model_id,
            "human_label": pick(r, "human_label"),
            "comments": [
                str(note.get("comment") or "") for note in r.get("human_annotations") or [] if isinstance(note, dict)
            ],
        },
    )


PROCESSBENCH = Suite(
    name="processbench",
    kind="steps",
    description="ProcessBench-format rows (id, problem, steps, label = first wrong step or -1); give the file or hf:Qwen/ProcessBench:SPLIT",
    max_points=None,
    item=_processbench_item,
    hf_id="Qwen/ProcessBench",
)

OPC_STEPS = Suite(
    name="opc-steps",
    kind="steps",
    description="Open Proof Corpus proofs with human error annotations: the first annotated error's step",
    max_points=MAX_POINTS,
    path="opc/opc_test_sample100.jsonl",
    item=_opc_step_item,
    where=lambda record: bool(_error_spans(record.get("human_annotations"))),
)

SUITES = [PROCESSBENCH, OPC_STEPS]
