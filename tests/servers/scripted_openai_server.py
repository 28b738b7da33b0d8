"""A deterministic OpenAI-compatible server that answers each proofcritic role in protocol.

Tests only. It is the real HTTP server of ``tiny_openai_server.py`` over a scripted model
(``tests/scripted.py``) whose answers follow a fixed rule, so a proofcritic service in another
process can run real pipelines against it and the test can predict every answer:

- generate: "Attempt 1" of a proof; refine: the attempt after the highest "Attempt k" the
  prompt shows (agent repair and improve alike). Attempts before ``pass_at`` contain the
  phrase ``(unjustified step)`` and rate themselves 0; from ``pass_at`` on they are clean and
  rate themselves 1.
- verify: score 0 with one located issue when the prompt holds ``(unjustified step)``, else 1.
- meta-verify: 1 (the analysis is faithful); agent judge: pass unless the log reports a gap.

Every call waits ``delay`` seconds (concurrently). ``arrived`` and ``answered`` hold a hash of
each request's messages as it arrives and once it is answered; ``GET /stats`` returns them.

Thread mode: ``with ScriptedOpenAIServer(pass_at=2) as server: ... server.url``. Process mode:
``python tests/servers/scripted_openai_server.py [--delay S] [--pass-at K] [--port P]`` prints
``READY <base_url>``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for scripted.py in process mode

from scripted import (
    Call,
    ScriptedBackend,
    generation_text,
    judge_text,
    meta_text,
    repair_text,
    verification_text,
)

from proofcritic.llm import ChatRequest, Completion
from servers.tiny_openai_server import TinyOpenAIServer, serve_until_interrupted

FLAW = "(unjustified step)"
MODEL_NAME = "roles"


def prompt_hash(contents: list[str]) -> str:
    return hashlib.sha256("\n".join(contents).encode()).hexdigest()[:16]


def proof_text(attempt: int, pass_at: int) -> str:
    if attempt < pass_at:
        return f"Attempt {attempt}. Write n^3 - n = (n - 1) n (n + 1). The product is divisible by 6 {FLAW}."
    return (
        f"Attempt {attempt}. Write n^3 - n = (n - 1) n (n + 1), a product of three consecutive integers: "
        "one of them is even and one is a multiple of 3, so 6 divides the product."
    )


class ProtocolScript:
    """The deterministic answer of each role (see the module docstring)."""

    def __init__(self, pass_at: int = 2):
        self.pass_at = pass_at

    def _next_attempt(self, prompt: str) -> int:
        seen = [int(k) for k in re.findall(r"Attempt (\d+)\.", prompt)]
        return (max(seen) if seen else 0) + 1

    def __call__(self, call: Call) -> str:
        prompt = call.prompt
        if call.role in ("generate", "refine", "agent_improve"):
            attempt = 1 if call.role == "generate" else self._next_attempt(prompt)
            return generation_text(proof_text(attempt, self.pass_at), 1 if attempt >= self.pass_at else 0)
        if call.role == "agent_repair":
            attempt = self._next_attempt(prompt)
            return repair_text(proof_text(attempt, self.pass_at), 1 if attempt >= self.pass_at else 0)
        if call.role in ("verify", "agent_reverify"):
            if FLAW in prompt:
                return verification_text(
                    0,
                    [("divisible by 6", "critical_error", "Divisibility by 3 is never shown.")],
                    analysis="The key divisibility is asserted, not proved.",
                )
            return verification_text(1, analysis="Every step is justified.")
        if call.role == "meta_verify":
            return meta_text(1)
        if call.role == "agent_judge":
            return judge_text("Divisibility by 3 is never shown" not in prompt)
        raise AssertionError(f"no scripted answer for role {call.role}")


class _RecordingBackend(ScriptedBackend):
    """A ScriptedBackend that also records each request's hash on arrival and once answered."""

    def __init__(self, script, delay: float = 0.0):
        super().__init__(script, delay)
        self.arrived: list[str] = []
        self.answered: list[str] = []

    async def generate(self, request: ChatRequest) -> list[Completion]:
        key = prompt_hash([m.content for m in request.messages])
        self.arrived.append(key)
        out = await super().generate(request)
        self.answered.append(key)
        return out


class ScriptedOpenAIServer(TinyOpenAIServer):
    """The tiny OpenAI-compatible server over the protocol script, with ``GET /stats``."""

    def __init__(self, *, pass_at: int = 2, delay: float = 0.0, host: str = "127.0.0.1", port: int = 0):
        self.script = ProtocolScript(pass_at)
        super().__init__(_RecordingBackend(self.script, delay), MODEL_NAME, host=host, port=port)

    @property
    def recorder(self) -> _RecordingBackend:
        return self.backend  # type: ignore[return-value]

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"arrived": list(self.recorder.arrived), "answered": list(self.recorder.answered)})

    async def start(self) -> ScriptedOpenAIServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, backlog=1024).start()
        self.port = self._runner.addresses[0][1]
        return self


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="deterministic OpenAI-compatible server answering proofcritic's roles")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each call takes")
    parser.add_argument("--pass-at", type=int, default=2, help="first attempt that is a correct proof")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    serve_until_interrupted(
        lambda: ScriptedOpenAIServer(pass_at=args.pass_at, delay=args.delay, host=args.host, port=args.port).start()
    )


if __name__ == "__main__":
    main()
