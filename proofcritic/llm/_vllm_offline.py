"""In-process vLLM (``vllm.LLM``): offline batch generation on a GPU node, without a server.

Spec: ``vllm-offline/MODEL`` (a folder, a hub id, or ``smollm2``). Keyword options go to
``vllm.LLM`` unchanged (``tensor_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``,
``dtype``, ...). ``dtype`` (the CLI's ``--dtype``) keeps vLLM's meaning: ``auto`` is vLLM's
choice from the checkpoint (float16 for a float32 or float16 one); a given type is part of the
cache identity.

Roles call :meth:`generate` from many asyncio tasks at once. Each call only queues its request;
one worker thread takes everything queued and hands it to vLLM in as few ``LLM.chat`` calls as
the API allows (one for new answers and one for continued assistant turns, each with a
``SamplingParams`` per request), so vLLM's own scheduler batches the whole queue. The event loop
never blocks on the engine. vLLM is imported and the engine built on first use, in the worker.

Supported per request: ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``,
token ``logprobs`` (with ``top_logprobs`` alternatives), guided ``choices`` (vLLM structured
outputs), continuing a final assistant turn, and the likelihood read-out
(:meth:`sequence_logprobs`, from ``prompt_logprobs``).

Context: every request is checked against the engine's ``max_model_len`` before it reaches the
engine, by the rule of the transformers backend (:func:`~proofcritic.llm._base.check_context`:
the prompt plus a set ``max_tokens``; a scored conversation as a whole), so a request that does
not fit fails alone with :class:`~proofcritic.errors.ContextLengthError` instead of the engine
refusing the whole batch it came in.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    BackendError,
    ContextLengthError,
    MissingDependencyError,
    ProofcriticError,
)
from ._base import CONTEXT_MESSAGE, Backend, check_context
from ._local_batching import JobQueue, deliver
from ._types import (
    ChatMessage,
    ChatRequest,
    Completion,
    TokenLogprob,
    split_assistant_prefix,
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError("vllm", "vllm") from exc
    return vllm


@dataclass
class _Job:
    """Queued work: generation (``request``) or scoring (``conversations``)."""

    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    request: ChatRequest | None = None
    conversations: list[list[dict[str, str]]] = field(default_factory=list)

    @property
    def chat(self) -> ChatRequest:
        """The request of a generation job (a scoring job has none)."""
        assert self.request is not None, "a scoring job has no chat request"
        return self.request


@dataclass
class OfflineStats:
    """How the queue was batched (for tests and tuning)."""

    requests: int = 0  #: generation requests served
    chat_calls: int = 0  #: ``LLM.chat`` invocations
    scoring_calls: int = 0  #: ``LLM.chat`` invocations for the likelihood read-out
    max_batch: int = 0  #: most requests in one ``LLM.chat`` call


class VLLMOfflineBackend(Backend):
    """``vllm.LLM`` in this process; all queued requests go to the engine together."""

    name = "vllm-offline"
    #: the engine schedules by itself, so let every queued request reach it
    default_concurrency = 4096

    def __init__(self, model: str, *, batch_wait_s: float = 0.01, use_tqdm: bool = False, **llm_options: Any):
        self.model = model
        self.batch_wait_s = float(batch_wait_s)
        self.use_tqdm = use_tqdm
        self.llm_options = dict(llm_options)
        self.stats = OfflineStats()
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._queue = JobQueue(self._run, wait_s=self.batch_wait_s, thread_name="proofcritic-vllm")

    def cache_identity(self) -> str:
        # vLLM's own ``dtype`` ("auto" when not given: its choice from the checkpoint) is part of
        # the identity, so a completion made in one type is not served for a request in another
        dtype = self.llm_options.get("dtype")
        dtype = str(dtype).removeprefix("torch.") if dtype is not None else "auto"
        return f"vllm-offline/{self.model}" + ("" if dtype == "auto" else f"@{dtype}")

    #: guided choice by vLLM's structured outputs; the read-out from its prompt logprobs
    supports_guided_choice = True
    supports_likelihood = True

    def describe(self) -> str:
        """How the engine runs, for the run summary."""
        return f"dtype {self.llm_options.get('dtype') or 'auto'} (vLLM's)"

    # -- engine ---------------------------------------------------------------------------------
    def _model_path(self) -> str:
        from ._smollm2 import is_smollm2_alias, smollm2_path

        if is_smollm2_alias(self.model) and not Path(self.model).exists():
            return str(smollm2_path())
        return self.model

    def load(self) -> Any:
        """Build the engine now (otherwise the first request does); returns the ``vllm.LLM``."""
        with self._load_lock:
            if self._llm is None:
                vllm = _import_vllm()
                options = {"seed": 0, **self.llm_options}
                try:
                    self._llm = vllm.LLM(model=self._model_path(), **options)
                except ProofcriticError:
                    raise
                except Exception as exc:
                    raise BackendError(f"vLLM could not load {self.model!r}: {type(exc).__name__}: {exc}") from exc
            return self._llm

    # -- queueing -------------------------------------------------------------------------------
    async def generate(self, request: ChatRequest) -> list[Completion]:
        return await self._submit([_Job(*self._future(), request=request)])[0]

    async def generate_batch(self, requests: Sequence[ChatRequest]) -> list[list[Completion]]:
        """Queue all requests at once, so they reach the engine in the same call."""
        jobs = [_Job(*self._future(), request=r) for r in requests]
        return list(await asyncio.gather(*self._submit(jobs)))

    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Total log-likelihood of each conversation + continuation, from vLLM's prompt logprobs."""
        head, prefix = split_assistant_prefix(list(messages))
        base = [{"role": m.role, "content": m.content} for m in head]
        conversations = [[*base, {"role": "assistant", "content": prefix + c}] for c in continuations]
        if not conversations:
            return []
        return await self._submit([_Job(*self._future(), conversations=conversations)])[0]

    @staticmethod
    def _future() -> tuple[asyncio.Future, asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        return loop.create_future(), loop

    def _submit(self, jobs: list[_Job]) -> list[asyncio.Future]:
        self._queue.submit(jobs)
        return [j.future for j in jobs]

    def _run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        try:
            llm = self.load()
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiting caller
            for job in jobs:
                deliver(job, exc=exc)
            return
        generation = [j for j in jobs if j.request is not None]
        scoring = [j for j in jobs if j.request is None]
        # a final assistant turn is continued; the chat API takes that flag per call
        for continued in (False, True):
            group = [j for j in generation if _continues(j.chat) is continued]
            if group:
                self._run_generation(llm, group, continued)
        if scoring:
            self._run_scoring(llm, scoring)

    def _fitting(self, llm: Any, jobs: list[_Job], check: Any) -> list[_Job]:
        """The jobs for which ``check(context, job)`` passes; the others fail alone (a job
        whose tokens cannot be counted here goes on: the engine checks it too)."""
        context = _max_model_len(llm)
        if context is None:
            return jobs
        kept = []
        for job in jobs:
            try:
                check(context, job)
            except ContextLengthError as exc:
                deliver(job, exc=exc)
                continue
            except Exception:  # noqa: BLE001, S110 - e.g. a tokenizer without a chat template
                pass
            kept.append(job)
        return kept

    def _prompt_tokens(self, llm: Any, conversation: list[dict[str, str]], continued: bool) -> int:
        """Tokens of a conversation as the chat call renders it (template, then no special tokens)."""
        tokenizer = llm.get_tokenizer()
        text = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=not continued, continue_final_message=continued
        )
        return len(tokenizer.encode(text, add_special_tokens=False))

    def _run_generation(self, llm: Any, jobs: list[_Job], continued: bool) -> None:
        def fits(context: int, job: _Job) -> None:
            tokens = self._prompt_tokens(llm, _dicts(job.chat.messages), continued)
            check_context(self.model, context, tokens, job.chat.config.max_tokens or 1)

        jobs = self._fitting(llm, jobs, fits)
        if not jobs:
            return
        try:
            params = [self._sampling_params(j.chat) for j in jobs]
            outputs = self._chat(
                llm,
                [_dicts(j.chat.messages) for j in jobs],
                params,
                continue_final_message=continued,
                add_generation_prompt=not continued,
            )
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiting caller
            for job in jobs:
                deliver(job, exc=exc)
            return
        self.stats.requests += len(jobs)
        self.stats.chat_calls += 1
        self.stats.max_batch = max(self.stats.max_batch, len(jobs))
        for job, output in zip(jobs, outputs):
            try:
                deliver(job, result=self._completions(job.chat, output))
            except BaseException as exc:  # noqa: BLE001
                deliver(job, exc=exc)

    def _run_scoring(self, llm: Any, jobs: list[_Job]) -> None:
        def fits(context: int, job: _Job) -> None:
            longest = max(self._prompt_tokens(llm, c, True) for c in job.conversations)
            check_context(self.model, context, longest)

        jobs = self._fitting(llm, jobs, fits)
        if not jobs:
            return
        vllm = _import_vllm()
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        flat = [c for j in jobs for c in j.conversations]
        try:
            outputs = self._chat(llm, flat, params, continue_final_message=True, add_generation_prompt=False)
        except BaseException as exc:  # noqa: BLE001
            for job in jobs:
                deliver(job, exc=exc)
            return
        self.stats.scoring_calls += 1
        at = 0
        for job in jobs:
            mine = outputs[at : at + len(job.conversations)]
            at += len(job.conversations)
            try:
                deliver(job, result=[_prompt_total(o) for o in mine])
            except BaseException as exc:  # noqa: BLE001
                deliver(job, exc=exc)

    def _chat(self, llm: Any, conversations: list, params: Any, **flags: Any) -> list[Any]:
        try:
            return list(llm.chat(conversations, params, use_tqdm=self.use_tqdm, **flags))
        except ProofcriticError:
            raise
        except (ValueError, TypeError) as exc:  # bad input: a prompt longer than the model takes, ...
            if CONTEXT_MESSAGE.search(str(exc)):  # past the check above
                raise ContextLengthError(f"vLLM rejected the request: {exc}") from exc
            raise BackendError(f"vLLM rejected the request: {exc}") from exc
        except Exception as exc:
            raise BackendError(f"vLLM failed: {type(exc).__name__}: {exc}") from exc

    def _sampling_params(self, request: ChatRequest) -> Any:
        vllm = _import_vllm()
        c = request.config
        # vLLM refuses n > 1 when greedy; the n greedy samples are identical, so one is made and copied
        options: dict[str, Any] = {"n": 1 if c.temperature == 0 else c.n, "max_tokens": c.max_tokens}
        if c.temperature is not None:
            options["temperature"] = c.temperature
        if c.top_p is not None:
            options["top_p"] = c.top_p
        if c.stop:
            options["stop"] = list(c.stop)
        if c.seed is not None:
            options["seed"] = c.seed
        if c.logprobs or c.top_logprobs:
            options["logprobs"] = c.top_logprobs or 0
        if c.choices:
            from vllm.sampling_params import StructuredOutputsParams

            options["structured_outputs"] = StructuredOutputsParams(choice=list(c.choices))
        return vllm.SamplingParams(**options)

    @staticmethod
    def _completions(request: ChatRequest, output: Any) -> list[Completion]:
        prompt_tokens = len(output.prompt_token_ids or [])
        want_top = bool(request.config.top_logprobs)
        completions = []
        for sample in output.outputs:
            token_ids = list(sample.token_ids or [])
            logprobs = None
            if sample.logprobs is not None:
                logprobs = []
                for token_id, entry in zip(token_ids, sample.logprobs):
                    chosen = entry.get(token_id)
                    if chosen is None:  # pragma: no cover - vLLM always includes the sampled token
                        continue
                    top = None
                    if want_top:
                        ranked = sorted(entry.values(), key=lambda lp: lp.logprob, reverse=True)
                        top = {
                            lp.decoded_token or "": float(lp.logprob) for lp in ranked[: request.config.top_logprobs]
                        }
                    logprobs.append(
                        TokenLogprob(token=chosen.decoded_token or "", logprob=float(chosen.logprob), top=top)
                    )
            reason = sample.finish_reason or "stop"
            completions.append(
                Completion(
                    text=sample.text,
                    finish_reason="length" if reason == "length" else "stop" if reason in ("stop", "eos") else reason,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(token_ids),
                    logprobs=logprobs,
                )
            )
        if len(completions) == 1 and request.config.n > 1:  # greedy: the one sample stands for all n
            completions += [completions[0].model_copy(deep=True) for _ in range(request.config.n - 1)]
        return completions

    async def aclose(self) -> None:
        """Stop the worker and release the engine (and its GPU memory)."""
        orphans = await asyncio.get_running_loop().run_in_executor(None, self._queue.shutdown)
        for job in orphans:
            deliver(job, exc=BackendError("the vLLM backend was closed"))
        self.close()

    def close(self) -> None:
        with self._load_lock:
            llm, self._llm = self._llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):  # best effort at exit
                shutdown()
        del llm
        import gc

        gc.collect()


def _dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _max_model_len(llm: Any) -> int | None:
    """The engine's context (``max_model_len``), or None where this vLLM does not say."""
    engine = getattr(llm, "llm_engine", None)
    for config in (
        getattr(engine, "model_config", None),
        getattr(getattr(engine, "vllm_config", None), "model_config", None),
    ):
        value = getattr(config, "max_model_len", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _continues(request: ChatRequest) -> bool:
    return bool(request.messages) and request.messages[-1].role == "assistant"


def _prompt_total(output: Any) -> float:
    """The sum of the prompt tokens' log-probabilities (the first token has none)."""
    ids = list(output.prompt_token_ids or [])
    entries = output.prompt_logprobs
    if not entries:
        raise BackendError("vLLM returned no prompt logprobs")
    total = 0.0
    for pos, entry in enumerate(entries):
        if not entry:
            continue
        value = entry.get(ids[pos]) if pos < len(ids) else None
        if value is None:
            raise BackendError(f"vLLM's prompt logprobs lack the prompt token at position {pos}")
        total += float(value.logprob)
    return total
