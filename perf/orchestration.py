"""Client-side orchestration overhead of the OpenAI-compatible backend.

Starts a fake OpenAI-compatible server in a separate process (so its CPU is not counted against
the client) that answers every chat request after a fixed latency, then sends many calls at
several concurrency levels through ``OpenAIBackend`` wrapped in ``Model`` and prints:

    transport  cache  concurrency  calls  wall s  achieved/ideal  client CPU ms/call

``--cache off,on`` runs each row without and with a completion cache (a fresh sqlite file per
row, so every call misses and is written: the cost a first run pays), so the cache's share of
the CPU per call is the difference of two rows of one run.

``ideal`` is ``min(concurrency, calls) / latency`` calls per second. Targets (default transport, lean):
achieved/ideal >= 0.95 at concurrency 256 and <= 1 ms client CPU per call.

Mind the machine. A single-threaded client with fixed server latency L sends its calls in
"waves" of C; each wave is stretched by C x (client + server work per call), and the first and
last wave add that stretch to the wall time, so achieved/ideal ~ W*L / (W*L + W*drift + ~2*C*c)
with W = calls / C waves. At C=256 and L=50 ms the ideal is 5120 calls/s, which two cores cannot
serve even at 0.2 ms per call; the default latency (1 s, 8 waves of 256 with 2048 calls) is one
the machine can keep up with, and still far below real proof-grading calls (10-100 s). The
``floor`` row is a bare asyncio client (no JSON, no aiohttp, no Model) against the same server:
the best any client can do in this harness on this machine.

The server is a minimal asyncio protocol (HTTP/1.1 keep-alive, Content-Length bodies only) that
answers with ``loop.call_later``: it costs a few tens of microseconds per request.

Usage: python perf/orchestration.py [--latency 1.0] [--calls 2048] [--calls-c1 10]
       [--transports lean,aiohttp,openai] [--concurrency 1,16,64,256,1024] [--cache off] [--repeat 1]
       [--no-floor] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_ANSWER = (
    b'{"id":"chatcmpl-perf","object":"chat.completion","created":0,"model":"perf-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"The proof is correct. \\\\boxed{1}"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":812,"completion_tokens":9,"total_tokens":821}}'
)
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_ANSWER)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + _ANSWER
)


class _FixedLatencyProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer each complete request after ``latency`` seconds."""

    def __init__(self, latency: float):
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            start = head.find(b"content-length:")
            if start >= 0:
                stop = head.find(b"\r\n", start)
                length = int(head[start + 15 : stop if stop >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            asyncio.get_running_loop().call_later(self.latency, self._answer)

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_RESPONSE)


async def _serve(latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FixedLatencyProtocol(latency), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def _measure(
    url: str, transport: str, concurrency: int, calls: int, cache: str | None = None
) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) for ``calls`` calls at ``concurrency``; ``cache``: a
    sqlite file for the completion cache (None: no cache)."""
    from proofcritic.llm import (
        ChatMessage,
        ChatRequest,
        CompletionCache,
        GenerateConfig,
        Model,
        RetryPolicy,
    )
    from proofcritic.llm._openai import OpenAIBackend

    backend = OpenAIBackend(
        "perf-model", base_url=url, api_key="perf", transport=transport
    )  # the pool follows concurrency
    store = CompletionCache(cache) if cache else None
    model = Model(backend, cache=store, max_concurrency=concurrency, retry=RetryPolicy(max_attempts=1))
    system = ChatMessage(role="system", content="You grade proofs. " * 40)
    requests = [
        ChatRequest(
            messages=[system, ChatMessage(role="user", content=f"Problem {i}: prove that ... " * 20)],
            config=GenerateConfig(temperature=0.7, max_tokens=4096, seed=i),
        )
        for i in range(calls)
    ]
    warm = ChatRequest(messages=[ChatMessage(role="user", content="warm-up")], config=GenerateConfig(max_tokens=1))
    await model.generate(warm)  # bind the session; import everything (a request of its own: not a cache hit below)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = await model.generate_many(requests)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert len(results) == calls and all(r[0].text for r in results)
    await model.aclose()  # commits the cache's last batch (inside the measured CPU below)
    if store is not None:
        cpu = time.process_time() - cpu0
        store.close()
    return wall, cpu


async def _floor(url: str, concurrency: int, calls: int) -> tuple[float, float]:
    """The same measurement with a bare asyncio streams client: the harness's own limit."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    payload = b'{"model":"perf-model","messages":[{"role":"user","content":"' + b"x" * 1200 + b'"}]}'
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n" % host.encode()
    request = head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload
    counts = [calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)]
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rounds: int) -> None:
        for _ in range(rounds):
            writer.write(request)
            header = await reader.readuntil(b"\r\n\r\n")
            length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(r, w, k) for (r, w), k in zip(streams, counts)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for _, writer in streams:
        writer.close()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=1.0, help="server latency in seconds")
    parser.add_argument("--calls", type=int, default=2048, help="calls per concurrency level")
    parser.add_argument("--calls-c1", type=int, default=10, help="calls at concurrency 1")
    parser.add_argument("--transports", default="lean,aiohttp,openai")
    parser.add_argument("--concurrency", default="1,16,64,256,1024")
    parser.add_argument("--cache", default="off", help="off, on or off,on: rows without / with a completion cache")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (this machine is noisy)")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-client row")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the first transport's run at the top concurrency"
    )
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.latency))
        return
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        levels = [int(c) for c in args.concurrency.split(",")]
        print(f"server latency {args.latency * 1000:g} ms, {os.cpu_count()} cores, python {sys.version.split()[0]}")
        print(
            f"{'transport':<9} {'cache':>5} {'conc':>5} {'calls':>6} {'wall s':>8} {'ideal s':>8} {'ach/ideal':>9} {'CPU ms/call':>11}"
        )
        modes = args.cache.split(",")
        runs = [
            (t, c, m) for t in args.transports.split(",") for c in levels for m in modes for _ in range(args.repeat)
        ]
        if not args.no_floor:
            runs.insert(0, ("floor", max(levels), "off"))
        workdir = tempfile.mkdtemp(prefix="proofcritic-perf-")
        for row, (transport, concurrency, mode) in enumerate(runs):
            calls = args.calls_c1 if concurrency == 1 else args.calls
            profiler = None
            if args.profile and transport == args.transports.split(",")[0] and concurrency == max(levels):
                profiler = cProfile.Profile()
                profiler.enable()
            if transport == "floor":
                wall, cpu = asyncio.run(_floor(url, concurrency, calls))
            else:
                cache = os.path.join(workdir, f"cache-{row}.sqlite") if mode == "on" else None
                wall, cpu = asyncio.run(_measure(url, transport, concurrency, calls, cache))
            ideal_wall = calls / (min(concurrency, calls) / args.latency)
            print(
                f"{transport:<9} {mode:>5} {concurrency:>5} {calls:>6} {wall:>8.2f} {ideal_wall:>8.2f} "
                f"{ideal_wall / wall:>9.3f} {cpu / calls * 1000:>11.3f}",
                flush=True,
            )
            if profiler is not None:
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                print(out.getvalue())
        shutil.rmtree(workdir, ignore_errors=True)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
