"""``proofcritic train``: GRPO per role, SFT, DPO and a step-classification PRM from a YAML config plus ``--set`` overrides.

Every command is a call of the Python API: ``load_config(FILE, overrides, recipe=...)`` then
``train_grpo`` / ``train_sft`` / ``train_dpo``. The config file holds the fields of the
recipe's dataclass (TRL's config fields plus proofcritic's), so there is no second schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

train_app = typer.Typer(
    rich_markup_mode=None,
    help="Train verifier, meta-verifier and generator models on TRL (GRPO, SFT, DPO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of config fields.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="KEY=VALUE override of a config field (YAML value); repeatable."),
]
OutputOpt = Annotated[Path | None, typer.Option("--output-dir", "-o", help="Where the trained model goes.")]


def _run(recipe: str, config: Path | None, overrides: list[str] | None, output_dir: Path | None, role: str | None):
    from ..training.prm import train_prm
    from ..training.recipes import load_config, train_dpo, train_grpo, train_sft

    given = list(overrides or [])
    if output_dir is not None:
        given.append(f"output_dir={output_dir}")
    if role is not None:
        given.append(f"role={role}")
    try:
        settings = load_config(config, given, recipe=recipe)
    except ValueError as error:  # ConfigError, and TRL's own checks
        raise typer.BadParameter(str(error), param_hint="--config/--set") from None
    trainers: dict[str, Callable[[Any], str]] = {
        "grpo": train_grpo,
        "sft": train_sft,
        "dpo": train_dpo,
        "prm": train_prm,
    }
    out = trainers[recipe](settings)
    typer.echo(out)


@train_app.command("verifier")
def verifier_command(config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None) -> None:
    """GRPO for the verifier: R_format * R_score * R_meta (reward_model = the meta-verifier, optional)."""
    _run("grpo", config, set_, output_dir, "verifier")


@train_app.command("meta-verifier")
def meta_verifier_command(config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None) -> None:
    """GRPO for the meta-verifier: R_format * R_score against reference meta scores."""
    _run("grpo", config, set_, output_dir, "meta_verifier")


RewardOpt = Annotated[
    str | None,
    typer.Option(
        "--reward",
        help="verifier (R_format * (alpha R_Y + beta R_Z), needs reward_model), answer (1 when the final "
        "answer matches the row's answer, else 0) or answer+verifier (the answer reward where a row has an "
        "answer, plus the verifier's weighted by reward_verifier_weight), or lean (Lean's verdict on the proof: "
        "what train prover runs); overrides the config's reward.",
    ),
]


@train_app.command("generator")
def generator_command(
    config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None, reward: RewardOpt = None
) -> None:
    """GRPO for the generator: R_format * (alpha R_Y + beta R_Z), reward_model = the verifier; or,
    with --reward answer, the answer-checked reward (1 when the final answer is right, else 0)."""
    given = [*(set_ or []), *([f"reward={reward}"] if reward is not None else [])]
    _run("grpo", config, given, output_dir, "generator")


@train_app.command("prover")
def prover_command(config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None) -> None:
    """RLPAF: GRPO for the generator as a Lean prover; the reward is Lean's verdict on its proof
    (1 when it keeps the statement and passes: no sorry, allowed axioms only; else 0), each file
    checked once through the config's checker (warm servers by default)."""
    _run("grpo", config, [*(set_ or []), "reward=lean"], output_dir, "generator")


@train_app.command("sft")
def sft_command(config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None) -> None:
    """Supervised fine-tuning on prompt/completion (or messages) rows."""
    _run("sft", config, set_, output_dir, None)


@train_app.command("dpo")
def dpo_command(config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None) -> None:
    """DPO on prompt/chosen/rejected rows, or on pairs mined from solve transcripts."""
    _run("dpo", config, set_, output_dir, None)


@train_app.command("prm")
def prm_command(config: ConfigOpt = None, set_: SetOpt = None, output_dir: OutputOpt = None) -> None:
    """A process reward model: a step-classification head on label-steps output (TRL stepwise rows)."""
    _run("prm", config, set_, output_dir, None)
