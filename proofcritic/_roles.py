"""What every role shares (generator, verifier, meta-verifier and the pipelines' own roles): a
model, a prompt set, sampling defaults, and the one sequence of a role's call, render -> sample ->
parse -> usage (:meth:`Role.ask`).

"Role" means such a class. A chat turn's ``role`` (system / user / assistant) is
:data:`proofcritic.llm.ChatRole`; the prompt a role renders is named by its ``template``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from ._constants import DEFAULT_SAMPLING
from .llm import ChatMessage, ChatRequest, Completion, GenerateConfig, Model, Usage
from .promptset import PromptSet

#: released sampling settings of DeepSeekMath-V2's search (SPEC section 5; defined in _constants,
#: where the command line's help reads them)
DEFAULT_CONFIG = GenerateConfig.model_validate(DEFAULT_SAMPLING)


class _Answer(Protocol):
    usage: Usage


#: what a role's parser makes of one sample (a Generation, a Verification, ...)
Answer = TypeVar("Answer", bound=_Answer)


class Role:
    """Prompt + call + parse. A role never knows which backend runs its model.

    ``template`` names the prompt template (in ``prompts``) that :meth:`render` fills.
    """

    template: str = ""

    def __init__(
        self,
        model: Model,
        *,
        prompts: PromptSet | None = None,
        config: GenerateConfig | None = None,
    ):
        self.model = model
        self.prompts = prompts or PromptSet.load()
        self.config = DEFAULT_CONFIG.merge(config)

    async def _sample(
        self, messages: list[ChatMessage], n: int, seed: int | None = None, first: int = 0
    ) -> list[Completion]:
        """``n`` samples of one request. A ``seed`` overrides the configured one: pipelines that
        ask the same question again and want a fresh answer (not the cached one) pass a new seed.
        ``first``: samples ``first`` .. ``first + n - 1`` of the request (see :meth:`Model.generate`)."""
        update: dict = {"n": n} if seed is None else {"n": n, "seed": seed}
        request = ChatRequest(messages=messages, config=self.config.model_copy(update=update))
        return await (self.model.generate(request, first=first) if first else self.model.generate(request))

    def render(self, **variables: object) -> list[ChatMessage]:
        """The messages of this role's ``template`` filled with ``variables``."""
        return self.prompts.render(self.template, **variables)

    async def ask(
        self,
        messages: list[ChatMessage],
        parse: Callable[[str, str | None], Answer],
        n: int = 1,
        *,
        seed: int | None = None,
        first: int = 0,
    ) -> list[Answer]:
        """``n`` samples of one request made of ``messages`` (usually :meth:`render`'s), each
        parsed by ``parse(text, finish_reason)`` and given the usage it accounts for (the prompt
        counted once, on the first). A ``seed`` overrides the configured one (see :meth:`_sample`);
        ``first`` makes them samples ``first`` .. ``first + n - 1`` of the request."""
        answers = []
        for index, completion in enumerate(await self._sample(messages, n, seed, first)):
            answer = parse(completion.text, completion.finish_reason)
            answer.usage = usage_of(completion, share_prompt=index == 0)
            answers.append(answer)
        return answers


def usage_of(completion: Completion, *, share_prompt: bool) -> Usage:
    """The usage one sample accounts for (prompt tokens counted once per request)."""
    return Usage(
        calls=0 if completion.cached or not share_prompt else 1,
        cached_calls=1 if completion.cached and share_prompt else 0,
        prompt_tokens=completion.prompt_tokens if share_prompt else 0,
        completion_tokens=completion.completion_tokens,
    )
