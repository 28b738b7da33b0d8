"""The training examples shipped in ``examples/train/``, as the README's Training section shows them.

The commands are read from README.md (one per recipe: ``train verifier``, ``meta-verifier``,
``generator``, ``sft``, ``dpo`` and ``cotrain``), so the docs cannot drift from what is tested,
and run through the CLI in a temporary folder (the config given by its absolute path; its data
paths are read from the config's folder, its ``output_dir`` from the current one). The five
``train`` examples run exactly as written, on SmolLM2 (6-30 s each on 2 cores). ``cotrain`` as
written takes about 3 minutes there (every step saves and reloads a full checkpoint), so it runs
with its base model swapped for the tiny warmed-up model (``warm_model_dir``, shared with the
recipe tests). Every run must leave its output folder (model or LoRA adapter and tokenizer) and
its metrics file, not just exit 0. (tests/test_training_recipes.py checks what the rewards are;
these tests check that the shipped files run.)
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
yaml = pytest.importorskip("yaml")

from typer.testing import CliRunner

from proofcritic.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "train"
RECIPES = ("verifier", "meta-verifier", "generator", "sft", "dpo", "prm", "prover")
#: the reward whose components a GRPO role's metrics carry
REWARD = {"verifier": "verifier_reward", "meta-verifier": "meta_verifier_reward", "generator": "generator_reward"}
STEPS = ("verifier", "generator_init", "generator", "sample", "label", "merge")


def _training_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Training")
    return text[start : text.index("\n### ", start + 1)]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", _training_section(), re.DOTALL | re.MULTILINE)


def _commands() -> list[list[str]]:
    """Every ``proofcritic ...`` line of the section's shell blocks, as arguments (comments cut)."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():  # a command continued with \ is one line
            if line.startswith("proofcritic "):
                out.append(shlex.split(line, comments=True)[1:])
    return out


def _example_command(name: str) -> list[str]:
    """The README's command that runs the shipped example of ``name`` (a train recipe or cotrain)."""
    for args in _commands():
        target = args[0] if args[0] == "cotrain" else (args[1] if args[0] == "train" else None)
        if target == name and f"examples/train/{name}.yaml" in args:
            return args
    raise AssertionError(f"the README's Training section has no command running examples/train/{name}.yaml")


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _absolute(args: list[str]) -> list[str]:
    """The command with its example config given by absolute path (it runs in a temporary folder)."""
    return [str(ROOT / a) if a.startswith("examples/train/") else a for a in args]


def _run(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def _metrics(path: Path) -> list[dict]:
    assert path.is_file(), f"no metrics file {path}"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert rows, f"{path} is empty"
    return rows


def _check_output(folder: Path) -> None:
    assert folder.is_dir(), f"no output folder {folder}"
    assert (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file(), sorted(folder.iterdir())
    assert (folder / "tokenizer_config.json").is_file()


# --------------------------------------------------------------------------- the docs and the files


def test_readme_shows_every_example_and_its_yaml_as_shipped():
    for name in (*RECIPES, "cotrain"):
        assert (EXAMPLES / f"{name}.yaml").is_file()
        _example_command(name)
    yamls = _blocks("yaml")
    assert yamls, "the Training section shows no YAML"
    for block in yamls:  # each YAML block is a shipped file, verbatim: its first line runs it
        shown = re.search(r"--config (examples/train/\S+\.yaml)", block.splitlines()[0])
        assert shown, f"a YAML block of the README names no shipped file: {block.splitlines()[0]!r}"
        assert block == (ROOT / shown.group(1)).read_text(encoding="utf-8"), f"README differs from {shown.group(1)}"


def test_every_readme_training_command_is_valid(monkeypatch, tmp_path):
    """Every command line of the section names a real command, and its config plus ``--set``
    overrides load (known keys, valid values, data files found) without training anything."""
    from proofcritic.training.cotrain import load_cotrain_config
    from proofcritic.training.recipes import load_config

    monkeypatch.chdir(tmp_path)
    recipe = {
        "verifier": "grpo",
        "meta-verifier": "grpo",
        "generator": "grpo",
        "sft": "sft",
        "dpo": "dpo",
        "prm": "prm",
        "prover": "grpo",
    }
    seen = set()
    produced: set[str] = set()  # data files an earlier command of the section writes
    for written in _commands():
        args = _absolute(written)
        assert args[0] in ("train", "cotrain", "shape"), args
        if args[0] == "shape":  # writes the SFT and DPO files that the commands after it train on
            planned = _run([*args, "--dry-run"]).output
            stem = Path(_option(args, "--output")).with_suffix("")
            for kind in ("sft", "dpo"):
                assert f"{kind}={stem}.{kind}.jsonl" in planned, planned
                produced.add(f"{stem}.{kind}.jsonl")
            seen.add("shape")
            continue
        if args[0] == "cotrain":
            config = load_cotrain_config(_option(args, "--config"))
            assert all(Path(p).is_file() for p in (config.problems, config.dv, config.dmv))
            seen.add("cotrain")
            continue
        sets = [args[i + 1] for i, a in enumerate(args) if a in ("--set", "-s")]
        if args[1] == "prover":  # train prover: the generator with Lean's verdict as the reward
            sets += ["role=generator", "reward=lean"]
        elif args[1] not in ("sft", "dpo", "prm"):
            sets.append(f"role={args[1].replace('-', '_')}")
        settings = load_config(_option(args, "--config"), sets, recipe=recipe[args[1]])
        assert Path(settings.train_file).is_file() or settings.train_file in produced, settings.train_file
        seen.add(args[1])
    assert seen == {*RECIPES, "cotrain", "shape"}


def test_config_data_paths_are_read_from_the_config_folder(monkeypatch, tmp_path):
    """A relative data path in a config file is the file beside the config when it is there,
    else a path in the current folder; ``--set`` values and ``output_dir`` are the current folder's."""
    from proofcritic.training.recipes import load_config

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "rows.jsonl").write_text("{}\n")
    (tmp_path / "here.jsonl").write_text("{}\n")
    config = tmp_path / "cfg" / "sft.yaml"
    config.write_text("train_file: rows.jsonl\neval_file: here.jsonl\noutput_dir: out\n")
    monkeypatch.chdir(tmp_path)
    settings = load_config(config, recipe="sft")
    assert settings.train_file == str(tmp_path / "cfg" / "rows.jsonl")
    assert (settings.eval_file, settings.output_dir) == ("here.jsonl", "out")
    assert load_config(config, ["train_file=rows.jsonl"], recipe="sft").train_file == "rows.jsonl"


def test_example_data_reads_as_each_recipe_expects():
    from proofcritic.training.recipes import (
        _dpo_dataset,
        _role_dataset,
        _sft_dataset,
        load_config,
    )

    for name, role in (("verifier", "verifier"), ("meta-verifier", "meta_verifier"), ("generator", "generator")):
        config = load_config(EXAMPLES / f"{name}.yaml", recipe="grpo")
        dataset = _role_dataset(config.train_file, role)
        assert len(dataset) >= 4 and "prompt" in dataset.column_names
    assert len(_sft_dataset(load_config(EXAMPLES / "sft.yaml", recipe="sft").train_file)) >= 4
    dpo = load_config(EXAMPLES / "dpo.yaml", recipe="dpo")
    assert len(_dpo_dataset(dpo.train_file, dpo)) >= 4
    scores = {json.loads(line)["score"] for line in (EXAMPLES / "dv.jsonl").read_text().splitlines()}
    assert scores == {0, 0.5, 1}  # every grade of the rubric is shown


# --------------------------------------------------------------------------- the runs


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_example_runs_as_written_on_smollm2(recipe, monkeypatch, tmp_path, smollm2_dir):
    monkeypatch.chdir(tmp_path)
    result = _run(_absolute(_example_command(recipe)))
    settings = yaml.safe_load((EXAMPLES / f"{recipe}.yaml").read_text())
    assert settings["model"] == "smollm2"
    out = tmp_path / settings["output_dir"]
    assert Path(result.output.strip().splitlines()[-1]).resolve() == out.resolve()  # the command prints it
    _check_output(out)
    assert (out / "adapter_config.json").is_file()  # the examples train a LoRA adapter
    rows = _metrics(out / "proofcritic_metrics.jsonl")
    steps = [row for row in rows if "loss" in row]
    assert len(steps) == settings["max_steps"], rows  # one record per logging step
    if recipe in REWARD:  # GRPO: the reward components of every step
        assert all(0 <= row[f"{REWARD[recipe]}/r_format"] <= 1 for row in steps), steps
        assert all(f"{REWARD[recipe]}/format_failure_rate" in row for row in steps)
    if recipe == "prover":  # RLPAF: Lean's pass rate and the share of completions with a Lean block
        assert all(0 <= row["lean_reward/passed"] <= 1 and "lean_reward/lean_block" in row for row in steps), steps


@pytest.mark.slow
def test_cotrain_example_runs_on_the_warm_model(monkeypatch, tmp_path, warm_model_dir):
    """The README's cotrain commands, in order, on the shipped config with its base model swapped
    for the warm model (a copy of the config that names the shipped data by absolute path): the
    first runs iteration 1, the second resumes and adds iteration 2 with the rft step."""
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((EXAMPLES / "cotrain.yaml").read_text())
    for key in ("problems", "dv", "dmv"):
        config[key] = str(EXAMPLES / config[key])
    config["base_model"] = str(warm_model_dir)
    (tmp_path / "cotrain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    commands = [args for args in _commands() if args[0] == "cotrain" and "examples/train/cotrain.yaml" in args]
    assert [int(_option(args, "--iterations")) for args in commands] == [1, 2]
    for args in commands:
        args[args.index("--config") + 1] = str(tmp_path / "cotrain.yaml")
        result = _run(args)
        work = tmp_path / _option(args, "--workdir")
        iterations = int(_option(args, "--iterations"))
        summary = json.loads(result.stdout[result.stdout.index('{\n  "iterations"') :])  # after TRL's log lines
        assert len(summary["iterations"]) == iterations
        assert summary["iterations"][-1]["ran"] and not summary["iterations"][-1]["skipped"]
        assert all(not it["ran"] for it in summary["iterations"][:-1])  # resumed: earlier ones skipped
        for k in range(1, iterations + 1):
            for step in (*STEPS, "rft") if k >= 2 else STEPS:
                manifest = json.loads((work / f"iter_{k}" / step / "manifest.json").read_text())
                assert manifest["status"] == "done", (k, step, manifest)
            model = work / f"iter_{k}" / "verifier" / "model"
            _check_output(model)
            _metrics(model / "proofcritic_metrics.jsonl")  # the step's last GRPO run (the meta-verifier's)
            _check_output(work / f"iter_{k}" / "generator" / "model")
            merged = (work / f"iter_{k}" / "merge" / "dv.jsonl").read_text().splitlines()
            assert len(merged) >= len((EXAMPLES / "dv.jsonl").read_text().splitlines())
        assert Path(summary["checkpoint"]).is_dir()
