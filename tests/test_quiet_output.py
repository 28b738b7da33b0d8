"""Normal use prints only proofcritic's own output: no library warnings from the calls proofcritic
makes (transformers' ``past_key_values`` and ``gradient_checkpointing`` deprecations, with
torch's ``return forward_call(...)`` source line), and help that shows a flag as a flag (no
``--help <bool>``).

The commands run as a user runs them: ``python -m proofcritic`` in a subprocess, with the
environment a user has (no ``TRANSFORMERS_VERBOSITY``, no ``PYTHONWARNINGS``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from proofcritic.cli import app

ROOT = Path(__file__).resolve().parents[1]
NOISE = re.compile(r"FutureWarning|DeprecationWarning|UserWarning|forward_call|warnings\.warn")


def _user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}
    env |= {"HF_HUB_OFFLINE": "1", "PROOFCRITIC_CACHE": str(tmp_path / "cache.sqlite"), "COLUMNS": "120"}
    return env


def _run(args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proofcritic", *args],
        check=False,
        cwd=tmp_path,
        env=_user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NOISE.search(line)]


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, sub in getattr(command, "commands", {}).items():
        out += _commands(sub, (*path, name))
    return out


def test_help_shows_flags_without_a_type():
    runner = CliRunner()
    paths = _commands(typer.main.get_command(app))
    assert ("grade",) in paths and ("eval", "solve") in paths and ("train", "sft") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output
        assert "<bool>" not in result.output, (path, result.output)
    grade = runner.invoke(app, ["grade", "--help"], terminal_width=120).output
    assert re.search(r"--help\s+Show this message", grade)
    assert re.search(r"--overwrite\s+Start a fresh output", grade)
    assert "<path>" in grade and "<int range>" in grade  # options that take a value keep their type


def _grade_files(tmp_path: Path) -> list[str]:
    (tmp_path / "problem.md").write_text("Prove that the sum of two even integers is even.\n")
    (tmp_path / "proof.md").write_text("Let a = 2m and b = 2n. Then a + b = 2(m + n).\n")
    return ["--problem", "problem.md", "--proof", "proof.md"]


def test_grade_on_a_local_model_prints_no_library_warnings(tmp_path, tiny_model_dir):
    """The likelihood read-out runs the model on a KV cache: with transformers 5.x's keyword
    (``cache``), not the deprecated ``past_key_values`` that warned on every call."""
    result = _run(
        [
            "grade",
            *_grade_files(tmp_path),
            "--model",
            f"transformers/{tiny_model_dir}",
            "--max-tokens",
            "4",
            "--score-mode",
            "logprob",
            "--no-cache",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "likelihood read-out" in result.stderr  # the read-out ran
    assert not _noise(result.stderr), result.stderr
    assert "verification 1" in result.stdout


@pytest.mark.slow
def test_grade_on_the_embedded_model_prints_no_library_warnings(tmp_path, smollm2_dir):
    result = _run(
        ["grade", *_grade_files(tmp_path), "--max-tokens", "4", "--score-mode", "auto", "--no-cache"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert not _noise(result.stderr), result.stderr


def test_train_prints_no_library_warnings(tmp_path, tiny_model_dir):
    """GRPO on the tiny model: TRL's config sets ``gradient_checkpointing`` (transformers 5.x:
    ``activation_checkpointing``) and its trainer toggles checkpointing around generation."""
    pytest.importorskip("trl")
    from tiny_model import write_sample_data

    data = write_sample_data(tmp_path, "meta_verifier")
    config = tmp_path / "grpo.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ntrain_file: {data}\nuse_cpu: true\nnum_generations: 2\n"
        "per_device_train_batch_size: 2\nmax_completion_length: 8\nmax_steps: 1\nlogging_steps: 1\n"
        "save_strategy: 'no'\nreport_to: none\n"
    )
    result = _run(["train", "meta-verifier", "--config", str(config), "--output-dir", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "config.json").exists()
    assert not _noise(result.stderr), "\n".join(_noise(result.stderr))


def test_sft_and_dpo_print_no_library_warnings(tmp_path, tiny_model_dir):
    """SFT and DPO trainers read checkpointing by its deprecated name when they are built."""
    pytest.importorskip("trl")
    examples = ROOT / "examples" / "train"
    for recipe in ("sft", "dpo"):
        out = tmp_path / recipe
        result = _run(
            [
                "train",
                recipe,
                "--config",
                str(examples / f"{recipe}.yaml"),
                "--set",
                f"model={tiny_model_dir}",
                "--set",
                "max_steps=1",
                "--output-dir",
                str(out),
            ],
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert (out / "proofcritic_metrics.jsonl").exists()
        assert not _noise(result.stderr), (recipe, "\n".join(_noise(result.stderr)))
