"""The step-classification PRM (train prm): features, training on the tiny model, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from proofcritic.training.prm import aggregate_steps, prm_features, score_steps, train_prm
from proofcritic.training.recipes import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train" / "prm.jsonl"


def _rows() -> list[dict]:
    return [json.loads(line) for line in EXAMPLE.read_text().splitlines()]


def test_labels_sit_on_each_steps_separator(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = _rows()[1]  # good, bad, bad
    features = prm_features(tokenizer, row["prompt"], row["completions"], row["labels"], max_length=512)
    marked = [(i, m) for i, m in enumerate(features["labels"]) if m != -100]
    assert [m for _, m in marked] == [1, 0, 0]
    assert [i for i, _ in marked] == features["positions"]
    text = tokenizer.decode(features["input_ids"][: features["positions"][0] + 1])
    assert text.rstrip().endswith(row["completions"][0])  # the first label closes the first step
    last_only = prm_features(tokenizer, row["prompt"], row["completions"], row["labels"], last_only=True)
    assert [m for m in last_only["labels"] if m != -100] == [0]
    short = prm_features(tokenizer, row["prompt"], row["completions"], row["labels"], max_length=40)
    assert len(short["input_ids"]) <= 40 and len(short["positions"]) < 3  # steps that do not fit are cut


def test_config_checks():
    with pytest.raises(ConfigError, match="step_separator"):
        load_config(None, ["step_separator=", "use_cpu=true"], recipe="prm")
    config = load_config(None, ["use_cpu=true", "max_length=64"], recipe="prm")
    assert config.max_length == 64 and config.step_separator == "\n\n"


def test_aggregates():
    assert aggregate_steps([0.9, 0.2, 0.8], "min") == 0.2
    assert aggregate_steps([0.5, 0.5], "product") == 0.25
    assert aggregate_steps([0.9, 0.2, 0.8], "last") == 0.8
    assert aggregate_steps([], "min") == 0.0


@pytest.fixture(scope="module")
def trained_prm(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model trained as a PRM on the example rows (and a budget-stopped record)."""
    tmp_path = tmp_path_factory.mktemp("prm")
    data = tmp_path / "steps.jsonl"
    # a label-steps record stopped by its budget (labels for its first step only) trains on that step
    partial = {**_rows()[0], "labels": [True], "status": "budget_exhausted"}
    data.write_text("".join(json.dumps(r) + "\n" for r in [*_rows(), partial]))
    settings = {
        "model": str(tiny_model_dir),
        "train_file": str(data),
        "output_dir": str(tmp_path / "prm"),
        "use_cpu": True,
        "max_steps": 30,
        "per_device_train_batch_size": 7,
        "learning_rate": 3e-3,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "max_length": 256,
    }
    return Path(train_prm(load_config(None, settings, recipe="prm")))


@pytest.mark.slow  # trains the tiny model for 30 steps (~20 s)
def test_train_prm_on_the_tiny_model_learns_the_labels(trained_prm):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    out = trained_prm
    metrics = [json.loads(line) for line in (out / "proofcritic_metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 3 and losses[-1] < losses[0]
    model = AutoModelForTokenClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model.eval()
    torch.manual_seed(0)
    for row in _rows():  # the training rows: good steps above bad ones
        scores = score_steps(model, tokenizer, row["prompt"], row["completions"])
        assert len(scores) == len(row["completions"])
        good = [s for s, label in zip(scores, row["labels"]) if label]
        bad = [s for s, label in zip(scores, row["labels"]) if not label]
        if good and bad:
            assert min(good) > max(bad), (row["completions"], scores)


@pytest.mark.slow
async def test_solve_single_selects_by_prm(trained_prm):
    """best-of-n by the PRM: of two sampled proofs, the one whose steps the PRM scores higher is
    the answer, although the other has the higher self-score."""
    from scripted import Call, ScriptedBackend, generation_text

    from proofcritic.llm import Model
    from proofcritic.pipelines import Roles
    from proofcritic.pipelines.single import SingleConfig, SingleStrategy
    from proofcritic.types import Problem

    good, bad = _rows()[4], _rows()[5]  # n^3 - n: the right proof, and one with a false step
    problem = Problem(id="cubes", statement=good["prompt"])

    def script(call: Call) -> str:
        assert call.role == "generate"
        row, self_score = (bad, 1) if call.index == 0 else (good, 0.5)
        return generation_text("\n\n".join(row["completions"]), self_score)

    roles = Roles.from_models(Model(ScriptedBackend(script)))
    result = await SingleStrategy(samples=2, verify_n=0, select="prm", prm=str(trained_prm)).solve(problem, roles)
    assert result.proof.startswith(good["completions"][0]) and "Every square" not in result.proof
    assert result.stop_reason.startswith("generated 2 proof(s); chose by PRM (min over 3 step scores")
    [step] = [s for s in result.transcript if s["step"] == "prm"]
    assert step["chosen"] == 1 and step["scores"][1] > step["scores"][0]
    assert [len(scores) for scores in step["step_scores"]] == [3, 3]
    by_self_score = await SingleStrategy(samples=2, verify_n=0).solve(problem, roles)
    assert "Every square" in by_self_score.proof  # the self-score alone picks the wrong proof
    with pytest.raises(ValueError, match="select=prm needs prm"):
        SingleConfig(select="prm")


@pytest.mark.slow
def test_process_reward_for_generator_grpo(trained_prm, tmp_path):
    """train generator with process_reward_model: the PRM's aggregated step scores are a second
    reward; a right proof earns more than a wrong one, an empty one 0."""
    from scripted import ScriptedBackend, generation_text

    from proofcritic.llm import Model
    from proofcritic.pipelines.prm import load_scorer
    from proofcritic.training.recipes import build_rewards

    good, bad = _rows()[4], _rows()[5]
    config = load_config(
        None,
        {
            "role": "generator",
            "reward_model": "transformers/unused",
            "process_reward_model": str(trained_prm),
            "process_reward_aggregate": "min",
            "use_cpu": True,
            "output_dir": str(tmp_path / "out"),
            "num_generations": 2,
            "per_device_train_batch_size": 2,
        },
        recipe="grpo",
    )
    rewards = build_rewards(config, reward_model=Model(ScriptedBackend(lambda call: "")))
    assert [r.__name__ for r in rewards] == ["generator_reward", "process_reward"]
    process = rewards[1]
    completions = [generation_text("\n\n".join(row["completions"]), 1) for row in (good, bad)] + ["", "no sections"]
    values = process(completions, problem=[good["prompt"]] * 4)
    scorer = load_scorer(str(trained_prm))
    direct = score_steps(scorer.model, scorer.tokenizer, good["prompt"], good["completions"])
    assert values[0] == pytest.approx(min(direct))  # the solution's steps, scored at their separators
    assert values[0] > values[1] and values[2] == 0.0
    assert process.last_components[3]["steps"] == 1  # no ## Solution: the whole text is the proof
    with pytest.raises(ConfigError, match="needs role generator"):
        load_config(None, {"role": "verifier", "process_reward_model": "x", "use_cpu": True}, recipe="grpo")
