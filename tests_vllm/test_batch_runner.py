"""The offline batch path (issue #21, point 2) with vLLM's own batch runner: ``grade
--batch-write-only`` writes the request file, ``python -m vllm.entrypoints.openai.run_batch``
answers it on the embedded SmolLM2 (CPU vLLM), ``grade --batch-results`` imports the answers into
the completion cache and finishes; a plain rerun then makes no model call.

No server runs here: the model spec names an address nothing listens on, which only names the
cache (a later online run with the same --base-url would find the answers)."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import ENGINE_ARGS, vllm_python
from typer.testing import CliRunner

from proofcritic.cli import app

STATEMENT = "Prove that 2 + 2 = 4."


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    return result


def test_grade_through_vllm_run_batch(tmp_path, smollm2_folder):
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "problem": STATEMENT, "proof": proof}) + "\n"
            for i, proof in (("a", "2 + 2 = 4 by counting."), ("b", "Add two to two: four."))
        )
    )
    output = tmp_path / "out.jsonl"
    grade = [
        "grade", "--input", data, "--output", output, "--max-tokens", "8", "--temperature", "0",
        "--model", "openai/smollm2", "--base-url", "http://127.0.0.1:9/v1", "--api-key", "k",
        "--cache", tmp_path / "cache.sqlite",
    ]  # fmt: skip
    written = _cli(*grade, "--batch-write-only")
    requests = tmp_path / "out.jsonl.batch" / "stage-1.requests.jsonl"
    assert f"2 request(s) written to {requests}" in written.stderr.replace("\n", "")
    answers = tmp_path / "answers.jsonl"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    done = subprocess.run(
        [
            vllm_python(), "-m", "vllm.entrypoints.openai.run_batch", "-i", str(requests), "-o", str(answers),
            "--model", str(smollm2_folder), "--served-model-name", "smollm2", *ENGINE_ARGS,
        ],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(x) for x in answers.read_text().splitlines()]
    assert len(lines) == 2 and all(x["response"]["status_code"] == 200 for x in lines)
    finished = _cli(*grade, "--batch-results", answers)
    assert "imported 2 answer(s)" in finished.stderr
    assert "model calls: 0 new, 2 from cache" in finished.stderr
    records = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "b"]
    for record in records:
        (verification,) = record["verifications"]
        assert 0 < verification["usage"]["completion_tokens"] <= 8
    # the records hold the texts vLLM's batch runner wrote
    texts = {x["response"]["body"]["choices"][0]["message"]["content"] for x in lines}
    assert {r["verifications"][0]["raw"] for r in records} == texts
