"""Evaluation suites (IMO, CMO, Putnam, USAMO, IMO-ProofBench, grader-vs-human) and run folders."""

from __future__ import annotations

from ._data import data_root
from ._items import BUCKETS, SCALES, GradeItem, SolveItem
from ._registry import SUITES, get_suite, load_suite
from ._run import RunFolder
from ._suite import Suite
from .custom import load_graded_file, load_problems_file
from .eval_grade import eval_grade, summarize_grade_run
from .metrics import MetricsError, grader_report

__all__ = [
    "BUCKETS",
    "SCALES",
    "SUITES",
    "GradeItem",
    "MetricsError",
    "RunFolder",
    "SolveItem",
    "Suite",
    "data_root",
    "eval_grade",
    "get_suite",
    "grader_report",
    "load_graded_file",
    "load_problems_file",
    "load_suite",
    "summarize_grade_run",
]
