"""Backends: one async interface from chat requests to completions.

``get_model("transformers/smollm2")`` or ``get_model("openai/MODEL", base_url=...)`` gives a
:class:`Model`: the backend wrapped with retry, a circuit breaker, cache, a concurrency bound and
usage accounting.
"""

from ._base import Backend, report_request
from ._cache import CompletionCache, default_cache_path
from ._model import CircuitBreaker, Model, RetryPolicy, usage_scope
from ._registry import BACKENDS, DEFAULT_MODEL, get_backend, get_model, split_model_spec
from ._types import ChatMessage, ChatRequest, Completion, GenerateConfig, TokenLogprob, Usage

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "Backend",
    "ChatMessage",
    "ChatRequest",
    "CircuitBreaker",
    "Completion",
    "CompletionCache",
    "GenerateConfig",
    "Model",
    "RetryPolicy",
    "TokenLogprob",
    "Usage",
    "default_cache_path",
    "get_backend",
    "get_model",
    "report_request",
    "split_model_spec",
    "usage_scope",
]
