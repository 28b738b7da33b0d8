"""The local model at the CPU's speed: weight type (--dtype) and torch threads (--threads).

For every weight type and thread count asked for, with and without a competing busy process,
one fresh Python process (torch's threads and OpenMP's settings are process-wide) loads the
embedded SmolLM2-135M-Instruct through ``TransformersBackend`` and measures:

- prefill: one forward pass over ``--prompt-tokens`` tokens (1500), tokens/s;
- decode: greedy steps on the KV cache after that prompt, ``--decode-tokens`` of them, tokens/s;
- read-out: the likelihood read-out of a verification (``sequence_logprobs`` of ``\\boxed{0}``,
  ``\\boxed{0.5}``, ``\\boxed{1}`` after the verify prompt of the demo's flawed proof), seconds,
  and the score probabilities it gives (compared with float32's: largest difference, and
  whether the most likely score is the same);
- grade: the demo's grade (``make demo``: both example proofs, ``-n 2 --temperature 0.7
  --max-tokens 160 --seed 0 --score-mode auto``, no cache), seconds, model loaded already.

Prefill, decode and read-out are the median of ``--repeat`` runs (3); grade runs once.
"competing" runs a second process that keeps one core busy (a Python loop) for the whole
measurement, as another job on a shared machine would. ``passive`` rows set
``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep instead of spinning while they wait: what
proofcritic sets when it imports torch itself, and with it the default thread count is every CPU);
the other rows keep torch's own OpenMP behaviour (threads spin a while before they sleep).

Usage:
    python perf/local_speed.py                       # float32, bfloat16, auto x 1 and all CPUs
    python perf/local_speed.py --dtypes float32 --threads 1,2 --no-grade --repeat 1
The table is printed at the end; ``--json FILE`` writes the rows too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "examples"
SCORES = ("0", "0.5", "1")


def _child(args: argparse.Namespace) -> dict:
    """One configuration, measured in this process; returns the row."""
    import asyncio

    import torch  # first, so that OpenMP keeps the policy this process was started with (see _run)

    from proofcritic.llm._local_loading import torch_threads
    from proofcritic.llm._transformers import TransformersBackend

    backend = TransformersBackend("smollm2", dtype=args.dtype, threads=args.threads, prefix_cache_tokens=0)
    started = time.perf_counter()
    backend.load()
    row: dict = {
        "dtype": args.dtype,
        "threads": backend.threads,
        "describe": backend.describe(),
        "load_s": round(time.perf_counter() - started, 2),
    }
    gen_model = backend._hf_model
    ids = torch.randint(200, 40000, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))

    def prefill_decode() -> tuple[float, float]:
        with torch_threads(backend.threads), torch.inference_mode():
            t0 = time.perf_counter()
            out = gen_model(input_ids=ids, use_cache=True)
            t1 = time.perf_counter()
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            for _ in range(args.decode_tokens):
                step = gen_model(input_ids=nxt, past_key_values=cache, use_cache=True)
                cache, nxt = step.past_key_values, step.logits[:, -1:].argmax(-1)
            t2 = time.perf_counter()
        return args.prompt_tokens / (t1 - t0), args.decode_tokens / (t2 - t1)

    runs = [prefill_decode() for _ in range(args.repeat)]
    row["prefill_tok_s"] = round(statistics.median(r[0] for r in runs), 1)
    row["decode_tok_s"] = round(statistics.median(r[1] for r in runs), 2)

    from proofcritic.io import read_problem, read_proof
    from proofcritic.llm._types import ChatMessage
    from proofcritic.parsing import SCORE_MARKER
    from proofcritic.promptset import PromptSet

    problem = read_problem(EXAMPLES / "problem.md")
    flawed = read_proof(EXAMPLES / "proof_flawed.md")
    messages = PromptSet.load().render("verify", problem=problem, proof=flawed)
    messages = [
        *messages,
        ChatMessage(
            role="assistant",
            content=(
                "Here is my evaluation of the solution: the argument has a gap in its second step.\n\n"
                f"{SCORE_MARKER} \\boxed{{"
            ),
        ),
    ]
    conts = [f"{s}}}" for s in SCORES]

    def readout() -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        totals = asyncio.run(backend.sequence_logprobs(messages, conts))
        return time.perf_counter() - t0, totals

    outs = [readout() for _ in range(args.repeat)]
    row["readout_s"] = round(statistics.median(o[0] for o in outs), 3)
    totals = outs[-1][1]
    top = max(totals)
    weights = [pow(2.718281828459045, t - top) for t in totals]
    row["readout_probs"] = [round(w / sum(weights), 4) for w in weights]

    if not args.no_grade:
        from proofcritic.grading import grade
        from proofcritic.llm import GenerateConfig, Model
        from proofcritic.verifier import Verifier

        model = Model(backend, cache=None)
        verifier = Verifier(model, config=GenerateConfig(temperature=0.7, max_tokens=160, seed=0), score_mode="auto")

        async def both() -> None:
            for name in ("proof_correct.md", "proof_flawed.md"):
                await grade(verifier, problem, read_proof(EXAMPLES / name), n=2)

        t0 = time.perf_counter()
        asyncio.run(both())
        row["grade_s"] = round(time.perf_counter() - t0, 1)
    backend.close()
    return row


def _competitor() -> subprocess.Popen:
    """A process that keeps one core busy until it is stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _run(args: argparse.Namespace, dtype: str, threads: int, competing: bool, passive: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    env.pop("OMP_NUM_THREADS", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    command = [
        sys.executable,
        __file__,
        "--child",
        "--dtype",
        dtype,
        "--threads-one",
        str(threads),
        "--repeat",
        str(args.repeat),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
    ] + (["--no-grade"] if args.no_grade else [])
    other = _competitor() if competing else None
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    finally:
        if other is not None:
            other.kill()
            other.wait()
    line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
    if done.returncode != 0 or line is None:
        return {"dtype": dtype, "threads": threads, "error": (done.stderr or done.stdout)[-500:]}
    row = json.loads(line)
    row.update(competing=competing, passive=passive, load_avg=round(os.getloadavg()[0], 2))
    return row


def _table(rows: list[dict]) -> str:
    base = {
        (r["competing"], r["passive"], r["threads"]): r["readout_probs"]
        for r in rows
        if r.get("dtype") == "float32" and "readout_probs" in r
    }
    head = (
        "| dtype | threads | wait | other process | prefill tok/s | decode tok/s | read-out s | "
        "read-out vs float32 (max diff, same top) | demo grade s | load avg |"
    )
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['dtype']} | {r['threads']} | error: {r['error'].splitlines()[-1] if r['error'] else '?'} |"
            )
            continue
        ref = base.get((r["competing"], r["passive"], r["threads"])) or next(iter(base.values()), None)
        if ref:
            diff = max(abs(a - b) for a, b in zip(r["readout_probs"], ref))
            same = max(range(3), key=r["readout_probs"].__getitem__) == max(range(3), key=ref.__getitem__)
            vs = f"{diff:.3f}, {'yes' if same else 'NO'}"
        else:
            vs = "-"
        wait = "passive" if r["passive"] else "torch's"
        lines.append(
            f"| {r['describe'].split(',')[0]} | {r['threads']} | {wait} | "
            f"{'yes' if r['competing'] else 'no'} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | "
            f"{r['readout_s']:.2f} | {vs} | {r.get('grade_s', '-')} | {r['load_avg']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16,auto", help="weight types, comma-separated")
    parser.add_argument("--threads", default=None, help="thread counts, comma-separated [1 and every usable CPU]")
    parser.add_argument("--competing", default="no,yes", help="no, yes or both (no,yes): with a busy process")
    parser.add_argument("--passive", action="store_true", help="also rows with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--decode-tokens", type=int, default=24)
    parser.add_argument("--no-grade", action="store_true", help="skip the demo's grade")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one configuration may take")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--threads-one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.threads = args.threads_one
        print(json.dumps(_child(args)), flush=True)
        return
    from proofcritic.llm._local_loading import default_threads, usable_cpus

    cpus = usable_cpus()
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cpus})
    competing = [c.strip() == "yes" for c in args.competing.split(",")]
    print(
        f"{cpus} usable CPUs; the default is {default_threads()} thread(s); load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = []
    for comp in competing:
        for passive in [False, True] if args.passive else [False]:
            for t in threads:
                if passive and t == 1:
                    continue  # one thread never waits for another
                for dtype in args.dtypes.split(","):
                    row = _run(args, dtype, t, comp, passive)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
