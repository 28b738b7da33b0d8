"""Latency the OpenAI-compatible facade of ``proofcritic serve`` adds over a direct backend call.

A deterministic upstream (``tests/servers/scripted_openai_server.py``, in its own process)
answers every call after ``--delay`` seconds. The same grading (one verification of a proof)
is then done ``--requests`` times, one at a time, along each path:

- direct: ``proofcritic.grading.grade`` in this process, through ``OpenAIBackend`` in ``Model``;
- facade: ``POST /v1/chat/completions`` with ``model=proofcritic/grade`` to a ``proofcritic serve``
  process (uvicorn) that runs the same grade against the same upstream, once with a plain
  httpx client and once with the official ``openai`` client.

Each request grades a proof no other request uses, and the service runs with ``--no-cache``,
so every request reaches the upstream. Printed: median, p90 and mean latency per path, the
added latency of the facade (median difference, ms) and the ratio of medians; then ``--burst``
requests at once along each path (wall time ratio).

Usage: python perf/facade_latency.py [--requests 40] [--delay 0.2] [--burst 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import openai

from proofcritic.grading import grade
from proofcritic.llm import get_model
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

PROBLEM = "Prove that n^3 - n is divisible by 6 for every integer n."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/servers/scripted_openai_server.py"), "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the upstream did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def start_service(upstream: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proofcritic",
            "serve",
            "--model",
            "openai/roles",
            "--base-url",
            upstream,
            "--api-key",
            "x",
            "--no-cache",
            "--port",
            str(port),
            "--db",
            str(folder / "jobs.sqlite"),
            "--log-level",
            "warning",
            "--concurrency",
            "256",
        ],
        env={**os.environ, "PROOFCRITIC_API_KEYS": ""},
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the service did not start")


def proof(tag: str, i: int) -> str:
    return f"Proof {tag}-{i}: n^3 - n = (n - 1) n (n + 1) is a product of three consecutive integers."


def summary(name: str, values: list[float]) -> tuple[str, float]:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    median = statistics.median(ms)
    print(f"| {name} | {len(ms)} | {median:.1f} | {p90:.1f} | {statistics.fmean(ms):.1f} |")
    return name, median


async def direct_latencies(upstream: str, n: int, tag: str) -> list[float]:
    model = get_model("openai/roles", base_url=upstream, api_key="x", cache=False)
    verifier = Verifier(model)
    problem = Problem(statement=PROBLEM)
    out = []
    try:
        await grade(verifier, problem, proof(tag + "warm", 0))
        for i in range(n):
            start = time.perf_counter()
            result = await grade(verifier, problem, proof(tag, i))
            out.append(time.perf_counter() - start)
            assert result.verifications[0].score == 1.0
    finally:
        await model.aclose()
    return out


async def direct_burst(upstream: str, n: int, tag: str) -> float:
    model = get_model("openai/roles", base_url=upstream, api_key="x", cache=False, max_concurrency=256)
    verifier = Verifier(model)
    problem = Problem(statement=PROBLEM)
    try:
        start = time.perf_counter()
        await asyncio.gather(*(grade(verifier, problem, proof(tag, i)) for i in range(n)))
        return time.perf_counter() - start
    finally:
        await model.aclose()


def chat_body(text: str) -> dict:
    return {"model": "proofcritic/grade", "messages": [{"role": "user", "content": f"{PROBLEM}\n## Proof\n{text}"}]}


def facade_latencies_httpx(url: str, n: int, tag: str) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=120) as http:
        http.post("/v1/chat/completions", json=chat_body(proof(tag + "warm", 0))).raise_for_status()
        for i in range(n):
            start = time.perf_counter()
            response = http.post("/v1/chat/completions", json=chat_body(proof(tag, i)))
            out.append(time.perf_counter() - start)
            assert response.json()["proofcritic"]["scores"] == [1.0], response.text
    return out


def facade_latencies_openai(url: str, n: int, tag: str) -> list[float]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(**chat_body(proof(tag + "warm", 0)))
    out = []
    for i in range(n):
        start = time.perf_counter()
        answer = client.chat.completions.create(**chat_body(proof(tag, i)))
        out.append(time.perf_counter() - start)
        assert answer.model_extra["proofcritic"]["scores"] == [1.0]
    client.close()
    return out


async def facade_burst(url: str, n: int, tag: str) -> float:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        responses = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=chat_body(proof(tag, i))) for i in range(n))
        )
        wall = time.perf_counter() - start
    assert all(r.status_code == 200 for r in responses)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the upstream takes per call")
    parser.add_argument("--burst", type=int, default=64, help="requests at once in the burst comparison (0: skip)")
    args = parser.parse_args()
    import tempfile

    tag = uuid.uuid4().hex[:6]
    upstream_proc, upstream = start_upstream(args.delay)
    with tempfile.TemporaryDirectory() as folder:
        service_proc, url = start_service(upstream, Path(folder))
        try:
            print(f"upstream delay {args.delay * 1000:.0f} ms; {args.requests} requests one at a time per path\n")
            print("| path | requests | median ms | p90 ms | mean ms |")
            print("| --- | --- | --- | --- | --- |")
            _, direct = summary(
                "direct: grade() in process", asyncio.run(direct_latencies(upstream, args.requests, tag + "d"))
            )
            _, via_httpx = summary("facade, httpx client", facade_latencies_httpx(url, args.requests, tag + "h"))
            _, via_openai = summary("facade, openai client", facade_latencies_openai(url, args.requests, tag + "o"))
            print()
            for name, value in (("httpx", via_httpx), ("openai", via_openai)):
                print(
                    f"facade added latency ({name} client): {value - direct:+.1f} ms per request "
                    f"(median ratio facade/direct {value / direct:.3f})"
                )
            if args.burst:
                d = asyncio.run(direct_burst(upstream, args.burst, tag + "bd"))
                f = asyncio.run(facade_burst(url, args.burst, tag + "bf"))
                print(
                    f"\n{args.burst} requests at once: direct {d * 1000:.0f} ms, facade {f * 1000:.0f} ms "
                    f"(ratio {f / d:.3f}; added {(f - d) * 1000 / args.burst:.2f} ms per request)"
                )
        finally:
            service_proc.terminate()
            service_proc.wait(timeout=15)
            upstream_proc.terminate()
            upstream_proc.wait(timeout=15)


if __name__ == "__main__":
    main()
