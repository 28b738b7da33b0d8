"""The in-process vLLM backend (``vllm-offline/``), run in the vLLM environment by a script.

It runs after ``test_server.py`` has stopped its server (module order), so the two engines
never hold memory at the same time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from conftest import vllm_python

SCRIPT = Path(__file__).with_name("offline_check.py")


@pytest.fixture(scope="module")
def offline(smollm2_folder) -> dict:
    env = {**os.environ}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    done = subprocess.run(
        [vllm_python(), str(SCRIPT), str(smollm2_folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_queued_requests_share_one_engine_call(offline):
    stats = offline["batch"]["stats"]
    assert stats["chat_calls"] == 1 and stats["max_batch"] == 5 and stats["requests"] == 5
    texts = offline["batch"]["texts"]
    assert all(len(pair) == 2 and pair[0] == pair[1] for pair in texts)  # greedy: both samples agree
    assert len({pair[0] for pair in texts}) >= 3  # and each caller got its own answer
    assert all(p > 10 for p in offline["prompt_tokens"])


def test_sampling_n_and_seed(offline):
    sampled = offline["sampled"]
    assert len(sampled["first"]) == 4 and len(set(sampled["first"])) >= 2
    assert all(0 < t <= 16 for t in sampled["tokens"])


def test_guided_choice(offline):
    assert len(offline["guided"]) == 6
    assert set(offline["guided"]) <= {"prime", "composite", "neither"}
    assert offline["guided_continued"] in {"4}", "5}", "22}"}


async def test_likelihood_matches_transformers(offline, smollm2_folder):
    from proofcritic.llm import ChatMessage
    from proofcritic.llm._transformers import TransformersBackend

    box = [
        ChatMessage(role="user", content="What is 2 + 2? Put the answer in a box."),
        ChatMessage(role="assistant", content="2 + 2 = 4, so the answer is \\boxed{"),
    ]
    local = TransformersBackend(str(smollm2_folder))
    try:
        reference = await local.sequence_logprobs(box, ["4}", "5}", "22}"])
    finally:
        await local.aclose()
    served = offline["sequence_logprobs"]
    for s, r in zip(served, reference):
        assert s < 0 and abs(s - r) <= 0.03 * abs(r) + 0.5, (served, reference)
    assert served.index(max(served)) == reference.index(max(reference)) == 0


def test_token_logprobs(offline):
    lp = offline["token_logprobs"]
    assert len(lp["entries"]) == lp["completion_tokens"] == 8
    for e in lp["entries"]:
        assert e["logprob"] <= 0 and 1 <= len(e["top"]) <= 3
        assert math.isclose(e["logprob"], max(e["top"].values()), abs_tol=1e-3)
    assert "".join(e["token"] for e in lp["entries"]) == lp["text"]


def test_context_overflow_fails_alone_before_the_engine(offline):
    """A prompt over max_model_len, or a short prompt with more max_tokens than the room left,
    fails with ContextLengthError (as the transformers backend and an OpenAI-compatible server);
    the request beside it in the same round is answered; no scoring call reaches the engine."""
    context = offline["context"]
    assert context["kinds"] == ["ContextLengthError", "list", "ContextLengthError", "ContextLengthError"], context
    assert "2048-token context" in context["messages"][0]
    assert "4000 new tokens" in context["messages"][2]
    assert context["requests_run"] == 1 and context["scoring_calls_run"] == 0
