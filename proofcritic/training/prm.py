"""A process reward model: a step-classification head trained on step labels (issue #18, point 4).

TRL 1.16 has no PRMTrainer, so the model is transformers' ``AutoModelForTokenClassification``
(two labels: bad, good) trained by the transformers ``Trainer``; nothing here is a training loop.
A row is TRL's stepwise format, ``prompt``, ``completions`` (the steps) and ``labels`` (one bool
per step), as ``label-steps`` writes it (its extra fields are ignored; a record stopped by its
budget trains on the steps it settled). The text is tokenized as the prompt, then each step
followed by ``step_separator``; the label of a step sits on the last token of its separator and
every other token is ignored (-100), so the head learns P(good | text up to the end of step i).

:func:`score_steps` reads the same positions of a trained model: one probability per step, which
:func:`aggregate_steps` turns into a solution score (``min``, ``product`` or ``last``); both, and
the row layout :func:`prm_features`, are defined in :mod:`proofcritic.pipelines.prm` (``solve``'s
``select=prm`` uses them) and re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..pipelines.prm import IGNORE, PRM_AGGREGATES, aggregate_steps, prm_features, score_steps
from ._configs import ConfigError, ProofcriticPRMConfig

__all__ = [
    "PRM_AGGREGATES",
    "ProofcriticPRMConfig",
    "aggregate_steps",
    "prm_features",
    "score_steps",
    "train_prm",
]


def _step_rows(path: str | Path) -> list[dict[str, Any]]:
    from .recipes import _read_jsonl

    rows = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        missing = [c for c in ("prompt", "completions", "labels") if c not in row]
        if missing:
            raise ConfigError(f"{path} row {number}: a stepwise row needs {', '.join(missing)}")
        labels = row["labels"][: len(row["completions"])]
        if labels:  # a budget-stopped record: the steps it settled
            rows.append(
                {"prompt": str(row["prompt"]), "completions": row["completions"][: len(labels)], "labels": labels}
            )
    if not rows:
        raise ConfigError(f"{path}: no row has a labeled step")
    return rows


def _dataset(path: str | Path, tokenizer: Any, config: ProofcriticPRMConfig):
    from datasets import Dataset

    rows = []
    for row in _step_rows(path):
        features = prm_features(
            tokenizer,
            row["prompt"],
            row["completions"],
            row["labels"],
            separator=config.step_separator,
            max_length=config.max_length,
            last_only=config.train_on_last_step_only,
        )
        if any(mark != IGNORE for mark in features["labels"]):
            features.pop("positions")
            rows.append(features)
    if not rows:
        raise ConfigError(f"{path}: no labeled step fits in max_length={config.max_length}")
    return Dataset.from_list(rows)


def train_prm(config: ProofcriticPRMConfig, *, callbacks: list | None = None) -> str:
    """Train the step-classification PRM; returns the output folder (model + tokenizer)."""
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, Trainer

    from .recipes import (
        MetricsFileLogger,
        _finish,
        _need_train_file,
        _peft_config,
        _tokenizer,
        metrics_path,
        resolve_model_path,
    )

    model_path = resolve_model_path(config.model)
    tokenizer = _tokenizer(model_path)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=2, id2label={0: "bad", 1: "good"}, label2id={"bad": 0, "good": 1}
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    peft = _peft_config(config)
    if peft is not None:
        from peft import get_peft_model

        peft.task_type = "TOKEN_CLS"  # PEFT then trains and saves the new head in full (modules_to_save)
        peft.exclude_modules = ["score", "classifier"]  # the head is not a LoRA target as well
        model = get_peft_model(model, peft)
    trainer = Trainer(
        model=model,
        args=config,
        train_dataset=_dataset(_need_train_file(config), tokenizer, config),
        eval_dataset=_dataset(config.eval_file, tokenizer, config) if config.eval_file else None,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        callbacks=[MetricsFileLogger(metrics_path(config)), *(callbacks or [])],
    )
    return _finish(trainer, config)
