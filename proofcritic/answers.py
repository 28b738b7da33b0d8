"""Final answers of answer problems: read the answer a solution states, and decide whether it is
equivalent to the reference answer. Equivalence is `math-verify`'s (parsing LaTeX and plain
expressions into sympy, then comparing numbers, expressions, sets, intervals, tuples and
equations); nothing here compares mathematics by hand.

**Extraction rules** (:func:`extract_answer`), on the text after the last ``</think>``, first
match wins:

1. ``boxed``: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced;
2. ``final_answer``: the rest of the last line that says "final answer (is)" or "the answer is"
   (case-insensitive; ``**``, ``:`` and a trailing period around it are dropped);
3. ``last_line``: the last non-empty line.

Pass the solution itself, not a self-evaluation that ends with a boxed score (a
:class:`~proofcritic.types.Generation`'s ``proof``, not its ``raw``).

**Equivalence** (:func:`answers_match`): both answers are given to ``math_verify.parse`` (text
without ``$`` is wrapped in ``$...$`` so that LaTeX such as ``\\frac{1}{2}`` is read as math;
a trailing period is dropped), then ``math_verify.verify(gold, predicted)`` decides. math-verify
reads the mathematics only (``odd $n$`` parses as ``n``), so when both answers have words outside
the math (words of three or more letters outside ``$...$`` that are not LaTeX commands,
lowercased) they must be the same words: ``odd $n$`` does not match ``even $n$``, while
``all numbers of the form $4k+3$`` matches ``$4k+3$`` and ``odd $n$`` matches ``n`` (math-verify's
reading alone). Answers that math-verify cannot parse at all
match only when their texts are equal up to whitespace.
math-verify's timeouts use ``signal.alarm``, so they apply in the main thread only; in other
threads the calls run without one.
"""

from __future__ import annotations

import re
import threading
from typing import Literal

from pydantic import BaseModel, Field

from .parsing import strip_thinking

__all__ = ["AnswerCheck", "AnswerRule", "ExtractedAnswer", "answers_match", "check_answer", "extract_answer"]

AnswerRule = Literal["boxed", "final_answer", "last_line"]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FINAL = re.compile(
    r"(?:final\s+answer(?:\s+is)?|the\s+answer\s+is)\s*(?:\*\*)?\s*[:：]?\s*(?:\*\*)?\s*(.*)$", re.IGNORECASE
)

_MATH = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL)
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


class ExtractedAnswer(BaseModel):
    """The answer a solution states, and the rule that found it."""

    text: str
    rule: AnswerRule


class AnswerCheck(BaseModel):
    """A solution's answer checked against the reference answer."""

    gold: str
    answer: str | None = Field(None, description="The extracted answer; None when the solution states none.")
    rule: AnswerRule | None = None
    correct: bool = Field(False, description="math-verify finds the answer equivalent to gold (False without one).")


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` whose braces close; None without one."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().strip("*").strip()
    return answer[:-1].rstrip() if answer.endswith(".") else answer


def extract_answer(solution: str) -> ExtractedAnswer | None:
    """The final answer of ``solution`` by the rules of the module docstring; None for a text
    with no non-empty line (or an empty box)."""
    body = strip_thinking(solution)
    boxed = _last_boxed(body)
    if boxed is not None:
        return ExtractedAnswer(text=boxed, rule="boxed") if boxed else None
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _FINAL.search(line)
        if match and _clean(match.group(1)):
            return ExtractedAnswer(text=_clean(match.group(1)), rule="final_answer")
    if not lines:
        return None
    last = _clean(lines[-1].lstrip("-*> ").strip())
    return ExtractedAnswer(text=last, rule="last_line") if last else None


def _as_math(answer: str) -> str:
    text = answer.strip()
    text = text[:-1].rstrip() if text.endswith(".") else text
    return text if "$" in text or "\\(" in text or "\\[" in text else f"${text}$"


def _prose(answer: str) -> list[str]:
    """The words outside the math of an answer (see the module)."""
    outside = _MATH.sub(" ", answer)
    return [w.lower() for w in _WORD.findall(outside)]


def answers_match(gold: str, predicted: str) -> bool:
    """Whether ``predicted`` is equivalent to ``gold`` by math-verify (see the module)."""
    from math_verify import parse, verify

    gold_words, words = _prose(gold), _prose(predicted)
    if gold_words and words and gold_words != words:
        return False

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    parsed_gold = parse(_as_math(gold), parsing_timeout=timeout)
    parsed = parse(_as_math(predicted), parsing_timeout=timeout)
    if not parsed_gold or not parsed:
        return " ".join(gold.split()) == " ".join(predicted.split())
    return bool(verify(parsed_gold, parsed, timeout_seconds=timeout))


def check_answer(gold: str, solution: str) -> AnswerCheck:
    """Extract the answer of ``solution`` and check it against ``gold``."""
    extracted = extract_answer(solution)
    if extracted is None:
        return AnswerCheck(gold=gold)
    return AnswerCheck(
        gold=gold, answer=extracted.text, rule=extracted.rule, correct=answers_match(gold, extracted.text)
    )
