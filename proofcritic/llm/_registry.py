"""Models addressed as ``backend/model`` strings, e.g. ``transformers/smollm2``,
``openai/deepseek-math-v2``, ``vllm/deepseek-ai/DeepSeek-Math-V2``, ``sglang/...``.

The split is at the first slash, so hub ids keep theirs. ``vllm/`` and ``sglang/`` are the
OpenAI-compatible backend with the engine's usual local address as the default base URL;
``vllm-offline/MODEL`` runs ``vllm.LLM`` in this process (no server).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ._base import Backend
from ._cache import CompletionCache
from ._model import CircuitBreaker, Model, RetryPolicy
from ._types import GenerateConfig

BACKENDS = ("transformers", "openai", "vllm", "sglang", "vllm-offline")
DEFAULT_MODEL = "transformers/smollm2"
_LOCAL_URLS = {"vllm": "http://127.0.0.1:8000/v1", "sglang": "http://127.0.0.1:30000/v1"}


def split_model_spec(spec: str, backend: str | None = None) -> tuple[str, str]:
    """``"openai/gpt-x"`` -> ``("openai", "gpt-x")``; with ``backend`` given, ``spec`` is the model."""
    spec = spec.strip()
    if not spec:
        raise InputError("empty model name")
    if backend is not None:
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return backend, spec.removeprefix(f"{backend}/")
    head, sep, rest = spec.partition("/")
    if sep and head in BACKENDS and rest:
        return head, rest
    raise InputError(
        f"model {spec!r} does not name its backend; write it as BACKEND/MODEL with BACKEND one of "
        f"{', '.join(BACKENDS)} (e.g. transformers/smollm2, openai/gpt-4o)"
    )


def get_backend(spec: str, backend: str | None = None, **options: Any) -> Backend:
    """Build the backend that ``spec`` names. ``options`` go to the backend's constructor."""
    kind, model = split_model_spec(spec, backend)
    _check_local_options(kind, options)
    if kind == "transformers":
        from ._transformers import TransformersBackend

        return TransformersBackend(model, **options)
    if kind == "vllm-offline":
        from ._vllm_offline import VLLMOfflineBackend

        return VLLMOfflineBackend(model, **options)
    from ._openai import OpenAIBackend

    if kind in _LOCAL_URLS:
        options.setdefault("base_url", _LOCAL_URLS[kind])
        options.setdefault("api_key", "EMPTY")
        if options.get("engine") is None:  # the engine's subclass (VLLMBackend, SGLangBackend)
            options["engine"] = kind
    if options.get("base_url") is None:
        options.pop("base_url", None)
    backend_obj = OpenAIBackend(model, **options)
    if kind != "openai":
        backend_obj.name = kind
    return backend_obj


def _check_local_options(kind: str, options: dict[str, Any]) -> None:
    """``dtype`` and ``threads`` are local-model settings: refuse them, as input errors, for a
    backend that cannot take them or with a value it cannot use (None means "not given")."""
    from .._constants import DTYPES  # (not through the local backend's modules: they import slowly)

    dtype, threads = options.get("dtype"), options.get("threads")
    if options.get("transport") is None:
        options.pop("transport", None)
    elif kind in ("transformers", "vllm-offline"):
        raise InputError(f"transport (--transport) applies to the server backends (openai, vllm, sglang), not {kind}")
    for name, flag in (("routing", "--routing"), ("routing_epsilon", "--routing-epsilon")):
        if options.get(name) is None:
            options.pop(name, None)
        elif kind in ("transformers", "vllm-offline"):
            raise InputError(f"{name} ({flag}) applies to the server backends (openai, vllm, sglang), not {kind}")
    if dtype is None:
        options.pop("dtype", None)
    if threads is None:
        options.pop("threads", None)
    if dtype is not None and kind not in ("transformers", "vllm-offline"):
        raise InputError(f"dtype (--dtype) applies to the local backends (transformers, vllm-offline), not {kind}")
    if isinstance(dtype, str) and kind == "transformers" and dtype not in DTYPES:  # vLLM's own names pass
        raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if threads is not None and kind != "transformers":
        raise InputError(f"threads (--threads) applies to the transformers backend (torch on a CPU), not {kind}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a whole number of at least 1, not {threads!r}")


def get_model(
    spec: str = DEFAULT_MODEL,
    *,
    backend: str | None = None,
    cache: CompletionCache | bool | str | None = True,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    defaults: GenerateConfig | None = None,
    breaker: CircuitBreaker | None = None,
    **options: Any,
) -> Model:
    """A ready :class:`Model`. ``cache``: True for the default cache file, a path, or False/None.
    ``options`` go to the backend (e.g. ``base_url``, ``api_key``, ``timeout`` of a server backend;
    ``dtype`` ("auto", "float32", "bfloat16", "float16") of a local one, ``threads`` of the
    transformers one; see :class:`~proofcritic.llm._transformers.TransformersBackend`)."""
    if cache is True:
        cache_obj: CompletionCache | None = CompletionCache()
    elif cache is False or cache is None:
        cache_obj = None
    elif isinstance(cache, CompletionCache):
        cache_obj = cache
    else:
        cache_obj = CompletionCache(cache)  # a path
    return Model(
        get_backend(spec, backend, **options),
        cache=cache_obj,
        max_concurrency=max_concurrency,
        retry=retry,
        defaults=defaults,
        breaker=breaker,
    )
