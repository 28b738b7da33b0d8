"""The scripted OpenAI-compatible server (``scripted_openai_server.py``) with the batch API.

Tests only. Besides ``POST /v1/chat/completions`` (the online path, for comparison) it serves:

- ``POST /v1/files`` (multipart: ``purpose``, ``file``) and ``GET /v1/files/{id}/content``;
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``) and
  ``GET /v1/batches/{id}``: a batch stays ``in_progress`` for its first ``polls_before_done``
  polls, then each of its requests is answered by a real HTTP request to this server's own chat
  endpoint and the batch is ``completed`` with an output file (and an error file for the
  requests that failed).

Knobs for the failure paths: ``fail_first`` (custom ids answered with a 500 error line the
first time they are seen), ``expire_batches`` (the first N batches expire: the first half of
their requests answered, the rest in the error file as ``batch_expired``), ``fail_batches``
(the first N batches fail validation, no output), ``hold_from`` (batches from the N-th on stay
``in_progress`` while it is set). ``batches`` holds every batch created (its
request count and custom ids), ``polls`` counts the polls.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from servers.scripted_openai_server import ScriptedOpenAIServer


class BatchServer(ScriptedOpenAIServer):
    def __init__(
        self,
        *,
        pass_at: int = 2,
        polls_before_done: int = 1,
        fail_first: int = 0,
        expire_batches: int = 0,
        fail_batches: int = 0,
        hold_from: int | None = None,
    ):
        super().__init__(pass_at=pass_at)
        self.polls_before_done = polls_before_done
        self.fail_first = fail_first
        self.expire_batches = expire_batches
        self.fail_batches = fail_batches
        self.hold_from = hold_from
        self.files: dict[str, bytes] = {}
        self.batches: list[dict[str, Any]] = []
        self.polls = 0
        self.failed_ids: set[str] = set()

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("purpose") != "batch":
            return web.json_response({"error": {"message": "purpose must be batch"}}, status=400)
        upload = form["file"]
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[file_id] = upload.file.read()  # type: ignore[union-attr]
        return web.json_response({"id": file_id, "object": "file", "purpose": "batch"})

    async def _content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": f"no file {file_id}"}}, status=404)
        return web.Response(body=self.files[file_id], content_type="application/jsonl")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = self.files.get(body.get("input_file_id"))
        if data is None or body.get("endpoint") != "/v1/chat/completions":
            return web.json_response({"error": {"message": "bad input_file_id or endpoint"}}, status=400)
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:12]}",
            "object": "batch",
            "status": "validating",
            "input_file_id": body["input_file_id"],
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "output_file_id": None,
            "error_file_id": None,
            "lines": lines,
            "polled": 0,
        }
        self.batches.append(batch)
        return web.json_response(self._shown(batch))

    @staticmethod
    def _shown(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if k not in ("lines", "polled")}

    async def _get(self, request: web.Request) -> web.Response:
        found = [b for b in self.batches if b["id"] == request.match_info["id"]]
        if not found:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        batch = found[0]
        self.polls += 1
        batch["polled"] += 1
        if batch["status"] in ("validating", "in_progress"):
            held = self.hold_from is not None and self.batches.index(batch) + 1 >= self.hold_from
            if held or batch["polled"] <= self.polls_before_done:
                batch["status"] = "in_progress"
            else:
                await self._finish(batch)
        return web.json_response(self._shown(batch))

    async def _finish(self, batch: dict[str, Any]) -> None:
        number = self.batches.index(batch) + 1
        if number <= self.fail_batches:
            batch["status"] = "failed"
            batch["errors"] = {"data": [{"code": "invalid_request", "message": "scripted validation failure"}]}
            return
        lines = batch["lines"]
        expiring = number <= self.expire_batches
        answered = lines[: len(lines) // 2] if expiring else lines
        out, errors = [], []
        async with aiohttp.ClientSession() as session:
            for line in answered:
                cid = line["custom_id"]
                if len(self.failed_ids) < self.fail_first and cid not in self.failed_ids:
                    self.failed_ids.add(cid)
                    errors.append(self._line(cid, 500, {"error": {"message": "scripted server error"}}))
                    continue
                async with session.post(f"{self.url}/chat/completions", json=line["body"]) as response:
                    errors_or_out = out if response.status == 200 else errors
                    errors_or_out.append(self._line(cid, response.status, await response.json()))
        for line in lines[len(answered) :]:
            errors.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    },
                }
            )
        for kind, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{uuid.uuid4().hex[:12]}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[kind] = file_id
        batch["status"] = "expired" if expiring else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}

    @staticmethod
    def _line(cid: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"batch_req_{uuid.uuid4().hex[:8]}",
            "custom_id": cid,
            "response": {"status_code": status, "request_id": uuid.uuid4().hex[:8], "body": body},
            "error": None,
        }

    async def start(self) -> BatchServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches/{id}", self._get)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self
