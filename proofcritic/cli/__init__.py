"""The ``proofcritic`` command line: a thin layer over the Python API."""

from __future__ import annotations

import gc
import sys

import typer

from ..errors import ProofcriticError
from ._common import flags_as_flags
from ._cotrain import cotrain_command
from ._eval import compare_command, eval_app, report_command
from ._eval_critic import eval_critic_command as _eval_critic  # noqa: F401  (registers `eval critic`)
from ._eval_formal import eval_formal_command as _eval_formal  # noqa: F401  (registers `eval formal`)
from ._export import export_command
from ._grade import grade_command
from ._label import label_command, meta_verify_command
from ._label_steps import label_steps_command
from ._lean import lean_check_command, lean_prove_command
from ._review import review_command
from ._rubric import rubric_command
from ._serve import serve_command
from ._serve_model import serve_model_command
from ._shape import shape_command
from ._solve import solve_command
from ._train import train_app

app = typer.Typer(
    rich_markup_mode=None,
    name="proofcritic",
    help="Make language models grade, critique and repair natural-language math proofs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("grade")(grade_command)
app.command("meta-verify")(meta_verify_command)
app.command("rubric")(rubric_command)
app.command("label")(label_command)
app.command("label-steps")(label_steps_command)
app.command("solve")(solve_command)
app.command("shape")(shape_command)
app.add_typer(eval_app, name="eval")
app.command("report")(report_command)
app.command("compare")(compare_command)
app.add_typer(train_app, name="train")
app.command("cotrain")(cotrain_command)
app.command("lean-check")(lean_check_command)
app.command("lean-prove")(lean_prove_command)
app.command("serve")(serve_command)
app.command("serve-model")(serve_model_command)
app.command("review")(review_command)
app.command("export")(export_command)
flags_as_flags(app)  # after every command is registered


@app.callback()
def _root() -> None:
    """proofcritic: grade, critique and repair math proofs with language models."""


def _error_line(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)


def main() -> None:
    """Entry point: every error a user causes is one line on stderr and exit status 2, both the
    named errors and the parser's usage errors (a bad option or value: ``error: Invalid value
    for '--temperature': must be greater than or equal to 0``).
    """
    try:
        _main()
    finally:
        # the process ends here: what is alive now dies with it, so the garbage collector need not
        # scan it all again while the interpreter shuts down (a tenth of a second after a batch)
        gc.freeze()


def _main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # the parser's errors: usage errors (status 2), a bad file, ...
        if type(error).__name__ == "NoArgsIsHelpError":  # a command without arguments: its help
            print(error.format_message())
        else:
            _error_line(error.format_message())
        sys.exit(error.exit_code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except ProofcriticError as error:
        _error_line(str(error))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
