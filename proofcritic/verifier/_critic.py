"""Tool-interactive verification (CRITIC, SPEC section 5): the verifier may run code while it grades.

One verification is a conversation:

1. the ``critic_verify`` prompt (the verifier prompt plus how to run code) is sent with a stop
   string after a closing fence, so a model that writes a code block stops there;
2. if the completion holds a block in a tool's language (the first one; a block cut off by
   the stop string counts) and no score marker before it, the completion up to the end of
   that block becomes an assistant turn, the tool runs the code (in the sandbox, off the
   event loop), and the ``critic_feedback`` message shows its output; the loop continues;
3. after ``max_tool_calls`` runs the feedback says no more code may run, and the next
   completion is requested without the stop string: it is the final one;
4. a completion without a tool block (or cut off for length) ends the conversation.

The assistant turns, each followed by the output it got, make up ``raw``, which is parsed
with the verifier's own parser: the score is the last box after the score marker, and the
analysis holds the checks and their results. ``tool_calls`` keeps every run (code, output,
stdout, stderr, error, limit). A missing score is read out by likelihood after the whole
conversation, as the wrapped :class:`Verifier` does for its ``score_mode`` (``auto`` /
``logprob``: by likelihood; ``guided``: by guided choice).

Each of the ``n`` verifications is its own conversation with its own seed (the base seed
plus the sample index), so the samples differ with the completion cache on, and a rerun
replays the same conversations from the cache.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from .._roles import usage_of
from ..llm import ChatMessage, ChatRequest, Completion, Usage
from ..promptset import PromptSet
from ..tools import Tool, ToolCallBlock, ToolOutput, find_tool_call
from ..types import Problem, ToolCall, Verification
from ._parse import parse_verification
from ._verifier import Verifier

__all__ = ["CRITIC_TEMPLATES", "CRITIC_VARIABLES", "CriticVerifier", "critic_prompts"]

#: the CRITIC templates and their variables: optional templates of a prompt set
CRITIC_VARIABLES: dict[str, frozenset[str]] = {
    "critic_verify": frozenset({"problem", "proof", "tools", "max_tool_calls"}),
    "critic_feedback": frozenset({"tool", "language", "output", "ok", "remaining", "fence"}),
    "critic_revise": frozenset({"problem", "proof", "critiques"}),
}
CRITIC_TEMPLATES: tuple[str, ...] = tuple(CRITIC_VARIABLES)
#: stop strings of a turn that may call a tool: a fence line closing a block (``\n```\n``);
#: a block cut off here is recognised as complete
TOOL_STOP = ("\n```\n",)
#: the points-scale opening (a critic around a PointsVerifier): an optional template of a prompt set
POINTS_TEMPLATE = "critic_verify_points"
POINTS_VARIABLES = frozenset({"problem", "proof", "scheme", "tools", "max_tool_calls"})


@functools.lru_cache(maxsize=32)
def critic_prompts(prompts: PromptSet) -> dict[str, PromptSet]:
    """For each CRITIC template, the prompt set to render it from: ``prompts``' folder when it
    has the template (checked when loaded), else the built-in set."""
    return {name: prompts.template_set(name, CRITIC_VARIABLES[name]) for name in CRITIC_TEMPLATES}


def _render(sets: dict[str, PromptSet], name: str, **variables: Any) -> list[ChatMessage]:
    return sets[name].render(name, **variables)


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text`` (at least three)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


async def tool_turn(
    sets: dict[str, PromptSet],
    template: str,
    text: str,
    block: ToolCallBlock,
    tool: Tool,
    remaining: int,
) -> tuple[str, ToolCall, list[ChatMessage]]:
    """One tool turn of a conversation that runs code (CRITIC's critiques, ToRA's solutions): the
    assistant's ``text`` up to the end of ``block`` (what it said), the block run by ``tool`` (a
    tool that fails itself gives an output saying so), and the messages that continue the
    conversation: that assistant turn, then ``template`` (its feedback prompt) rendered with the
    output and the ``remaining`` runs. Returns (what was said, the call's record, the messages)."""
    said = block.as_written(text)
    output = await run_tool(tool, block.code)
    call = ToolCall(
        tool=tool.name,
        code=block.code,
        said=said,
        output=output.text,
        ok=output.ok,
        stdout=output.stdout,
        stderr=output.stderr,
        error=output.error,
        limit_hit=output.limit_hit,
        duration=output.duration,
    )
    feedback = _render(
        sets,
        template,
        tool=tool.name,
        language=block.language,
        output=output.text,
        ok=output.ok,
        remaining=remaining,
        fence=fence_for(output.text),
    )
    return said, call, [ChatMessage(role="assistant", content=said), *feedback]


def conversation_text(turns: Sequence[str], outputs: Sequence[str]) -> str:
    """The assistant turns, each followed by the tool output it got (``turns`` has one more)."""
    parts: list[str] = []
    for index, turn in enumerate(turns):
        parts.append(turn.rstrip())
        if index < len(outputs):
            output = outputs[index].rstrip()
            fence = fence_for(output)
            parts.append(f"Output of the code:\n{fence}text\n{output}\n{fence}")
    return "\n\n".join(parts)


class CriticVerifier:
    """A :class:`Verifier` that may run tools while it grades; ``verify`` has the same signature.

    ``CriticVerifier(verifier, [PythonTool()], max_tool_calls=3)``. ``stop`` sends the stop
    string after a closing fence on turns that may call a tool (off: the completion is cut
    after the first tool block instead, which spends more tokens but needs no stop support).
    """

    def __init__(
        self,
        verifier: Verifier,
        tools: Sequence[Tool],
        *,
        max_tool_calls: int = 3,
        stop: bool = True,
    ):
        if max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0")
        self.verifier = verifier
        self.tools = list(tools)
        self.max_tool_calls = max_tool_calls
        self.stop = stop
        self._by_language: dict[str, Tool] = {}
        for tool in self.tools:
            for language in (tool.language, *getattr(tool, "aliases", ())):
                self._by_language.setdefault(language.lower(), tool)

    # the Verifier surface other code reads
    @property
    def model(self):
        return self.verifier.model

    @property
    def prompts(self) -> PromptSet:
        return self.verifier.prompts

    @property
    def config(self):
        return self.verifier.config

    @property
    def score_mode(self) -> str:
        return self.verifier.score_mode

    @property
    def points(self) -> bool:
        """Whether the wrapped verifier grades on the points scale (a PointsVerifier): then the
        opening is ``critic_verify_points`` and the conversation is parsed as a points grade."""
        return getattr(self.verifier, "scale", "ternary") == "points"

    def messages(self, problem: Problem, proof: str) -> list[ChatMessage]:
        """The first turn of a conversation."""
        active = self.tools if self.max_tool_calls > 0 else []
        if self.points:
            from ._points import scheme_for, scheme_text

            scheme = scheme_text(scheme_for(getattr(self.verifier, "scheme", None), problem.id))
            return self.prompts.template_set(POINTS_TEMPLATE, POINTS_VARIABLES).render(
                POINTS_TEMPLATE,
                problem=problem,
                proof=proof,
                scheme=scheme,
                tools=active,
                max_tool_calls=self.max_tool_calls,
            )
        return _render(
            critic_prompts(self.prompts),
            "critic_verify",
            problem=problem,
            proof=proof,
            tools=active,
            max_tool_calls=self.max_tool_calls,
        )

    async def verify(
        self, problem: Problem, proof: str, n: int = 1, *, seed: int | None = None, first: int = 0
    ) -> list[Verification]:
        """``n`` independent tool-interactive verifications of ``proof``, run concurrently
        (sample i has seed ``seed + i``; ``first``: samples ``first`` .. ``first + n - 1``)."""
        base = seed if seed is not None else (self.config.seed or 0)
        opening = self.messages(problem, proof)
        parse: Callable[[str, str | None], Verification] = parse_verification
        if self.points:
            from ._points import parse_points_verification

            parse = functools.partial(parse_points_verification, max_points=problem.max_points)
        conversations = (self._conversation(opening, (base + first + i) % 2**31, parse) for i in range(n))
        return list(await asyncio.gather(*conversations))

    async def _complete(self, messages: list[ChatMessage], seed: int, tools_allowed: bool) -> Completion:
        update: dict[str, Any] = {"n": 1, "seed": seed}
        if tools_allowed and self.stop:
            update["stop"] = [*(self.config.stop or []), *TOOL_STOP]
        request = ChatRequest(messages=messages, config=self.config.model_copy(update=update))
        return (await self.model.generate(request))[0]

    async def _conversation(
        self,
        first: list[ChatMessage],
        seed: int,
        parse: Callable[[str, str | None], Verification] = parse_verification,
    ) -> Verification:
        messages = list(first)
        sets = critic_prompts(self.prompts)
        turns: list[str] = []
        outputs: list[str] = []
        calls: list[ToolCall] = []
        usage = Usage()
        while True:
            tools_allowed = bool(self.tools) and len(calls) < self.max_tool_calls
            completion = await self._complete(messages, seed, tools_allowed)
            usage.add(usage_of(completion, share_prompt=True))
            text = completion.text
            block = None
            if tools_allowed and completion.finish_reason in (None, "stop"):
                block = find_tool_call(text, self._by_language)
                if block is not None and _score_marker_before(text, block.start, self.points):
                    block = None  # the verdict came first: this is the final answer
            if block is None:
                turns.append(text)
                break
            tool = self._by_language[block.language]
            said, call, more = await tool_turn(
                sets, "critic_feedback", text, block, tool, self.max_tool_calls - len(calls) - 1
            )
            turns.append(said)
            outputs.append(call.output)
            calls.append(call)
            messages = [*messages, *more]
        raw = conversation_text(turns, outputs)
        verification = parse(raw, completion.finish_reason)
        verification.tool_calls = calls
        verification.usage = usage
        await self._fill_score(messages, completion.text, verification)
        return verification

    async def _fill_score(self, messages: list[ChatMessage], final: str, verification: Verification) -> None:
        """Read the score out after the whole conversation, as the wrapped verifier's score mode
        asks (:meth:`~proofcritic._readout.ScoreReadout.fill_scores`: likelihood, or guided
        choice), with the final turn as the text."""
        probe = Verification(raw=final, score=verification.score)
        await self.verifier.fill_scores(messages, [probe])
        if probe.score_source is not None:
            verification.score = probe.score
            verification.score_source = probe.score_source
            verification.score_distribution = probe.score_distribution
            verification.expected_score = probe.expected_score

    async def aclose(self) -> None:
        """Close the tools that hold resources (sandbox pools)."""
        for tool in self.tools:
            close = getattr(tool, "aclose", None)
            if close is not None:
                await close()

    def __repr__(self) -> str:
        return f"CriticVerifier(tools={[t.name for t in self.tools]}, max_tool_calls={self.max_tool_calls})"


def _score_marker_before(text: str, position: int, points: bool = False) -> bool:
    from ..parsing import POINTS_MARKER_RE, SCORE_MARKER_RE

    return (POINTS_MARKER_RE if points else SCORE_MARKER_RE).search(text[:position]) is not None


async def run_tool(tool: Tool, code: str) -> ToolOutput:
    """Run ``code``; a tool that fails itself (not the code) becomes an output saying so."""
    try:
        return await tool.run(code)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - a broken tool must not end the verification
        return ToolOutput(
            tool=tool.name,
            ok=False,
            text=f"The tool could not run the code ({type(error).__name__}: {error}).",
            error=f"{type(error).__name__}: {error}",
        )
