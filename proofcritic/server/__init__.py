"""``proofcritic serve``: grade, solve and label jobs over HTTP, and an OpenAI-compatible facade.

Needs the ``server`` extra (``pip install 'proofcritic[server]'``: FastAPI and uvicorn).
"""

from __future__ import annotations

from ..errors import missing

try:
    import fastapi  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise missing("fastapi", "server") from error

from .app import create_app
from .jobs import JobStore
from .settings import API_KEYS_ENV, SERVICE_KEYS_ENV, ServerSettings, keys_from_env, keys_from_file

__all__ = [
    "API_KEYS_ENV",
    "SERVICE_KEYS_ENV",
    "JobStore",
    "ServerSettings",
    "create_app",
    "keys_from_env",
    "keys_from_file",
]
