"""The named errors of proofcritic.

Every error a user can cause or meet derives from :class:`ProofcriticError`; the CLI prints
these as one line. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any


class ProofcriticError(Exception):
    """Base class: an error with a message meant for the user."""


class InputError(ProofcriticError):
    """Bad user input: a missing file, an empty proof, binary data, an invalid JSONL line."""


class InputTooLargeError(InputError):
    """A text of the input (problem, proof, reference solution, guidelines) is over the input
    size limit (``--max-input-chars``); the service answers it with 413."""


class SetupError(ProofcriticError):
    """The environment cannot do what was asked (a Lean checker without its library, ...): no
    verdict on the input. One line and exit status 2 on the command line; a batch records the
    item (error kind ``setup``, tried again by a rerun) and starts no more items (``stops_run``)."""

    stops_run = True


class PromptError(ProofcriticError):
    """A prompt set is incomplete or a template uses a variable that is not provided."""


class MissingDependencyError(ProofcriticError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed; install it with: pip install 'proofcritic[{extra}]'")
        self.package = package
        self.extra = extra


class BackendError(ProofcriticError):
    """A backend call failed.

    ``retryable`` says whether the same call may succeed later (429, 5xx, timeouts, dropped
    connections); ``retry_after`` carries the server's Retry-After in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class AuthenticationError(BackendError):
    """The server refused the API key (401/403)."""


class ModelNotFoundError(BackendError):
    """The server does not serve the requested model (404 or a model-not-found error)."""


class UnsupportedFeatureError(BackendError):
    """The backend cannot do what was asked (for example likelihood scoring without logprobs)."""


class ContextLengthError(BackendError):
    """The prompt (with the new tokens asked for) does not fit the model's context: an
    OpenAI-compatible server's ``context_length_exceeded``, or a local backend's own check.
    Never retried; a batch records it with ``error_kind`` ``context``."""


class CircuitOpenError(BackendError):
    """The model's circuit breaker is open: its recent requests all failed, so calls fail at
    once instead of being sent (see :class:`~proofcritic.llm.CircuitBreaker`). Not retried; a
    batch stops starting items (``stops_run``) and records the failed ones as backend errors,
    which a rerun tries again."""

    stops_run = True


def first_error(error: Any, *, skip: Collection[str] = ()) -> tuple[str, str, str]:
    """The first error of a pydantic ``ValidationError`` (or FastAPI's ``RequestValidationError``)
    as ``(where, message, type)``: ``where`` the dotted location (parts in ``skip`` left out,
    "" for a model-wide check), ``message`` pydantic's words without its "Value error, " prefix,
    ``type`` pydantic's error type (``extra_forbidden``, ...)."""
    errors = error.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in skip)
    message = str(first.get("msg", error)).removeprefix("Value error, ")
    return where, message, str(first.get("type", ""))


def validation_line(error: Any, *, skip: Collection[str] = ()) -> str:
    """A validation error as one line: ``where: message`` (just the message when the check is
    model-wide), from :func:`first_error`. Every user-facing copy of a validation error is this."""
    where, message, _ = first_error(error, skip=skip)
    return f"{where}: {message}" if where else message


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, also on Python 3.10 (which has no ``add_note``: the note goes to
    ``__notes__`` as 3.11 puts it, where pytest and the service's one-line error read it)."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:
        notes = getattr(error, "__notes__", None)
        if notes is None:
            notes = []
            error.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)


def missing(package: str, extra: str) -> MissingDependencyError:
    """Shorthand used by ``except ImportError`` blocks."""
    return MissingDependencyError(package, extra)
