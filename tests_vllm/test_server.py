"""proofcritic against a real vLLM server on SmolLM2: grading, n samples, guided score, logprobs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request

import pytest

from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, get_model

PROBLEM = "Prove that the sum of two even integers is even."
PROOF = (
    "Let a = 2m and b = 2n for integers m and n. Then a + b = 2m + 2n = 2(m + n). "
    "Since m + n is an integer, a + b is even."
)
SCORES = (0.0, 0.5, 1.0)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "problem.md").write_text(PROBLEM)
    (tmp_path / "proof.md").write_text(PROOF)
    return tmp_path / "problem.md", tmp_path / "proof.md"


def grade(url: str, files, *args: str) -> tuple[dict, str]:
    """``proofcritic grade --json`` against the server: the result and the stderr text."""
    problem, proof = files
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proofcritic",
            "grade",
            "--model",
            "vllm/smollm2",
            "--base-url",
            url,
            "--problem",
            str(problem),
            "--proof",
            str(proof),
            "--no-cache",
            "--json",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def prompt_length(folder, messages) -> int:
    """Tokens of the rendered chat prompt, counted with the model's own tokenizer here."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template([m.model_dump() for m in messages], add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def test_serves_the_embedded_model(vllm_server):
    with urllib.request.urlopen(f"{vllm_server}/models", timeout=10) as resp:
        served = [m["id"] for m in json.loads(resp.read())["data"]]
    assert served == ["smollm2"]


def test_grade_cli(vllm_server, files):
    # --score-mode auto: 96 tokens are often too few for SmolLM2 to write its score, and the
    # default (text) would then give no verdict and exit 1
    result, stderr = grade(vllm_server, files, "-n", "2", "--max-tokens", "96", "--score-mode", "auto")
    verifications = result["verifications"]
    assert len(verifications) == 2
    for v in verifications:
        assert v["raw"].strip()
        # a score in every sample: written, or read out by likelihood (auto) from the server
        assert v["score"] in SCORES
        assert v["score_source"] in ("text", "likelihood")
    assert result["aggregate"]["n"] == 2
    # the ~750-token grading prompt reached the model (once: one request carries both samples)
    line = next(li for li in stderr.splitlines() if "tokens:" in li)
    prompt_tokens = int(line.split("tokens:")[1].split("prompt")[0])
    assert prompt_tokens > 600


async def test_n_samples_in_one_request(vllm_server, smollm2_folder):
    model = get_model("vllm/smollm2", base_url=vllm_server, cache=False)
    messages = [ChatMessage(role="user", content="Write one short sentence about prime numbers.")]
    config = GenerateConfig(n=4, temperature=1.0, max_tokens=16, seed=11)
    try:
        first = await model.generate(ChatRequest(messages=messages, config=config))
        assert len(first) == 4
        assert model.usage.calls == 1
        # one prompt processed for four samples, and it is the prompt as rendered here
        assert model.usage.prompt_tokens == first[0].prompt_tokens == prompt_length(smollm2_folder, messages)
        assert model.usage.completion_tokens == sum(c.completion_tokens for c in first) > 4
        assert len({c.text for c in first}) >= 2  # independent samples, not one copied
        # (no check that a seed reproduces the samples: in bfloat16 on CPU a prompt read from
        # vLLM's prefix cache gives slightly different logits than one computed afresh)
    finally:
        await model.aclose()


def test_guided_score_cli(vllm_server, files):
    # 48 tokens are too few for SmolLM2 to write its score, so each one is asked for with
    # guided choice: the server may only answer 0}, 0.5} or 1}
    result, _ = grade(vllm_server, files, "-n", "2", "--max-tokens", "48", "--score-mode", "guided")
    for v in result["verifications"]:
        assert v["score"] in SCORES
        assert v["score_source"] in ("guided", "text")
    assert any(v["score_source"] == "guided" for v in result["verifications"])


async def test_guided_choice_api(vllm_server):
    model = get_model("vllm/smollm2", base_url=vllm_server, cache=False)
    choices = ["prime", "composite", "neither"]
    request = ChatRequest(
        messages=[ChatMessage(role="user", content="Is 91 prime? Answer in one word.")],
        config=GenerateConfig(n=6, temperature=1.5, max_tokens=8, seed=5, choices=choices),
    )
    try:
        completions = await model.generate(request)
    finally:
        await model.aclose()
    assert len(completions) == 6
    assert all(c.text in choices for c in completions), [c.text for c in completions]


def test_logprob_read_out_cli(vllm_server, files):
    result, _ = grade(vllm_server, files, "-n", "1", "--max-tokens", "64", "--score-mode", "logprob")
    [v] = result["verifications"]
    assert v["score_source"] == "likelihood"
    dist = v["score_distribution"]
    assert set(dist) == {"0", "0.5", "1"}
    assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-6)
    assert v["score"] == SCORES[max(range(3), key=lambda i: dist[("0", "0.5", "1")[i]])]


async def test_prompt_logprobs_match_transformers(vllm_server, smollm2_folder):
    """The likelihood read-out over HTTP agrees with an independent computation in transformers."""
    from proofcritic.llm._transformers import TransformersBackend

    messages = [
        ChatMessage(role="user", content="What is 2 + 2? Put the answer in a box."),
        ChatMessage(role="assistant", content="2 + 2 = 4, so the answer is \\boxed{"),
    ]
    continuations = ["4}", "5}", "22}"]
    model = get_model("vllm/smollm2", base_url=vllm_server, cache=False)
    local = TransformersBackend(str(smollm2_folder))
    try:
        served = await model.sequence_logprobs(messages, continuations)
        reference = await local.sequence_logprobs(messages, continuations)
    finally:
        await model.aclose()
        await local.aclose()
    # totals over the whole conversation (vLLM on CPU runs bfloat16: a small relative error)
    for s, r in zip(served, reference):
        assert s < 0 and abs(s - r) <= 0.03 * abs(r) + 0.5, (served, reference)
    # what the read-out uses: the differences between continuations
    for i in range(1, len(continuations)):
        assert abs((served[i] - served[0]) - (reference[i] - reference[0])) < 0.6, (served, reference)
    assert served.index(max(served)) == reference.index(max(reference)) == 0


async def test_token_logprobs(vllm_server):
    model = get_model("vllm/smollm2", base_url=vllm_server, cache=False)
    request = ChatRequest(
        messages=[ChatMessage(role="user", content="Count from one to five.")],
        config=GenerateConfig(temperature=0.0, max_tokens=8, logprobs=True, top_logprobs=3),
    )
    try:
        [c] = await model.generate(request)
    finally:
        await model.aclose()
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens == 8
    for entry in c.logprobs:
        assert entry.logprob <= 0 and entry.top and len(entry.top) <= 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(entry.logprob, max(entry.top.values()), abs_tol=1e-3)
    assert "".join(e.token for e in c.logprobs) == c.text


async def test_a_prompt_past_the_context_is_a_context_length_error(vllm_server):
    """vLLM's own refusal (max_model_len 2048) is classified as ContextLengthError, the error the
    local backends raise: not retried, a batch records it with error kind ``context``."""
    from proofcritic.errors import ContextLengthError

    model = get_model("vllm/smollm2", base_url=vllm_server, cache=False)
    long = "The integer 12 is divisible by 3 and by 4. " * 300
    try:
        with pytest.raises(ContextLengthError) as info:
            await model.generate(
                ChatRequest(
                    messages=[ChatMessage(role="user", content=long)],
                    config=GenerateConfig(temperature=0.0, max_tokens=8),
                )
            )
        with pytest.raises(ContextLengthError):  # a short prompt asking for more tokens than are left
            await model.generate(
                ChatRequest(
                    messages=[ChatMessage(role="user", content="Hi.")],
                    config=GenerateConfig(temperature=0.0, max_tokens=4000),
                )
            )
    finally:
        await model.aclose()
    assert not info.value.retryable and model.usage.calls == 2  # one request each, no retries
