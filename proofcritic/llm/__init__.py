"""Backends: one async interface from chat requests to completions.

``get_model("transformers/smollm2")`` or ``get_model("openai/MODEL", base_url=...)`` gives a
:class:`Model`: the backend wrapped with retry, a circuit breaker, cache, a concurrency bound and
usage accounting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from ._balancer import split_base_urls
    from ._base import Backend, report_request
    from ._batch_api import BatchOptions, BatchRun
    from ._cache import CompletionCache, default_cache_path
    from ._model import CircuitBreaker, Model, RetryPolicy, usage_scope
    from ._registry import (
        BACKENDS,
        DEFAULT_MODEL,
        get_backend,
        get_model,
        split_model_spec,
    )
    from ._smollm2 import is_smollm2_alias, smollm2_path
    from ._types import (
        ChatMessage,
        ChatRequest,
        Completion,
        GenerateConfig,
        MaxTokens,
        SampleCount,
        SamplingOptions,
        Seed,
        Temperature,
        TokenLogprob,
        TopP,
        Usage,
    )

#: public name -> the submodule that defines it, imported on first use (PEP 562): the data types
#: (``GenerateConfig``, ``Usage``: what ``proofcritic.types`` and the CLI's option bounds need)
#: load without the Model wrapper, the cache, asyncio and the backends' registry
_LAZY = {
    "split_base_urls": "._balancer",
    **dict.fromkeys(("Backend", "report_request"), "._base"),
    **dict.fromkeys(("BatchOptions", "BatchRun"), "._batch_api"),
    **dict.fromkeys(("CompletionCache", "default_cache_path"), "._cache"),
    **dict.fromkeys(("CircuitBreaker", "Model", "RetryPolicy", "usage_scope"), "._model"),
    **dict.fromkeys(("BACKENDS", "DEFAULT_MODEL", "get_backend", "get_model", "split_model_spec"), "._registry"),
    **dict.fromkeys(("is_smollm2_alias", "smollm2_path"), "._smollm2"),
    **dict.fromkeys(
        ("ChatMessage", "ChatRequest", "Completion", "GenerateConfig", "SamplingOptions", "TokenLogprob", "Usage"),
        "._types",
    ),
    #: the bounds of the sampling settings (pydantic annotated types)
    **dict.fromkeys(("MaxTokens", "SampleCount", "Seed", "Temperature", "TopP"), "._types"),
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "Backend",
    "BatchOptions",
    "BatchRun",
    "ChatMessage",
    "ChatRequest",
    "CircuitBreaker",
    "Completion",
    "CompletionCache",
    "GenerateConfig",
    "MaxTokens",
    "Model",
    "RetryPolicy",
    "SampleCount",
    "SamplingOptions",
    "Seed",
    "Temperature",
    "TokenLogprob",
    "TopP",
    "Usage",
    "default_cache_path",
    "get_backend",
    "get_model",
    "is_smollm2_alias",
    "report_request",
    "smollm2_path",
    "split_base_urls",
    "split_model_spec",
    "usage_scope",
]
