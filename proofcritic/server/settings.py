"""What ``proofcritic serve`` is configured with: the upstream model, the job database, keys, limits."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..llm import GenerateConfig, Model, RetryPolicy
from ..promptset import PromptSet
from ..verifier import DEFAULT_SCORE_MODE, ScoreMode, check_score_mode

if TYPE_CHECKING:
    from ..pipelines.panel import Panel
    from .review import ReviewSettings

#: environment variables holding the service's API keys, separated by commas or whitespace
#: (``PROOFCRITIC_API_KEYS`` is the older name; both are read)
SERVICE_KEYS_ENV = "PROOFCRITIC_SERVICE_KEYS"
API_KEYS_ENV = "PROOFCRITIC_API_KEYS"


def _split_keys(raw: str) -> list[str]:
    return [k for k in raw.replace(",", " ").split() if k]


def keys_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """The API keys listed in ``PROOFCRITIC_SERVICE_KEYS`` and ``PROOFCRITIC_API_KEYS`` (commas or
    whitespace between them)."""
    env = environ if environ is not None else os.environ
    return _split_keys(env.get(SERVICE_KEYS_ENV, "")) + _split_keys(env.get(API_KEYS_ENV, ""))


def keys_from_file(path: str | Path) -> list[str]:
    """The API keys in a file: one or more per line (commas or whitespace between them), blank
    lines and lines starting with ``#`` skipped. Raises ``OSError`` when it cannot be read."""
    keys: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keys.extend(_split_keys(line))
    return keys


@dataclass
class ServerSettings:
    """Settings of one service instance.

    The upstream model is given either ready (``model``) or as a factory called once when the
    service starts (``model_factory``); the service closes it when it stops. ``config`` holds
    the sampling settings the operator chose (requests may override temperature, top_p,
    max_tokens and seed). ``api_keys`` empty means no authentication.
    """

    model: Model | None = None
    model_factory: Callable[[], Model] | None = None
    db_path: Path = Path("jobs.sqlite")
    state_dir: Path | None = None
    """Where solve jobs keep strategy state (search pools); default ``<db_path>.state``."""
    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 2 * 1024 * 1024
    max_jobs: int = 8
    """Jobs run at once; the others wait in the queue (the model bounds calls in flight)."""
    prompts: PromptSet | None = None
    config: GenerateConfig = field(default_factory=GenerateConfig)
    score_mode: ScoreMode = DEFAULT_SCORE_MODE
    max_calls: int | None = None
    """Model calls allowed per job or facade request (None: no limit); a request may ask for less."""
    max_tokens: int | None = None
    """Tokens allowed per job or facade request (None: no limit); a request may ask for less."""
    max_input_chars: int | None = None
    """Characters allowed per text of a request (problem, proof, reference solution, grading
    guidelines; a longer one is answered 413). None: ``PROOFCRITIC_MAX_INPUT_CHARS``, else
    200,000 (see :data:`proofcritic.io.DEFAULT_MAX_INPUT_CHARS`); 0: no limit."""
    progress_interval: float = 1.0
    """Seconds between usage progress events of a running job."""
    retry: RetryPolicy | None = None
    """How a failing upstream call is retried (None: the model's policy, 6 attempts from 1 s on).
    Once the attempts are spent a facade request answers 503 and a job fails."""
    protect_docs: bool = False
    """Put ``/docs``, ``/redoc`` and ``/openapi.json`` behind the API keys too."""
    timeout: float | None = None
    """Seconds one upstream request may take (None: the model's own; 600 for a server
    backend). A timed-out request is retried like a dropped connection."""
    panel: Panel | None = None
    """A judge panel (``serve --judge``/``--panel``) that grade requests with ``"panel": true``
    use instead of the one verifier, on the request's scale. Its judges' models get the
    service's retry policy and timeout, and the service closes them when it stops. The judges
    and their servers come from here only, never from a request."""
    review: ReviewSettings | None = None
    """A run to serve the review page for (``serve --review RUN``) at ``/review/``, behind the
    service's keys when it has some (a browser logs in once at ``/review/login``)."""

    def __post_init__(self) -> None:
        if self.model is None and self.model_factory is None:
            raise ValueError("ServerSettings needs a model or a model_factory")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if self.max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        if self.max_input_chars is not None and self.max_input_chars < 0:
            raise ValueError("max_input_chars must be 0 (no limit) or more")
        if self.protect_docs and not self.api_keys:
            raise ValueError("protect_docs needs API keys (api_keys / --service-key-file / PROOFCRITIC_SERVICE_KEYS)")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout must be more than 0 seconds")
        check_score_mode(self.score_mode)
        self.db_path = Path(self.db_path)
        if self.state_dir is None:
            self.state_dir = Path(f"{self.db_path}.state")
