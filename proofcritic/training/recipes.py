"""Training recipes: GRPO for the three roles, SFT and DPO, on TRL (SPEC sections 2 and 4).

``train_grpo(config)`` trains one role with GRPO against its reward (SPEC section 2):

- ``role: verifier``: R_format * R_score * R_meta on rows ``{prompt, problem, proof,
  reference_score}``; ``reward_model`` (optional) is the meta-verifier that gives R_meta. On the
  points scale (``scale: points``, or data whose records say so: ``label --scale points``
  output, or rows written from it) the rows are ``{prompt, problem, proof, reference_points,
  max_points}`` and R_score = 1 - |p' - l| / max_points (:func:`proofcritic.training.make_verifier_reward`).
- ``role: meta_verifier``: R_format * R_score on rows ``{prompt, reference_meta_score}``.
- ``role: generator``: R_format * (alpha R_Y + beta R_Z) on rows ``{prompt, problem}``;
  ``reward_model`` (required) is the verifier, and also serves as the meta-verifier.

The reward model is any proofcritic model string, served through proofcritic's backends
(``get_model``): ``transformers/PATH`` loads it in this process, ``vllm/NAME`` (with
``reward_model_base_url``) talks to a running ``vllm serve``, so a GPU server can score while
the trainer trains. ``train_sft`` (rejection fine-tuning, SPEC 4.3) and ``train_dpo`` (pairs
from refinement traces, see :func:`pairs_from_traces`) complete the set.

Configs are TRL's (``ProofcriticGRPOConfig`` is a ``GRPOConfig``), so every TRL option applies.
On CPU: ``use_cpu: true`` (bf16 then defaults to false). Metrics go through TRL's
``report_to`` (default ``none``: set ``tensorboard``, ``wandb``, ...) and into
``trainer.state.log_history``: TRL logs each reward as ``rewards/<name>/mean``, and
:class:`RewardComponentsLogger` adds, per logging step, the means of the reward components
(``<name>/r_format``, ``r_score``, ``r_meta``, ``r_y``, ``r_z``), the format-failure rate, the
score accuracy against the references (verifier, meta-verifier) and the generator's self-score
vs verifier agreement (see :func:`component_metrics`). Every log record is also appended to a
plain JSONL file (``metrics_file``), whatever ``report_to`` says; SFT and DPO runs write
theirs too (:class:`MetricsFileLogger`).

GPU users: let vLLM generate the GRPO rollouts. Start a TRL vLLM server on a spare GPU
(``trl vllm-serve --model MODEL``) and set, in the YAML config::

    use_vllm: true
    vllm_mode: server            # or colocate: vLLM inside the training process
    vllm_server_base_url: http://127.0.0.1:8000

(``vllm_server_host``/``vllm_server_port`` work too). The reward model is separate: serve the
verifier with ``vllm serve`` on another port and set ``reward_model: vllm/NAME`` and
``reward_model_base_url: http://127.0.0.1:8001/v1``.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import InputError
from ._configs import (
    ROLES,
    ConfigError,
    ProofcriticDPOConfig,
    ProofcriticGRPOConfig,
    ProofcriticSFTConfig,
    load_config,
    parse_overrides,
)
from ._traces import pairs_from_traces, scored_proofs

__all__ = [
    "ROLES",
    "ConfigError",
    "MetricsFileLogger",
    "ProofcriticDPOConfig",
    "ProofcriticGRPOConfig",
    "ProofcriticSFTConfig",
    "RewardComponentsLogger",
    "build_rewards",
    "component_metrics",
    "load_config",
    "metrics_path",
    "pairs_from_traces",
    "parse_overrides",
    "resolve_model_path",
    "scored_proofs",
    "train_dpo",
    "train_grpo",
    "train_sft",
]

#: columns each role's reward reads, besides ``prompt``
_ROLE_COLUMNS = {
    "verifier": ("reference_score",),
    "meta_verifier": ("reference_meta_score",),
    "generator": ("problem",),
}
#: the points verifier's reward columns (``scale: points``)
_POINTS_COLUMNS = ("reference_points", "max_points")


# --------------------------------------------------------------------------- building blocks


def resolve_model_path(model: str) -> str:
    """A model to train: ``smollm2`` -> the embedded SmolLM2 folder; ``transformers/X`` -> ``X``."""
    from ..llm import is_smollm2_alias, smollm2_path

    name = model.strip()
    name = name.removeprefix("transformers/")
    if is_smollm2_alias(name):
        return str(smollm2_path())
    return name


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
    if not rows:
        raise InputError(f"{path} holds no rows")
    return rows


def _is_label_record(row: dict[str, Any]) -> bool:
    """An output line of ``proofcritic label`` (a label or a review item, or an error record)."""
    return ("status" in row and "rule" in row) or ("error" in row and "problem" not in row)


def _rows_scale(rows: list[dict[str, Any]], path: str | Path, wanted: str | None) -> str:
    """The one scale of written training rows (their ``scale`` column; none: ternary)."""
    scales = [row.get("scale") or "ternary" for row in rows]
    found = set(scales)
    if len(found) > 1:
        odd = next(n for n, s in enumerate(scales, 1) if s != scales[0])
        raise ConfigError(
            f"{path}: the rows mix scales ({scales.count(scales[0])} {scales[0]}, {len(rows) - scales.count(scales[0])} "
            f"other; the first other is row {odd}); one data set trains one protocol"
        )
    scale = scales[0]
    if wanted is not None and scale != wanted:
        raise ConfigError(f"{path}: the rows are on the {scale} scale, but the config says scale: {wanted}")
    return scale


def _role_dataset(path: str | Path, role: str, scale: str | None = None):
    """The GRPO dataset of ``role`` from a JSONL file (see :func:`_role_data`)."""
    return _role_data(path, role, scale)[0]


def _role_data(path: str | Path, role: str, scale: str | None = None) -> tuple[Any, str]:
    """The GRPO dataset of ``role`` from a JSONL file, and its verifier scale (``scale``: the
    one the config asks for; None: what the data says, else ternary). Rows that already have a
    ``prompt`` (e.g. written by :func:`proofcritic.training.write_jsonl`) are used as they are;
    ``proofcritic label`` output gives D_v (labeled proofs) or D_mv (meta-verified analyses);
    raw records go through :mod:`proofcritic.training.datasets` (verifier: ``problem``,
    ``proof``, ``score`` or ``points``; meta-verifier: also ``analysis``, ``meta_score``);
    generator rows need only ``problem``."""
    from datasets import Dataset

    from .datasets import (
        dataset_scale,
        examples_from_jsonl,
        examples_from_labels,
        meta_examples_from_jsonl,
        meta_examples_from_labels,
        to_dataset,
    )

    rows = _read_jsonl(path)
    wanted: Any = scale
    if all("prompt" in row for row in rows):
        dataset = Dataset.from_list(rows)
        scale = _rows_scale(rows, path, scale)
    elif role in ("verifier", "meta_verifier"):
        labels = all(_is_label_record(row) for row in rows)
        if role == "verifier":
            examples: list[Any] = examples_from_labels(path, wanted) if labels else examples_from_jsonl(path, wanted)
        else:
            examples = meta_examples_from_labels(path, wanted) if labels else meta_examples_from_jsonl(path, wanted)
        if not examples:
            what = "labeled proof" if role == "verifier" else "meta-verified analysis"
            raise ConfigError(f"{path}: no training example: the label records hold no {what}")
        scale = dataset_scale(examples, wanted or "ternary")
        dataset = to_dataset(examples)
    else:
        generator_rows = [_generator_row(row, f"{path}:{n}") for n, row in enumerate(rows, 1)]
        if any("answer" in row for row in generator_rows):  # a column from_list keeps only if the first row has it
            generator_rows = [{**row, "answer": row.get("answer")} for row in generator_rows]
        dataset = Dataset.from_list(generator_rows)
        scale = "ternary"
    needed = _ROLE_COLUMNS[role] if not (scale == "points" and role == "verifier") else _POINTS_COLUMNS
    missing = [c for c in ("prompt", *needed) if c not in dataset.column_names]
    if missing:
        raise ConfigError(f"{path}: the {role} dataset lacks the column(s) {', '.join(missing)}")
    return dataset, scale


def _generator_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    from ..promptset import PromptSet
    from ..types import Problem

    problem = row.get("problem", row.get("statement"))
    if problem is None:
        raise InputError(f"{where}: a generator row needs 'problem' (a statement or a problem object)")
    problem = Problem(statement=problem) if isinstance(problem, str) else Problem.model_validate(problem)
    messages = PromptSet.load().render("generate", problem=problem)
    out = {
        "prompt": [{"role": m.role, "content": m.content} for m in messages],
        "problem": problem.model_dump(mode="json"),
    }
    answer = row.get("answer", row.get("short_answer"))  # the reference of `reward: answer` (AnswerBench: short_answer)
    if answer is not None:
        out["answer"] = str(answer)
    return out


def _reward_model(config: ProofcriticGRPOConfig):
    from ..llm import GenerateConfig, get_model

    options: dict[str, Any] = {}
    if config.reward_model_base_url:
        options["base_url"] = config.reward_model_base_url
    options.update(dtype=config.reward_model_dtype, threads=config.reward_model_threads)  # None: not given
    defaults = GenerateConfig(max_tokens=config.reward_model_max_tokens, temperature=config.reward_model_temperature)
    assert config.reward_model is not None  # asked for only when one is configured
    return get_model(config.reward_model, cache=False, defaults=defaults, **options)


def build_rewards(config: ProofcriticGRPOConfig, reward_model: Any = None, scale: str | None = None) -> list[Any]:
    """The role's reward callables. ``reward_model``: a ready :class:`Model` to score with
    instead of the one ``config.reward_model`` names (e.g. one already loaded); ``scale``: the
    data's verifier scale (default ``config.scale``, else ternary)."""
    from ..llm import GenerateConfig
    from ..meta_verifier import MetaVerifier
    from ..verifier import Verifier
    from .rewards import (
        make_generator_reward,
        make_meta_verifier_reward,
        make_verifier_reward,
    )

    if config.role == "meta_verifier":
        return [make_meta_verifier_reward()]
    if config.role == "generator" and config.reward == "answer":  # issue #19: answer-checked RL
        from .rewards import make_answer_reward

        return [make_answer_reward()]
    model = reward_model if reward_model is not None else (_reward_model(config) if config.reward_model else None)
    sampling = GenerateConfig(max_tokens=config.reward_model_max_tokens, temperature=config.reward_model_temperature)
    meta = MetaVerifier(model, config=sampling) if model is not None else None
    if config.role == "verifier":
        return [make_verifier_reward(meta, scale=scale or config.scale or "ternary")]
    # the reward model keeps the likelihood read-out it always had (R_Y is the verifier's score
    # of Y; a sample none of whose verifications has a score is skipped): training rewards do not
    # change with the commands' default score mode
    verifier = Verifier(model, config=sampling, score_mode="auto")
    rewards: list[Any] = [make_generator_reward(verifier, meta, config.reward_alpha, config.reward_beta)]
    if config.reward == "answer+verifier":  # issue #19: the answer reward with the verifier's weighted in
        from .rewards import make_answer_verifier_rewards

        proofs_only = config.reward_verifier_rows == "proofs"
        rewards = make_answer_verifier_rewards(
            verifier, meta, config.reward_alpha, config.reward_beta, proofs_only=proofs_only
        )
    if config.process_reward_model:  # issue #18: the PRM's step scores, weighed by TRL's reward_weights
        from ..pipelines.prm import load_scorer
        from .rewards import make_process_reward

        scorer = load_scorer(str(resolve_model_path(config.process_reward_model)))
        rewards.append(make_process_reward(scorer, config.process_reward_aggregate))
    return rewards


def _peft_config(config: Any):
    if not config.lora_r:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _mean(values: list[Any]) -> float | None:
    numbers = [
        float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))
    ]
    return sum(numbers) / len(numbers) if numbers else None


def _fraction(pairs: list[tuple[Any, Any]]) -> float | None:
    """Share of (predicted, reference) pairs that agree exactly; pairs without a reference are
    left out, a missing prediction (format failure) counts as a miss."""
    judged = [(p, r) for p, r in pairs if isinstance(r, (int, float))]
    if not judged:
        return None
    return sum(1 for p, r in judged if isinstance(p, (int, float)) and float(p) == float(r)) / len(judged)


def component_metrics(name: str, components: list[dict[str, Any]]) -> dict[str, float]:
    """The metrics of one reward's per-sample components (``reward.last_components``), keyed
    ``NAME/<metric>``: the mean of every numeric component (``reward``, ``r_format``,
    ``r_score``, ``r_meta``, ``r_y``, ``r_z``, ...); ``format_failure_rate`` (1 - mean
    ``r_format``); for the verifier and meta-verifier ``score_accuracy`` (share of predicted
    scores equal to the reference) next to ``r_score`` (mean 1 - |s' - s|); for the generator
    ``self_score_agreement`` (mean 1 - |s' - s| between its self-score and the verifier's
    score) and ``self_score_exact_agreement`` (share where they are equal)."""
    rows = [c for c in components if isinstance(c, dict)]
    out: dict[str, float] = {}
    for key in sorted({k for c in rows for k in c}):
        mean = _mean([c.get(key) for c in rows])
        if mean is not None:
            out[f"{name}/{key}"] = mean
    if f"{name}/r_format" in out:
        out[f"{name}/format_failure_rate"] = 1.0 - out[f"{name}/r_format"]
    for predicted, reference in (("s_pred", "s_ref"), ("ms_pred", "ms_ref")):
        if any(reference in c for c in rows):
            accuracy = _fraction([(c.get(predicted), c.get(reference)) for c in rows])
            if accuracy is not None:
                out[f"{name}/score_accuracy"] = accuracy
    if any("s_self" in c and "r_y" in c for c in rows):  # the generator: self-score vs the verifier
        scored = [c for c in rows if isinstance(c.get("r_y"), (int, float))]
        agreement = _mean([score_closeness(c.get("s_self"), c["r_y"]) for c in scored])
        exact = _fraction([(c.get("s_self"), c["r_y"]) for c in scored])
        if agreement is not None and exact is not None:  # both are, or neither (the same rows)
            out[f"{name}/self_score_agreement"] = agreement
            out[f"{name}/self_score_exact_agreement"] = exact
    return out


def score_closeness(predicted: Any, reference: float) -> float:
    """1 - |predicted - reference|; a missing prediction counts as 0 (SPEC R_score)."""
    return 0.0 if not isinstance(predicted, (int, float)) else 1.0 - abs(float(predicted) - float(reference))


class MetricsFileLogger(TrainerCallback):
    """Appends every log record of a run (``{"step": N, ...}``: loss, learning rate, rewards...)
    to the JSONL file ``path``, whatever ``report_to`` says; every recipe writes one."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.path is None or not state.is_world_process_zero:
            return
        record: dict[str, Any] = {"step": state.global_step}
        record.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float, str)) or v is None})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def metrics_path(config: Any) -> str:
    """The run's metrics log: ``metrics_file``, by default ``OUTPUT_DIR/proofcritic_metrics.jsonl``."""
    return config.metrics_file or str(Path(config.output_dir) / "proofcritic_metrics.jsonl")


class RewardComponentsLogger(MetricsFileLogger):
    """Collects the per-sample reward components of every reward batch (``last_components`` of
    each reward) and turns them into metrics (:func:`component_metrics`), averaged over the
    samples since the previous log.

    :func:`train_grpo` merges :meth:`drain` into the trainer's logs before they are dispatched,
    so the metrics reach every ``report_to`` integration (TensorBoard, W&B, ...) and
    ``trainer.state.log_history``; ``on_log`` also appends each log record to the JSONL file
    ``path`` (when given), whatever ``report_to`` says.
    """

    def __init__(self, rewards: list[Any], path: str | Path | None = None):
        super().__init__(path)
        self.rewards = list(rewards)
        self._pending: list[list[dict[str, Any]]] = [[] for _ in self.rewards]
        self._seen: list[Any] = [None for _ in self.rewards]
        for index, reward in enumerate(self.rewards):
            if callable(getattr(reward, "add_listener", None)):
                reward.add_listener(lambda components, i=index: self._take(i, components))

    def _take(self, index: int, components: Any) -> None:
        if components and components is not self._seen[index]:
            self._seen[index] = components
            self._pending[index].extend(components)

    def collect(self) -> None:
        """Pick up batches of rewards that have no listener hook (any callable with ``last_components``)."""
        for index, reward in enumerate(self.rewards):
            self._take(index, getattr(reward, "last_components", None))

    def drain(self) -> dict[str, float]:
        """The metrics of the samples collected since the last call."""
        self.collect()
        out: dict[str, float] = {}
        for index, reward in enumerate(self.rewards):
            if self._pending[index]:
                name = getattr(reward, "__name__", type(reward).__name__)
                out.update(component_metrics(name, self._pending[index]))
                self._pending[index] = []
        return out

    def summary(self) -> dict[str, float]:
        """The metrics of each reward's latest batch only."""
        out: dict[str, float] = {}
        for reward in self.rewards:
            components = getattr(reward, "last_components", None)
            if components:
                out.update(component_metrics(getattr(reward, "__name__", type(reward).__name__), components))
        return out

    def on_step_end(self, args, state, control, **kwargs):
        self.collect()


def _grpo_trainer_class():
    """GRPOTrainer whose logs also carry the reward-component metrics (see ``log``)."""
    from trl import GRPOTrainer

    class ProofcriticGRPOTrainer(GRPOTrainer):
        component_loggers: tuple[RewardComponentsLogger, ...] = ()
        extra_metrics: tuple[Any, ...] = ()  # objects whose drain() gives metrics (e.g. the sandbox's runs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            extra: dict[str, float] = {}
            for logger in (*self.component_loggers, *self.extra_metrics):
                extra.update(logger.drain())
            assert self.model is not None  # a trainer logs once it holds its model
            if not self.model.training:  # an evaluation log: TRL prefixes its keys with eval_
                extra = {f"eval_{k}": v for k, v in extra.items()}
            logs.update(extra)
            super().log(logs, start_time)

    return ProofcriticGRPOTrainer


@contextlib.contextmanager
def _trl_checkpointing_names() -> Iterator[None]:
    """TRL's trainers read (when built) and switch (around each GRPO generation) checkpointing by
    the names transformers 5.x deprecates: FutureWarnings raised inside TRL, which nothing we pass
    avoids. Only these three are hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            category=FutureWarning,
            message=r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated",
        )
        yield


def _finish(trainer: Any, config: Any) -> str:
    # resume_from_checkpoint (a checkpoint folder, or true: the latest in output_dir) is a
    # TrainingArguments field that the Trainer itself never reads: a killed run resumes only so
    resume = getattr(config, "resume_from_checkpoint", None)
    if isinstance(resume, str) and resume.strip().lower() in ("true", "false", ""):
        resume = resume.strip().lower() == "true"
    with _trl_checkpointing_names():
        trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model(config.output_dir)
    if getattr(trainer, "processing_class", None) is not None:
        trainer.processing_class.save_pretrained(config.output_dir)
    return str(config.output_dir)


def _need_train_file(config: Any) -> str:
    if not config.train_file:
        raise ConfigError("train_file is not set; set train_file to a JSONL file of training rows")
    return config.train_file


# --------------------------------------------------------------------------- recipes


def train_grpo(config: ProofcriticGRPOConfig, *, reward_model: Any = None, callbacks: list | None = None) -> str:
    """Train ``config.role`` with GRPO; returns the output folder (model + tokenizer)."""
    if config.reward == "lean":  # RLPAF (issue #20): rows of Lean statements, Lean's verdict as the reward
        from .prover import train_prover

        return train_prover(config, callbacks=callbacks)
    train, scale = _role_data(_need_train_file(config), config.role, config.scale)
    train = _answer_column(train, config, config.train_file)
    evaluation = _role_dataset(config.eval_file, config.role, scale) if config.eval_file else None
    if evaluation is not None:
        evaluation = _answer_column(evaluation, config, config.eval_file)
    rewards = build_rewards(config, reward_model, scale)
    model_path = resolve_model_path(config.model)
    components = RewardComponentsLogger(rewards, metrics_path(config))
    tokenizer = _tokenizer(model_path)
    if config.role == "generator" and _plain_prompts(config, tokenizer):
        train = plain_prompt_dataset(train)
        evaluation = plain_prompt_dataset(evaluation) if evaluation is not None else None
    with contextlib.ExitStack() as stack:
        tool_options, tool_stats = _rollout_tools(config, tokenizer, stack)
        with _trl_checkpointing_names(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are using 'environment_factory'", category=UserWarning)
            trainer = _grpo_trainer_class()(
                model=model_path,
                reward_funcs=rewards,
                args=config,
                train_dataset=train,
                eval_dataset=evaluation,
                processing_class=tokenizer,
                peft_config=_peft_config(config),
                callbacks=[components, *([tool_stats] if tool_stats is not None else []), *(callbacks or [])],
                **tool_options,
            )
        trainer.component_loggers = (components,)
        trainer.extra_metrics = (tool_stats,) if tool_stats is not None else ()
        return _finish(trainer, config)


#: what follows a plain prompt, so that a base model starts its answer there
PLAIN_PROMPT_CUE = "Answer:\n"


def plain_prompt(messages: list[dict[str, Any]]) -> str:
    """A chat prompt as one text for a model without a chat template (a base model): the
    messages' contents, blank lines between them, then :data:`PLAIN_PROMPT_CUE`."""
    parts = [str(m.get("content") or "").strip() for m in messages]
    return "\n\n".join(p for p in parts if p) + "\n\n" + PLAIN_PROMPT_CUE


def plain_prompt_dataset(dataset: Any) -> Any:
    """``dataset`` with each conversational ``prompt`` turned into :func:`plain_prompt` text (rows
    whose prompt is already text stay as they are)."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        prompt = row["prompt"]
        return {"prompt": prompt if isinstance(prompt, str) else plain_prompt(prompt)}

    return dataset.map(convert)


def _plain_prompts(config: ProofcriticGRPOConfig, tokenizer: Any) -> bool:
    """Whether the generator's prompts go to the model as plain text: ``prompt_format: plain``, or
    ``auto`` with a tokenizer that has no chat template (a base model)."""
    if config.prompt_format == "plain":
        return True
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if config.prompt_format == "chat" and not has_template:
        raise ConfigError(
            f"prompt_format chat, but the tokenizer of {config.model} has no chat template (a base model?); "
            "use prompt_format plain or auto"
        )
    return not has_template


def _answer_column(dataset: Any, config: ProofcriticGRPOConfig, path: str | None) -> Any:
    """The generator data of an answer reward: ``reward: answer`` needs an answer in every row
    (the error counts the rows without one); ``answer+verifier`` takes rows without (proofs: the
    verifier alone scores them), so the column is added, empty, when no row has one."""
    if config.role != "generator" or config.reward == "verifier":
        return dataset
    answers = dataset["answer"] if "answer" in dataset.column_names else [None] * len(dataset)
    missing = [n for n, a in enumerate(answers, 1) if a is None or not str(a).strip()]
    if config.reward == "answer" and missing:
        raise ConfigError(
            f"{path}: reward answer needs an answer (or short_answer) in every row; {len(missing)} of "
            f"{len(answers)} row(s) have none (the first: row {missing[0]}). Use reward answer+verifier to let "
            "a verifier score the rows without one"
        )
    if "answer" not in dataset.column_names:
        dataset = dataset.add_column("answer", [None] * len(dataset))
    return dataset


def _rollout_tools(config: ProofcriticGRPOConfig, tokenizer: Any, stack: contextlib.ExitStack) -> tuple[dict, Any]:
    """The trainer's ``environment_factory`` when the config gives ``tools`` (issue #19: the
    sandbox in the rollouts, see :mod:`proofcritic.training.rollout_tools`), and the run stats;
    the sandbox pool is closed when ``stack`` closes."""
    if not config.tools:
        return {}, None
    from ..tools import SandboxPool
    from .rollout_tools import ToolRunStats, sandbox_environment_factory, tool_chat_template

    try:
        tool_chat_template(tokenizer, config.tool_chat_template)
    except InputError as error:
        raise ConfigError(str(error)) from None
    pool = SandboxPool(workers=config.tool_workers)
    stack.callback(pool.close)
    log = config.tool_log_file or str(Path(str(config.output_dir)) / "proofcritic_tool_runs.jsonl")
    factory, stats = sandbox_environment_factory(
        pool, timeout=config.tool_timeout, max_tool_calls=config.max_tool_calls, stats=ToolRunStats(log)
    )
    return {"environment_factory": factory}, stats


def _plain_dataset(path: str | Path, needed: tuple[str, ...], what: str):
    from datasets import Dataset

    dataset = Dataset.from_list(_read_jsonl(path))
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ConfigError(f"{path}: {what} rows need the column(s) {', '.join(missing)}")
    return dataset


def _sft_dataset(path: str | Path):
    from datasets import Dataset

    rows = _read_jsonl(path)
    if all("messages" in row for row in rows):
        return Dataset.from_list([{"messages": row["messages"]} for row in rows])
    return _plain_dataset(path, ("prompt", "completion"), "SFT")


def train_sft(config: ProofcriticSFTConfig, *, callbacks: list | None = None) -> str:
    """Supervised fine-tuning on ``prompt``/``completion`` (or ``messages``) rows."""
    from trl import SFTTrainer

    model_path = resolve_model_path(config.model)
    with _trl_checkpointing_names():
        trainer = SFTTrainer(
            model=model_path,
            args=config,
            train_dataset=_sft_dataset(_need_train_file(config)),
            eval_dataset=_sft_dataset(config.eval_file) if config.eval_file else None,
            processing_class=_tokenizer(model_path),
            peft_config=_peft_config(config),
            callbacks=[MetricsFileLogger(metrics_path(config)), *(callbacks or [])],
        )
    return _finish(trainer, config)


def _dpo_dataset(path: str | Path, config: ProofcriticDPOConfig):
    from datasets import Dataset

    rows = _read_jsonl(path)
    if all({"prompt", "chosen", "rejected"} <= set(row) for row in rows):
        return Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows])
    if not any("transcript" in row for row in rows):
        raise ConfigError(f"{path}: DPO rows need prompt/chosen/rejected, or solve results with a transcript")
    problems = None
    if config.problems_file:
        problems = {str(r.get("id")): r for r in _read_jsonl(config.problems_file)}
    pairs = pairs_from_traces(rows, problems, min_gain=config.min_score_gain)
    if not pairs:
        raise ConfigError(
            f"{path}: no preference pairs: no transcript has a proof that beat an earlier one"
            + ("" if problems else "; solve results name only problem ids, so set problems_file")
        )
    return Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])


def train_dpo(config: ProofcriticDPOConfig, *, callbacks: list | None = None) -> str:
    """DPO on preference pairs (a JSONL of pairs, or solve results via :func:`pairs_from_traces`)."""
    from trl import DPOTrainer

    model_path = resolve_model_path(config.model)
    with _trl_checkpointing_names():
        trainer = DPOTrainer(
            model=model_path,
            args=config,
            train_dataset=_dpo_dataset(_need_train_file(config), config),
            eval_dataset=_dpo_dataset(config.eval_file, config) if config.eval_file else None,
            processing_class=_tokenizer(model_path),
            peft_config=_peft_config(config),
            callbacks=[MetricsFileLogger(metrics_path(config)), *(callbacks or [])],
        )
    return _finish(trainer, config)
