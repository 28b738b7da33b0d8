"""Guided choice: on the local transformers backend (exact scoring of each choice), over real HTTP
(vLLM's ``structured_outputs`` honoured by the tiny server), and the verifier's ``guided`` score
mode end to end, with its fallbacks where a server lacks the feature."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from pydantic import ValidationError

from proofcritic import Problem, Verifier
from proofcritic.errors import UnsupportedFeatureError
from proofcritic.llm import (
    Backend,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionCache,
    GenerateConfig,
    Model,
    get_backend,
)
from proofcritic.llm._openai import OpenAIBackend
from proofcritic.types import SCORES
from proofcritic.verifier import score_prefix
from proofcritic.verifier._verifier import GUIDED_CHOICES

try:  # tests/ is on sys.path when it is not a package
    from servers.fault_server import FaultServer, ok
    from servers.tiny_openai_server import TinyOpenAIServer
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.servers.fault_server import FaultServer, ok
    from tests.servers.tiny_openai_server import TinyOpenAIServer

PROBLEM = Problem(id="p", statement="Show that n^3 - n is divisible by 6 for every integer n.", max_points=7)
PROOF = "n^3 - n = (n - 1) n (n + 1) is a product of three consecutive integers, hence divisible by 2 and 3."
QUESTION = [
    ChatMessage(role="user", content="Is the proof correct? Answer with a score."),
    ChatMessage(role="assistant", content="The final score is \\boxed{"),
]


def _choice_request(choices=GUIDED_CHOICES, messages=QUESTION, **config) -> ChatRequest:
    return ChatRequest(messages=list(messages), config=GenerateConfig(choices=list(choices), **config))


async def _closed_scores(backend, messages, choices) -> list[float]:
    """Log-likelihood of each choice followed by the end-of-turn token, through the public
    likelihood API (not the code path under test)."""
    eos = backend._tokenizer.eos_token
    return await backend.sequence_logprobs(messages, [c + eos for c in choices])


# -- the config ---------------------------------------------------------------------------------------


def test_choices_are_validated_and_part_of_the_cache_key():
    with pytest.raises(ValidationError):
        GenerateConfig(choices=[])
    with pytest.raises(ValidationError):
        GenerateConfig(choices=["a", "a"])
    assert "choices" not in GenerateConfig(temperature=1.0).model_dump()  # plain requests keep their old keys

    def key(config: GenerateConfig) -> str:
        return CompletionCache.request_key("id", QUESTION, config)

    plain, guided, other = (
        key(GenerateConfig()),
        key(GenerateConfig(choices=["0", "1"])),
        key(GenerateConfig(choices=["1", "0"])),
    )
    assert len({plain, guided, other}) == 3


# -- the transformers backend ---------------------------------------------------------------------------


async def test_local_greedy_choice_is_the_most_likely(tiny_backend):
    choices = ["0", "0.5", "1", "7 + 8", "n + 1"]
    out = await tiny_backend.generate(_choice_request(choices, temperature=0.0, n=2))
    scores = await _closed_scores(tiny_backend, QUESTION, choices)
    best = choices[max(range(len(choices)), key=scores.__getitem__)]
    assert [c.text for c in out] == [best, best]
    assert out[0].finish_reason == "stop" and out[0].prompt_tokens > 0
    # the choice's own tokens plus the end-of-turn token
    assert out[0].completion_tokens == len(tiny_backend._encode(best)) + 1


async def test_local_sampled_choices_follow_the_likelihoods(tiny_backend):
    choices = ["0", "0.5", "1"]
    scores = await _closed_scores(tiny_backend, QUESTION, choices)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    expected = [w / sum(weights) for w in weights]
    first = await tiny_backend.generate(_choice_request(choices, temperature=1.0, seed=7, n=400))
    again = await tiny_backend.generate(_choice_request(choices, temperature=1.0, seed=7, n=400))
    assert [c.text for c in first] == [c.text for c in again]  # seeded
    counts = Counter(c.text for c in first)
    for choice, p in zip(choices, expected):
        assert abs(counts[choice] / 400 - p) < 0.08, (counts, expected)


async def test_local_batch_mixes_guided_and_plain_requests(tiny_backend):
    plain = ChatRequest(
        messages=[ChatMessage(role="user", content="Compute 2 + 3.")],
        config=GenerateConfig(temperature=0.0, max_tokens=6),
    )
    guided = _choice_request(["yes", "no"], temperature=0.0)
    out = await tiny_backend.generate_batch([plain, guided, plain])
    assert out[1][0].text in ("yes", "no")
    assert out[0][0].text == out[2][0].text == (await tiny_backend.generate(plain))[0].text


async def test_local_generation_continues_a_final_assistant_turn(tiny_backend):
    messages = [
        ChatMessage(role="user", content="Prove it."),
        ChatMessage(role="assistant", content="Since the integer n"),
    ]
    [out] = await tiny_backend.generate(
        ChatRequest(messages=messages, config=GenerateConfig(temperature=0.0, max_tokens=5))
    )
    continued = tiny_backend._encode(tiny_backend.render(messages, continue_final=True))
    assert out.prompt_tokens == len(continued)
    assert out.prompt_tokens < len(tiny_backend._encode(tiny_backend.render(messages)))  # no new turn opened


# -- over HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
async def tiny_server(tiny_backend):
    async with TinyOpenAIServer(tiny_backend, "tiny") as server:
        yield server


@pytest.fixture
async def deaf_server(tiny_backend):
    """The same model behind a server that ignores ``structured_outputs`` (no guided decoding)."""
    async with TinyOpenAIServer(tiny_backend, "tiny", guided=False) as server:
        yield server


@pytest.fixture
async def closing():
    backends = []
    yield backends.append
    for backend in backends:
        await backend.aclose()


async def test_vllm_guided_choice_over_http(tiny_server, tiny_backend, closing):
    backend = get_backend("vllm/tiny", base_url=tiny_server.url)
    closing(backend)
    assert backend.engine == "vllm"
    request = _choice_request(["0", "0.5", "1"], temperature=0.0, n=3)
    remote = await backend.generate(request)
    direct = await tiny_backend.generate(request)
    assert [c.text for c in remote] == [c.text for c in direct] and remote[0].text in ("0", "0.5", "1")
    body = tiny_server.requests[-1]
    assert body["structured_outputs"] == {"choice": ["0", "0.5", "1"]}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["n"] == 3


async def test_server_that_ignores_the_choice_is_unsupported(deaf_server, closing):
    backend = OpenAIBackend("tiny", base_url=deaf_server.url, engine="vllm")
    closing(backend)
    request = _choice_request(["apple", "pear"], temperature=0.0, max_tokens=6)
    with pytest.raises(UnsupportedFeatureError, match="ignored guided choice"):
        await backend.generate(request)
    sent = len(deaf_server.requests)
    with pytest.raises(UnsupportedFeatureError):  # remembered: no second request
        await backend.generate(request)
    assert len(deaf_server.requests) == sent == 1
    # plain requests still work
    assert len(await backend.generate(ChatRequest(messages=QUESTION[:1], config=GenerateConfig(max_tokens=4)))) == 1


async def test_plain_openai_engine_raises_without_a_request(closing):
    with FaultServer() as server:
        backend = OpenAIBackend("served-model", base_url=server.url)
        closing(backend)
        with pytest.raises(UnsupportedFeatureError, match="vLLM or SGLang"):
            await backend.generate(_choice_request())
        assert server.requests == []


# -- the verifier's guided score mode ------------------------------------------------------------------


def _verifier(backend, mode="guided", **config) -> Verifier:
    return Verifier(
        Model(backend, cache=None),
        score_mode=mode,
        config=GenerateConfig(max_tokens=12, temperature=1.0, seed=3, **config),
    )


async def test_verifier_guided_mode_over_http(tiny_server, tiny_backend, closing):
    backend = get_backend("vllm/tiny", base_url=tiny_server.url)
    closing(backend)
    verifier = _verifier(backend)
    results = await verifier.verify(PROBLEM, PROOF, n=2)
    for v in results:  # 12 tokens of a random model: never a written score
        assert not v.format_ok and v.text_score is None
        assert v.score in SCORES and v.score_source == "guided" and v.score_distribution is None
    guided = [b for b in tiny_server.requests if "structured_outputs" in b]
    assert len(guided) == 2
    for body, v in zip(
        sorted(guided, key=lambda b: b["messages"][-1]["content"]), sorted(results, key=lambda v: score_prefix(v.raw))
    ):
        assert body["structured_outputs"] == {"choice": ["0}", "0.5}", "1}"]}
        assert body["messages"][-1] == {"role": "assistant", "content": score_prefix(v.raw)}
        assert body["temperature"] == 0.0 and body["continue_final_message"] is True
        # the same choice the local model makes for the same continuation
        prefix = [*verifier.messages(PROBLEM, PROOF), ChatMessage(role="assistant", content=score_prefix(v.raw))]
        [direct] = await tiny_backend.generate(
            ChatRequest(messages=prefix, config=GenerateConfig(choices=list(GUIDED_CHOICES), temperature=0.0))
        )
        assert v.score == SCORES[GUIDED_CHOICES.index(direct.text)]


async def test_verifier_guided_mode_on_the_local_backend(tiny_backend):
    [v] = await _verifier(tiny_backend).verify(PROBLEM, PROOF)
    assert v.score in SCORES and v.score_source == "guided" and not v.format_ok


async def test_verifier_guided_falls_back_to_the_likelihood_read_out(deaf_server, closing):
    backend = get_backend("vllm/tiny", base_url=deaf_server.url)
    closing(backend)
    results = await _verifier(backend).verify(PROBLEM, PROOF, n=2)
    assert all(v.score_source == "likelihood" and v.score in SCORES and v.score_distribution for v in results)
    assert sum(1 for b in deaf_server.requests if "structured_outputs" in b) == 1  # tried once, then not again
    assert sum(1 for b in deaf_server.requests if b.get("prompt_logprobs") is not None) == 2 * 3


async def test_verifier_guided_falls_back_to_the_format_failure(closing):
    with FaultServer() as server:  # a plain OpenAI-style server: no guided choice, no prompt logprobs
        server.push(ok("I think the proof is fine."))
        backend = OpenAIBackend("served-model", base_url=server.url)
        closing(backend)
        [v] = await _verifier(backend).verify(PROBLEM, PROOF)
        assert v.score is None and v.score_source is None and not v.format_ok
        assert not any("structured_outputs" in r.body for r in server.chat_requests)


# -- what a backend says it supports (issue 15) ---------------------------------------------------------


class _SaysGuided(Backend):
    """Answers a guided choice with ``1}`` and reads out 0.5; ``guided`` is what it says up front."""

    name, model = "says", "m"

    def __init__(self, guided: bool | None):
        self.guided = guided
        self.guided_requests = 0

    @property
    def supports_guided_choice(self) -> bool | None:
        return self.guided

    async def generate(self, request: ChatRequest) -> list[Completion]:
        if request.config.choices:
            self.guided_requests += 1
            return [Completion(text="1}")]
        return [Completion(text="No score written.") for _ in range(request.config.n)]

    async def sequence_logprobs(self, messages, continuations) -> list[float]:
        return [-2.0, -0.1, -3.0]


async def test_the_verifier_asks_the_backend_what_it_supports():
    for guided, sent, source, score in (
        (False, 0, "likelihood", 0.5),
        (None, 3, "guided", 1.0),
        (True, 3, "guided", 1.0),
    ):
        backend = _SaysGuided(guided)
        results = await _verifier(backend).verify(PROBLEM, PROOF, n=3)
        assert backend.guided_requests == sent, guided
        assert [(v.score_source, v.score) for v in results] == [(source, score)] * 3, guided


def test_backend_capabilities_have_answers_on_the_base():
    class Plain(Backend):
        async def generate(self, request):
            return []

    plain, scripted = Plain(), _SaysGuided(None)
    assert (plain.supports_guided_choice, plain.supports_likelihood) == (None, False)  # no sequence_logprobs
    assert scripted.supports_likelihood is None  # implements it: learned from the first read-out
    assert plain.endpoint_stats() == [] and plain.describe() is None
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").supports_guided_choice is False  # plain OpenAI
    vllm = get_backend("vllm/m", base_url="http://127.0.0.1:9/v1")
    assert (vllm.supports_guided_choice, vllm.supports_likelihood) == (None, None)
    vllm.prompt_logprobs_supported = False
    model = Model(vllm, cache=None)
    assert model.supports_likelihood is False
    from proofcritic.llm._transformers import TransformersBackend

    assert TransformersBackend.supports_guided_choice is True and TransformersBackend.supports_likelihood is True
