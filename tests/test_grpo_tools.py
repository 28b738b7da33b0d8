"""Tool-integrated generator GRPO (issue #19 point 2): rollouts that call the sandbox through TRL's
``environment_factory``, and the answer reward with the verifier's weighted in (point 3).

A freshly initialised tiny model never writes a tool call, so :func:`teach_tool_call` first
trains it (a plain loop of cross-entropy steps on the token ids GRPO will render) to answer the
problem's prompt with a ``<tool_call>`` of ``python`` that prints 6*7, and to answer the tool's
response with a boxed 42: the model then writes the call itself in the GRPO rollouts, TRL parses
it, the sandbox runs the code, and the printed 42 comes back as the tool message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.training.recipes import ConfigError, ProofcriticGRPOConfig, build_rewards

ROOT = Path(__file__).resolve().parents[1]
CALL = '<tool_call>\n{"name": "python", "arguments": {"code": "print(6*7)"}}\n</tool_call>'
FINAL = "The program printed 42, so the answer is \\boxed{42}."


def teach_tool_call(model_dir: Path, out: Path, prompt: list[dict], steps: int = 40) -> Path:
    """The tiny model at ``model_dir``, trained to call the sandbox on ``prompt`` (chat messages)
    and to box 42 after the tool's answer; saved (with the ChatML tool template) to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from proofcritic.tools import SandboxPool
    from proofcritic.training.rollout_tools import sandbox_environment_factory, tool_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tool_chat_template(tokenizer, "auto") == "chatml"  # the tiny template cannot render tools
    pool = SandboxPool(workers=1)
    try:
        factory, _ = sandbox_environment_factory(pool, timeout=5, max_tool_calls=2)
        schema = [factory().python]
    finally:
        pool.close()
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": "print(6*7)"}}}]}  # fmt: skip
    tool = {"role": "tool", "name": "python", "content": "42\n(1 code run(s) left)"}

    def ids(messages: list[dict], generation_prompt: bool) -> list[int]:
        return tokenizer.apply_chat_template(
            messages, tools=schema, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True
        )["input_ids"]

    first = ids(prompt, True)
    second = ids([*prompt, call, tool], True)
    examples = [
        (first, tokenizer(CALL + "<|im_end|>", add_special_tokens=False)["input_ids"]),
        (second, tokenizer(FINAL + "<|im_end|>", add_special_tokens=False)["input_ids"]),
    ]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread (several contend on a busy CPU)
    try:
        for _ in range(steps):
            for context, target in examples:
                input_ids = torch.tensor([context + target])
                labels = torch.tensor([[-100] * len(context) + target])
                loss = model(input_ids=input_ids, labels=labels).loss
                losses.append(loss.item())
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    assert max(losses[-2:]) < 0.05, losses[-2:]  # both answers learnt
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "proofcritic_metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two GRPO steps with checkpoints (40 s to 3 min on 2 busy cores)
def test_grpo_rollouts_call_the_sandbox(tmp_path, tiny_model_dir):
    # a short prompt of its own (a training row with a prompt is used as it is): the generator
    # prompt would make every step of the teaching loop and of GRPO several times longer
    prompt = [{"role": "user", "content": "What is 6 times 7? Compute it with python."}]
    model = teach_tool_call(tiny_model_dir, tmp_path / "caller", prompt)
    data = tmp_path / "answers.jsonl"
    row = {"prompt": prompt, "problem": "What is 6 times 7?", "answer": "42"}
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    command = [
        "train",
        "generator",
        "--reward",
        "answer",
        "--config",
        str(ROOT / "examples" / "train" / "tora_answer.yaml"),
        "--output-dir",
        str(out),
        *("--set", f"model={model}", "--set", f"train_file={data}", "--set", "max_steps=1"),
        *("--set", "num_generations=2", "--set", "per_device_train_batch_size=2", "--set", "lora_r=0"),
        *("--set", "max_completion_length=192", "--set", "temperature=0.2"),
        *("--set", "save_strategy=steps", "--set", "save_steps=1"),
    ]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, (result.output, result.exception)
    (step,) = [m for m in _metrics(out) if "rewards/answer_reward/mean" in m]
    # the model wrote the call, TRL parsed it and ran it in the sandbox
    assert step["tools/call_frequency"] >= 1.0, step
    assert step["tools/sandbox_runs"] >= 2, step  # at least one run in each of the 2 rollouts
    assert step["tools/failure_frequency"] == 0.0
    assert step["tools/sandbox_errors"] == 0.0 and step["tools/sandbox_limit_hits"] == 0.0
    runs = [json.loads(line) for line in (out / "proofcritic_tool_runs.jsonl").read_text().splitlines()]
    assert len(runs) == step["tools/sandbox_runs"]
    assert {r["rollout"] for r in runs} == {1, 2} and all(r["step"] == 1 for r in runs)
    for run in runs:  # the sandbox really computed 6*7, and that is what the model was shown
        assert run["code"] == "print(6*7)" and run["ok"] and run["output"].startswith("42\n"), run
    # the rollouts went on after the tool's message: the model boxes 42 only after seeing a tool response
    assert step["answer_reward/accuracy"] == 1.0, step
    # accuracy, mean response length and clip ratio are logged with tools on too
    for name in ("answer_reward/accuracy", "completions/clipped_ratio"):
        assert 0.0 <= step[name] <= 1.0, (name, step)
    assert 0 < step["completions/mean_length"] <= 192
    # the saved tokenizer keeps the tool template, so the trained model can be run with tools
    assert "<tool_call>" in json.dumps(json.loads((out / "tokenizer_config.json").read_text()))

    # a second step resumes from the step-1 checkpoint: step 1's rollouts (and tool runs) are not redone
    command[command.index("max_steps=1")] = "max_steps=2"
    result = CliRunner().invoke(app, [*command, "--set", "resume_from_checkpoint=true"])
    assert result.exit_code == 0, (result.output, result.exception)
    steps = [m["step"] for m in _metrics(out) if "rewards/answer_reward/mean" in m]
    assert steps == [1, 2], steps
    runs = [json.loads(line) for line in (out / "proofcritic_tool_runs.jsonl").read_text().splitlines()]
    assert [r["step"] for r in runs].count(1) == step["tools/sandbox_runs"] and runs[-1]["step"] == 2


def test_tool_config_is_checked(tmp_path):
    common = {"output_dir": str(tmp_path), "num_generations": 2, "per_device_train_batch_size": 2}
    config = ProofcriticGRPOConfig(**common, role="generator", reward="answer", tools="python", max_tool_calls=3)
    assert config.tools == ["python"] and config.max_tool_calling_iterations == 3
    with pytest.raises(ConfigError, match="rollouts may call python"):
        ProofcriticGRPOConfig(**common, role="generator", reward="answer", tools=["lean"])
    with pytest.raises(ConfigError, match="role generator"):
        ProofcriticGRPOConfig(**common, role="verifier", tools=["python"])
    with pytest.raises(ConfigError, match="max_tool_calls"):
        ProofcriticGRPOConfig(**common, role="generator", reward="answer", tools=["python"], max_tool_calls=0)
    with pytest.raises(ConfigError, match="tool_chat_template"):
        ProofcriticGRPOConfig(**common, role="generator", reward="answer", tools=["python"], tool_chat_template="x")


def test_the_model_template_is_refused_when_it_cannot_render_tools(tiny_model_dir):
    from transformers import AutoTokenizer

    from proofcritic.errors import InputError
    from proofcritic.training.rollout_tools import tool_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(InputError, match="cannot render a tool-calling conversation"):
        tool_chat_template(tokenizer, "model")
    assert tool_chat_template(tokenizer, "chatml") == "chatml"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=[], tokenize=False)
    assert "Qwen" not in rendered
    # a template that renders tool calls and that TRL can parse is kept as it is
    from trl.chat_template_utils import qwen2_5_chat_template

    own = AutoTokenizer.from_pretrained(tiny_model_dir)
    own.chat_template = qwen2_5_chat_template
    assert tool_chat_template(own, "auto") is None and own.chat_template == qwen2_5_chat_template
    assert (getattr(own, "response_template", None) or getattr(own, "response_schema", None)) is not None
    with pytest.raises(InputError, match="must be one of"):
        tool_chat_template(own, "qwen")


async def test_the_environment_runs_the_sandbox_and_stops_at_the_limit():
    from proofcritic.tools import SandboxPool
    from proofcritic.training.rollout_tools import sandbox_environment_factory

    pool = SandboxPool(workers=1)
    try:
        # a generous time limit: a busy machine must not turn these runs into timeouts
        factory, stats = sandbox_environment_factory(pool, timeout=60, max_tool_calls=2)
        env = factory()
        env.reset(prompt=[], answer="1")
        first = await env.python("print(sum(range(11)))")
        assert first.startswith("55") and "1 code run(s) left" in first, first
        second = await env.python("print('before')\n1 / 0")  # the error is shown to the model
        assert second.startswith("before") and "ZeroDivisionError" in second and "no code runs left" in second
        third = await env.python("print(1)")
        assert third.startswith("Not run") and len(env.calls) == 2
        assert env.calls[1]["error"].startswith("ZeroDivisionError")
        metrics = stats.drain()
        assert metrics["tools/sandbox_runs"] == 2 and metrics["tools/sandbox_errors"] == 1, metrics
        assert metrics["tools/sandbox_limit_hits"] == 0
        assert metrics["tools/refused_calls"] == 1 and metrics["tools/runs_per_rollout"] == 2
        assert stats.drain() == {}  # nothing new since
    finally:
        pool.close()


def test_rewards_read_a_tool_rollout_whole():
    """A rollout that called tools reads as tora writes a solution: turns, calls, outputs, in order."""
    from proofcritic.generator import parse_generation
    from proofcritic.training import completion_text, make_answer_reward

    call = {"type": "function", "function": {"name": "python", "arguments": {"code": "print(6*7)"}}}
    rollout = [
        {"role": "assistant", "content": "## Solution\nWe compute the product.", "tool_calls": [call]},
        {"role": "tool", "name": "python", "content": "42\n(1 code run(s) left)"},
        {"role": "assistant", "content": "So 6 * 7 = \\boxed{42}.\n## Self Evaluation\nBased on the above, the score is \\boxed{1}"},
    ]  # fmt: skip
    text = completion_text(rollout)
    assert text.index("We compute") < text.index("```python\nprint(6*7)\n```") < text.index("```output\n42")
    assert text.index("```output\n42") < text.index("\\boxed{42}")
    assert "print(6*7)" in parse_generation(text).proof  # the computation is part of the proof a verifier reads
    assert make_answer_reward()([rollout], answer=["42"]) == [1.0]
    assert completion_text([{"role": "assistant", "content": "plain"}]) == "plain"  # no tools: as before


# --------------------------------------------------------------------------- answer + verifier


def test_answer_plus_verifier_reward(tmp_path):
    from scripted import ScriptedBackend, generation_text, meta_text, verification_text

    from proofcritic.llm import Model

    # the verifier grades every proof 0.5; as the meta-verifier it confirms each self-evaluation
    backend = ScriptedBackend(lambda call: meta_text(1) if call.role == "meta_verify" else verification_text(0.5))
    model = Model(backend)
    common = {"output_dir": str(tmp_path), "num_generations": 2, "per_device_train_batch_size": 2}
    with pytest.raises(ConfigError, match="reward_model"):
        ProofcriticGRPOConfig(**common, role="generator", reward="answer+verifier")
    config = ProofcriticGRPOConfig(
        **common, role="generator", reward="answer + verifier", reward_model="scripted/v", reward_verifier_weight=0.25
    )
    assert config.reward == "answer+verifier" and config.reward_weights == [1.0, 0.25]
    answer, verified = build_rewards(config, reward_model=model)
    assert (answer.__name__, verified.__name__) == ("answer_reward", "generator_reward")
    completions = [generation_text("6 * 7 = 42, so the answer is \\boxed{42}.", 1), generation_text("2 = 2 * 1.", 1)]
    columns = {"problem": ["What is 6*7?", "Prove that 2 is even."], "answer": ["42", None]}
    assert answer(completions, **columns) == [1.0, None]  # the proof row has no answer: the verifier alone
    # both rows verified: R_Y = 0.5, R_Z = (1 - |1 - 0.5|) * R_meta 1 = 0.5
    assert verified(completions, **columns) == [pytest.approx(0.76 * 0.5 + 0.24 * 0.5)] * 2
    assert backend.count("verify") == 2
    # reward_verifier_rows: proofs: only the row without an answer is verified
    config = ProofcriticGRPOConfig(
        **common, role="generator", reward="answer+verifier", reward_model="scripted/v", reward_verifier_rows="proofs"
    )
    assert config.reward_weights == [1.0, 0.5]  # the default verifier weight
    _, verified = build_rewards(config, reward_model=model)
    assert verified(completions, **columns) == [None, pytest.approx(0.5)]
    assert backend.count("verify") == 3
    assert [c["skipped_answer_row"] for c in verified.last_components] == [1.0, 0.0]
    with pytest.raises(ConfigError, match="all or proofs"):
        ProofcriticGRPOConfig(
            **common, role="generator", reward="answer+verifier", reward_model="x/y", reward_verifier_rows="some"
        )


def test_answer_reward_counts_the_rows_without_an_answer(tmp_path, tiny_model_dir):
    from proofcritic.training.recipes import train_grpo

    rows = [{"problem": "Prove that 2 is even."}, {"problem": "What is 2 + 3?", "answer": "5"}, {"problem": "x"}]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
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
    with pytest.raises(ConfigError, match=r"2 of 3 row\(s\) have none \(the first: row 1\).*answer\+verifier"):
        train_grpo(config)


def test_grpo_step_with_answer_plus_verifier_on_mixed_rows(tmp_path, tiny_model_dir):
    """A proof row first (no answer), then an answer row: both rewards reach TRL and its logs."""
    from scripted import ScriptedBackend, meta_text, verification_text

    from proofcritic.llm import Model
    from proofcritic.training.recipes import train_grpo

    rows = [{"problem": "Prove that 2 is even."}, {"problem": "What is 2 + 3?", "answer": "5"}]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    backend = ScriptedBackend(lambda call: meta_text(1) if call.role == "meta_verify" else verification_text(1))
    config = ProofcriticGRPOConfig(
        output_dir=str(tmp_path / "out"),
        model=str(tiny_model_dir),
        role="generator",
        reward="answer+verifier",
        reward_model="scripted/v",
        train_file=str(data),
        num_generations=2,
        per_device_train_batch_size=4,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    train_grpo(config, reward_model=Model(backend))
    (step,) = [m for m in _metrics(tmp_path / "out") if "rewards/answer_reward/mean" in m]
    assert "rewards/generator_reward/mean" in step and "generator_reward/r_format" in step
    assert 0.0 <= step["answer_reward/accuracy"] <= 1.0  # over the answer row's 2 completions only
