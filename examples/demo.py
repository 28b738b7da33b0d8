"""`make demo`: grade a correct proof and one with a planted error using the embedded model.

SmolLM2-135M is far too small to grade proofs well; the demo shows the whole real path
(prompt -> local model on CPU -> parse -> likelihood read-out -> verdict) running end to end.
The embedded model never writes the output protocol, so in the default score mode (``text``)
none of its verifications would have a score: the demo opts in to the likelihood read-out
(``--score-mode auto``) and says so; its scores are marked "(read-out)".
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROOFS = [("a correct proof", "proof_correct.md"), ("a proof with a planted error", "proof_flawed.md")]


#: why the demo opts in to a read-out (the commands' default is --score-mode text)
WHY_READ_OUT = (
    "score mode: auto (the likelihood read-out), chosen for this demo: the embedded 135M model never "
    "writes the output protocol, so with the default (text) no verification would have a score"
)


def main() -> int:
    print(WHY_READ_OUT, "\n")
    print("problem:", (HERE / "problem.md").read_text().strip(), "\n")
    for label, name in PROOFS:
        print(f"=== {label} ({name}) ===", flush=True)
        started = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "proofcritic",
            "grade",
            "--problem",
            str(HERE / "problem.md"),
            "--proof",
            str(HERE / name),
            "--model",
            "transformers/smollm2",
            "-n",
            "2",
            "--temperature",
            "0.7",
            "--max-tokens",
            "160",
            "--seed",
            "0",
            "--score-mode",
            "auto",
            "--no-cache",
        ]
        code = subprocess.call(command)
        print(f"({time.perf_counter() - started:.1f} s)\n", flush=True)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
