"""``proofcritic shape`` (issue #19 point 4): output-space shaping and teacher corrections.

The student and the teacher are scripted models (tests/scripted.py) answering the real prompts
in protocol; the roles, parsers, answer check (math-verify), runner and file writers are real.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from scripted import ScriptedBackend
from servers.tiny_openai_server import TinyOpenAIServer
from typer.testing import CliRunner

from proofcritic.benchmarks import load_suite
from proofcritic.cli import app
from proofcritic.llm import CompletionCache, Model
from proofcritic.pipelines import Roles
from proofcritic.pipelines.solve import get_strategy
from proofcritic.pipelines.teacher import TeacherCorrector, ThoughtTemplater, parse_correction, parse_templates
from proofcritic.steps import split_steps
from proofcritic.training.recipes import ProofcriticDPOConfig, _dpo_dataset, _sft_dataset
from proofcritic.training.shaping import ShapeConfig, shape_jsonl, shape_summary, write_training_files

PROBLEMS = [
    {"id": "add", "problem": "Compute 1 + 2.", "answer": "3"},
    {"id": "half", "problem": "Compute 1/4 + 1/4.", "answer": "\\frac{1}{2}"},
]
RIGHT = "We add the two numbers.\n\nSo the sum is 3.\n\nThe answer is \\boxed{3}."
WRONG = "We add the two numbers.\n\nSo the sum is 4.\n\nThe answer is \\boxed{4}."
HALF_WRONG = "We add the fractions.\n\nThe sum is 2/8.\n\nThe answer is \\boxed{1/4}."
FIXED = "So the sum is 1 + 2 = 3, not 4.\n\nThe answer is \\boxed{3}."


def solution(text: str) -> str:
    """A generator output (its self-evaluation included) around the solution ``text``."""
    return (
        f"## Solution\n\n{text}\n\n## Self Evaluation\n\nHere is my evaluation of the solution:\n\nFine.\n\n"
        "Based on my evaluation, the final overall score should be:\n\\boxed{1}"
    )


def correction(step: int, quote: str, continuation: str) -> str:
    return (
        f'I read the steps.\n\n### First wrong step\n\nStep {step}: "{quote}"\n\n### Why it is wrong\n\n'
        f"The arithmetic is off.\n\n### Corrected solution from step {step}\n\n{continuation}"
    )


def student_script(call) -> str:
    """Problem add: sample 0 right, sample 1 wrong at step 2; problem half: always wrong."""
    if "Compute 1 + 2." in call.prompt:
        return solution(RIGHT if not call.request.config.seed else WRONG)
    return solution(HALF_WRONG)


def teacher_script(call) -> str:
    """Fixes add's step 2 (a verified correction); half's correction still has a wrong answer."""
    if call.role == "thought_templates":
        return "### High-level plan\n\nAdd the numbers.\n\n### Detailed plan\n\n1. Add them."
    assert call.role == "teacher_correct", call.role
    if "Compute 1 + 2." in call.prompt:
        return correction(2, "So the sum is 4.", FIXED)
    return correction(2, "The sum is 2/8.", "The sum is 2/4.\n\nThe answer is \\boxed{2/3}.")


def both_script(call) -> str:
    return teacher_script(call) if call.role in ("teacher_correct", "thought_templates") else student_script(call)


def write_problems(path: Path) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


# --------------------------------------------------------------------------- the teacher's parser


def test_parse_correction_locates_the_step_and_rejects_what_breaks_the_protocol():
    steps = split_steps(WRONG)
    good = parse_correction(correction(2, "So the sum is 4.", FIXED), "stop", steps=steps)
    assert good.format_ok and good.correction is not None
    assert (good.correction.step, good.correction.quote, good.correction.quote_found) == (2, "So the sum is 4.", True)
    assert good.correction.reasoning == "The arithmetic is off." and good.correction.continuation == FIXED
    misquoted = parse_correction(correction(2, "a sentence that is not there", FIXED), "stop", steps=steps)
    assert misquoted.format_ok and misquoted.correction.quote_found is False  # kept: the number decides
    beyond = parse_correction(correction(7, "x", FIXED), "stop", steps=steps)
    assert not beyond.format_ok and "step 7 is not one of the solution's steps 1 to 3" in beyond.format_error
    cut = parse_correction(correction(2, "So the sum is 4.", FIXED), "length", steps=steps)
    assert not cut.format_ok and "truncated" in cut.format_error
    none = parse_correction("### First wrong step\n\nnone", "stop", steps=steps)
    assert not none.format_ok and "the teacher found no wrong step" in none.format_error
    no_fix = parse_correction('### First wrong step\nStep 1: "We add"\n### Why it is wrong\nx', "stop", steps=steps)
    assert not no_fix.format_ok and "'### Corrected solution'" in no_fix.format_error
    assert parse_templates("### High-level plan\nIdea.\n### Detailed plan\n1. Do.").templates.detailed == "1. Do."
    assert "High-level plan" in parse_templates("### Detailed plan\n1. Do.").format_error


async def test_the_corrector_keeps_the_students_prefix_verbatim():
    teacher = TeacherCorrector(Model(ScriptedBackend(teacher_script)))
    [output] = await teacher.correct(_problem(0), WRONG, "3")
    assert output.prefix == "We add the two numbers.\n\n"
    assert output.corrected == "We add the two numbers.\n\n" + FIXED
    [call] = teacher.model.backend.calls
    assert "[Step 2]\nSo the sum is 4." in call.prompt and "## The correct final answer\n\n3" in call.prompt
    hidden = TeacherCorrector(Model(ScriptedBackend(teacher_script)), show_answer=False)
    await hidden.correct(_problem(0), WRONG, "3")
    assert "The correct final answer" not in hidden.model.backend.calls[0].prompt


def _problem(index: int):
    from proofcritic.types import Problem

    return Problem(id=PROBLEMS[index]["id"], statement=PROBLEMS[index]["problem"])


# --------------------------------------------------------------------------- the pipeline


def _run(tmp_path: Path, student: Model, teacher: Model, items, **config) -> object:
    return asyncio.run(
        shape_jsonl(
            items,
            tmp_path / "shape.jsonl",
            roles=Roles.from_models(student),
            strategy=get_strategy("single", verify_n=0),
            corrector=TeacherCorrector(teacher),
            templater=ThoughtTemplater(teacher) if config.pop("templates", False) else None,
            config=ShapeConfig(**{"k": 2, **config}),
            concurrency=1,
        )
    )


def test_shape_keeps_correct_trajectories_and_verified_corrections(tmp_path):
    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))
    student, teacher = ScriptedBackend(student_script), ScriptedBackend(teacher_script)
    stats = _run(tmp_path, Model(student), Model(teacher), items, templates=True)
    assert stats.done == 2 and stats.errors == 0
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "shape.jsonl").read_text().splitlines())}
    add, half = records["add"], records["half"]
    assert [t["correct"] for t in add["trajectories"]] == [True, False]
    fixed = add["trajectories"][1]["correction"]
    assert fixed["verified"] and fixed["chosen"] == 0 and fixed["reason"] == "verified on attempt 1 of 1"
    [attempt] = fixed["attempts"]
    assert attempt["first_wrong_step"] == 2 and attempt["quote"] == "So the sum is 4." and attempt["quote_found"]
    assert attempt["wrong_step_text"] == "So the sum is 4." and attempt["reasoning"] == "The arithmetic is off."
    assert attempt["corrected_solution"] == "We add the two numbers.\n\n" + FIXED and attempt["answer"] == "3"
    # the teacher's correction of "half" still states a wrong answer: traced, never chosen
    for t in half["trajectories"]:
        assert t["answer"] == "1/4" and not t["correct"]
        assert t["correction"]["verified"] is False and t["correction"]["chosen"] is None
        assert t["correction"]["attempts"][0]["answer"] == "2/3" and not t["correction"]["attempts"][0]["verified"]
        assert "1 with a wrong answer" in t["correction"]["reason"]
    assert add["counts"] == {
        "samples": 2,
        "correct": 1,
        "wrong": 1,
        "no_solution": 0,
        "corrected": 1,
        "correction_wrong": 0,
        "teacher_format_failures": 0,
        "templates": 2,
        "template_failures": 0,
    }
    assert add["stop_reason"] == "2 trajectories: 1 correct, 1 wrong (1 corrected by the teacher, 0 still wrong)"
    assert half["counts"]["correction_wrong"] == 2 and half["counts"]["templates"] == 0
    assert student.count("teacher_correct") == 0 and teacher.count("generate") == 0  # two models, two roles
    assert teacher.count("teacher_correct") == 3 and teacher.count("thought_templates") == 2

    counts = write_training_files(tmp_path / "shape.jsonl", tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl")
    assert counts == {"sft": 2, "sft_student": 1, "sft_teacher": 1, "sft_templates": 2, "dpo": 1}
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert [(r["id"], r["source"], r["completion"][0]["content"]) for r in sft] == [
        ("add/0", "student", RIGHT),
        ("add/1", "teacher", "We add the two numbers.\n\n" + FIXED),
    ]
    assert sft[0]["prompt"][-1]["role"] == "user" and "Compute 1 + 2." in sft[0]["prompt"][-1]["content"]
    assert sft[1]["high_level_plan"] == "Add the numbers." and sft[1]["detailed_plan"] == "1. Add them."
    [pair] = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert pair["chosen"][0]["content"] == "We add the two numbers.\n\n" + FIXED
    assert pair["rejected"][0]["content"] == WRONG and pair["first_wrong_step"] == 2
    assert pair["shared_prefix_chars"] == len("We add the two numbers.\n\n")
    assert pair["chosen"][0]["content"][:25] == pair["rejected"][0]["content"][:25]
    # the files load through train sft's and train dpo's own dataset loaders
    sft_set = _sft_dataset(tmp_path / "sft.jsonl")
    assert len(sft_set) == 2 and {"prompt", "completion"} <= set(sft_set.column_names)
    dpo_set = _dpo_dataset(tmp_path / "dpo.jsonl", ProofcriticDPOConfig(output_dir=str(tmp_path / "o")))
    assert len(dpo_set) == 1 and dpo_set[0]["rejected"] == [{"role": "assistant", "content": WRONG}]
    assert shape_summary(tmp_path / "shape.jsonl")["corrected"] == 1
    # --templates-in-completion: the plans come first in the completion, then the solution
    write_training_files(
        tmp_path / "shape.jsonl", tmp_path / "p.jsonl", tmp_path / "d.jsonl", templates_in_completion=True
    )
    planned = [json.loads(line)["completion"][0]["content"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert planned[1] == (
        "### High-level plan\n\nAdd the numbers.\n\n### Detailed plan\n\n1. Add them.\n\n### Solution\n\n"
        "We add the two numbers.\n\n" + FIXED
    )
    assert (tmp_path / "d.jsonl").read_text() == (tmp_path / "dpo.jsonl").read_text()  # pairs unchanged


def test_teacher_tries_until_a_correction_is_verified(tmp_path):
    """A second try (its own seed) is asked when the first correction's answer is wrong."""
    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))[:1]

    def teacher(call) -> str:
        if call.request.config.seed == teacher_seeds[0]:
            return correction(2, "So the sum is 4.", "So the sum is 5.\n\n\\boxed{5}")
        return correction(2, "So the sum is 4.", FIXED)

    teacher_seeds: list[int] = []
    backend = ScriptedBackend(lambda call: teacher_seeds.append(call.request.config.seed) or teacher(call))
    _run(tmp_path, Model(ScriptedBackend(student_script)), Model(backend), items, teacher_tries=3)
    [record] = map(json.loads, (tmp_path / "shape.jsonl").read_text().splitlines())
    fixed = record["trajectories"][1]["correction"]
    assert len(teacher_seeds) == 2 and teacher_seeds[0] != teacher_seeds[1]
    assert [a["verified"] for a in fixed["attempts"]] == [False, True] and fixed["chosen"] == 1
    assert fixed["reason"] == "verified on attempt 2 of 3"


def test_tora_trajectories_run_code_and_keep_its_output(tmp_path):
    """The student solves with tora: its code runs in the real sandbox; the kept solution (add)
    and the corrected one (half) carry the code and its output, and the prompt is tora's."""
    from proofcritic.tools import PythonTool, SandboxPool

    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))

    def student(call) -> str:
        users = [m.content for m in call.request.messages if m.role == "user"]
        code = "print(1 + 2)" if "Compute 1 + 2." in users[0] else "print(1/4 + 1/4 - 1/4)"
        if len(users) == 1:
            return f"## Solution\n\nWe compute.\n\n```python\n{code}"
        value = users[-1].split("```output\n", 1)[1].split("\n", 1)[0].strip()
        return solution(f"So the result is {value}.\n\nThe answer is \\boxed{{{value}}}.")

    def teacher(call) -> str:
        assert "print(1/4 + 1/4 - 1/4)" in call.prompt and "0.25" in call.prompt  # the code and its output
        return correction(1, "We compute.", "The sum is 1/2.\n\nThe answer is \\boxed{\\frac{1}{2}}.")

    with SandboxPool(workers=1) as pool:
        strategy = get_strategy("tora", verify_n=0, tool_objects=[PythonTool(pool)])
        asyncio.run(
            shape_jsonl(
                items,
                tmp_path / "shape.jsonl",
                roles=Roles.from_models(Model(ScriptedBackend(student))),
                strategy=strategy,
                corrector=TeacherCorrector(Model(ScriptedBackend(teacher))),
                config=ShapeConfig(k=1),
                concurrency=1,
            )
        )
    records = [json.loads(line) for line in (tmp_path / "shape.jsonl").read_text().splitlines()]
    add, half = records
    assert add["strategy"] == "tora" and "## Computing while you solve" in add["prompt"][-1]["content"]
    [kept] = add["trajectories"]
    assert kept["correct"] and kept["tool_calls"] == 1 and "```output\n3\n```" in kept["solution"]
    [wrong] = half["trajectories"]
    assert wrong["answer"] == "0.25" and wrong["correction"]["verified"]
    counts = write_training_files(tmp_path / "shape.jsonl", tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl")
    assert counts["sft"] == 2 and counts["dpo"] == 1


def test_a_solution_too_long_for_the_teacher_is_traced_not_fatal(tmp_path):
    from proofcritic.errors import ContextLengthError

    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))

    def teacher(call) -> str:
        if "Compute 1/4" in call.prompt:
            raise ContextLengthError("prompt of 9000 tokens; the model takes 8192")
        return teacher_script(call)

    stats = _run(tmp_path, Model(ScriptedBackend(student_script)), Model(ScriptedBackend(teacher)), items)
    assert stats.errors == 0
    half = [json.loads(line) for line in (tmp_path / "shape.jsonl").read_text().splitlines()][1]
    [attempt] = half["trajectories"][0]["correction"]["attempts"]
    assert "the prompt does not fit the teacher" in attempt["format_error"] and "8192" in attempt["format_error"]
    assert half["counts"]["teacher_format_failures"] == 2 and half["counts"]["correction_wrong"] == 2


def test_outputs_without_the_protocol_still_count_by_their_answer(tmp_path):
    """A student that writes no "## Solution" (so single chose no proof) is checked on its whole
    text; one whose text holds only a self-evaluation (its boxed score is no answer) has none."""
    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))

    def student(call) -> str:
        if "Compute 1 + 2." in call.prompt:
            return "1 + 2 = 3, so the answer is \\boxed{3}."
        return "Here is my evaluation of the solution:\n\nBased on my evaluation, the final overall score should be:\n\\boxed{1}"

    _run(tmp_path, Model(ScriptedBackend(student)), Model(ScriptedBackend(teacher_script)), items, k=1)
    add, half = [json.loads(line) for line in (tmp_path / "shape.jsonl").read_text().splitlines()]
    [kept] = add["trajectories"]
    assert kept["correct"] and kept["solution"] == "1 + 2 = 3, so the answer is \\boxed{3}."
    assert kept["solution_source"] == "format_failure" and kept["format_ok"] is False
    [none] = half["trajectories"]
    assert none["solution"] is None and none["correction"]["reason"] == "no solution text to correct"
    assert half["counts"]["no_solution"] == 1


def test_a_problem_budget_stops_the_problem_and_says_so(tmp_path):
    """--max-calls 3 counts the student's and the teacher's calls: add needs 3 (two samples, one
    correction), half would need 4 (its second correction is not asked)."""
    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))
    teacher = ScriptedBackend(teacher_script)
    stats = asyncio.run(
        shape_jsonl(
            items,
            tmp_path / "shape.jsonl",
            roles=Roles.from_models(Model(ScriptedBackend(student_script))),
            strategy=get_strategy("single", verify_n=0),
            corrector=TeacherCorrector(Model(teacher)),
            config=ShapeConfig(k=2),
            concurrency=1,
            max_calls=3,
        )
    )
    add, half = [json.loads(line) for line in (tmp_path / "shape.jsonl").read_text().splitlines()]
    assert not add["budget_limited"] and add["counts"]["corrected"] == 1
    assert half["budget_limited"] and stats.budget_limited == 1 and stats.errors == 0
    assert half["stop_reason"].startswith(
        "2 trajectories: 0 correct, 2 wrong (0 corrected by the teacher, 1 still wrong)"
    )
    assert "; stopped after 2 of 2 by the budget (budget: " in half["stop_reason"]
    second = half["trajectories"][1]["correction"]
    assert second["attempts"] == [] and second["reason"].startswith("not asked: budget:")
    assert teacher.count("teacher_correct") == 2


def test_a_killed_run_resumes_without_repeating_model_calls(tmp_path):
    """The first run fails in problem half's teacher call (an error record, tried again by a
    rerun); the rerun skips problem add and replays half's finished student call from the cache."""
    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))
    cache_path = tmp_path / "cache.sqlite"

    def dying_teacher(call) -> str:
        if "Compute 1/4" in call.prompt:
            raise RuntimeError("the teacher broke down")
        return teacher_script(call)

    student = ScriptedBackend(student_script)
    _run(tmp_path, Model(student, cache=CompletionCache(cache_path)), Model(ScriptedBackend(dying_teacher)), items)
    first = [json.loads(line) for line in (tmp_path / "shape.jsonl").read_text().splitlines()]
    assert [("error" in r) for r in first] == [False, True]
    student_calls = len(student.calls)

    again_student, again_teacher = ScriptedBackend(student_script), ScriptedBackend(teacher_script)
    stats = _run(tmp_path, Model(again_student, cache=CompletionCache(cache_path)), Model(again_teacher), items)
    assert stats.skipped == 1 and stats.errors == 0
    # the first run got as far as half's first sample (then its teacher call failed): that sample
    # comes from the cache, add is not redone, only half's second sample is new
    assert student_calls == 3 and [c.request.config.seed for c in again_student.calls] == [1]
    assert again_teacher.count("teacher_correct") == 2  # half's two wrong trajectories
    final = [json.loads(line) for line in (tmp_path / "shape.jsonl").read_text().splitlines()]
    assert [r["id"] for r in final] == ["add", "half"] and all("error" not in r for r in final)


# --------------------------------------------------------------------------- the command


def test_shape_command_against_a_local_server(tmp_path):
    problems = write_problems(tmp_path / "problems.jsonl")
    out = tmp_path / "run" / "shape.jsonl"
    backend = ScriptedBackend(both_script)
    with TinyOpenAIServer(backend, "roles") as server:
        common = ["--model", "openai/roles", "--base-url", server.url, "--no-cache", "--teacher-model", "openai/roles"]
        common += ["--teacher-base-url", server.url, "-k", "2", "--seed", "0"]
        args = ["shape", "--input", str(problems), "--output", str(out), *common]
        result = CliRunner().invoke(app, args, env={"OPENAI_API_KEY": "x"}, catch_exceptions=False)
        assert result.exit_code == 0, result.output + result.stderr
        calls = len(server.requests)
        assert calls == 4 + 3  # 2 x 2 student samples, 3 corrections
        again = CliRunner().invoke(app, args, env={"OPENAI_API_KEY": "x"}, catch_exceptions=False)
        assert again.exit_code == 0 and len(server.requests) == calls  # resumed: nothing to do
        changed = CliRunner().invoke(app, [*args, "--teacher-tries", "2"], env={"OPENAI_API_KEY": "x"})
        assert "made with teacher_tries=1; this run has teacher_tries=2" in str(changed.exception)
    assert "2 problem(s), 4 trajectories: 1 correct, 3 wrong, 0 without a solution; corrections: 1 verified, " in (
        result.stderr
    )
    assert "sft: 2 row(s) (1 student, 1 teacher) -> " in result.stderr and "dpo: 1 pair(s) -> " in result.stderr
    assert "shaped 0 problem(s), 2 already done" in again.stderr
    assert (tmp_path / "run" / "shape.sft.jsonl").exists() and (tmp_path / "run" / "shape.dpo.jsonl").exists()
    assert "teacher openai/roles: model calls: 3 new" in result.stderr


def test_shape_command_usage_errors_and_dry_run(tmp_path):
    problems = write_problems(tmp_path / "problems.jsonl")
    base = ["shape", "--input", str(problems), "--output", str(tmp_path / "o.jsonl")]
    no_teacher = CliRunner().invoke(app, base)
    assert no_teacher.exit_code == 2 and "give --teacher-model" in no_teacher.stderr
    unplanned = CliRunner().invoke(app, [*base, "--teacher-model", "openai/big", "--templates-in-completion"])
    assert unplanned.exit_code == 2 and "needs --templates" in unplanned.stderr
    no_answers = tmp_path / "plain.jsonl"
    no_answers.write_text(json.dumps({"id": "p", "problem": "Prove it."}) + "\n")
    missing = CliRunner().invoke(
        app, ["shape", "--input", str(no_answers), "--output", str(tmp_path / "x.jsonl"), "--teacher-tries", "0"]
    )
    assert "no reference answer" in str(missing.exception)
    dry = CliRunner().invoke(app, [*base, "--teacher-model", "openai/big", "-k", "8", "--templates", "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    assert "plan: shape --strategy single -k 8, 2 problem(s)" in dry.output
    assert "8 generation" in dry.output and "8 correction" in dry.output and "8 template" in dry.output
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_one_sft_and_one_dpo_step_on_the_shaped_files(tmp_path, tiny_model_dir):
    """train sft and train dpo run on shape's files as written, thought-template columns
    included (the tiny model, one step each)."""
    from proofcritic.training.recipes import ProofcriticSFTConfig, train_dpo, train_sft

    items = load_suite("answers", source=write_problems(tmp_path / "problems.jsonl"))
    student, teacher = Model(ScriptedBackend(student_script)), Model(ScriptedBackend(teacher_script))
    _run(tmp_path, student, teacher, items, templates=True)
    write_training_files(tmp_path / "shape.jsonl", tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl")
    common = {"use_cpu": True, "bf16": False, "max_steps": 1, "save_strategy": "no", "report_to": "none"}
    common |= {"model": str(tiny_model_dir), "max_length": None}  # no truncation: the prompt alone is long
    for recipe, config in (
        (
            train_sft,
            ProofcriticSFTConfig(**common, output_dir=str(tmp_path / "sft"), train_file=str(tmp_path / "sft.jsonl")),
        ),
        (
            train_dpo,
            ProofcriticDPOConfig(**common, output_dir=str(tmp_path / "dpo"), train_file=str(tmp_path / "dpo.jsonl")),
        ),
    ):
        out = Path(recipe(config))
        assert (out / "config.json").exists()
        metrics = [json.loads(line) for line in (out / "proofcritic_metrics.jsonl").read_text().splitlines()]
        assert any("loss" in m or "train_loss" in m for m in metrics), recipe.__name__


def _sum_script(call) -> str:
    """Problems "Compute n + n.": the student's sample 0 is right, sample 1 says 2n + 1 at step 2;
    the teacher fixes step 2."""
    import re

    n = int(re.search(r"Compute (\d+) \+", call.prompt).group(1))
    if call.role == "teacher_correct":
        return correction(
            2, f"So the sum is {2 * n + 1}.", f"So the sum is {2 * n}.\n\nThe answer is \\boxed{{{2 * n}}}."
        )
    value = 2 * n if not call.request.config.seed else 2 * n + 1
    return solution(f"We double {n}.\n\nSo the sum is {value}.\n\nThe answer is \\boxed{{{value}}}.")


@pytest.mark.slow
def test_shape_killed_mid_run_resumes_without_repeating_finished_calls(tmp_path):
    """SIGKILL once the first problem is written; the rerun asks nothing of a finished problem,
    writes every problem once, and the two runs together ask at most a few calls more than a clean
    run's 12 (those answered in the cache's last second before the kill)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    problems = tmp_path / "sums.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"s{n}", "problem": f"Compute {n} + {n}.", "answer": str(2 * n)}) + "\n"
            for n in range(1, 5)
        )
    )
    out, cache = tmp_path / "shape.jsonl", tmp_path / "cache.sqlite"
    root = Path(__file__).resolve().parents[1]
    backend = ScriptedBackend(_sum_script, delay=0.4)
    with TinyOpenAIServer(backend, "roles") as server:
        command = [sys.executable, "-m", "proofcritic", "shape", "--input", str(problems), "--output", str(out)]
        command += ["--model", "openai/roles", "--base-url", server.url, "--cache", str(cache), "-k", "2"]
        command += ["--teacher-model", "openai/roles", "--teacher-base-url", server.url, "--parallel-problems", "1"]
        env = {**os.environ, "OPENAI_API_KEY": "x"}
        with open(tmp_path / "first.err", "wb") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=root, env=env)
            deadline = time.monotonic() + 120
            while (
                process.poll() is None
                and time.monotonic() < deadline
                and not (out.exists() and out.read_text().strip())
            ):
                time.sleep(0.02)
            killed = process.poll() is None
            if killed:
                process.send_signal(signal.SIGKILL)
            process.wait()
        assert killed, (tmp_path / "first.err").read_text()[-3000:]
        finished = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        assert 1 <= len(finished) < 4
        asked = len(server.requests)
        rerun = subprocess.run(command, check=False, capture_output=True, text=True, cwd=root, env=env, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        again = server.requests[asked:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["s1", "s2", "s3", "s4"] and all("error" not in r for r in records)
    for problem_id in finished:
        n = problem_id[1:]
        assert not any(f"Compute {n} + {n}." in json.dumps(r["messages"]) for r in again), problem_id
    assert 12 <= asked + len(again) <= 12 + 3
    assert f"shaped {4 - len(finished)} problem(s), {len(finished)} already done" in rerun.stderr
    assert (
        "4 problem(s), 8 trajectories: 4 correct, 4 wrong, 0 without a solution; corrections: 4 verified"
        in rerun.stderr
    )


@pytest.mark.smollm2
@pytest.mark.slow
def test_shape_on_smollm2_as_student_and_teacher(smollm2_dir, tmp_path):
    """The real path on the embedded model (student and teacher): sampled, checked, the wrong
    trajectory sent to the teacher, whose answer (far too short to follow the protocol) is
    traced as a failed correction; a rerun asks nothing new."""
    problems = tmp_path / "one.jsonl"
    problems.write_text(json.dumps({"id": "p", "problem": "What is 17 * 23?", "answer": "391"}) + "\n")
    out = tmp_path / "shape.jsonl"
    args = ["shape", "--input", str(problems), "--output", str(out), "-k", "1", "--cache", str(tmp_path / "c.sqlite")]
    args += ["--max-tokens", "24", "--temperature", "0", "--teacher-model", "transformers/smollm2"]
    args += ["--teacher-max-tokens", "24", "--teacher-temperature", "0"]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    [trajectory] = record["trajectories"]
    assert record["counts"]["samples"] == 1 and trajectory["solution"]  # its text, protocol or not
    if not trajectory["correct"]:
        [attempt] = trajectory["correction"]["attempts"]  # the teacher was asked
        assert attempt["raw"] and attempt["format_ok"] is (attempt.get("corrected_solution") is not None)
        if not attempt["format_ok"]:
            assert attempt["format_error"] and not trajectory["correction"]["verified"]
    assert "1 problem(s), 1 trajectories" in first.stderr and "teacher transformers/" in first.stderr
    again = CliRunner().invoke(app, args, catch_exceptions=False)
    assert again.exit_code == 0 and "shaped 0 problem(s), 1 already done" in again.stderr
    assert (tmp_path / "shape.sft.jsonl").exists() and (tmp_path / "shape.dpo.jsonl").exists()
