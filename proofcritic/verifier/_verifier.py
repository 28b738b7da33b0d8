"""The verifier role: problem + proof (+ reference, guidelines) -> analysis, issues, score."""

from __future__ import annotations

import asyncio
import math
from typing import Literal, get_args

from .._roles import Role, usage_of
from ..errors import UnsupportedFeatureError
from ..llm import ChatMessage, ChatRequest, GenerateConfig
from ..parsing import SCORE_MARKER, SCORE_MARKER_RE, find_last, format_score
from ..types import SCORES, Problem, Verification
from ._parse import parse_verification

ScoreMode = Literal["text", "auto", "logprob", "guided"]
SCORE_MODES: tuple[str, ...] = get_args(ScoreMode)
#: the score mode of every verifier, command and service unless one is chosen: a verification
#: that wrote no valid score has none (the read-outs ``auto``, ``logprob``, ``guided`` are opt-in)
DEFAULT_SCORE_MODE: ScoreMode = "text"
_CONTINUATIONS = ("0}", "0.5}", "1}")
#: the guided choices after ``\boxed{``: the closing brace is part of each, so "0" and "0.5"
#: are told apart by the model's own next token rather than by a forced end of the answer
GUIDED_CHOICES = _CONTINUATIONS


class Verifier(Role):
    """Grades proofs.

    ``score_mode``: ``"text"`` (default) reads the score written in the output only, so a format
    failure has no score; the read-outs are opt-in: ``"auto"`` falls back to the likelihood read-out when the text has no valid score and the backend can
    score text; ``"logprob"`` always reads the score out by likelihood (the written score is
    kept as ``text_score``); ``"guided"``: when the text has no valid score, the analysis is
    continued after the score marker with the server forced to one of ``0}``, ``0.5}``, ``1}``
    (guided choice, greedy; ``score_source`` "guided"); where the backend cannot constrain its
    output it falls back to the likelihood read-out, then to the format failure. In every mode
    ``format_ok`` is decided by the written output alone (the format reward stays honest), and a
    score from a read-out is marked by its ``score_source`` ("likelihood" or "guided").
    """

    template = "verify"

    def __init__(self, model, *, score_mode: ScoreMode = DEFAULT_SCORE_MODE, **kwargs):
        super().__init__(model, **kwargs)
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {', '.join(SCORE_MODES)}, not {score_mode!r}")
        self.score_mode = score_mode
        #: set once the backend could not (or did not) honour a guided choice
        self._guided_unsupported = False
        self._guided_known = False  # set once a guided choice has worked

    def messages(self, problem: Problem, proof: str) -> list[ChatMessage]:
        return self.prompts.render(self.template, problem=problem, proof=proof)

    async def verify(
        self, problem: Problem, proof: str, n: int = 1, *, seed: int | None = None
    ) -> list[Verification]:
        """``n`` independent verifications of ``proof`` (one request with n samples)."""
        messages = self.messages(problem, proof)
        completions = await self._sample(messages, n, seed)
        results = []
        for index, completion in enumerate(completions):
            verification = parse_verification(completion.text, completion.finish_reason)
            verification.usage = usage_of(completion, share_prompt=index == 0)
            results.append(verification)
        mode = self.score_mode
        pending = [v for v in results if mode == "logprob" or (mode in ("auto", "guided") and v.score is None)]
        fill = self._guided if mode == "guided" else self._read_out
        if mode == "guided" and not self._guided_known and len(pending) > 1:
            # the first guided call alone: a server without the feature is then asked once, not n times
            await fill(messages, pending[0])
            pending = pending[1:]
        await asyncio.gather(*(fill(messages, v) for v in pending))
        return results

    async def _guided(self, messages: list[ChatMessage], verification: Verification) -> None:
        """Ask for one of the three scores with guided choice; fall back to the read-out."""
        if not self._guided_unsupported:
            request = ChatRequest(
                messages=[*messages, ChatMessage(role="assistant", content=score_prefix(verification.raw))],
                config=GenerateConfig(choices=list(GUIDED_CHOICES), temperature=0.0, max_tokens=8),
            )
            try:
                [completion] = await self.model.generate(request)
            except UnsupportedFeatureError:
                self._guided_unsupported = True
            else:
                text = completion.text.strip()
                if text in GUIDED_CHOICES:
                    verification.score = SCORES[GUIDED_CHOICES.index(text)]
                    verification.score_source = "guided"
                    self._guided_known = True
                    return
                # a backend that ignored the constraint: do not trust it with the next sample either
                self._guided_unsupported = True
        await self._read_out(messages, verification)

    async def _read_out(self, messages: list[ChatMessage], verification: Verification) -> None:
        """Fill the score distribution by comparing the likelihood of the three scores."""
        if self.model.likelihood_unsupported and self.score_mode != "logprob":
            return  # the backend said so once; do not ask again for every sample
        prefix = score_prefix(verification.raw)
        try:
            totals = await self.model.sequence_logprobs(
                [*messages, ChatMessage(role="assistant", content=prefix)], list(_CONTINUATIONS)
            )
        except UnsupportedFeatureError:
            if self.score_mode == "logprob":
                raise
            return
        top = max(totals)
        weights = [math.exp(t - top) for t in totals]
        total = sum(weights)
        probs = [w / total for w in weights]
        verification.score_distribution = {format_score(s): p for s, p in zip(SCORES, probs)}
        verification.expected_score = sum(s * p for s, p in zip(SCORES, probs))
        verification.score = SCORES[max(range(len(SCORES)), key=probs.__getitem__)]
        verification.score_source = "likelihood"


def score_prefix(raw: str) -> str:
    """The output up to the score marker, followed by the marker and an open ``\\boxed{``."""
    match = find_last(SCORE_MARKER_RE, raw)
    head = raw[: match.start()] if match else raw
    return f"{head.rstrip()}\n\n{SCORE_MARKER}\n\\boxed{{"
