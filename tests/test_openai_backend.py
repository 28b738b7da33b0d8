"""The OpenAI-compatible backend over real HTTP.

Against the scripted fault server (through the real ``Model`` wrapper and its retry loop):
retryable and non-retryable errors, Retry-After, timeouts, dropped connections, n > 1 refused,
authentication and unknown models, on both transports. Against the tiny OpenAI-compatible
server backed by the tiny transformers model: real generation, samples, usage, logprobs and
likelihood scoring compared with the transformers backend called directly.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from proofcritic.errors import (
    AuthenticationError,
    BackendError,
    ContextLengthError,
    ModelNotFoundError,
    UnsupportedFeatureError,
)
from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, Model, RetryPolicy
from proofcritic.llm._openai import OpenAIBackend
from proofcritic.llm._transports import parse_retry_after

try:  # tests/ is on sys.path when it is not a package
    from servers.fault_server import (
        FaultServer,
        drop_connection,
        ignore_n,
        malformed_json,
        not_found_model,
        ok,
        refuse_n,
        slow,
        status,
        unauthorized,
    )
    from servers.tiny_openai_server import TinyOpenAIServer
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.servers.fault_server import (
        FaultServer,
        drop_connection,
        ignore_n,
        malformed_json,
        not_found_model,
        ok,
        refuse_n,
        slow,
        status,
        unauthorized,
    )
    from tests.servers.tiny_openai_server import TinyOpenAIServer

TRANSPORTS = ["lean", "aiohttp", "openai"]
FAST = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=3.0, jitter=0.0)


def _request(text: str = "Grade this proof.", **config) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], config=GenerateConfig(**config))


@pytest.fixture
def server():
    with FaultServer(served_models=("served-model", "other-model")) as s:
        yield s


@pytest.fixture
async def make_model():
    """Build Models on OpenAIBackends; all are closed at teardown."""
    made: list[Model] = []

    def build(
        url: str, transport: str = "lean", *, model: str = "served-model", retry: RetryPolicy = FAST, **options
    ) -> Model:
        options.setdefault("api_key", "sk-test")
        backend = OpenAIBackend(model, base_url=url, transport=transport, **options)
        made.append(Model(backend, cache=None, retry=retry))
        return made[-1]

    yield build
    for m in made:
        await m.aclose()


# -- retryable failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_429_waits_for_retry_after(server, make_model, transport):
    server.push(status(429, retry_after=1, message="slow down"), ok("fine"))
    model = make_model(server.url, transport)
    out = await model.generate(_request())
    assert [c.text for c in out] == ["fine"]
    first, second = server.chat_requests
    assert 0.95 <= second.time - first.time < 2.5  # honoured Retry-After, not the 0.01 s backoff


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_5xx_then_success(server, make_model, transport):
    server.push(status(500), status(503), ok("recovered"))
    out = await make_model(server.url, transport).generate(_request())
    assert out[0].text == "recovered"
    assert len(server.chat_requests) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_timeout_then_success(server, make_model, transport):
    server.push(slow(2.0), ok("in time"))
    started = time.monotonic()
    out = await make_model(server.url, transport, timeout=0.3).generate(_request())
    assert out[0].text == "in time"
    assert len(server.chat_requests) == 2
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_malformed_json_is_retried(server, make_model, transport):
    server.push(malformed_json(), ok("valid"))
    assert (await make_model(server.url, transport).generate(_request()))[0].text == "valid"
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dropped_connection_is_retried(server, make_model, transport):
    server.push(drop_connection(), ok("reconnected"))
    assert (await make_model(server.url, transport).generate(_request()))[0].text == "reconnected"
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retries_exhausted_reports_last_cause(server, make_model, transport):
    server.push(status(500), status(503), status(502, message="upstream gateway exploded"))
    retry = RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.1, jitter=0.0)
    with pytest.raises(BackendError) as info:
        await make_model(server.url, transport, retry=retry).generate(_request())
    assert info.value.retryable and info.value.status == 502
    assert "upstream gateway exploded" in str(info.value)
    assert len(server.chat_requests) == 3


# -- non-retryable failures --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unauthorized_is_an_authentication_error(server, make_model, transport):
    server.push(unauthorized())
    with pytest.raises(AuthenticationError, match="refused the API key") as info:
        await make_model(server.url, transport).generate(_request())
    assert server.url in str(info.value)
    assert len(server.chat_requests) == 1  # not retried


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_model_lists_served_models(server, make_model, transport):
    server.push(not_found_model())
    with pytest.raises(ModelNotFoundError) as info:
        await make_model(server.url, transport, model="no-such-model").generate(_request())
    message = str(info.value)
    assert "no-such-model" in message and "served-model" in message and "other-model" in message
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_model_missing_in_a_400_is_model_not_found(server, make_model, transport):
    server.push(status(400, message="Invalid model: does-not-exist"))
    with pytest.raises(ModelNotFoundError, match="served-model"):
        await make_model(server.url, transport, model="does-not-exist").generate(_request())


async def test_other_4xx_is_not_retried_and_keeps_the_message(server, make_model):
    server.push(status(400, message="temperature must be at most 2, got 7"))
    with pytest.raises(BackendError, match="temperature must be at most 2") as info:
        await make_model(server.url).generate(_request())
    assert type(info.value) is BackendError
    assert not info.value.retryable and info.value.status == 400
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens.",  # vLLM, OpenAI
        "The input (9000 tokens) is longer than the model's context length (4096 tokens).",  # SGLang
        "The decoder prompt (length 9000) is longer than the maximum model length of 4096.",  # vLLM's engine
        "max_tokens=9000 cannot be greater than max_model_len=4096. Please request fewer output tokens.",  # vLLM 0.32
    ],
)
async def test_context_overflow_is_a_context_length_error(server, make_model, message):
    """A prompt over the context is its own error (never retried; a batch records it as kind
    ``context``), the one the local backends raise too."""
    server.push(status(400, message=message))
    with pytest.raises(ContextLengthError, match="4096") as info:
        await make_model(server.url).generate(_request())
    assert not info.value.retryable and info.value.status == 400
    assert len(server.chat_requests) == 1


# -- n > 1 refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_refused_n_falls_back_to_separate_requests(server, make_model, transport):
    server.push(refuse_n())
    model = make_model(server.url, transport)
    out = await model.generate(_request(n=3, seed=10, temperature=1.0))
    assert len(out) == 3
    refused, *separate = server.chat_requests
    assert refused.body["n"] == 3
    assert len(separate) == 3 and all(r.body.get("n", 1) == 1 for r in separate)
    assert sorted(r.body["seed"] for r in separate) == [10, 11, 12]
    # remembered: the next call does not try n > 1 again
    server.reset()
    assert len(await model.generate(_request(n=2, seed=0))) == 2
    assert [r.body.get("n", 1) for r in server.chat_requests] == [1, 1]
    assert sorted(r.body["seed"] for r in server.chat_requests) == [0, 1]


async def test_fewer_choices_than_n_are_topped_up(server, make_model):
    server.push(ignore_n())
    out = await make_model(server.url).generate(_request(n=3, seed=5))
    assert len(out) == 3
    first, *rest = server.chat_requests
    assert first.body["n"] == 3 and first.body["seed"] == 5
    assert sorted(r.body["seed"] for r in rest) == [6, 7]


# -- request and response mapping --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_request_fields_usage_and_logprobs(server, make_model, transport):
    server.push(ok("two tokens", n=2))
    model = make_model(server.url, transport, extra_body={"top_k": 20})
    out = await model.generate(
        _request(n=2, temperature=0.5, top_p=0.9, max_tokens=64, stop=["END"], seed=3, logprobs=True, top_logprobs=1)
    )
    body = server.chat_requests[0].body
    assert body["model"] == "served-model" and body["messages"] == [{"role": "user", "content": "Grade this proof."}]
    assert {
        k: body[k]
        for k in ("n", "temperature", "top_p", "max_tokens", "stop", "seed", "logprobs", "top_logprobs", "top_k")
    } == {
        "n": 2,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
        "seed": 3,
        "logprobs": True,
        "top_logprobs": 1,
        "top_k": 20,
    }
    assert server.chat_requests[0].headers["Authorization"] == "Bearer sk-test"
    assert [c.text for c in out] == ["two tokens", "two tokens"]
    assert all(c.prompt_tokens == 7 and c.completion_tokens == 2 for c in out)
    assert [t.token for t in out[0].logprobs] == ["two", "tokens"]
    assert out[0].logprobs[0].logprob == -0.5 and out[0].logprobs[0].top == {"two": -0.5}
    assert model.usage.calls == 1 and model.usage.prompt_tokens == 7 and model.usage.completion_tokens == 4


async def test_usage_is_split_evenly_without_logprobs(server, make_model):
    server.push(ok("a b c", n=2, extra={"usage": {"prompt_tokens": 11, "completion_tokens": 7}}))
    out = await make_model(server.url).generate(_request(n=2))
    assert [c.prompt_tokens for c in out] == [11, 11]
    assert sorted(c.completion_tokens for c in out) == [3, 4]


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    now = time.time()
    assert 9 <= parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now=now) <= 10
    assert parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_cache_identity():
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:8000/v1/")
    assert backend.cache_identity() == "openai/http://127.0.0.1:8000/v1/m"


# -- likelihood scoring over the wire ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sequence_logprobs_sums_prompt_logprobs(server, make_model, transport):
    prompt_logprobs = [None, {"17": {"logprob": -1.25, "rank": 4, "decoded_token": "a"}}, {"3": {"logprob": -0.5}}]
    server.push(ok(extra={"prompt_logprobs": prompt_logprobs}), ok(extra={"prompt_logprobs": prompt_logprobs}))
    messages = [ChatMessage(role="user", content="Is it right?"), ChatMessage(role="assistant", content="Verdict:")]
    scores = await make_model(server.url, transport).sequence_logprobs(messages, [" yes", " no"])
    assert scores == [-1.75, -1.75]
    sent = sorted((r.body for r in server.chat_requests), key=lambda b: b["messages"][-1]["content"])
    assert [b["messages"][-1] for b in sent] == [
        {"role": "assistant", "content": "Verdict: no"},
        {"role": "assistant", "content": "Verdict: yes"},
    ]
    assert all(
        b["continue_final_message"] is True
        and b["add_generation_prompt"] is False
        and b["prompt_logprobs"] == 0
        and b["max_tokens"] == 1
        for b in sent
    )


async def test_sequence_logprobs_without_prompt_logprobs_is_unsupported(server, make_model):
    model = make_model(server.url)
    with pytest.raises(UnsupportedFeatureError, match="does not return prompt logprobs"):
        await model.sequence_logprobs([ChatMessage(role="user", content="q")], ["a"])
    server.push(status(400, message="Unrecognized request argument supplied: prompt_logprobs"))
    with pytest.raises(UnsupportedFeatureError, match="--score-mode text"):
        await model.sequence_logprobs([ChatMessage(role="user", content="q")], ["a"])


# -- the tiny model behind a real OpenAI-compatible server ---------------------------------------------


@pytest.fixture
async def tiny_server(tiny_backend):
    async with TinyOpenAIServer(tiny_backend, "tiny", api_key="sk-tiny") as s:
        yield s


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tiny_server_chat_samples_usage_logprobs(tiny_server, make_model, transport):
    model = make_model(tiny_server.url, transport, model="tiny", api_key="sk-tiny")
    out = await model.generate(
        _request("Prove that 2 + 2 = 4.", n=3, temperature=1.0, seed=1, max_tokens=8, logprobs=True, top_logprobs=2)
    )
    assert len(out) == 3 and all(isinstance(c.text, str) for c in out)
    assert all(c.finish_reason in ("stop", "length") for c in out)
    assert all(c.logprobs is not None and len(c.logprobs) == c.completion_tokens > 0 for c in out)
    assert all(t.logprob <= 0 and t.top and len(t.top) <= 2 for c in out for t in c.logprobs)
    assert out[0].prompt_tokens > 0
    assert model.usage.calls == 1
    assert model.usage.prompt_tokens == out[0].prompt_tokens
    assert model.usage.completion_tokens == sum(c.completion_tokens for c in out)
    assert tiny_server.requests[-1]["n"] == 3


async def test_tiny_server_greedy_matches_the_backend(tiny_server, tiny_backend, make_model):
    request = _request("Compute 3 + 4.", temperature=0.0, max_tokens=10)
    direct = await tiny_backend.generate(request)
    remote = await make_model(tiny_server.url, model="tiny", api_key="sk-tiny").generate(request)
    assert remote[0].text == direct[0].text and remote[0].completion_tokens == direct[0].completion_tokens


async def test_tiny_server_refuses_bad_key_and_unknown_model(tiny_server, make_model):
    with pytest.raises(AuthenticationError):
        await make_model(tiny_server.url, model="tiny", api_key="wrong").generate(_request())
    with pytest.raises(ModelNotFoundError, match="it serves: tiny"):
        await make_model(tiny_server.url, model="gpt-9", api_key="sk-tiny").generate(_request())


async def test_tiny_server_scores_like_the_backend(tiny_server, tiny_backend, make_model):
    messages = [
        ChatMessage(role="user", content="Is the proof correct?"),
        ChatMessage(role="assistant", content="Since the integer n"),
    ]
    continuations = [" is divisible by 2.", " zq!! xv ~~", " equals n + 1; the proof is complete."]
    direct = await tiny_backend.sequence_logprobs(messages, continuations)
    remote = await make_model(tiny_server.url, model="tiny", api_key="sk-tiny").sequence_logprobs(
        messages, continuations
    )
    assert remote == pytest.approx(direct, rel=1e-4, abs=1e-3)
    rank = lambda xs: sorted(range(len(xs)), key=xs.__getitem__)  # noqa: E731
    assert rank(remote) == rank(direct)


# -- engine features: guided choice and continued assistant turns ----------------------------------------


def test_choice_regex_matches_exactly_the_choices():
    import re

    from proofcritic.llm._sglang import choice_regex

    choices = ["0}", "0.5}", "1}", "a|b", "(x)*"]
    pattern = re.compile(choice_regex(choices))
    assert all(pattern.fullmatch(c) for c in choices)
    assert not any(pattern.fullmatch(c) for c in ["0", "0x5}", "a", "b", "x", "(x)", "0}0.5}"])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_guided_choice_request_per_engine(server, make_model, transport):
    messages = [ChatMessage(role="user", content="Score?"), ChatMessage(role="assistant", content="\\boxed{")]
    request = ChatRequest(messages=messages, config=GenerateConfig(choices=["0}", "0.5}", "1}"], temperature=0.0))
    server.push(ok("0.5}"), ok("1}"))
    vllm = make_model(server.url, transport, engine="vllm")
    assert [c.text for c in await vllm.generate(request)] == ["0.5}"]
    sglang = make_model(server.url, transport, engine="sglang")
    assert [c.text for c in await sglang.generate(request)] == ["1}"]
    first, second = (r.body for r in server.chat_requests)
    assert first["structured_outputs"] == {"choice": ["0}", "0.5}", "1}"]} and "regex" not in first
    assert second["regex"] == "(0\\}|0\\.5\\}|1\\})" and "structured_outputs" not in second
    assert all(b["continue_final_message"] is True and b["add_generation_prompt"] is False for b in (first, second))
    assert first["messages"][-1] == {"role": "assistant", "content": "\\boxed{"}


async def test_plain_requests_carry_no_engine_extras(server, make_model):
    messages = [ChatMessage(role="user", content="Score?"), ChatMessage(role="assistant", content="\\boxed{")]
    await make_model(server.url).generate(ChatRequest(messages=messages))  # engine openai
    await make_model(server.url, engine="vllm").generate(_request())  # no final assistant turn
    assert all(
        not {"continue_final_message", "structured_outputs", "regex"} & set(r.body) for r in server.chat_requests
    )


def test_each_engine_is_its_own_class():
    """vLLM and SGLang are subclasses of the OpenAI backend: built from a spec prefix, from
    ``engine=`` or directly; the spec prefix stays the backend's name (and so the model's)."""
    from proofcritic.llm import get_backend
    from proofcritic.llm._sglang import SGLangBackend
    from proofcritic.llm._vllm import VLLMBackend

    url = "http://127.0.0.1:9/v1"
    cases = [
        (OpenAIBackend("m", base_url=url, engine="vllm"), VLLMBackend, "openai"),
        (OpenAIBackend("m", url, None, 600, "lean", None, None, "sglang"), SGLangBackend, "openai"),  # positional
        (OpenAIBackend("m", base_url=url), OpenAIBackend, "openai"),
        (OpenAIBackend("m", base_url=url, engine="openai"), OpenAIBackend, "openai"),
        (VLLMBackend("m", base_url=url), VLLMBackend, "openai"),
        (get_backend("vllm/m"), VLLMBackend, "vllm"),
        (get_backend("sglang/m"), SGLangBackend, "sglang"),
        (get_backend("openai/m", base_url=url, engine="sglang"), SGLangBackend, "openai"),
        (get_backend("vllm/m", engine="openai"), OpenAIBackend, "vllm"),
    ]
    for backend, cls, name in cases:
        assert type(backend) is cls and backend.name == name
        assert backend.engine == {OpenAIBackend: "openai", VLLMBackend: "vllm", SGLangBackend: "sglang"}[cls]
    with pytest.raises(ValueError, match="speaks to engine 'vllm', not 'sglang'"):
        VLLMBackend("m", base_url=url, engine="sglang")
    with pytest.raises(ValueError, match="engine must be one of"):
        OpenAIBackend("m", base_url=url, engine="tgi")


async def test_guided_choice_refused_by_the_server_is_unsupported(server, make_model):
    server.push(status(400, message="Unrecognized request argument supplied: structured_outputs"))
    model = make_model(server.url, engine="vllm")
    request = _request(choices=["yes", "no"])
    with pytest.raises(UnsupportedFeatureError, match="refused guided choice"):
        await model.generate(request)
    with pytest.raises(UnsupportedFeatureError):
        await model.generate(request)
    assert len(server.chat_requests) == 1  # the second call knew


async def test_other_errors_of_a_guided_request_stay_what_they_are(server, make_model):
    server.push(status(503), status(400, message="This model's maximum context length is 4096 tokens."))
    model = make_model(server.url, engine="vllm")
    with pytest.raises(BackendError, match="maximum context length") as info:
        await model.generate(_request(choices=["yes", "no"]))  # 503 retried by the Model, then a real 400
    assert type(info.value) is ContextLengthError
    assert model.backend.choices_supported


def test_a_command_run_closes_and_reports_even_when_it_fails(server):
    """``cli._common.run_with_model``, how every model-using command runs: the work's error comes
    through after the things to close are closed, the usage line printed and the model closed."""
    import io

    from rich.console import Console

    from proofcritic.cli._common import run_with_model

    model = Model(OpenAIBackend("served-model", base_url=server.url, api_key="sk-test"), cache=None, retry=FAST)
    helper = OpenAIBackend("served-model", base_url=server.url, api_key="sk-test")  # e.g. a strategy's own backend
    server.push(ok("one"), ok("two"))

    async def work():
        await model.generate(_request())
        await helper.generate(_request())
        assert model.backend._transport is not None and helper._transport is not None
        raise RuntimeError("the command failed")

    out = io.StringIO()
    with pytest.raises(RuntimeError, match="the command failed"):
        run_with_model(model, Console(file=out, width=300), work, closing=[helper])
    assert model.backend._transport is None and helper._transport is None
    assert out.getvalue().count("model calls: 1 new, 0 from cache") == 1

    async def answer():
        return 42

    assert run_with_model(model, Console(file=out), answer, usage=False) == 42
    assert run_with_model(None, Console(file=out), answer) == 42
    assert out.getvalue().count("model calls") == 1  # usage=False, and no model: no line
