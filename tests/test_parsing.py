"""The parsing rules of SPEC section 1: boxes, scores, markers, headers, thinking, issues."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proofcritic.generator import parse_generation
from proofcritic.meta_verifier import parse_meta_verification
from proofcritic.parsing import (
    EVALUATION_MARKER,
    META_SCORE_MARKER,
    SCORE_MARKER,
    header_kind,
    last_boxed,
    normalize_headers,
    read_score,
    score_from_box,
    split_evaluation,
    strip_thinking,
)
from proofcritic.verifier import parse_issues, parse_verification

OLD_SCORE_MARKER = SCORE_MARKER.replace("overall", "overal")
SCORES = st.sampled_from(["0", "0.5", "1"])
# text that cannot create or close a box by itself
PLAIN = st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=60)


def verification_text(score: str = "1", marker: str = SCORE_MARKER, analysis: str = "All steps check out.") -> str:
    return f"{EVALUATION_MARKER}\n\n{analysis}\n\n{marker}\n\\boxed{{{score}}}"


def generation_text(proof: str = "Proof body.", score: str = "1", header: str = "## Solution") -> str:
    return f"{header}\n\n{proof}\n\n## Self Evaluation\n\n{verification_text(score)}"


# --------------------------------------------------------------------------- boxes


@given(st.lists(st.tuples(PLAIN, SCORES), min_size=1, max_size=6), PLAIN)
def test_last_box_wins(pieces, tail):
    text = "".join(f"{before}\\boxed{{{score}}}" for before, score in pieces) + tail
    assert last_boxed(text) == pieces[-1][1]


@given(st.integers(0, 6), SCORES, PLAIN)
def test_nested_braces(depth, score, around):
    inner = "{" * depth + score + "}" * depth
    assert last_boxed(f"{around}\\boxed{{{inner}}}{around}") == inner


@pytest.mark.parametrize(
    ("text", "content"),
    [
        (r"\boxed {1}", "1"),
        ("\\boxed \n {0.5}", "0.5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"so \boxed{1} and then \boxed{0.5", "1"),  # unbalanced trailing box ignored
        (r"\boxed{\{0,1,3\}}", r"\{0,1,3\}"),  # escaped braces do not count
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
        (r"\boxed{\boxed{1}}", "1"),  # the box that opens last
        ("", None),
        ("no box here", None),
        (r"\boxed", None),
        (r"\boxed{", None),
        ("é ∀ε>0 — \\boxed{½} ✓ \\boxed{1} 🎉", "1"),
    ],
)
def test_last_boxed_cases(text, content):
    assert last_boxed(text) == content


@given(st.text(max_size=400))
@example("\\boxed{" * 50)
@example("}" * 20 + "\\boxed{1}" + "{" * 20)
def test_random_text_never_raises(text):
    last_boxed(text)
    read_score(text)
    normalize_headers(text)
    parse_issues(text)
    for parse in (parse_verification, parse_generation, parse_meta_verification):
        parse(text)
        parse(text, "length")


@given(st.text(alphabet='\\boxed{}1.05 #*_:\n|-"', max_size=300))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_adversarial_alphabet_never_raises(text):
    test_random_text_never_raises.hypothesis.inner_test(text)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000 + "\\boxed{1}",
        "\\boxed{" * 150_000,
        "{" * 500_000 + "\\boxed{1}" + "}" * 400_000,
        "\\boxed " + " " * 1_000_000,
        ("Based on my evaluation " + " " * 100) * 8_000,
        "- **Location:**" + " " * 1_000_000,
        "|" + " " * 1_000_000 + "\n" + "### Issues\n" + "- a\n" * 100_000,
    ],
    ids=["plain", "many-open-boxes", "deep-braces", "spaces-after-box", "marker-prefixes", "label-spaces", "issues"],
)
def test_megabyte_inputs_are_fast(text):
    start = time.perf_counter()
    read_score(text)
    parse_verification(text)
    parse_generation(text)
    parse_meta_verification(text)
    assert time.perf_counter() - start < 5.0


def test_megabyte_box_is_found():
    assert read_score("x" * 1_000_000 + "\\boxed{0.5}") == (0.5, None)


# --------------------------------------------------------------------------- scores


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("1", 1.0),
        ("0", 0.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1.0", 1.0),
        (" 1 ", 1.0),
        ("$0.5$", 0.5),
        (r"\frac{1}{2}", 0.5),
        (r"\dfrac{1}{2}", 0.5),
        (r"\tfrac12", 0.5),
        (r"\frac12", 0.5),
        ("1/2", 0.5),
        (r"\text{1}", 1.0),
        (r"\,1\,", 1.0),
        ("2", 2.0),
        ("-0", 0.0),
        ("x", None),
        ("", None),
        ("1/0", None),
        ("one", None),
        ("1e0", None),
        ("nan", None),
        ("0.5.", 0.5),
    ],
)
def test_score_from_box(content, value):
    assert score_from_box(content) == value


def test_read_score_errors():
    assert read_score(r"\boxed{2}") == (None, "score 2 is not one of 0, 0.5, 1")
    assert read_score(r"\boxed{0.25}")[1] == "score 0.25 is not one of 0, 0.5, 1"
    assert read_score("nothing")[0] is None
    assert read_score(r"\boxed{n=3}")[1] == "boxed content 'n=3' is not a number"
    assert read_score(r"\boxed{7}", allowed=range(8)) == (7.0, None)


# --------------------------------------------------------------------------- thinking


@given(PLAIN, PLAIN, SCORES)
def test_only_text_after_last_think_counts(thought, other, score):
    text = f"<think>{thought} \\boxed{{0}} {other}</think> draft </think>" + verification_text(score)
    assert strip_thinking(text) == verification_text(score)
    assert parse_verification(text).score == float(score)


def test_strip_thinking_without_tag():
    assert strip_thinking("plain") == "plain"


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("## Solution", "solution"),
        ("**Solution**", "solution"),
        ("**Solution:**", "solution"),
        ("**Solution**:", "solution"),
        ("**Solution.**", "solution"),
        ("### Solution", "solution"),
        ("  # solution  ", "solution"),
        ("__Solution__", "solution"),
        ("## Self Evaluation", "self_evaluation"),
        ("**Self Evaluation**", "self_evaluation"),
        ("**Self-Evaluation:**", "self_evaluation"),
        ("### self evaluation", "self_evaluation"),
        ("Solution", None),
        ("## Solution of case 2", None),
        ("**Solution.** We start", None),
        ("### 1. Solution", None),
        ("The solution", None),
    ],
)
def test_header_kind(line, kind):
    assert header_kind(line) == kind


def test_normalize_headers():
    text = "**Solution:**\r\nbody\n### Self-Evaluation\nHere\n**Solution.** inline stays\n"
    assert normalize_headers(text) == ("## Solution\r\nbody\n## Self Evaluation\nHere\n**Solution.** inline stays\n")


@given(st.sampled_from(["**Solution**", "**Solution:**", "### Solution", "## Solution"]), PLAIN, SCORES)
def test_generation_header_variants(header, proof, score):
    body = "proof " + proof
    generation = parse_generation(generation_text(body, score, header))
    assert generation.format_ok, generation.format_error
    assert generation.proof == body.strip()
    assert generation.self_score == float(score)


# --------------------------------------------------------------------------- markers


@pytest.mark.parametrize("marker", [SCORE_MARKER, OLD_SCORE_MARKER])
def test_both_spellings(marker):
    verification = parse_verification(verification_text("0.5", marker))
    assert verification.format_ok and verification.score == 0.5


@pytest.mark.parametrize(
    "marker",
    [
        "**Based on my evaluation, the final overall score should be:**",
        "based on my evaluation, the final overal score should be",
        "Based  on my\nevaluation the final overall score should be:",
        "### Based on my evaluation, the final overall score should be:",
    ],
)
def test_marker_variations(marker):
    parts = split_evaluation(verification_text("1", marker, analysis="Fine."))
    assert parts.has_evaluation_marker and parts.has_score_marker
    assert parts.analysis == "Fine."
    assert read_score(parts.score_part or "") == (1.0, None)


def test_verification_without_score_marker_is_a_format_failure():
    verification = parse_verification(f"{EVALUATION_MARKER}\nGood.\n\\boxed{{1}}")
    assert not verification.format_ok and verification.score is None
    assert "missing score marker" in (verification.format_error or "")


def test_verification_without_evaluation_marker_is_a_format_failure():
    verification = parse_verification(f"Good.\n{SCORE_MARKER}\n\\boxed{{1}}")
    assert not verification.format_ok and verification.score is None and verification.text_score == 1.0


def test_box_must_follow_the_score_marker():
    verification = parse_verification(f"{EVALUATION_MARKER}\nSo \\boxed{{1}}.\n{SCORE_MARKER}\none")
    assert not verification.format_ok and verification.score is None


@pytest.mark.parametrize("score", ["2", "0.7", "-1", "7"])
def test_out_of_range_scores_are_format_failures(score):
    verification = parse_verification(verification_text(score))
    assert not verification.format_ok and verification.score is None
    assert verification.format_error == f"score {score} is not one of 0, 0.5, 1"
    generation = parse_generation(generation_text(score=score))
    assert not generation.format_ok and generation.self_score == 0.0
    meta = parse_meta_verification(f"ok\n{META_SCORE_MARKER}\n\\boxed{{{score}}}")
    assert not meta.format_ok and meta.score is None


@pytest.mark.parametrize("finish_reason", ["length", "content_filter"])
def test_truncation_is_a_format_failure(finish_reason):
    message = f"output truncated (finish_reason={finish_reason})"
    verification = parse_verification(verification_text("1"), finish_reason)
    assert not verification.format_ok and verification.score is None
    assert verification.format_error == message
    assert verification.analysis == "All steps check out." and verification.text_score == 1.0
    generation = parse_generation(generation_text("P.", "1"), finish_reason)
    assert not generation.format_ok and generation.format_error == message and generation.proof == "P."
    meta = parse_meta_verification(f"Faithful.\n{META_SCORE_MARKER}\n\\boxed{{1}}", finish_reason)
    assert not meta.format_ok and meta.score is None and meta.analysis == "Faithful."


def test_truncated_mid_analysis_keeps_the_analysis():
    verification = parse_verification(f"{EVALUATION_MARKER}\nStep 1 is fine. Step 2", "length")
    assert verification.analysis == "Step 1 is fine. Step 2"
    assert "truncated" in (verification.format_error or "")


def test_meta_verification():
    text = f"The two issues are real.\n\n**{META_SCORE_MARKER}**\n\\boxed{{0.5}}"
    meta = parse_meta_verification(text)
    assert meta.format_ok and meta.score == 0.5 and meta.analysis == "The two issues are real."
    curly = META_SCORE_MARKER.replace('"solution evaluation"', "\u201csolution evaluation\u201d")
    assert parse_meta_verification(f"x\n{curly}\n\\boxed{{1}}").score == 1.0
    assert not parse_meta_verification("x \\boxed{1}").format_ok


# --------------------------------------------------------------------------- generations


def test_generation_boxes_in_the_proof_are_not_self_scores():
    text = "## Solution\nThe answer is \\boxed{1}.\n"
    generation = parse_generation(text)
    assert not generation.format_ok and generation.self_score == 0.0
    assert generation.proof == "The answer is \\boxed{1}."
    assert "missing '## Self Evaluation' section" in (generation.format_error or "")


def test_generation_missing_solution_header():
    generation = parse_generation("Proof here.\n## Self Evaluation\n" + verification_text("0.5"))
    assert not generation.format_ok and generation.proof == "Proof here." and generation.self_score == 0.5


def test_generation_unparseable_self_score_counts_as_zero():
    generation = parse_generation(generation_text(score="high"))
    assert not generation.format_ok and generation.self_score == 0.0


def test_generation_inner_bold_solution_line_stays_in_the_proof():
    proof = "**Solution.**\nLet n be even."
    generation = parse_generation(generation_text(proof, "1"))
    assert generation.format_ok and generation.proof == proof


# --------------------------------------------------------------------------- issues

PIPE_FORM = """Step 1 is correct. Step 2 divides by x.

### Issues

- **Location:** "divide both sides by $x$" | **Severity:** Critical Error | **Issue:** $x$ may be 0.
- **Location:** Step 4 | **Severity:** Justification Gap | **Issue:** the bound is asserted,
  not proved.
1. **Location:** “the case $n=1$” | **Severity:** justification gap | **Issue:** skipped.

The rest is fine.
"""

LINE_FORM = """Here are my findings.

**Issues found:**

1. **Location**: Step 3
   **Severity**: Critical Error
   **Issue**: The claim that $f$ is injective is false.
2. Location: "hence $a=b$"
   - Severity: Justification Gap
   - Description: needs the lemma.
"""

FREE_FORM = """### Issues
- Critical error in Step 2: "therefore $p \\mid q$" does not follow.
- A justification gap: the limit exchange is not justified.
- Something odd happens.
"""


def test_issues_pipe_form():
    issues = parse_issues(PIPE_FORM)
    assert [(i.location, i.severity) for i in issues] == [
        ("divide both sides by $x$", "critical_error"),
        ("Step 4", "justification_gap"),
        ("the case $n=1$", "justification_gap"),
    ]
    assert issues[0].description == "$x$ may be 0."
    assert issues[1].description == "the bound is asserted,\nnot proved."
    assert issues[2].description == "skipped."  # the paragraph after the list is not part of it


def test_issues_line_form():
    issues = parse_issues(LINE_FORM)
    assert [(i.location, i.severity) for i in issues] == [
        ("Step 3", "critical_error"),
        ("hence $a=b$", "justification_gap"),
    ]
    assert issues[0].description == "The claim that $f$ is injective is false."
    assert issues[1].description == "needs the lemma."


def test_issues_free_form():
    issues = parse_issues(FREE_FORM)
    assert [(i.location, i.severity) for i in issues] == [
        ("therefore $p \\mid q$", "critical_error"),
        (None, "justification_gap"),
        (None, "unspecified"),
    ]


@pytest.mark.parametrize(
    "analysis",
    ["All good.\n\n### Issues\n\n- None\n", "### Issues\nNone.", "### Issues\n- No issues found.", "Fine.", ""],
)
def test_no_issues(analysis):
    assert parse_issues(analysis) == []


def test_issues_without_heading_need_labels():
    analysis = (
        "1. Step one is fine.\n2. Step two is fine.\n"
        '* **Location:** "x > 0"\n  * **Issue:** Critical Error - the sign is wrong.\n'
    )
    issues = parse_issues(analysis)
    assert len(issues) == 1
    assert issues[0].location == "x > 0" and issues[0].severity == "critical_error"


def test_verification_carries_issues():
    verification = parse_verification(verification_text("0", analysis=PIPE_FORM))
    assert verification.format_ok and verification.score == 0.0 and len(verification.issues) == 3


def test_marker_patterns_must_start_with_a_letter():
    from proofcritic.parsing import _marker_pattern

    with pytest.raises(ValueError, match="start with a letter"):
        _marker_pattern("[x]?based", "on")
    pattern = _marker_pattern("Based", "on")
    assert [m.group() for m in pattern.finditer("## **based on** x; BASED  on:; __based_on__")] == [
        "## **based on** ",
        "BASED  on:",
        "__based_on__",
    ]


def test_locate_quote_exact_normalised_and_elided():
    from proofcritic.parsing import locate_quote

    text = "Let the triangle \\(ABC\\) be acute, so that its   circum-centre O lies inside.\nThen we conclude."
    assert locate_quote("Let the triangle $ABC$ be acute", text) == (0, len("Let the triangle \\(ABC\\) be acute"))
    start, end = locate_quote("“so that its circum-centre O”", text)
    assert text[start:end] == "so that its   circum-centre O"
    start, end = locate_quote("so that its circum-centre ... we conclude", text)
    assert text[start:end] == "so that its   circum-centre O lies inside.\nThen we conclude"
    assert locate_quote("Step 3", text) is None  # too short to place
    assert locate_quote("we conclude ... so that its", text) is None  # the parts in the wrong order
    assert locate_quote("a sentence that is not there", text) is None
    assert locate_quote(None, text) is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab $\\()xyz\n", min_size=0, max_size=60), st.integers(0, 60), st.integers(12, 40))
def test_locate_quote_finds_every_long_enough_substring(text, start, length):
    from proofcritic.parsing import locate_quote

    quote = text[start : start + length]
    if len(quote.strip(" \t\n\"'`")) < 12 or quote != quote.strip(" \t\n\"'`"):
        return
    span = locate_quote(quote, text)
    assert span is not None and text[span[0] : span[1]] == quote  # found as written: exact offsets
