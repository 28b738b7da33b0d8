"""The one interface every backend implements.

A backend turns chat requests into completions and classifies its own errors as
:class:`~proofcritic.errors.BackendError` (with ``retryable`` set). It does not retry,
cache or limit concurrency: :class:`~proofcritic.llm.Model` does that once for all backends.
A backend never sees a prompt template; it only sees messages.
"""

from __future__ import annotations

import abc
import contextvars
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ContextLengthError
from ._types import ChatMessage, ChatRequest, Completion

#: where the requests a backend sends are counted: set by :class:`~proofcritic.llm.Model` around
#: each backend call, read by :func:`report_request` (tasks the backend starts inherit it)
REQUEST_SINK: contextvars.ContextVar[Callable[[int, int, bool, bool], None] | None] = contextvars.ContextVar(
    "proofcritic_request_sink", default=None
)

#: the completion-cache slots a generation call will fill, ``(request key, sample indices)``: set
#: by :class:`~proofcritic.llm.Model` around each backend ``generate`` it makes on a cache miss,
#: so a backend that answers later (a batch API) can put its answers where this call would have
#: (see :mod:`proofcritic.llm._batch_api`); None outside such a call
CACHE_SLOTS: contextvars.ContextVar[tuple[str, tuple[int, ...]] | None] = contextvars.ContextVar(
    "proofcritic_cache_slots", default=None
)


def report_request(
    *, prompt_tokens: int = 0, completion_tokens: int = 0, failed: bool = False, readout: bool = False
) -> None:
    """Count one request a backend sent to its server (see :attr:`Backend.reports_requests`):
    its tokens as the server reported them, whether it failed, whether it was a likelihood
    read-out. Outside a :class:`~proofcritic.llm.Model` call it counts nowhere."""
    sink = REQUEST_SINK.get()
    if sink is not None:
        sink(prompt_tokens, completion_tokens, failed, readout)


class Backend(abc.ABC):
    """Abstract backend. Subclasses set ``name`` (e.g. "openai") and ``model``."""

    name: str = "backend"
    model: str = ""
    #: how many requests the wrapper lets run at once against this backend
    default_concurrency: int = 64
    #: True for a backend that calls :func:`report_request` for every request it sends (a
    #: server backend, where one call may cost several requests: fallbacks, re-routes,
    #: read-outs); otherwise the Model counts one request per backend call, with the tokens of
    #: the completions it returned
    reports_requests: bool = False

    # -- what this backend supports: asked here, never remembered by callers or probed with getattr --
    @property
    def supports_guided_choice(self) -> bool | None:
        """Whether ``GenerateConfig.choices`` is honoured: True, False, or None while unknown (a
        caller then learns it from the first guided call, which raises
        :class:`~proofcritic.errors.UnsupportedFeatureError` or answers outside the choices)."""
        return None

    @property
    def supports_likelihood(self) -> bool | None:
        """Whether :meth:`sequence_logprobs` can score text: True, False, or None while unknown
        (learned from the first read-out). By default: False unless a subclass implements it."""
        return None if type(self).sequence_logprobs is not Backend.sequence_logprobs else False

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per-endpoint counters (one entry per base URL of a server backend); empty for a
        backend without endpoints."""
        return []

    def describe(self) -> str | None:
        """A line about a local model as loaded (device, weight type, threads), for the run's
        header; None for a backend with nothing to add."""
        return None

    @abc.abstractmethod
    async def generate(self, request: ChatRequest) -> list[Completion]:
        """Return ``request.config.n`` completions for one request."""

    async def generate_batch(self, requests: Sequence[ChatRequest]) -> list[list[Completion]]:
        """Return completions for many requests; backends that batch natively override this."""
        import asyncio

        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        """Total log-likelihood of each full conversation ``messages`` + assistant ``continuation``.

        ``messages`` ends with the assistant turn written so far; each continuation is appended to
        that turn's text. The totals differ only in the continuation (the shared prefix is the
        same), so softmax over them gives the relative likelihood of the continuations.
        Backends that cannot score text raise :class:`~proofcritic.errors.UnsupportedFeatureError`.
        """
        from ..errors import UnsupportedFeatureError

        raise UnsupportedFeatureError(f"backend {self.name!r} cannot score text by likelihood")

    def cache_identity(self) -> str:
        """The part of the cache key that names this backend and model (e.g. URL + model)."""
        return f"{self.name}/{self.model}"

    def address(self) -> str:
        """Where the requests go, for messages (a server backend: its base URL(s))."""
        return f"{self.name}/{self.model}"

    async def aclose(self) -> None:  # noqa: B027 - not abstract: a backend may hold nothing
        """Release connections, threads and models."""


#: an engine's refusal of a prompt longer than the model's context, as OpenAI, vLLM and SGLang word it
CONTEXT_MESSAGE = re.compile(r"context.length|maximum model length|max_model_len|longer than the model", re.IGNORECASE)


def check_context(model: str, context: int | None, prompt_tokens: int, new_tokens: int = 0) -> None:
    """Refuse, before any model work, a call that does not fit a local model's context.

    ``context``: the positions the model takes (None: unknown, nothing is checked);
    ``new_tokens``: the tokens the call may add (a generation's ``max_tokens``, or 1 when the
    request set none: the new tokens are then cut to what is left; 0 when scoring text). Raises
    :class:`~proofcritic.errors.ContextLengthError`, the error an OpenAI-compatible server's
    ``context_length_exceeded`` becomes, so every backend fails the same way.
    """
    if context is None or prompt_tokens + new_tokens <= context:
        return
    asked = f" + {new_tokens} new tokens asked for" if new_tokens > 1 else ""
    raise ContextLengthError(
        f"the prompt does not fit the {context}-token context of {model}: {prompt_tokens} prompt tokens{asked}"
    )
