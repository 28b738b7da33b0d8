"""Likelihood read-out of the transformers backend: shared prefix once vs every sequence in full.

The verifier's read-out (score_mode auto/logprob) asks ``sequence_logprobs`` for the total
log-likelihood of ``0}``, ``0.5}`` and ``1}`` after a long shared prefix: the verifier prompt
(a problem and a proof from the public OPC sample) and a written analysis that ends with the
score marker and an open ``\\boxed{``, about ``--tokens`` tokens in all. Guided choice scores the
same continuations followed by the end-of-turn token.

Old: every conversation runs in full (one padded forward pass over prompt + continuation per
row, ``TransformersBackend._score_full``). New: the common prefix runs once with a KV cache and
only the continuations' own tokens run on it (``_score_shared``, what ``sequence_logprobs`` and
guided choice use now). Both include the tokenisation of every conversation. The script prints
the time of each, the ratio, and the largest difference between their totals. The backend's
kept prefixes are off for this first comparison.

Then ``--samples`` read-outs of one proof with different analyses (the verifier's samples), one
after the other: old; new without kept prefixes; new with them (``prefix_cache_tokens``, emptied
before each run), where every read-out after the first runs only its analysis and continuations.

Each mode runs ``--repeat`` times (alternating) and the best wall time is kept, because the
machine may be shared with other work.

Usage: python perf/readout.py [--model smollm2] [--tokens 950] [--samples 4] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATA = "/work/shared/data/opc/opc_test_sample100.jsonl"

ANALYSIS_SENTENCES = [
    (
        "Step 1 uses the identity a^3 + b^3 + c^3 - 3abc = (a + b + c)(a^2 + b^2 + c^2 - ab - bc - ca); "
        "with a + b + c = 0 this gives a^3 + b^3 + c^3 = 3abc, which is correct."
    ),
    (
        "Step 2 substitutes c = -a - b and expands the fifth power; the coefficients 5, 10, 10, 5 are right "
        "and the factorisation -5ab(a + b)(a^2 + ab + b^2) checks out."
    ),
    (
        "The proof then compares signs, but it does not justify why a^2 + ab + b^2 is positive when a and b "
        "are not both zero; this is a small gap that a careful grader would point out."
    ),
    (
        "Part (b) is handled by an analogous computation, yet the case where one of the numbers vanishes is "
        "skipped, so the equivalence is not established in full generality."
    ),
]


def verifier_messages(backend, target_tokens: int, samples: int):
    """The verifier prompt for the first OPC record, plus an analysis, ~``target_tokens`` in all;
    ``samples`` such conversations, whose analyses differ from their first sentence on."""
    from proofcritic.llm._types import ChatMessage
    from proofcritic.promptset import PromptSet
    from proofcritic.types import Problem
    from proofcritic.verifier._verifier import score_prefix

    with open(DATA, encoding="utf-8") as handle:
        record = json.loads(handle.readline())
    problem = Problem(id=record["problem_id"], statement=record["problem"])
    prompts = PromptSet.load()
    proof = record["proof"]

    def size(msgs) -> int:
        return len(backend._encode(backend.render(msgs, continue_final=True)))

    def build(proof_text: str, sentences: int, shift: int = 0):
        analysis = "Let me check the proof step by step.\n\n" + "\n\n".join(
            ANALYSIS_SENTENCES[(i + shift) % len(ANALYSIS_SENTENCES)] for i in range(sentences)
        )
        user = prompts.render("verify", problem=problem, proof=proof_text)
        return [*user, ChatMessage(role="assistant", content=score_prefix(analysis))]

    while size(build(proof, 4)) > target_tokens * 0.8 and len(proof) > 200:  # keep room for the analysis
        proof = proof[: int(len(proof) * 0.9)]
    sentences = 4
    while size(build(proof, sentences + 1)) <= target_tokens:
        sentences += 1
    return [build(proof, sentences, shift) for shift in range(samples)]


async def main(args: argparse.Namespace) -> None:
    import torch

    from proofcritic.llm._transformers import TransformersBackend
    from proofcritic.verifier._verifier import GUIDED_CHOICES

    backend = TransformersBackend(args.model, prefix_cache_tokens=0)
    backend.load()
    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")
    conversations = verifier_messages(backend, args.tokens, args.samples)
    messages = list(conversations[0])  # old() and new() score this list; many() refills it
    continuations = list(GUIDED_CHOICES)
    prompt_tokens = len(backend._encode(backend.render(messages, continue_final=True)))
    print(f"model {backend.model}; verifier prompt + analysis: {prompt_tokens} tokens; continuations {continuations}")

    def old(close: bool) -> list[float]:
        seqs, _, _ = backend._score_inputs(messages, continuations, close)
        return backend._score_full(seqs)

    def new(close: bool) -> list[float]:
        return backend._score(messages, continuations, close)[0]

    for close, label in ((False, "read-out (sequence_logprobs)"), (True, "guided choice scoring")):
        old(close), new(close)  # warm-up
        t_old = t_new = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            a = old(close)
            t_old = min(t_old, time.perf_counter() - start)
            start = time.perf_counter()
            b = new(close)
            t_new = min(t_new, time.perf_counter() - start)
        diff = max(abs(x - y) for x, y in zip(a, b))
        print(f"{label}:")
        print(f"  old, every sequence in full : {t_old * 1000:8.1f} ms")
        print(f"  new, shared prefix once     : {t_new * 1000:8.1f} ms")
        print(f"  speed-up                    : {t_old / t_new:8.2f} x   (max |total diff| {diff:.2e})")

    # several read-outs of one proof: the prompt is common to all of them
    def many(fn, close: bool = False) -> list[list[float]]:
        out = []
        for conversation in conversations:
            messages[:] = conversation
            out.append(fn(close))
        return out

    keep = 4096
    t_old = t_plain = t_kept = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        a = many(old)
        t_old = min(t_old, time.perf_counter() - start)
        backend.prefix_cache_tokens = 0
        start = time.perf_counter()
        many(new)
        t_plain = min(t_plain, time.perf_counter() - start)
        backend.prefix_cache_tokens, backend._prefixes = keep, []
        reused = backend.stats.prefix_tokens_reused
        start = time.perf_counter()
        b = many(new)
        t_kept = min(t_kept, time.perf_counter() - start)
        reused = backend.stats.prefix_tokens_reused - reused
    diff = max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q))
    print(f"{len(conversations)} read-outs of one proof, different analyses:")
    print(f"  old, every sequence in full : {t_old * 1000:8.1f} ms")
    print(f"  new, no kept prefixes       : {t_plain * 1000:8.1f} ms   ({t_old / t_plain:.2f} x)")
    print(
        f"  new, kept prefixes          : {t_kept * 1000:8.1f} ms   ({t_old / t_kept:.2f} x; "
        f"{reused} prefix tokens reused; max |total diff| {diff:.2e})"
    )

    # the public path, as the verifier calls it (no kept prefix)
    backend.prefix_cache_tokens, backend._prefixes = 0, []
    start = time.perf_counter()
    totals = await backend.sequence_logprobs(messages, continuations)
    print(
        f"sequence_logprobs via the worker: {(time.perf_counter() - start) * 1000:.1f} ms; "
        f"totals {[round(t, 3) for t in totals]}"
    )
    await backend.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=950, help="length of the shared prefix, about")
    parser.add_argument("--samples", type=int, default=4, help="read-outs of one proof")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each mode; the best is kept")
    asyncio.run(main(parser.parse_args()))
