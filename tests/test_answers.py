"""Final answers: extraction rules and math-verify equivalence on real AnswerBench rows."""

from __future__ import annotations

import csv
import re
import threading
from pathlib import Path

import pytest

from proofcritic.answers import answers_match, check_answer, extract_answer

ANSWERBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "imobench" / "answerbench_v2.csv"
pytestmark = pytest.mark.skipif(not ANSWERBENCH.is_file(), reason="AnswerBench data not present")


def _answers() -> dict[str, str]:
    with ANSWERBENCH.open(newline="", encoding="utf-8") as handle:
        return {row["Problem ID"]: row["Short Answer"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    return _answers()


def _boxed(answer: str) -> str:
    """The answer as a solution would box it: without its dollars and trailing period."""
    return re.sub(r"\$", "", answer).strip().rstrip(".").strip()


@pytest.mark.slow  # all 400 rows through math-verify (~10 s)
def test_every_answer_matches_itself_and_its_boxed_form(answers):
    assert len(answers) == 400
    boxed = 0
    for problem_id, gold in answers.items():
        assert answers_match(gold, gold), problem_id
        one_line = " ".join(gold.split())  # a final-answer line holds one line
        stated = check_answer(gold, f"We work it out.\n\nFinal answer: {one_line}")
        assert (stated.rule, stated.correct) == ("final_answer", True), problem_id
        if re.search(r"[A-Za-z]{3,}", re.sub(r"\$.*?\$|\\[A-Za-z]+", "", gold, flags=re.DOTALL)):
            continue  # prose around the math ("for some $a>0$") cannot go in a box as it is
        check = check_answer(gold, f"Hence the answer is \\boxed{{{_boxed(gold)}}}.")
        assert (check.rule, check.correct) == ("boxed", True), (problem_id, gold, check.answer)
        boxed += 1
    assert boxed > 370


# (problem id, a rewritten answer that must match the row's answer)
SAME = [
    ("imo-bench-algebra-001", "\\frac{6}{2}"),  # 3
    ("imo-bench-algebra-043", "\\frac{1}{\\sqrt{2}+1}"),  # sqrt(2) - 1
    ("imo-bench-algebra-049", "16/27"),
    ("imo-bench-geometry-017", "\\frac12"),  # 0.5
    ("imo-bench-geometry-011", "\\frac{5}{2}+\\frac{\\sqrt{21}}{2}"),
    ("imo-bench-combinatorics-015", "61917364224"),  # 12^10
    ("imo-bench-algebra-009", "\\sqrt[3]{\\frac{1568}{13}}"),  # 2 cbrt(196/13)
    ("imo-bench-algebra-067", "(2, 0.5, 2.25)"),  # a tuple
    ("imo-bench-algebra-028", "(-\\infty,0]"),  # an interval
    ("imo-bench-algebra-048", "[-6, 5]"),
    ("imo-bench-algebra-053", "\\mathbb{R}\\setminus\\{-3\\}"),  # a union of intervals
    ("imo-bench-algebra-017", "\\{\\tfrac12\\}\\cup(-\\infty,0)"),
    ("imo-bench-number_theory-055", "14625"),
    ("imo-bench-algebra-091", "odd $n$."),
]
# (problem id, an answer that must not match)
DIFFERENT = [
    ("imo-bench-algebra-001", "4"),
    ("imo-bench-algebra-043", "\\sqrt{2}+1"),
    ("imo-bench-algebra-049", "\\frac{27}{16}"),
    ("imo-bench-geometry-017", "\\frac13"),
    ("imo-bench-combinatorics-015", "10^{12}"),
    ("imo-bench-algebra-067", "(2, \\frac{9}{4}, \\frac{1}{2})"),  # order matters in a tuple
    ("imo-bench-algebra-028", "(-\\infty,0)"),  # open, not closed
    ("imo-bench-algebra-048", "[-5,6]"),
    ("imo-bench-algebra-053", "\\mathbb{R}"),
    ("imo-bench-algebra-091", "even $n$"),  # math-verify alone reads both as n
    ("imo-bench-number_theory-055", "14626"),
]


@pytest.mark.parametrize(("problem_id", "rewritten"), SAME)
def test_rewritten_answers_match(answers, problem_id, rewritten):
    assert answers_match(answers[problem_id], rewritten)
    assert check_answer(answers[problem_id], f"So the final answer is: {rewritten}").correct


@pytest.mark.parametrize(("problem_id", "other"), DIFFERENT)
def test_different_answers_do_not_match(answers, problem_id, other):
    assert not answers_match(answers[problem_id], other)
    assert not check_answer(answers[problem_id], f"Thus \\boxed{{{other}}}").correct


def test_extraction_rules():
    # the last box wins, braces balanced
    assert extract_answer("first \\boxed{1}, then \\boxed{\\frac{1}{2}} done").text == "\\frac{1}{2}"
    assert extract_answer("x \\fbox{7}").rule == "boxed"
    # a box outside the thinking only
    assert extract_answer("<think>\\boxed{9}</think>The answer is 8.").text == "8"
    found = extract_answer("Some work.\n**Final Answer:** $12^{10}$.\nThanks for reading")
    assert (found.text, found.rule) == ("$12^{10}$", "final_answer")
    found = extract_answer("we compute\n\n  - 2079  \n")
    assert (found.text, found.rule) == ("2079", "last_line")
    assert extract_answer("") is None
    assert extract_answer("\\boxed{}") is None
    check = check_answer("3", "no answer here at all")
    assert (check.answer, check.correct) == ("no answer here at all", False)


def test_runs_outside_the_main_thread(answers):
    results = []
    worker = threading.Thread(target=lambda: results.append(answers_match(answers["imo-bench-algebra-049"], "32/54")))
    worker.start()
    worker.join()
    assert results == [True]
