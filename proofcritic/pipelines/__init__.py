"""Pipelines that compose the roles: scaled verification, auto-labeling, and the solving
strategies (single, refine, search, agent), with batch runs that resume after a kill."""

from ._common import Roles, RoundHook, SolveResult, Strategy, progress_text
from .adaptive import (
    AdaptiveOptions,
    Draws,
    Race,
    Sampling,
    checkpoints,
    label_adaptively,
    mean_bounds,
    settle_mean,
    verify_until_fail,
)
from .label import LabelConfig, LabelResult, label_jsonl, label_proof
from .scaled import ScaledVerification, scaled_verify
from .solve import STRATEGIES, get_strategy, solve_jsonl, solve_problem

__all__ = [
    "STRATEGIES",
    "AdaptiveOptions",
    "Draws",
    "LabelConfig",
    "LabelResult",
    "Race",
    "Roles",
    "RoundHook",
    "Sampling",
    "ScaledVerification",
    "SolveResult",
    "Strategy",
    "checkpoints",
    "get_strategy",
    "label_adaptively",
    "label_jsonl",
    "label_proof",
    "mean_bounds",
    "progress_text",
    "scaled_verify",
    "settle_mean",
    "solve_jsonl",
    "solve_problem",
    "verify_until_fail",
]
