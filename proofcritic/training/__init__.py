"""Training: GRPO rewards for the three roles (SPEC section 2), their data sets and the TRL
recipes (SPEC section 4). The recipes need the ``train`` extra (TRL, peft) and are imported on
first use, so rewards and data sets work without it."""

from .datasets import (
    BUCKET_SCORES,
    SCALES,
    MetaExample,
    VerifierExample,
    dataset_scale,
    deduplicate,
    examples_from_grades,
    examples_from_jsonl,
    examples_from_labels,
    meta_examples_from_jsonl,
    meta_examples_from_labels,
    points_to_score,
    record_scale,
    split,
    to_dataset,
    to_rows,
    write_jsonl,
)
from .rewards import (
    ALPHA,
    BETA,
    RewardFunction,
    completion_text,
    format_reward,
    make_answer_reward,
    make_answer_verifier_rewards,
    make_generator_reward,
    make_meta_verifier_reward,
    make_process_reward,
    make_verifier_reward,
    points_reward,
    score_reward,
    tool_conversation_text,
)

__all__ = [
    "ALPHA",
    "BETA",
    "BUCKET_SCORES",
    "SCALES",
    "MetaExample",
    "RewardFunction",
    "VerifierExample",
    "completion_text",
    "dataset_scale",
    "deduplicate",
    "examples_from_grades",
    "examples_from_jsonl",
    "examples_from_labels",
    "format_reward",
    "make_answer_reward",
    "make_answer_verifier_rewards",
    "make_generator_reward",
    "make_meta_verifier_reward",
    "make_process_reward",
    "make_verifier_reward",
    "meta_examples_from_jsonl",
    "meta_examples_from_labels",
    "points_reward",
    "points_to_score",
    "record_scale",
    "score_reward",
    "split",
    "to_dataset",
    "to_rows",
    "tool_conversation_text",
    "write_jsonl",
]


#: names served lazily from .recipes (importing it imports TRL)
_RECIPES = (
    "ConfigError",
    "ProofcriticDPOConfig",
    "ProofcriticGRPOConfig",
    "ProofcriticSFTConfig",
    "RewardComponentsLogger",
    "build_rewards",
    "component_metrics",
    "load_config",
    "pairs_from_traces",
    "train_dpo",
    "train_grpo",
    "train_sft",
)
#: names served lazily from .prm (the step-classification PRM; imports transformers)
_PRM = ("ProofcriticPRMConfig", "aggregate_steps", "score_steps", "train_prm")
__all__ += list(_RECIPES) + list(_PRM)


def __getattr__(name: str):
    if name in _RECIPES:
        from . import recipes

        return getattr(recipes, name)
    if name in _PRM:
        from . import prm

        return getattr(prm, name)
    raise AttributeError(f"module 'proofcritic.training' has no attribute {name!r}")
