"""Lean 4 checking of formal proofs: one interface, three implementations.

- :class:`LocalLeanChecker`: a cold ``lean --json`` per check (or ``lake env lean`` inside a
  Lake project, Mathlib projects included), with a timeout and bounded concurrency;
- :class:`LeanServerChecker`: a warm Lean language server (``lean --server``, or ``lake serve``
  in a project) reused across checks;
- :class:`KiminaChecker`: a client of a Kimina Lean Server.

Each returns a :class:`LeanResult` from ``await checker.check(source)``; a proof passes only
without errors, ``sorry``/``admit``, declared axioms or non-standard axioms (see
:mod:`proofcritic.lean_checker._analysis`).
"""

from ._analysis import DEFAULT_ALLOWED_AXIOMS, blank_comments_and_strings, prepare
from ._base import LeanChecker
from ._factory import get_checker
from ._kimina import KiminaChecker
from ._local import LocalLeanChecker
from ._resolve import LeanNotFoundError, build_lean, find_lean
from ._server import LeanServerChecker
from ._types import LeanMessage, LeanResult, SorryGoal

__all__ = [
    "DEFAULT_ALLOWED_AXIOMS",
    "KiminaChecker",
    "LeanChecker",
    "LeanMessage",
    "LeanNotFoundError",
    "LeanResult",
    "LeanServerChecker",
    "LocalLeanChecker",
    "SorryGoal",
    "blank_comments_and_strings",
    "build_lean",
    "find_lean",
    "get_checker",
    "prepare",
]
