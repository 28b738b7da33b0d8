"""The tool interface of the CRITIC loops: a tool runs one fenced code block and reports back.

A model asks for a tool by writing a fenced block in the tool's language (```python ... ```,
later ```lean ... ```). :func:`find_tool_call` finds the first such block in a completion,
closed or cut off by a stop string; the loop runs it with :meth:`Tool.run` and shows the
model :attr:`ToolOutput.text`.

A tool is any object with ``name``, ``language``, ``aliases``, ``description`` and an async
``run(code) -> ToolOutput`` (see :class:`Tool`); ``aclose()`` is optional. Tools are found
by name in :data:`TOOLS` (``get_tool("python")``, ``get_tool("lean")``: the Lean checker of
:mod:`proofcritic.lean_checker`), imported only when asked for. :class:`FunctionTool` turns
any async checking function into a tool.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from ..errors import InputError

__all__ = [
    "TOOLS",
    "FunctionTool",
    "Tool",
    "ToolCallBlock",
    "ToolOutput",
    "clip_text",
    "find_tool_call",
    "get_tool",
    "tool_class",
]


class ToolOutput(BaseModel):
    """What one tool run reports: the text shown to the model, and the details for the record."""

    tool: str
    ok: bool = Field(..., description="The code ran to the end without an error or a limit.")
    text: str = Field(..., description="The rendering shown to the model.")
    stdout: str = ""
    stderr: str = ""
    error: str | None = Field(None, description="'Type: message' of an error the code raised, or why it failed.")
    limit_hit: str | None = Field(None, description="timeout, cpu, memory, output or processes.")
    duration: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict, description="Tool-specific record (e.g. the sandbox result).")


@runtime_checkable
class Tool(Protocol):
    """A checker the model can call with a fenced block in ``language`` (or one of ``aliases``)."""

    name: str
    language: str
    aliases: tuple[str, ...]
    description: str

    async def run(self, code: str) -> ToolOutput: ...


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: the head and the tail, with a note between."""
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut} characters cut] ...\n{text[-tail:]}"


class FunctionTool:
    """A tool made of an async function ``fn(code) -> result`` and ``render(result) -> ToolOutput``."""

    def __init__(
        self,
        name: str,
        language: str,
        fn: Callable[[str], Awaitable[Any]],
        render: Callable[[Any], ToolOutput],
        *,
        aliases: Sequence[str] = (),
        description: str = "",
    ):
        self.name, self.language = name, language
        self.aliases = tuple(aliases)
        self.description = description
        self._fn, self._render = fn, render

    async def run(self, code: str) -> ToolOutput:
        return self._render(await self._fn(code))

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r}, language={self.language!r})"


#: tool name -> "module:class"; the class is built with keyword options (``get_tool``)
TOOLS: dict[str, str] = {
    "python": "proofcritic.tools._python:PythonTool",
    "lean": "proofcritic.tools._lean:LeanTool",
}


def tool_class(name: str) -> type:
    """The class of tool ``name``; an unknown or unavailable tool is an InputError."""
    target = TOOLS.get(name)
    if target is None:
        raise InputError(f"unknown tool {name!r}; choose from {', '.join(TOOLS)}")
    module_name, _, class_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise InputError(f"tool {name!r} is not available in this installation ({target} is missing)") from None


def get_tool(name: str, **options: Any) -> Tool:
    """The tool ``name`` built with ``options`` (see :func:`tool_class`)."""
    return tool_class(name)(**options)


# --------------------------------------------------------------------------- finding calls

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+.-]*)[^\n`]*$", re.MULTILINE)


@dataclass(frozen=True)
class ToolCallBlock:
    """A fenced block addressed to a tool. ``end`` is the index just after its closing fence
    (the end of the text when the block was cut off, ``closed`` False)."""

    language: str
    code: str
    start: int
    end: int
    closed: bool

    def as_written(self, text: str) -> str:
        """The completion up to and including this block, its closing fence restored."""
        head = text[: self.end].rstrip()
        return head if self.closed else f"{head}\n```"


def find_tool_call(text: str, languages: Iterable[str]) -> ToolCallBlock | None:
    """The first fenced block of ``text`` in one of ``languages`` (case-insensitive).

    Fences pair up in order (``` or ~~~, three or more, the closing one at least as long);
    blocks in other languages are skipped whole, so code quoted inside them is not a call.
    A tool block that is never closed counts as cut off by a stop string, and runs to the end
    of the text.
    """
    wanted = {lang.lower() for lang in languages}
    position = 0
    while True:
        opening = _FENCE.search(text, position)
        if opening is None:
            return None
        fence, language = opening.group(1), opening.group(2).lower()
        body_start = opening.end() + 1 if opening.end() < len(text) else opening.end()
        closing = None
        for candidate in _FENCE.finditer(text, body_start):
            if candidate.group(1)[0] == fence[0] and len(candidate.group(1)) >= len(fence) and not candidate.group(2):
                closing = candidate
                break
        if language in wanted:
            if closing is None:
                return ToolCallBlock(language, text[body_start:], opening.start(), len(text), False)
            code = text[body_start : closing.start()]
            return ToolCallBlock(language, code, opening.start(), closing.end(), True)
        if closing is None:
            return None
        position = closing.end()
