"""A dead or slow model server costs seconds, not minutes; what the client reports is what the
server saw.

The circuit breaker (unit rules on a scripted backend, then a batch against a real HTTP server
that always fails, and its rerun once the server is back), ``--timeout``, the run summary's
endpoint state, the likelihood read-out learned once, and the usage the CLI reports (stderr
line, ``--json``, batch records) against the requests and tokens the fault server counted.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.cli._common import endpoint_lines
from proofcritic.errors import BackendError, CircuitOpenError
from proofcritic.llm import (
    Backend,
    ChatMessage,
    ChatRequest,
    CircuitBreaker,
    Completion,
    GenerateConfig,
    Model,
    RetryPolicy,
    usage_scope,
)
from proofcritic.llm._openai import OpenAIBackend

try:  # tests/ is on sys.path when it is not a package
    from servers.fault_server import (
        FaultServer,
        drop_connection,
        empty_answer,
        malformed_json,
        slow,
    )
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.servers.fault_server import (
        FaultServer,
        drop_connection,
        empty_answer,
        malformed_json,
        slow,
    )

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = RetryPolicy(max_attempts=6, initial_wait=0.01, max_wait=0.05, jitter=0.0)


def _request(text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], config=GenerateConfig())


class FlakyBackend(Backend):
    """Fails every call with a retryable error while ``down``; counts the calls it got."""

    name = "flaky"
    model = "m"

    def __init__(self, down: bool = True):
        self.down = down
        self.calls = 0

    async def generate(self, request: ChatRequest) -> list[Completion]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise BackendError("the server answered 503: overloaded", retryable=True, status=503)
        return [Completion(text="fine", prompt_tokens=2, completion_tokens=1)]


# -- the breaker's rule --------------------------------------------------------------------------


async def test_one_call_retries_in_full_but_failures_across_calls_open_the_breaker():
    backend = FlakyBackend()
    model = Model(backend, retry=FAST)
    with pytest.raises(BackendError, match="overloaded") as first:
        await model.generate(_request("a"))
    assert not isinstance(first.value, CircuitOpenError) and backend.calls == 6  # one call: all its retries
    assert model.breaker.state == "closed"
    with pytest.raises(CircuitOpenError, match=r"circuit open: the last 8 requests to flaky/m all failed.*overloaded"):
        await model.generate(_request("b"))  # a second call: the 8th failure in a row opens it
    assert backend.calls == 8 and model.breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        await model.generate(_request("c"))
    assert backend.calls == 8  # open: no request at all
    assert (model.usage.calls, model.usage.failed_calls) == (8, 8)


async def test_an_answer_resets_the_count_and_a_half_open_breaker_sends_one_probe():
    backend = FlakyBackend()
    model = Model(backend, retry=RetryPolicy(max_attempts=1), breaker=CircuitBreaker(3, cooldown=0.2))
    for text in "ab":
        with pytest.raises(BackendError):
            await model.generate(_request(text))
    backend.down = False
    await model.generate(_request("c"))  # an answer: the count starts again
    backend.down = True
    for text in "de":
        with pytest.raises(BackendError):
            await model.generate(_request(text))
    assert model.breaker.state == "closed"
    with pytest.raises(BackendError):
        await model.generate(_request("f"))
    assert model.breaker.state == "open" and backend.calls == 6
    await asyncio.sleep(0.25)
    assert model.breaker.state == "half-open"
    backend.down = False
    outcomes = await asyncio.gather(*(model.generate(_request(f"g{i}")) for i in range(3)), return_exceptions=True)
    assert backend.calls == 7  # one probe went through; the others failed at once while it ran
    assert sum(isinstance(o, CircuitOpenError) for o in outcomes) == 2
    assert model.breaker.state == "closed"
    assert (await model.generate(_request("h")))[0].text == "fine"


async def test_a_failed_probe_opens_the_breaker_for_longer():
    clock = [0.0]
    breaker = CircuitBreaker(2, cooldown=1.0, clock=lambda: clock[0])
    model = Model(FlakyBackend(), retry=RetryPolicy(max_attempts=1), breaker=breaker)
    for text in "ab":
        with pytest.raises(BackendError):
            await model.generate(_request(text))
    assert breaker.open_until == 1.0
    clock[0] = 1.5
    with pytest.raises(BackendError) as probe:
        await model.generate(_request("c"))
    assert not isinstance(probe.value, CircuitOpenError) and breaker.state == "open"
    assert breaker.open_until == 1.5 + 2.0  # twice the cool-down


async def test_a_backoff_ends_when_the_breaker_opens():
    backend = FlakyBackend()
    slow_retry = RetryPolicy(max_attempts=6, initial_wait=30.0, jitter=0.0)
    model = Model(backend, retry=slow_retry, breaker=CircuitBreaker(4))
    started = time.monotonic()
    outcomes = await asyncio.gather(*(model.generate(_request(str(i))) for i in range(4)), return_exceptions=True)
    assert time.monotonic() - started < 5  # not 30 s of backoff
    assert backend.calls == 4 and all(isinstance(o, CircuitOpenError) for o in outcomes)


async def test_the_breaker_opens_only_when_every_endpoint_fails():
    with FaultServer() as dead, FaultServer() as alive:
        dead.always(drop_connection())
        backend = OpenAIBackend("served-model", base_url=[dead.url, alive.url], api_key="k", eject_cooldown=30)
        model = Model(backend, cache=None, retry=FAST)
        try:
            results = await asyncio.gather(*(model.generate(_request(f"q{i}")) for i in range(20)))
            assert all(r[0].text == "ok" for r in results) and model.breaker.state == "closed"
            alive.always(malformed_json())
            outcomes = await asyncio.gather(
                *(model.generate(_request(f"r{i}")) for i in range(4)), return_exceptions=True
            )
        finally:
            await model.aclose()
    assert any(isinstance(o, CircuitOpenError) for o in outcomes) and model.breaker.state == "open"
    assert str(dead.url) in model.breaker.error().args[0] and str(alive.url) in model.breaker.error().args[0]


# -- the command line against a dead server --------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _model_args(server: FaultServer, *more: str) -> list[str]:
    return ["--model", "openai/served-model", "--base-url", server.url, "--api-key", "k", *more]


def _batch(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": f"Show that {i} + 1 > {i}.", "proof": "Add 1 to both sides."}) + "\n"
            for i in range(count)
        )
    )
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_dead_server_stops_the_batch_in_seconds_and_the_rerun_resumes(tmp_path):
    source, output = _batch(tmp_path / "in.jsonl", 20), tmp_path / "out.jsonl"
    args = ["grade", "--input", str(source), "--output", str(output), "--score-mode", "text", "--no-cache"]
    with FaultServer() as server:
        server.always(malformed_json(), drop_connection(), empty_answer())
        started = time.monotonic()
        result = _cli(*args, *_model_args(server))
        elapsed = time.monotonic() - started
        sent = len(server.chat_requests)
        # before: 6 tries per item, 120 requests and about a minute
        assert result.exit_code != 0 and elapsed < 10 and sent <= 20, (elapsed, sent, result.stderr)
        stderr = " ".join(result.stderr.split())
        assert f"circuit open: the last 8 requests to {server.url} all failed" in stderr
        records = _records(output)
        assert 0 < len(records) < 20 and all(r["error_kind"] == "backend" for r in records)
        assert "stopped early" in stderr
        # the summary tells what the server did: every request failed; the usage line counts them
        assert f"endpoint {server.url}: {sent} requests, {sent} failed" in stderr
        assert f"down ({sent} of {sent} requests failed, none answered; last error:" in stderr
        assert "; up" not in stderr
        assert re.search(rf"model calls: {sent} new, 0 from cache; .*the new calls include {sent} failed", stderr)

        server.reset()  # the server is back
        again = _cli(*args, *_model_args(server))
        assert again.exit_code == 0, again.stderr
        assert len(server.chat_requests) == 20  # the failed items and the ones never started, once each
    finished = _records(output)
    assert sorted(r["id"] for r in finished) == sorted(f"p{i}" for i in range(20))
    assert not any("error" in r for r in finished)


def test_the_summary_says_a_failing_single_endpoint_is_down():
    async def run() -> list[str]:
        with FaultServer() as server:
            server.always(drop_connection())
            model = Model(OpenAIBackend("served-model", base_url=server.url, api_key="k"), retry=FAST)
            try:
                with pytest.raises(BackendError, match="gave up after 6 attempts"):
                    await model.generate(_request())
                return endpoint_lines(model)
            finally:
                await model.aclose()

    (line,) = asyncio.run(run())
    assert (
        "6 requests, 6 failed" in line and "down (6 of 6 requests failed, none answered; last error: connection" in line
    )


# -- --timeout --------------------------------------------------------------------------------------


def test_timeout_option_cuts_a_slow_request_and_the_retry_answers(tmp_path):
    with FaultServer() as server:
        server.push(slow(8))  # the first request hangs; the retry is answered at once
        started = time.monotonic()
        result = _cli(
            "grade",
            "--problem",
            str(EXAMPLES / "problem.md"),
            "--proof",
            str(EXAMPLES / "proof_correct.md"),
            "--score-mode",
            "text",
            "--no-cache",
            "--timeout",
            "1",
            *_model_args(server),
        )
        elapsed = time.monotonic() - started
        # the answer ("ok") writes no score: no verdict, exit status 1; the point is the timing
        assert result.exit_code == 1 and "no verdict" in result.stderr, result.output + result.stderr
        assert len(server.chat_requests) == 2 and 1.0 <= elapsed < 4.5, elapsed  # 1 s, a backoff, the answer
        assert "1 failed" in " ".join(result.stderr.split())


async def test_a_timed_out_request_fails_after_the_timeout_set_on_the_model():
    with FaultServer() as server:
        server.always(slow(10))
        model = Model(
            OpenAIBackend("served-model", base_url=server.url, api_key="k"), retry=RetryPolicy(max_attempts=1)
        )
        try:
            model.set_timeout(0.5)
            started = time.monotonic()
            with pytest.raises(BackendError, match=r"timed out after 0.5 s"):
                await model.generate(_request())
            assert time.monotonic() - started < 2
        finally:
            await model.aclose()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_timeout_must_be_a_positive_number_of_seconds(value):
    result = _cli("grade", "--problem", "p.md", "--proof", "y.md", "--model", "openai/m", "--timeout", value)
    assert result.exit_code == 2 and "more than 0" in result.output + result.stderr


def test_the_service_takes_a_timeout_for_its_upstream(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app

    model = Model(OpenAIBackend("served-model", base_url="http://127.0.0.1:9/v1", api_key="k"))
    with pytest.raises(ValueError, match="timeout"):
        ServerSettings(model=model, db_path=tmp_path / "j.sqlite", timeout=0)
    settings = ServerSettings(model=model, db_path=tmp_path / "j.sqlite", timeout=2.5)
    with TestClient(create_app(settings)):
        assert model.backend.timeout == 2.5
    serve_help = _cli("serve", "--help").output
    assert "--timeout" in serve_help


# -- the read-out learned once; usage equals what the server saw ----------------------------------------


def _usage_numbers(stderr: str) -> tuple[int, int, int, int]:
    match = re.search(r"model calls: (\d+) new, (\d+) from cache; tokens: (\d+) prompt \+ (\d+) completion", stderr)
    assert match, stderr
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def test_auto_read_out_against_a_server_without_prompt_logprobs_is_tried_once(tmp_path):
    cache = str(tmp_path / "c.sqlite")
    grade = [
        "grade",
        "--problem",
        str(EXAMPLES / "problem.md"),
        "--proof",
        str(EXAMPLES / "proof_flawed.md"),
        "-n",
        "3",
        "--score-mode",
        "auto",
        "--json",
        "--cache",
        cache,
    ]
    with FaultServer() as server:  # answers "ok": no written score, and no prompt_logprobs
        first = _cli(*grade, *_model_args(server))
        assert first.exit_code == 1, first.stderr  # no score written nor read out: no verdict
        # one request with n=3, one read-out that shows the server has none (before: 1 + 3 x 3 = 10)
        assert len(server.chat_requests) == 2 and server.chat_requests[1].body.get("prompt_logprobs") == 0
        data = json.loads(first.stdout)
        assert all(v["score"] is None for v in data["verifications"])
        prompt, completion = server.served_tokens
        assert _usage_numbers(first.stderr) == (2, 0, prompt, completion)
        assert {
            k: data["usage"][k]
            for k in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "readout_calls")
        } == {
            "calls": 2,
            "cached_calls": 0,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "readout_calls": 1,
        }

        server.reset()  # the same command again: the answers come from the cache, the read-out is asked once
        second = _cli(*grade, *_model_args(server))
        assert second.exit_code == 1, second.stderr
        assert len(server.chat_requests) == 1
        prompt, completion = server.served_tokens
        assert _usage_numbers(second.stderr) == (1, 1, prompt, completion)
        usage = json.loads(second.stdout)["usage"]
        assert (usage["calls"], usage["cached_calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (
            1,
            1,
            prompt,
            completion,
        )  # the cached answer's tokens are not counted again


def test_batch_records_and_the_summary_count_what_the_server_saw(tmp_path):
    source, output = _batch(tmp_path / "in.jsonl", 6), tmp_path / "out.jsonl"
    with FaultServer() as server:
        server.push(drop_connection(), malformed_json())  # two failed requests, retried
        result = _cli(
            "grade",
            "--input",
            str(source),
            "--output",
            str(output),
            "-n",
            "2",
            "--score-mode",
            "auto",
            "--no-cache",
            *_model_args(server),
        )
        assert result.exit_code == 0, result.stderr
        sent = len(server.chat_requests)
        assert sent == 6 + 2 + 1  # six requests of n=2, two retries, one read-out (before: 6 + 2 + 6 x 2 x 3)
        prompt, completion = server.served_tokens
    assert _usage_numbers(result.stderr) == (sent, 0, prompt, completion)
    assert "the new calls include 2 failed and 1 likelihood read-outs" in " ".join(result.stderr.split())
    records = _records(output)
    total = {
        k: sum(r["usage"][k] for r in records) for k in ("calls", "failed_calls", "prompt_tokens", "completion_tokens")
    }
    assert total == {"calls": sent, "failed_calls": 2, "prompt_tokens": prompt, "completion_tokens": completion}


def test_label_records_count_what_the_server_saw(tmp_path):
    source = _batch(tmp_path / "in.jsonl", 3)
    output, review = tmp_path / "out.jsonl", tmp_path / "review.jsonl"
    with FaultServer() as server:
        result = _cli(
            "label",
            "--input",
            str(source),
            "--output",
            str(output),
            "--review",
            str(review),
            "-n",
            "2",
            "--score-mode",
            "auto",
            "--no-cache",
            *_model_args(server),
        )
        assert result.exit_code == 0, result.stderr
        sent = len(server.chat_requests)
        assert sent == 3 + 1  # one verification request per proof, one read-out for the whole run
        prompt, completion = server.served_tokens
    records = _records(output)
    assert sum(r["usage"]["calls"] for r in records) == sent == _usage_numbers(result.stderr)[0]
    assert sum(r["usage"]["prompt_tokens"] for r in records) == prompt
    assert sum(r["usage"]["completion_tokens"] for r in records) == completion


async def test_a_usage_scope_counts_the_calls_made_inside_it():
    backend = FlakyBackend(down=False)
    model = Model(backend)
    await model.generate(_request("before"))
    with usage_scope() as outer:
        await model.generate(_request("a"))
        with usage_scope() as inner:
            await asyncio.gather(model.generate(_request("b")), model.generate(_request("c")))
    assert (outer.calls, inner.calls, model.usage.calls) == (3, 2, 4)
    assert (inner.prompt_tokens, inner.completion_tokens) == (4, 2)


def test_the_service_shares_one_breaker_and_answers_503_while_it_is_open(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app

    with FaultServer() as server:
        server.always(drop_connection())
        model = Model(OpenAIBackend("served-model", base_url=server.url, api_key="k"), cache=None)
        settings = ServerSettings(
            model_factory=lambda: model,
            db_path=tmp_path / "j.sqlite",
            retry=RetryPolicy(max_attempts=4, initial_wait=0.01, jitter=0.0),
        )
        body = {
            "model": "proofcritic/grade",
            "proofcritic": {"score_mode": "text"},
            "messages": [{"role": "user", "content": "Show that 1 + 1 = 2.\n## Proof\nTrivial."}],
        }
        with TestClient(create_app(settings)) as client:
            answers = [client.post("/v1/chat/completions", json=body) for _ in range(3)]
        assert [a.status_code for a in answers] == [503, 503, 503]
        assert "gave up after 4 attempts" in answers[0].json()["error"]["message"]
        assert "circuit open: the last 8 requests" in answers[2].json()["error"]["message"]
        assert len(server.chat_requests) == 8  # two requests' attempts; the third sent nothing
