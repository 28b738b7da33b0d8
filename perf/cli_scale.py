"""The real CLI at scale: ``proofcritic grade`` batches against a fixed-latency server.

Starts an OpenAI-compatible server (aiohttp, in its own process, so its CPU is not the
client's) that answers every chat request after a fixed latency with a verifier-style answer
(an analysis, then the final score statement, so grading parses it), then runs the real command
line in a subprocess, ``python -m proofcritic grade --input ... --output ...``, with the cache on
(a fresh cache file per run), and prints each figure next to its target:

- throughput at 256 and 1024 in flight: achieved/ideal, where ideal is ``waves x latency`` for
  ``waves x in-flight`` proofs (one request each); once over the CLI's whole wall time, and once
  without its start-up (from the server's first request to the process's exit), for each
  number of worker processes (``grade --workers``; default 1 and 2). Targets, judged from the
  first request on (start-up is a fixed cost, shown apart) with the best worker count:
  >= 0.95 at 256, >= 0.90 at 1024. Eight waves by default: 2,048 proofs at 256 in flight (the
  issue's run) and 8,192 at 1024;
- client CPU per request: the CLI process's user + sys CPU (``os.wait4``'s rusage of the
  child, its workers included) over its requests, at the largest in-flight level with one
  process; also without the start-up CPU (that of a one-proof run). Target: <= 0.5 ms;
- peak memory (max RSS of the CLI process) at 2k, 8k and 32k proofs, and the ratio 32k / 2k.
  Target: within 20% (a ratio of at most 1.20);
- start-up: the wall time of ``python -m proofcritic --help``, the median of several. Target:
  under 0.2 s.

The server reports how late its answers were (an answer due at arrival + latency, sent after)
and the most requests it held at once, so a run shows whether the server kept up: at 1024 in
flight its answers should be late by a few milliseconds, not by a share of the latency.

Small sizes make it a quick smoke check (a test runs it so):

    python perf/cli_scale.py --levels 4,8 --waves 2 --workers 1,2 --memory-sizes 20,40,80 --latency 0.05 --help-runs 2

Usage: python perf/cli_scale.py [--latency 0.5] [--levels 256,1024] [--waves 8] [--workers 1,2]
       [--memory-sizes 2000,8000,32000] [--memory-latency 0.05] [--memory-concurrency 1024]
       [--help-runs 7] [--proof-chars 3000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "perf-verifier"

#: a verifier's answer in the released protocol: the analysis, then the final score statement
ANSWER_TEXT = (
    "Here is my evaluation of the solution:\n"
    "The proof factors n^3 - n as (n - 1) n (n + 1), three consecutive integers; among them one is even "
    "and one is a multiple of 3, so 6 divides the product. Every step is justified.\n\n"
    "Based on my evaluation, the final overall score should be: \\boxed{1}"
)


# -- the server (its own process) ------------------------------------------------------------------


def serve(latency: float) -> None:
    """An aiohttp server on 127.0.0.1 (port printed on stdout): chat completions after ``latency``
    seconds (``/lat/<seconds>/v1/...`` sets another latency per base URL); ``GET /stats`` gives
    the requests, the most in flight at once and how late the answers were; ``POST /reset``
    clears them."""
    from aiohttp import web

    body = json.dumps(
        {
            "id": "chatcmpl-perf",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ANSWER_TEXT}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 900, "completion_tokens": 80, "total_tokens": 980},
        }
    ).encode()
    state = {"requests": 0, "in_flight": 0, "peak": 0, "late_sum": 0.0, "late_max": 0.0, "first": None, "last": None}

    async def answer(request: web.Request) -> web.Response:
        arrived = time.monotonic()
        wait = float(request.match_info.get("latency") or latency)
        state["requests"] += 1
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        if state["first"] is None:
            state["first"] = time.time()
        await request.read()
        await asyncio.sleep(wait - (time.monotonic() - arrived))
        late = time.monotonic() - arrived - wait
        state["late_sum"] += late
        state["late_max"] = max(state["late_max"], late)
        state["in_flight"] -= 1
        state["last"] = time.time()
        return web.Response(body=body, content_type="application/json")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(_: web.Request) -> web.Response:
        state.update(requests=0, peak=state["in_flight"], late_sum=0.0, late_max=0.0, first=None, last=None)
        return web.json_response(state)

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", answer)
        app.router.add_post("/lat/{latency}/v1/chat/completions", answer)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


class Server:
    def __init__(self, latency: float):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--latency", str(latency)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.root = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def url(self, latency: float | None = None) -> str:
        return f"{self.root}/v1" if latency is None else f"{self.root}/lat/{latency:g}/v1"

    def _call(self, path: str, method: str = "GET") -> dict:
        with urllib.request.urlopen(
            urllib.request.Request(self.root + path, method=method, data=b"" if method == "POST" else None)
        ) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self._call("/reset", "POST")

    def stats(self) -> dict:
        return self._call("/stats")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# -- the client: the real CLI in a subprocess ---------------------------------------------------


def write_input(path: Path, count: int, proof_chars: int) -> None:
    """``count`` distinct proofs of about ``proof_chars`` characters each, one JSON line each."""
    filler = "Since each of the three factors is an integer, the product is an integer as well. "
    body = (filler * (proof_chars // len(filler) + 1))[:proof_chars]
    with path.open("w") as out:
        for i in range(count):
            record = {
                "id": f"p{i}",
                "problem": f"Prove that n^3 - n is divisible by 6 (case {i}).",
                "proof": f"Proof {i}. Write n^3 - n = (n - 1) n (n + 1). " + body,
            }
            out.write(json.dumps(record) + "\n")


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, int, int, float]:
    """``(wall s, user+sys CPU s, max RSS KiB, exit status, start time)`` of ``python -m proofcritic ARGS``."""
    started = time.time()
    t0 = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "proofcritic", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert child.stderr is not None
    err = child.stderr.read()  # the CLI's stderr (progress lines, the summary)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, child.returncode, started


def grade(
    server: Server,
    work: Path,
    name: str,
    count: int,
    concurrency: int,
    latency: float | None,
    proof_chars: int,
    workers: int = 1,
) -> dict:
    """One ``grade`` batch of ``count`` proofs at ``concurrency`` in flight, with the server's view."""
    source, output = work / f"{name}.jsonl", work / f"{name}.out.jsonl"
    write_input(source, count, proof_chars)
    env = {
        **installed_env(),
        "PROOFCRITIC_CACHE": str(work / f"{name}.cache.sqlite"),
        "OPENAI_API_KEY": "perf",
        "HF_HUB_OFFLINE": "1",
        "PROOFCRITIC_PROGRESS_INTERVAL": "3600",
    }
    server.reset()
    wall, cpu, rss, status, started = run_cli(
        [
            "grade",
            "--input",
            str(source),
            "--output",
            str(output),
            "--model",
            f"openai/{MODEL}",
            "--base-url",
            server.url(latency),
            "--concurrency",
            str(concurrency),
            "-n",
            "1",
            "--workers",
            str(workers),
        ],
        env,
    )
    seen = server.stats()
    lines = sum(1 for _ in output.open()) if output.exists() else 0
    if status != 0 or lines != count or seen["requests"] != count:
        raise SystemExit(
            f"{name}: exit status {status}, {lines} output lines and {seen['requests']} requests for {count} proofs"
        )
    startup = (seen["first"] - started) if seen["first"] is not None else 0.0
    return {"wall": wall, "cpu": cpu, "rss_mib": rss / 1024, "startup": startup, "server": seen, "requests": count}


def installed_env() -> dict[str, str]:
    """This environment as an installed proofcritic sees it: bytecode is read from (and written
    to) ``__pycache__``; ``PYTHONDONTWRITEBYTECODE`` would compile every module on every run."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def help_time(runs: int) -> float:
    times = []
    for run in range(runs + 1):  # the first run (bytecode written) is not timed
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "proofcritic", "--help"],
            cwd=ROOT,
            check=True,
            env=installed_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if run:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.5, help="server latency in seconds (throughput runs)")
    parser.add_argument("--levels", default="256,1024", help="in-flight levels of the throughput runs")
    parser.add_argument("--waves", type=int, default=8, help="proofs per throughput run: waves x in-flight")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker processes (grade --workers) of the throughput runs, each level with each",
    )
    parser.add_argument("--memory-sizes", default="2000,8000,32000", help="proofs per memory run")
    parser.add_argument("--memory-latency", type=float, default=0.05, help="server latency of the memory runs")
    parser.add_argument("--memory-concurrency", type=int, default=1024, help="in flight in the memory runs")
    parser.add_argument("--help-runs", type=int, default=7, help="runs of --help (the median is shown)")
    parser.add_argument("--proof-chars", type=int, default=3000, help="characters per proof")
    parser.add_argument("--keep", type=Path, default=None, help="keep inputs and outputs in this folder")
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
        return

    levels = [int(x) for x in args.levels.split(",") if x]
    worker_counts = [int(x) for x in args.workers.split(",") if x]
    sizes = [int(x) for x in args.memory_sizes.split(",") if x]
    work = args.keep or Path(tempfile.mkdtemp(prefix="proofcritic-cli-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    server = Server(args.latency)
    failed = []
    try:
        print(
            f"server latency {args.latency * 1000:g} ms (memory runs {args.memory_latency * 1000:g} ms), "
            f"{os.cpu_count()} cores, python {sys.version.split()[0]}, proofs of {args.proof_chars} characters"
        )
        start_help = help_time(args.help_runs)
        ok = start_help < 0.2
        failed += [] if ok else ["start-up"]
        print(
            f"start-up: `proofcritic --help` {start_help:.3f} s (median of {args.help_runs}); target < 0.2 s: {verdict(ok)}"
        )

        ones = {}
        for w in worker_counts:  # the fixed cost of a run
            one = ones[w] = grade(server, work, f"one{w}", 1, 1, None, args.proof_chars, w)
            print(
                f"one proof, {w} worker(s): wall {one['wall']:.2f} s, start-up to the first request {one['startup']:.2f} s, "
                f"CPU {one['cpu']:.2f} s, max RSS {one['rss_mib']:.0f} MiB"
            )

        print(
            f"{'in flight':>9} {'workers':>7} {'proofs':>7} {'wall s':>7} {'ideal s':>7} {'ach/ideal':>9} {'w/o start':>9} "
            f"{'target':>6} {'CPU ms/req':>10} {'w/o start':>9} {'srv late ms':>11} {'srv peak':>8}"
        )
        last = None
        best: dict[int, float] = {}
        for level, w in ((level, w) for level in levels for w in worker_counts):
            one = ones[w]
            count = level * args.waves
            r = grade(server, work, f"c{level}w{w}", count, level, None, args.proof_chars, w)
            ideal = args.waves * args.latency
            ratio, ratio_run = ideal / r["wall"], ideal / max(r["wall"] - r["startup"], 1e-9)
            target = 0.95 if level <= 256 else 0.90
            cpu_ms = r["cpu"] / count * 1000
            cpu_run_ms = max(r["cpu"] - one["cpu"], 0.0) / count * 1000
            s = r["server"]
            late = f"{s['late_sum'] / max(s['requests'], 1) * 1000:.1f}/{s['late_max'] * 1000:.0f}"
            print(
                f"{level:>9} {w:>7} {count:>7} {r['wall']:>7.2f} {ideal:>7.2f} {ratio:>9.3f} {ratio_run:>9.3f} "
                f"{target:>6.2f} {cpu_ms:>10.3f} {cpu_run_ms:>9.3f} {late:>11} {s['peak']:>8}",
                flush=True,
            )
            best[level] = max(best.get(level, 0.0), ratio_run)
            mean_late = s["late_sum"] / max(s["requests"], 1)
            kept_up = s["peak"] >= min(level, count) and mean_late <= 0.05 * args.latency
            if not kept_up:
                failed.append(f"the server at {level}")
            print(
                f"  server at {level} in flight: held {s['peak']} at once, answers late by {mean_late * 1000:.1f} ms "
                f"on average; kept up (all in flight, late by <= 5% of the latency): {verdict(kept_up)}"
            )
            if w == 1:
                last = (level, cpu_ms, cpu_run_ms)
        for level, ratio_run in best.items():
            target = 0.95 if level <= 256 else 0.90
            if ratio_run < target:
                failed.append(f"throughput at {level}")
            print(
                f"throughput at {level} in flight, the best of {args.workers} worker(s): {ratio_run:.3f} of ideal "
                f"from the first request; target >= {target:.2f}: {verdict(ratio_run >= target)}"
            )
        if last is not None:
            ok = last[2] <= 0.5
            failed += [] if ok else ["client CPU"]
            print(
                f"client CPU per request at {last[0]} in flight, one process: {last[1]:.3f} ms with start-up, {last[2]:.3f} ms "
                f"without; target <= 0.5 ms: {verdict(ok)}"
            )
        print("   (ach/ideal: over the whole wall time / from the first request on; server lateness: mean/max)")

        rss = {}
        for size in sizes:
            r = grade(server, work, f"m{size}", size, args.memory_concurrency, args.memory_latency, args.proof_chars)
            rss[size] = r["rss_mib"]
            print(
                f"peak memory at {size:>6} proofs: {r['rss_mib']:7.1f} MiB max RSS (wall {r['wall']:.1f} s, "
                f"CPU {r['cpu'] / size * 1000:.3f} ms/req)",
                flush=True,
            )
        if len(rss) >= 2:
            small, large = min(rss), max(rss)
            growth = rss[large] / rss[small]
            ok = growth <= 1.20
            failed += [] if ok else ["memory"]
            print(f"peak memory {large} / {small} proofs: {growth:.3f}; target <= 1.20: {verdict(ok)}")
        print("all targets met" if not failed else "missed: " + ", ".join(failed))
    finally:
        server.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
