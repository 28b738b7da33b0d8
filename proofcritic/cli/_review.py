"""``proofcritic review RUN``: the review page for people in the loop (or ``--export`` the labels)."""

from __future__ import annotations

import getpass
import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import InputError

if TYPE_CHECKING:
    from ..pipelines.review import ReviewRun

__all__ = ["is_loopback", "review_command"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens on this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keys(service_key: list[str] | None, service_key_file: Path | None) -> list[str]:
    from ..server.settings import keys_from_env, keys_from_file

    keys = list(service_key or []) + keys_from_env()
    if service_key_file is not None:
        try:
            keys += keys_from_file(service_key_file)
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read the service key file {service_key_file}: {error}") from None
    if any(not k.strip() or any(c.isspace() for c in k) for k in keys):
        raise InputError("an API key must be non-empty and contain no whitespace")
    return keys


def _suite_problems(run: ReviewRun, data_dir: Path | None) -> str:
    """Fill an eval run's problems from the suite (or graded file) its config names; a note on
    what happened."""
    import json

    from ..pipelines.review import fill_problems

    try:
        config = json.loads((run.path / "config.json").read_text())
    except (OSError, ValueError):
        return "problem statements: the run folder has no readable config.json"
    suite = config.get("suite")
    if not suite:
        return "problem statements: the run's config names no suite"
    from ..benchmarks import GradeItem

    items: list[Any]
    try:
        if Path(suite).exists():
            from ..benchmarks import load_graded_file

            score_column = (config.get("settings") or {}).get("score_column")
            items = load_graded_file(Path(suite), score_column=score_column)
        else:
            from ..benchmarks import load_suite

            items = load_suite(suite, data_dir=data_dir)
    except (InputError, OSError) as error:
        return f"problem statements: suite {suite} could not be read ({error}); the page names the problems only"
    problems = {i.id: i.problem.model_dump(mode="json") for i in items if isinstance(i, GradeItem)}
    filled = fill_problems(run, problems)
    return f"problem statements: {filled} of {len(run.items)} item(s) from suite {suite}"


def review_command(
    run: Annotated[
        Path,
        typer.Argument(
            help="A label run (label --output) or review queue (label --review), a grade run (grade --output; "
            "give its --input), or an eval grade run folder."
        ),
    ],
    input_path: Annotated[
        Path | None,
        typer.Option("--input", help="A grade run's batch input (its records hold no problem or proof)."),
    ] = None,
    decisions: Annotated[
        Path | None,
        typer.Option("--decisions", help="The decisions file [RUN.reviews.jsonl beside a file, RUN/reviews.jsonl]."),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write the labels (human decisions over the auto-labels) to this JSONL file and exit, serving nothing.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="An eval run's suite data root (as eval's), for the problem statements."),
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", help="The name decisions are recorded under [your user name].")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8090,
    service_key: Annotated[
        list[str] | None,
        typer.Option("--service-key", help="A key reviewers must give (repeatable; prefer the file or variable)."),
    ] = None,
    service_key_file: Annotated[
        Path | None, typer.Option("--service-key-file", help="File of keys, one per line, as serve's.")
    ] = None,
) -> None:
    """Serve a review page for a run: filter its items, read each proof with its math typeset and the
    verifiers' issues marked in place, and record verdicts (saved at once beside the run).

    On 127.0.0.1 (the default) no key is needed; on any other address the page needs the
    service's keys (--service-key-file, PROOFCRITIC_SERVICE_KEYS or --service-key), asked for
    once in the browser.
    """
    from ..pipelines.review import ReviewStore, export_labels, load_run

    loaded = load_run(run, input_path, decisions)
    if loaded.kind == "eval":
        print(_suite_problems(loaded, data_dir), file=sys.stderr)
    if export is not None:
        counts = export_labels(loaded, ReviewStore(loaded.decisions_file), export)
        left = f"; {counts['left_out']} reviewed item(s) left out (no usable label or no statement)"
        print(
            f"exported {counts['records']} label record(s) to {export}: {counts['human']} from human review, "
            f"{counts['auto']} auto-label(s){left if counts['left_out'] else ''}",
            file=sys.stderr,
        )
        return
    keys = _keys(service_key, service_key_file)
    if not is_loopback(host) and not keys:
        raise InputError(
            f"review on {host} would let anyone who reaches it record verdicts: give it keys "
            "(--service-key-file, PROOFCRITIC_SERVICE_KEYS or --service-key), or listen on 127.0.0.1"
        )
    try:
        import uvicorn

        from ..server.review import ReviewSettings, create_review_app
    except ImportError as error:
        from ..errors import missing

        raise missing(error.name or "fastapi", "server") from None
    settings = ReviewSettings(run=loaded, reviewer=reviewer or getpass.getuser(), api_keys=keys)
    app = create_review_app(settings)
    auth = f"{len(keys)} key(s)" if keys else "no key (loopback only)"
    print(
        f"proofcritic review: {len(loaded.items)} item(s) of {run} ({loaded.kind} run) on "
        f"http://{host}:{port}/review/ ({auth}); decisions in {loaded.decisions_file}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
