"""Past the context of a local model: the call fails with ContextLengthError before any forward
pass (never a silent verdict), a batch records it as an error of kind ``context`` that a rerun
does not try again, and the service answers it as OpenAI does."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from proofcritic.errors import ContextLengthError
from proofcritic.grading import grade_jsonl
from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, Model
from proofcritic.llm._transformers import TransformersBackend
from proofcritic.verifier import Verifier

#: the tiny model's context in these tests: a short grading prompt fits, a long proof does not
CONTEXT = 3000
LONG = "Therefore the integer n is divisible by 3, since n + 1 equals the product. " * 300


@pytest.fixture(scope="module")
def short_context_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with ``max_position_embeddings`` = CONTEXT in its config."""
    folder = tmp_path_factory.mktemp("tiny-short-context")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def short_backend(short_context_dir: Path):
    backend = TransformersBackend(short_context_dir, batch_wait_ms=5)
    backend.load()
    yield backend
    backend.close()


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def test_the_context_comes_from_the_model_config(short_backend):
    assert short_backend.context_length == CONTEXT
    assert TransformersBackend(short_backend.model, max_model_len=64).context_length == 64


async def test_a_prompt_over_the_context_is_refused_before_any_forward_pass(short_backend):
    before = (short_backend.stats.batches, short_backend.stats.scoring_passes)
    with pytest.raises(ContextLengthError, match=f"{CONTEXT}-token context") as info:
        await short_backend.generate(ChatRequest(messages=_user(LONG), config=GenerateConfig(temperature=0.0)))
    assert not info.value.retryable
    with pytest.raises(ContextLengthError):  # the likelihood read-out
        await short_backend.sequence_logprobs(
            [*_user(LONG), ChatMessage(role="assistant", content="\\boxed{")], ["0}", "1}"]
        )
    with pytest.raises(ContextLengthError):  # guided choice scores the choices the same way
        await short_backend.generate(ChatRequest(messages=_user(LONG), config=GenerateConfig(choices=["0}", "1}"])))
    assert (short_backend.stats.batches, short_backend.stats.scoring_passes) == before


async def test_max_tokens_must_fit_beside_the_prompt_and_the_default_is_cut(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_model_len=48, default_max_tokens=256)
    try:
        request = ChatRequest(messages=_user("Compute 3 + 4."), config=GenerateConfig(temperature=0.0, max_tokens=100))
        with pytest.raises(ContextLengthError, match="100 new tokens asked for"):
            await backend.generate(request)
        [out] = await backend.generate(
            ChatRequest(messages=_user("Compute 3 + 4."), config=GenerateConfig(temperature=0.0))
        )
        assert out.prompt_tokens + out.completion_tokens <= 48
    finally:
        backend.close()


async def test_a_batch_records_the_overflow_as_a_context_error_not_retried(short_backend, tmp_path):
    source = tmp_path / "in.jsonl"
    items = [
        {
            "id": "short",
            "problem": "Show that n^2 + n is even.",
            "proof": "n^2 + n = n(n + 1), a product of consecutive integers.",
        },
        {"id": "long", "problem": "Show that n^2 + n is even.", "proof": LONG},
    ]
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    out = tmp_path / "out.jsonl"
    verifier = Verifier(Model(short_backend, cache=None), config=GenerateConfig(temperature=0.0, max_tokens=16))
    stats = await grade_jsonl(verifier, source, out, n=1)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["long"]["error_kind"] == "context" and "context" in records["long"]["error"]
    assert "verifications" not in records["long"]  # no verdict
    assert records["short"].get("error") is None and len(records["short"]["verifications"]) == 1
    assert "context error" in (stats.failure_summary() or "")  # the batch summary names the kind

    lines = out.read_text().splitlines()
    calls = verifier.model.usage.calls
    again = await grade_jsonl(verifier, source, out, n=1)
    assert again.skipped == 2 and out.read_text().splitlines() == lines  # final: nothing retried or appended
    assert verifier.model.usage.calls == calls


async def test_smollm2_refuses_a_prompt_past_8192_tokens_at_once(smol_backend):
    assert smol_backend.context_length == 8192
    long = "Suppose the integer n is congruent to 3 modulo 7; then n^2 + 5 is divisible by 7. " * 500
    before = (smol_backend.stats.batches, smol_backend.stats.scoring_passes)
    started = time.monotonic()
    with pytest.raises(ContextLengthError, match=r"8192-token context.*: (\d+) prompt tokens") as info:
        await smol_backend.sequence_logprobs(
            [*_user(long), ChatMessage(role="assistant", content="\\boxed{")], ["0}", "1}"]
        )
    assert int(str(info.value).split(": ")[-1].split()[0]) > 8192
    with pytest.raises(ContextLengthError):
        await smol_backend.generate(
            ChatRequest(messages=_user(long), config=GenerateConfig(temperature=0.0, max_tokens=8))
        )
    assert time.monotonic() - started < 10  # tokenising only: a forward pass over 10k tokens takes far longer on CPU
    assert (smol_backend.stats.batches, smol_backend.stats.scoring_passes) == before


def test_the_service_answers_the_overflow_as_openai_does(short_backend, tmp_path):
    """A facade request past the context: 400 with code context_length_exceeded; a job: failed
    with error kind ``context``."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app

    settings = ServerSettings(
        model=Model(short_backend, cache=None),
        db_path=tmp_path / "jobs.sqlite",
        config=GenerateConfig(temperature=0.0, max_tokens=8),
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={
                "model": "proofcritic/grade",
                "messages": [{"role": "user", "content": f"Show it.\n## Proof\n{LONG}"}],
            },
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "context_length_exceeded" and f"{CONTEXT}-token context" in error["message"]

        job = client.post("/v1/grade", json={"problem": "Show it.", "proof": LONG}).json()
        deadline = time.monotonic() + 60
        while (state := client.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.05)
        assert state["status"] == "failed" and state["error"]["kind"] == "context", state
