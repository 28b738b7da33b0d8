"""What the three roles share: a model, a prompt set, sampling defaults, usage per result."""

from __future__ import annotations

from .llm import ChatMessage, ChatRequest, Completion, GenerateConfig, Model, Usage
from .promptset import PromptSet

#: released sampling settings of DeepSeekMath-V2's search (SPEC section 5)
DEFAULT_CONFIG = GenerateConfig(temperature=1.0, top_p=0.95)


class Role:
    """Prompt + call + parse. A role never knows which backend runs its model."""

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

    async def _sample(self, messages: list[ChatMessage], n: int, seed: int | None = None) -> list[Completion]:
        """``n`` samples of one request. A ``seed`` overrides the configured one: pipelines that
        ask the same question again and want a fresh answer (not the cached one) pass a new seed."""
        update: dict = {"n": n} if seed is None else {"n": n, "seed": seed}
        request = ChatRequest(messages=messages, config=self.config.model_copy(update=update))
        return await self.model.generate(request)


def usage_of(completion: Completion, *, share_prompt: bool) -> Usage:
    """The usage one sample accounts for (prompt tokens counted once per request)."""
    return Usage(
        calls=0 if completion.cached or not share_prompt else 1,
        cached_calls=1 if completion.cached and share_prompt else 0,
        prompt_tokens=completion.prompt_tokens if share_prompt else 0,
        completion_tokens=completion.completion_tokens,
    )
