"""Several replicas behind one OpenAI-compatible backend: least outstanding requests, ejection,
health checks, re-routing, per-endpoint counters, and a replica killed in the middle of a run.

The servers are real: three servers of the tiny model (the one that dies is a separate process,
killed with SIGKILL while requests are in flight; the two others run in threads here, which
saves loading torch twice more), and scripted fault servers where a test needs an exact failure.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from proofcritic.cli._common import build_model, endpoint_lines
from proofcritic.errors import BackendError
from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, Model, RetryPolicy
from proofcritic.llm._balancer import Balancer, prefix_key, split_base_urls
from proofcritic.llm._openai import OpenAIBackend

try:  # tests/ is on sys.path when it is not a package
    from servers.fault_server import FaultServer, drop_connection, ok, slow, status
    from servers.tiny_openai_server import TinyOpenAIServer, spawn
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.servers.fault_server import (
        FaultServer,
        drop_connection,
        ok,
        slow,
        status,
    )
    from tests.servers.tiny_openai_server import TinyOpenAIServer, spawn

NO_RETRY = RetryPolicy(max_attempts=1)


def _request(text: str = "Grade this proof.", **config) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], config=GenerateConfig(**config))


def _closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def two_servers():
    with FaultServer() as a, FaultServer() as b:
        yield a, b


@pytest.fixture
async def make_model():
    made: list[Model] = []

    def build(urls, retry: RetryPolicy = NO_RETRY, **options) -> Model:
        options.setdefault("routing", "least-loaded")  # these tests name the replica a request goes to first
        backend = OpenAIBackend("served-model", base_url=urls, api_key="sk-test", **options)
        made.append(Model(backend, cache=None, retry=retry))
        return made[-1]

    yield build
    for model in made:
        await model.aclose()


def _stats(model: Model) -> dict[str, dict]:
    return {s["url"]: s for s in model.backend.endpoint_stats()}


# -- base URLs ---------------------------------------------------------------------------------------


def test_base_urls_from_lists_and_commas(monkeypatch):
    assert split_base_urls("http://a/v1/, http://b/v1") == ["http://a/v1", "http://b/v1"]
    assert split_base_urls(["http://a/v1,http://b/v1", "http://c/v1", "http://a/v1"]) == [
        "http://a/v1",
        "http://b/v1",
        "http://c/v1",
    ]
    assert split_base_urls(None) == [] and split_base_urls(" , ") == []
    model = build_model("vllm/m", None, ["http://a:1/v1,http://b:2/v1", "http://c:3/v1"], None, True, None, None)
    assert model.backend.base_urls == ["http://a:1/v1", "http://b:2/v1", "http://c:3/v1"]
    assert model.backend.cache_identity() == "openai/http://a:1/v1/m"  # the first replica names the cache
    monkeypatch.setenv("OPENAI_BASE_URL", "http://x:1/v1,http://y:2/v1")
    model = build_model("openai/m", None, None, None, True, None, None)
    assert model.backend.base_urls == ["http://x:1/v1", "http://y:2/v1"]
    with pytest.raises(ValueError, match="given twice"):
        Balancer(["u", "u"], probe=None)  # type: ignore[arg-type]


def test_cooldown_doubles_up_to_the_cap():
    balancer = Balancer(["a", "b"], probe=None, cooldown=0.5, max_cooldown=3.0)  # type: ignore[arg-type]
    assert [balancer.cooldown_for(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


# -- choice -------------------------------------------------------------------------------------------


async def test_idle_endpoints_take_turns(two_servers, make_model):
    a, b = two_servers
    model = make_model([a.url, b.url])
    for _ in range(4):
        await model.generate(_request())
    assert len(a.chat_requests) == 2 and len(b.chat_requests) == 2


async def test_least_outstanding_requests(two_servers, make_model):
    a, b = two_servers
    a.push(slow(1.0, "slow"))
    model = make_model([a.url, b.url])
    first = asyncio.create_task(model.generate(_request()))
    while not a.chat_requests:  # the slow request is in flight at A
        await asyncio.sleep(0.01)
    for _ in range(3):  # one at a time: each sees A with 1 outstanding and B with 0
        assert (await model.generate(_request()))[0].text == "ok"
    assert (await first)[0].text == "slow"
    assert len(a.chat_requests) == 1 and len(b.chat_requests) == 3
    stats = _stats(model)
    assert stats[a.url]["requests"] == 1 and stats[b.url]["requests"] == 3
    assert all(s["in_flight"] == 0 and s["failures"] == 0 for s in stats.values())


# -- failures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [status(503), drop_connection()], ids=["503", "dropped"])
async def test_failed_attempt_goes_to_another_endpoint_at_once(two_servers, make_model, failure):
    a, b = two_servers
    a.push(failure)
    model = make_model([a.url, b.url], eject_cooldown=30)
    out = await model.generate(_request())  # the Model does not retry (NO_RETRY): the balancer re-routed
    assert out[0].text == "ok"
    assert len(a.chat_requests) == 1 and len(b.chat_requests) == 1
    stats = _stats(model)
    assert stats[a.url]["failures"] == 1 and stats[a.url]["ejections"] == 1 and not stats[a.url]["healthy"]
    assert stats[b.url]["successes"] == 1 and stats[b.url]["healthy"]
    for _ in range(3):  # A is out for its cool-down
        await model.generate(_request())
    assert len(a.chat_requests) == 1 and len(b.chat_requests) == 4
    assert stats[a.url]["last_error"] is not None


async def test_429_reroutes_without_ejecting(two_servers, make_model):
    a, b = two_servers
    a.push(status(429, retry_after=5))
    model = make_model([a.url, b.url])
    assert (await model.generate(_request()))[0].text == "ok"
    stats = _stats(model)
    assert stats[a.url]["failures"] == 1 and stats[a.url]["ejections"] == 0 and stats[a.url]["healthy"]
    await model.generate(_request())
    await model.generate(_request())
    assert len(a.chat_requests) == 2  # still in rotation


async def test_request_errors_are_not_rerouted(two_servers, make_model):
    a, b = two_servers
    a.push(status(400, message="This model's maximum context length is 4096 tokens."))
    model = make_model([a.url, b.url])
    with pytest.raises(BackendError, match="maximum context length") as info:
        await model.generate(_request())
    assert not info.value.retryable
    stats = _stats(model)[a.url]
    assert len(b.chat_requests) == 0 and stats["ejections"] == 0 and stats["rejected"] == 1 and stats["failures"] == 0


async def test_every_endpoint_failing_surfaces_the_last_error(two_servers, make_model):
    a, b = two_servers
    a.push(status(500, message="first broke"))
    b.push(status(502, message="second broke"))
    model = make_model([a.url, b.url], eject_cooldown=30)
    with pytest.raises(BackendError) as info:
        await model.generate(_request())
    assert info.value.retryable and info.value.status in (500, 502)
    assert len(a.chat_requests) == 1 and len(b.chat_requests) == 1  # once per endpoint, no more
    with pytest.raises(BackendError, match="all 2 endpoints are down") as info:
        await model.generate(_request())
    assert info.value.retryable and 25 < info.value.retry_after <= 30
    assert "first broke" in str(info.value) and "second broke" in str(info.value)


async def test_all_down_then_back_through_the_model_retry(make_model):
    dead = [_closed_port_url(), _closed_port_url()]
    model = make_model(dead, eject_cooldown=0.5)
    with pytest.raises(BackendError) as info:
        await model.generate(_request())
    assert info.value.retryable and "connection" in str(info.value)
    assert all(s["ejections"] == 1 for s in _stats(model).values())
    # the health checks of dead endpoints fail, so they stay out with a longer cool-down
    await asyncio.sleep(0.55)
    with pytest.raises(BackendError, match="all 2 endpoints are down"):
        await model.generate(_request())
    stats = _stats(model)
    assert all(s["probes"] >= 1 and s["probe_failures"] >= 1 and not s["healthy"] for s in stats.values())
    assert all(0.5 < s["down_for_s"] <= 1.0 for s in stats.values())  # second cool-down: 1 s


async def test_recovered_endpoint_returns_after_a_health_check(two_servers, make_model):
    a, b = two_servers
    b.push(status(503))
    model = make_model([a.url, b.url], eject_cooldown=0.6)
    for _ in range(4):
        await model.generate(_request())
    assert len(b.chat_requests) == 1  # failed once, then out
    assert not any(r.method == "GET" for r in b.requests)
    await asyncio.sleep(0.65)
    await model.generate(_request())  # cool-down over: starts the health check, goes to A meanwhile
    for _ in range(20):
        if _stats(model)[b.url]["healthy"]:
            break
        await asyncio.sleep(0.05)
    assert any(r.method == "GET" and r.path == "/v1/models" for r in b.requests)
    for _ in range(4):
        await model.generate(_request())
    stats = _stats(model)[b.url]
    assert stats["healthy"] and stats["ejections"] == 1 and stats["probes"] == 1 and stats["probe_failures"] == 0
    assert len(b.chat_requests) == 3 and stats["successes"] == 2  # back in rotation
    assert stats["prompt_tokens"] == 14  # the fault server charges 7 prompt tokens per answer


async def test_single_endpoint_is_never_ejected(make_model):
    with FaultServer() as a:
        a.push(status(503), status(503))
        model = make_model(a.url, retry=RetryPolicy(max_attempts=3, initial_wait=0.01, jitter=0))
        assert (await model.generate(_request()))[0].text == "ok"
        stats = model.backend.endpoint_stats()
        assert len(stats) == 1 and stats[0]["failures"] == 2 and stats[0]["ejections"] == 0
        assert len(a.chat_requests) == 3


# -- three real replicas, one killed mid-run ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("routing", ["least-loaded", "prefix"])
async def test_three_replicas_one_killed_mid_run(tiny_model_dir, tiny_backend, routing):
    proc, victim = spawn(tiny_model_dir)
    first, third = TinyOpenAIServer(tiny_backend).start_in_thread(), TinyOpenAIServer(tiny_backend).start_in_thread()
    urls = [first.url, victim, third.url]
    backend = OpenAIBackend(
        "tiny", base_url=urls, api_key="EMPTY", eject_cooldown=0.3, max_eject_cooldown=1.0, routing=routing
    )
    model = Model(backend, cache=None, max_concurrency=9, retry=RetryPolicy(max_attempts=3, initial_wait=0.05))
    requests = [_request(f"Compute {i} + {2 * i}.", temperature=0.0, max_tokens=12) for i in range(60)]
    done = 0
    at_kill: dict | None = None
    try:

        async def one(index: int):
            nonlocal done, at_kill
            out = await model.generate(requests[index])
            done += 1
            # kill replica 2 while the others keep working (9 requests are in flight), once a
            # quarter of the work is done and it has served at least once (on a loaded machine
            # the subprocess replica can be the slowest to answer its first request)
            if at_kill is None and done >= 15 and _stats(model)[victim]["successes"] >= 1:
                proc.kill()
                proc.wait()
                at_kill = _stats(model)[victim]
            return index, out

        results = await asyncio.gather(*(one(i) for i in range(60)))
        stats = _stats(model)
        lines = endpoint_lines(model)
    finally:
        await model.aclose()
        proc.kill()
        proc.wait()
        first.stop_thread()
        third.stop_thread()
    assert at_kill is not None and at_kill["successes"] >= 1  # it did serve before it died
    # nothing lost, nothing duplicated: every request has its own answer, each served once
    assert sorted(i for i, _ in results) == list(range(60))
    assert all(len(out) == 1 for _, out in results)
    assert sum(s["successes"] for s in stats.values()) == 60
    # the usage counts every request sent, the re-routed failures too, as the endpoints do
    assert sum(s["requests"] for s in stats.values()) == model.usage.calls
    assert sum(s["failures"] for s in stats.values()) == model.usage.failed_calls
    assert all(s["requests"] == s["successes"] + s["failures"] and s["in_flight"] == 0 for s in stats.values())
    # the answers are the model's: greedy, so equal to the tiny model's own answers
    direct = await tiny_backend.generate_batch(requests)
    assert [out[0].text for _, out in sorted(results, key=lambda r: r[0])] == [d[0].text for d in direct]
    # the dead replica is out; the others never failed
    dead = stats[victim]
    assert not dead["healthy"] and dead["ejections"] == 1 and dead["failures"] >= 1
    # answers it had sent before it died may still be read afterwards (they were in the socket
    # buffers), so it can end with up to the requests it had in flight more; none sent later
    assert at_kill["successes"] <= dead["successes"] <= at_kill["successes"] + at_kill["in_flight"]
    # (least-loaded spreads the 60 evenly; prefix routing by the prompts' hashes, which the
    # replicas' random ports decide, so only that both served is certain)
    most = 15 if routing == "least-loaded" else 0
    for url in urls:
        if url != victim:
            assert stats[url]["healthy"] and stats[url]["failures"] == 0 and stats[url]["successes"] > most
    assert sum(s["completion_tokens"] for s in stats.values()) == model.usage.completion_tokens
    assert len(lines) == 3 and any(victim in line and "out (" in line for line in lines)


# -- the command line ---------------------------------------------------------------------------------


def test_cli_takes_several_base_urls_and_prints_endpoint_counters(tmp_path):
    from typer.testing import CliRunner

    from proofcritic.cli import app

    try:
        from scripted import verification_text
    except ImportError:  # pragma: no cover
        from tests.scripted import verification_text

    problem, proof = tmp_path / "p.md", tmp_path / "y.md"
    problem.write_text("Show that 1 + 1 = 2.")
    proof.write_text("By definition of 2 as the successor of 1.")
    with FaultServer() as a, FaultServer() as b:
        a.push(status(503))
        b.push(ok(verification_text(1)))
        result = CliRunner().invoke(
            app,
            [
                "grade",
                "--problem",
                str(problem),
                "--proof",
                str(proof),
                "--model",
                "openai/served-model",
                "--base-url",
                f"{a.url},{b.url}",
                "--api-key",
                "k",
                "--no-cache",
                "--routing",
                "least-loaded",
            ],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("endpoint ")]
    assert len(lines) == 2
    assert f"endpoint {a.url}: 1 requests, 1 failed, 1 ejections" in lines[0] and "out (" in lines[0]
    assert f"endpoint {b.url}: 1 requests, 0 failed, 0 ejections" in lines[1] and lines[1].endswith("up")


# -- prefix routing -----------------------------------------------------------------------------------


def _key(*turns: tuple[str, str]) -> int:
    return prefix_key([{"role": role, "content": content} for role, content in turns])


def test_prefix_key_is_the_prompt_up_to_the_first_user_message():
    first = _key(("system", "S"), ("user", "verify proof 1"))
    # later turns of the conversation (an answer, a read-out's continuation) keep the key
    assert _key(("system", "S"), ("user", "verify proof 1"), ("assistant", "Here is")) == first
    assert _key(("system", "S"), ("user", "verify proof 1"), ("assistant", "a"), ("user", "again")) == first
    # another proof, another system prompt, or the same text in another role: another key
    assert _key(("system", "S"), ("user", "verify proof 2")) != first
    assert _key(("system", "T"), ("user", "verify proof 1")) != first
    assert _key(("user", "verify proof 1")) != first
    # ChatMessage objects key as the dicts of a request body do
    assert (
        prefix_key([ChatMessage(role="system", content="S"), ChatMessage(role="user", content="verify proof 1")])
        == first
    )


def test_an_ejected_replica_moves_only_its_own_keys():
    now = [0.0]
    urls = [f"http://replica{i}:8000/v1" for i in range(4)]
    balancer = Balancer(urls, probe=None, routing="prefix", clock=lambda: now[0])  # type: ignore[arg-type]
    keys = [_key(("user", f"proof {i}")) for i in range(400)]
    home = {k: balancer.pick(key=k).url for k in keys}  # type: ignore[union-attr]
    counts = {u: sum(1 for h in home.values() if h == u) for u in urls}
    assert all(60 <= c <= 140 for c in counts.values()), counts  # the keys spread over the replicas
    balancer.eject(balancer.endpoints[2], "down")
    moved = {k: balancer.pick(key=k).url for k in keys}  # type: ignore[union-attr]
    assert all(moved[k] == home[k] for k in keys if home[k] != urls[2])  # the others keep their keys
    assert all(moved[k] != urls[2] for k in keys)
    assert len({moved[k] for k in keys if home[k] == urls[2]}) == 3  # its keys spread over the three left


def test_bounded_load_caps_a_replica_at_one_plus_epsilon_times_the_mean():
    urls = [f"http://replica{i}:8000/v1" for i in range(4)]
    key = _key(("user", "the proof everyone verifies"))
    # 12 requests of one prefix put in flight one after another: the j-th may go to a replica
    # with fewer than ceil((1 + eps) x j / 4) in flight, the first such in the key's order
    for epsilon, expected in ((0.0, [3, 3, 3, 3]), (0.5, [5, 5, 2, 0]), (1.0, [6, 6, 0, 0])):
        balancer = Balancer(urls, probe=None, routing="prefix", epsilon=epsilon)  # type: ignore[arg-type]
        order: list[str] = []
        for _ in range(12):
            endpoint = balancer.pick(key=key)
            assert endpoint is not None
            endpoint.in_flight += 1
            order.append(endpoint.url)
        ranked = list(dict.fromkeys(order))  # the replicas in the key's order, as they were first used
        loads = [order.count(url) for url in ranked] + [0] * (4 - len(ranked))
        assert loads == expected, (epsilon, loads)


async def test_prefix_routing_keeps_each_prompt_on_one_replica():
    with FaultServer() as a, FaultServer() as b, FaultServer() as c:
        servers = [a, b, c]
        model = Model(
            OpenAIBackend("served-model", base_url=[s.url for s in servers], api_key="k"), cache=None, retry=NO_RETRY
        )
        try:
            for _ in range(3):  # each of 12 proofs verified 3 times, one request at a time
                for i in range(12):
                    assert (await model.generate(_request(f"Grade proof {i}.")))[0].text == "ok"
            lines = endpoint_lines(model)
            stats = _stats(model)
        finally:
            await model.aclose()
    where = {}
    for server in servers:
        for request in server.chat_requests:
            where.setdefault(request.body["messages"][0]["content"], set()).add(server.url)
    assert len(where) == 12 and all(len(urls) == 1 for urls in where.values())  # each proof on one replica
    assert len({url for urls in where.values() for url in urls}) >= 2  # and the proofs spread
    # every request after a proof's first found its prefix where it went: 36 - 12 hits
    assert sum(s["prefix_hits"] for s in stats.values()) == 24
    assert all(f"{s['prefix_hits']} prefix hits" in line for s, line in zip(stats.values(), lines, strict=True))


@pytest.mark.parametrize(("epsilon", "on_home"), [(0.0, 1), (1.0, 2)])
async def test_a_busy_home_spills_to_the_next_replica(two_servers, epsilon, on_home):
    a, b = two_servers
    a.always(slow(0.3))
    b.always(slow(0.3))
    backend = OpenAIBackend("served-model", base_url=[a.url, b.url], api_key="k", routing_epsilon=epsilon)
    model = Model(backend, cache=None, retry=NO_RETRY)
    try:
        await asyncio.gather(model.generate(_request()), model.generate(_request()))  # one prompt, both in flight
    finally:
        await model.aclose()
    # epsilon 0: the second request finds the home at the bound (1 in flight of 2) and goes to the
    # other replica; epsilon 1: the bound is 2, so the home takes both
    assert sorted([len(a.chat_requests), len(b.chat_requests)]) == sorted([on_home, 2 - on_home])


async def test_prefix_routing_skips_an_ejected_home(two_servers):
    a, b = two_servers
    model = Model(
        OpenAIBackend("served-model", base_url=[a.url, b.url], api_key="k", eject_cooldown=30),
        cache=None,
        retry=NO_RETRY,
    )
    try:
        await model.generate(_request())
        home, other = (a, b) if a.chat_requests else (b, a)
        home.push(status(503))
        assert (await model.generate(_request()))[0].text == "ok"  # failed at home, re-routed at once
        assert (await model.generate(_request()))[0].text == "ok"  # home is out: straight to the other
        stats = _stats(model)
    finally:
        await model.aclose()
    assert len(home.chat_requests) == 2 and len(other.chat_requests) == 2
    assert not stats[home.url]["healthy"] and stats[home.url]["ejections"] == 1
    assert stats[home.url]["prefix_hits"] == 1 and stats[other.url]["prefix_hits"] == 1


def test_routing_options_reach_the_balancer_and_a_local_model_refuses_them():
    from proofcritic.errors import InputError

    urls = "http://a:1/v1,http://b:2/v1"
    default = build_model("vllm/m", None, urls, None, True, None, None)
    assert (default.backend._balancer.routing, default.backend._balancer.epsilon) == ("prefix", 0.5)
    chosen = build_model("vllm/m", None, urls, None, True, None, None, routing="least-loaded", routing_epsilon=2.0)
    assert (chosen.backend._balancer.routing, chosen.backend._balancer.epsilon) == ("least-loaded", 2.0)
    with pytest.raises(ValueError, match="routing must be one of"):
        OpenAIBackend("m", base_url=urls, routing="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epsilon must be 0 or more"):
        OpenAIBackend("m", base_url=urls, routing_epsilon=-0.1)
    with pytest.raises(InputError, match=r"routing \(--routing\) applies to the server backends"):
        build_model(None, None, None, None, True, None, None, routing="prefix")
