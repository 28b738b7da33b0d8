"""RLPAF (issue #20 point 4): ``train prover``, generator GRPO whose reward is Lean's verdict.

The reward is judged by the REAL local ``lean`` (prelude statements, term-mode proofs) through
the warm server pool; each distinct file is checked once (in a batch, across batches, and across
runs through the cache file). The GRPO run is the tiny random model for one step, its
completions continuing an open Lean block (``lean_prompt: code``) so that Lean checks them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.errors import SetupError
from proofcritic.lean_checker import LeanServerChecker, LocalLeanChecker
from proofcritic.lean_checker.samples import PRELUDE, numeral
from proofcritic.training.prover import code_prefix, make_lean_reward, prover_dataset
from proofcritic.training.recipes import ConfigError, ProofcriticGRPOConfig

ROOT = Path(__file__).resolve().parents[1]
THEOREM = f"theorem two_two : Eq (N.add {numeral(2)} {numeral(2)}) {numeral(4)}"
STATEMENT = PRELUDE + "\n" + THEOREM + " := sorry\n"
GOOD = PRELUDE + "\n" + THEOREM + " :=\n  Eq.refl _\n"
WRONG = PRELUDE + "\n" + THEOREM + " :=\n  Eq.refl N.zero\n"
SORRY = PRELUDE + "\n" + THEOREM + " :=\n  sorry\n"
CHANGED = PRELUDE + "\n" + THEOREM.replace(numeral(4), numeral(3)) + " :=\n  Eq.refl _\n"


def fenced(code: str) -> str:
    return f"My proof.\n\n```lean\n{code}```\n"


async def test_the_lean_reward_is_lean_prove_s_verdict_and_checks_each_file_once(tmp_path, lean_bin):
    cache = tmp_path / "lean_checks.jsonl"
    completions = [
        fenced(GOOD),
        [{"role": "assistant", "content": fenced(GOOD)}],  # the same file again: checked once
        fenced(WRONG),
        "no Lean here",
        fenced(CHANGED),  # the statement changed: 0, never checked
        fenced(SORRY),
    ]
    statements = [STATEMENT] * len(completions)
    async with LeanServerChecker(lean_bin, timeout=60, pool_size=2) as checker:
        reward = make_lean_reward(checker, cache_file=cache)
        assert await reward.acall(completions, lean_statement=statements) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        parts = reward.last_components
        assert (reward.checks, reward.cache_hits) == (3, 1)  # GOOD, WRONG, SORRY; the second GOOD shared
        assert [c["status"] for c in parts] == [
            "passed",
            "passed",
            "failed",
            "no_lean_block",
            "statement_changed",
            "failed",
        ]
        assert [c["lean_block"] for c in parts] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
        assert [c["checked"] for c in parts] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
        assert any("sorry" in r for r in parts[5]["reasons"])
        assert parts[0]["proof_chars"] == len(GOOD)
        # a later batch: the verdicts are remembered
        assert await reward.acall([fenced(WRONG)], lean_statement=[STATEMENT]) == [0.0]
        assert reward.checks == 3
    await reward.aclose()
    assert len(cache.read_text().splitlines()) == 3
    # a new run reads the cache file: nothing is checked again
    async with LocalLeanChecker(lean_bin, timeout=60) as other:
        again = make_lean_reward(other, cache_file=cache)
        assert again.checker is other
        # another checker kind is another key: its verdicts are not reused
        assert await again.acall([fenced(GOOD)], lean_statement=[STATEMENT]) == [1.0]
        assert again.checks == 1
    async with LeanServerChecker(lean_bin, timeout=60, pool_size=1) as same_kind:
        third = make_lean_reward(same_kind, cache_file=cache)
        assert await third.acall([fenced(GOOD), fenced(SORRY)], lean_statement=[STATEMENT] * 2) == [1.0, 0.0]
        assert third.checks == 0 and third.cache_hits == 2


async def test_a_checker_without_the_statement_s_library_stops_training(lean_bin):
    statement = "import Mathlib\n\ntheorem t : 1 + 1 = 2 := by sorry\n"
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        reward = make_lean_reward(checker)
        with pytest.raises(SetupError, match="Init"):
            await reward.acall([fenced(statement.replace("sorry", "norm_num"))], lean_statement=[statement])


def test_prover_config_and_rows(tmp_path):
    common = {"output_dir": str(tmp_path), "num_generations": 2, "per_device_train_batch_size": 2}
    config = ProofcriticGRPOConfig(**common, role="generator", reward="lean")  # no reward model needed
    assert (config.lean_checker, config.lean_prompt) == ("server", "chat")
    with pytest.raises(ConfigError, match="role generator"):
        ProofcriticGRPOConfig(**common, role="verifier", reward="lean")
    with pytest.raises(ConfigError, match="lean_url"):
        ProofcriticGRPOConfig(**common, role="generator", reward="lean", lean_checker="kimina")
    with pytest.raises(ConfigError, match="lean_checker"):
        ProofcriticGRPOConfig(**common, role="generator", reward="lean", lean_checker="repl")
    rows = ROOT / "examples" / "train" / "lean_problems.jsonl"
    chat = prover_dataset(rows)
    assert chat.num_rows == 3 and chat[0]["prompt"][-1]["role"] == "user"
    assert "theorem two_plus_two" in chat[0]["prompt"][-1]["content"]
    assert chat[0]["lean_statement"].rstrip().endswith(":= sorry")
    code = prover_dataset(rows, "code")
    assert code[1]["prompt"].startswith("Complete the following Lean 4 code:\n\n```lean4\nprelude")
    assert code[1]["lean_prefix"] == code_prefix(code[1]["lean_statement"])
    assert code[1]["lean_prefix"].endswith("theorem eq_swap (a b : N) (h : Eq a b) : Eq b a :=\n")


async def test_a_code_prompt_s_completion_continues_the_statement(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        reward = make_lean_reward(checker)
        prefix = code_prefix(STATEMENT)
        got = await reward.acall(
            ["  Eq.refl _\n```\nDone.", " Eq.refl N.zero"], lean_statement=[STATEMENT] * 2, lean_prefix=[prefix] * 2
        )
    assert got == [1.0, 0.0] and reward.checks == 2


def test_train_prover_one_grpo_step_on_the_tiny_model_with_the_real_lean(
    tmp_path, tiny_model_dir, lean_bin, monkeypatch
):
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "prover",
            "--config",
            str(ROOT / "examples" / "train" / "prover.yaml"),
            "--output-dir",
            str(out),
            *("--set", f"model={tiny_model_dir}", "--set", "lean_prompt=code", "--set", "max_completion_length=8"),
            *("--set", "num_generations=2", "--set", "per_device_train_batch_size=4", "--set", "lora_r=0"),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = [json.loads(line) for line in (out / "proofcritic_metrics.jsonl").read_text().splitlines()]
    (step,) = [m for m in metrics if "rewards/lean_reward/mean" in m]
    # every completion continues a prelude file: Lean checked each distinct one (random tokens fail)
    assert step["lean_reward/passed"] == step["rewards/lean_reward/mean"] == 0.0
    assert step["lean_reward/lean_block"] == 1.0 and step["lean_reward/statement_kept"] == 1.0
    assert step["lean_reward/checked"] + step["lean_reward/cached"] == pytest.approx(1.0)
    assert step["lean_reward/checked"] > 0 and step["lean_reward/proof_chars"] > 0
    assert 0 < step["completions/mean_length"] <= 8
    verdicts = [json.loads(line) for line in (out / "lean_checks.jsonl").read_text().splitlines()]
    assert 1 <= len(verdicts) <= 4 and all(v["result"]["status"] in ("failed", "timeout") for v in verdicts)
    assert all(v["result"]["backend"] for v in verdicts)
