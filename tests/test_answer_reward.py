"""Answer-checked RL (issue #19 point 3): the rule-based correctness reward of generator GRPO
(``reward: answer``) on hand-written completions, and one GRPO step with it on the tiny model
whose logs carry accuracy, mean response length and clip ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.training import make_answer_reward
from proofcritic.training.recipes import ConfigError, ProofcriticGRPOConfig, build_rewards, train_grpo

ROOT = Path(__file__).resolve().parents[1]


def test_answer_reward_on_hand_written_completions():
    reward = make_answer_reward()
    completions = [
        "1 + 2 + ... + 10 = 55, so the answer is \\boxed{55}.",  # right
        "Adding up gives \\boxed{45}.",  # wrong
        [{"role": "assistant", "content": "1/2 + 1/3 = 0.5 + 0.333...\nFinal answer: 5/6"}],  # equivalent form
        "I am not sure how to go on",  # no answer extracted... the last line is taken as one
        "",  # nothing at all
        "Anything",  # no reference answer
    ]
    answers = ["55", "55", "\\frac{5}{6}", "55", "55", None]
    assert reward(completions, answer=answers) == [1.0, 0.0, 1.0, 0.0, 0.0, None]
    answered = [c["answered"] for c in reward.last_components]
    assert answered == [1.0, 1.0, 1.0, 1.0, 0.0, None]
    assert [c["accuracy"] for c in reward.last_components] == [1.0, 0.0, 1.0, 0.0, 0.0, None]
    with pytest.raises(Exception, match="answer"):
        reward(["\\boxed{1}"])  # the answer column is required


def test_answer_reward_config(tmp_path):
    common = {"output_dir": str(tmp_path), "num_generations": 2, "per_device_train_batch_size": 2}
    config = ProofcriticGRPOConfig(**common, role="generator", reward="Answer")  # no reward model needed
    assert config.reward == "answer"
    (reward,) = build_rewards(config)
    assert reward.__name__ == "answer_reward"
    with pytest.raises(ConfigError, match="role generator"):
        ProofcriticGRPOConfig(**common, role="verifier", reward="answer")
    with pytest.raises(ConfigError, match="verifier or answer"):
        ProofcriticGRPOConfig(**common, role="generator", reward="format")
    with pytest.raises(ConfigError, match="reward_model"):  # the verifier reward still needs its model
        ProofcriticGRPOConfig(**common, role="generator")


def test_grpo_with_the_answer_reward_logs_accuracy_length_and_clip_ratio(tmp_path, tiny_model_dir):
    rows = [
        {"problem": "What is 2 + 3?", "answer": "5"},
        {"problem": "What is 1/2 + 1/4?", "short_answer": "3/4"},  # AnswerBench's column name works too
    ]
    data = tmp_path / "answers.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "generator",
            "--reward",
            "answer",
            "--config",
            str(ROOT / "examples" / "train" / "simplerl_answer.yaml"),
            "--output-dir",
            str(out),
            *("--set", f"model={tiny_model_dir}", "--set", f"train_file={data}", "--set", "max_steps=1"),
            *("--set", "num_generations=2", "--set", "per_device_train_batch_size=4"),
            *("--set", "max_completion_length=8"),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = [json.loads(line) for line in (out / "proofcritic_metrics.jsonl").read_text().splitlines()]
    (step,) = [m for m in metrics if "rewards/answer_reward/mean" in m]
    for name in ("answer_reward/accuracy", "answer_reward/answered", "completions/clipped_ratio"):
        assert 0.0 <= step[name] <= 1.0, (name, step)
    assert 0 < step["completions/mean_length"] <= 8
    # the accuracy is the mean answer reward; 8-token answers of a random tiny model are cut off
    assert step["answer_reward/accuracy"] == pytest.approx(step["rewards/answer_reward/mean"], abs=1e-5)
    assert step["completions/clipped_ratio"] > 0


def test_answer_reward_needs_answers_in_the_data(tmp_path, tiny_model_dir):
    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"problem": "What is 2 + 3?"}) + "\n", encoding="utf-8")
    config = ProofcriticGRPOConfig(
        output_dir=str(tmp_path / "out"),
        model=str(tiny_model_dir),
        role="generator",
        reward="answer",
        train_file=str(data),
        num_generations=2,
        per_device_train_batch_size=2,
        use_cpu=True,
    )
    with pytest.raises(ConfigError, match="answer"):
        train_grpo(config)


def _base_model(tiny_model_dir: Path, folder: Path) -> Path:
    """A copy of the tiny model whose tokenizer has no chat template, as a base model's."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    assert not AutoTokenizer.from_pretrained(folder).chat_template
    return folder


def test_plain_prompts_for_a_base_model():
    from proofcritic.training.recipes import PLAIN_PROMPT_CUE, plain_prompt

    text = plain_prompt([{"role": "system", "content": "Be exact. "}, {"role": "user", "content": "What is 2 + 3?"}])
    assert text == "Be exact.\n\nWhat is 2 + 3?\n\n" + PLAIN_PROMPT_CUE
    with pytest.raises(ConfigError, match="prompt_format"):
        ProofcriticGRPOConfig(
            output_dir="out", role="generator", reward="answer", prompt_format="markdown", use_cpu=True
        )


def test_grpo_answer_reward_from_a_base_model_without_chat_template(tmp_path, tiny_model_dir):
    """SimpleRL-Zoo trains base models: a tokenizer without a chat template gets plain-text prompts
    (prompt_format auto), and prompt_format chat is refused with the reason."""
    base = _base_model(tiny_model_dir, tmp_path / "base")
    data = tmp_path / "answers.jsonl"
    data.write_text(json.dumps({"problem": "What is 2 + 3?", "answer": "5"}) + "\n", encoding="utf-8")
    settings = {
        "model": str(base),
        "role": "generator",
        "reward": "answer",
        "train_file": str(data),
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "max_completion_length": 8,
        "max_steps": 1,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
    }
    with pytest.raises(ConfigError, match="no chat template"):
        train_grpo(ProofcriticGRPOConfig(output_dir=str(tmp_path / "chat"), prompt_format="chat", **settings))
    out = tmp_path / "plain"
    train_grpo(ProofcriticGRPOConfig(output_dir=str(out), **settings))
    metrics = [json.loads(line) for line in (out / "proofcritic_metrics.jsonl").read_text().splitlines()]
    (step,) = [m for m in metrics if "rewards/answer_reward/mean" in m]
    assert 0 < step["completions/mean_length"] <= 8
