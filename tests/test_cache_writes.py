"""The completion cache's write-behind buffer: few commits for many puts, read back at once by
the cache itself, committed by size, by age, at flush/close and when dropped; a process killed
with SIGKILL loses only what was not committed, and its rerun asks again for exactly that."""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from proofcritic.llm import (
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionCache,
    GenerateConfig,
    Model,
    RetryPolicy,
)
from proofcritic.llm._openai import OpenAIBackend

try:  # tests/ is on sys.path when it is not a package
    from servers.fault_server import FaultServer, slow
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.servers.fault_server import FaultServer, slow


def _committed(path) -> set[str]:
    """The keys another connection sees in the database."""
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM entries")}
    finally:
        conn.close()


def test_many_puts_few_commits_read_back_at_once(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = CompletionCache(path, flush_size=100, flush_interval=3600)
    for i in range(1000):
        cache.put_samples(f"k{i}", {0: Completion(text=str(i))})
        assert cache.get_samples(f"k{i}", 1)[0].text == str(i)  # its own puts at once, committed or not
    cache.flush()
    assert cache.pending == 0
    assert len(_committed(path)) == 1000
    assert 1 <= cache.commits <= 11  # was one commit per put: 1000
    cache.close()


def test_entries_wait_for_a_batch_then_commit_by_age(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = CompletionCache(path, flush_size=1000, flush_interval=0.3)
    cache.put_many({"a": "1", "b": "2"})
    assert _committed(path) == set() and cache.pending == 2  # not yet committed
    deadline = time.monotonic() + 10
    while _committed(path) != {"a", "b"} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _committed(path) == {"a", "b"} and cache.pending == 0
    assert cache.get_many(["a", "b", "c"]) == {"a": "1", "b": "2"}
    cache.close()


def test_close_and_drop_commit_everything(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = CompletionCache(path, flush_size=10_000, flush_interval=3600)
    cache.put_many({f"k{i}": str(i) for i in range(300)})
    cache.close()
    cache.close()  # a second close does nothing
    assert len(_committed(path)) == 300
    dropped = CompletionCache(path, flush_size=10_000, flush_interval=3600)
    dropped.put_many({"late": "x"})
    del dropped
    gc.collect()
    assert "late" in _committed(path)


def test_flush_size_one_commits_every_put(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = CompletionCache(path, flush_size=1)
    cache.put_many({"a": "1"})
    assert _committed(path) == {"a"} and cache.commits == 1
    cache.close()


async def test_model_aclose_commits_the_buffer(tmp_path):
    path = tmp_path / "c.sqlite"
    with FaultServer(served_models=("m",)) as server:
        cache = CompletionCache(path, flush_size=10_000, flush_interval=3600)
        model = Model(OpenAIBackend("m", base_url=server.url, api_key="k"), cache=cache)
        await model.generate_many(_requests(20))
        assert len(_committed(path)) == 0
        await model.aclose()
        assert len(_committed(path)) == 20 and cache.commits == 1


def _requests(count: int) -> list[ChatRequest]:
    return [
        ChatRequest(messages=[ChatMessage(role="user", content=f"item {i}")], config=GenerateConfig(max_tokens=8))
        for i in range(count)
    ]


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from proofcritic.llm import ChatMessage, ChatRequest, CompletionCache, GenerateConfig, Model
    from proofcritic.llm._openai import OpenAIBackend

    async def main(url, path, count):
        cache = CompletionCache(path, flush_size=10, flush_interval=3600)
        model = Model(OpenAIBackend("m", base_url=url, api_key="k"), cache=cache)
        for i in range(count):
            request = ChatRequest(messages=[ChatMessage(role="user", content=f"item {i}")],
                                  config=GenerateConfig(max_tokens=8))
            await model.generate(request)
        while cache._store.writing or cache.pending >= cache.flush_size:  # the writer is done
            time.sleep(0.01)
        print(json.dumps({"pending": cache.pending, "commits": cache.commits}), flush=True)
        time.sleep(600)  # killed here, before any flush at close or exit

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_sigkill_loses_only_unflushed_entries_and_the_rerun_asks_for_exactly_those(tmp_path):
    path = tmp_path / "c.sqlite"
    count = 25
    with FaultServer(served_models=("m",)) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, server.url, str(path), str(count)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        try:
            line = child.stdout.readline()  # type: ignore[union-attr]
            state = json.loads(line)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        assert child.returncode == -signal.SIGKILL
        assert len(server.chat_requests) == count
        pending = state["pending"]
        assert 0 < pending < 10 and state["commits"] >= 1  # some committed in batches, some still buffered

        committed = _committed(path)
        assert len(committed) == count - pending  # nothing but the buffered entries is lost

        cache = CompletionCache(path)
        backend = OpenAIBackend("m", base_url=server.url, api_key="k")
        model = Model(backend, cache=cache, retry=RetryPolicy(max_attempts=1))
        requests = _requests(count)
        lost = {
            r.messages[0].content
            for r in requests
            if CompletionCache.sample_key(cache.request_key(backend.cache_identity(), r.messages, r.config), 0)
            not in committed
        }
        assert len(lost) == pending
        before = len(server.chat_requests)
        out = await model.generate_many(requests)
        asked = [req.body["messages"][0]["content"] for req in server.chat_requests[before:]]
        assert sorted(asked) == sorted(lost)  # the rerun asks again for exactly the lost ones
        assert sum(o[0].cached for o in out) == count - pending
        await model.aclose()
        cache.close()
        assert len(_committed(path)) == count


def test_request_keys_are_those_of_earlier_releases():
    """The key is written without dumping each message, but its bytes are those of the one
    documented formula, so caches filled by earlier releases keep answering."""
    import hashlib

    def documented(identity, messages, config):
        payload = ["chat", identity, [m.model_dump() for m in messages], config.model_dump(exclude={"n"})]
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    texts = ["", "plain", 'quote " back \\ slash', "control \x00\x1f\x7f tab\t newline\n", "ünïcødé — 数学 😀 \u2028"]
    configs = [
        GenerateConfig(),
        GenerateConfig(temperature=1e-5, top_p=0.95, max_tokens=4096, stop=["\n\n", "ü"], seed=3, choices=["0", "1"]),
        GenerateConfig(n=8, logprobs=True, top_logprobs=5),
    ]
    for text in texts:
        messages = [
            ChatMessage(role="system", content=text),
            ChatMessage(role="user", content=text + "?"),
            ChatMessage(role="assistant", content=text[::-1]),
        ]
        for config in configs:
            assert CompletionCache.request_key("openai/ü/m", messages, config) == documented(
                "openai/ü/m", messages, config
            )
    assert CompletionCache.request_key("x", [], GenerateConfig()) == documented("x", [], GenerateConfig())


def test_flush_size_one_set_later_commits_the_buffer_and_every_later_put(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = CompletionCache(path, flush_size=100, flush_interval=3600)
    cache.put_many({"a": "1"})
    assert _committed(path) == set()
    cache.flush_size = 1  # as the service sets it
    assert _committed(path) == {"a"}
    cache.put_many({"b": "2"})
    assert _committed(path) == {"a", "b"}
    cache.close()


def test_a_batch_killed_mid_run_keeps_its_records_and_asks_again_only_what_it_had_not_kept(tmp_path):
    """The real CLI, killed with SIGKILL mid-batch, then run again: every finished record is
    kept and no item with a record is asked again; an item without a record is answered from
    the cache where its completion had been committed and asked again where it had not."""
    import re

    source, output, cache = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "c.sqlite"
    count = 60
    source.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": f"Problem number {i}: show it.", "proof": "Trivial."}) + "\n"
            for i in range(count)
        )
    )
    with FaultServer(served_models=("m",)) as server:
        server.always(slow(0.1, "The proof is fine."))
        command = [
            sys.executable,
            "-m",
            "proofcritic",
            "grade",
            "--input",
            str(source),
            "--output",
            str(output),
            "--model",
            "openai/m",
            "--base-url",
            server.url,
            "--api-key",
            "k",
            "--cache",
            str(cache),
            "--concurrency",
            "4",
        ]
        env = {**os.environ, "PYTHONPATH": os.getcwd(), "PROOFCRITIC_PROGRESS_INTERVAL": "1000"}
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < 20):
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)

        def ids() -> list[str]:
            return [json.loads(line)["id"] for line in output.read_text().splitlines() if line.strip()]

        kept = ids()
        assert 20 <= len(kept) < count and len(set(kept)) == len(kept)
        committed = len(_committed(cache))
        first_run = len(server.chat_requests)
        assert committed < first_run  # the last completions were still buffered at the kill

        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert rerun.returncode in (0, 1), rerun.stderr  # "fine" has no score: no verdict, still a result
        asked = [
            int(re.search(r"Problem number (\d+)", json.dumps(r.body)).group(1))
            for r in server.chat_requests[first_run:]
        ]
    after = ids()
    assert sorted(after) == sorted(f"p{i}" for i in range(count))  # one record per item
    assert not {f"p{i}" for i in asked} & set(kept)  # no item with a record was asked again
    assert len(asked) == len(set(asked))
    from_cache = int(re.search(r"model calls: \d+ new, (\d+) from cache", rerun.stderr).group(1))
    assert from_cache + len(asked) == count - len(kept)  # the rest: committed before the kill
    assert from_cache <= committed
