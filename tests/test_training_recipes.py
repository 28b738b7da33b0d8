"""Training recipes on TRL: config validation, GRPO per role with the real reward path, SFT, DPO, CLI.

Runs on CPU with the tiny random Llama (``tiny_model_dir``). A random model never writes the
output protocol, so its GRPO rewards would all be 0 and the reward model would never be asked.
The GRPO role tests therefore start from ``warm_model_dir`` (tests/conftest.py): the tiny model
after ``tiny_model.warm_up`` (tests/tiny_model.py), a short SFT run (one per session) on the
GRPO prompts of all three roles and on the prompts the reward model sees, each answered with a
short, well-formed protocol output. The warmed-up model is both the policy and the reward model
(served by proofcritic's transformers backend), so rewards are non-zero, the reward model is
called during training, and the advantages come from real reward differences (sampled
completions that break the format earn 0), with no entropy bonus.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("yaml")

from tiny_model import write_sample_data
from transformers import TrainerCallback

from proofcritic.training.recipes import (
    ConfigError,
    ProofcriticDPOConfig,
    ProofcriticGRPOConfig,
    ProofcriticSFTConfig,
    build_rewards,
    load_config,
    pairs_from_traces,
    train_dpo,
    train_grpo,
    train_sft,
)

STATEMENT = "Prove that the sum of two even integers is even."
PROOF = "Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even."


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _data(tmp_path: Path, role: str) -> Path:
    """The package's sample records of ``role``: the prompts the warm-up was taught on."""
    return write_sample_data(tmp_path, role)


def _tiny_args(tmp_path: Path, **extra) -> dict:
    args = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "bf16": False,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
    }
    return {**args, **extra}


def _params(folder) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return {k: v.detach().clone().to(torch.float32) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- configs


def test_num_generations_must_divide_the_batch(tmp_path):
    with pytest.raises(ConfigError, match=r"per_device_train_batch_size to a multiple of 2"):
        ProofcriticGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=3)
    with pytest.raises(ConfigError, match=r"num_generations >= 2"):
        ProofcriticGRPOConfig(output_dir=str(tmp_path), num_generations=1, per_device_train_batch_size=2)


def test_unknown_role_and_missing_reward_model(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown role 'critic'; set role to one of verifier, meta_verifier"):
        ProofcriticGRPOConfig(output_dir=str(tmp_path), role="critic", num_generations=2, per_device_train_batch_size=2)
    with pytest.raises(ConfigError, match=r"set reward_model"):
        ProofcriticGRPOConfig(
            output_dir=str(tmp_path), role="generator", num_generations=2, per_device_train_batch_size=2
        )
    config = ProofcriticGRPOConfig(
        output_dir=str(tmp_path), role="meta-verifier", num_generations=2, per_device_train_batch_size=2, use_cpu=True
    )
    assert config.role == "meta_verifier" and config.bf16 is False


def test_load_config_yaml_overrides_and_typos(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "role: generator\nreward_model: transformers/x\nnum_generations: 2\n"
        "per_device_train_batch_size: 2\nlora_target_modules: [q_proj, v_proj]\n"
    )
    config = load_config(path, ["lora_r=4", "learning_rate=1e-5", f"output_dir={tmp_path}/o"])
    assert isinstance(config, ProofcriticGRPOConfig)
    assert (config.lora_r, config.learning_rate, config.lora_target_modules) == (4, 1e-5, ["q_proj", "v_proj"])
    assert config.reward_alpha == 0.76 and config.reward_beta == 0.24
    with pytest.raises(ConfigError, match=r"did you mean 'num_generations'"):
        load_config(path, ["num_generation=4"])
    with pytest.raises(ConfigError, match=r"not KEY=VALUE"):
        load_config(path, ["lora_r"])
    assert isinstance(load_config(None, {"output_dir": str(tmp_path)}, recipe="sft"), ProofcriticSFTConfig)


def test_pairs_from_traces():
    refine = {
        "problem_id": "p1",
        "transcript": [
            {"step": "generate", "round": 1, "proof": "bad proof", "self_score": 0.0, "format_ok": True},
            {"step": "verify", "round": 1, "mean": 0.0},
            {"step": "refine", "round": 2, "proof": "broken", "format_ok": False},
            {"step": "refine", "round": 3, "proof": "good proof", "self_score": 1.0, "format_ok": True},
            {"step": "verify", "round": 3, "mean": 1.0},
        ],
    }
    agent = {
        "problem_id": "p2",
        "problem": {"id": "p2", "statement": "Prove Q."},
        "transcript": [
            {"run": 0, "iteration": 0, "step": "solve", "proof": "first", "usable": True},
            {"run": 0, "iteration": 1, "step": "verify", "score": 0.5},
            {"run": 0, "iteration": 1, "step": "repair", "proof": "repaired", "usable": True},
            {"run": 0, "iteration": 2, "step": "verify", "score": 1.0},
            {"run": 0, "iteration": 2, "step": "verify", "score": 0.5},
        ],
    }
    pairs = pairs_from_traces([refine, agent, {"problem_id": "p3", "transcript": []}], {"p1": "Prove P."})
    assert [(p["problem_id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("p1", "good proof", "bad proof"),
        ("p2", "repaired", "first"),
    ]
    assert pairs[1]["chosen_score"] == 0.75 and "Prove Q." in pairs[1]["prompt"][-1]["content"]
    assert pairs_from_traces([agent], min_gain=0.5) == []
    assert pairs_from_traces([refine]) == []  # no statement for p1


# --------------------------------------------------------------------------- reward path


def test_component_metrics_per_role():
    """Format failures, exact score accuracy against the references, and (generator) self-score
    vs verifier agreement, from the rewards' own per-sample components."""
    from tiny_model import protocol_output

    from proofcritic.training import make_meta_verifier_reward
    from proofcritic.training.recipes import RewardComponentsLogger, component_metrics

    reward = make_meta_verifier_reward()
    logger = RewardComponentsLogger([reward])
    # predicted 1 vs 1 (hit), 0.5 vs 1 (miss), unparseable vs 0 (format failure, miss)
    reward(
        [protocol_output("meta_verifier", 1), protocol_output("meta_verifier", 0.5), "no score"],
        reference_meta_score=[1, 1, 0],
    )
    first = component_metrics("m", reward.last_components)
    assert first["m/format_failure_rate"] == pytest.approx(1 / 3)
    assert first["m/score_accuracy"] == pytest.approx(1 / 3)
    assert first["m/r_score"] == pytest.approx((1 + 0.5 + 0) / 3)
    reward([protocol_output("meta_verifier", 0)], reference_meta_score=[0])  # a second batch: a hit
    drained = logger.drain()  # both batches, sample-weighted
    assert drained["meta_verifier_reward/score_accuracy"] == pytest.approx(2 / 4)
    assert drained["meta_verifier_reward/format_failure_rate"] == pytest.approx(1 / 4)
    assert logger.drain() == {}  # nothing new since

    generator = [
        {"reward": 0.9, "r_format": 1.0, "s_self": 1.0, "r_y": 1.0},
        {"reward": 0.5, "r_format": 1.0, "s_self": 1.0, "r_y": 0.5},
        {"reward": 0.0, "r_format": 0.0, "s_self": None, "r_y": None},
    ]
    metrics = component_metrics("g", generator)
    assert metrics["g/self_score_agreement"] == pytest.approx(0.75)  # mean 1 - |s' - s| where verified
    assert metrics["g/self_score_exact_agreement"] == pytest.approx(0.5)
    assert metrics["g/format_failure_rate"] == pytest.approx(1 / 3)
    assert "g/score_accuracy" not in metrics


def test_build_rewards_calls_the_reward_model(tmp_path, tiny_model_dir):
    """The generator reward asks the reward model (transformers backend on the tiny model)."""
    from proofcritic.llm import get_model

    config = ProofcriticGRPOConfig(
        output_dir=str(tmp_path),
        role="generator",
        num_generations=2,
        per_device_train_batch_size=2,
        reward_model=f"transformers/{tiny_model_dir}",
        reward_model_max_tokens=8,
    )
    model = get_model(config.reward_model, cache=False)
    (reward,) = build_rewards(config, model)
    from proofcritic.generator import parse_generation

    text = (
        "## Solution\nLet a = 2m and b = 2n; a + b = 2(m + n).\n\n## Self Evaluation\n"
        "Here is my evaluation of the solution: the proof is complete.\n\nBased on my evaluation, "
        "the final overall score should be: \\boxed{1}"
    )
    if not parse_generation(text).format_ok:
        pytest.skip("the sample completion does not match the generator protocol")
    rewards = reward([text], problem=[STATEMENT])
    assert reward.last_components[0]["r_format"] == 1.0
    assert "verifier_scores" in reward.last_components[0]
    assert len(rewards) == 1


# --------------------------------------------------------------------------- GRPO per role


_REWARD_NAME = {"verifier": "verifier_reward", "meta_verifier": "meta_verifier_reward", "generator": "generator_reward"}


class _Watch(TrainerCallback):
    """Keeps the trainer state and every log dict the callbacks were handed (as an integration sees it)."""

    def __init__(self):
        self.state, self.logs = None, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.state = state
        self.logs.append(dict(logs or {}))


#: the component metrics each role must log (besides TRL's rewards/<name>/mean)
_ROLE_METRICS = {
    "verifier": ("r_format", "r_score", "r_meta", "format_failure_rate", "score_accuracy"),
    "meta_verifier": ("r_format", "r_score", "format_failure_rate", "score_accuracy"),
    "generator": ("r_format", "r_y", "format_failure_rate", "self_score_agreement", "self_score_exact_agreement"),
}


@pytest.mark.parametrize("role", ["verifier", "meta_verifier", "generator"])
def test_grpo_role_trains_logs_and_reloads(tmp_path, warm_model_dir, role):
    from transformers import AutoModelForCausalLM

    from proofcritic.llm import GenerateConfig, get_model

    reward_model_name = None if role == "meta_verifier" else f"transformers/{warm_model_dir}"
    reward_model = (
        None
        if reward_model_name is None
        else get_model(reward_model_name, cache=False, defaults=GenerateConfig(max_tokens=96, temperature=0.0))
    )
    # the verifier run reports to TensorBoard: the component metrics must reach its event file
    report_to = "tensorboard" if role == "verifier" else "none"
    config = ProofcriticGRPOConfig(
        **_tiny_args(tmp_path, learning_rate=1e-3, report_to=report_to),
        model=str(warm_model_dir),
        role=role,
        train_file=str(_data(tmp_path, role)),
        reward_model=reward_model_name,
        reward_model_max_tokens=96,
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=128,
    )
    assert config.entropy_coef == 0.0  # the gradient comes from the rewards alone
    before = _params(warm_model_dir)
    watch = _Watch()
    started = time.monotonic()
    out = train_grpo(config, reward_model=reward_model, callbacks=[watch])
    elapsed = time.monotonic() - started
    after = _params(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (before[name] == after[name]).all(), "the weights did not change"

    reward_name = _REWARD_NAME[role]
    history = [h for h in watch.state.log_history if f"rewards/{reward_name}/mean" in h]
    assert len(history) == 2, watch.state.log_history  # one log per step (logging_steps=1)
    for entry in history:  # the component metrics are in trainer.state.log_history ...
        for metric in _ROLE_METRICS[role]:
            value = entry.get(f"{reward_name}/{metric}")
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (metric, entry)
        assert entry[f"{reward_name}/format_failure_rate"] == pytest.approx(1 - entry[f"{reward_name}/r_format"])
        # the mean reward over the batch is the mean of the per-sample rewards TRL logged
        assert entry[f"{reward_name}/reward"] == pytest.approx(entry[f"rewards/{reward_name}/mean"], abs=1e-5)
    seen = [log for log in watch.logs if f"{reward_name}/r_format" in log]
    assert len(seen) == 2  # ... and in the logs every callback (report_to integration) is handed
    assert max(h[f"rewards/{reward_name}/mean"] for h in history) > 0, history  # rewards not all zero
    assert min(h[f"{reward_name}/format_failure_rate"] for h in history) < 1.0, history

    metrics = [json.loads(line) for line in (Path(out) / "proofcritic_metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if f"{reward_name}/format_failure_rate" in m]
    assert [m[f"{reward_name}/r_format"] for m in logged] == [h[f"{reward_name}/r_format"] for h in history]
    if role == "generator":  # R_Y came from the reward model's verification
        assert reward_model.usage.calls > 0
    elif role == "verifier":  # R_meta came from the reward model's meta-verification
        assert reward_model.usage.calls > 0
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )

        (event_file,) = Path(out).glob("runs/*/events.out.tfevents*")  # TensorBoard's default folder
        events = EventAccumulator(str(event_file.parent)).Reload()
        tags = events.Tags()["scalars"]
        assert f"train/{reward_name}/score_accuracy" in tags, tags
        assert len(events.Scalars(f"train/{reward_name}/format_failure_rate")) == 2
    AutoModelForCausalLM.from_pretrained(out)
    assert elapsed < 240


def test_grpo_with_lora(tmp_path, tiny_model_dir):
    config = ProofcriticGRPOConfig(
        **_tiny_args(tmp_path, entropy_coef=1.0, max_steps=1),
        model=str(tiny_model_dir),
        role="meta_verifier",
        train_file=str(_data(tmp_path, "meta_verifier")),
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=8,
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
    )
    out = Path(train_grpo(config))
    assert (out / "adapter_config.json").exists()


def test_grpo_verifier_on_points_labels(tmp_path, tiny_model_dir):
    """`label --scale points` output as the train file: the scale comes from its records, the
    prompts are the points verifier's, and the points reward scores the rollouts against the
    labelled points (the random tiny model never writes the protocol: every sample is a format
    failure, and the entropy bonus moves the weights). Asking for the ternary scale is refused."""
    from scripted import write_points_labels

    labels = write_points_labels(tmp_path, STATEMENT)
    common = {
        **_tiny_args(tmp_path, entropy_coef=1.0, max_steps=1),
        "model": str(tiny_model_dir),
        "role": "verifier",
        "train_file": str(labels),
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "max_completion_length": 8,
    }
    (reward,) = build_rewards(ProofcriticGRPOConfig(**common, scale="points"))
    assert reward.columns == ("reference_points", "max_points")
    with pytest.raises(Exception, match=r"on the points scale, but the data set was asked for the ternary"):
        train_grpo(ProofcriticGRPOConfig(**common, scale="ternary"))
    with pytest.raises(ConfigError, match=r"scale points trains the verifier or the meta-verifier"):
        ProofcriticGRPOConfig(**{**common, "role": "generator", "reward_model": "transformers/x"}, scale="points")
    watch = _Watch()
    out = train_grpo(ProofcriticGRPOConfig(**common), callbacks=[watch])
    [entry] = [h for h in watch.state.log_history if "verifier_reward/points_ref" in h]
    assert entry["verifier_reward/points_ref"] in (3.0, 7.0)  # the two labelled proofs: 3 and 7 of 7
    assert entry["verifier_reward/format_failure_rate"] == 1.0 and entry["rewards/verifier_reward/mean"] == 0.0
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (_params(tiny_model_dir)[name] == _params(out)[name]).all()


# --------------------------------------------------------------------------- SFT and DPO


def test_sft_runs_and_changes_weights(tmp_path, tiny_model_dir):
    data = _write(
        tmp_path / "sft.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": STATEMENT}],
                "completion": [{"role": "assistant", "content": PROOF}],
            },
            {
                "prompt": [{"role": "user", "content": "Prove 3 | n^3 - n."}],
                "completion": [{"role": "assistant", "content": "n^3 - n = (n-1)n(n+1)."}],
            },
        ],
    )
    config = ProofcriticSFTConfig(
        **_tiny_args(tmp_path),
        model=str(tiny_model_dir),
        train_file=str(data),
        per_device_train_batch_size=2,
        max_length=128,
    )
    out = train_sft(config)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (_params(tiny_model_dir)[name] == _params(out)[name]).all()


def test_dpo_from_solve_transcripts(tmp_path, tiny_model_dir):
    results = _write(
        tmp_path / "solve.jsonl",
        [
            {
                "problem_id": "p1",
                "strategy": "refine",
                "transcript": [
                    {"step": "generate", "round": 1, "proof": "It is obvious.", "format_ok": True},
                    {"step": "verify", "round": 1, "mean": 0.0},
                    {"step": "refine", "round": 2, "proof": PROOF, "format_ok": True},
                    {"step": "verify", "round": 2, "mean": 1.0},
                ],
            },
        ],
    )
    problems = _write(tmp_path / "problems.jsonl", [{"id": "p1", "statement": STATEMENT}])
    config = ProofcriticDPOConfig(
        **_tiny_args(tmp_path),
        model=str(tiny_model_dir),
        train_file=str(results),
        problems_file=str(problems),
        per_device_train_batch_size=1,
        max_length=None,
    )  # no truncation: the generate prompt alone outgrows a short limit
    out = train_dpo(config)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (_params(tiny_model_dir)[name] == _params(out)[name]).all()


# --------------------------------------------------------------------------- SmolLM2 and CLI


@pytest.mark.slow
def test_grpo_smollm2_one_step(tmp_path, smollm2_dir):
    config = ProofcriticGRPOConfig(
        **_tiny_args(tmp_path, entropy_coef=1.0, learning_rate=1e-5, max_steps=1),
        model="smollm2",
        role="meta_verifier",
        train_file=str(_data(tmp_path, "meta_verifier")),
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=8,
    )
    out = train_grpo(config)
    assert (Path(out) / "config.json").exists()


def test_train_cli_with_yaml(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from proofcritic.cli._train import train_app

    config = tmp_path / "grpo.yaml"
    config.write_text(
        f"role: meta_verifier\nmodel: {tiny_model_dir}\ntrain_file: {_data(tmp_path, 'meta_verifier')}\n"
        "use_cpu: true\nbf16: false\nnum_generations: 2\nper_device_train_batch_size: 2\n"
        "max_completion_length: 8\nlogging_steps: 1\nsave_strategy: 'no'\nreport_to: none\n"
    )
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(
        train_app, ["meta-verifier", "--config", str(config), "--set", "max_steps=1", "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "config.json").exists() and str(out) in result.output
    bad = CliRunner().invoke(train_app, ["generator", "--config", str(config), "--set", "max_steps=1"])
    assert bad.exit_code != 0 and "reward_model" in bad.output
