"""`make demo`: grade a correct proof and one with a planted error using the embedded model.

SmolLM2-135M is far too small to grade proofs well; the demo shows the whole real path
(prompt -> local model on CPU -> parse -> likelihood read-out -> verdict) running end to end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROOFS = [("a correct proof", "proof_correct.md"), ("a proof with a planted error", "proof_flawed.md")]


def main() -> int:
    print("problem:", (HERE / "problem.md").read_text().strip(), "\n")
    for label, name in PROOFS:
        print(f"=== {label} ({name}) ===", flush=True)
        started = time.perf_counter()
        command = [
            sys.executable, "-m", "proofcritic", "grade",
            "--problem", str(HERE / "problem.md"),
            "--proof", str(HERE / name),
            "--model", "transformers/smollm2",
            "-n", "2", "--temperature", "0.7", "--max-tokens", "160", "--seed", "0",
            "--no-cache",
        ]
        code = subprocess.call(command)
        print(f"({time.perf_counter() - started:.1f} s)\n", flush=True)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
