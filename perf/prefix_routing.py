"""Prefix-affinity routing against least-loaded routing, on 4 simulated replicas.

Starts 4 local OpenAI-compatible servers (aiohttp, on 127.0.0.1, in this process) that stand in
for 4 replicas of one model with a prefix cache, sends one search-shaped workload through
``OpenAIBackend`` + ``Model`` with all 4 base URLs, once per routing, and prints per routing:

    routing  eps  requests  seen-prefix %  cached chars %  max/mean  req/s  p50 ms  p95 ms

* **seen-prefix %**: the share of requests that reached a replica that had already served a
  request with the same first user message (each server records the hashes it has seen; the
  client's routing key is the same thing, but the figure is the servers' own record);
* **cached chars %**: the share of prompt characters a replica could take from its prefix cache:
  for each request, the longest common prefix of its prompt with any prompt that replica served
  before (the server keeps its prompts sorted; the cache never evicts);
* **max/mean**: requests of the busiest replica over the mean per replica (1.00: even);
* **req/s**, **p50/p95 ms**: throughput and latency of the whole run on the simulated replicas.

The simulated replica: it serves at most ``--slots`` requests at once (more wait in its queue),
and one request takes ``--decode-ms`` plus ``--prefill-us-per-char`` for every prompt character
not in its prefix cache. So a request whose proof the replica has seen skips the proof's
prefill, as vLLM's automatic prefix caching and SGLang's radix cache do. The figures of
throughput come from this model, not from a GPU; the hit shares do not depend on it.

The workload, shaped like ``solve --strategy search`` (built from the real prompt templates,
with synthetic problems and proofs of realistic length): per problem, ``--proofs`` generations
(one prompt, sent as separate requests), each proof verified ``--verifications`` times in
requests of ``--samples`` samples (separate requests, as a server without ``n``, or adaptive
verification's small batches, send them), then ``--rounds`` refinement rounds: the ``--top`` best
proofs each get a refinement prompt (the problem, the proof and two of its analyses) that is
sampled ``--children`` times, and every child is verified like the first proofs. Every problem
runs its rounds concurrently with the others, at most ``--concurrency`` requests in flight.

It also prints the client CPU of one routing key (a hash of the messages up to the first user
message), per request, for the workload's prompts.

Usage: python perf/prefix_routing.py [--problems 8] [--proofs 8] [--verifications 8] [--samples 1]
       [--rounds 2] [--top 4] [--children 4] [--concurrency 64] [--slots 8] [--decode-ms 40]
       [--prefill-us-per-char 10] [--epsilons 0.1,0.25,0.5,1] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aiohttp import web

from proofcritic._constants import RoutingKind
from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, Model
from proofcritic.llm._balancer import prefix_key
from proofcritic.llm._openai import OpenAIBackend
from proofcritic.promptset import PromptSet
from proofcritic.types import Problem

WORDS = (
    "let",
    "suppose",
    "then",
    "hence",
    "since",
    "therefore",
    "integer",
    "prime",
    "divides",
    "modulo",
    "triangle",
    "circle",
    "angle",
    "sequence",
    "function",
    "bound",
    "inequality",
    "equality",
    "case",
    "lemma",
    "claim",
    "induction",
    "contradiction",
    "sum",
    "product",
    "polynomial",
    "root",
    "degree",
    "graph",
    "vertex",
    "edge",
    "coloring",
    "parity",
    "invariant",
    "maximum",
    "minimum",
)


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` (binary search on slice comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass
class Replica:
    """One simulated replica: its prefix cache (the prompts it served, sorted), the keys it saw."""

    slots: int
    decode_s: float
    prefill_s_per_char: float
    prompts: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    requests: int = 0
    seen_key: int = 0
    prompt_chars: int = 0
    cached_chars: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.slots)

    def admit(self, body: dict) -> int:
        """Record the request's prefix; return the characters it must prefill."""
        messages = body["messages"]
        head = []
        for message in messages:
            head.append(f"{message['role']}\0{message['content']}")
            if message["role"] == "user":
                break
        key = hashlib.sha256("\1".join(head).encode()).hexdigest()
        prompt = "\1".join(f"{m['role']}\0{m['content']}" for m in messages)
        self.requests += 1
        self.seen_key += key in self.keys
        self.keys.add(key)
        at = bisect.bisect_left(self.prompts, prompt)
        cached = max(
            (_common_prefix(prompt, self.prompts[i]) for i in (at - 1, at) if 0 <= i < len(self.prompts)),
            default=0,
        )
        self.prompts.insert(at, prompt)
        self.prompt_chars += len(prompt)
        self.cached_chars += cached
        return len(prompt) - cached

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        n = int(body.get("n") or 1)
        async with self.gate:
            fresh = self.admit(body)
            await asyncio.sleep(self.decode_s + fresh * self.prefill_s_per_char)
        choices = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": "Here is my evaluation of the solution: fine.\n\n"
                    "Based on my evaluation, the final overall score should be: \\boxed{1}",
                },
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        return web.json_response(
            {"choices": choices, "usage": {"prompt_tokens": fresh // 4, "completion_tokens": 20 * n}}
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model"}]})

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Workload:
    """The search-shaped requests (fixed by the seed, the same for every routing)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prompts = PromptSet.load(None)
        rng = random.Random(args.seed)
        self.problems = [Problem(id=f"p{i}", statement=_text(rng, rng.randint(300, 900))) for i in range(args.problems)]
        self.proof_rng = random.Random(args.seed + 1)

    def proof(self) -> str:
        return _text(self.proof_rng, self.proof_rng.randint(3000, 9000))

    def analysis(self) -> str:
        return _text(self.proof_rng, self.proof_rng.randint(1000, 2500))


async def _run_problem(model: Model, work: Workload, problem: Problem, seed: int, latencies: list[float]) -> None:
    args = work.args
    rng = random.Random(seed)

    async def send(messages: list[ChatMessage], n: int = 1) -> None:
        started = time.perf_counter()
        await model.generate(ChatRequest(messages=messages, config=GenerateConfig(n=n, max_tokens=64)))
        latencies.append(time.perf_counter() - started)

    async def verify(proof: str) -> None:
        messages = work.prompts.render("verify", problem=problem, proof=proof)
        batches = [args.samples] * (args.verifications // args.samples)
        if args.verifications % args.samples:
            batches.append(args.verifications % args.samples)
        await asyncio.gather(*(send(messages, k) for k in batches))

    generate = work.prompts.render("generate", problem=problem)
    await asyncio.gather(*(send(generate) for _ in range(args.proofs)))
    pool = [_text(rng, rng.randint(3000, 9000)) for _ in range(args.proofs)]
    await asyncio.gather(*(verify(p) for p in pool))
    for _ in range(args.rounds):
        best = rng.sample(pool, min(args.top, len(pool)))  # the scores are simulated: any top-k shape will do
        children: list[str] = []
        refinements = []
        for proof in best:
            candidate = {"proof": proof, "evaluations": [_text(rng, 1500), _text(rng, 1500)]}
            messages = work.prompts.render("refine", problem=problem, candidates=[candidate])
            refinements += [send(messages) for _ in range(args.children)]
            children += [_text(rng, rng.randint(3000, 9000)) for _ in range(args.children)]
        await asyncio.gather(*refinements)
        await asyncio.gather(*(verify(c) for c in children))
        pool = children


async def _one_run(args: argparse.Namespace, routing: RoutingKind, epsilon: float) -> dict:
    replicas = [Replica(args.slots, args.decode_ms / 1000, args.prefill_us_per_char / 1e6) for _ in range(4)]
    for replica in replicas:
        await replica.start()
    backend = OpenAIBackend(
        "sim", base_url=[r.url for r in replicas], api_key="sk-perf", routing=routing, routing_epsilon=epsilon
    )
    model = Model(backend, cache=None, max_concurrency=args.concurrency)
    work = Workload(args)
    latencies: list[float] = []
    started = time.perf_counter()
    try:
        await asyncio.gather(
            *(_run_problem(model, work, p, args.seed * 1000 + i, latencies) for i, p in enumerate(work.problems))
        )
        wall = time.perf_counter() - started
        hits = sum(s["prefix_hits"] for s in backend.endpoint_stats())
    finally:
        await model.aclose()
        for replica in replicas:
            await replica.stop()
    counts = [r.requests for r in replicas]
    total = sum(counts)
    latencies.sort()
    return {
        "routing": routing,
        "epsilon": epsilon if routing == "prefix" else None,
        "requests": total,
        "per_replica": counts,
        "seen_prefix": sum(r.seen_key for r in replicas) / total,
        "client_prefix_hits": hits / total,
        "cached_chars": sum(r.cached_chars for r in replicas) / max(sum(r.prompt_chars for r in replicas), 1),
        "max_over_mean": max(counts) / (total / len(counts)),
        "requests_per_s": total / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "wall_s": wall,
    }


def _key_cost(args: argparse.Namespace) -> tuple[float, int]:
    """Microseconds of client CPU per routing key, over verification prompts of the workload."""
    work = Workload(args)
    bodies = [
        [
            {"role": m.role, "content": m.content}
            for m in work.prompts.render("verify", problem=work.problems[i % len(work.problems)], proof=work.proof())
        ]
        for i in range(200)
    ]
    chars = statistics.mean(sum(len(m["content"]) for m in b) for b in bodies)
    started = time.process_time()
    rounds = 20
    for _ in range(rounds):
        for body in bodies:
            prefix_key(body)
    return 1e6 * (time.process_time() - started) / (rounds * len(bodies)), int(chars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--proofs", type=int, default=8)
    parser.add_argument("--verifications", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1, help="verifications per request (n)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--decode-ms", type=float, default=40.0)
    parser.add_argument("--prefill-us-per-char", type=float, default=10.0)
    parser.add_argument("--epsilons", default="0.1,0.25,0.5,1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    args = parser.parse_args()
    runs: list[tuple[RoutingKind, float]] = [("least-loaded", 0.0)]
    runs += [("prefix", float(e)) for e in args.epsilons.split(",") if e.strip()]
    print(
        f"workload: {args.problems} problems x {args.proofs} proofs, {args.verifications} verifications each "
        f"({args.samples} per request), {args.rounds} refinement rounds of {args.top} x {args.children}; "
        f"4 replicas of {args.slots} slots, {args.decode_ms:g} ms decode + {args.prefill_us_per_char:g} us/uncached "
        f"prompt char; concurrency {args.concurrency}"
    )
    header = f"{'routing':<13}{'eps':>5}{'requests':>10}{'seen-prefix %':>15}{'cached chars %':>16}"
    header += f"{'max/mean':>10}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}  per replica"
    if not args.json:
        print(header)
    for routing, epsilon in runs:
        row = asyncio.run(_one_run(args, routing, epsilon))
        if args.json:
            print(json.dumps(row))
            continue
        eps = "" if row["epsilon"] is None else f"{row['epsilon']:g}"
        print(
            f"{routing:<13}{eps:>5}{row['requests']:>10}{100 * row['seen_prefix']:>15.1f}"
            f"{100 * row['cached_chars']:>16.1f}{row['max_over_mean']:>10.2f}{row['requests_per_s']:>8.0f}"
            f"{row['p50_ms']:>8.0f}{row['p95_ms']:>8.0f}  {row['per_replica']}"
        )
    cost, chars = _key_cost(args)
    print(f"routing key: {cost:.1f} us of client CPU per request (verification prompts of {chars} characters)")


if __name__ == "__main__":
    main()
