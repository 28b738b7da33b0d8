"""``proofcritic serve``: the HTTP service (jobs in sqlite + the OpenAI-compatible facade)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .._constants import DEFAULT_SCORE_MODE
from ..errors import InputError
from ._common import SCORE_MODE_HELP, ModelOptions, check_score_mode, with_model_options
from ._panel import JudgeOpt, PanelOpt, PanelRuleOpt, PanelThresholdOpt, build_panel

_SERVICE = "Service options"


@with_model_options
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.", rich_help_panel=_SERVICE)] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.", rich_help_panel=_SERVICE)
    ] = 8080,
    db: Annotated[
        Path,
        typer.Option(
            "--db",
            help="sqlite file holding the jobs (created if missing; unfinished jobs resume).",
            rich_help_panel=_SERVICE,
        ),
    ] = Path("jobs.sqlite"),
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Strategy state of solve jobs [<db>.state].", rich_help_panel=_SERVICE),
    ] = None,
    service_key: Annotated[
        list[str] | None,
        typer.Option(
            "--service-key",
            help="API key clients must send as 'Authorization: Bearer KEY' (repeatable). A key on the command line is visible to every process of the machine: prefer --service-key-file or PROOFCRITIC_SERVICE_KEYS. None of the three: no authentication.",
            rich_help_panel=_SERVICE,
        ),
    ] = None,
    service_key_file: Annotated[
        Path | None,
        typer.Option(
            "--service-key-file",
            help="File of API keys, one per line ('#' comments); keep it mode 0600.",
            rich_help_panel=_SERVICE,
        ),
    ] = None,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes", min=1024, help="Largest request body accepted (larger: 413).", rich_help_panel=_SERVICE
        ),
    ] = 2 * 1024 * 1024,
    max_jobs: Annotated[
        int,
        typer.Option(
            "--max-jobs", min=1, help="Jobs run at once (the rest wait in the queue).", rich_help_panel=_SERVICE
        ),
    ] = 8,
    request_max_calls: Annotated[
        int | None,
        typer.Option(
            "--request-max-calls",
            min=1,
            help="Model calls allowed per job or facade request.",
            rich_help_panel=_SERVICE,
        ),
    ] = None,
    request_max_tokens: Annotated[
        int | None,
        typer.Option(
            "--request-max-tokens", min=1, help="Tokens allowed per job or facade request.", rich_help_panel=_SERVICE
        ),
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option(
            "--max-retries",
            min=0,
            help="Retries of a failing upstream call (5xx, 429, dropped connection, timeout) before the request answers 503 or the job fails [5].",
            rich_help_panel=_SERVICE,
        ),
    ] = None,
    retry_wait: Annotated[
        float | None,
        typer.Option(
            "--retry-wait",
            min=0.0,
            help="Seconds before the first retry, doubling each time up to 60 (a Retry-After header overrides) [1].",
            rich_help_panel=_SERVICE,
        ),
    ] = None,
    protect_docs: Annotated[
        bool,
        typer.Option(
            "--protect-docs/--open-docs",
            help="Put /docs, /redoc and /openapi.json behind the service keys too.",
            rich_help_panel=_SERVICE,
        ),
    ] = False,
    score_mode: Annotated[
        str, typer.Option("--score-mode", help=SCORE_MODE_HELP + " A request may choose its own.")
    ] = DEFAULT_SCORE_MODE,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn log level.", rich_help_panel=_SERVICE)
    ] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.", rich_help_panel=_SERVICE)
    ] = False,
    review: Annotated[
        Path | None,
        typer.Option(
            "--review",
            help="Also serve the review page (as `proofcritic review RUN`) for this label run, review queue or eval run folder at /review/, behind the service keys.",
            rich_help_panel=_SERVICE,
        ),
    ] = None,
    judge: JudgeOpt = None,
    panel: PanelOpt = None,
    panel_rule: PanelRuleOpt = None,
    panel_threshold: PanelThresholdOpt = None,
    *,
    opts: ModelOptions,
) -> None:
    """Serve grade/solve/label jobs and an OpenAI-compatible /v1/chat/completions over the model.

    Jobs are kept in the --db sqlite file; a job left unfinished by a stopped service runs
    again when it starts (the completion cache answers the calls it had made). Docs at /docs.
    With --judge (or --panel), grade jobs that ask for "panel": true are graded by that judge
    panel on their own scale; the judges are the server's, never a request's.
    """
    try:
        import uvicorn

        from ..server import ServerSettings, create_app, keys_from_env, keys_from_file
    except ImportError as error:
        from ..errors import missing

        raise missing(error.name or "fastapi", "server") from None
    from ..llm import RetryPolicy

    check_score_mode(score_mode)
    keys = list(service_key or []) + keys_from_env()
    if service_key_file is not None:
        try:
            file_keys = keys_from_file(service_key_file)
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read the service key file {service_key_file}: {error}") from None
        if not file_keys:
            raise InputError(f"the service key file {service_key_file} holds no key")
        keys += file_keys
    if any(not k.strip() or any(c.isspace() for c in k) for k in keys):
        raise InputError("an API key must be non-empty and contain no whitespace")
    if protect_docs and not keys:
        raise typer.BadParameter(
            "needs a service key (--service-key-file, PROOFCRITIC_SERVICE_KEYS or --service-key)",
            param_hint="--protect-docs",
        )
    retry = None
    if max_retries is not None or retry_wait is not None:
        base = RetryPolicy()
        retry = RetryPolicy(
            max_attempts=base.max_attempts if max_retries is None else max_retries + 1,
            initial_wait=base.initial_wait if retry_wait is None else retry_wait,
        )
    built = build_panel(judge, panel, panel_rule, panel_threshold, "ternary", opts)  # (a request picks the scale)
    the_panel = built[0] if built is not None else None
    review_settings = None
    if review is not None:
        import getpass

        from ..pipelines.review import load_run
        from ..server.review import ReviewSettings

        review_settings = ReviewSettings(run=load_run(review), reviewer=getpass.getuser(), api_keys=keys)
    model = opts.build_model()
    settings = ServerSettings(
        model_factory=lambda: model,
        db_path=db,
        state_dir=state_dir,
        api_keys=keys,
        max_body_bytes=max_body_bytes,
        max_jobs=max_jobs,
        prompts=opts.prompt_set(),
        config=opts.sampling(),
        score_mode=check_score_mode(score_mode),
        max_calls=request_max_calls,
        max_tokens=request_max_tokens,
        max_input_chars=opts.max_input_chars,
        retry=retry,
        protect_docs=protect_docs,
        timeout=opts.timeout,
        panel=the_panel,
        review=review_settings,
    )
    auth = f"{len(keys)} API key(s)" if keys else "no authentication"
    docs = "docs at /docs (key needed)" if protect_docs else "docs at /docs"
    if review_settings is not None:
        docs += f"; review page for {review} at /review/ (decisions in {review_settings.run.decisions_file})"
    local = model.backend.describe()
    runs = f" ({local})" if local is not None else ""  # a local model: its weight type and threads
    judges = ""
    if the_panel is not None:
        threshold = "" if the_panel.threshold is None else f", threshold {the_panel.threshold:g} points"
        judges = (
            f"; judge panel of {len(the_panel.judges)} ({', '.join(the_panel.names)}; rule {the_panel.rule}"
            f'{threshold}) for grade requests with "panel": true'
        )
    print(
        f"proofcritic serve: {model.name}{runs} as proofcritic/* on http://{host}:{port}/v1 ({auth}); "
        f"jobs in {db}; {docs}{judges}",
        file=sys.stderr,
        flush=True,
    )
    # keep idle connections longer than clients do (httpx and aiohttp keep them 5 s and 15 s), so a
    # client never sends a request on a connection the service is closing at that moment
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=65,
        timeout_graceful_shutdown=5,
    )
