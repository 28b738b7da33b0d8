"""One place that turns options into a checker."""

from __future__ import annotations

import os
from typing import Any, Literal

from ._base import LeanChecker
from ._kimina import KiminaChecker
from ._local import LocalLeanChecker
from ._server import LeanServerChecker

CheckerKind = Literal["local", "server", "kimina"]


def get_checker(
    kind: CheckerKind = "local",
    *,
    lean: str | os.PathLike[str] | None = None,
    project: str | os.PathLike[str] | None = None,
    url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    **options: Any,
) -> LeanChecker:
    """``local``: a cold ``lean`` per check; ``server``: a warm language server;
    ``kimina``: a Kimina Lean Server at ``url``."""
    if kind == "local":
        return LocalLeanChecker(lean, project=project, timeout=timeout, **options)
    if kind == "server":
        return LeanServerChecker(lean, project=project, timeout=timeout, **options)
    if kind == "kimina":
        if not url:
            raise ValueError("a Kimina checker needs the server's url")
        return KiminaChecker(url, api_key=api_key, timeout=timeout, **options)
    raise ValueError(f"unknown Lean checker kind {kind!r} (local, server or kimina)")
