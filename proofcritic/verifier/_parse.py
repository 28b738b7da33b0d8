"""Parse a verifier's output into a :class:`~proofcritic.types.Verification` (SPEC section 1).

The protocol: the analysis follows ``Here is my evaluation of the solution:``; the score
follows ``Based on my evaluation, the final overall score should be:`` as ``\\boxed{0}``,
``\\boxed{0.5}`` or ``\\boxed{1}``, and that score statement must be the output's final
statement (:mod:`proofcritic.parsing`: nothing with content may follow the box, so a quoted
"... should be: \\boxed{1}" after the real verdict makes the output fail instead of forging
it). An output is a format failure (``format_ok`` False, ``score`` None) when it was
truncated, misses either marker, has no valid box directly after the score marker, or has
content after a score statement. In particular a valid box *without* the score marker is a
format failure: the protocol requires the marker, and a box elsewhere may be an answer the
proof computes. ``text_score`` still records a valid final score statement even when the
output fails for another reason (for example truncation), so that no information is lost.

The default ``verify`` prompt asks for the issues as a list under an ``### Issues`` heading::

    - **Location:** "quoted text" | **Severity:** Critical Error | **Issue:** what is wrong

:func:`parse_issues` reads that form leniently (labels in any order, bold or not, one per
line or separated by ``|``) and falls back to keyword detection for free-form lists.
"""

from __future__ import annotations

import re

from ..parsing import (
    EVALUATION_MARKER,
    SCORE_MARKER,
    SCORE_MARKER_RE,
    EvaluationParts,
    read_final_score,
    split_evaluation,
    strip_thinking,
    truncation_error,
)
from ..types import Issue, Severity, Verification

__all__ = ["parse_issues", "parse_verification"]

_ITEM_START = re.compile(r"([ \t]*)(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+(?=\S)")
_LABEL = re.compile(
    r"(?:^|\|)[ \t]*(?:[-*+\u2022][ \t]+)?(?:(?:\*\*|__)[ \t]*)?"
    r"(location|severity|issue|description|explanation|problem)"
    r"[ \t]*(?:(?:\*\*|__)[ \t]*)?:(?:[ \t]*(?:\*\*|__))?",
    re.IGNORECASE | re.MULTILINE,
)
_NONE_ITEM = re.compile(
    r"(?:none|nil|n/?a|no\s+(?:issues?|errors?|problems?|defects?)"
    r"(?:\s+(?:were\s+)?(?:found|identified|detected))?)[.!]?",
    re.IGNORECASE,
)
_QUOTE = re.compile(r"\"([^\"\n]{1,400})\"|\u201c([^\u201d\n]{1,400})\u201d")
_STEP_REF = re.compile(
    r"\b(?:step|line|paragraph|case|claim|lemma|equation|part)\s*\(?\d{1,4}[a-z]?\)?",
    re.IGNORECASE,
)
_QUOTE_PAIRS = {'"': '"', "\u201c": "\u201d", "'": "'", "`": "`", "\u2018": "\u2019"}
_MAX_HEADING_CHARS = 80
_ISSUES_TITLE = re.compile(
    r"(?:\d{1,3}[.)]?\s*)?(?:(?:detailed\s+)?(?:list|summary)\s+of\s+(?:the\s+)?|identified\s+|remaining\s+)?"
    r"(?:issues?|findings)(?:\s+(?:found|identified|detected))?"
)


def _severity(text: str) -> Severity:
    lowered = text.lower()
    if "critical" in lowered or "fatal" in lowered:
        return "critical_error"
    if "justification" in lowered or "gap" in lowered:
        return "justification_gap"
    return "unspecified"


def _clean(value: str) -> str:
    """Strip whitespace, separators, bold markers and one pair of surrounding quotes."""
    value = value.strip().strip("|;").strip()
    while value.startswith(("**", "__")) and value.endswith(("**", "__")) and len(value) >= 4:
        value = value[2:-2].strip()
    if len(value) >= 2 and _QUOTE_PAIRS.get(value[0]) == value[-1]:
        value = value[1:-1].strip()
    return value


def _is_none(text: str) -> bool:
    core = text.replace("*", "").replace("`", "").strip()
    return len(core) < 60 and _NONE_ITEM.fullmatch(core) is not None


def _parse_item(text: str) -> Issue | None:
    """One list item (bullet already removed) as an Issue; None for a "None" item."""
    text = text.strip()
    if not text or _is_none(text):
        return None
    labels = list(_LABEL.finditer(text))
    if not labels:
        location = None
        quote = _QUOTE.search(text)
        if quote is not None:
            location = quote.group(1) or quote.group(2)
        else:
            step = _STEP_REF.search(text)
            location = step.group(0) if step is not None else None
        return Issue(location=location, severity=_severity(text), description=_clean(text))
    fields: dict[str, list[str]] = {}
    prefix = text[: labels[0].start()].strip()
    for index, label in enumerate(labels):
        end = labels[index + 1].start() if index + 1 < len(labels) else len(text)
        name = label.group(1).lower()
        name = name if name in ("location", "severity") else "description"
        fields.setdefault(name, []).append(_clean(text[label.end() : end]))
    location = " ".join(v for v in fields.get("location", []) if v) or None
    if location is not None and _is_none(location):
        location = None
    severity_text = " ".join(fields.get("severity", []))
    description = "\n".join(v for v in fields.get("description", []) if v)
    if not description:
        description = _clean(prefix)
    severity = _severity(severity_text) if severity_text else _severity(text)
    return Issue(location=location, severity=severity, description=description)


def _is_heading(line: str) -> bool:
    s = line.strip()
    if not s or len(s) > _MAX_HEADING_CHARS:
        return False
    return s.startswith("#") or (s.startswith("**") and s.rstrip(":").endswith("**"))


def _heading_text(line: str) -> str:
    return line.strip().lstrip("#").replace("*", "").strip().rstrip(":").strip().lower()


def _is_issues_heading(line: str) -> bool:
    """``### Issues``, ``## 3. List of issues``, ``**Issues found:**``, ``**Findings**`` ...

    The heading text must be about issues as a whole (a ``### 3. Finding the constant``
    heading of a proof is not one), and a bold line must be plural, so that an ``**Issue:**``
    label on its own line inside an item is not taken for a heading.
    """
    if not _is_heading(line) or _ITEM_START.match(line):
        return False
    words = _heading_text(line)
    if len(words) > 40 or _ISSUES_TITLE.fullmatch(words) is None:
        return False
    return line.strip().startswith("#") or "issues" in words or "findings" in words


def _items(lines: list[str]) -> list[str]:
    """Split lines into list items; deeper sub-bullets and wrapped lines are continuations.

    After a blank line, a line that is neither indented past the list nor a bullet closes the
    item before it (a paragraph after the list). Without any bullet, blank-line separated
    blocks are the items.
    """
    items: list[list[str]] = []
    base: int | None = None
    accepting = False
    blank = False
    for line in lines:
        if not line.strip():
            blank = True
            continue
        match = _ITEM_START.match(line)
        indent = len(line) - len(line.lstrip(" \t"))
        if match is not None and (base is None or len(match.group(1)) <= base):
            if base is None:
                base = len(match.group(1))
            items.append([line[match.end() :]])
            accepting = True
        elif accepting and (not blank or match is not None or indent > (base or 0)):
            items[-1].append(line.strip())
        else:
            accepting = False
        blank = False
    if base is not None:
        return ["\n".join(item) for item in items]
    blocks: list[str] = []
    current: list[str] = []
    for line in lines + [""]:
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


def parse_issues(analysis: str) -> list[Issue]:
    """The issues an analysis lists, in order.

    With an ``Issues`` heading (``### Issues``, ``**Issues found:**`` ...), every item of the
    list under the last such heading (up to the next heading) is an issue, labelled or not.
    Without one, every list item of the analysis that carries a ``Location:`` or
    ``Severity:`` label is an issue. Items reading "None" / "No issues found" are skipped.
    Never raises.
    """
    lines = analysis.splitlines()
    heading = None
    for index, line in enumerate(lines):
        if _is_issues_heading(line):
            heading = index
    if heading is not None:
        section: list[str] = []
        for line in lines[heading + 1 :]:
            if line.strip().startswith("#") and _is_heading(line):
                break
            section.append(line)
        candidates = _items(section)
        keep_unlabelled = True
    else:
        candidates = _items(lines)
        keep_unlabelled = False
    issues: list[Issue] = []
    for item in candidates:
        if not keep_unlabelled:
            names = {m.group(1).lower() for m in _LABEL.finditer(item)}
            if not names & {"location", "severity"}:
                continue
        issue = _parse_item(item)
        if issue is not None:
            issues.append(issue)
    return issues


def opening_errors(parts: EvaluationParts, finish_reason: str | None) -> list[str]:
    """What is wrong with a verifier output before its final statement (every verifier
    protocol shares it): a truncated output, a missing evaluation marker."""
    errors = [e for e in (truncation_error(finish_reason),) if e]
    if not parts.has_evaluation_marker:
        errors.append(f"missing evaluation marker {EVALUATION_MARKER!r}")
    return errors


def parse_verification(text: str, finish_reason: str | None = "stop") -> Verification:
    """Parse one verifier output; never raises.

    ``analysis`` is the text between the markers (best effort when one is missing),
    ``issues`` come from :func:`parse_issues` on it, ``score`` is set only when the output
    follows the protocol, its final score statement included (then ``score_source`` is "text"). ``raw`` keeps the whole text.
    """
    body = strip_thinking(text)
    parts = split_evaluation(body)
    errors = opening_errors(parts, finish_reason)
    final = read_final_score(body, SCORE_MARKER_RE)
    if final.marker is None:
        errors.append(f"missing score marker {SCORE_MARKER!r}")
    elif final.error:
        errors.append(final.error)
    text_score = final.score
    format_ok = not errors
    score = text_score if format_ok else None
    return Verification(
        raw=text,
        analysis=parts.analysis,
        score=score,
        score_source="text" if score is not None else None,
        text_score=text_score,
        issues=parse_issues(parts.analysis),
        format_ok=format_ok,
        format_error="; ".join(errors) or None,
        finish_reason=finish_reason,
    )
