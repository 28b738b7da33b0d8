"""The ``proofcritic`` command line: a thin layer over the Python API."""

from __future__ import annotations

import sys

import typer

from ..errors import ProofcriticError
from ._grade import grade_command
from ._cotrain import cotrain_command
from ._eval import compare_command, eval_app, report_command
from ._label import label_command, meta_verify_command
from ._lean import lean_check_command, lean_prove_command
from ._serve import serve_command
from ._serve_model import serve_model_command
from ._solve import solve_command
from ._train import train_app

app = typer.Typer(
    name="proofcritic",
    help="Make language models grade, critique and repair natural-language math proofs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("grade")(grade_command)
app.command("meta-verify")(meta_verify_command)
app.command("label")(label_command)
app.command("solve")(solve_command)
app.add_typer(eval_app, name="eval")
app.command("report")(report_command)
app.command("compare")(compare_command)
app.add_typer(train_app, name="train")
app.command("cotrain")(cotrain_command)
app.command("lean-check")(lean_check_command)
app.command("lean-prove")(lean_prove_command)
app.command("serve")(serve_command)
app.command("serve-model")(serve_model_command)


@app.callback()
def _root() -> None:
    """proofcritic: grade, critique and repair math proofs with language models."""


def main() -> None:
    """Entry point: named errors become one line on stderr and exit status 2.

    Usage errors are reported by the command-line parser itself (also status 2).
    """
    try:
        app()
    except ProofcriticError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
