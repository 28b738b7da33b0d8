"""What ``--batch-api`` costs the client: ``grade -n 2`` and ``label -n 2 --m 2`` over N proofs
(half of them flawed, so label has a second stage), online and through the batch API, against
the local scripted server of the tests (``tests/servers/batch_server.py``: files, batches and
chat completions on 127.0.0.1; a batch is answered at its first poll by the server's own chat
endpoint). Each run starts with an empty cache. The batch runs pay for the stage passes (the
command run into a scratch output once per stage, plus the usual run from the cache), the
request files, the uploads and the imports; the server's answering is in both.

    .venv/bin/python perf/batch_api.py [N]      # default 300
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers.batch_server import BatchServer
from servers.scripted_openai_server import FLAW, MODEL_NAME
from typer.testing import CliRunner

from proofcritic.cli import app


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as folder, BatchServer(polls_before_done=0) as server:
        tmp = Path(folder)
        data = tmp / "in.jsonl"
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "id": f"p{i}",
                        "problem": "Prove that n^3 - n is divisible by 6.",
                        "proof": f"Proof {i}. " + (FLAW if i % 2 else "Every step is shown."),
                    }
                )
                + "\n"
                for i in range(n)
            )
        )
        times: dict[tuple[str, str], float] = {}
        for command in ("grade", "label"):
            for mode in ("online", "batch"):
                out = tmp / f"{command}-{mode}.jsonl"
                args = [command, "--input", data, "--output", out, "-n", "2", "--model", f"openai/{MODEL_NAME}"]
                args += ["--base-url", server.url, "--api-key", "k", "--cache", tmp / f"{command}-{mode}.sqlite"]
                if command == "label":
                    args += ["--review", tmp / f"review-{mode}.jsonl", "--m", "2", "--k", "1"]
                if mode == "batch":
                    args += ["--batch-api", "--batch-interval", "0.01"]
                started = time.perf_counter()
                result = CliRunner().invoke(app, [str(a) for a in args])
                times[command, mode] = time.perf_counter() - started
                if result.exit_code != 0:
                    raise SystemExit(f"{command} {mode} failed: {result.stderr[-2000:]}")
            online, batch = times[command, "online"], times[command, "batch"]
            print(
                f"{command} -n 2 over {n} proofs: online {online:.2f} s, batch API {batch:.2f} s "
                f"({batch / online:.2f}x; {len(server.batches)} batch(es) so far)",
                flush=True,
            )


if __name__ == "__main__":
    main()
