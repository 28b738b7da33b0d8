"""Pipelines that compose the roles: scaled verification, auto-labeling, and the solving
strategies (single, refine, search, agent), with batch runs that resume after a kill."""

from ._common import Roles, RoundHook, SolveResult, Strategy, progress_text
from .label import LabelConfig, LabelResult, label_jsonl, label_proof
from .scaled import ScaledVerification, scaled_verify
from .solve import STRATEGIES, get_strategy, solve_jsonl, solve_problem

__all__ = [
    "STRATEGIES",
    "LabelConfig",
    "LabelResult",
    "Roles",
    "RoundHook",
    "ScaledVerification",
    "SolveResult",
    "Strategy",
    "get_strategy",
    "label_jsonl",
    "label_proof",
    "progress_text",
    "scaled_verify",
    "solve_jsonl",
    "solve_problem",
]
