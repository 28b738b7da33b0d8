"""A stand-in for ``python -m sglang.launch_server`` (SGLang needs a GPU, so it cannot run here).

It is a real process with a real HTTP server: it takes SGLang's command line (``--model-path``,
``--host``, ``--port``, ``--served-model-name`` and any engine flags), forks a worker process the
way SGLang does, answers ``GET /health`` with 503 until ``--standin-delay`` seconds have passed
and 200 afterwards, and lists the model at ``GET /v1/models``. Its own flags:

* ``--standin-delay S``: seconds before it reports healthy;
* ``--standin-mode ok|crash|hang``: ``crash`` writes an error to stderr and exits 1 after the
  delay; ``hang`` never becomes healthy;
* ``--standin-record FILE``: JSON lines of what happened (the argv, its pid, the worker's pid,
  then ``{"signal": "SIGTERM"}`` when it is told to stop).

On SIGTERM it records the signal and exits WITHOUT stopping its worker, so a launcher that only
signals the leader (instead of the whole process group) leaves the worker behind.

Tests run it as ``python -m sglang.launch_server`` by putting a folder with a ``sglang`` package
whose ``launch_server`` module runs this file on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _record(path: str | None, entry: dict) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sglang.launch_server")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--served-model-name")
    parser.add_argument("--standin-delay", type=float, default=0.5)
    parser.add_argument("--standin-mode", choices=("ok", "crash", "hang"), default="ok")
    parser.add_argument("--standin-record")
    args, engine_flags = parser.parse_known_args(argv)

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    _record(args.standin_record, {"argv": argv, "pid": os.getpid(), "worker": worker.pid, "engine_flags": engine_flags})
    print(f"stand-in sglang: loading {args.model_path} (flags {engine_flags})", flush=True)
    ready_at = time.monotonic() + args.standin_delay
    name = args.served_model_name or args.model_path

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            healthy = args.standin_mode == "ok" and time.monotonic() >= ready_at
            if self.path == "/health":
                self._send(200 if healthy else 503, {"healthy": healthy})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}] if healthy else []})
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)

    def on_term(signum: int, frame: object) -> None:
        _record(args.standin_record, {"signal": signal.Signals(signum).name})
        print("stand-in sglang: shutting down", flush=True)
        os._exit(0)  # the worker is left running on purpose

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if args.standin_mode == "crash":
        time.sleep(args.standin_delay)
        print("RuntimeError: stand-in failure: not enough GPU memory for the KV cache", file=sys.stderr, flush=True)
        sys.exit(1)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
