"""The OpenAI-compatible facade: ``POST /v1/chat/completions`` and ``GET /v1/models``.

``model`` names a pipeline run on the service's upstream model:

- ``proofcritic/<strategy>`` (every registered strategy: ``single``, ``refine``, ``search``,
  ``agent``, ...): the last user
  message is the problem; the answer's content is the chosen proof.
- ``proofcritic/grade``: the last user message holds the problem, then a line ``## Proof``,
  then the proof (or the whole message is the problem and ``proofcritic.proof`` holds the
  proof); the answer's content is the grading report.

Options go in the extra body field ``proofcritic`` (with the ``openai`` client:
``extra_body={"proofcritic": {...}}``): ``max_calls``, ``max_tokens`` (this request's budget),
``reference_solution``, ``grading_guidelines``, ``max_points``, ``score_mode``,
``transcript`` (true: include the strategy's full transcript); for ``grade`` also ``proof`` and
``n`` (verifications); for a strategy every other key is a strategy parameter (``max_iters``,
``verify_n``, ``rounds``, ...). ``temperature``, ``top_p``, ``max_tokens`` (per sample) and
``seed`` of the request apply to the upstream calls.

The answer is a standard ``chat.completion`` plus a ``proofcritic`` field with the evidence
(scores, issues, rounds, stop reason). ``usage`` counts the upstream tokens this request
actually spent; calls answered by the completion cache cost nothing and are counted apart in
``proofcritic.usage.cached_calls``. ``finish_reason`` is ``length`` when a budget stopped the
pipeline. ``n`` must be 1.

``stream: true`` is served as OpenAI streams are (``chat.completion.chunk`` events, then
``[DONE]``), but the proof exists only once the pipeline has finished, so it comes as one
content chunk at the end; until then the stream carries SSE comments (``: round 2``,
``: working``) that keep the connection alive and that clients skip. The last chunk holds
``finish_reason`` and the ``proofcritic`` evidence; with ``stream_options.include_usage`` a
final chunk with empty ``choices`` holds ``usage``. A failure after the stream has started
arrives as an ``{"error": ...}`` event (the ``openai`` client raises it as an APIError).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import (
    AuthenticationError,
    BackendError,
    CircuitOpenError,
    ContextLengthError,
    InputError,
    ModelNotFoundError,
    first_error,
    validation_line,
)
from ..llm import SamplingOptions
from ..pipelines import SolveResult
from ..pipelines.solve import STRATEGIES
from ..types import GradeResult, Verification
from ..verifier import counts_note, shown_score
from ._errors import ServiceError, error_body, input_error
from ._service import (
    GradeRequest,
    GradingService,
    SolveRequest,
    answers_usage,
    check_request,
    usage_json,
)

PREFIX = "proofcritic/"
_DESCRIPTIONS: dict[str, str] = {
    "grade": "grade a proof: n verifications and their aggregate",
    "single": "generate with self-evaluation, keep the best self-score, verify it",
    "refine": "self-refinement until the proof rates itself 1, then verify it",
    "search": "DeepSeekMath-V2's high-compute search (pool, verifications, refinement rounds)",
    "agent": "the generate-verify-repair loop (solve, verify, judge, repair)",
}


def pipelines() -> dict[str, str]:
    """``grade`` and every registered strategy, with a line about each."""
    return {"grade": _DESCRIPTIONS["grade"]} | {
        name: _DESCRIPTIONS.get(name, f"the {name} solving strategy") for name in STRATEGIES
    }


#: a line that separates the problem from the proof in a ``proofcritic/grade`` message
PROOF_MARKER = re.compile(r"^[ \t]*##[ \t]*Proof[ \t]*:?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_COMMON_OPTIONS = (
    "max_calls",
    "max_tokens",
    "reference_solution",
    "grading_guidelines",
    "max_points",
    "score_mode",
    "transcript",
)

router = APIRouter(tags=["OpenAI-compatible"])


class ChatBody(BaseModel):
    """The fields of an OpenAI chat request the facade reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., examples=["proofcritic/refine"])
    messages: list[dict[str, Any]] = Field(..., min_length=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    n: int | None = 1
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    proofcritic: dict[str, Any] | None = Field(None, description="proofcritic options (see the module docs).")


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text")]
        return "\n".join(parts)
    raise ServiceError(400, "message content must be a string or a list of text parts", param="messages")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _text(message.get("content"))
            if text.strip():
                return text
            break
    raise ServiceError(400, "the request needs a non-empty user message (the problem)", param="messages")


def pipeline_of(model: str) -> str:
    name = model[len(PREFIX) :] if model.startswith(PREFIX) else None
    offered = pipelines()
    if name not in offered:
        known = ", ".join(PREFIX + p for p in offered)
        raise ServiceError(
            404,
            f"The model `{model}` does not exist; this service offers {known}.",
            kind="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    return name


def split_problem_and_proof(text: str) -> tuple[str, str]:
    """``problem ... ## Proof ... proof`` -> (problem, proof), split at the first marker line."""
    match = PROOF_MARKER.search(text)
    if match is None:
        raise InputError(
            "proofcritic/grade needs the proof: put it after a line '## Proof' in the message, "
            "or in the option proofcritic.proof"
        )
    problem, proof = text[: match.start()].strip(), text[match.end() :].strip()
    problem = re.sub(r"^[ \t]*##[ \t]*Problem[ \t]*:?[ \t]*\n", "", problem, flags=re.IGNORECASE)
    return problem, proof


def _sampling(body: ChatBody) -> SamplingOptions:
    try:
        return SamplingOptions(
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            seed=body.seed,
        )
    except ValidationError as error:
        raise ServiceError(400, validation_line(error), param=first_error(error)[0]) from None


def build_request(body: ChatBody, max_input_chars: int | None = None) -> tuple[str, GradeRequest | SolveRequest, bool]:
    """The job-style request the chat request stands for, and whether to include the transcript
    (its texts held to ``max_input_chars``, as :func:`check_request`)."""
    pipeline = pipeline_of(body.model)
    if body.n not in (None, 1):
        raise ServiceError(
            400,
            "n must be 1 (for several verifications of a proof use proofcritic.n with proofcritic/grade)",
            param="n",
        )
    options = dict(body.proofcritic or {})
    text = _last_user_text(body.messages)
    common = {k: options.pop(k) for k in _COMMON_OPTIONS if k in options}
    transcript = bool(common.pop("transcript", False))
    fields: dict[str, Any] = {"sampling": _sampling(body), **common}
    try:
        if pipeline == "grade":
            proof = options.pop("proof", None)
            n = options.pop("n", 1)
            if options:
                raise InputError(f"proofcritic/grade has no option {min(options)!r}")
            problem, proof = (text, proof) if proof is not None else split_problem_and_proof(text)
            request: GradeRequest | SolveRequest = GradeRequest(problem=problem, proof=proof, n=n, **fields)
        else:
            request = SolveRequest(problem=text, strategy=pipeline, params=options, **fields)
        check_request(request, max_input_chars)
    except ValidationError as error:
        raise ServiceError(400, f"proofcritic.{validation_line(error)}", param="proofcritic") from None
    except InputError as error:
        raise input_error(error, param="proofcritic") from None
    return pipeline, request, transcript


def _verification_json(v: Verification) -> dict[str, Any]:
    return {
        "score": v.score,
        "score_source": v.score_source,
        "format_ok": v.format_ok,
        "analysis": v.analysis,
        "issues": [i.model_dump(mode="json") for i in v.issues],
    }


def _issues(verifications: list[Verification]) -> list[dict[str, Any]]:
    return [
        {"verification": index, **i.model_dump(mode="json")} for index, v in enumerate(verifications) for i in v.issues
    ]


def _verified(verifications: list[Verification]) -> bool:
    return bool(verifications) and all(v.score == 1 for v in verifications)


def solve_evidence(pipeline: str, result: SolveResult, transcript: bool) -> dict[str, Any]:
    g = result.generation
    out: dict[str, Any] = {
        "pipeline": pipeline,
        "verified": result.proof is not None and _verified(result.verifications),
        "mean_score": result.mean_score,
        "scores": [v.score for v in result.verifications],
        "issues": _issues(result.verifications),
        "self_score": g.self_score if g is not None else None,
        "self_analysis": g.self_analysis if g is not None else None,
        "rounds": result.rounds,
        "steps": len(result.transcript),
        "stop_reason": result.stop_reason,
        "budget_limited": result.budget_limited,
        "verifications": [_verification_json(v) for v in result.verifications],
    }
    if transcript:
        out["transcript"] = result.transcript
    return out


def grade_evidence(result: GradeResult) -> dict[str, Any]:
    return {
        "pipeline": "grade",
        "verified": _verified(result.verifications),
        "mean_score": result.aggregate.mean,
        "scores": [v.score for v in result.verifications],
        "aggregate": result.aggregate.model_dump(mode="json"),
        "issues": _issues(result.verifications),
        "verifications": [_verification_json(v) for v in result.verifications],
    }


def grade_report(result: GradeResult) -> str:
    """The grading as the message content: the aggregate, then each verification."""
    a = result.aggregate
    if a.valid:
        head = (
            f"Score: {a.mean:.3g} (mean of {a.valid}/{a.n} scored verifications; min {a.min:g}, "
            f"majority {a.majority:g}) = {a.points:.3g}/{a.max_points:g} points ({counts_note(a)})"
        )
    else:
        head = f"No score: none of the {a.n} verifications produced one, so the proof has no verdict."
    parts = [head]
    for index, v in enumerate(result.verifications, start=1):
        score = "no score" if v.score is None else f"score {shown_score(v)}"
        parts.append(
            f"## Verification {index}: {score}\n\n" + (v.analysis.strip() or v.format_error or "(no analysis)")
        )
    return "\n\n".join(parts)


def completion_body(
    model: str, content: str, finish_reason: str, usage: dict[str, Any], evidence: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
        "proofcritic": {**evidence, "usage": usage},
    }


async def execute(
    service: GradingService,
    pipeline: str,
    request: GradeRequest | SolveRequest,
    transcript: bool,
    on_round: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """Run the pipeline: (content, finish reason, usage, evidence); failures as ServiceError."""
    usage = service.start_request()
    try:
        if isinstance(request, GradeRequest):
            graded = await service.grade(request)
            return grade_report(graded), "stop", usage_json(usage, answers_usage(graded)), grade_evidence(graded)
        solved = await service.solve(request, on_round=on_round)
        finish = "length" if solved.budget_limited else "stop"
        return solved.proof or "", finish, usage_json(usage, solved.usage), solve_evidence(pipeline, solved, transcript)
    except InputError as error:
        raise ServiceError(400, str(error), param="proofcritic") from None
    except AuthenticationError as error:
        raise ServiceError(
            502, f"the upstream model refused the service's key: {error}", kind="upstream_error"
        ) from None
    except ModelNotFoundError as error:
        raise ServiceError(502, f"the upstream model is not served: {error}", kind="upstream_error") from None
    except ContextLengthError as error:  # the request is too long for the model: the client's to fix, as with OpenAI
        raise ServiceError(400, str(error), param="messages", code="context_length_exceeded") from None
    except BackendError as error:
        # retryable (5xx, 429, dropped connections, timeouts, every endpoint down) after the
        # retries, or the circuit breaker open: the upstream is unavailable (503); anything else
        # is a bad answer (502)
        unavailable = error.retryable or isinstance(error, CircuitOpenError)
        raise ServiceError(
            503 if unavailable else 502,
            f"the upstream model failed: {upstream_message(error)}",
            kind="upstream_error",
            code="upstream_unavailable" if unavailable else "upstream_error",
        ) from None
    finally:
        service.settle(usage)


def upstream_message(error: BaseException) -> str:
    """The error's text with its notes (such as how many attempts were made), on one line."""
    return " ".join([str(error), *getattr(error, "__notes__", ())])


def _chunk(
    ident: str, created: int, model: str, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any
) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def stream_chat(
    service: GradingService,
    body: ChatBody,
    pipeline: str,
    request: GradeRequest | SolveRequest,
    transcript: bool,
    keep_alive: float = 5.0,
) -> StreamingResponse:
    """The answer as an OpenAI stream (see the module docstring)."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    notes: asyncio.Queue[str] = asyncio.Queue()
    rounds: list[int] = []

    def on_round(_problem_id: str, round_: int, _state: dict[str, Any]) -> None:
        if not rounds or rounds[-1] != round_:  # one note per round started
            rounds.append(round_)
            notes.put_nowait(f"round {round_}")

    async def events() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(execute(service, pipeline, request, transcript, on_round=on_round))
        try:
            yield _chunk(ident, created, body.model, {"role": "assistant", "content": ""})
            quiet_since = time.monotonic()
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)  # progress notes go out within half a second
                while not notes.empty():
                    yield f": {notes.get_nowait()}\n\n".encode()
                    quiet_since = time.monotonic()
                if not task.done() and time.monotonic() - quiet_since >= keep_alive:
                    yield b": working\n\n"
                    quiet_since = time.monotonic()
            try:
                content, finish, usage, evidence = task.result()
            except ServiceError as error:
                yield (
                    b"data: "
                    + json.dumps(error_body(error.message, error.kind, error.param, error.code)).encode()
                    + b"\n\n"
                )
                return
            if content:
                yield _chunk(ident, created, body.model, {"content": content})
            yield _chunk(ident, created, body.model, {}, finish, proofcritic={**evidence, "usage": usage})
            if include_usage:
                tokens = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                yield _chunk(ident, created, body.model, None, usage=tokens)
            yield b"data: [DONE]\n\n"
        finally:
            if not task.done():  # the client went away: stop spending on its answer
                task.cancel()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def run_chat(service: GradingService, body: ChatBody) -> dict[str, Any]:
    """Run the pipeline a chat request names; the chat.completion answer."""
    pipeline, request, transcript = build_request(body, service.max_input_chars)
    content, finish, usage, evidence = await execute(service, pipeline, request, transcript)
    return completion_body(body.model, content, finish, usage, evidence)


@router.get("/v1/models", summary="The pipelines this service offers, as OpenAI models")
async def list_models(request: Request) -> dict[str, Any]:
    service: GradingService = request.app.state.service
    created = int(request.app.state.started)
    return {
        "object": "list",
        "data": [
            {
                "id": PREFIX + name,
                "object": "model",
                "created": created,
                "owned_by": "proofcritic",
                "description": description,
                "upstream": service.model.name,
            }
            for name, description in pipelines().items()
        ],
    }


@router.post("/v1/chat/completions", summary="Run a pipeline as an OpenAI chat completion")
async def chat_completions(body: ChatBody, request: Request) -> Any:
    service: GradingService = request.app.state.service
    if body.stream:
        pipeline, job, transcript = build_request(body, service.max_input_chars)
        return stream_chat(service, body, pipeline, job, transcript)
    return await run_chat(service, body)
