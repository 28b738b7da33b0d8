"""Evaluation suites (IMO, CMO, Putnam, USAMO, IMO-ProofBench, grader-vs-human, first wrong
step) and run folders.

The names below are imported on first use (PEP 562): the registry of suites (``SUITES``,
``load_suite``) does not load the metrics and their numpy, and ``eval --help`` lists the suites
without them.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_names

if TYPE_CHECKING:
    from ._data import data_root
    from ._items import BUCKETS, SCALES, GradeItem, SolveItem, StepItem
    from ._registry import SUITES, get_suite, load_suite, suite_names
    from ._run import RunFolder
    from ._suite import Kind, Suite
    from .custom import load_graded_file, load_problems_file
    from .eval_grade import eval_grade, summarize_grade_run
    from .eval_steps import eval_steps, summarize_steps_run
    from .metrics import MetricsError, grader_report
    from .proofbench import load_lean_problems

#: public name -> the submodule that defines it
_LAZY = {
    "data_root": "._data",
    **dict.fromkeys(("BUCKETS", "SCALES", "GradeItem", "SolveItem", "StepItem"), "._items"),
    **dict.fromkeys(("SUITES", "get_suite", "load_suite", "suite_names"), "._registry"),
    "RunFolder": "._run",
    **dict.fromkeys(("Kind", "Suite"), "._suite"),
    **dict.fromkeys(("load_graded_file", "load_problems_file"), ".custom"),
    **dict.fromkeys(("eval_grade", "summarize_grade_run"), ".eval_grade"),
    **dict.fromkeys(("eval_steps", "summarize_steps_run"), ".eval_steps"),
    **dict.fromkeys(("MetricsError", "grader_report"), ".metrics"),
    "load_lean_problems": ".proofbench",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


class _Package(types.ModuleType):
    """``eval_grade`` is both a submodule and its function; the package's name has always meant
    the function. Importing the submodule binds its name here after the fact, so the binding is
    turned into the function (as the eager ``from .eval_grade import eval_grade`` did)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "eval_grade" and isinstance(value, types.ModuleType):
            value = value.eval_grade
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "BUCKETS",
    "SCALES",
    "SUITES",
    "GradeItem",
    "Kind",
    "MetricsError",
    "RunFolder",
    "SolveItem",
    "StepItem",
    "Suite",
    "data_root",
    "eval_grade",
    "eval_steps",
    "get_suite",
    "grader_report",
    "load_graded_file",
    "load_lean_problems",
    "load_problems_file",
    "load_suite",
    "suite_names",
    "summarize_grade_run",
    "summarize_steps_run",
]
