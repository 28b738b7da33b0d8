"""Checks per second: SandboxPool vs one sandboxed process per check, sequentially.

Usage: python perf/sandbox.py [N_CHECKS] [WORKERS]
"""

import asyncio
import sys
import time

from proofcritic.tools import SandboxPool, run_python

CHECKS = {
    "trivial": "print(sum(i*i for i in range(1000)))",
    "sympy": ("import sympy as sp\nx = sp.symbols('x')\n"
              "print(sp.expand((x + 1)**5) == x**5 + 5*x**4 + 10*x**3 + 10*x**2 + 5*x + 1)"),
}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    for name, code in CHECKS.items():
        t = time.monotonic()
        seq = [run_python(code, timeout=30) for _ in range(n)]
        seq_s = time.monotonic() - t
        assert all(r.ok for r in seq), seq[0]

        async def go():
            async with SandboxPool(workers=workers) as pool:
                return await pool.run_many([code] * n, timeout=60)

        t = time.monotonic()
        par = asyncio.run(go())
        par_s = time.monotonic() - t
        assert all(r.ok for r in par), par[0]
        print(f"{name:8s} n={n} sequential: {n / seq_s:6.2f} checks/s ({seq_s / n * 1000:6.0f} ms/check)"
              f" | pool(workers={workers}): {n / par_s:6.2f} checks/s  speedup x{seq_s / par_s:.2f}")


if __name__ == "__main__":
    main()
