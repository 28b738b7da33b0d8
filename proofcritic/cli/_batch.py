"""What the batch commands (grade, label, solve, eval grade, eval solve, lean-prove) share beyond
the model options: ``--overwrite``, the settings recorded with an output, and the exit status."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import InputError
from ._common import ModelOptions

if TYPE_CHECKING:  # imported where used: the parser is built without them
    from ..promptset import PromptSet
    from ..runner import RunStats

OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Start a fresh output: remove what an earlier run left there instead of resuming it."
    ),
]


def model_name(opts: ModelOptions) -> str:
    """``BACKEND/MODEL`` as the options name it (``--backend B --model M`` is ``B/M``)."""
    from ..llm import DEFAULT_MODEL, split_model_spec

    if opts.model is None:
        return DEFAULT_MODEL  # the only model the options may leave out
    try:
        kind, name = split_model_spec(opts.model, opts.backend)
    except InputError:
        return opts.model  # building the model reports it
    return f"{kind}/{name}"


def result_settings(command: str, opts: ModelOptions | None, prompts: PromptSet | None, **own: Any) -> dict[str, Any]:
    """The settings that change a batch's results: the command, the model (backend/name, not its
    URL: replicas may change), the prompt set (a hash of its templates), the sampling options
    given (None: the roles' defaults), a local model's ``--dtype`` other than its default, then
    the command's ``own``. Without ``opts`` (no model
    is used) only the command and ``own``."""
    settings: dict[str, Any] = {"command": command}
    if opts is not None:
        settings |= {
            "model": model_name(opts),
            "prompts": prompts.fingerprint() if prompts is not None else None,
            "temperature": opts.temperature,
            "top_p": opts.top_p,
            "max_tokens": opts.max_tokens,
            "seed": opts.seed,
        }
        dtype = _dtype_setting(opts)
        if dtype is not None:  # recorded only where it is not the default (older outputs have none)
            settings["dtype"] = dtype
    return settings | own


def _dtype_setting(opts: ModelOptions) -> str | None:
    """``--dtype`` as a result-changing setting: None for the backend's default type (float32
    for transformers on a CPU, vLLM's auto for vllm-offline), so ``--dtype float32`` resumes an
    output made without it."""
    if opts.dtype is None:
        return None
    default = "auto" if model_name(opts).partition("/")[0] == "vllm-offline" else "float32"
    return None if opts.dtype == default else opts.dtype


def prepare(output: Path, settings: dict[str, Any], overwrite: bool, companions: Iterable[Path] = ()) -> None:
    """:func:`~proofcritic.runner.prepare_output` with its warning on stderr; a settings
    mismatch is an InputError (one line, exit status 2)."""
    from ..runner import prepare_output

    warning = prepare_output(output, settings, overwrite=overwrite, companions=companions)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def exit_status(stats: RunStats | None) -> None:
    """After a batch has written its output: when items failed (or a stopped run left some), the
    one-line summary on stderr and exit status 1; nothing otherwise (exit status 0)."""
    line = stats.failure_summary() if stats is not None else None
    if line:
        typer.echo(line, err=True)
        raise typer.Exit(1)
