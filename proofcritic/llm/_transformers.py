"""Local generation with Hugging Face transformers, with a micro-batcher.

Why a micro-batcher: a decoding step reads every weight once whatever the number of rows, so on
CPU 16 rows cost a few times one row, not 16 times. Roles call
:meth:`TransformersBackend.generate` from many asyncio tasks at once; each call only queues its
request and awaits a future. A single worker thread takes everything queued, groups rows by
sampling settings, and runs each group through one left-padded ``model.generate`` call of at
most ``max_batch_size`` rows. Per-row limits (``max_tokens``, stop strings) are enforced by a
per-row stopping criterion, so requests with different limits still share a batch. The event
loop never blocks on torch. ``n`` greedy samples are identical, so they are generated once.

Seeds: ``torch`` sampling has one RNG per batch, not per row. Requests with a ``seed`` are only
batched with requests that have the same seed and settings; the batch's RNG is seeded with it
(inside ``torch.random.fork_rng``, so the global RNG is untouched). Hence the same seeded request
sent alone always gives the same samples, and a batch of the same requests in the same order
gives the same samples; different seeds never share a batch. Greedy decoding ignores seeds.

Accounting: ``prompt_tokens`` is the length of the rendered prompt (no padding);
``completion_tokens`` counts every generated token of the sample, including the end-of-turn
token or the token that completed a stop string. ``logprobs`` has one entry per such token and
holds the model's own distribution (before temperature and top-p).

A request whose messages end with an assistant turn continues that turn (the chat template
leaves it open). Guided choice (``config.choices``) is exact here: every choice is scored as
the continuation of the assistant turn followed by the end-of-turn token (so "0" and "0.5"
compete fairly); at temperature 0 the most likely choice is returned, at
temperature T > 0 choices are drawn from probabilities proportional to exp(log-likelihood / T)
(``seed`` makes the draw reproducible; ``top_p`` is not applied).

Scoring (``sequence_logprobs`` and guided choice) tokenises every full conversation as a whole,
then runs the tokens the conversations have in common (the long prompt) once, with a KV cache,
and only each conversation's own tokens on top of that cache, all continuations in one batch.
The totals are those of running every conversation in full (to float rounding).

Where each part lives: this module holds the backend (rendering, the rows of a request,
generation and its results); :mod:`._local_batching` the job queue, the rows and their batch key;
:mod:`._local_loading` torch, the weight types, threads and the shared weights;
:mod:`._local_generation` the per-row stopping and logprob hooks; :mod:`._local_scoring` the
prefix-cached scoring.

Context: a call runs only if it fits the model's positions (``max_position_embeddings`` of its
config, or ``max_model_len``), as an OpenAI-compatible server would have it: a generation's
prompt plus the ``max_tokens`` it sets (without one, the new tokens are cut to the room left),
a scored conversation as a whole. Otherwise :class:`~proofcritic.errors.ContextLengthError`
is raised once the prompt is tokenised, before any forward pass.

Weight type and threads: ``dtype`` picks the weights of generation and of scoring (see
:func:`~proofcritic.llm._local_loading.dtype_plan`; float32 on a CPU by default, ``auto``
scores on a bfloat16 copy where the CPU has native bfloat16); a type other than the default is
part of :meth:`cache_identity`. ``threads`` is torch's intra-op thread count while the worker
runs a batch or a scoring call (set before, the previous count put back after: torch's count is
process-global); the default is :func:`~proofcritic.llm._local_loading.default_threads`
(every CPU where torch's OpenMP threads wait passively, as they do when proofcritic imports torch).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    BackendError,
    ModelNotFoundError,
    ProofcriticError,
    UnsupportedFeatureError,
)
from ._base import Backend, check_context
from ._local_batching import (
    GREEDY,
    BatchKey,
    Job,
    JobQueue,
    Row,
    deliver,
    fail,
    pad_rows,
)
from ._local_generation import LogprobRecorder, RowStopper
from ._local_loading import (
    check_dtype,
    default_threads,
    dtype_label,
    dtype_plan,
    import_torch,
    import_transformers,
    load_shared,
    looks_like_path,
    omp_wait_passive,
    prefer_passive_wait,
    torch_threads,
)
from ._local_scoring import Prefix, score_full, score_shared
from ._smollm2 import is_smollm2_alias, smollm2_path, smollm2_target_dir
from ._types import ChatMessage, ChatRequest, Completion, TokenLogprob

_SENTINEL = "\u27e6proofcritic-continuation-end\u27e7"


@dataclass
class BackendStats:
    """Counters that show how the micro-batcher grouped the work (for tests and tuning)."""

    requests: int = 0  #: generate requests served
    batches: int = 0  #: ``model.generate`` invocations
    rows: int = 0  #: sequences generated (greedy duplicates are generated once)
    max_batch_rows: int = 0  #: largest batch so far
    scoring_passes: int = 0  #: forward passes made by ``sequence_logprobs`` and guided choice
    shared_prefixes: int = 0  #: scoring calls whose common prefix ran once (KV cache reused)
    prefix_tokens_reused: int = 0  #: prefix tokens taken from a prefix kept from an earlier call


class TransformersBackend(Backend):
    """A causal LM run in-process with transformers; batched, seeded, with logprobs and scoring.

    ``model`` is a local folder, an alias of the embedded SmolLM2 ("smollm2"), or a hub id that
    is already in the local Hugging Face cache (nothing is ever downloaded). The model loads
    once, on first use or on :meth:`load`.
    """

    name = "transformers"
    default_concurrency = 64

    def __init__(
        self,
        model: str | os.PathLike[str] = "smollm2",
        *,
        device: str = "cpu",
        dtype: str | Any | None = None,
        max_batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        default_max_tokens: int = 256,
        default_temperature: float = 0.0,
        cache_root: str | os.PathLike[str] | None = None,
        prefix_cache_tokens: int = 4096,
        max_model_len: int | None = None,
        threads: int | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        check_dtype(dtype)
        prefer_passive_wait()  # whoever imports torch next (see default_threads)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a whole number of at least 1, not {threads!r}")
        self._spec = str(model)
        self._cache_root = cache_root
        self._path: Path | None = None  # set for local folders (and SmolLM2 once resolved)
        if not is_smollm2_alias(self._spec):
            local = Path(self._spec).expanduser()
            if local.exists():
                self._path = local.resolve()
            elif looks_like_path(self._spec):
                raise ModelNotFoundError(f"model path not found: {local}")
        self.model = str(self._path) if self._path else self._spec
        self.device = device
        #: None (float32 on a CPU, the stored type on a GPU), "auto", "float32", "bfloat16",
        #: "float16" or a torch.dtype; see :func:`dtype_plan` for what each runs in
        self.dtype = dtype
        #: torch threads for this backend's work (None: :func:`default_threads` on a CPU, torch's
        #: own count elsewhere); set around each batch and read-out, and put back after it
        self.threads = (
            threads if threads is not None else (default_threads() if str(device).startswith("cpu") else None)
        )
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        #: scoring keeps the keys and values of its latest prefixes, this many tokens in all
        #: (0: keep none), so that a read-out of the same prompt runs only its new part
        self.prefix_cache_tokens = prefix_cache_tokens
        #: positions a call may fill, prompt and new tokens together (None: the model config's
        #: ``max_position_embeddings``); a longer call fails with ContextLengthError, unrun
        self.max_model_len = max_model_len
        self._prefixes: list[Prefix] = []  # least recently used first
        self.stats = BackendStats()
        self._hf_model: Any = None
        self._scorer: Any = None  # the model the read-out and guided choice run on (may be _hf_model)
        self._tokenizer: Any = None
        self._eos_ids: set[int] = set()
        self._pad_id = 0
        self._load_lock = threading.Lock()
        self._queue = JobQueue(
            self._run_jobs,
            wait_s=self.batch_wait_s,
            thread_name="proofcritic-tf",
            full=lambda pending: sum(j.request.config.n for j in pending) >= self.max_batch_size,
        )

    # ----------------------------------------------------------------------------- loading

    @property
    def dtype_plan(self) -> tuple[str, str]:
        """The weight types of (generation, read-out), e.g. ``("float32", "bfloat16")``."""
        return dtype_plan(self.dtype, self.device)

    #: guided choice is exact here (every choice scored), and text is scored by likelihood
    supports_guided_choice = True
    supports_likelihood = True

    def describe(self) -> str:
        """How the model runs, for the run summary: ``float32, 1 torch thread``."""
        threads = (
            f"{self.threads} torch thread{'s' if self.threads != 1 else ''}" if self.threads else "torch's threads"
        )
        if self.threads != 1 and omp_wait_passive():
            threads += " (waiting passively)"
        return f"{dtype_label(self.dtype_plan)}, {threads}"

    def cache_identity(self) -> str:
        if self._path is None and is_smollm2_alias(self._spec):
            # the folder name carries the weights' fingerprint; its location does not matter
            base = f"transformers/{smollm2_target_dir(self._cache_root).name}"
        else:
            base = f"transformers/{self.model}"
        # the weight types are part of the identity (a bfloat16 completion or read-out is not
        # served for a float32 request); the default's identity is the one it always had
        plan = self.dtype_plan
        if plan == dtype_plan(None, self.device):
            return base
        return f"{base}@{plan[0]}" if plan[0] == plan[1] else f"{base}@{plan[0]}+readout-{plan[1]}"

    def load(self) -> None:
        """Load tokenizer and model now (idempotent and thread-safe)."""
        if self._hf_model is not None:
            return
        with self._load_lock:
            if self._hf_model is None:
                self._load_locked()

    def _load_locked(self) -> None:
        if self._path is None and is_smollm2_alias(self._spec):
            self._path = smollm2_path(self._cache_root)
            self.model = str(self._path)
        source = str(self._path) if self._path else self._spec
        gen, score = self.dtype_plan
        folder = self._path is not None
        tokenizer, model = load_shared(source, self.device, gen, folder=folder)
        scorer = model if score == gen else load_shared(source, self.device, score, folder=folder)[1]
        eos = model.generation_config.eos_token_id
        eos = eos if eos is not None else tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids, default=0)
        self._tokenizer = tokenizer
        self._scorer = scorer
        self._hf_model = model

    def close(self) -> None:
        """Stop the worker thread (after the work already queued) and drop the model."""
        for job in self._queue.shutdown():
            fail(job, BackendError("the transformers backend was closed"))
        with self._load_lock:
            self._hf_model = self._scorer = self._tokenizer = None
            self._prefixes = []

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ----------------------------------------------------------------------------- rendering

    def render(self, messages: Sequence[ChatMessage], *, continue_final: bool = False) -> str:
        """The prompt text for ``messages``: the chat template with a generation prompt, or
        (``continue_final``) with the last message left open so that text can continue it."""
        self.load()
        tok = self._tokenizer
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(tok, "chat_template", None):
            if not continue_final:
                return tok.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
            final = dicts[-1]["content"]
            if final and not final[-1].isspace():
                try:
                    return tok.apply_chat_template(
                        dicts, tokenize=False, add_generation_prompt=False, continue_final_message=True
                    )
                except ValueError:
                    pass
            # transformers strips trailing whitespace (and cannot place an empty final message):
            # render with a sentinel after the text and cut there instead.
            dicts[-1]["content"] = final + _SENTINEL
            full = tok.apply_chat_template(dicts, tokenize=False, add_generation_prompt=False)
            if _SENTINEL not in full:
                raise UnsupportedFeatureError("the chat template does not keep the final message's text verbatim")
            return full[: full.index(_SENTINEL)]
        parts = [f"### {d['role'].capitalize()}\n{d['content']}\n\n" for d in dicts]
        if continue_final:
            parts[-1] = parts[-1][:-2]
        else:
            parts.append("### Assistant\n")
        return "".join(parts)

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def context_length(self) -> int | None:
        """Positions the model takes (``max_model_len``, else the loaded model config's
        ``max_position_embeddings``; None when neither is known)."""
        if self.max_model_len is not None:
            return self.max_model_len
        if self._hf_model is None:
            return None
        value = getattr(self._hf_model.config.get_text_config(), "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    # ----------------------------------------------------------------------------- queueing

    async def generate(self, request: ChatRequest) -> list[Completion]:
        if request.config.choices:
            return await self._choose(request)
        return await self._submit([request])[0]

    async def generate_batch(self, requests: Sequence[ChatRequest]) -> list[list[Completion]]:
        """Queue all requests at once, so they are sure to be considered in the same round."""
        plain = [r for r in requests if not r.config.choices]
        futures = iter(self._submit(plain))
        return list(await asyncio.gather(*(self._choose(r) if r.config.choices else next(futures) for r in requests)))

    def _submit(self, requests: Sequence[ChatRequest]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        jobs = [Job(r, loop.create_future(), loop, [None] * r.config.n) for r in requests]
        self._queue.submit(jobs)
        return [j.future for j in jobs]

    def _run_jobs(self, jobs: list[Job]) -> None:
        try:
            self.load()
        except BaseException as exc:  # noqa: BLE001 - delivered to the callers
            for job in jobs:
                fail(job, exc)
            return
        groups: dict[BatchKey, list[Row]] = {}
        for job in jobs:
            try:
                key, rows = self._rows_for(job)
            except Exception as exc:  # noqa: BLE001 - e.g. a template that rejects these messages
                fail(job, exc)
                continue
            groups.setdefault(key, []).extend(rows)
        self.stats.requests += len(jobs)
        with torch_threads(self.threads):
            for key, rows in groups.items():
                self._run_group(key, rows)

    def _rows_for(self, job: Job) -> tuple[BatchKey, list[Row]]:
        cfg = job.request.config
        temperature = cfg.temperature if cfg.temperature is not None else self.default_temperature
        greedy = not temperature
        key = GREEDY if greedy else BatchKey(True, float(temperature), float(cfg.top_p or 1.0), cfg.seed)
        messages = job.request.messages
        prompt = self._encode(self.render(messages, continue_final=bool(messages) and messages[-1].role == "assistant"))
        # a set max_tokens must fit beside the prompt; the default is cut to the room left
        context = self.context_length
        check_context(self.model, context, len(prompt), cfg.max_tokens or 1)
        max_tokens = cfg.max_tokens or self.default_max_tokens
        if context is not None:
            max_tokens = min(max_tokens, context - len(prompt))
        top = (cfg.top_logprobs or 0) if cfg.logprobs else -1  # -1: no logprobs at all
        stop = tuple(s for s in (cfg.stop or []) if s)
        if greedy:  # n greedy samples are identical: generate one, copy it
            return key, [Row(job, list(range(cfg.n)), prompt, max_tokens, stop, top)]
        return key, [Row(job, [i], prompt, max_tokens, stop, top) for i in range(cfg.n)]

    def _run_group(self, key: BatchKey, rows: list[Row]) -> None:
        torch = import_torch()
        seeded = key.sample and key.seed is not None
        device = torch.device(self.device)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices) if seeded else contextlib.nullcontext():
            if seeded:
                torch.manual_seed(key.seed)  # once per group; later chunks continue the stream
            for start in range(0, len(rows), self.max_batch_size):
                chunk = [r for r in rows[start : start + self.max_batch_size] if not r.job.failed]
                if not chunk:
                    continue
                try:
                    completions = self._generate_rows(key, chunk)
                except BaseException as exc:  # noqa: BLE001 - delivered to the callers
                    for row in chunk:
                        fail(row.job, exc)
                    continue
                for row, completion in zip(chunk, completions):
                    if row.job.failed:
                        continue
                    for slot in row.slots:
                        row.job.results[slot] = completion.model_copy(deep=True)
                    if all(c is not None for c in row.job.results):
                        deliver(row.job, result=list(row.job.results))

    # ----------------------------------------------------------------------------- generation

    def _generate_rows(self, key: BatchKey, rows: list[Row]) -> list[Completion]:
        """One left-padded ``model.generate`` call for ``rows``; returns one completion per row."""
        torch, tf = import_torch(), import_transformers()
        ids, mask = pad_rows([r.prompt_ids for r in rows], self._pad_id, left=True)
        width = ids.shape[1]
        stopper = RowStopper(rows, width, self._tokenizer, self._eos_ids)
        k = max(r.top_logprobs for r in rows)
        recorder = LogprobRecorder(width, k) if k >= 0 else None
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_tokens for r in rows),
            "do_sample": key.sample,
            "num_beams": 1,
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._eos_ids) or None,
            "stopping_criteria": tf.StoppingCriteriaList([stopper]),
        }
        if key.sample:
            kwargs.update(temperature=key.temperature, top_p=key.top_p, top_k=0)
        if recorder is not None:
            kwargs["logits_processor"] = tf.LogitsProcessorList([recorder])
        self.stats.batches += 1
        self.stats.rows += len(rows)
        self.stats.max_batch_rows = max(self.stats.max_batch_rows, len(rows))
        with torch.inference_mode():
            out = self._hf_model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        generated = out[:, width:].cpu()
        chosen = tops = None
        if recorder is not None:
            chosen, tops = recorder.finish(out)
        return [
            self._completion(row, generated[i].tolist(), stopper.done_at[i], i, chosen, tops)
            for i, row in enumerate(rows)
        ]

    def _completion(
        self, row: Row, tokens: list[int], done_at: int | None, i: int, chosen: Any, tops: Any
    ) -> Completion:
        """Cut one generated row to its own end and turn it into a :class:`Completion`."""
        end = done_at if done_at is not None else len(tokens)
        eos_at = next((t for t, tok in enumerate(tokens[:end]) if tok in self._eos_ids), None)
        if eos_at is not None:
            end = eos_at + 1
        tokens = tokens[:end]
        text_ids = tokens[:-1] if eos_at is not None else tokens
        text = self._tokenizer.decode(text_ids, skip_special_tokens=True)
        hits = [text.find(s) for s in row.stop if s in text]
        if hits:
            text = text[: min(hits)]
        natural = eos_at is not None or bool(hits)
        finish = "length" if not natural and len(tokens) >= row.max_tokens else "stop"
        logprobs = None
        if row.top_logprobs >= 0 and chosen is not None:
            logprobs = []
            for t, tok in enumerate(tokens):
                top: dict[str, float] | None = None
                if row.top_logprobs > 0:
                    vals, idx = tops[0][t][i][: row.top_logprobs], tops[1][t][i][: row.top_logprobs]
                    top = {}
                    for v, j in zip(vals, idx):
                        top.setdefault(self._tokenizer.decode([j]), v)
                logprobs.append(TokenLogprob(token=self._tokenizer.decode([tok]), logprob=chosen[t][i], top=top))
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(tokens),
            logprobs=logprobs,
        )

    # ----------------------------------------------------------------------------- scoring

    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each rendered conversation; see :meth:`Backend.sequence_logprobs`.

        If ``messages`` does not end with an assistant turn, an empty one is assumed.
        """
        if not continuations:
            return []
        totals, _, _ = await self._in_worker(self._score, messages, list(continuations), False)
        return totals

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker thread (after the work queued before it)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._queue.worker(), fn, *args)
        except ProofcriticError:
            raise
        except Exception as exc:
            raise BackendError(f"local scoring failed: {type(exc).__name__}: {exc}") from exc

    async def _choose(self, request: ChatRequest) -> list[Completion]:
        """Guided choice: score every choice (+ end of turn), then pick or draw (see module)."""
        cfg = request.config
        choices = list(cfg.choices or [])
        totals, prompt_len, lengths = await self._in_worker(self._score, request.messages, choices, True)
        temperature = cfg.temperature if cfg.temperature is not None else self.default_temperature
        if not temperature:
            best = max(range(len(choices)), key=totals.__getitem__)
            picks = [best] * cfg.n
        else:
            top = max(totals)
            weights = [math.exp((t - top) / temperature) for t in totals]
            rng = random.Random(cfg.seed) if cfg.seed is not None else random.Random()
            picks = rng.choices(range(len(choices)), weights=weights, k=cfg.n)
        self.stats.requests += 1
        return [
            Completion(text=choices[i], finish_reason="stop", prompt_tokens=prompt_len, completion_tokens=lengths[i])
            for i in picks
        ]

    def _end_of_turn(self) -> str:
        """The text of the token that ends an assistant turn."""
        tok = self._tokenizer
        eos = tok.eos_token
        if isinstance(eos, str) and eos and tok.convert_tokens_to_ids(eos) in self._eos_ids:
            return eos
        return tok.decode([min(self._eos_ids)]) if self._eos_ids else ""

    def _score(
        self, messages: Sequence[ChatMessage], continuations: list[str], close: bool
    ) -> tuple[list[float], int, list[int]]:
        """Log-likelihood of each conversation (``close``: each continuation followed by the
        end-of-turn token), the prompt length in tokens, and each continuation's length.

        The shared prefix runs once (see :meth:`_score_shared`) where the model's cache allows,
        otherwise every conversation runs in full (:meth:`_score_full`); both give the same totals.
        """
        seqs, prompt_len, lengths = self._score_inputs(messages, continuations, close)
        with torch_threads(self.threads):
            totals = self._score_shared(seqs)
            if totals is None:
                totals = self._score_full(seqs)
        return totals, prompt_len, lengths

    def _score_inputs(
        self, messages: Sequence[ChatMessage], continuations: list[str], close: bool
    ) -> tuple[list[list[int]], int, list[int]]:
        """The token ids of every full conversation, the prompt length and each continuation's
        length. Each conversation is rendered and tokenised as a whole, so a continuation may
        change the tokenisation of the prompt's last tokens (e.g. ``{`` + ``0`` -> ``{0``)."""
        self.load()
        msgs = list(messages)
        if not msgs or msgs[-1].role != "assistant":
            msgs.append(ChatMessage(role="assistant", content=""))
        head, last = msgs[:-1], msgs[-1]
        suffix = self._end_of_turn() if close else ""
        seqs = [
            self._encode(
                self.render([*head, last.model_copy(update={"content": last.content + c})], continue_final=True)
                + suffix
            )
            for c in continuations
        ]
        check_context(self.model, self.context_length, max(len(seq) for seq in seqs))
        prompt_len = len(self._encode(self.render(msgs, continue_final=True)))
        lengths = [max(len(seq) - prompt_len, 0) for seq in seqs]
        return seqs, prompt_len, lengths

    def _score_full(self, seqs: list[list[int]]) -> list[float]:
        """Total log-likelihood of each token list, every list run in full (:func:`score_full`)."""
        return score_full(self._scorer, seqs, pad_id=self._pad_id, device=self.device, stats=self.stats)

    def _score_shared(self, seqs: list[list[int]]) -> list[float] | None:
        """Total log-likelihood of each token list, their common prefix run once on a KV cache
        and the prefixes kept for later calls (:func:`score_shared`); None where the model's
        cache does not allow it or the lists share nothing."""
        return score_shared(
            self._scorer,
            seqs,
            pad_id=self._pad_id,
            device=self.device,
            stats=self.stats,
            prefixes=self._prefixes,
            keep_tokens=self.prefix_cache_tokens,
        )
