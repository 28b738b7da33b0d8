"""Public names of a package imported on first use (PEP 562), one implementation for every
package that does it (``proofcritic``, ``proofcritic.llm``, ``proofcritic.benchmarks``), so that
``import proofcritic`` and the command line's parser load no model, pydantic or numpy code."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, names: Mapping[str, str], namespace: dict[str, Any], *, submodules: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: ``names`` maps a public
    name to the (relative) module that defines it; the first lookup imports it and binds it in
    ``namespace`` (the package's globals), so later ones cost nothing. With ``submodules``, any
    other name that is a submodule of the package is imported too (``proofcritic.io`` works
    without ``import proofcritic.io``, as when the package imported every submodule itself)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module, package), name)
        elif submodules and not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
