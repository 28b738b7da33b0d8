"""Names and defaults that the command line's help shows, defined here once, with no import
beyond the standard library, so that building the parser (``proofcritic --help``, an argument
error) needs no heavy module. Each is re-exported where it belongs: the score modes by
:mod:`proofcritic.verifier`, the strategies by :mod:`proofcritic.pipelines.solve`, the input
limit by :mod:`proofcritic.io`, the transports by :mod:`proofcritic.llm._openai`, the weight types by
:mod:`proofcritic.llm._transformers_parts`.
"""

from __future__ import annotations

from typing import Literal, get_args

ScoreMode = Literal["text", "auto", "logprob", "guided"]
SCORE_MODES: tuple[str, ...] = get_args(ScoreMode)
#: the score mode of every verifier, command and service unless one is chosen: a verification
#: that wrote no valid score has none (the read-outs ``auto``, ``logprob``, ``guided`` are opt-in)
DEFAULT_SCORE_MODE: ScoreMode = "text"

#: strategy name -> "module:class", imported lazily
STRATEGIES: dict[str, str] = {
    "single": "proofcritic.pipelines.single:SingleStrategy",
    "refine": "proofcritic.pipelines.refine:RefineStrategy",
    "search": "proofcritic.pipelines.search:SearchStrategy",
    "agent": "proofcritic.pipelines.agent:AgentStrategy",
    "critic": "proofcritic.pipelines.critic:CriticStrategy",
}

#: the default limit on each text of an input (problem statement, proof, reference solution,
#: grading guidelines), in characters. The longest in ../shared/data: a proof of 35,281 characters
#: (Open Proof Corpus), a reference solution of 10,187, a statement of 1,261, guidelines of 464;
#: 200,000 (about 60,000 tokens) leaves room for proofs several times longer.
DEFAULT_MAX_INPUT_CHARS = 200_000
#: the environment variable that sets the limit (0: none); ``--max-input-chars`` overrides it
MAX_INPUT_CHARS_ENV = "PROOFCRITIC_MAX_INPUT_CHARS"

#: the weight types a local backend takes (``--dtype``; see proofcritic.llm._transformers_parts.dtype_plan)
DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(DType)

#: the OpenAI-compatible backend's HTTP clients (``--transport``; see proofcritic.llm._openai)
TRANSPORTS: tuple[str, ...] = ("lean", "aiohttp", "openai")
