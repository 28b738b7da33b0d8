"""vLLM's OpenAI-compatible server (``vllm/MODEL``; ``proofcritic serve-model --engine vllm``).

Its fields: a final assistant turn is continued (``continue_final_message``), guided choice is
``structured_outputs: {"choice": [...]}``. Its ``prompt_logprobs`` (the likelihood read-out) and
``n`` samples in one request are tried by :class:`~proofcritic.llm._openai.OpenAIBackend` on
every server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._openai import OpenAIBackend, continue_final_turn
from ._types import ChatMessage, GenerateConfig


class VLLMBackend(OpenAIBackend):
    """Chat completions from vLLM servers (see :class:`OpenAIBackend` for the options)."""

    engine = "vllm"

    def _engine_fields(self, body: dict[str, Any], messages: Sequence[ChatMessage], config: GenerateConfig) -> None:
        continue_final_turn(body, messages)
        if config.choices:
            body["structured_outputs"] = {"choice": list(config.choices)}
