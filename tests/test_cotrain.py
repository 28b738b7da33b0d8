"""Co-training loop (SPEC 4) on the tiny random model: one full iteration, then a SIGKILL in the
middle of the second one and a resume that skips every finished step.

The tiny random model's outputs break the output protocol, so the labeler sends every proof to
review and D_v gains nothing; that test checks the layout, the manifests and their consistency.
The rejection fine-tuning test starts from ``warm_model_dir`` (the tiny model taught the
protocol), whose proofs parse and get labeled, so the ``rft`` step has real rows to train on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("yaml")

from proofcritic.training.cotrain import (
    InjectedFailure,
    cotrain,
    read_manifest,
)

STATEMENT = "Prove that the sum of two even integers is even."
OTHER = "Prove that 3 divides n^3 - n."
PROOF = "Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even."
FIRST_STEPS = ["verifier", "generator_init", "generator", "sample", "label", "merge"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    import yaml

    _jsonl(tmp_path / "problems.jsonl", [{"id": "p1", "statement": STATEMENT}, {"id": "p2", "statement": OTHER}])
    _jsonl(
        tmp_path / "dv.jsonl",
        [{"problem": STATEMENT, "proof": PROOF, "score": 1}, {"problem": OTHER, "proof": "It is obvious.", "score": 0}],
    )
    _jsonl(
        tmp_path / "dmv.jsonl",
        [
            {"problem": STATEMENT, "proof": PROOF, "analysis": "Complete.", "meta_score": 1},
            {"problem": STATEMENT, "proof": "obvious", "analysis": "Fine.", "meta_score": 0},
        ],
    )
    grpo = {
        "use_cpu": True,
        "bf16": False,
        "max_steps": 1,
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "entropy_coef": 1.0,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "max_completion_length": 8,
        "reward_model_max_tokens": 8,
    }
    config = {
        "base_model": str(tiny_model_dir),
        "problems": "problems.jsonl",
        "dv": "dv.jsonl",
        "dmv": "dmv.jsonl",
        "grpo": grpo,
        "sample": {"n": 2, "max_tokens": 8, "keep_invalid": True, "concurrency": 2},
        "label": {"n": 1, "m": 1, "k": 1, "max_tokens": 8, "concurrency": 2},
    }
    path = tmp_path / "cotrain.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _done(work: Path) -> dict[Path, str]:
    """The manifests of the finished step folders (temporary ``.STEP.tmp`` folders left out)."""
    return {p: p.read_text() for p in work.glob("iter_*/*/manifest.json") if not p.parent.name.startswith(".")}


def _check_iteration(work: Path, k: int) -> dict[str, dict]:
    manifests = {}
    folder = work / f"iter_{k}"
    for step in FIRST_STEPS:
        manifest = read_manifest(folder / step)
        assert manifest and manifest["status"] == "done" and manifest["step"] == step, (step, manifest)
        assert manifest["iteration"] == k and manifest["started"] <= manifest["finished"]
        manifests[step] = manifest
    assert not list(folder.glob(".*.tmp")), "a temporary step folder was left behind"
    for step in ("verifier", "generator_init", "generator"):
        assert (folder / step / "model" / "config.json").is_file()
    sample = manifests["sample"]["outputs"]
    proofs = _rows(folder / "sample" / sample["proofs"])
    assert len(proofs) == sample["proofs_count"] <= sample["generations"] == 2 * 2  # 2 problems x 2 samples
    assert len(_rows(folder / "sample" / "solve.jsonl")) == 2
    label = manifests["label"]["outputs"]
    labels = _rows(folder / "label" / label["labels"])
    review = _rows(folder / "label" / label["review"])
    assert len(labels) == len(proofs) == label["labeled_count"] + label["review_count"] + label["errors"]
    assert len(review) == label["review_count"]
    merge = manifests["merge"]["outputs"]
    dv, dmv = _rows(folder / "merge" / merge["dv"]), _rows(folder / "merge" / merge["dmv"])
    assert len(dv) == merge["dv_rows"] >= 2 and len(dmv) == merge["dmv_rows"] >= 2
    assert merge["dv_added"] == sum(1 for r in labels if r.get("status") == "labeled")
    assert all({"prompt", "reference_score"} <= set(r) for r in dv)
    assert manifests["verifier"]["outputs"]["dv_rows"] >= 2
    return manifests


def test_cotrain_iteration_then_crash_and_resume(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir)
    work = tmp_path / "work"
    started = time.monotonic()
    result = cotrain(config, work, 1)
    first = _check_iteration(work, 1)
    assert result["iterations"][0]["ran"] == FIRST_STEPS
    assert result["checkpoint"] == str(work / "iter_1" / "verifier" / "model")

    # an injected failure in iter_2/generator: the step raises after its work, before "done"
    with pytest.raises(InjectedFailure):
        cotrain(config, work, 2, fail_at="iter_2/generator")
    assert read_manifest(work / "iter_2" / "verifier")["status"] == "done"
    assert read_manifest(work / "iter_2" / ".generator.tmp")["status"] == "running"
    assert not (work / "iter_2" / "generator").exists()
    done_before = _done(work)

    # a real crash: SIGKILL the CLI once iter_2/sample has started (verifier and generator done by then)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proofcritic.cli._cotrain",
            "--config",
            str(config),
            "--workdir",
            str(work),
            "--iterations",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (work / "iter_2" / ".sample.tmp" / "manifest.json").exists():
                break
            time.sleep(0.02)
        assert process.poll() is None, "the CLI ended before the kill point"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert read_manifest(work / "iter_2" / "generator")["status"] == "done"
    assert not (work / "iter_2" / "sample").exists() or read_manifest(work / "iter_2" / "sample")["status"] == "done"
    done_at_kill = _done(work)
    for path, text in done_before.items():  # the kill run skipped the steps done before it
        assert done_at_kill[path] == text

    result = cotrain(config, work, 2)
    second = _check_iteration(work, 2)
    for path, text in done_at_kill.items():  # finished steps were not re-run: manifests unchanged
        assert path.read_text() == text, path
    assert _check_iteration(work, 1) == first
    report = result["iterations"]
    assert report[0]["ran"] == [] and report[0]["skipped"] == FIRST_STEPS
    assert {"verifier", "generator_init", "generator"} <= set(report[1]["skipped"])
    assert "sample" in report[1]["ran"] or "sample" in report[1]["skipped"]
    assert second["verifier"]["inputs"]["start"] == str(work / "iter_1" / "verifier" / "model")
    assert second["verifier"]["inputs"]["dv"] == str(work / "iter_1" / "merge" / "dv.jsonl")
    assert second["generator"]["inputs"]["reward_model"] == f"transformers/{work / 'iter_2' / 'verifier' / 'model'}"
    assert time.monotonic() - started < 240


def test_rft_trains_on_the_best_samples(tmp_path, warm_model_dir):
    """Two iterations from the protocol-taught tiny model with ``rft`` on: the generator writes
    well-formed proofs, the step-1 checkpoint labels them, and iteration 2's rejection
    fine-tuning trains on the best generations and the analyses that agree with the labels."""
    import yaml
    from tiny_model import SAMPLE_RECORDS, write_sample_data

    from proofcritic.generator import parse_generation
    from proofcritic.verifier import parse_verification

    statements = [r["problem"] for r in SAMPLE_RECORDS["generator"]]
    _jsonl(tmp_path / "problems.jsonl", [{"id": f"p{i}", "statement": s} for i, s in enumerate(statements, 1)])
    grpo = {
        "use_cpu": True,
        "bf16": False,
        "max_steps": 1,
        "logging_steps": 1,
        "learning_rate": 1e-5,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "max_completion_length": 128,
        "reward_model_max_tokens": 96,
    }
    sft = {
        "use_cpu": True,
        "bf16": False,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "per_device_train_batch_size": 2,
        "max_length": 2048,
    }
    config = {
        "base_model": str(warm_model_dir),
        "problems": "problems.jsonl",
        "dv": str(write_sample_data(tmp_path, "verifier")),
        "grpo": grpo,
        "verifier_meta_reward": False,
        "sample": {"n": 2, "max_tokens": 128, "temperature": 0.0, "top_p": None, "concurrency": 2},
        "label": {"n": 2, "m": 1, "k": 1, "max_tokens": 96, "temperature": 0.0, "concurrency": 2},
        "rft": {"enabled": True, "min_label": 0.5, "sft": sft},
    }
    path = tmp_path / "cotrain.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    work = tmp_path / "work"

    result = cotrain(path, work, 2)
    assert not (work / "iter_1" / "rft").exists()  # rejection fine-tuning starts at iteration 2
    assert result["iterations"][1]["ran"] == [*FIRST_STEPS, "rft"]
    rft = work / "iter_2" / "rft"
    manifest = read_manifest(rft)
    assert manifest["status"] == "done" and manifest["outputs"]["trained"] is True, manifest
    assert manifest["inputs"]["generator"] == str(work / "iter_2" / "generator" / "model")
    assert result["checkpoint"] == str(rft / "model") and (rft / "model" / "config.json").is_file()

    rows = _rows(rft / manifest["outputs"]["rft_rows"])
    assert len(rows) == manifest["outputs"]["rows"] > 0
    assert manifest["outputs"]["rows_by_role"] == {
        role: sum(r["role"] == role for r in rows) for role in ("generator", "verifier")
    }
    assert len({json.dumps([r["prompt"], r["completion"]]) for r in rows}) == len(rows)  # no duplicates
    labels = [r for r in _rows(work / "iter_2" / "label" / "labels.jsonl") if r["status"] == "labeled"]
    assert labels and {r["role"] for r in rows} == {"generator", "verifier"}
    best = {}
    for record in labels:
        best[record["problem"]["id"]] = max(best.get(record["problem"]["id"], 0.0), record["label"])
    for row in rows:
        text = row["completion"][0]["content"]
        if row["role"] == "generator":  # a best-labeled generation, in a form the generator's parser reads
            generation = parse_generation(text)
            assert generation.format_ok, (generation.format_error, text)
            assert any(
                r["proof"].strip() == generation.proof.strip() and r["label"] == best[r["problem"]["id"]]
                for r in labels
            )
        else:  # an analysis whose score equals its proof's label
            verification = parse_verification(text)
            assert verification.format_ok and verification.score in {r["label"] for r in labels}
    name = "model.layers.0.self_attn.q_proj.weight"
    import torch
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(work / "iter_2" / "generator" / "model").state_dict()[name]
    after = AutoModelForCausalLM.from_pretrained(rft / "model").state_dict()[name]
    assert not torch.equal(before, after), "rejection fine-tuning did not change the weights"

    again = cotrain(path, work, 2)  # everything done: nothing reruns, rft included
    assert again["iterations"][1]["ran"] == [] and "rft" in again["iterations"][1]["skipped"]
    assert read_manifest(rft) == manifest
