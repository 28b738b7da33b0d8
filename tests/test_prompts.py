"""Prompt sets: the default set, load-time checks, plain-text sets, rendering errors."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proofcritic.errors import PromptError
from proofcritic.generator import parse_generation
from proofcritic.parsing import EVALUATION_MARKER, META_SCORE_MARKER, SCORE_MARKER
from proofcritic.promptset import TEMPLATE_VARIABLES, PromptSet
from proofcritic.types import Problem
from proofcritic.verifier import parse_verification

FULL = Problem(
    id="p1",
    statement="Prove that $n^2+n$ is even for every integer $n$. {{ not_a_variable }} {% raw %}",
    reference_solution="REFERENCE: $n^2+n=n(n+1)$, a product of consecutive integers.",
    grading_guidelines="GUIDELINES: (Partial) factors the expression.",
)
BARE = Problem(statement="Prove that $n^2+n$ is even for every integer $n$.")


@dataclass
class Cand:
    proof: str
    evaluations: list[str] = field(default_factory=list)


def variables(role: str, problem: Problem) -> dict:
    return {
        "generate": {"problem": problem},
        "verify": {"problem": problem, "proof": "PROOF TEXT"},
        "meta_verify": {"problem": problem, "proof": "PROOF TEXT", "analysis": "ANALYSIS TEXT", "score": 0.5},
        "refine": {"problem": problem, "candidates": [Cand("OLD PROOF", ["EVAL A", "EVAL B"])]},
    }[role]


@pytest.fixture(scope="module")
def default() -> PromptSet:
    return PromptSet.load()


def test_default_set_loads(default):
    assert default.names == ("generate", "verify", "meta_verify", "refine")
    assert default.directory.name == "default" and default.directory.parent.name == "prompts"
    assert not any(default.directory.glob("*.py"))


@pytest.mark.parametrize("role", list(TEMPLATE_VARIABLES))
@pytest.mark.parametrize("problem", [FULL, BARE], ids=["with-reference", "bare"])
def test_default_renders(default, role, problem):
    messages = default.render(role, **variables(role, problem))
    assert [m.role for m in messages] == ["user"]
    text = messages[0].content
    assert problem.statement in text  # verbatim: problem text is never template code
    assert "\\boxed{" in text
    if role == "meta_verify":
        assert META_SCORE_MARKER in text and "ANALYSIS TEXT" in text and "score: 0.5" in text
    else:
        assert EVALUATION_MARKER in text and SCORE_MARKER in text
        assert "Critical Error" in text and "Justification Gap" in text and "### Issues" in text
    if role in ("generate", "refine"):
        assert "## Solution" in text and "## Self Evaluation" in text and "honest" in text
    if role in ("verify", "meta_verify"):
        assert "PROOF TEXT" in text
        assert ("REFERENCE:" in text) == (problem is FULL)
        assert ("GUIDELINES:" in text) == (problem is FULL)
        assert ("Reference solution" in text) == (problem is FULL)
    else:  # the generator never sees the reference solution or the guidelines
        assert "REFERENCE:" not in text and "GUIDELINES:" not in text
    assert "\n\n\n" not in text


def test_verify_rubric(default):
    text = default.render("verify", problem=BARE, proof="x")[0].content
    for needle in ("**1**", "**0.5**", "**0**", "paper", "never receives 1"):
        assert needle in text


def test_meta_verify_without_score(default):
    text = default.render("meta_verify", problem=BARE, proof="x", analysis="y", score=None)[0].content
    assert "no valid score" in text


def test_refine_layout(default):
    candidates = [Cand("FIRST PROOF", ["E11", "E12"]), {"proof": "SECOND PROOF", "evaluations": ["E21"]}]
    text = default.render("refine", problem=BARE, candidates=candidates)[0].content
    generate = default.render("generate", problem=BARE)[0].content
    assert text.startswith(generate)
    order = [
        "--- Solution 1 ---",
        "FIRST PROOF",
        "=== Evaluation 1 of Solution 1 ===",
        "E11",
        "=== Evaluation 2 of Solution 1 ===",
        "E12",
        "--- Solution 2 ---",
        "SECOND PROOF",
        "=== Evaluation 1 of Solution 2 ===",
        "E21",
        "## Your task now",
    ]
    positions = [text.index(needle) for needle in order]
    assert positions == sorted(positions)
    assert text.rstrip().endswith("0, 0.5 or 1.")


def _example_answer(prompt: str, start: str) -> str:
    """The output-format example of a prompt with its placeholders filled in."""
    example = prompt[prompt.index(start, prompt.index("## Output format")) :]
    example = example[: example.index("\\boxed{<0, 0.5 or 1>}") + len("\\boxed{<0, 0.5 or 1>}")]
    return (
        example.replace("<0, 0.5 or 1>", "0.5")
        .replace("<Critical Error or Justification Gap>", "Justification Gap")
        .replace("<your complete proof>", "MY PROOF")
    )


def test_the_prompts_output_format_parses(default):
    verify = default.render("verify", problem=BARE, proof="x")[0].content
    verification = parse_verification(_example_answer(verify, EVALUATION_MARKER))
    assert verification.format_ok and verification.score == 0.5
    assert [i.severity for i in verification.issues] == ["justification_gap"]
    generate = default.render("generate", problem=BARE)[0].content
    generation = parse_generation(_example_answer(generate, "## Solution"))
    assert generation.format_ok and generation.proof == "MY PROOF" and generation.self_score == 0.5


# --------------------------------------------------------------------------- custom sets


def _copy_default(tmp_path: Path) -> Path:
    target = tmp_path / "set"
    shutil.copytree(PromptSet.load().directory, target)
    return target


def test_unknown_variable_fails_at_load(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "verify.j2").write_text("{{ problem.statement }} {{ proof }} {{ rubrik }} {{ answer }}")
    with pytest.raises(PromptError) as info:
        PromptSet.load(folder)
    message = str(info.value)
    assert "verify.j2" in message and "answer, rubrik" in message


def test_unknown_variable_in_an_included_partial_fails_at_load(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "_rubric.j2").write_text("Grade {{ proof }} strictly, see {{ secret }}.")
    (folder / "verify.j2").write_text('{{ problem.statement }}\n{% include "_rubric.j2" %}')
    with pytest.raises(PromptError, match="secret"):
        PromptSet.load(folder)


def test_variable_allowed_for_one_role_only(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "generate.j2").write_text("{{ problem.statement }} {{ proof }}")
    with pytest.raises(PromptError, match=r"generate\.j2.*proof"):
        PromptSet.load(folder)


def test_syntax_error_fails_at_load(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "meta_verify.j2").write_text("{% if score %}unterminated")
    with pytest.raises(PromptError, match=r"meta_verify\.j2"):
        PromptSet.load(folder)


def test_missing_template(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "generate.j2").unlink()
    (folder / "refine.j2").unlink()  # it includes generate.j2
    with pytest.raises(PromptError, match=r"generate\.j2"):
        PromptSet.load(folder)
    partial = PromptSet.load(folder, require=["verify", "meta_verify"])
    assert partial.names == ("verify", "meta_verify")
    assert partial.render("verify", problem=BARE, proof="p")
    with pytest.raises(PromptError, match="'generate'"):
        partial.render("generate", problem=BARE)


def test_missing_folder(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        PromptSet.load(tmp_path / "nowhere")


def test_system_template(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "verify.system.j2").write_text("You grade proofs of problem {{ problem.id }}.\n")
    messages = PromptSet.load(folder).render("verify", problem=FULL, proof="p")
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == "You grade proofs of problem p1."


def test_render_errors(default):
    with pytest.raises(PromptError, match="proof"):
        default.render("verify", problem=BARE)  # a variable the template needs is missing
    with pytest.raises(PromptError, match="not extra"):
        default.render("verify", problem=BARE, proof="p", extra=1)
    with pytest.raises(PromptError, match="unknown prompt"):
        default.render("summarise", problem=BARE)
    with pytest.raises(PromptError, match=r"refine\.j2.*proof"):
        default.render("refine", problem=BARE, candidates=[{"text": "no proof key"}])


def test_both_formats_for_one_role(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "verify.txt").write_text("{statement} {proof}")
    with pytest.raises(PromptError, match="both"):
        PromptSet.load(folder)


# --------------------------------------------------------------------------- plain-text sets

TEXT_SET = {
    "generate.txt": "Solve: {statement}\nEnd with \\boxed{{s}}.\n",
    "verify.txt": (
        "Problem {problem_id} ({max_points} points): {question}\nReference: {reference_solution}\n"
        "Guidelines: {grading_guidelines}\nProof: {proof}\n"
        "Here is my evaluation of the solution: ...\n"
        "Based on my evaluation, the final overal score should be: \\boxed{{}}"
    ),
    "meta_verify.txt": "{problem}\n{proof}\n{analysis}\nScore given: {score}\n",
    "refine.txt": "{statement}\n\n{candidates}\nNow write a new solution.",
    "verify.system.txt": "You are a grader.",
}


def _text_set(tmp_path: Path, **overrides: str) -> Path:
    folder = tmp_path / "txt"
    folder.mkdir()
    for name, body in {**TEXT_SET, **overrides}.items():
        (folder / name).write_text(body)
    return folder


def test_text_set_renders(tmp_path):
    prompts = PromptSet.load(_text_set(tmp_path))
    assert prompts.names == ("generate", "verify", "meta_verify", "refine")
    system, user = prompts.render("verify", problem=FULL, proof="PROOF")
    assert system.role == "system" and system.content == "You are a grader."
    assert user.content.startswith(f"Problem p1 (7 points): {FULL.statement}\nReference: REFERENCE:")
    assert "Proof: PROOF\n" in user.content and user.content.endswith("\\boxed{}")
    bare = prompts.render("verify", problem=BARE, proof="PROOF")[-1].content
    assert "Reference: \nGuidelines: \n" in bare
    meta = prompts.render("meta_verify", problem=BARE, proof="P", analysis="A", score=1.0)[0].content
    assert meta.endswith("Score given: 1")
    refine = prompts.render("refine", problem=BARE, candidates=[Cand("P1", ["E1"]), Cand("P2", [])])[0].content
    assert "--- Solution 1 ---\n\nP1\n\n=== Evaluation 1 of Solution 1 ===\n\nE1\n\n--- Solution 2 ---\n\nP2" in refine
    assert prompts.render("generate", problem=BARE)[0].content.endswith("\\boxed{s}.")


def test_text_set_unknown_field(tmp_path):
    folder = _text_set(tmp_path, **{"generate.txt": "Solve {statement} like {persona}."})
    with pytest.raises(PromptError, match=r"generate\.txt.*persona"):
        PromptSet.load(folder)


def test_text_set_positional_field(tmp_path):
    folder = _text_set(tmp_path, **{"verify.txt": "{statement} {proof} \\boxed{}"})
    with pytest.raises(PromptError, match=r"verify\.txt.*literal braces"):
        PromptSet.load(folder)


def test_text_set_unbalanced_brace(tmp_path):
    folder = _text_set(tmp_path, **{"verify.txt": "{statement} {proof} \\boxed{"})
    with pytest.raises(PromptError, match=r"verify\.txt"):
        PromptSet.load(folder)


def test_unknown_filter_fails_at_load(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "generate.j2").write_text("{{ problem.statement | shout }}")
    (folder / "refine.j2").write_text("{{ problem.statement }}")
    with pytest.raises(PromptError, match=r"generate\.j2.*shout"):
        PromptSet.load(folder)


def test_extra_variables_for_custom_templates(tmp_path):
    folder = _copy_default(tmp_path)
    (folder / "verify.j2").write_text("{{ problem.statement }} {{ proof }} [{{ rubric }}]")
    with pytest.raises(PromptError, match="rubric"):
        PromptSet.load(folder)
    prompts = PromptSet.load(folder, variables={"verify": ["rubric"], "critique": ["problem", "proof"]})
    assert prompts.render("verify", problem=BARE, proof="P", rubric="R")[0].content.endswith("P [R]")
    assert prompts.names == ("generate", "verify", "meta_verify", "refine")
    with pytest.raises(PromptError, match="'critique'"):
        prompts.render("critique", problem=BARE, proof="P")
    (folder / "critique.txt").write_text("Critique {proof} of {statement}.")
    prompts = PromptSet.load(folder, variables={"verify": ["rubric"], "critique": ["problem", "proof"]})
    assert prompts.render("critique", problem=BARE, proof="P")[0].content == f"Critique P of {BARE.statement}."
    with pytest.raises(PromptError, match="unknown prompt role"):
        PromptSet.load(folder, require=["nonsense"])


def test_fast_jinja_render_matches_jinja_render_with_globals_and_filters(tmp_path):
    """The render path that skips jinja's per-call globals merge gives the same text as
    ``Template.render``, including jinja globals (``range``) and the set's filters."""
    shutil.copytree(PromptSet.load().directory, tmp_path / "p")
    (tmp_path / "p" / "verify.j2").write_text(
        "{% for i in range(2) %}[{{ i }}]{% endfor %} {{ problem.statement }} {{ 0.5 | as_score }}\n{{ proof }}\n",
        encoding="utf-8",
    )
    prompts = PromptSet.load(tmp_path / "p")
    template = prompts._templates["verify"]
    problem = Problem(id="x", statement="Show it.")
    expected = template.jinja.render(problem=problem, proof="P").strip()
    assert prompts.render("verify", problem=problem, proof="P")[-1].content == expected
    assert expected.startswith("[0][1] Show it. 0.5")
