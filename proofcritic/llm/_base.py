"""The one interface every backend implements.

A backend turns chat requests into completions and classifies its own errors as
:class:`~proofcritic.errors.BackendError` (with ``retryable`` set). It does not retry,
cache or limit concurrency: :class:`~proofcritic.llm.Model` does that once for all backends.
A backend never sees a prompt template; it only sees messages.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from ._types import ChatMessage, ChatRequest, Completion


class Backend(abc.ABC):
    """Abstract backend. Subclasses set ``name`` (e.g. "openai") and ``model``."""

    name: str = "backend"
    model: str = ""
    #: how many requests the wrapper lets run at once against this backend
    default_concurrency: int = 64

    @abc.abstractmethod
    async def generate(self, request: ChatRequest) -> list[Completion]:
        """Return ``request.config.n`` completions for one request."""

    async def generate_batch(self, requests: Sequence[ChatRequest]) -> list[list[Completion]]:
        """Return completions for many requests; backends that batch natively override this."""
        import asyncio

        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    async def sequence_logprobs(
        self, messages: Sequence[ChatMessage], continuations: Sequence[str]
    ) -> list[float]:
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

    async def aclose(self) -> None:
        """Release connections, threads and models."""
