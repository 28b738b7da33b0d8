"""Options shared by commands, and the one place the CLI turns flags and environment into a Model."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from .._constants import (
    DEFAULT_MAX_INPUT_CHARS,
    DEFAULT_ROUTING_EPSILON,
    DEFAULT_SAMPLING,
    DTYPES,
    MAX_INPUT_CHARS_ENV,
    ROUTINGS,
    SAMPLING_HELP,
    TRANSPORTS,
    ScoreMode,
)
from .._constants import check_score_mode as _check_score_mode
from ..budget import CallPlan

# The parser is built from this module and the commands' modules with nothing heavier than
# typer (`proofcritic --help` and an argument error are instant): pydantic, rich's console, the
# models, roles and pipelines are imported inside the functions that use them.
if TYPE_CHECKING:
    from rich.console import Console

    from ..llm import GenerateConfig, Model, Usage
    from ..progress import LiveProgress
    from ..promptset import PromptSet
    from ..runner import RunStats

T = TypeVar("T")

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="BACKEND/MODEL (e.g. transformers/smollm2, openai/gpt-4o), or MODEL with --backend."
    ),
]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="transformers, openai, vllm or sglang.")]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--base-url",
        help="OpenAI-compatible server URL (env: OPENAI_BASE_URL). Give it several times, or comma-separated, "
        "for replicas of one model: requests are spread over them, a failing one is taken out until it recovers.",
    ),
]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (env: OPENAI_API_KEY).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the completion cache.")]
CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="Cache file (env: PROOFCRITIC_CACHE; default: user cache dir).")
]
PromptsOpt = Annotated[
    Path | None, typer.Option("--prompts", help="Folder of prompt templates to use instead of the built-in set.")
]


def bounded(model: str, field: str) -> Callable[[Any], Any]:
    """A typer callback holding an option to the bounds of ``model.field`` (``--temperature`` to
    GenerateConfig's, ``--max-points`` to Problem's, ...), so each bound is defined once, in the
    model; a value outside them is the CLI's one-line usage error (exit status 2). ``model`` is
    the pydantic model as ``"module:Class"``, imported when a value is given."""

    def check(value: Any) -> Any:
        if value is not None:
            from pydantic import ValidationError

            from ..errors import first_error

            module, _, name = model.partition(":")
            model_class = getattr(importlib.import_module(module), name)
            try:
                model_class.__pydantic_validator__.validate_assignment(model_class.model_construct(), field, value)
            except ValidationError as error:
                raise typer.BadParameter(first_error(error)[1]) from None
        return value

    return check


def positive_seconds(value: float | None) -> float | None:
    """A typer callback for a duration option: more than 0 seconds and finite."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number of seconds more than 0, not {value:g}")
    return value


def sampling_option(field: str) -> Any:
    """The command-line option of :class:`~proofcritic.llm.SamplingOptions`' ``field``
    (``top_p`` -> ``--top-p``): its words (``SAMPLING_HELP``) with the roles' default, and its
    bounds checked by the model's field."""
    default = DEFAULT_SAMPLING.get(field)
    words = SAMPLING_HELP[field].removesuffix(".") + (f" (default: {default})." if default is not None else ".")
    return typer.Option(
        "--" + field.replace("_", "-"), callback=bounded("proofcritic.llm:SamplingOptions", field), help=words
    )


TemperatureOpt = Annotated[float | None, sampling_option("temperature")]
TopPOpt = Annotated[float | None, sampling_option("top_p")]
MaxTokensOpt = Annotated[int | None, sampling_option("max_tokens")]
SeedOpt = Annotated[int | None, sampling_option("seed")]
ConcurrencyOpt = Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests in flight at once.")]
MaxInputCharsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-input-chars",
        min=0,
        metavar="N",
        help=f"Characters allowed per problem, proof, reference solution or guidelines; longer: an input error "
        f"(0: no limit; env: {MAX_INPUT_CHARS_ENV}) [{DEFAULT_MAX_INPUT_CHARS}].",
    ),
]


TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        callback=positive_seconds,
        metavar="SECONDS",
        help="Seconds one request to a model server may take before it fails (and is retried) [600].",
    ),
]
MaxConnectionsPerHostOpt = Annotated[
    int | None,
    typer.Option(
        "--max-connections-per-host",
        min=1,
        metavar="N",
        help="Requests in flight to one model server (each --base-url) at most; the others wait for a free "
        "connection, their --timeout starting once sent (default: no cap but --concurrency).",
    ),
]


def one_of(values: Sequence[str]) -> Callable[[str | None], str | None]:
    """A typer callback that accepts None (not given) or one of ``values``."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"must be one of {', '.join(values)}, not {value!r}")
        return value

    return check


TransportOpt = Annotated[
    str | None,
    typer.Option(
        "--transport",
        callback=one_of(TRANSPORTS),
        metavar="lean|aiohttp|openai",
        help="HTTP client of a server backend: lean (the default: proofcritic's own HTTP/1.1 keep-alive client "
        "for http:// servers, aiohttp for https://), aiohttp (every request through aiohttp) or openai (the "
        "openai package, for hosted APIs with quirks).",
    ),
]


RoutingOpt = Annotated[
    str | None,
    typer.Option(
        "--routing",
        callback=one_of(ROUTINGS),
        metavar="prefix|least-loaded",
        help="How requests are spread over several --base-url replicas: prefix (the default: requests with the "
        "same first user message, such as the verifications of one proof, go to one replica while its requests in "
        "flight stay below (1 + --routing-epsilon) x the mean, so its prefix cache is reused) or least-loaded "
        "(the replica with the fewest requests in flight).",
    ),
]
RoutingEpsilonOpt = Annotated[
    float | None,
    typer.Option(
        "--routing-epsilon",
        min=0.0,
        metavar="EPS",
        help=f"Load bound of --routing prefix: a replica takes a request of its prefixes while its requests in "
        f"flight are below (1 + EPS) x the mean over the replicas; else the next replica in the prefix's order "
        f"[{DEFAULT_ROUTING_EPSILON}].",
    ),
]


DtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        callback=one_of(DTYPES),
        metavar="auto|float32|bfloat16|float16",
        help="Weight type of a local model (transformers, vllm-offline): float32 (the default on a CPU: exact, "
        "batched generation gives one-at-a-time's greedy texts), bfloat16, float16, or auto (transformers on a CPU: "
        "float32 generation with a bfloat16 likelihood read-out where the CPU has native bfloat16; on a GPU and "
        "for vllm-offline: the engine's choice from the checkpoint). Part of the cache key.",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        metavar="N",
        help="torch threads of the transformers backend on a CPU (default: OMP_NUM_THREADS, else every CPU with "
        "OpenMP's waiting threads sleeping, OMP_WAIT_POLICY=PASSIVE, so that a second busy process does not stall it).",
    ),
]
SCORE_MODE_HELP = (
    "text (a verification that wrote no valid score has none) | the opt-in read-outs, marked as such in the "
    "output: auto (likelihood read-out when no score is written) | logprob (always) | guided (when no score "
    "is written, the server is forced to one of 0, 0.5, 1; falls back to the likelihood read-out)."
)


def check_score_mode(value: str) -> ScoreMode:
    """``value`` if it is a score mode, else the CLI's one-line parameter error."""
    try:
        return _check_score_mode(value)
    except ValueError as error:
        raise typer.BadParameter(str(error).removeprefix("score_mode "), param_hint="--score-mode") from None


def check_scale(scale: str, score_mode: str) -> str:
    """``--scale`` if it is ``ternary`` or ``points``, else the CLI's one-line parameter error;
    points grading reads its points from the text, so it takes ``--score-mode text`` only."""
    if scale not in ("ternary", "points"):
        raise typer.BadParameter(f"choose ternary or points, not {scale!r}", param_hint="--scale")
    if scale == "points" and score_mode != "text":
        raise typer.BadParameter(
            "points grading reads the points from the text: --score-mode text", param_hint="--scale"
        )
    return scale


#: every command's ``--score-mode`` (the modes and the default are the verifier's, see Verifier)
ScoreModeOpt = Annotated[str, typer.Option("--score-mode", help=SCORE_MODE_HELP, callback=check_score_mode)]


def build_model(
    model: str | None,
    backend: str | None,
    base_url: str | Sequence[str] | None,
    api_key: str | None,
    no_cache: bool,
    cache: Path | None,
    concurrency: int | None,
    timeout: float | None = None,
    max_connections_per_host: int | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    transport: str | None = None,
    routing: str | None = None,
    routing_epsilon: float | None = None,
) -> Model:
    """Resolve flags and environment variables into a ready Model.

    ``base_url``: one URL, a comma-separated string, or a list of either (replicas).
    ``timeout``: seconds per request of a server backend (a local backend sends none).
    ``max_connections_per_host``: a server backend's cap of requests in flight per base URL.
    ``transport``: a server backend's HTTP client (lean, aiohttp, openai); a local backend
    refuses it (an input error), and so it does ``routing`` and ``routing_epsilon`` (how
    requests are spread over several base URLs).
    ``dtype``, ``threads``: a local backend's weight type and torch threads (a server backend
    refuses them: an input error).
    """
    from ..llm import DEFAULT_MODEL, get_model, split_base_urls

    if model is None:
        model = "smollm2" if backend in (None, "transformers") else None
        if model is None:
            raise typer.BadParameter("--model is required with this backend", param_hint="--model")
        if backend is None:
            model = DEFAULT_MODEL
    kind = backend or model.partition("/")[0]
    options: dict = {}
    if kind in ("openai", "vllm", "sglang"):
        urls = split_base_urls(base_url) or split_base_urls(os.environ.get("OPENAI_BASE_URL"))
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if urls:
            options["base_url"] = urls if len(urls) > 1 else urls[0]
        if key:
            options["api_key"] = key
        if timeout is not None:
            options["timeout"] = timeout
        if max_connections_per_host is not None:
            options["max_connections_per_host"] = max_connections_per_host
    if transport is not None:
        options["transport"] = transport
    if routing is not None:
        options["routing"] = routing
    if routing_epsilon is not None:
        options["routing_epsilon"] = routing_epsilon
    if dtype is not None:
        options["dtype"] = dtype
    if threads is not None:
        options["threads"] = threads
    elif kind == "transformers" and os.environ.get("PROOFCRITIC_CACHE_DIR"):
        options["cache_root"] = os.environ["PROOFCRITIC_CACHE_DIR"]
    cache_setting: bool | str = False if no_cache else str(cache or os.environ.get("PROOFCRITIC_CACHE") or "") or True
    return get_model(model, backend=backend, cache=cache_setting, max_concurrency=concurrency, **options)


def sampling(
    temperature: float | None, top_p: float | None, max_tokens: int | None, seed: int | None
) -> GenerateConfig:
    """The sampling flags as :class:`~proofcritic.llm.SamplingOptions`, then a GenerateConfig of
    only the settings the user gave, so role defaults stay in force for the rest."""
    from ..llm import SamplingOptions

    return SamplingOptions(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed).as_config()


@contextmanager
def run_progress(
    label: str,
    console: Console,
    models: Sequence[Model | None] = (),
    extra: Callable[[RunStats], str] | None = None,
) -> Iterator[LiveProgress]:
    """The live progress of a batch (items done of the total, errors, ETA, the ``models``'
    calls and tokens, elapsed time, solving strategies' states; see :mod:`proofcritic.progress`:
    a display on a terminal, else a plain line every 10 s), itself the ``on_progress`` callback
    that drives it (its ``on_round`` is a strategy's hook). ``extra(stats)`` adds words after
    the items (``3 labeled, 1 to review``)."""
    from ..progress import LiveProgress

    with LiveProgress(label, console, models, batch=True, extra=extra) as progress:
        yield progress


#: planned model calls from which a run prints its plan before it starts
LARGE_RUN_CALLS = 100

DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the plan (items, model calls at most, settings) and exit: no model is loaded or called.",
    ),
]


def with_readouts(plan: CallPlan, score_mode: str) -> CallPlan:
    """``plan`` with the likelihood read-outs a score mode may add: up to one per verification
    (``logprob``: one for each; ``text``: none)."""
    verifications = plan.samples.get("verification", 0)
    return plan if score_mode == "text" or not verifications else plan + CallPlan().add("read-out", verifications)


def show_plan(
    console: Console,
    what: str,
    items: int,
    per_item: CallPlan,
    settings: dict[str, Any],
    *,
    dry_run: bool,
    unit: str = "item",
) -> None:
    """Before a run: the model calls it plans at most, per ``unit`` and for all ``items``
    (each strategy and command computes its own plan). Printed on stderr when the run plans
    :data:`LARGE_RUN_CALLS` calls or more; with ``dry_run`` printed on stdout with the
    ``settings``, and the command ends there (exit status 0): no model is loaded or called."""
    from rich.console import Console

    total = per_item.times(items)
    if not dry_run and total.total_calls < LARGE_RUN_CALLS:
        return
    out = Console(soft_wrap=True, highlight=False) if dry_run else console
    out.print(f"plan: {what}, {items:,} {unit}(s)", markup=False, highlight=False, soft_wrap=True)
    out.print(f"  per {unit}: at most {per_item.text()}", markup=False, highlight=False, soft_wrap=True)
    if per_item.note:
        out.print(f"  ({per_item.note})", markup=False, highlight=False, soft_wrap=True)
    if items != 1:
        out.print(f"  in all: at most {total.text()}", markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        shown = ", ".join(f"{key}={value}" for key, value in settings.items() if value is not None)
        out.print(f"  settings: {shown}", markup=False, highlight=False, soft_wrap=True)
        out.print("dry run: nothing was loaded or called", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(0)


def calls_text(usage: Usage) -> str:
    """What a Usage counts, in words: the new calls (every request sent to the model, failed
    ones and likelihood read-outs included, and how many of each), the calls the cache
    answered, the tokens the model reported for the new ones."""
    line = (
        f"model calls: {usage.calls} new, {usage.cached_calls} from cache; "
        f"tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
    )
    detail = [
        f"{n} {what}"
        for n, what in ((usage.failed_calls, "failed"), (usage.readout_calls, "likelihood read-outs"))
        if n
    ]
    return line + (f"; the new calls include {' and '.join(detail)}" if detail else "")


def local_model_text(model: Model) -> str | None:
    """``local model transformers/smollm2: float32 (read-out bfloat16), 1 torch thread``: the
    weight type and threads a local backend runs with (None for a server backend)."""
    described = model.backend.describe()
    return f"local model {model.name}: {described}" if described is not None else None


def usage_line(console: Console, model: Model) -> None:
    """The closing line of a model-using command (:func:`calls_text`); then one line per
    endpoint when the model is served by several (or one of them failed), and a line when the
    circuit breaker stopped sending requests. A local model's line comes first: how it ran
    (:func:`local_model_text`)."""
    local = local_model_text(model)
    if local:
        console.print(f"[dim]{local}[/]", highlight=False, soft_wrap=True, markup=True)
    console.print(f"[dim]{calls_text(model.usage)}[/]", highlight=False, soft_wrap=True)
    for line in endpoint_lines(model):
        console.print(f"[dim]{line}[/]", highlight=False, soft_wrap=True)
    if model.breaker.state != "closed":
        console.print(
            f"[dim]circuit breaker {model.breaker.state}: requests stopped after {model.breaker.failures} failed in a row[/]",
            highlight=False,
            soft_wrap=True,
        )


def run_with_model(
    model: Model | None,
    console: Console,
    work: Callable[[], Awaitable[T]],
    *,
    closing: Sequence[Any] = (),
    usage: bool = True,
) -> T:
    """Run a command's ``work()`` in a fresh event loop and return its result; whatever happens
    (an error, Ctrl-C), then close ``closing`` (tools, a strategy: anything with ``aclose``), print
    the usage line (:func:`usage_line`; ``usage=False``: none) and close ``model`` (None: no model,
    as ``eval grade --from-recorded``). The one way each model-using command runs."""
    import asyncio

    async def main() -> T:
        try:
            return await work()
        finally:
            for item in closing:
                close = getattr(item, "aclose", None)
                if close is not None:
                    await close()
            if model is not None:
                if usage:
                    usage_line(console, model)
                await model.aclose()

    return asyncio.run(main())


def _one_line(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def endpoint_lines(model: Model) -> list[str]:
    """One summary line per endpoint of a multi-endpoint backend (also for a single endpoint
    that saw failures); nothing for other backends. The state is what the requests showed:
    up, down (its latest requests failed), out (ejected), unused. With several endpoints the
    line counts the prefix hits (requests whose prompt prefix had been sent there before)."""
    stats = model.backend.endpoint_stats()
    if len(stats) < 2 and not any(s["failures"] for s in stats):
        return []
    lines = []
    for s in stats:
        state = s.get("state") or ("up" if s["healthy"] else "out")
        if state == "out":
            state = f"out ({s['down_for_s']:g} s left; last error: {_one_line(s['last_error'])})"
        elif state == "down":
            answered = s["successes"] + s["rejected"]
            failed = (
                f"{s['failures']} of {s['requests']} requests failed, none answered"
                if not answered
                else f"the last {s['failing']} requests failed ({s['failures']} of {s['requests']} in all)"
            )
            state = f"down ({failed}; last error: {_one_line(s['last_error'])})"
        hits = f", {s['prefix_hits']} prefix hits" if len(stats) > 1 and "prefix_hits" in s else ""
        lines.append(
            f"endpoint {s['url']}: {s['requests']} requests, {s['failures']} failed, {s['ejections']} ejections, "
            f"{s['in_flight']} in flight, {s['tokens']} tokens{hits}; {state}"
        )
    return lines


@dataclass
class ModelOptions:
    """The model, sampling, prompt and cache options every model-using command takes."""

    model: ModelOpt = None
    backend: BackendOpt = None
    base_url: BaseUrlOpt = None
    api_key: ApiKeyOpt = None
    prompts: PromptsOpt = None
    temperature: TemperatureOpt = None
    top_p: TopPOpt = None
    max_tokens: MaxTokensOpt = None
    seed: SeedOpt = None
    concurrency: ConcurrencyOpt = None
    no_cache: NoCacheOpt = False
    cache: CacheOpt = None
    max_input_chars: MaxInputCharsOpt = None
    timeout: TimeoutOpt = None
    max_connections_per_host: MaxConnectionsPerHostOpt = None
    dtype: DtypeOpt = None
    threads: ThreadsOpt = None
    transport: TransportOpt = None
    routing: RoutingOpt = None
    routing_epsilon: RoutingEpsilonOpt = None

    def build_model(self) -> Model:
        return build_model(
            self.model,
            self.backend,
            self.base_url,
            self.api_key,
            self.no_cache,
            self.cache,
            self.concurrency,
            self.timeout,
            max_connections_per_host=self.max_connections_per_host,
            dtype=self.dtype,
            threads=self.threads,
            transport=self.transport,
            routing=self.routing,
            routing_epsilon=self.routing_epsilon,
        )

    def sampling(self) -> GenerateConfig:
        return sampling(self.temperature, self.top_p, self.max_tokens, self.seed)

    def prompt_set(self) -> PromptSet:
        from ..promptset import PromptSet

        return PromptSet.load(self.prompts)


def with_model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command the shared options, passed to it as ``opts: ModelOptions``.

    The command declares only its own options plus ``opts``; the shared ones are appended to
    its signature here, so every command spells, documents and resolves them the same way.
    """
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "opts"]
    hints = {k: v for k, v in inspect.get_annotations(command, eval_str=True).items() if k != "opts"}
    shared = []
    for field in fields(ModelOptions):
        hint = ModelOptions.__annotations__[field.name]
        hints[field.name] = eval(hint, globals()) if isinstance(hint, str) else hint
        shared.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=hints[field.name]
            )
        )
    names = [f.name for f in fields(ModelOptions)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from ..io import input_limit, max_input_chars
        from ..progress import progress_interval

        opts = ModelOptions(**{name: kwargs.pop(name) for name in names})
        if opts.max_input_chars is None:
            max_input_chars()  # a bad PROOFCRITIC_MAX_INPUT_CHARS fails here, once, not in every item
        progress_interval()  # and a bad PROOFCRITIC_PROGRESS_INTERVAL before any model loads
        with input_limit(opts.max_input_chars):  # every input the command reads is held to it
            return command(**kwargs, opts=opts)

    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)) for p in own]
    wrapper.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = hints
    return wrapper


#: key -> the function that writes an option's help text (see :func:`help_later`)
_LATER_HELP: dict[str, Callable[[], str]] = {}


def help_later(key: str, text: Callable[[], str]) -> str:
    """The help of an option whose text needs a heavy module (``eval``'s ``--suite`` lists the
    suites of the benchmark registry): the parser holds a key, and ``text()`` is called only
    when that command's help is drawn (see :class:`_FlagHelp`), so building the parser, the
    other helps and argument errors never import it."""
    placeholder = f"\x00help-later:{key}"
    _LATER_HELP[placeholder] = text
    return placeholder


class _FlagHelp:
    """Help that shows a flag as a flag: typer's rich help gives every option a type column,
    flags included (``--help <bool>``, ``--overwrite <bool>``), as if they took a value. While
    the help is drawn a flag's column is left empty; parsing and errors are typer's own. The
    help texts of :func:`help_later` are written in while the help is drawn, too."""

    def get_help_option(self, ctx: Any) -> Any:
        """The ``--help`` option, False when not given: typer coerces a None value through a
        pydantic adapter (importing pydantic for a group's ``--help`` before any subcommand
        runs: ``grade --help`` or an argument error paid for it), a bool it takes as it is."""
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.default is None:
            option.default = False
        return option

    def format_help(self, ctx: Any, formatter: Any) -> None:
        flags = [p for p in self.get_params(ctx) if getattr(p, "is_flag", False) and p.metavar is None]  # type: ignore[attr-defined]
        later = [(p, p.help) for p in self.get_params(ctx) if getattr(p, "help", None) in _LATER_HELP]  # type: ignore[attr-defined]
        for param in flags:
            param.metavar = ""
        for param, key in later:
            param.help = _LATER_HELP[key]()
        try:
            super().format_help(ctx, formatter)  # type: ignore[misc]
        finally:
            for param in flags:
                param.metavar = None
            for param, key in later:
                param.help = key


class FlagHelpCommand(_FlagHelp, TyperCommand):
    """A typer command whose help shows flags as flags (see :func:`flags_as_flags`)."""


class FlagHelpGroup(_FlagHelp, TyperGroup):
    """A typer group whose help shows flags as flags (see :func:`flags_as_flags`)."""


def flags_as_flags(app: typer.Typer) -> typer.Typer:
    """Give every command and group of ``app`` (sub-apps included) the help of
    :class:`FlagHelpCommand` / :class:`FlagHelpGroup`, unless it chose a class of its own."""
    if app.info.cls is None or isinstance(app.info.cls, DefaultPlaceholder):
        app.info.cls = FlagHelpGroup
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = FlagHelpCommand
    for group in app.registered_groups:
        if isinstance(group.typer_instance, typer.Typer):
            flags_as_flags(group.typer_instance)
    return app
