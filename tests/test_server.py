"""``proofcritic serve`` as a real process under uvicorn on 127.0.0.1.

The upstream model is a real OpenAI-compatible HTTP server: the scripted one
(``tests/servers/scripted_openai_server.py``, deterministic answers in the roles' protocol,
so every figure the service reports can be predicted) and, in one test, SmolLM2 loaded by
the service itself. Clients are the official ``openai`` package and plain httpx.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servers.scripted_openai_server import FLAW, ScriptedOpenAIServer

KEYS = ("sk-test-one", "sk-test-two")
MAX_BODY = 64 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``python -m proofcritic serve ...`` in a subprocess; ``url`` is its base (no /v1)."""

    def __init__(
        self,
        folder: Path,
        model_args: list[str],
        *,
        keys: tuple[str, ...] = (),
        extra: list[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.folder = folder
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "proofcritic",
            "serve",
            *model_args,
            "--port",
            str(self.port),
            "--db",
            str(folder / "jobs.sqlite"),
            "--cache",
            str(folder / "cache.sqlite"),
            "--log-level",
            "warning",
            *[a for k in keys for a in ("--service-key", k)],
            *extra,
        ]
        self.proc: subprocess.Popen | None = None
        self.log = folder / "service.log"

    def start(self, timeout: float = 120.0) -> Service:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PROOFCRITIC_API_KEYS": "",
            "PROOFCRITIC_SERVICE_KEYS": "",
            **self.env,
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the service did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


def upstream_args(upstream: ScriptedOpenAIServer) -> list[str]:
    return ["--model", "openai/roles", "--base-url", upstream.url, "--api-key", "upstream-key"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(pass_at=2, delay=0.02) as server:
        yield server


@pytest.fixture(scope="module")
def service(upstream: ScriptedOpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(
        tmp_path_factory.mktemp("service"),
        upstream_args(upstream),
        keys=KEYS,
        extra=["--max-body-bytes", str(MAX_BODY), "--max-jobs", "16", "--concurrency", "256"],
    ).start()
    yield svc
    svc.stop()


@pytest.fixture
def client(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=KEYS[0], max_retries=0, timeout=60)


def auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unique_problem(label: str) -> str:
    return f"Prove that n^3 - n is divisible by 6 for every integer n. [{label} {uuid.uuid4().hex[:8]}]"


def upstream_spend(upstream: ScriptedOpenAIServer, marker: str) -> tuple[int, int, int]:
    """(requests, prompt tokens, completion tokens) the upstream answered for prompts containing ``marker``,
    recomputed from its script: the scripted model charges len(text) // 4 tokens."""
    calls = [c for c in upstream.recorder.calls if marker in c.prompt]
    requests = [c for c in calls if c.index == 0]
    prompt = sum(len(c.prompt) // 4 for c in requests)
    completion = sum(len(upstream.script(c)) // 4 for c in calls)
    return len(requests), prompt, completion


def wait_job(service: Service, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=auth(), timeout=10).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def read_events(service: Service, job_id: str, *, until=None, last_event_id: str | None = None) -> list[dict]:
    """The job's server-sent events (until the stream ends, or until ``until(event)`` is true)."""
    headers = auth() | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    events, current = [], {}
    with httpx.stream("GET", f"{service.url}/v1/jobs/{job_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    event = {"id": int(current["id"]), "type": current["event"], "data": json.loads(current["data"])}
                    events.append(event)
                    current = {}
                    if until is not None and until(event):
                        break
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    return events


# -- the OpenAI-compatible facade ---------------------------------------------------------------


def test_openai_client_gets_a_verified_proof_with_evidence_and_honest_usage(client, upstream):
    problem = unique_problem("refine")
    answer = client.chat.completions.create(
        model="proofcritic/refine",
        messages=[{"role": "system", "content": "You are careful."}, {"role": "user", "content": problem}],
        extra_body={"proofcritic": {"max_iters": 4}},
    )
    assert answer.object == "chat.completion" and answer.model == "proofcritic/refine"
    choice = answer.choices[0]
    # attempt 1 rates itself 0, the refinement (attempt 2) is correct and rates itself 1
    assert choice.message.content.startswith("Attempt 2.") and FLAW not in choice.message.content
    assert choice.finish_reason == "stop"
    evidence = answer.model_extra["proofcritic"]
    assert evidence["verified"] is True and evidence["scores"] == [1.0] and evidence["issues"] == []
    assert evidence["rounds"] == 2 and evidence["self_score"] == 1.0
    assert evidence["stop_reason"] == "self-score 1 at iteration 2"

    requests, prompt, completion = upstream_spend(upstream, problem)
    assert requests == 3  # generate, refine, verify
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt, completion)
    assert answer.usage.total_tokens == prompt + completion
    assert evidence["usage"]["upstream_calls"] == 3 and evidence["usage"]["cached_calls"] == 0

    # the same request again: every call is answered by the completion cache, nothing is spent
    arrived = len(upstream.recorder.arrived)
    again = client.chat.completions.create(
        model="proofcritic/refine",
        messages=[{"role": "system", "content": "You are careful."}, {"role": "user", "content": problem}],
        extra_body={"proofcritic": {"max_iters": 4}},
    )
    assert again.choices[0].message.content == choice.message.content
    assert len(upstream.recorder.arrived) == arrived
    assert again.usage.total_tokens == 0
    assert again.model_extra["proofcritic"]["usage"]["cached_calls"] == 3
    assert again.model_extra["proofcritic"]["usage"]["pipeline_tokens"] == prompt + completion


def test_facade_streams_like_openai(client, upstream):
    problem = unique_problem("stream")
    request = {"model": "proofcritic/refine", "messages": [{"role": "user", "content": problem}]}
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks) and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("Attempt 2.")
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    evidence = finish[0].model_extra["proofcritic"]
    assert evidence["verified"] is True and evidence["rounds"] == 2
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    _, prompt, completion = upstream_spend(upstream, problem)
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt, completion)
    # the same answer as without streaming (now from the cache)
    plain = client.chat.completions.create(**request)
    assert plain.choices[0].message.content == content
    # on the wire: the rounds as SSE comments before the content, then [DONE]
    with httpx.stream(
        "POST", f"{client.base_url}chat/completions", headers=auth(), timeout=60, json={**request, "stream": True}
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert (
        lines.index(": round 1") < lines.index(": round 2") < next(i for i, x in enumerate(lines) if "Attempt 2." in x)
    )
    assert lines[-1] == "data: [DONE]"


def test_facade_grade_reports_the_verifier_evidence(client, upstream):
    problem = unique_problem("grade")
    flawed = f"The product (n-1)n(n+1) is divisible by 6 {FLAW}."
    answer = client.chat.completions.create(
        model="proofcritic/grade",
        messages=[{"role": "user", "content": f"## Problem\n{problem}\n\n## Proof\n{flawed}"}],
        extra_body={"proofcritic": {"n": 3}},
    )
    evidence = answer.model_extra["proofcritic"]
    assert evidence["verified"] is False and evidence["scores"] == [0.0, 0.0, 0.0]
    assert evidence["aggregate"]["mean"] == 0.0 and evidence["aggregate"]["n"] == 3
    assert {i["location"] for i in evidence["issues"]} == {"divisible by 6"}
    assert answer.choices[0].message.content.startswith("Score: 0 ")
    requests, prompt, completion = upstream_spend(upstream, problem)
    assert requests == 1  # n = 3 verifications in one request
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt, completion)
    # the verify prompt holds the problem without its heading and the proof after the marker
    verify = next(c for c in upstream.recorder.calls if problem in c.prompt)
    assert flawed in verify.prompt and f"## Problem\n{problem}" not in verify.prompt and "## Proof" not in verify.prompt

    clean = client.chat.completions.create(
        model="proofcritic/grade",
        messages=[{"role": "user", "content": problem + " (clean)"}],
        extra_body={"proofcritic": {"proof": "Three consecutive integers include an even one and a multiple of 3."}},
    )
    assert clean.model_extra["proofcritic"]["verified"] is True
    assert clean.model_extra["proofcritic"]["scores"] == [1.0]


def test_facade_errors_have_openai_shapes(client, service):
    message = [{"role": "user", "content": unique_problem("errors")}]
    with pytest.raises(openai.NotFoundError, match="proofcritic/refine"):
        client.chat.completions.create(model="gpt-4o", messages=message)
    with pytest.raises(openai.BadRequestError, match="## Proof"):  # checked before a stream starts
        client.chat.completions.create(model="proofcritic/grade", messages=message, stream=True)
    with pytest.raises(openai.BadRequestError, match="## Proof"):
        client.chat.completions.create(model="proofcritic/grade", messages=message)
    with pytest.raises(openai.BadRequestError, match="no parameter 'bogus'"):
        client.chat.completions.create(
            model="proofcritic/refine", messages=message, extra_body={"proofcritic": {"bogus": 1}}
        )
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="proofcritic/refine", messages=message, n=2)
    response = httpx.post(f"{service.url}/v1/chat/completions", headers=auth(), json={"model": "proofcritic/refine"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_models_list_and_openapi_docs(client, service):
    ids = {m.id for m in client.models.list()}
    assert {
        "proofcritic/grade",
        "proofcritic/single",
        "proofcritic/refine",
        "proofcritic/search",
        "proofcritic/agent",
    } <= ids
    assert httpx.get(f"{service.url}/docs").status_code == 200  # docs need no key
    paths = httpx.get(f"{service.url}/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/models", "/v1/grade", "/v1/solve", "/v1/label", "/v1/jobs/{job_id}"} <= set(
        paths
    )


# -- authentication and limits ------------------------------------------------------------------


def test_missing_or_wrong_key_gets_401(service):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=service.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    for headers in (
        {},
        {"Authorization": "Bearer sk-wrong"},
        {"Authorization": f"Basic {KEYS[0]}"},
        {"Authorization": "Bearer"},
    ):
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/jobs/job-x"),
            ("POST", "/v1/grade"),
        ):
            response = httpx.request(method, service.url + path, headers=headers, json={})
            assert response.status_code == 401, (headers, path)
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"].startswith("Bearer")
    # either configured key works; the health check needs none
    assert httpx.get(f"{service.url}/v1/models", headers=auth(KEYS[1])).status_code == 200
    assert httpx.get(f"{service.url}/health").status_code == 200


def test_keys_from_a_file_and_the_environment_stay_off_the_command_line(upstream, tmp_path):
    """No secret needs to be on a command line, where every process of the machine can read it:
    the service keys come from --service-key-file and PROOFCRITIC_SERVICE_KEYS, the upstream key
    from OPENAI_API_KEY. The job database (every submitted proof) is readable by its owner only."""
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# service keys\nsk-from-file\n\n")
    key_file.chmod(0o600)
    model = ["--model", "openai/roles", "--base-url", upstream.url]
    svc = Service(
        tmp_path,
        model,
        extra=["--service-key-file", str(key_file)],
        env={"PROOFCRITIC_SERVICE_KEYS": "sk-from-env", "OPENAI_API_KEY": "sk-upstream-secret"},
    ).start()
    try:
        with open(f"/proc/{svc.proc.pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
        assert b"sk-" not in cmdline
        for key in ("sk-from-file", "sk-from-env"):
            assert httpx.get(f"{svc.url}/v1/models", headers=auth(key)).status_code == 200, key
        assert httpx.get(f"{svc.url}/v1/models", headers=auth("sk-upstream-secret")).status_code == 401
        assert httpx.get(f"{svc.url}/v1/models").status_code == 401
        assert stat.S_IMODE(os.stat(tmp_path / "jobs.sqlite").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "jobs.sqlite.state").st_mode) == 0o700
    finally:
        svc.stop()
    # an existing database made readable by others is narrowed when the service opens it
    os.chmod(tmp_path / "jobs.sqlite", 0o644)
    from proofcritic.server import JobStore

    JobStore(tmp_path / "jobs.sqlite").close()
    assert stat.S_IMODE(os.stat(tmp_path / "jobs.sqlite").st_mode) == 0o600


def test_unreadable_or_empty_key_file_is_one_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    for path, says in ((tmp_path / "missing.txt", "cannot read the service key file"), (empty, "holds no key")):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "proofcritic",
                "serve",
                "--model",
                "openai/m",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--service-key-file",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_request_size_limit_gets_413(service):
    big = {"problem": "x", "proof": "y" * (MAX_BODY + 1)}
    response = httpx.post(f"{service.url}/v1/grade", headers=auth(), json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body arrives chunked
        body = json.dumps(big).encode()
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = httpx.post(
        f"{service.url}/v1/grade", headers=auth() | {"Content-Type": "application/json"}, content=chunks()
    )
    assert response.status_code == 413
    # a chunked body under the limit goes through
    small = json.dumps({"problem": "x", "proof": ""}).encode()
    response = httpx.post(
        f"{service.url}/v1/grade", headers=auth() | {"Content-Type": "application/json"}, content=iter([small])
    )
    assert response.status_code == 400 and "proof" in response.json()["error"]["message"]


# -- jobs ---------------------------------------------------------------------------------------


def test_grade_and_label_jobs_with_server_sent_progress(service, upstream):
    problem = unique_problem("jobs")
    flawed = f"It is divisible by 6 {FLAW}."
    response = httpx.post(f"{service.url}/v1/grade", headers=auth(), json={"problem": problem, "proof": flawed, "n": 2})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and response.headers["location"] == f"/v1/jobs/{job['id']}"
    events = read_events(service, job["id"])
    assert [e["type"] for e in events][:2] == ["queued", "started"] and events[-1]["type"] == "done"
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    done = wait_job(service, job["id"])
    assert done["status"] == "done" and done["result"]["aggregate"]["mean"] == 0.0
    assert [v["score"] for v in done["result"]["verifications"]] == [0.0, 0.0]
    _, prompt, completion = upstream_spend(upstream, problem)
    assert (done["usage"]["prompt_tokens"], done["usage"]["completion_tokens"]) == (prompt, completion)
    # a client that saw event 1 resumes the stream after it
    assert [e["id"] for e in read_events(service, job["id"], last_event_id="1")] == [e["id"] for e in events[1:]]

    response = httpx.post(
        f"{service.url}/v1/label",
        headers=auth(),
        json={"problem": {"statement": problem, "max_points": 10}, "proof": flawed, "n": 2, "m": 3, "k": 2},
    )
    label = wait_job(service, response.json()["id"])
    assert label["status"] == "done"
    result = label["result"]
    assert (result["status"], result["label"], result["rule"]) == ("labeled", 0.0, "confirmed_lowest")
    assert [a["meta_scores"] for a in result["analyses"]] == [[1.0, 1.0, 1.0]] * 2
    assert result["problem"]["max_points"] == 10

    solve = httpx.post(
        f"{service.url}/v1/solve",
        headers=auth(),
        json={"problem": problem, "strategy": "single", "params": {"samples": 2}},
    )
    result = wait_job(service, solve.json()["id"])["result"]
    assert result["strategy"] == "single" and result["proof"].startswith("Attempt 1.")

    bad = httpx.post(f"{service.url}/v1/solve", headers=auth(), json={"problem": problem, "strategy": "nope"})
    assert bad.status_code == 400 and "unknown strategy" in bad.json()["error"]["message"]
    bad = httpx.post(
        f"{service.url}/v1/label",
        headers=auth(),
        json={"problem": problem, "proof": "p", "refute_at": 1, "confirm_at": 0.5},
    )
    assert bad.status_code == 400 and "refute_at" in bad.json()["error"]["message"]
    missing = httpx.get(f"{service.url}/v1/jobs/job-none", headers=auth())
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


def test_a_job_survives_a_service_restart_without_repeating_finished_work(tmp_path):
    # every upstream call takes 0.4 s and no attempt ever passes: 4 generations + 1 verification
    with ScriptedOpenAIServer(pass_at=99, delay=0.4) as upstream:
        first = Service(tmp_path, upstream_args(upstream), keys=KEYS).start()
        try:
            problem = unique_problem("restart")
            job = httpx.post(
                f"{first.url}/v1/solve",
                headers=auth(),
                json={"problem": problem, "strategy": "refine", "params": {"max_iters": 4, "verify_n": 1}},
            ).json()
            # round 3 starts once the answers of rounds 1 and 2 are in the cache
            seen = read_events(first, job["id"], until=lambda e: e["type"] == "round" and e["data"]["round"] == 3)
            assert seen[-1]["data"]["round"] == 3
            first.kill()
        finally:
            first.stop()
        answered_before = set(upstream.recorder.answered)
        assert len(answered_before) >= 2

        second = Service(tmp_path, upstream_args(upstream), keys=KEYS).start()  # same db and cache
        try:
            done = wait_job(second, job["id"])
            events = read_events(second, job["id"])
        finally:
            second.stop()
    assert done["status"] == "done" and done["attempts"] == 2
    result = done["result"]
    assert result["rounds"] == 4 and result["proof"].startswith("Attempt 4.")
    assert result["stop_reason"].startswith("max iterations (4) reached")
    types = [e["type"] for e in events]
    assert types[:2] == ["queued", "started"] and "requeued" in types and types[-1] == "done"
    after = types[types.index("requeued") :]
    assert after[:2] == ["requeued", "started"] and after.count("round") == 4
    # nothing answered before the kill was asked again; only the call in flight may repeat
    arrived = upstream.recorder.arrived
    assert all(arrived.count(key) == 1 for key in answered_before)
    assert len(set(arrived)) == 5 and len(arrived) <= 6
    assert done["usage"]["upstream_calls"] >= 5 - len(answered_before)


def job_status(service: Service, job_id: str) -> str:
    return httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=auth(), timeout=10).json()["status"]


def test_cancelled_jobs_stop_stay_cancelled_and_finished_ones_cannot_be(tmp_path):
    # one job at a time, every upstream call takes 0.3 s, no attempt ever passes (long refinements)
    with ScriptedOpenAIServer(pass_at=99, delay=0.3) as upstream:
        first = Service(tmp_path, upstream_args(upstream), keys=KEYS, extra=["--max-jobs", "1"]).start()
        try:
            busy, waiting = unique_problem("cancel-running"), unique_problem("cancel-queued")
            params = {"max_iters": 20, "verify_n": 1}
            running = httpx.post(
                f"{first.url}/v1/solve", headers=auth(), json={"problem": busy, "strategy": "refine", "params": params}
            ).json()["id"]
            queued = httpx.post(
                f"{first.url}/v1/solve",
                headers=auth(),
                json={"problem": waiting, "strategy": "refine", "params": params},
            ).json()["id"]
            read_events(first, running, until=lambda e: e["type"] == "round" and e["data"]["round"] == 3)
            assert job_status(first, queued) == "queued"

            response = httpx.delete(f"{first.url}/v1/jobs/{queued}", headers=auth())
            assert response.status_code == 200 and response.json()["status"] == "cancelled"
            response = httpx.post(f"{first.url}/v1/jobs/{running}/cancel", headers=auth())
            assert response.status_code == 200 and response.json()["status"] == "cancelled"
            assert response.json()["finished"] is not None

            events = read_events(first, running)  # the stream ends: the job is final
            assert events[-1]["type"] == "cancelled" and events[-1]["data"]["previous_status"] == "running"
            assert [e["type"] for e in events].count("started") == 1
            spent = events[-1]["data"]["usage"]["upstream_calls"]
            assert spent >= 2  # the calls of rounds 1 and 2 were answered before the cancellation
            assert [e["type"] for e in read_events(first, queued)] == ["queued", "cancelled"]
            job = httpx.get(f"{first.url}/v1/jobs/{queued}", headers=auth()).json()
            assert job["attempts"] == 0 and job["started"] is None and job["result"] is None

            # the running job stopped at its next await: no further upstream call reaches the upstream
            time.sleep(0.6)  # the upstream finishes the call that was in flight (it records calls once answered)
            arrived = sum(1 for c in upstream.recorder.calls if busy in c.prompt)
            assert arrived <= spent + 1
            time.sleep(1.2)  # four upstream delays
            assert sum(1 for c in upstream.recorder.calls if busy in c.prompt) == arrived
            assert not any(waiting in c.prompt for c in upstream.recorder.calls)

            # finished jobs cannot be cancelled (409), unknown ones are 404
            again = httpx.delete(f"{first.url}/v1/jobs/{running}", headers=auth())
            assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
            assert "already cancelled" in again.json()["error"]["message"]
            grade = httpx.post(
                f"{first.url}/v1/grade", headers=auth(), json={"problem": busy, "proof": "Obvious."}
            ).json()
            assert wait_job(first, grade["id"])["status"] == "done"  # the worker took the next job
            done = httpx.post(f"{first.url}/v1/jobs/{grade['id']}/cancel", headers=auth())
            assert done.status_code == 409 and "already done" in done.json()["error"]["message"]
            assert job_status(first, grade["id"]) == "done"
            assert httpx.delete(f"{first.url}/v1/jobs/job-none", headers=auth()).status_code == 404
            assert httpx.delete(f"{first.url}/v1/jobs/{queued}").status_code == 401
            listed = httpx.get(f"{first.url}/v1/jobs", headers=auth(), params={"status": "cancelled"}).json()["data"]
            assert {j["id"] for j in listed} == {running, queued}
        finally:
            first.stop()

        # a restart resumes unfinished jobs, but a cancelled job is finished
        calls = len(upstream.recorder.calls)
        second = Service(tmp_path, upstream_args(upstream), keys=KEYS).start()
        try:
            time.sleep(1.0)
            assert job_status(second, running) == job_status(second, queued) == "cancelled"
            assert read_events(second, running)[-1]["type"] == "cancelled"
            assert len(upstream.recorder.calls) == calls
        finally:
            second.stop()


def test_a_failing_upstream_gives_openai_errors_and_failed_jobs(tmp_path):
    from servers.fault_server import FaultServer, drop_connection, status

    with FaultServer() as fault:
        svc = Service(
            tmp_path,
            ["--model", "openai/served-model", "--base-url", fault.url],
            keys=KEYS,
            extra=["--max-retries", "2", "--retry-wait", "0.05"],
        ).start()
        try:
            client = openai.OpenAI(base_url=svc.url + "/v1", api_key=KEYS[0], max_retries=0, timeout=60)
            grade = {"model": "proofcritic/grade", "extra_body": {"proofcritic": {"score_mode": "text"}}}

            fault.push(*[status(500, message="the GPU caught fire")] * 3)  # every attempt fails
            started = time.monotonic()
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(
                    messages=[{"role": "user", "content": f"{unique_problem('fault')}\n## Proof\nTrivial."}], **grade
                )
            assert time.monotonic() - started < 10
            assert info.value.status_code == 503
            error = info.value.body
            assert error["type"] == "upstream_error" and error["code"] == "upstream_unavailable"
            assert "the GPU caught fire" in error["message"] and "gave up after 3 attempts" in error["message"]
            assert len(fault.chat_requests) == 3  # the first attempt and two retries

            fault.push(*[drop_connection()] * 3)  # a job whose upstream hangs up every time
            job = httpx.post(
                f"{svc.url}/v1/grade",
                headers=auth(),
                json={"problem": unique_problem("fault-job"), "proof": "Trivial.", "score_mode": "text"},
            ).json()
            failed = wait_job(svc, job["id"])
            assert failed["status"] == "failed" and failed["result"] is None
            assert failed["error"]["kind"] == "backend"
            assert (
                "connection" in failed["error"]["message"] and "gave up after 3 attempts" in failed["error"]["message"]
            )
            events = read_events(svc, job["id"])
            assert events[-1]["type"] == "failed" and events[-1]["data"]["error"] == failed["error"]["message"]
            assert len(fault.chat_requests) == 6

            # the upstream recovers: the same service answers again (its "ok" carries no score)
            answer = client.chat.completions.create(
                messages=[{"role": "user", "content": f"{unique_problem('fault-ok')}\n## Proof\nTrivial."}], **grade
            )
            assert answer.choices[0].message.content.startswith("No score")
            assert len(fault.chat_requests) == 7

            stats = httpx.get(f"{svc.url}/v1/stats", headers=auth()).json()
            assert stats["jobs"]["failed"] == 1 and stats["jobs"]["total"] == 1
            (endpoint,) = stats["upstream"]["endpoints"]
            assert (endpoint["requests"], endpoint["failures"], endpoint["successes"]) == (7, 6, 1)
            usage = stats["upstream"]["usage"]  # every request the upstream saw, the failed ones too
            assert (usage["upstream_calls"], usage["failed_calls"]) == (7, 6)
        finally:
            svc.stop()


def test_stats_show_jobs_usage_and_both_upstream_endpoints_and_docs_can_be_protected(tmp_path):
    with ScriptedOpenAIServer(pass_at=1) as one, ScriptedOpenAIServer(pass_at=1) as two:
        svc = Service(
            tmp_path,
            ["--model", "openai/roles", "--base-url", one.url, "--base-url", two.url, "--api-key", "upstream-key"],
            keys=KEYS,
            extra=["--protect-docs"],
        ).start()
        try:
            for path in ("/docs", "/openapi.json", "/v1/stats"):
                assert httpx.get(svc.url + path).status_code == 401, path
            assert httpx.get(svc.url + "/docs", headers=auth()).status_code == 200
            paths = httpx.get(svc.url + "/openapi.json", headers=auth(KEYS[1])).json()["paths"]
            assert {"/v1/stats", "/v1/jobs/{job_id}/cancel"} <= set(paths) and "delete" in paths["/v1/jobs/{job_id}"]
            health = httpx.get(svc.url + "/health")  # for load balancers: no key, nothing about the jobs
            assert health.status_code == 200 and health.json()["status"] == "ok" and "jobs" not in health.json()
            assert httpx.head(svc.url + "/health").status_code == 200

            client = openai.OpenAI(base_url=svc.url + "/v1", api_key=KEYS[0], max_retries=0, timeout=60)
            for i in range(6):
                client.chat.completions.create(
                    model="proofcritic/grade",
                    messages=[
                        {"role": "user", "content": f"{unique_problem(f'stats {i}')}\n## Proof\nConsecutive integers."}
                    ],
                )
            job = httpx.post(
                f"{svc.url}/v1/grade", headers=auth(), json={"problem": unique_problem("stats job"), "proof": "P."}
            )
            assert wait_job(svc, job.json()["id"])["status"] == "done"

            stats = httpx.get(f"{svc.url}/v1/stats", headers=auth()).json()
        finally:
            svc.stop()
    assert stats["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0, "total": 1}
    upstream = stats["upstream"]
    assert upstream["model"] == "openai/roles"
    endpoints = upstream["endpoints"]
    assert [e["url"] for e in endpoints] == [one.url, two.url]
    for endpoint, server in zip(endpoints, (one, two)):
        # every call the service counted at an endpoint reached that server, and both were used
        assert endpoint["requests"] == endpoint["successes"] == len(server.recorder.arrived) >= 2
        assert endpoint["failures"] == 0 and endpoint["healthy"] is True
    usage = upstream["usage"]
    assert usage["upstream_calls"] == 7 == len(one.recorder.arrived) + len(two.recorder.arrived)
    assert usage["prompt_tokens"] + usage["completion_tokens"] == sum(e["tokens"] for e in endpoints) > 0
    assert usage["requests_running"] == 0


def test_requests_run_on_the_service_model_and_read_its_endpoint_stats():
    """Issue 15: no per-request backend wrapper; every request runs on the service's Model (its
    backend's endpoint stats, its likelihood refusal), metered by its own usage scope."""
    from proofcritic.cli._common import endpoint_lines
    from proofcritic.llm import Model
    from proofcritic.llm._openai import OpenAIBackend
    from proofcritic.server._service import GradingService as Engine

    backend = OpenAIBackend("m", base_url=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"])
    engine = Engine(Model(backend))
    assert backend.endpoint_stats() == engine.endpoint_stats()
    assert [s["url"] for s in engine.endpoint_stats()] == ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]
    assert len(endpoint_lines(engine.model)) == 2
    usage = engine.start_request()
    assert engine.usage_totals()["requests_running"] == 1
    engine.model._count(5, 2, False, False)  # one upstream request, as the Model counts it
    engine.settle(usage)
    engine.model._count(1, 1, False, False)  # after the request: the service's, not the request's
    assert (usage.calls, usage.total_tokens) == (1, 7)
    assert engine.usage_totals()["upstream_calls"] == 2 and engine.usage_totals()["requests_running"] == 0


def test_protect_docs_needs_a_key(monkeypatch):
    from typer.testing import CliRunner

    from proofcritic.cli import app
    from proofcritic.llm import Model
    from proofcritic.llm._openai import OpenAIBackend
    from proofcritic.server import ServerSettings

    monkeypatch.delenv("PROOFCRITIC_API_KEYS", raising=False)
    monkeypatch.delenv("PROOFCRITIC_SERVICE_KEYS", raising=False)
    result = CliRunner().invoke(
        app, ["serve", "--protect-docs", "--model", "openai/m", "--base-url", "http://127.0.0.1:9/v1"]
    )
    assert result.exit_code == 2 and "--protect-docs" in result.output and "service key" in result.output
    with pytest.raises(ValueError, match="protect_docs needs API keys"):
        ServerSettings(model=Model(OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")), protect_docs=True)


# -- load ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_200_concurrent_requests_complete_with_none_lost(service, upstream):
    tag = uuid.uuid4().hex[:8]

    def proof(i: int) -> str:
        return f"Proof number {i} [{tag}]: the product of three consecutive integers" + (f" {FLAW}" if i % 2 else "")

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=service.url, headers=auth(), limits=limits, timeout=120) as http:

        async def facade(i: int) -> dict:
            response = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "proofcritic/grade",
                    "messages": [{"role": "user", "content": f"Problem {i}: show 6 | n^3 - n.\n## Proof\n{proof(i)}"}],
                },
            )
            assert response.status_code == 200, response.text
            return response.json()

        async def job(i: int) -> dict:
            response = await http.post(
                "/v1/grade", json={"problem": f"Problem {i}: show 6 | n^3 - n.", "proof": proof(1000 + i)}
            )
            assert response.status_code == 202, response.text
            return response.json()

        answers = await asyncio.gather(*(facade(i) for i in range(100)), *(job(i) for i in range(100)))
        chats, jobs = answers[:100], answers[100:]
        for i, chat in enumerate(chats):
            assert chat["proofcritic"]["scores"] == [0.0 if i % 2 else 1.0]
        assert len({j["id"] for j in jobs}) == 100

        async def finished(job_id: str) -> dict:
            while True:
                record = (await http.get(f"/v1/jobs/{job_id}")).json()
                if record["status"] in ("done", "failed"):
                    return record
                await asyncio.sleep(0.2)

        results = await asyncio.wait_for(asyncio.gather(*(finished(j["id"]) for j in jobs)), 120)
    for i, record in enumerate(results):
        assert record["status"] == "done", record
        assert record["request"]["proof"] == proof(1000 + i)
        assert record["result"]["aggregate"]["mean"] == (0.0 if (1000 + i) % 2 else 1.0)
    # each of the 200 distinct proofs reached the upstream exactly once
    assert sum(1 for c in upstream.recorder.calls if tag in c.prompt) == 200


# -- a real model upstream ----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_upstream_through_the_facade(smollm2_dir, tmp_path):
    """One real verification by SmolLM2 (about 700 prompt tokens, 16 new ones) through the facade."""
    svc = Service(
        tmp_path, ["--model", f"transformers/{smollm2_dir}", "--max-tokens", "16", "--temperature", "0"]
    ).start()
    try:
        client = openai.OpenAI(base_url=svc.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        answer = client.chat.completions.create(
            model="proofcritic/grade",
            messages=[
                {
                    "role": "user",
                    "content": "Prove that the sum of two even integers is even.\n## Proof\n"
                    "Write them as 2a and 2b; their sum 2(a + b) is even.",
                }
            ],
            extra_body={"proofcritic": {"score_mode": "text"}},
        )
    finally:
        svc.stop()
    evidence = answer.model_extra["proofcritic"]
    assert evidence["pipeline"] == "grade" and evidence["usage"]["upstream_calls"] == 1
    assert len(evidence["verifications"]) == 1 and evidence["aggregate"]["n"] == 1
    # real tokens from the real model: a long prompt, at most 16 new tokens
    assert 0 < answer.usage.completion_tokens <= 16
    assert answer.usage.prompt_tokens > 200
    assert answer.choices[0].message.content.startswith(("Score:", "No score:"))


def test_grade_requests_on_the_points_scale(service):
    """`scale: points` grades with the points protocol (the scripted upstream answers in the
    ternary one, so each verification fails for want of the points marker: the points
    verifier parsed it); a scheme without the points scale is refused before any model call."""
    problem = unique_problem("points")
    response = httpx.post(
        f"{service.url}/v1/grade",
        headers=auth(),
        json={
            "problem": problem,
            "proof": "It is a product of 3 consecutive integers.",
            "scale": "points",
            "scheme": "Seven points for a proof.",
        },
    )
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["id"])
    assert done["status"] == "done"
    [verification] = done["result"]["verifications"]
    assert verification["score"] is None and "missing points marker" in verification["format_error"]
    refused = httpx.post(
        f"{service.url}/v1/grade", headers=auth(), json={"problem": problem, "proof": "x", "scheme": "Seven points."}
    )
    assert refused.status_code in (400, 422) and "needs scale points" in refused.text


def test_solve_requests_on_the_points_scale(service):
    """`scale: points` on /v1/solve: the strategy's verifications use the points protocol (the
    scripted upstream answers in the ternary one, so the verification fails for want of the
    points marker: the points verifier parsed it) and the result is on the problem's scale;
    another score mode than text, and a scheme without the points scale, are refused before any
    model call."""
    problem = unique_problem("solve-points")
    response = httpx.post(
        f"{service.url}/v1/solve",
        headers=auth(),
        json={"problem": problem, "strategy": "single", "scale": "points", "scheme": "Seven points for a proof."},
    )
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["id"])
    assert done["status"] == "done", done
    result = done["result"]
    assert result["max_points"] == 7 and "points" not in result  # no verdict: no points
    [verification] = result["verifications"]
    assert verification["score"] is None and "missing points marker" in verification["format_error"]
    for extra, why in (
        ({"strategy": "single", "scale": "points", "score_mode": "auto"}, "score_mode text"),
        ({"strategy": "single", "scheme": "Seven points."}, "needs scale points"),
    ):
        refused = httpx.post(f"{service.url}/v1/solve", headers=auth(), json={"problem": problem, **extra})
        assert refused.status_code in (400, 422) and why in refused.text, refused.text


# -- judge panels ---------------------------------------------------------------------------------


def _panel_judge(first: tuple[int, float], again: tuple[int, float], name: str):
    """A scripted judge behind its own server: (points, ternary score) when it grades, and when
    it reconciles; it answers each prompt in its protocol (points or ternary)."""
    from scripted import ScriptedBackend, points_output, verification_text

    def script(call):
        points, score = again if call.role == "reconcile" else first
        if "final number of points" in call.prompt:
            return points_output(points, f"Judge {name} read it.")
        return verification_text(score, analysis=f"Judge {name} read it.")

    return ScriptedBackend(script)


def test_grade_jobs_with_the_services_judge_panel(service, tmp_path):
    """`serve --judge A --judge B`: a grade job with "panel": true is graded by both judges (each
    behind its own server, which the request never names), they disagree, reconcile once, and
    the minimum decides, on the request's scale; the result is the panel's record and the
    job's usage counts every judge's call. Without a panel (the module's service) or with
    settings a panel does not take, the request is a 400 that says why."""
    from servers.tiny_openai_server import TinyOpenAIServer

    request = {"problem": unique_problem("panel"), "proof": "A product of 3 consecutive integers.", "panel": True}
    refused = httpx.post(f"{service.url}/v1/grade", headers=auth(), json=request)
    assert refused.status_code == 400 and "this service has no judge panel" in refused.json()["error"]["message"]

    generous = _panel_judge((7, 1.0), (5, 0.5), "generous")
    strict = _panel_judge((1, 0.0), (3, 0.5), "strict")
    with TinyOpenAIServer(generous, "roles") as one, TinyOpenAIServer(strict, "roles") as two:
        judges = [
            "--judge",
            f"openai/roles,base_url={one.url},name=generous",
            "--judge",
            f"openai/roles,base_url={two.url},name=strict",
        ]
        svc = Service(tmp_path, ["--model", "openai/roles", "--base-url", one.url, "--api-key", "k"], extra=judges)
        svc.start()
        try:
            points = httpx.post(f"{svc.url}/v1/grade", json={**request, "scale": "points"})
            ternary = httpx.post(f"{svc.url}/v1/grade", json={**request, "problem": unique_problem("panel 2")})
            assert points.status_code == ternary.status_code == 202, points.text + ternary.text
            graded, graded_ternary = wait_job(svc, points.json()["id"]), wait_job(svc, ternary.json()["id"])
            bad = httpx.post(f"{svc.url}/v1/grade", json={**request, "n": 4})
            stats = httpx.get(f"{svc.url}/v1/stats").json()
        finally:
            svc.stop()
        start_line = svc.log.read_text()
    assert graded["status"] == "done", graded
    result = graded["result"]
    assert (result["rule"], result["spread"], result["reconciled"], result["points"]) == ("min", 6, True, 3)
    assert [(j["judge"], j["points"], j["final_points"]) for j in result["judges"]] == [
        ("generous", 7, 5),
        ("strict", 1, 3),
    ]
    assert result["judges"][0]["reconciled"]["points"] == 5 and result["final_spread"] == 2
    # usage as for every job: the request's own upstream calls, here 2 grades and 2 reconciliations
    assert graded["usage"]["upstream_calls"] == 4 and graded["usage"]["total_tokens"] > 0
    # the ternary request: 1 and 0 (7 points apart, more than half the scale), then 0.5 each
    ternary_result = graded_ternary["result"]
    assert [j["final_points"] for j in ternary_result["judges"]] == [3.5, 3.5] and ternary_result["points"] == 3.5
    assert ternary_result["spread"] == 7 and ternary_result["reconciled"]
    assert bad.status_code == 400 and "leave n, score_mode, normalize and scheme unset" in bad.text
    panel = stats["panel"]
    assert [(j["name"], j["model"], j["n"]) for j in panel["judges"]] == [
        ("generous", "openai/roles", 1),
        ("strict", "openai/roles", 1),
    ]
    assert panel["rule"] == "min" and all(j["usage"]["upstream_calls"] == 4 for j in panel["judges"])
    assert len(strict.calls) == 4 and sum(1 for c in strict.calls if c.role == "reconcile") == 2
    assert 'judge panel of 2 (generous, strict; rule min) for grade requests with "panel": true' in start_line


def test_adaptive_label_request(service, upstream):
    """``adaptive`` in a label request (LabelConfig's field): the flawed proof scores 0 every time
    and every vote confirms, so 2 verifications and 2 + 2 votes settle label 0 with k=2 (the fixed
    rule: 8 verifications and 8 x 3 votes); the record says what was drawn and why it stopped."""
    problem = unique_problem("adaptive")
    flawed = f"It is divisible by 6 {FLAW}."
    body = {"problem": problem, "proof": flawed, "n": 8, "m": 3, "k": 2, "adaptive": True, "batch": 2}
    response = httpx.post(f"{service.url}/v1/label", headers=auth(), json=body)
    result = wait_job(service, response.json()["id"])["result"]
    assert (result["status"], result["label"], result["rule"]) == ("labeled", 0.0, "confirmed_lowest")
    sampling = result["sampling"]
    assert (sampling["drawn"], sampling["requests"], sampling["meta_drawn"]) == (2, 1, 4)
    assert "after 2 of 8 verifications" in sampling["stopped"]
    assert result["config"]["adaptive"] is True
