"""Tool-integrated GRPO rollouts (issue #19 point 2): the generator calls the sandbox while it writes.

TRL 1.16's ``GRPOTrainer`` runs tools through the model's chat template: the prompt is rendered
with the tools' JSON schemas, a completion that holds a tool call (parsed by the tokenizer's
response template) gets the tool's result as a ``tool`` message, and generation goes on from
there; the tool's tokens are masked out of the loss. :func:`sandbox_environment_factory` builds
the ``environment_factory`` it takes: one :class:`SandboxEnvironment` per rollout, reset for each
prompt, whose one tool, ``python(code)``, runs the code in the project's sandbox
(:class:`~proofcritic.tools.PythonTool` on a shared :class:`~proofcritic.tools.SandboxPool`:
bubblewrap when present, the same time, memory and output limits as ``solve --strategy tora``)
and returns what the model sees (stdout, then the error or the limit hit). Each rollout may run
``max_tool_calls`` programs; a call beyond that is answered "no more code runs" without running.

Every run is counted in a :class:`ToolRunStats`, whose :meth:`~ToolRunStats.drain` gives the
per-step metrics ``tools/sandbox_runs``, ``tools/sandbox_errors``, ``tools/sandbox_limit_hits``,
``tools/refused_calls`` and ``tools/runs_per_rollout`` beside TRL's own ``tools/call_frequency``
and ``tools/failure_frequency``, and which appends each run (code, what the model was shown) to a
JSONL log, ``OUTPUT_DIR/proofcritic_tool_runs.jsonl`` in a training run.

The chat template must render a tool-calling conversation and TRL must know how to parse its tool
calls; :func:`tool_chat_template` picks it (``tool_chat_template`` in the config): the model's own
when it can (``auto``, ``model``), else TRL's ChatML tool template (Qwen2.5's, ``<tool_call>``
JSON) for a tokenizer whose turns are ChatML's ``<|im_start|>``/``<|im_end|>`` (SmolLM2 and the
tests' tiny model), which ``auto`` chooses and ``chatml`` forces.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import InputError
from ..tools import PythonTool, SandboxPool
from ._configs import ROLLOUT_TOOLS, TOOL_CHAT_TEMPLATES

__all__ = [
    "ROLLOUT_TOOLS",
    "TOOL_CHAT_TEMPLATES",
    "SandboxEnvironment",
    "ToolRunStats",
    "sandbox_environment_factory",
    "tool_chat_template",
]


class ToolRunStats(TrainerCallback):
    """Counts of the sandbox runs of a training run, shared by every rollout's environment
    (thread-safe: TRL runs the tools on its own event loop thread); with ``path``, every run is
    also appended to that JSONL file (``step``, ``rollout``, ``call``, ``code``, ``ok``,
    ``error``, ``limit_hit``, ``output``: what the model was shown, ``duration``). As a trainer
    callback it learns the step each run belongs to."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self.path = Path(path) if path else None
        self.step = 0
        self.total = {"runs": 0, "errors": 0, "limit_hits": 0, "refused": 0, "rollouts": 0}
        self._pending = dict.fromkeys(self.total, 0)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1

    def add(self, key: str, count: int = 1) -> int:
        """Count ``count`` more of ``key``; returns the new total."""
        with self._lock:
            self.total[key] += count
            self._pending[key] += count
            return self.total[key]

    def record(self, entry: dict[str, Any]) -> None:
        """Append one run's record to the log file (when there is one)."""
        if self.path is None:
            return
        line = json.dumps({"step": self.step, **entry}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)

    def drain(self) -> dict[str, float]:
        """The metrics since the last call (none when no rollout was reset in between)."""
        with self._lock:
            pending, self._pending = self._pending, dict.fromkeys(self.total, 0)
        if not pending["rollouts"]:
            return {}
        return {
            "tools/sandbox_runs": float(pending["runs"]),
            "tools/sandbox_errors": float(pending["errors"]),
            "tools/sandbox_limit_hits": float(pending["limit_hits"]),
            "tools/refused_calls": float(pending["refused"]),
            "tools/runs_per_rollout": pending["runs"] / pending["rollouts"],
        }


class SandboxEnvironment:
    """One rollout's access to the sandbox (TRL's environment protocol): ``reset(**row)`` starts a
    rollout (the prompt stays as it is), ``python(code)`` is the tool. ``calls`` records the
    rollout's runs (code, ok, error, limit)."""

    def __init__(self, tool: PythonTool, stats: ToolRunStats, max_tool_calls: int):
        self._tool, self._stats, self._max = tool, stats, max_tool_calls
        self.calls: list[dict[str, Any]] = []
        self.rollout = 0

    def reset(self, **row: Any) -> None:
        self.calls = []
        self.rollout = self._stats.add("rollouts")  # no observation: the prompt stays as it is

    async def _run(self, code: str) -> str:
        code = str(code)
        if len(self.calls) >= self._max:
            self._stats.add("refused")
            self._stats.record({"rollout": self.rollout, "call": None, "code": code, "refused": True})
            return (
                f"Not run: this solution has used all {self._max} code runs it may make. "
                "Finish the solution without code."
            )
        output = await self._tool.run(code)
        call = {"code": code, "ok": output.ok, "error": output.error, "limit_hit": output.limit_hit}
        self.calls.append(call)
        self._stats.add("runs")
        if output.limit_hit is not None:
            self._stats.add("limit_hits")
        elif not output.ok:
            self._stats.add("errors")
        left = self._max - len(self.calls)
        note = f"\n({left} code run(s) left)" if left else "\n(no code runs left: finish without code)"
        shown = output.text + note
        self._stats.record(
            {"rollout": self.rollout, "call": len(self.calls), **call, "output": shown, "duration": output.duration}
        )
        return shown


def _python_method(timeout: float) -> Callable[..., Any]:
    async def python(self: SandboxEnvironment, code: str) -> str:
        return await self._run(code)

    # the docstring is the tool's schema (description and argument) that the prompt shows
    python.__doc__ = f"""Run a Python 3 program (SymPy and the standard library are available) in a sandbox and return what it prints.

    Each run is a fresh program: nothing carries over between runs, there is no network and no input,
    and a run may take at most {timeout:g} seconds. Errors and limits hit are reported.

    Args:
        code: The complete program; print every value you want to see.
    """
    return python


def sandbox_environment_factory(
    pool: SandboxPool, *, timeout: float, max_tool_calls: int, stats: ToolRunStats | None = None
) -> tuple[Callable[[], SandboxEnvironment], ToolRunStats]:
    """TRL's ``environment_factory`` for sandboxed Python rollouts, and the stats its runs go to
    (``stats``, else new ones without a log file)."""
    stats = stats if stats is not None else ToolRunStats()
    tool = PythonTool(pool, timeout=timeout)
    environment = type("SandboxEnvironment", (SandboxEnvironment,), {"python": _python_method(timeout)})

    def factory() -> SandboxEnvironment:
        return environment(tool, stats, max_tool_calls)

    return factory, stats


def _chatml(tokenizer: Any) -> bool:
    vocab = tokenizer.get_vocab()
    return "<|im_start|>" in vocab and "<|im_end|>" in vocab


def tool_chat_template(tokenizer: Any, choice: str = "auto") -> str | None:
    """Set the tokenizer up for tool calls (see the module); returns the name of the template
    put in place (None: the model's own). An unusable choice is an :class:`InputError` saying why."""
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template, supports_tool_calling

    if choice not in TOOL_CHAT_TEMPLATES:
        raise InputError(f"tool_chat_template must be one of {', '.join(TOOL_CHAT_TEMPLATES)}, not {choice!r}")
    own_ok = supports_tool_calling(tokenizer)
    if own_ok and choice != "chatml":
        try:  # TRL must also know how to parse the template's tool calls
            known = getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None)
            if not known:
                add_response_schema(tokenizer)
            return None
        except ValueError:
            if choice == "model":
                raise InputError(
                    "the model's chat template renders tool calls, but TRL cannot parse them (no response template "
                    "for it); set tool_chat_template: chatml (for a ChatML tokenizer) or give the tokenizer a "
                    "response_template"
                ) from None
    if choice == "model":
        raise InputError(
            "the model's chat template cannot render a tool-calling conversation (assistant tool_calls, then a tool "
            "message); set tool_chat_template: auto or chatml to use TRL's ChatML tool template"
        )
    if not _chatml(tokenizer):
        raise InputError(
            "tools need a chat template that renders tool calls; the model's does not, and its tokenizer has no "
            "ChatML turn tokens (<|im_start|>, <|im_end|>) for TRL's ChatML tool template: use a model whose "
            "template supports tools (e.g. Qwen2.5/Qwen3, Llama 3.1)"
        )
    for attribute in ("response_template", "response_schema"):
        if getattr(tokenizer, attribute, None) is not None:
            setattr(tokenizer, attribute, None)
    tokenizer.chat_template = qwen2_5_chat_template
    add_response_schema(tokenizer)  # TRL's parser of this template's <tool_call> JSON
    # the same template without Qwen's default system line ("You are Qwen, created by Alibaba Cloud"),
    # which the generator prompts (user turns only) would otherwise get
    tokenizer.chat_template = qwen2_5_chat_template.replace(_QWEN_SYSTEM, "You are a helpful assistant.")
    return "chatml"


_QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
