"""``tora``: tool-integrated solving (ToRA): the generator runs code while it writes its solution.

One solve is a conversation with the generator:

1. the ``tora_generate`` prompt (the generator prompt plus how to run code) is sent with a stop
   string after a closing fence, so a model that writes a ```python block stops there;
2. if the completion holds a block in a tool's language (the first one; a block cut off by the
   stop string counts), the text up to the end of that block becomes an assistant turn, the
   block runs in the sandbox (:class:`~proofcritic.tools.PythonTool`: a fresh interpreter of the
   :class:`~proofcritic.tools.SandboxPool` with its time, memory and output limits), and the
   ``tora_feedback`` message (the next user turn) shows its output, error or limit and how many
   runs are left; the loop continues;
3. after ``max_tool_calls`` runs the feedback says no more code may run and the next completion
   is requested without the stop string; a completion without a tool block (or cut off for
   length) ends the conversation.

The solution text is the assistant turns, each followed by the output it got as an
```` ```output ```` block; it is parsed as any generator output
(:func:`~proofcritic.generator.parse_generation`: ``## Solution`` and ``## Self Evaluation``),
so code and outputs written inside the solution stay in the proof. The transcript has one
``tool`` step per run (code, output, stdout, stderr, error, limit) and the ``generate`` step
(the raw conversation too, and the answer the solution states by
:func:`proofcritic.answers.extract_answer`, for answer problems); ``verify_n`` verifications of the answer follow, as evidence.

Each call has its own seed, derived from ``seed`` (else the generator's, else 0) and the turn, so
a rerun replays the conversation from the completion cache (the code runs again: deterministic
code gives the same outputs). A spent budget ends the solve with the text so far parsed as the
answer (``budget_limited``). ``state_dir`` is not used.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._roles import usage_of
from ..answers import extract_answer
from ..budget import BudgetExceeded, CallPlan
from ..generator import parse_generation
from ..llm import ChatMessage, ChatRequest, Completion, Seed, Usage
from ..promptset import PromptSet
from ..tools import Tool, find_tool_call
from ..types import Problem, ToolCall
from ..verifier import fence_for, tool_turn
from ._common import Roles, SolveResult, StepLog, ToolNames, ToolStrategy, usable, verify_for_evidence

__all__ = ["TORA_VARIABLES", "ToraConfig", "ToraStrategy", "tora_text"]

#: the ToRA templates and their variables: optional templates of a prompt set
TORA_VARIABLES: dict[str, frozenset[str]] = {
    "tora_generate": frozenset({"problem", "tools", "max_tool_calls"}),
    "tora_feedback": frozenset({"tool", "language", "output", "ok", "remaining", "fence"}),
}
#: stop strings of a turn that may call a tool: a fence line closing a block
TOOL_STOP = ("\n```\n",)


class ToraConfig(BaseModel):
    """Parameters of the ``tora`` strategy."""

    model_config = ConfigDict(extra="forbid")

    max_tool_calls: int = Field(4, ge=0, le=64, description="Code runs per solution at most.")
    tools: ToolNames = Field(default_factory=lambda: ["python"], description="Tools the generator may use.")
    tool_timeout: float = Field(10.0, gt=0, le=600, description="Seconds per code run.")
    verify_n: int = Field(1, ge=0, le=1024, description="Verifications of the answer, as evidence (0: none).")
    keep_invalid: bool = Field(False, description="Let a format failure with proof text count as the proof.")
    seed: Seed | None = Field(None, description="Base of the per-call seeds; None: the generator's seed, else 0.")


def tora_text(turns: list[str], outputs: list[str]) -> str:
    """The solution text: each assistant turn, then the output it got as an ```output block."""
    parts: list[str] = []
    for index, turn in enumerate(turns):
        parts.append(turn.rstrip())
        if index < len(outputs):
            fence = fence_for(outputs[index])
            parts.append(f"{fence}output\n{outputs[index].rstrip()}\n{fence}")
    return "\n\n".join(parts)


class ToraStrategy(ToolStrategy):
    """Solve while running code (see the module). ``ToraStrategy(max_tool_calls=4)``; the tools
    are built on first use and shared by every problem; ``aclose`` releases them."""

    config_class = ToraConfig
    name = "tora"

    config: ToraConfig

    def plan(self) -> CallPlan:
        """One conversation of up to ``1 + max_tool_calls`` calls (one proof); ``verify_n`` verifications."""
        c = self.config
        return (
            CallPlan().add("generation", 1 + c.max_tool_calls, 1).add("verification", int(c.verify_n > 0), c.verify_n)
        )

    def _seed(self, role_seed: int | None, turn: int) -> int:
        base = self.config.seed if self.config.seed is not None else (role_seed or 0)
        return (base + zlib.crc32(f"tora/{turn}".encode())) % 2**31

    async def solve(self, problem: Problem, roles: Roles, state_dir: str | Path | None = None) -> SolveResult:
        config = self.config
        log = StepLog()
        result = SolveResult(problem_id=problem.id, strategy=self.name)
        generator = roles.generator
        prompts = generator.prompts
        sets = {name: prompts.template_set(name, variables) for name, variables in TORA_VARIABLES.items()}
        by_language: dict[str, Tool] = {}
        active = self.tools if config.max_tool_calls > 0 else []
        for tool in active:
            for language in (tool.language, *getattr(tool, "aliases", ())):
                by_language.setdefault(language.lower(), tool)
        messages = _render(sets, "tora_generate", problem=problem, tools=active, max_tool_calls=config.max_tool_calls)
        turns: list[str] = []
        outputs: list[str] = []
        calls: list[ToolCall] = []
        usage = Usage()
        finish: str | None = None
        self.report(problem.id, 0, step="generate", tool_calls=(0, config.max_tool_calls))
        try:
            while True:
                allowed = bool(active) and len(calls) < config.max_tool_calls
                completion = await self._complete(generator, messages, len(turns), allowed)
                usage.add(usage_of(completion, share_prompt=True))
                text, finish = completion.text, completion.finish_reason
                block = find_tool_call(text, by_language) if allowed and finish in (None, "stop") else None
                if block is None:
                    turns.append(text)
                    break
                tool = by_language[block.language]
                remaining = config.max_tool_calls - len(calls) - 1
                said, call, more = await tool_turn(sets, "tora_feedback", text, block, tool, remaining)
                turns.append(said)
                outputs.append(call.output)
                calls.append(call)
                log.note("tool", len(calls), **call.model_dump(mode="json"))
                self.report(problem.id, 0, step="generate", tool_calls=(len(calls), config.max_tool_calls))
                messages = [*messages, *more]
        except BudgetExceeded as error:
            result.budget_limited = True
            result.stop_reason = f"budget: {error} (after {len(calls)} code run(s))"
            finish = "length" if turns else finish
        generation = parse_generation(tora_text(turns, outputs), finish if turns else "length")
        generation.usage = usage
        entry = log.generation("generate", 0, generation, tool_calls=len(calls))
        entry["raw"] = generation.raw  # the whole conversation, code and outputs included
        stated = extract_answer(generation.proof) if generation.proof.strip() else None
        entry["answer"] = stated.text if stated is not None else None  # for answer problems
        result.generation = generation
        failed = sum(not c.ok for c in calls)
        runs = f"{len(calls)} code run(s)" + (f", {failed} with an error or a limit" if failed else "")
        if not turns:
            result.stop_reason = result.stop_reason or "no answer"
        elif not usable(generation, config.keep_invalid):
            reason = generation.format_error or "no proof text"
            result.stop_reason = result.stop_reason or f"no valid proof ({reason}; {runs})"
        else:
            result.proof = generation.proof
            if not result.budget_limited:
                limit = " (the code-run limit reached)" if len(calls) >= config.max_tool_calls and calls else ""
                result.stop_reason = f"solved after {runs}{limit}"
                try:
                    await verify_for_evidence(problem, roles, result, log, config.verify_n, 1)
                except BudgetExceeded as error:
                    result.budget_limited = True
                    result.stop_reason += f"; budget: {error} (no verification)"
        result.rounds = len(calls)
        result.transcript, result.usage = log.transcript, log.usage
        return result

    async def _complete(self, generator: Any, messages: list[ChatMessage], turn: int, allowed: bool) -> Completion:
        update: dict[str, Any] = {"n": 1, "seed": self._seed(generator.config.seed, turn)}
        if allowed:
            update["stop"] = [*(generator.config.stop or []), *TOOL_STOP]
        request = ChatRequest(messages=messages, config=generator.config.model_copy(update=update))
        return (await generator.model.generate(request))[0]


def _render(sets: dict[str, PromptSet], name: str, **variables: Any) -> list[ChatMessage]:
    return sets[name].render(name, **variables)
