"""``proofcritic cotrain``: the co-training loop of SPEC section 4, resumable step by step.

A call of :func:`proofcritic.training.cotrain.cotrain`; rerunning the same command on the same
work folder resumes it (finished steps are skipped, an interrupted step is redone).
Register with ``app.command("cotrain")(cotrain_command)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def cotrain_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Cotrain YAML: base_model, problems, dv, dmv, grpo, "
            "verifier/meta_verifier/generator overrides, sample, label, rft.",
        ),
    ],
    workdir: Annotated[Path, typer.Option("--workdir", "-w", help="Work folder: iter_K/<step>/ with manifest.json.")],
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1, help="Iterations to run (in all).")] = 1,
) -> None:
    """Co-train verifier and generator (SPEC 4): verifier GRPO, generator init + GRPO, sample,
    auto-label, merge into D_v/D_mv; resumable at step granularity."""
    from ..training.cotrain import cotrain

    result = cotrain(config, workdir, iterations, log=lambda message: typer.echo(message, err=True), progress=True)
    typer.echo(json.dumps(result, indent=2))


def _main() -> None:  # ``python -m proofcritic.cli._cotrain``, until the command is registered
    app = typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False)
    app.command()(cotrain_command)
    app()


if __name__ == "__main__":
    _main()
