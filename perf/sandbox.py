"""Checks per second of the sandbox: one new interpreter per check (sequential), the pool
with one new interpreter per check (``warm=False``), and the pool forking each check from a
warm server that imported SymPy once (``warm=True``, the default). Every way applies the same
per-check isolation; the script checks that each result is right. Each is measured inside
bubblewrap (when it works here) and with the native layers only.

Usage: python perf/sandbox.py [N_CHECKS] [WORKERS]
"""

import asyncio
import sys
import time

from proofcritic.tools import SandboxPool, run_python
from proofcritic.tools._sandbox import bwrap_status

CHECKS = {
    "trivial": ("print(sum(i*i for i in range(1000)))", "332833500\n"),
    "sympy": (
        (
            "import sympy as sp\nx = sp.symbols('x')\n"
            "print(sp.expand((x + 1)**5) == x**5 + 5*x**4 + 10*x**3 + 10*x**2 + 5*x + 1)"
        ),
        "True\n",
    ),
}


def _pool_rate(code: str, expected: str, n: int, workers: int, warm: bool, bwrap: bool) -> tuple[float, str]:
    async def go():
        async with SandboxPool(workers=workers, warm=warm, bwrap=bwrap) as pool:
            await pool.run("pass", timeout=60)  # start-up (the warm server's imports) not counted
            t = time.monotonic()
            results = await pool.run_many([code] * n, timeout=60)
            return time.monotonic() - t, results

    elapsed, results = asyncio.run(go())
    assert all(r.ok and r.stdout == expected for r in results), results[0]
    return n / elapsed, ",".join(results[0].isolation)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    kinds = [True, False] if bwrap_status()[0] else [False]
    if len(kinds) == 1:
        print(f"bubblewrap not used: {bwrap_status()[1]}")
    for bwrap in kinds:
        label = "bwrap" if bwrap else "native"
        for name, (code, expected) in CHECKS.items():
            t = time.monotonic()
            seq = [run_python(code, timeout=30, bwrap=bwrap) for _ in range(n)]
            seq_rate = n / (time.monotonic() - t)
            assert all(r.ok and r.stdout == expected for r in seq), seq[0]
            cold_rate, _ = _pool_rate(code, expected, n, workers, False, bwrap)
            warm_rate, isolation = _pool_rate(code, expected, n, workers, True, bwrap)
            print(
                f"{label:6s} {name:8s} n={n} one process per check: {seq_rate:6.2f} checks/s | "
                f"pool(workers={workers}, cold): {cold_rate:6.2f} (x{cold_rate / seq_rate:.2f}) | "
                f"pool(workers={workers}, warm fork server): {warm_rate:7.2f} (x{warm_rate / seq_rate:.2f})"
            )
        print(f"isolation of a warm {label} check: {isolation}")


if __name__ == "__main__":
    main()
