"""Pure text functions for the output protocol of the roles (SPEC section 1).

Everything here is total: any string goes in, nothing raises, and the cost is linear in the
length of the input (no regular expression here can backtrack catastrophically; long inputs
of 1 MB are parsed in well under a second).

The rules, from the released DeepSeekMath-V2 inference code:

- only the text after the LAST ``</think>`` counts when the model thinks first;
- bold headers such as ``**Solution**`` / ``**Self Evaluation**`` count as ``##`` headers;
- a score outside {0, 0.5, 1} is a format failure.

**The verdict is the role's own final statement.** A *score statement* is a score marker
(``Based on my evaluation, the final overall score should be:`` for the verifier and the
generator's self-evaluation, ``Based on my analysis, I will rate the "solution evaluation"
as:`` for the meta-verifier) directly followed by ``\\boxed{...}``: only whitespace, markdown
emphasis (``*``, ``_``), inline code marks and math delimiters (``$``, ``\\[``, ``\\(``) may
stand between them. The verdict is the score statement that ends the output: after its box
only whitespace, closing markup (``**``, ``$``, ``\\]`` ...), a final period and end-of-turn
tokens (``<|im_end|>``, ``<\uff5cend\u2581of\u2581sentence\uff5c>``, ``</s>`` ...) may follow
(so the score is still the last box of the output, as in the released code). Every score
statement must end the output, so an output that has anything with content
after a score statement (more text, another marker, another box) is a format failure, and
so is one whose last marker is not directly followed by a box. This is what keeps a proof
from forging its verdict: a verifier that quotes the proof's own "... should be:
\\boxed{1}" after its real ``\\boxed{0}`` is not read as 1; the output fails. The agent
judge's verdict (``\\boxed{yes}`` / ``\\boxed{no}``, no marker) follows the same rule: the
last box must end the output, and no other box may hold a yes/no verdict.

The other half of the defence is in the prompts: :func:`neutralize_markers` rewrites every
box in a text a prompt embeds (a proof, an analysis, a log) that a parser could read as a
verdict, ``\\boxed{1}`` -> ``[boxed: 1]``, so that a model that quotes the text verbatim
cannot reproduce a valid score statement. :class:`~proofcritic.promptset.PromptSet` applies
it to every value a template embeds; the texts stored in results are never changed.

The marker helpers accept case, whitespace and markdown-bold variations of the markers, and
the "overal" misspelling of the released prompts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, NamedTuple

THINK_END = "</think>"
EVALUATION_MARKER = "Here is my evaluation of the solution:"
SCORE_MARKER = "Based on my evaluation, the final overall score should be:"
META_SCORE_MARKER = 'Based on my analysis, I will rate the "solution evaluation" as:'
SOLUTION_HEADER = "## Solution"
SELF_EVALUATION_HEADER = "## Self Evaluation"

HeaderKind = Literal["solution", "self_evaluation"]

# --------------------------------------------------------------------------- thinking


def strip_thinking(text: str) -> str:
    """Return the text after the last ``</think>``; the whole text when there is none."""
    index = text.rfind(THINK_END)
    return text if index < 0 else text[index + len(THINK_END) :]


# --------------------------------------------------------------------------- headers

_MAX_HEADER_CHARS = 80
_HEADER_WORDS = re.compile(r"(solution|self[\s_-]*evaluation)", re.IGNORECASE)


def header_kind(line: str) -> HeaderKind | None:
    """Classify one line as a ``Solution`` / ``Self Evaluation`` header, or ``None``.

    A header is a markdown heading (``#`` .. ``######``) or a line that is bold as a whole
    (``**Solution**``, ``**Solution:**``, ``__Self Evaluation__``), whose text is exactly
    "Solution" or "Self Evaluation" ("Self-Evaluation", any case), optionally followed by
    ``:`` or ``.``. A plain, unmarked "Solution" line is not a header.
    """
    s = line.strip()
    if not s or len(s) > _MAX_HEADER_CHARS:
        return None
    if not s.startswith(("#", "**", "__")):
        return None
    s = s.lstrip("#")
    core = s.replace("*", "").replace("__", "").strip().rstrip(":.").strip()
    match = _HEADER_WORDS.fullmatch(core)
    if match is None:
        return None
    return "solution" if match.group(1).lower().startswith("solution") else "self_evaluation"


def find_headers(text: str) -> list[tuple[HeaderKind, int, int]]:
    """All ``Solution`` / ``Self Evaluation`` header lines as ``(kind, line_start, line_end)``.

    ``line_end`` is the offset just after the line (its newline included).
    """
    found: list[tuple[HeaderKind, int, int]] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        end = offset + len(line)
        lowered = line.lower() if len(line) <= _MAX_HEADER_CHARS + 2 else ""
        if "solution" in lowered or "evaluation" in lowered:
            kind = header_kind(line)
            if kind is not None:
                found.append((kind, offset, end))
        offset = end
    return found


def normalize_headers(text: str) -> str:
    """Rewrite every Solution / Self Evaluation header line as ``## Solution`` / ``## Self Evaluation``.

    Line endings are kept; all other lines are returned unchanged.
    """
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        kind = header_kind(line) if len(line) <= _MAX_HEADER_CHARS + 2 else None
        if kind is None:
            pieces.append(line)
            continue
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        pieces.append((SOLUTION_HEADER if kind == "solution" else SELF_EVALUATION_HEADER) + ending)
    return "".join(pieces)


# --------------------------------------------------------------------------- boxes

_BOX_OPEN = re.compile(r"\\boxed\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)


def _boxes(text: str) -> dict[int, tuple[int, int]]:
    """Every complete box, keyed by the offset of its ``\\boxed``: ``(content start, content end)``.

    Braces are matched the TeX way: an escaped brace (``\\{``, ``\\}``) does not count. A box
    whose brace never closes is left out. One pass over the text: linear time. The dict keeps
    text order.
    """
    opens = {m.end() - 1: m.start() for m in _BOX_OPEN.finditer(text)}
    if not opens:
        return {}
    closes: dict[int, int] = {}
    stack: list[int] = []
    for token in _BRACE_TOKEN.finditer(text, min(opens)):
        char = token.group()
        if char == "{":
            stack.append(token.start())
        elif char == "}" and stack:
            start = stack.pop()
            if start in opens:
                closes[start] = token.start()
    return {box: (brace + 1, closes[brace]) for brace, box in opens.items() if brace in closes}


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the content of every complete ``\\boxed{...}``, in text order.

    Braces are matched the TeX way: an escaped brace (``\\{``, ``\\}``) does not count. A box
    whose brace never closes is left out. One pass over the text: linear time.
    """
    return list(_boxes(text).values())


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (by position of its opening), or ``None``.

    ``\\boxed {1}`` (spaces) and nested braces (``\\boxed{\\frac{1}{2}}``) are handled; an
    unbalanced trailing box is ignored in favour of the last complete one.
    """
    spans = boxed_spans(text)
    if not spans:
        return None
    start, end = spans[-1]
    return text[start:end]


# --------------------------------------------------------------------------- scores

_SPACING = re.compile(r"\\[,;:! ]|\\(?:displaystyle|textstyle)(?![a-zA-Z])|[\s$~]")
_WRAPPER = re.compile(r"\\(?:text|textbf|mathbf|mathrm|textrm|bf|boxed)\{([^{}]*)\}")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(rf"([+-]?){_NUMBER}")
_SLASH = re.compile(rf"({_NUMBER})/({_NUMBER})")
_FRAC = re.compile(rf"\\[dt]?frac(?:\{{({_NUMBER})\}}|(\d))(?:\{{({_NUMBER})\}}|(\d))")
_MAX_SCORE_CHARS = 200


def _ratio(numerator: str, denominator: str) -> float | None:
    den = float(denominator)
    return None if den == 0 else float(numerator) / den


def score_from_box(content: str | None) -> float | None:
    """Read the content of a box as a number; ``None`` when it is not one.

    Accepts ``1``, ``0``, ``0.5``, ``.5``, ``1.0``, ``1/2``, ``\\frac{1}{2}``, ``\\dfrac12``,
    ``\\tfrac12``, with spaces, ``$`` and TeX spacing removed and a ``\\text{...}`` wrapper
    unwrapped. A trailing period is ignored.
    """
    if content is None or len(content) > _MAX_SCORE_CHARS:
        return None
    s = _SPACING.sub("", content)
    for _ in range(3):
        unwrapped = _WRAPPER.fullmatch(s)
        if unwrapped is None:
            break
        s = unwrapped.group(1).strip()
    if s.endswith(".") and _PLAIN.fullmatch(s[:-1]):
        s = s[:-1]
    if _PLAIN.fullmatch(s):
        return float(s) + 0.0  # + 0.0 turns -0.0 into 0.0
    if m := _SLASH.fullmatch(s):
        return _ratio(m.group(1), m.group(2))
    if m := _FRAC.fullmatch(s):
        return _ratio(m.group(1) or m.group(2), m.group(3) or m.group(4))
    return None


def format_score(value: float | None) -> str:
    """``1``, ``0.5``, ``0`` (no trailing ``.0``); ``none`` for ``None``."""
    return "none" if value is None else f"{value:g}"


def read_score(text: str, allowed: Iterable[float] = (0, 0.5, 1)) -> tuple[float | None, str | None]:
    """Read the last box of ``text`` as a score: ``(score, None)`` or ``(None, error message)``."""
    content = last_boxed(text)
    if content is None:
        return None, "no \\boxed{} score found"
    return _score_of(content, allowed)


def _score_of(content: str, allowed: Iterable[float]) -> tuple[float | None, str | None]:
    """Read the content of a box as one of the ``allowed`` scores, or say why it is not one."""
    allowed = tuple(allowed)
    value = score_from_box(content)
    if value is None:
        shown = content if len(content) <= 40 else content[:37] + "..."
        return None, f"boxed content {shown!r} is not a number"
    for candidate in allowed:
        if abs(value - float(candidate)) < 1e-9:
            return float(candidate), None
    choices = ", ".join(format_score(float(a)) for a in allowed)
    return None, f"score {format_score(value)} is not one of {choices}"


# --------------------------------------------------------------------------- markers


def _marker_pattern(*words: str) -> re.Pattern[str]:
    """A lenient pattern for a marker: words separated by any whitespace/bold, optional colon.

    A leading ``#`` heading mark or opening bold is part of the match, so that it does not
    stay behind at the end of the analysis.

    Each word is a regex fragment; between words any run of whitespace, ``*`` or ``_`` is
    allowed; after the last word an optional ``:`` and closing bold markers. The separators
    are always anchored by literal words, so matching is linear.
    """
    first = words[0][:1]
    if not first.isalpha():
        raise ValueError(f"a marker's first word must start with a letter, not {words[0]!r}")
    # the lookahead names every character a match can start with, so that the scan skips the
    # other positions at C speed (three times faster on verifier outputs; same matches)
    head = rf"(?=[#*_{first.lower()}{first.upper()}])(?:#{{1,6}}[ \t]+)?(?:(?:\*\*|__)[ \t]*)?"
    body = head + r"[\s*_]+".join(words)
    tail = r"(?:[ \t]*(?:\*\*|__))?[ \t]*:?(?:[ \t]*(?:\*\*|__))?"
    return re.compile(body + tail, re.IGNORECASE)


marker_pattern = _marker_pattern  # (the public name, for roles with markers of their own)

EVALUATION_MARKER_RE = _marker_pattern("here", "is", "my", "evaluation", "of", "the", "solution")
SCORE_MARKER_RE = _marker_pattern(
    "based", "on", "my", "evaluation,?", "the", "final", "overall?", "score", "should", "be"
)
#: the final statement of a points grade (``--scale points``): ``\\boxed{N}``, N whole points
POINTS_MARKER = "Based on my evaluation, the final number of points should be:"
POINTS_MARKER_RE = _marker_pattern(
    "based", "on", "my", "evaluation,?", "the", "final", "number", "of", "points", "should", "be"
)
#: the final statement of a step verification (issue #18): ``\\boxed{k}`` (the first wrong step) or ``\\boxed{none}``
FIRST_ERROR_MARKER = "Based on my evaluation, the first wrong step is:"
FIRST_ERROR_MARKER_RE = _marker_pattern("based", "on", "my", "evaluation,?", "the", "first", "wrong", "step", "is")
META_SCORE_MARKER_RE = _marker_pattern(
    "based",
    "on",
    "my",
    "analysis,?",
    "i",
    "will",
    "rate",
    "the",
    "[\"'\u201c\u2018]?solution",
    "evaluation[\"'\u201d\u2019]?",
    "as",
)


def find_first(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first match of ``pattern`` in ``text``."""
    return pattern.search(text)


def find_last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last (non-overlapping) match of ``pattern`` in ``text``."""
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - the final binding is the point
        pass
    return last


class EvaluationParts(NamedTuple):
    """A verifier-style evaluation cut at its markers."""

    analysis: str
    """Text after the first evaluation marker (or from the start) up to the last score marker
    (or the end), stripped."""
    has_evaluation_marker: bool
    has_score_marker: bool
    score_part: str | None
    """Text after the last score marker; ``None`` when the score marker is missing."""


def split_evaluation(text: str) -> EvaluationParts:
    """Cut a verifier-style evaluation at ``Here is my evaluation of the solution:`` and
    ``Based on my evaluation, the final overall score should be:``."""
    score_marker = find_last(SCORE_MARKER_RE, text)
    head = text if score_marker is None else text[: score_marker.start()]
    evaluation_marker = find_first(EVALUATION_MARKER_RE, head)
    analysis = head if evaluation_marker is None else head[evaluation_marker.end() :]
    return EvaluationParts(
        analysis=analysis.strip(),
        has_evaluation_marker=evaluation_marker is not None,
        has_score_marker=score_marker is not None,
        score_part=None if score_marker is None else text[score_marker.end() :],
    )


def split_meta_evaluation(text: str) -> tuple[str, str | None]:
    """``(analysis, score_part)`` around the last meta-verifier marker; ``score_part`` is
    ``None`` (and the analysis the whole text) when the marker is missing."""
    marker = find_last(META_SCORE_MARKER_RE, text)
    if marker is None:
        return text.strip(), None
    return text[: marker.start()].strip(), text[marker.end() :]


# --------------------------------------------------------------------------- final statements

#: what may stand between a score marker and its box: whitespace, emphasis, inline code, math
_STATEMENT_LEAD = re.compile(r"(?:[\s*_$`]|\\\[|\\\()*")
#: what may follow the verdict: whitespace, closing markup, a period, end-of-turn tokens
_TRAILER = re.compile(
    r"(?:[\s*_$`.]|\\\]|\\\)|<\|[^|<>\n]{1,40}\|>|<\uff5c[^\uff5c<>\n]{1,40}\uff5c>"
    r"|</s>|<eos>|<end_of_turn>|</think>)*"
)
_MAX_SHOWN = 40


def _trailing_error(text: str, position: int) -> str | None:
    """``None`` when nothing with content follows ``position`` (see the module docstring),
    else the format error that says what follows."""
    end = _TRAILER.match(text, position).end()  # type: ignore[union-attr]  # it matches the empty string
    if end == len(text):
        return None
    rest = text[end:].strip()
    shown = rest if len(rest) <= _MAX_SHOWN else rest[: _MAX_SHOWN - 3] + "..."
    return f"the verdict \\boxed{{}} is not the end of the output ({shown!r} follows it)"


def _box_after(text: str, position: int, boxes: dict[int, tuple[int, int]]) -> int | None:
    """The offset of the complete box that directly follows ``position`` (a marker's end)."""
    start = _STATEMENT_LEAD.match(text, position).end()  # type: ignore[union-attr]
    return start if start in boxes else None


class FinalScore(NamedTuple):
    """The verdict of an output read by the final-statement rule (:func:`read_final_score`)."""

    marker: re.Match[str] | None
    """The last score marker; ``None`` when the output has none."""
    score: float | None
    """The score of the final statement; ``None`` unless the output follows the rule."""
    error: str | None
    """Why there is no score (``None`` when there is one, or when the marker is missing)."""


def read_final_score(text: str, marker: re.Pattern[str], allowed: Iterable[float] = (0, 0.5, 1)) -> FinalScore:
    """Read the verdict of ``text`` by the final-statement rule of the module docstring.

    The verdict is the box directly after the last match of ``marker``, and every score
    statement (a match of ``marker`` directly followed by a box) must end the text. When the
    marker is missing, ``marker`` and ``error`` are both ``None``: the caller names the
    marker it wanted. Linear time: the markers, the boxes and what follows them are each
    scanned once.
    """
    boxes = _boxes(text)
    last = None
    error = None
    for last in marker.finditer(text):  # every statement is checked, the last one kept
        box = _box_after(text, last.end(), boxes)
        if box is not None and error is None:
            error = _trailing_error(text, boxes[box][1] + 1)
    if last is None:
        return FinalScore(None, None, None)
    if error is not None:
        return FinalScore(last, None, error)
    box = _box_after(text, last.end(), boxes)
    if box is None:
        return FinalScore(last, None, "no \\boxed{} score directly after the score marker")
    start, end = boxes[box]
    score, error = _score_of(text[start:end], allowed)
    return FinalScore(last, score, error)


class FinalBox(NamedTuple):
    """The box of an output's final statement, as text (:func:`read_final_box`)."""

    marker: re.Match[str] | None
    """The last marker; ``None`` when the output has none."""
    content: str | None
    """The content of the final statement's box; ``None`` unless the output follows the rule."""
    error: str | None
    """Why there is no content (``None`` when there is one, or when the marker is missing)."""


def read_final_box(text: str, marker: re.Pattern[str]) -> FinalBox:
    """:func:`read_final_score`'s rule for a box that is not a score (a step number, ``none``):
    the box directly after the last ``marker``, every such statement ending the text."""
    boxes = _boxes(text)
    last = None
    error = None
    for last in marker.finditer(text):
        box = _box_after(text, last.end(), boxes)
        if box is not None and error is None:
            error = _trailing_error(text, boxes[box][1] + 1)
    if last is None or error is not None:
        return FinalBox(last, None, error)
    box = _box_after(text, last.end(), boxes)
    if box is None:
        return FinalBox(last, None, "no \\boxed{} directly after the marker")
    start, end = boxes[box]
    return FinalBox(last, text[start:end], None)


_YES = frozenset({"yes", "pass", "passes", "passed", "accept", "accepted"})
_NO = frozenset({"no", "fail", "fails", "failed", "reject", "rejected"})
_VERDICT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textsf|texttt)\s*\{([^{}]*)\}")


def verdict_from_box(content: str | None) -> Literal["pass", "fail"] | None:
    """A judge's box: ``yes``/``pass`` -> "pass", ``no``/``fail`` -> "fail" (any case,
    ``\\text{}``, ``$``, a trailing period); anything else -> ``None``."""
    if content is None or len(content) > _MAX_SHOWN:
        return None
    word = _VERDICT_WRAPPER.sub(r"\1", content).replace("$", "").replace("*", "").strip().strip(".!").strip().lower()
    return "pass" if word in _YES else "fail" if word in _NO else None


def read_final_verdict(text: str) -> tuple[Literal["pass", "fail"] | None, str | None]:
    """The agent judge's verdict: ``(verdict, None)`` or ``(None, error)``.

    The verdict is the last box (by its opening); it must hold yes or no and end the text,
    and no other box may hold a yes/no verdict (every verdict box must end the text).
    """
    boxes = _boxes(text)
    if not boxes:
        return None, "no \\boxed{yes} or \\boxed{no} found"
    for start, end in boxes.values():
        if verdict_from_box(text[start:end]) is not None:
            error = _trailing_error(text, end + 1)
            if error is not None:
                return None, error
    start, end = list(boxes.values())[-1]
    content = text[start:end]
    verdict = verdict_from_box(content)
    if verdict is None:
        return None, f"boxed content {content[:_MAX_SHOWN]!r} is not yes or no"
    return verdict, _trailing_error(text, end + 1)


def neutralize_markers(text: str) -> str:
    """``text`` with every box a parser could read as a verdict written as ``[boxed: ...]``.

    For texts a prompt embeds (proofs, analyses, logs): a box directly after a score marker
    or a meta-verifier marker (a score statement), and a box that holds a yes/no verdict,
    become ``[boxed: <content>]``; everything else is kept byte for byte. A model that quotes
    the result verbatim therefore writes no valid score statement. Linear time; applying it
    twice changes nothing more.
    """
    if "boxed" not in text:
        return text
    boxes = _boxes(text)
    if not boxes:
        return text
    chosen: set[int] = set()
    for pattern in (SCORE_MARKER_RE, META_SCORE_MARKER_RE, POINTS_MARKER_RE, FIRST_ERROR_MARKER_RE):
        for match in pattern.finditer(text):
            box = _box_after(text, match.end(), boxes)
            if box is not None:
                chosen.add(box)
    chosen.update(box for box, (start, end) in boxes.items() if verdict_from_box(text[start:end]) is not None)
    if not chosen:
        return text
    edits = sorted(
        [(box, boxes[box][0], "[boxed: ") for box in chosen]
        + [(boxes[box][1], boxes[box][1] + 1, "]") for box in chosen]
    )
    pieces: list[str] = []
    position = 0
    for start, end, replacement in edits:
        pieces.append(text[position:start])
        pieces.append(replacement)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def truncation_error(finish_reason: str | None) -> str | None:
    """The format error of an output that did not stop naturally, else ``None``.

    ``"stop"`` is a natural end; ``None`` means the backend did not say, and is accepted.
    Anything else (``"length"``, ``"content_filter"`` ...) makes the output invalid.
    """
    if finish_reason is None or finish_reason == "stop":
        return None
    return f"output truncated (finish_reason={finish_reason})"


# --------------------------------------------------------------------------- quotes in a text

#: a located quote must have at least this many characters once normalised (shorter ones,
#: "Step 3" or "the end", would land anywhere)
MIN_QUOTE_CHARS = 12
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|\u2026|\[\.\.\.\])\s*")
_QUOTE_EDGES = " \t\n\"'`\u201c\u201d\u2018\u2019"


def _normalized(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased, math delimiters (``$``, ``\\(``, ``\\)``, ``\\[``, ``\\]``) and
    markdown emphasis (``*``, ``_`` runs, backticks) dropped, whitespace runs as one space; and
    for each kept character its index in ``text``."""
    out: list[str] = []
    index: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "()[]":
            i += 2
            continue
        if c in "$*`":
            i += 1
            continue
        if c.isspace():
            if out and out[-1] != " ":
                out.append(" ")
                index.append(i)
            i += 1
            continue
        out.append(c.lower())
        index.append(i)
        i += 1
    return "".join(out), index


def locate_quote(quote: str | None, text: str) -> tuple[int, int] | None:
    """Where ``quote`` stands in ``text``: ``(start, end)`` character offsets, or None.

    The quote is found as written, else ignoring case, whitespace, math delimiters (``$...$``
    against ``\\(...\\)``) and emphasis marks; a quote elided with ``...`` spans from its
    first part to its last (found in that order). Surrounding quotation marks are ignored, and
    a quote shorter than :data:`MIN_QUOTE_CHARS` once normalised is not located (it would match
    by chance). The first occurrence wins."""
    if not quote:
        return None
    quote = quote.strip(_QUOTE_EDGES)
    exact = text.find(quote) if len(quote) >= MIN_QUOTE_CHARS else -1
    if exact >= 0:
        return exact, exact + len(quote)
    parts = [p for p in (_normalized(piece)[0].strip() for piece in _ELLIPSIS.split(quote)) if p]
    if not parts or sum(len(p) for p in parts) < MIN_QUOTE_CHARS:
        return None
    haystack, where = _normalized(text)
    start = haystack.find(parts[0])
    if start < 0:
        return None
    end = start + len(parts[0])
    for part in parts[1:]:
        found = haystack.find(part, end)
        if found < 0:
            return None
        end = found + len(part)
    return where[start], where[end - 1] + 1
