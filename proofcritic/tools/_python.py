"""The ``python`` tool: model-written Python/SymPy run in the sandbox, its output rendered for the prompt."""

from __future__ import annotations

from typing import Any

from ._sandbox import SandboxPool, SandboxResult
from ._tool import ToolOutput, clip_text

__all__ = ["PythonTool", "render_sandbox_result"]


def render_sandbox_result(result: SandboxResult, *, max_chars: int = 4000, timeout: float | None = None) -> str:
    """What the model sees of one run: stdout, then stderr or the error, then any limit."""
    parts: list[str] = []
    stdout = result.stdout.rstrip("\n")
    parts.append(clip_text(stdout, max_chars) if stdout else "(nothing was printed)")
    if result.exception is not None:
        last = result.exception.traceback.strip().splitlines()[-6:]
        parts.append(
            "Error:\n"
            + clip_text("\n".join(last) or f"{result.exception.type}: {result.exception.message}", max_chars // 2)
        )
    elif result.stderr.strip():
        parts.append("stderr:\n" + clip_text(result.stderr.rstrip("\n"), max_chars // 2))
    limits = {
        "timeout": f"the run was stopped: it exceeded the time limit{f' of {timeout:g} s' if timeout else ''}",
        "cpu": "the run was stopped: it exceeded the CPU time limit",
        "memory": "the run was stopped: it exceeded the memory limit",
        "output": "the output was cut: it exceeded the output limit",
        "processes": "the run was stopped: it started too many processes",
    }
    if result.limit_hit:
        parts.append(f"Note: {limits.get(result.limit_hit, result.limit_hit)}.")
    elif result.exception is None and result.exit_code not in (0, None):
        parts.append(f"Note: the program exited with status {result.exit_code}.")
    return "\n".join(parts)


class PythonTool:
    """Runs a ```python block in a fresh sandboxed interpreter (SymPy preloaded).

    ``pool``: a :class:`SandboxPool` to share (one is created, and closed by :meth:`aclose`,
    when not given); ``timeout`` and the other keywords are the sandbox limits of each run
    (see :func:`proofcritic.tools.run_python`); ``max_chars`` bounds the text shown to the model.
    """

    name = "python"
    language = "python"
    aliases: tuple[str, ...] = ("py", "python3", "sympy")

    def __init__(
        self,
        pool: SandboxPool | None = None,
        *,
        timeout: float = 10.0,
        max_chars: int = 4000,
        workers: int = 4,
        **limits: Any,
    ):
        self._own_pool = pool is None
        self.pool = pool if pool is not None else SandboxPool(workers=workers)
        self.timeout = timeout
        self.max_chars = max_chars
        self.limits = limits

    @property
    def description(self) -> str:
        return (
            "Python 3 with SymPy (and the standard library), run as a fresh program each time: "
            f"nothing carries over between runs, there is no network and no input, and a run may take at most "
            f"{self.timeout:g} seconds. Only what the program prints is shown to you."
        )

    async def run(self, code: str) -> ToolOutput:
        result = await self.pool.run(code, timeout=self.timeout, **self.limits)
        error = None
        if result.exception is not None:
            error = f"{result.exception.type}: {result.exception.message}"
        elif result.limit_hit is not None:
            error = f"limit: {result.limit_hit}"
        return ToolOutput(
            tool=self.name,
            ok=result.ok,
            text=render_sandbox_result(result, max_chars=self.max_chars, timeout=self.timeout),
            stdout=result.stdout,
            stderr=result.stderr,
            error=error,
            limit_hit=result.limit_hit,
            duration=result.duration,
            details={"exit_code": result.exit_code, "truncated": result.truncated, "isolation": result.isolation},
        )

    async def aclose(self) -> None:
        if self._own_pool:
            self.pool.close()

    def __repr__(self) -> str:
        return f"PythonTool(timeout={self.timeout:g})"
