"""The ``lean`` tool: a ```lean block checked by a Lean 4 checker (:mod:`proofcritic.lean_checker`)."""

from __future__ import annotations

from typing import Any

from ._tool import ToolOutput, clip_text

__all__ = ["LeanTool", "render_lean_result"]


def render_lean_result(result: Any, *, max_chars: int = 4000) -> str:
    """What the model sees of one check: the verdict, why it did not pass, Lean's messages."""
    verdicts = {
        "passed": "Lean accepted the code: no errors, no sorry, no extra axioms.",
        "failed": "Lean did not accept the code.",
        "timeout": "The check ran out of time.",
        "error": "The checker could not run the check.",
    }
    lines = [verdicts.get(result.status, f"Status: {result.status}.")]
    lines += [f"- {reason}" for reason in result.reasons]
    lines += [str(message) for message in result.messages]
    if result.error and result.status in ("timeout", "error"):
        lines.append(str(result.error))
    return clip_text("\n".join(lines), max_chars)


class LeanTool:
    """Checks a ```lean block with a Lean checker; ``checker`` or the options of
    :func:`proofcritic.lean_checker.get_checker` (``kind``, ``lean``, ``project``, ``url`` ...)."""

    name = "lean"
    language = "lean"
    aliases: tuple[str, ...] = ("lean4",)

    def __init__(self, checker: Any = None, *, timeout: float = 60.0, max_chars: int = 4000, **options: Any):
        from ..lean_checker import get_checker

        self._own = checker is None
        self.checker = checker if checker is not None else get_checker(timeout=timeout, **options)
        self.timeout = timeout
        self.max_chars = max_chars

    @property
    def description(self) -> str:
        return (
            "Lean 4 (a complete file: imports, then declarations); it is compiled and you are told "
            "whether Lean accepts it, with Lean's errors and warnings. A proof that uses sorry, admit "
            f"or an extra axiom is not accepted. A check may take at most {self.timeout:g} seconds."
        )

    async def run(self, code: str) -> ToolOutput:
        result = await self.checker.check(code, timeout=self.timeout)
        errors = [str(m) for m in result.messages if m.severity == "error"]
        return ToolOutput(
            tool=self.name,
            ok=bool(result.ok),
            text=render_lean_result(result, max_chars=self.max_chars),
            stdout="\n".join(str(m) for m in result.messages),
            error=None if result.ok else ("; ".join(result.reasons or errors) or result.error or result.status),
            limit_hit="timeout" if result.status == "timeout" else None,
            duration=result.seconds,
            details=result.model_dump(mode="json"),
        )

    async def aclose(self) -> None:
        if self._own:
            await self.checker.close()

    def __repr__(self) -> str:
        return f"LeanTool({self.checker!r})"
