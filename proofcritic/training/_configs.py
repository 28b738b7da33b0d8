"""Training configs: TRL's dataclass configs plus proofcritic's fields, validated in ``__post_init__``.

Each config is a TRL config (``GRPOConfig``, ``SFTConfig``, ``DPOConfig``), so every TRL and
``TrainingArguments`` field works as usual; proofcritic adds the model, the data files, the role
and its reward model, LoRA and the metrics log. :func:`load_config` reads a YAML file plus
``key=value`` overrides into the right class; the same classes are what the ``train`` CLI reads.

Two names differ from the paper because TRL already uses them: the generator reward's weights
(SPEC section 2: alpha = 0.76, beta = 0.24) are ``reward_alpha`` and ``reward_beta``, since
``beta`` is TRL's KL (GRPO) or preference-temperature (DPO) coefficient.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, SFTConfig

from ..errors import InputError

#: the roles GRPO trains (SPEC sections 2 and 4)
ROLES = ("verifier", "meta_verifier", "generator")
#: the generator's GRPO rewards (``reward``)
GENERATOR_REWARDS = ("verifier", "answer", "answer+verifier", "lean")
#: the tools a GRPO rollout may call, and the chat templates for them (see training/rollout_tools.py)
ROLLOUT_TOOLS = ("python",)
TOOL_CHAT_TEMPLATES = ("auto", "model", "chatml")
#: how generator prompts reach the model: chat messages, plain text (base models), or by the tokenizer
PROMPT_FORMATS = ("auto", "chat", "plain")
#: config fields naming input files; relative ones in a config file are read from its folder
DATA_FILE_FIELDS = ("train_file", "eval_file", "problems_file")


class ConfigError(InputError, ValueError):
    """A training config that cannot work; the message says how to fix it."""


@dataclass
class _CommonFields:
    """Fields every proofcritic recipe adds to its TRL config (mixed in, not used alone)."""

    model: str = field(
        default="smollm2",
        metadata={
            "help": "Model to train: a local folder, a hub id, or smollm2 (the embedded SmolLM2-135M-Instruct). "
            "A transformers/ prefix is accepted and dropped."
        },
    )
    train_file: str | None = field(default=None, metadata={"help": "Training data, a JSONL file."})
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation data, a JSONL file (optional)."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains all weights (no LoRA)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (peft LoraConfig.lora_alpha)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (peft LoraConfig.lora_dropout)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules LoRA adapts (peft LoraConfig.target_modules); default: all-linear."},
    )
    metrics_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL log of every logging step (loss; rewards and reward components of GRPO); "
            "default OUTPUT_DIR/proofcritic_metrics.jsonl."
        },
    )


def _check_common(config: Any) -> None:
    if not str(config.model or "").strip():
        raise ConfigError("model is empty; set model to a local folder, a hub id, or smollm2")
    if config.lora_r < 0:
        raise ConfigError(f"lora_r must be >= 0 (0 = no LoRA), got {config.lora_r}")
    if config.lora_r and not 0.0 <= config.lora_dropout < 1.0:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    if isinstance(config.lora_target_modules, str):
        config.lora_target_modules = [m.strip() for m in config.lora_target_modules.split(",") if m.strip()]
    if config.bf16 is None and (config.use_cpu or not _bf16_gpu()):
        config.bf16 = False  # TRL defaults bf16 to True, which fails without a bf16-capable GPU
    if getattr(config, "activation_checkpointing", False) is None:
        # transformers 5.x names TRL's gradient_checkpointing (on by default) activation_checkpointing
        # and warns on every config that sets only the old name; both names stay accepted here
        config.activation_checkpointing = config.gradient_checkpointing


def _bf16_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - no usable torch/CUDA means no bf16 GPU
        return False


def _check_lean(config: Any) -> None:
    """The Lean checker fields of ``reward: lean`` (``train prover``)."""
    config.lean_checker = str(config.lean_checker).strip().lower()
    if config.lean_checker not in ("server", "local", "kimina"):
        raise ConfigError(f"lean_checker must be server, local or kimina, not {config.lean_checker!r}")
    if config.reward == "lean" and config.lean_checker == "kimina" and not config.lean_url:
        raise ConfigError("lean_checker kimina needs lean_url, the Kimina Lean Server's address")
    config.lean_prompt = str(config.lean_prompt).strip().lower()
    if config.lean_prompt not in ("chat", "code"):
        raise ConfigError(f"lean_prompt must be chat or code, not {config.lean_prompt!r}")
    if config.lean_timeout <= 0:
        raise ConfigError(f"lean_timeout must be above 0 seconds, not {config.lean_timeout}")
    if config.lean_concurrency < 1:
        raise ConfigError(f"lean_concurrency must be at least 1, not {config.lean_concurrency}")
    if isinstance(config.lean_allow_axioms, str):
        config.lean_allow_axioms = [a.strip() for a in config.lean_allow_axioms.split(",") if a.strip()]
    if config.reward == "lean" and config.process_reward_model:
        raise ConfigError("reward lean is Lean's verdict alone; drop process_reward_model")


@dataclass
class ProofcriticGRPOConfig(GRPOConfig, _CommonFields):
    """GRPO for one role (SPEC section 2): verifier, meta_verifier or generator."""

    role: str = field(default="verifier", metadata={"help": "Role to train: verifier, meta_verifier or generator."})
    reward_model: str | None = field(
        default=None,
        metadata={
            "help": "BACKEND/MODEL that scores (e.g. transformers/PATH, vllm/NAME): the meta-verifier for "
            "role verifier (optional: without it R_meta = 1), the verifier (and meta-verifier) for role "
            "generator (required). Unused for role meta_verifier."
        },
    )
    reward_model_base_url: str | None = field(
        default=None, metadata={"help": "Server URL of an openai/vllm/sglang reward model (default: the engine's)."}
    )
    reward_model_max_tokens: int = field(
        default=1024, metadata={"help": "Maximum new tokens of each reward-model analysis."}
    )
    reward_model_temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature of the reward model (0: greedy)."}
    )
    reward_model_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weight type of a local reward model (transformers/, vllm-offline/): auto, float32, "
            "bfloat16 or float16 (default: float32 on a CPU; see the CLI's --dtype)."
        },
    )
    reward_model_threads: int | None = field(
        default=None,
        metadata={"help": "torch threads of a transformers/ reward model on a CPU (default: as the CLI's --threads)."},
    )
    reward_alpha: float = field(
        default=0.76, metadata={"help": "Generator reward weight of the verifier's score of the proof (SPEC alpha)."}
    )
    reward_beta: float = field(
        default=0.24, metadata={"help": "Generator reward weight of the self-evaluation (SPEC beta)."}
    )
    reward: str = field(
        default="verifier",
        metadata={
            "help": "Role generator: verifier (R_format * (alpha R_Y + beta R_Z), needs reward_model), answer "
            "(1 when the completion's final answer matches the row's answer / short_answer column, else 0), or "
            "answer+verifier (both: the answer reward on rows with an answer, the verifier reward weighted by "
            "reward_verifier_weight; needs reward_model)."
        },
    )
    reward_verifier_weight: float = field(
        default=0.5,
        metadata={
            "help": "reward answer+verifier: the verifier reward's weight beside the answer reward's 1 (TRL's "
            "reward_weights, when given, win)."
        },
    )
    reward_verifier_rows: str = field(
        default="all",
        metadata={
            "help": "reward answer+verifier: which rows the verifier scores: all, or proofs (only rows without an "
            "answer; rows with one get the answer reward alone and cost no verifier call)."
        },
    )
    tools: list[str] | None = field(
        default=None,
        metadata={
            "help": "Role generator: tools the rollouts may call through TRL's tool calling (python: the project's "
            "sandbox, as solve --strategy tora runs it). Default: none."
        },
    )
    max_tool_calls: int = field(
        default=4, metadata={"help": "With tools: code runs per rollout at most; later calls are refused."}
    )
    tool_timeout: float = field(default=10.0, metadata={"help": "With tools: seconds per code run."})
    tool_workers: int = field(default=4, metadata={"help": "With tools: sandbox processes at once."})
    tool_log_file: str | None = field(
        default=None,
        metadata={
            "help": "With tools: JSONL log of every sandbox run (step, rollout, code, ok, error, limit, what the "
            "model was shown); default OUTPUT_DIR/proofcritic_tool_runs.jsonl."
        },
    )
    tool_chat_template: str = field(
        default="auto",
        metadata={
            "help": "With tools: the chat template that renders tool calls: auto (the model's when it can, else "
            "TRL's ChatML tool template for a ChatML tokenizer), model or chatml."
        },
    )
    prompt_format: str = field(
        default="auto",
        metadata={
            "help": "Role generator: chat (the prompt as chat messages, rendered by the model's chat template), "
            "plain (the messages' text joined, then 'Answer:', for base models without a chat template) or auto "
            "(chat when the tokenizer has a chat template, else plain)."
        },
    )
    process_reward_model: str | None = field(
        default=None,
        metadata={
            "help": "Role generator: a PRM folder (`train prm`) whose aggregated step scores are a second reward "
            "(process_reward) beside the outcome reward; weigh them with TRL's reward_weights [outcome, process]."
        },
    )
    process_reward_aggregate: str = field(
        default="min", metadata={"help": "A proof's process reward from its step scores: min, product or last."}
    )
    scale: str | None = field(
        default=None,
        metadata={
            "help": "The verifier protocol of the verifier / meta_verifier data: ternary (scores in {0, 0.5, 1}) "
            "or points (0..max_points, `label --scale points` output). Default: what the data's records say "
            "(label records and written rows carry it), else ternary; data on the other scale is an error."
        },
    )
    lean_checker: str = field(
        default="server",
        metadata={
            "help": "reward lean (train prover): server (a pool of warm `lean --server` processes), local (a cold "
            "`lean` per check) or kimina (a Kimina Lean Server at lean_url; key: env KIMINA_API_KEY)."
        },
    )
    lean_prompt: str = field(
        default="chat",
        metadata={
            "help": "reward lean: chat (the formal_prove template; the proof in a ```lean block) or code "
            "(DeepSeek-Prover's completion prompt: an open Lean block with the statement, continued by the model)."
        },
    )
    lean_binary: str | None = field(
        default=None, metadata={"help": "reward lean: the lean binary (default: PROOFCRITIC_LEAN, the venv's, PATH)."}
    )
    lean_project: str | None = field(
        default=None, metadata={"help": "reward lean: a Lake project to check in (e.g. one with Mathlib)."}
    )
    lean_url: str | None = field(default=None, metadata={"help": "reward lean, lean_checker kimina: the server's URL."})
    lean_timeout: float = field(default=60.0, metadata={"help": "reward lean: seconds per Lean check."})
    lean_concurrency: int = field(
        default=2, metadata={"help": "reward lean: warm servers in the pool (local: processes; kimina: requests)."}
    )
    lean_allow_axioms: list[str] | None = field(
        default=None, metadata={"help": "reward lean: axioms allowed beside Lean's standard three."}
    )
    lean_cache_file: str | None = field(
        default=None,
        metadata={
            "help": "reward lean: JSONL of Lean verdicts by file (read at start, appended to; each file is checked "
            "once); default OUTPUT_DIR/lean_checks.jsonl."
        },
    )

    def __post_init__(self) -> None:
        self.role = str(self.role).strip().lower().replace("-", "_")
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}; set role to one of {', '.join(ROLES)}")
        if self.scale is not None:
            self.scale = str(self.scale).strip().lower()
            if self.scale not in ("ternary", "points"):
                raise ConfigError(f"scale must be ternary or points, not {self.scale!r}")
            if self.scale == "points" and self.role == "generator":
                raise ConfigError(
                    "scale points trains the verifier or the meta-verifier on points data; the generator's "
                    "reward scores proofs with the ternary verifier (leave scale unset)"
                )
        self.reward = str(self.reward).strip().lower().replace(" ", "")
        if self.reward not in GENERATOR_REWARDS:
            raise ConfigError(
                f"reward must be verifier or answer, answer+verifier (both) or lean (Lean's verdict), not {self.reward!r}"
            )
        if self.reward != "verifier" and self.role != "generator":
            raise ConfigError(f"reward {self.reward} checks the generator's final answers; it needs role generator")
        if self.role == "generator" and self.reward not in ("answer", "lean") and not self.reward_model:
            raise ConfigError(
                f"role generator with reward {self.reward} needs a verifier to score its proofs; set reward_model to "
                "BACKEND/MODEL (e.g. transformers/PATH_TO_VERIFIER or vllm/NAME)"
            )
        self._check_answer_verifier()
        self._check_tools()
        self.prompt_format = str(self.prompt_format).strip().lower()
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, not {self.prompt_format!r}")
        if self.prompt_format == "plain" and self.tools:
            raise ConfigError("tools need chat prompts (the tool calls are chat turns); drop prompt_format plain")
        if self.process_reward_model and self.role != "generator":
            raise ConfigError("process_reward_model rewards the generator's steps; it needs role generator")
        if self.process_reward_aggregate not in ("min", "product", "last"):
            raise ConfigError(
                f"process_reward_aggregate must be min, product or last, not {self.process_reward_aggregate!r}"
            )
        if self.reward_alpha < 0 or self.reward_beta < 0 or self.reward_alpha + self.reward_beta <= 0:
            raise ConfigError(
                f"reward_alpha ({self.reward_alpha}) and reward_beta ({self.reward_beta}) must be >= 0 with a "
                "positive sum; the paper uses reward_alpha=0.76, reward_beta=0.24"
            )
        if self.reward_model_max_tokens < 1:
            raise ConfigError("reward_model_max_tokens must be >= 1")
        from .._constants import DTYPES

        if self.reward_model_dtype is not None and self.reward_model_dtype not in DTYPES:
            raise ConfigError(f"reward_model_dtype must be one of {', '.join(DTYPES)}, not {self.reward_model_dtype!r}")
        if self.reward_model_threads is not None and self.reward_model_threads < 1:
            raise ConfigError(f"reward_model_threads must be at least 1, not {self.reward_model_threads}")
        if self.num_generations is None or self.num_generations < 2:
            raise ConfigError(
                f"GRPO compares at least 2 completions per prompt; set num_generations >= 2 (got {self.num_generations})"
            )
        if self.generation_batch_size is not None:
            batch, how = self.generation_batch_size, f"generation_batch_size {self.generation_batch_size}"
        else:
            steps = self.steps_per_generation or self.gradient_accumulation_steps
            batch = self.per_device_train_batch_size * steps
            how = (
                f"per_device_train_batch_size {self.per_device_train_batch_size} x "
                f"{'steps_per_generation' if self.steps_per_generation else 'gradient_accumulation_steps'} "
                f"{steps} = {batch}"
            )
        if batch % self.num_generations:
            raise ConfigError(
                f"the generation batch ({how}, per process) is not divisible by num_generations "
                f"{self.num_generations}: every prompt needs all its completions in one batch. Set "
                f"per_device_train_batch_size to a multiple of {self.num_generations} (e.g. "
                f"{self.num_generations}), or num_generations to a divisor of {batch} that is >= 2"
            )
        _check_lean(self)
        _check_common(self)
        super().__post_init__()

    def _check_answer_verifier(self) -> None:
        self.reward_verifier_rows = str(self.reward_verifier_rows).strip().lower()
        if self.reward_verifier_rows not in ("all", "proofs"):
            raise ConfigError(f"reward_verifier_rows must be all or proofs, not {self.reward_verifier_rows!r}")
        if self.reward_verifier_weight < 0:
            raise ConfigError(f"reward_verifier_weight must be >= 0, not {self.reward_verifier_weight}")
        if self.reward == "answer+verifier" and self.reward_weights is None:
            # [answer, verifier] (+ the process reward's 1, as TRL's default weight would give it)
            self.reward_weights = [1.0, float(self.reward_verifier_weight)] + (
                [1.0] if self.process_reward_model else []
            )

    def _check_tools(self) -> None:
        if isinstance(self.tools, str):
            self.tools = [t.strip() for t in self.tools.split(",") if t.strip()]
        self.tools = [str(t).strip().lower() for t in self.tools or []] or None
        if not self.tools:
            return
        if self.role != "generator":
            raise ConfigError("tools are for the generator's rollouts; they need role generator")
        if self.reward == "lean":
            raise ConfigError("tools run in generator GRPO with reward verifier, answer or answer+verifier, not lean")
        unknown = [t for t in self.tools if t not in ROLLOUT_TOOLS]
        if unknown:
            raise ConfigError(
                f"unknown rollout tool(s) {', '.join(map(repr, unknown))}; GRPO rollouts may call {', '.join(ROLLOUT_TOOLS)}"
            )
        if self.max_tool_calls < 1:
            raise ConfigError(
                f"max_tool_calls must be >= 1 with tools (got {self.max_tool_calls}); drop tools for none"
            )
        if not 0 < self.tool_timeout <= 600:
            raise ConfigError(f"tool_timeout must be above 0 and at most 600 seconds, not {self.tool_timeout}")
        if self.tool_workers < 1:
            raise ConfigError(f"tool_workers must be >= 1, not {self.tool_workers}")
        self.tool_chat_template = str(self.tool_chat_template).strip().lower()
        if self.tool_chat_template not in TOOL_CHAT_TEMPLATES:
            raise ConfigError(
                f"tool_chat_template must be one of {', '.join(TOOL_CHAT_TEMPLATES)}, not {self.tool_chat_template!r}"
            )
        if self.max_tool_calling_iterations is None:  # TRL's rounds of tool calls: one run per round at most
            self.max_tool_calling_iterations = self.max_tool_calls


@dataclass
class ProofcriticSFTConfig(SFTConfig, _CommonFields):
    """Supervised fine-tuning, e.g. rejection fine-tuning on the best samples of each role (SPEC 4.3).

    ``train_file`` is JSONL with ``prompt``/``completion`` (plain or conversational) or ``messages``.
    """

    def __post_init__(self) -> None:
        _check_common(self)
        super().__post_init__()


@dataclass
class ProofcriticDPOConfig(DPOConfig, _CommonFields):
    """Preference optimisation on (prompt, chosen, rejected) pairs.

    ``train_file`` is JSONL with ``prompt``/``chosen``/``rejected``, or solve results whose
    transcripts yield pairs through :func:`pairs_from_traces` (repairs that the verifier scored
    higher than the proof they replace); those need ``problems_file`` for the statements.
    """

    problems_file: str | None = field(
        default=None, metadata={"help": "JSONL of problems (id, statement) for solve-result train files."}
    )
    min_score_gain: float = field(
        default=0.0, metadata={"help": "A repair must beat the proof it replaces by more than this to make a pair."}
    )

    def __post_init__(self) -> None:
        if self.min_score_gain < 0:
            raise ConfigError(f"min_score_gain must be >= 0, got {self.min_score_gain}")
        _check_common(self)
        super().__post_init__()


@dataclass
class ProofcriticPRMConfig(TrainingArguments, _CommonFields):
    """A step-classification process reward model (:mod:`proofcritic.training.prm`):
    transformers' ``TrainingArguments`` plus proofcritic's fields. ``train_file``: JSONL in TRL's
    stepwise format (``label-steps`` output)."""

    step_separator: str = field(default="\n\n", metadata={"help": "Text after each step; its last token is labeled."})
    max_length: int = field(default=1024, metadata={"help": "Tokens per row at most (prompt first, steps cut)."})
    train_on_last_step_only: bool = field(
        default=False, metadata={"help": "Label only the last step of each row (an outcome reward model)."}
    )

    def __post_init__(self) -> None:
        if not self.step_separator:
            raise ConfigError("step_separator is empty; the step labels sit on its last token")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8, got {self.max_length}")
        _check_common(self)
        super().__post_init__()


RECIPES: dict[str, type] = {
    "grpo": ProofcriticGRPOConfig,
    "sft": ProofcriticSFTConfig,
    "dpo": ProofcriticDPOConfig,
    "prm": ProofcriticPRMConfig,
}


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["lr=1e-5", "lora_target_modules=[q_proj,v_proj]"]`` -> a dict; values are read as YAML."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. learning_rate=1e-5)")
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def load_config(
    path: str | Path | None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    recipe: str = "grpo",
) -> Any:
    """Read a YAML config (a mapping of field names) plus overrides into the ``recipe``'s dataclass.

    ``recipe``: grpo, sft, dpo or prm; a ``recipe:`` key in the file must agree. Unknown keys are an
    error naming the closest field. ``path`` None: defaults plus overrides only.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config is a YAML mapping of field names to values")
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
        for key in DATA_FILE_FIELDS:
            if key in values:
                values[key] = _beside(path, values[key])
    values.update(parse_overrides(overrides))
    in_file = values.pop("recipe", None)
    if in_file is not None and in_file != recipe:
        raise ConfigError(f"the config is for recipe {in_file!r}, not {recipe!r}; use `train {in_file}` or fix recipe:")
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    cls = RECIPES[recipe]
    known = {f.name for f in fields(cls) if f.init}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {recipe} config field {key!r}{hint}")
    types = {f.name: str(f.type) for f in fields(cls)}
    return cls(**{key: _coerce(value, types[key]) for key, value in values.items()})


def _beside(config_path: Path, value: Any) -> Any:
    """A relative data path of a config file: the file next to the config when it is there,
    else the path as given (read from the current folder)."""
    if not isinstance(value, str) or not value.strip() or Path(value).expanduser().is_absolute():
        return value
    candidate = config_path.parent / value
    return str(candidate) if candidate.exists() else value


def _coerce(value: Any, type_name: str) -> Any:
    """PyYAML reads ``1e-5`` as a string (YAML 1.1); give numeric fields numbers."""
    if isinstance(value, str):
        for kind in (int, float):
            if kind.__name__ in type_name:
                try:
                    return kind(value)
                except ValueError:
                    continue
    return value
