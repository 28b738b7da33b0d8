"""Process reward model scores (issue #18, point 5): a step-classification PRM trained by
``proofcritic train prm`` (:mod:`proofcritic.training.prm`) read at each step's separator, and
a solution's score from its step scores. Used by ``solve``'s ``select=prm`` (``single``).

The layout of a row is defined here once, for training and for scoring: the prompt, then each
step followed by the separator; the label (or the score) of a step sits on the last token of its
separator.
"""

from __future__ import annotations

import asyncio
import functools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PRM_AGGREGATES",
    "PrmAggregate",
    "StepScorer",
    "aggregate_steps",
    "load_scorer",
    "prm_features",
    "score_steps",
]

PrmAggregate = Literal["min", "product", "last"]
PRM_AGGREGATES: tuple[str, ...] = ("min", "product", "last")
IGNORE = -100


def prm_features(
    tokenizer: Any,
    prompt: str,
    steps: Sequence[str],
    labels: Sequence[bool] | None,
    *,
    separator: str = "\n\n",
    max_length: int = 1024,
    last_only: bool = False,
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one row (see the module); ``positions``: the index of each
    step's labeled token, for the steps that fit in ``max_length``."""
    prompt_ids = tokenizer(prompt + separator, add_special_tokens=True)["input_ids"]
    sep_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    ids, marks, positions = list(prompt_ids), [IGNORE] * len(prompt_ids), []
    for index, step in enumerate(steps):
        chunk = tokenizer(step, add_special_tokens=False)["input_ids"] + sep_ids
        if len(ids) + len(chunk) > max_length:
            break
        ids += chunk
        marks += [IGNORE] * len(chunk)
        positions.append(len(ids) - 1)
        if labels is not None and (not last_only or index == len(steps) - 1):
            marks[-1] = int(bool(labels[index]))
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": marks, "positions": positions}


def score_steps(
    model: Any, tokenizer: Any, prompt: str, steps: Sequence[str], *, separator: str = "\n\n", max_length: int = 4096
) -> list[float]:
    """P(good) of each step by a trained PRM (steps past ``max_length`` tokens are left out)."""
    import torch

    features = prm_features(tokenizer, prompt, steps, None, separator=separator, max_length=max_length)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([features["input_ids"]], device=model.device)).logits[0]
    probabilities = torch.softmax(logits.float(), dim=-1)[:, 1]
    return [float(probabilities[p]) for p in features["positions"]]


def aggregate_steps(scores: Sequence[float], rule: PrmAggregate = "min") -> float:
    """A solution's score from its step scores: the lowest, the product, or the last (0 without steps)."""
    if not scores:
        return 0.0
    if rule == "min":
        return min(scores)
    if rule == "product":
        return math.prod(scores)
    if rule == "last":
        return scores[-1]
    raise ValueError(f"aggregate must be one of {', '.join(PRM_AGGREGATES)}, not {rule!r}")


class StepScorer:
    """A trained PRM folder (a full model, or a LoRA adapter with its head) and its tokenizer,
    scoring steps in a worker thread (one at a time)."""

    def __init__(self, path: str | Path, separator: str = "\n\n"):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = Path(path).expanduser()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the base model's load report: its head is new, the adapter restores it
        hf_logging.disable_progress_bar()  # as proofcritic's local backends do
        try:
            with warnings.catch_warnings():  # peft asks transformers 5.x by a deprecated name; nothing to act on
                warnings.filterwarnings(
                    "ignore", category=FutureWarning, message=r"`is_gradient_checkpointing` is deprecated"
                )
                if (folder / "adapter_config.json").is_file():
                    from peft import AutoPeftModelForTokenClassification

                    self.model = AutoPeftModelForTokenClassification.from_pretrained(folder)
                else:
                    from transformers import AutoModelForTokenClassification

                    self.model = AutoModelForTokenClassification.from_pretrained(folder)
        finally:
            hf_logging.set_verbosity(verbosity)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.separator = separator
        self._lock = asyncio.Lock()

    async def score(self, prompt: str, steps: Sequence[str]) -> list[float]:
        """P(good) of each step (see :func:`score_steps`)."""
        async with self._lock:
            return await asyncio.to_thread(
                score_steps, self.model, self.tokenizer, prompt, steps, separator=self.separator
            )


@functools.lru_cache(maxsize=4)
def load_scorer(path: str, separator: str = "\n\n") -> StepScorer:
    """The :class:`StepScorer` of ``path``, loaded once per process."""
    return StepScorer(path, separator)
