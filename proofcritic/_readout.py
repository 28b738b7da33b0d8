"""The score read-outs of the roles whose output ends in a score statement (verifier,
meta-verifier): the opt-in score modes.

A role's output ends with its marker (``score_marker``) and ``\\boxed{0}``, ``\\boxed{0.5}`` or
``\\boxed{1}``. In score mode ``text`` only that written score counts (a format failure has no
score). The read-outs ask the model once more, on the output cut at the marker and followed by
the marker and an open ``\\boxed{``:

- ``auto``: when no valid score was written, the likelihood read-out (the three continuations
  ``0}``, ``0.5}``, ``1}`` compared by likelihood; ``score_source`` "likelihood", with the
  distribution and the expected score);
- ``logprob``: the likelihood read-out always (the written score stays in ``text_score``);
- ``guided``: when no valid score was written, the server is forced to one of the three
  continuations (guided choice, greedy; ``score_source`` "guided"); a backend that cannot
  constrain its output falls back to the likelihood read-out, then to no score.

``format_ok`` is decided by the written output alone in every mode (the format reward stays
honest). The result's ``score_source`` says which read-out gave a score.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

from ._constants import ScoreMode
from .errors import UnsupportedFeatureError
from .llm import ChatMessage, ChatRequest, GenerateConfig
from .parsing import SCORE_MARKER, SCORE_MARKER_RE, find_last, format_score
from .types import SCORES

#: the continuations after ``\boxed{`` compared by likelihood, and the guided choices: the
#: closing brace is part of each, so "0" and "0.5" are told apart by the model's own next token
#: rather than by a forced end of the answer
GUIDED_CHOICES: tuple[str, ...] = ("0}", "0.5}", "1}")


def score_prefix(raw: str, marker: str = SCORE_MARKER, marker_re: re.Pattern[str] = SCORE_MARKER_RE) -> str:
    """The output up to its last score marker (``marker_re``), followed by ``marker`` and an
    open ``\\boxed{`` (by default the verifier's marker)."""
    match = find_last(marker_re, raw)
    head = raw[: match.start()] if match else raw
    return f"{head.rstrip()}\n\n{marker}\n\\boxed{{"


class ScoreReadout:
    """The score modes of a :class:`~proofcritic._roles.Role` whose results carry ``raw``,
    ``score``, ``score_source``, ``score_distribution`` and ``expected_score``: mixed in before
    Role. The role sets ``score_mode`` and names its marker (``score_marker``, ``score_marker_re``);
    after parsing its samples it calls :meth:`fill_scores`."""

    score_marker: str = SCORE_MARKER
    score_marker_re: re.Pattern[str] = SCORE_MARKER_RE
    score_mode: ScoreMode = "text"
    #: set once the backend could not (or did not) honour a guided choice
    _guided_unsupported: bool = False
    _guided_known: bool = False  # set once a guided choice has worked
    model: Any

    def score_prefix(self, raw: str) -> str:
        """:func:`score_prefix` with this role's marker."""
        return score_prefix(raw, self.score_marker, self.score_marker_re)

    async def fill_scores(self, messages: list[ChatMessage], results: list[Any]) -> None:
        """Read out the scores the score mode asks for, for ``results`` (samples of one request
        made of ``messages``)."""
        mode = self.score_mode
        pending = [r for r in results if mode == "logprob" or (mode in ("auto", "guided") and r.score is None)]
        fill = self._guided if mode == "guided" else self._read_out
        if (
            mode == "guided"
            and not self._guided_known
            and self.model.supports_guided_choice is None
            and len(pending) > 1
        ):
            # the first guided call alone: a server without the feature is then asked once, not n times
            await fill(messages, pending[0])
            pending = pending[1:]
        await asyncio.gather(*(fill(messages, r) for r in pending))

    async def _guided(self, messages: list[ChatMessage], result: Any) -> None:
        """Ask for one of the three scores with guided choice; fall back to the read-out."""
        if not self._guided_unsupported and self.model.supports_guided_choice is not False:
            request = ChatRequest(
                messages=[*messages, ChatMessage(role="assistant", content=self.score_prefix(result.raw))],
                config=GenerateConfig(choices=list(GUIDED_CHOICES), temperature=0.0, max_tokens=8),
            )
            try:
                [completion] = await self.model.generate(request)
            except UnsupportedFeatureError:
                self._guided_unsupported = True
            else:
                text = completion.text.strip()
                if text in GUIDED_CHOICES:
                    result.score = SCORES[GUIDED_CHOICES.index(text)]
                    result.score_source = "guided"
                    self._guided_known = True
                    return
                # a backend that ignored the constraint: do not trust it with the next sample either
                self._guided_unsupported = True
        await self._read_out(messages, result)

    async def _read_out(self, messages: list[ChatMessage], result: Any) -> None:
        """Fill the score distribution by comparing the likelihood of the three scores."""
        if self.model.supports_likelihood is False and self.score_mode != "logprob":
            return  # the backend says it cannot (or said so once); do not ask for every sample
        prefix = self.score_prefix(result.raw)
        try:
            totals = await self.model.sequence_logprobs(
                [*messages, ChatMessage(role="assistant", content=prefix)], list(GUIDED_CHOICES)
            )
        except UnsupportedFeatureError:
            if self.score_mode == "logprob":
                raise
            return
        top = max(totals)
        weights = [math.exp(t - top) for t in totals]
        total = sum(weights)
        probs = [w / total for w in weights]
        result.score_distribution = {format_score(s): p for s, p in zip(SCORES, probs)}
        result.expected_score = sum(s * p for s, p in zip(SCORES, probs))
        result.score = SCORES[max(range(len(SCORES)), key=probs.__getitem__)]
        result.score_source = "likelihood"
