"""Steps of a proof or solution (issue #18): the splitter and the typed step record.

A step is a span of the original text: ``text[step.start:step.end] == step.text``, always. The
splitter never rewrites the text; it only chooses where steps begin and end. What it leaves out
between steps is whitespace and separator lines (``-----``, ``=====``, ``***``).

Modes (``split_steps(text, mode=...)``):

- ``paragraphs`` (default): a blank line or a separator line ends a step, and (with ``items``) a
  line that starts a numbered or bulleted item (``1.``, ``2)``, ``(a)``, ``(iii)``, ``Step 3``,
  ``Case 2``, ``- ``, ``* ``, a Markdown heading) starts one;
- ``lines``: every line is a step (display equations and code blocks stay whole; no heading
  is joined to the line after it);
- ``blank``: only blank lines (and separator lines) split, as ProcessBench's steps are written.

In every mode a display equation (``\\[...\\]``, ``$$...$$``, ``\\begin{align}...`` and the like)
or a code block is never cut, and with ``displays`` (default) a block that is only a display
equation, or that begins with one, is kept with the sentence before it, as is a block starting
in lower case right after a display (``where ...``, ``so ...``). With ``headings`` (default) a
one-line heading (``Lemma 2``, ``**Case 1: n even**``, ``1. Existence``: a line of at most 100
characters that ends without punctuation or inline math, or a Markdown heading) is kept with the
step that follows it.

Stable under whitespace changes: the steps' texts, whitespace collapsed, do not change when
spaces or tabs are added or removed within lines, lines are indented, line ends become ``\\r\\n``,
trailing spaces are added, or blank lines are added where there already is one; the decisions
depend only on which lines are blank and on the non-space characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._constants import DEFAULT_STEP_MODE, STEP_MODES, StepMode  # (the command line's help reads them there)


class Step(BaseModel):
    """One step of a text: its place in the list and its span of the text."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(..., ge=0, description="Position among the text's steps, from 0 (shown as step index + 1).")
    text: str = Field(..., description="The step: the original text[start:end], unchanged.")
    start: int = Field(..., ge=0, description="Offset of the step's first character in the original text.")
    end: int = Field(..., ge=0, description="Offset just past the step's last character.")

    @model_validator(mode="after")
    def _span(self) -> Step:
        if self.end - self.start != len(self.text):
            raise ValueError(f"step {self.index}: end - start must be the length of its text")
        return self

    @property
    def number(self) -> int:
        """The step's number as a prompt or a report shows it (index + 1)."""
        return self.index + 1


# display math and code blocks: never cut; matched on the raw text (DOTALL, non-greedy)
_DISPLAY = re.compile(
    r"\\\[.*?\\\]"
    r"|\$\$.*?\$\$"
    r"|\\begin\{(equation|align|alignat|gather|multline|eqnarray|displaymath|flalign|cases|array)(\*?)\}.*?\\end\{\1\2\}",
    re.DOTALL,
)
_CODE = re.compile(r"^[ \t]*```.*?^[ \t]*```[^\n]*$", re.DOTALL | re.MULTILINE)
_SEPARATOR = re.compile(r"^\s*(?:([-=_*~])\s*){3,}$")
_ITEM = re.compile(
    r"^\s*(?:"
    r"\d{1,3}[.)](?:\s|$)"  # 1.  2)
    r"|\(\d{1,3}\)\s"  # (1)
    r"|\((?:[a-z]|[ivx]{1,5})\)\s"  # (a)  (iii)
    r"|[a-h][.)]\s"  # a)  b.
    r"|(?:\*\*|__)?(?:step|case|claim|lemma|part|stage)\s+[\w.]+\s*[:.)*_]"  # Step 3:  **Case 2.**
    r"|[-*+•]\s"  # bullets
    r"|#{1,6}\s"  # Markdown headings
    r")",
    re.IGNORECASE,
)
_HEADING_MAX = 100  # characters (whitespace collapsed) a one-line heading may have
_SENTENCE_END = ".!?;,"


def _protected(text: str) -> list[tuple[int, int]]:
    """Spans of display math and code blocks, in order, not overlapping."""
    spans = sorted(_trim(text, m.start(), m.end()) for pattern in (_CODE, _DISPLAY) for m in pattern.finditer(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _lines(text: str) -> Iterable[tuple[int, int]]:
    """(start, end) of each line, without its newline."""
    start = 0
    for match in re.finditer(r"\n", text):
        yield start, match.start()
        start = match.end()
    yield start, len(text)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class _Block:
    __slots__ = ("after_separator", "end", "lines", "start")

    def __init__(self, start: int, end: int, after_separator: bool) -> None:
        self.start, self.end, self.lines = start, end, 1
        self.after_separator = after_separator  # a separator line stands between it and the block before


def _blocks(text: str, mode: StepMode, items: bool, protected: list[tuple[int, int]]) -> list[_Block]:
    """The raw blocks: spans of non-blank lines, cut where the mode says, never inside a protected span."""
    blocks: list[_Block] = []
    current: _Block | None = None
    separator = False
    p = 0  # first protected span that may hold the line
    for start, end in _lines(text):
        while p < len(protected) and protected[p][1] <= start:
            p += 1
        inside = p < len(protected) and protected[p][0] < start  # the line continues a protected span
        line = text[start:end]
        if not inside and (not line.strip() or _SEPARATOR.match(line)):
            current = None
            separator = separator or bool(line.strip())
            continue
        if inside and not line.strip():
            continue
        cut = not inside and (mode == "lines" or (mode == "paragraphs" and items and _ITEM.match(line) is not None))
        if current is None or cut:
            current = _Block(start, end, separator)
            blocks.append(current)
            separator = False
        else:
            current.end = end
            current.lines += 1
    return blocks


def _only_display(text: str, start: int, end: int, protected: list[tuple[int, int]]) -> bool:
    """The span is display math / code and punctuation only."""
    rest, position = [], start
    for s, e in protected:
        if e <= start or s >= end:
            continue
        rest.append(text[position:s])
        position = e
    if position == start:
        return False
    rest.append(text[position:end])
    return not "".join(rest).strip(" \t\r\n.,;:")


def _starts_display(text: str, start: int, protected: list[tuple[int, int]]) -> bool:
    return any(s == start for s, _ in protected)


def _ends_display(text: str, end: int, protected: list[tuple[int, int]]) -> bool:
    tail = end
    while tail > 0 and text[tail - 1] in " \t\r\n.,;:":
        tail -= 1
    return any(e == tail for _, e in protected)


def _is_heading(text: str, block: _Block, protected: list[tuple[int, int]]) -> bool:
    if block.lines != 1 or any(s < block.end and e > block.start for s, e in protected):
        return False
    words = " ".join(text[block.start : block.end].split())
    if words.startswith("#"):
        return True
    if len(words) > _HEADING_MAX:
        return False
    bare = words.strip("*_ ")
    # a line ending in inline math ("Then $x = 5$") is a sentence without its period, not a heading
    return bool(bare) and bare[-1] not in _SENTENCE_END and not bare.endswith(("$", "\\)", "\\]"))


def _short_items(text: str, block: _Block, following: _Block, protected: list[tuple[int, int]]) -> bool:
    """Two one-line items in a row (``1. x = 2`` then ``2. y = 3``): a list, not a heading and its step."""
    return bool(
        _ITEM.match(text[block.start : block.end])
        and _ITEM.match(text[following.start : following.end])
        and _is_heading(text, following, protected)
    )


def split_steps(
    text: str,
    mode: StepMode = DEFAULT_STEP_MODE,
    *,
    items: bool = True,
    displays: bool = True,
    headings: bool = True,
) -> list[Step]:
    """The steps of ``text`` (see the module's docstring for the modes and options); ``[]`` for a
    text with nothing but whitespace and separators."""
    if mode not in STEP_MODES:
        raise ValueError(f"step mode must be one of {', '.join(STEP_MODES)}, not {mode!r}")
    protected = _protected(text)
    blocks = _blocks(text, mode, items, protected)
    for block in blocks:
        block.start, block.end = _trim(text, block.start, block.end)
    blocks = [b for b in blocks if b.end > b.start]
    if displays:
        joined: list[_Block] = []
        for block in blocks:
            if (
                joined
                and not block.after_separator
                and (
                    _only_display(text, block.start, block.end, protected)
                    or _starts_display(text, block.start, protected)
                    or (text[block.start].islower() and _ends_display(text, joined[-1].end, protected))
                )
            ):
                joined[-1].end = block.end
                joined[-1].lines += block.lines
            else:
                joined.append(block)
        blocks = joined
    if headings and mode != "lines":
        joined = []
        pending: _Block | None = None
        for position, block in enumerate(blocks):
            if pending is not None:
                block.start, block.lines = pending.start, block.lines + pending.lines
                pending = None
            following = blocks[position + 1] if position + 1 < len(blocks) else None
            previous = blocks[position - 1] if position else None
            if (
                following is not None
                and _is_heading(text, block, protected)
                and not _short_items(text, block, following, protected)
                and not (previous is not None and _short_items(text, previous, block, protected))
            ):
                pending = block
            else:
                joined.append(block)
        blocks = joined
    return [Step(index=i, text=text[b.start : b.end], start=b.start, end=b.end) for i, b in enumerate(blocks)]


def join_steps(texts: Sequence[str], separator: str = "\n\n") -> tuple[str, list[Step]]:
    """A text made of given steps (a ProcessBench row's ``steps``) and those steps, with their
    offsets in it; each step is kept as given, stripped of surrounding whitespace."""
    parts: list[str] = []
    steps: list[Step] = []
    position = 0
    for step_text in texts:
        stripped = step_text.strip()
        if parts:
            parts.append(separator)
            position += len(separator)
        steps.append(Step(index=len(steps), text=stripped, start=position, end=position + len(stripped)))
        parts.append(stripped)
        position += len(stripped)
    return "".join(parts), steps


def number_steps(steps: Sequence[Step]) -> str:
    """The steps as a prompt shows them: a ``[Step k]`` line (k = index + 1) before each step's text."""
    return "\n\n".join(f"[Step {step.number}]\n{step.text}" for step in steps)


def mark_steps(text: str, steps: Sequence[Step], marks: Sequence[str]) -> str:
    """``text`` with ``marks[i]`` written just before step i (where a mark is not empty); the
    text itself is kept as it is, so a report shows the verdicts in the proof as written."""
    pieces: list[str] = []
    position = 0
    for step, mark in zip(steps, marks, strict=True):
        if mark:
            pieces += [text[position : step.start], mark]
            position = step.start
    pieces.append(text[position:])
    return "".join(pieces)


def normalized(text: str) -> str:
    """``text`` with its whitespace collapsed: what stays the same when steps move under whitespace changes."""
    return " ".join(text.split())


__all__ = [
    "DEFAULT_STEP_MODE",
    "STEP_MODES",
    "Step",
    "StepMode",
    "join_steps",
    "mark_steps",
    "normalized",
    "number_steps",
    "split_steps",
]
