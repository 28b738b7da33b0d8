"""Warm Lean language server vs a cold ``lean`` process per check, on the same 50 files.

    python perf/lean.py [--files 50] [--preamble 200] [--lean PATH]

Both check the files one at a time (no parallelism), with the same sorry/axiom probes, each
file cold and warm one right after the other (alternating which goes first, so that both meet
the same load on a shared machine). The warm checker keeps one open document and sends each
file as a new version of it; Lean re-elaborates only what follows the first changed character.
Three sets of files:

- ``distinct``: each file differs from its second line on (a numbered comment), so the warm
  server re-elaborates the whole file and only saves the process start;
- ``shared``: the files share the short prelude (their own equality and numbers) and differ in
  the theorems after it;
- ``preamble``: the realistic case of many candidate proofs of one statement, or files built on
  the same definitions and lemmas: a long shared preamble (``--preamble`` declarations, half
  definitions and half lemmas the kernel checks by computation) and a final theorem of each
  file's own, every fifth one wrong.

Prints, per set, the mean seconds per check cold and warm, the first warm check (it starts the
server and elaborates the whole file: reported, not averaged), the ratio of the means
cold/warm (target >= 10x), the median of the per-file ratios cold/warm, and whether the two
checkers gave the same verdicts, messages, sorry and axiom findings. Every figure comes from
this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from proofcritic.lean_checker import LeanServerChecker, LocalLeanChecker, find_lean
from proofcritic.lean_checker.samples import (
    PRELUDE,
    correct_file,
    on_preamble,
    preamble,
)


def files(n: int, kind: str, preamble_size: int = 200) -> list[str]:
    if kind == "preamble":
        shared = preamble(preamble_size)
        return [on_preamble(shared, i, wrong=i % 5 == 4) for i in range(n)]
    out = []
    for i in range(n):
        text = correct_file(i % 12 + 1)
        if i % 5 == 4:  # every fifth proof is wrong
            text = text.replace("Eq.symm' (Eq.refl _)", "Eq.refl (N.succ N.zero))")
        if kind == "distinct":
            text = text.replace("prelude\n", f"prelude\n-- file {i}\n", 1)
        else:
            text = text.replace(PRELUDE, PRELUDE + f"\ntheorem marker_{i} : Eq N.zero N.zero := Eq.refl _\n", 1)
        out.append(text)
    return out


async def interleaved(cold, warm, sources):
    """Check each file cold and warm, one right after the other (alternating which goes first),
    so that both see the same load on a shared machine."""
    cold_s, warm_s, cold_r, warm_r = [], [], [], []
    for i, source in enumerate(sources):
        order = ((cold, cold_s, cold_r), (warm, warm_s, warm_r))
        for checker, seconds, results in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            results.append(await checker.check(source))
            seconds.append(time.perf_counter() - start)
    return cold_s, warm_s, cold_r, warm_r


def verdict(result):
    """What must agree: the status, the messages (in any order: a server may report the same
    messages in another order), the sorry and axiom findings."""
    messages = sorted((m.severity, m.line, m.column, m.end_line, m.end_column, m.text) for m in result.messages)
    return result.status, messages, result.uses_sorry, result.axioms, result.disallowed_axioms


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--preamble", type=int, default=200, help="declarations in the shared preamble")
    parser.add_argument("--lean", default=None)
    args = parser.parse_args()
    lean = find_lean(args.lean)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"lean: {lean}; {args.files} files per set, checked one at a time; load average {load} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'set':<9} {'lines':>6} {'cold s/check':>13} {'warm s/check':>13} {'warm first':>11} {'cold/warm':>10} "
        f"{'median ratio':>13} {'same verdicts':>14}"
    )
    for kind in ("distinct", "shared", "preamble"):
        sources = files(args.files, kind, args.preamble)
        async with (
            LocalLeanChecker(lean, timeout=120, concurrency=1) as cold,
            LeanServerChecker(lean, timeout=120) as warm,
        ):
            start = time.perf_counter()
            await warm.check(sources[0])  # starts the server: reported, not averaged
            first = time.perf_counter() - start
            cold_s, warm_s, cold_r, warm_r = await interleaved(cold, warm, sources)
        same = all(verdict(a) == verdict(b) for a, b in zip(cold_r, warm_r))
        passed = sum(r.ok for r in cold_r)
        cold_mean, warm_mean = statistics.mean(cold_s), statistics.mean(warm_s)
        ratios = [c / w for c, w in zip(cold_s, warm_s)]
        lines = statistics.mean(s.count("\n") for s in sources)
        print(
            f"{kind:<9} {lines:>6.0f} {cold_mean:>13.4f} {warm_mean:>13.4f} {first:>11.3f} {cold_mean / warm_mean:>9.1f}x "
            f"{statistics.median(ratios):>12.1f}x {same!s:>14}   ({passed}/{len(sources)} pass)"
        )


if __name__ == "__main__":
    asyncio.run(main())
