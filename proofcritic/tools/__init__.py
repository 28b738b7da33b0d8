"""Tools for CRITIC-style checks: sandboxed Python (SymPy + stdlib), and the tool interface
(:class:`Tool`, :func:`get_tool`) through which the CRITIC loops call a checker."""

from ._python import PythonTool, render_sandbox_result
from ._sandbox import (
    DEFAULT_PRELOAD,
    LimitHit,
    SandboxException,
    SandboxPool,
    SandboxResult,
    run_python,
)
from ._tool import (
    TOOLS,
    FunctionTool,
    Tool,
    ToolCallBlock,
    ToolOutput,
    clip_text,
    find_tool_call,
    get_tool,
    tool_class,
)

__all__ = [
    "DEFAULT_PRELOAD",
    "TOOLS",
    "FunctionTool",
    "LimitHit",
    "PythonTool",
    "SandboxException",
    "SandboxPool",
    "SandboxResult",
    "Tool",
    "ToolCallBlock",
    "ToolOutput",
    "clip_text",
    "find_tool_call",
    "get_tool",
    "render_sandbox_result",
    "run_python",
    "tool_class",
]
