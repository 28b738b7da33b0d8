"""Batched vs one-at-a-time generation on the embedded SmolLM2-135M-Instruct.

Sends 16 different chat prompts to ``TransformersBackend`` twice, greedy, same ``max_tokens``:
first one request at a time (each awaited before the next: 16 ``model.generate`` calls), then
all at once with ``asyncio.gather`` (the micro-batcher runs them as one left-padded batch). It
checks that both give the same texts and prints the wall time of each and the speed-up.

Target: batched >= 4x faster than one-at-a-time on a 2-core CPU.

Each mode runs ``--repeat`` times (alternating) and the best wall time is kept, because the
machine may be shared with other work.

Usage: python perf/local_batching.py [--max-tokens 64] [--prompts 16] [--model smollm2] [--repeat 2]
       [--dtype bfloat16] [--threads 2]   (bfloat16: the identical-texts count drops, see README)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOPICS = [
    "why the square root of 2 is irrational",
    "the pigeonhole principle",
    "proof by induction",
    "why there are infinitely many primes",
    "the triangle inequality",
    "Fermat's little theorem",
    "the AM-GM inequality",
    "why 0.999... equals 1",
    "the Euclidean algorithm",
    "Cantor's diagonal argument",
    "the binomial theorem",
    "modular arithmetic",
    "the intermediate value theorem",
    "geometric series",
    "the Chinese remainder theorem",
    "Bezout's identity",
    "the handshake lemma",
    "Wilson's theorem",
]


async def main(args: argparse.Namespace) -> None:
    from proofcritic.llm._transformers import TransformersBackend
    from proofcritic.llm._types import ChatMessage, ChatRequest, GenerateConfig

    # built before torch is imported, so that torch comes in as the CLI has it (passive waiting)
    backend = TransformersBackend(args.model, max_batch_size=args.prompts, dtype=args.dtype, threads=args.threads)
    import torch

    start = time.perf_counter()
    backend.load()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(
        f"model {backend.model} loaded in {time.perf_counter() - start:.1f}s; {backend.describe()} "
        f"(torch threads outside its work: {torch.get_num_threads()})"
    )
    config = GenerateConfig(max_tokens=args.max_tokens, temperature=0)
    requests = [
        ChatRequest(
            messages=[ChatMessage(role="user", content=f"Explain {TOPICS[i % len(TOPICS)]} in detail.")], config=config
        )
        for i in range(args.prompts)
    ]
    await backend.generate(requests[0])  # warm-up

    # The machine may be shared: run both modes --repeat times, alternating, and keep the best.
    t_single = t_batched = float("inf")
    calls = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        single = [await backend.generate(r) for r in requests]
        t_single = min(t_single, time.perf_counter() - start)

        batches = backend.stats.batches
        start = time.perf_counter()
        batched = await asyncio.gather(*(backend.generate(r) for r in requests))
        t_batched = min(t_batched, time.perf_counter() - start)
        calls = backend.stats.batches - batches

    tokens = sum(c[0].completion_tokens for c in batched)
    same = sum(a[0].text == b[0].text for a, b in zip(single, batched))
    print(f"{args.prompts} prompts, greedy, max_tokens={args.max_tokens}, {tokens} completion tokens in all")
    print(f"one at a time : {t_single:7.2f} s  ({args.prompts} generate calls, {tokens / t_single:6.1f} tok/s)")
    print(f"batched       : {t_batched:7.2f} s  ({calls} generate call(s), {tokens / t_batched:6.1f} tok/s)")
    print(f"speed-up      : {t_single / t_batched:7.2f} x   (target >= 4x)")
    print(f"identical texts: {same}/{args.prompts}")
    await backend.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each mode; the best is kept")
    parser.add_argument("--dtype", default=None, help="weight type (auto, float32, bfloat16, float16) [float32]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [the backend's default]")
    asyncio.run(main(parser.parse_args()))
