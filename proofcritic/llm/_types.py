"""The contract between roles and backends: chat requests in, completions out."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from .._constants import SAMPLING_HELP

#: who speaks a chat turn (a message's ``role`` on the wire); not a proofcritic role (the
#: generator, verifier ... classes of :mod:`proofcritic._roles`) nor a prompt template's name
ChatRole = Literal["system", "user", "assistant"]

#: a JSON string as ``json.dumps(..., ensure_ascii=False)`` writes it
_json_string = json.encoder.encode_basestring

# The bounds of the sampling settings, defined once: GenerateConfig, the service's requests and
# (through GenerateConfig) the command line's options all hold values to these.
Temperature = Annotated[float, Field(ge=0.0, le=5.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxTokens = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
#: the samples one request may ask for (GenerateConfig.n, and so a grade's n and a label's n and m)
SampleCount = Annotated[int, Field(ge=1, le=1024)]


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: ChatRole
    content: str

    @cached_property
    def wire(self) -> str:
        """This turn as JSON text, ``{"content":...,"role":...}`` (UTF-8 kept, no spaces), encoded
        once: a request's cache key and the body sent to a server both splice it in rather than
        each encoding the (long) text again."""
        return f'{{"content":{_json_string(self.content)},"role":{_json_string(self.role)}}}'


class SamplingOptions(BaseModel):
    """The sampling settings a user chooses, defined once: a service request's ``sampling`` is
    this model, and the command line's ``--temperature``, ``--top-p``, ``--max-tokens`` and
    ``--seed`` build it (:func:`proofcritic.cli._common.sampling`), their words and bounds taken
    from its fields. ``None``: not chosen (the roles' defaults, then the backend's, apply)."""

    model_config = ConfigDict(extra="forbid")

    temperature: Temperature | None = Field(None, description=SAMPLING_HELP["temperature"])
    top_p: TopP | None = Field(None, description=SAMPLING_HELP["top_p"])
    max_tokens: MaxTokens | None = Field(None, description=SAMPLING_HELP["max_tokens"])
    seed: Seed | None = Field(None, description=SAMPLING_HELP["seed"])

    def as_config(self) -> GenerateConfig:
        """The settings chosen, as a GenerateConfig (the others left unset, so that a merge
        keeps what lies under them)."""
        return GenerateConfig(**self.model_dump(exclude_none=True))


class GenerateConfig(SamplingOptions):
    """Sampling settings of one request: the user's :class:`SamplingOptions` and what the roles
    ask for besides (samples, stop strings, logprobs, guided choices). ``None`` leaves a setting
    to the backend's default."""

    n: SampleCount = Field(1, description="Number of independent samples.")
    stop: list[str] | None = Field(None, description="Stop strings; the text is cut before the first one.")
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token with logprobs.")
    choices: list[str] | None = Field(
        None,
        description="Guided choice: the output must be exactly one of these strings. Backends that cannot "
        "constrain decoding raise UnsupportedFeatureError, so callers can fall back.",
    )

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value or any(not c for c in value):
                raise ValueError("choices must be a non-empty list of non-empty strings")
            if len(set(value)) != len(value):
                raise ValueError("choices must be distinct")
        return value

    @model_serializer(mode="wrap")
    def _drop_unused(self, handler):
        # ``choices`` is left out of dumps while unset, so cache keys of plain requests stay
        # what they were before the field existed; when set, it is part of every key.
        data = handler(self)
        if isinstance(data, dict) and data.get("choices", 0) is None:
            del data["choices"]
        return data

    def as_config(self) -> GenerateConfig:
        return self

    def merge(self, other: GenerateConfig | None) -> GenerateConfig:
        """A copy where every field set in ``other`` overrides this one."""
        if other is None:
            return self.model_copy()
        return self.model_copy(update=other.model_dump(exclude_unset=True))


class ChatRequest(BaseModel):
    """A conversation to continue, with its sampling settings.

    When ``messages`` ends with an assistant turn, backends continue that turn (the text is a
    prefix of the answer, as in the likelihood read-out) instead of opening a new one.
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage]
    config: GenerateConfig = Field(default_factory=GenerateConfig)


class TokenLogprob(BaseModel):
    """A generated token, its log-probability and (optionally) the most likely alternatives."""

    token: str
    logprob: float
    top: dict[str, float] | None = None


class Completion(BaseModel):
    """One sample. ``finish_reason`` is "stop" for a natural end and "length" for truncation."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    cached: bool = False


class Usage(BaseModel):
    """Token and call accounting, added up over a run.

    One definition everywhere (the run summary, ``--json`` results, batch records, the service):
    ``calls`` are the requests sent to the model (for a server backend every HTTP request the
    server saw: likelihood read-outs, failed requests and their retries included; for a local
    backend every forward call); ``failed_calls`` and ``readout_calls`` say how many of them
    failed and how many were likelihood read-outs; the tokens are those the model processed
    for them (as its answers report). ``cached_calls`` were answered from the completion cache:
    no request, no tokens. (One answer's own ``usage``, e.g. ``Verification.usage``, is its
    share of the request that produced it, in this run or an earlier one: what it cost.)
    """

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_calls: int = 0
    readout_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.cached_calls += other.cached_calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.failed_calls += other.failed_calls
        self.readout_calls += other.readout_calls


def split_assistant_prefix(messages: list[ChatMessage]) -> tuple[list[ChatMessage], str]:
    """A conversation that ends with an assistant turn, as (the turns before it, its text), so
    a backend can continue that turn; otherwise (all turns, "")."""
    if messages and messages[-1].role == "assistant":
        return messages[:-1], messages[-1].content
    return messages, ""
