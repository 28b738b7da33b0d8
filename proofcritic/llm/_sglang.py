"""SGLang's OpenAI-compatible server (``sglang/MODEL``; ``proofcritic serve-model --engine sglang``).

Its fields: a final assistant turn is continued (``continue_final_message``), guided choice is a
``regex`` that matches exactly one of the choices (SGLang matches it in full).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._openai import OpenAIBackend, continue_final_turn
from ._types import ChatMessage, GenerateConfig

_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}/")


def choice_regex(choices: Sequence[str]) -> str:
    """A regular expression matching exactly one of ``choices`` (SGLang matches it in full)."""
    escape = lambda text: "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)  # noqa: E731
    return "(" + "|".join(escape(c) for c in choices) + ")"


class SGLangBackend(OpenAIBackend):
    """Chat completions from SGLang servers (see :class:`OpenAIBackend` for the options)."""

    engine = "sglang"

    def _engine_fields(self, body: dict[str, Any], messages: Sequence[ChatMessage], config: GenerateConfig) -> None:
        continue_final_turn(body, messages)
        if config.choices:
            body["regex"] = choice_regex(config.choices)
