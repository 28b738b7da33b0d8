"""Names and defaults that the command line's help shows, defined here once, with no import
beyond the standard library, so that building the parser (``proofcritic --help``, an argument
error) needs no heavy module. Each is re-exported where it belongs: the score modes by
:mod:`proofcritic.verifier`, the strategies by :mod:`proofcritic.pipelines.solve`, the input
limit by :mod:`proofcritic.io`, the transports by :mod:`proofcritic.llm._openai`, the weight types by
:mod:`proofcritic.llm._local_loading`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

ScoreMode = Literal["text", "auto", "logprob", "guided"]
SCORE_MODES: tuple[str, ...] = get_args(ScoreMode)
#: the score mode of every verifier, command and service unless one is chosen: a verification
#: that wrote no valid score has none (the read-outs ``auto``, ``logprob``, ``guided`` are opt-in)
DEFAULT_SCORE_MODE: ScoreMode = "text"


def check_score_mode(value: str) -> ScoreMode:
    """``value`` if it is a score mode, else ``ValueError`` naming the modes (the one check of
    the verifier, the meta-verifier and the service's settings)."""
    if value not in SCORE_MODES:
        raise ValueError(f"score_mode must be one of {', '.join(SCORE_MODES)}, not {value!r}")
    return value  # type: ignore[return-value]


#: the sampling settings a user chooses (``proofcritic.llm.SamplingOptions``: the command line's
#: ``--temperature``, ``--top-p``, ``--max-tokens``, ``--seed`` and a service request's
#: ``sampling``), each with its words and bounds (the model's fields hold values to the bounds)
SAMPLING_HELP: dict[str, str] = {
    "temperature": "Sampling temperature, 0 to 5; 0 is greedy.",
    "top_p": "Nucleus sampling mass, more than 0 and at most 1.",
    "max_tokens": "Maximum new tokens per sample (at least 1).",
    "seed": "Sampling seed (0 or more), for reproducible sampling where the backend supports it.",
}
#: the roles' sampling where the user chose none: the released settings of DeepSeekMath-V2's
#: search (SPEC section 5)
DEFAULT_SAMPLING: dict[str, float] = {"temperature": 1.0, "top_p": 0.95}

#: adaptive verification (issue #17; ``proofcritic.pipelines.adaptive.AdaptiveOptions``, fields of
#: ``LabelConfig`` and ``SearchConfig``): default and words of ``--adaptive``, ``--confidence``, ``--batch``
ADAPTIVE_PARAMS: dict[str, tuple[Any, str]] = {
    "adaptive": (
        False,
        "Draw verifications in batches and stop once the decision is settled (exact rules exactly; "
        "mean-based ones with probability --confidence).",
    ),
    "confidence": (
        0.99,
        "With --adaptive: the probability that a mean-based decision (search's top-k and answer) is the "
        "fixed procedure's on the same draws (more than 0.5, less than 1).",
    ),
    "batch": (4, "With --adaptive: verifications of the first batch; each later request doubles those drawn."),
}

#: the auto-labeling parameters, default and words (``proofcritic.pipelines.label.LabelConfig``,
#: whose fields hold their bounds and check them together; the ``label`` command's options and
#: the service's label request are its fields)
LABEL_PARAMS: dict[str, tuple[Any, str]] = {
    "n": (16, "Verifications per proof."),
    "m": (8, "Meta-verifications per issue-reporting analysis."),
    "k": (2, "Valid lowest-scored analyses needed to label with the lowest score."),
    "confirm_at": (1.0, "A meta score at least this confirms the analysis."),
    "refute_at": (0.0, "A meta score at most this refutes the analysis."),
}

#: how a proof is cut into steps (issue #18; ``proofcritic.steps.split_steps``, the step verifier,
#: ``grade --steps``, ``eval steps``): the modes and the words of ``--step-mode``
StepMode = Literal["paragraphs", "lines", "blank"]
STEP_MODES: tuple[str, ...] = get_args(StepMode)
DEFAULT_STEP_MODE: StepMode = "paragraphs"
STEP_MODE_HELP = (
    "How a proof is cut into steps: paragraphs (blank lines, numbered items; displays kept with their "
    "sentence), lines (every line), blank (blank lines only)."
)

#: strategy name -> "module:class", imported lazily
STRATEGIES: dict[str, str] = {
    "single": "proofcritic.pipelines.single:SingleStrategy",
    "refine": "proofcritic.pipelines.refine:RefineStrategy",
    "search": "proofcritic.pipelines.search:SearchStrategy",
    "agent": "proofcritic.pipelines.agent:AgentStrategy",
    "critic": "proofcritic.pipelines.critic:CriticStrategy",
    "tora": "proofcritic.pipelines.tora:ToraStrategy",
}

#: the default limit on each text of an input (problem statement, proof, reference solution,
#: grading guidelines), in characters. The longest in ../shared/data: a proof of 35,281 characters
#: (Open Proof Corpus), a reference solution of 10,187, a statement of 1,261, guidelines of 464;
#: 200,000 (about 60,000 tokens) leaves room for proofs several times longer.
DEFAULT_MAX_INPUT_CHARS = 200_000
#: the environment variable that sets the limit (0: none); ``--max-input-chars`` overrides it
MAX_INPUT_CHARS_ENV = "PROOFCRITIC_MAX_INPUT_CHARS"

#: the weight types a local backend takes (``--dtype``; see proofcritic.llm._local_loading.dtype_plan)
DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(DType)

#: the OpenAI-compatible backend's HTTP clients (``--transport``; see proofcritic.llm._openai)
TransportKind = Literal["lean", "aiohttp", "openai"]
TRANSPORTS: tuple[str, ...] = get_args(TransportKind)

#: how the OpenAI-compatible backend spreads requests over several base URLs (``--routing``; see
#: proofcritic.llm._balancer): the replica with the fewest in flight, or the replica a request's
#: prompt prefix hashes to while its load allows (consistent hashing with bounded loads)
RoutingKind = Literal["least-loaded", "prefix"]
ROUTINGS: tuple[str, ...] = get_args(RoutingKind)
#: the default routing and load bound epsilon (a replica takes a keyed request while its requests
#: in flight are below (1 + epsilon) x the mean); see README "several replicas" for the measurement
DEFAULT_ROUTING: RoutingKind = "prefix"
DEFAULT_ROUTING_EPSILON = 0.5
