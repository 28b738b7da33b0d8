"""Sandboxed execution of model-written Python (SymPy + stdlib) for CRITIC-style checks."""

from ._sandbox import (
    DEFAULT_PRELOAD,
    LimitHit,
    SandboxException,
    SandboxPool,
    SandboxResult,
    run_python,
)

__all__ = [
    "DEFAULT_PRELOAD",
    "LimitHit",
    "SandboxException",
    "SandboxPool",
    "SandboxResult",
    "run_python",
]
