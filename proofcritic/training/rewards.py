"""GRPO rewards for the three roles (SPEC section 2), as TRL reward callables.

Every reward is a plain callable built by a factory: ``reward(completions, **columns)`` returns
one float per completion, or ``None`` for a completion it cannot score (TRL leaves such a
sample out of its statistics and gives it no advantage). ``completions`` are plain strings or
conversational completions (``[{"role": "assistant", "content": ...}]``; a rollout that called
tools is read whole, its calls and outputs as fenced blocks: :func:`tool_conversation_text`);
TRL's own extra keywords (``prompts``, ``completion_ids``, ``trainer_state``, ...) are accepted and ignored.

Dataset columns (one list per column, one entry per completion):

====================  =====================================================================
column                meaning
====================  =====================================================================
``problem``           the problem: a statement string, a :class:`Problem` or its dict
``proof``             the proof being verified (verifier and meta-verifier datasets)
``analysis``          the verification being judged (meta-verifier dataset)
``reference_score``   the reference score s in {0, 0.5, 1} of ``proof`` (human or auto-label)
``reference_meta_score``  the reference meta score ms in {0, 0.5, 1} of ``analysis``
``reference_points``  points scale: the reference points l of ``proof``, 0..``max_points``
``max_points``        points scale: the problem's scale
====================  =====================================================================

The verifier's reward has two protocols (``make_verifier_reward(scale=...)``): the ternary one of
SPEC section 2, unchanged, and the points one (``label --scale points`` data): the completion is
parsed by the points parser (its format check: the points marker, a whole number on the
problem's scale in the box, nothing after it), and R_score(p', l) = 1 - |p' - l| / max_points,
which falls linearly with the distance between the predicted and the labelled points (0 for a
format failure); R_meta as in the ternary reward, the meta-verifier reviewing the points grade.

A row whose reference is ``None`` gets ``None``. Every reward keeps the per-sample components
of its last call in ``last_components`` (dicts with ``reward``, ``r_format``, ``r_score``,
``r_meta``, ``r_y``, ``r_z``, ... where they apply) and has a ``__name__`` TRL logs it under.

Rewards that call models (a :class:`Verifier` / :class:`MetaVerifier` role on any backend) do
all their calls concurrently (``asyncio.gather`` over the role's :class:`Model`, which bounds
concurrency, retries and caches). Called synchronously, as TRL does, they run on a private
event loop in a daemon thread, so they work from any thread, with or without a running loop;
``await reward.acall(...)`` runs them on the caller's loop instead. A model error for one
sample (a :class:`ProofcriticError`) makes that sample ``None`` with an ``error`` component;
it never fails the batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import InputError, ProofcriticError
from ..generator import parse_generation
from ..io import problem_from_record
from ..meta_verifier import MetaVerifier, parse_meta_verification
from ..types import Problem, Verification
from ..verifier import Verifier, parse_points_verification, parse_verification

__all__ = [
    "ALPHA",
    "BETA",
    "RewardFunction",
    "format_reward",
    "make_answer_reward",
    "make_answer_verifier_rewards",
    "make_generator_reward",
    "make_meta_verifier_reward",
    "make_process_reward",
    "make_verifier_reward",
    "points_reward",
    "score_reward",
    "tool_conversation_text",
]

ALPHA = 0.76  #: weight of R_Y, the verifier's score of the proof (SPEC section 2)
BETA = 0.24  #: weight of R_Z, the quality of the self-evaluation
_ROLES = {
    "verifier": "verifier",
    "verify": "verifier",
    "meta_verifier": "meta_verifier",
    "meta_verify": "meta_verifier",
    "generator": "generator",
    "generate": "generator",
}
T = TypeVar("T")
_SCORE_COLUMNS = ("reference_score", "reference_meta_score")
_POINTS_COLUMNS = ("reference_points", "max_points")


# --------------------------------------------------------------------------- formulas


def score_reward(s_pred: float | None, s_ref: float) -> float:
    """R_score(s', s) = 1 - |s' - s|; a missing prediction (format failure) earns 0."""
    return 0.0 if s_pred is None else 1.0 - abs(float(s_pred) - float(s_ref))


def points_reward(p_pred: float | None, p_ref: float, max_points: float) -> float:
    """R_score on the points scale: 1 - |p' - l| / max_points; a missing prediction (format
    failure) earns 0. ``points_reward(5, 7, 7)`` = 5/7, ``points_reward(0, 7, 7)`` = 0."""
    return 0.0 if p_pred is None else 1.0 - abs(float(p_pred) - float(p_ref)) / float(max_points)


def _mean(values: Sequence[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, a message dict, or a list of messages (the last
    assistant message counts; its content may be a string or a list of text parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
        return "" if content is None else str(content)
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        if any(m.get("role") == "tool" for m in messages):  # a rollout that called tools
            return tool_conversation_text(messages)
        replies = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return completion_text(replies[-1]) if replies else ""
    raise InputError(f"cannot read a completion of type {type(completion).__name__}")


def tool_conversation_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The solution text of a rollout that called tools (TRL's assistant / tool messages), laid
    out as ``solve --strategy tora`` writes it: each assistant turn, its tool calls as fenced
    ```python blocks (the ``code`` argument; other tools' arguments as JSON), then each tool's
    message as an ```output block; so a reward reads the whole solution, with the computations
    and their outputs in it, and the final answer last."""
    import json

    from ..verifier import fence_for

    parts: list[str] = []
    for message in messages:
        if message.get("role") == "tool":
            output = completion_text(message).rstrip()
            fence = fence_for(output)
            parts.append(f"{fence}output\n{output}\n{fence}")
            continue
        text = completion_text(message).rstrip()
        if text:
            parts.append(text)
        for call in message.get("tool_calls") or []:
            function = call.get("function", call) if isinstance(call, Mapping) else {}
            arguments = function.get("arguments", {}) if isinstance(function, Mapping) else {}
            if isinstance(arguments, Mapping) and isinstance(arguments.get("code"), str):
                code, language = arguments["code"].rstrip(), "python"
            else:
                code, language = json.dumps(arguments, ensure_ascii=False), str(function.get("name", "tool"))
            fence = fence_for(code)
            parts.append(f"{fence}{language}\n{code}\n{fence}")
    return "\n\n".join(parts)


def as_problem(value: Any) -> Problem:
    """A ``problem`` column entry as a :class:`Problem`."""
    if isinstance(value, Problem):
        return value
    if isinstance(value, str):
        return Problem(statement=value)
    if isinstance(value, Mapping):
        return problem_from_record(dict(value))
    raise InputError(f"the 'problem' column holds a {type(value).__name__}, not a statement or a problem")


def _check_score(value: Any, column: str) -> float | None:
    if value is None:
        return None
    score = float(value)
    if not 0.0 <= score <= 1.0:
        raise InputError(f"column {column!r} holds {score:g}; scores lie in [0, 1]")
    return score


def _check_points(row: dict[str, Any]) -> None:
    """A points row's ``max_points`` above 0 and ``reference_points`` (when given) on its scale."""
    try:
        scale = float(row["max_points"])
    except (TypeError, ValueError):
        raise InputError(f"column 'max_points' holds {row['max_points']!r}; it must be a number above 0") from None
    if not scale > 0:
        raise InputError(f"column 'max_points' holds {scale:g}; it must be above 0")
    row["max_points"] = scale
    reference = row.get("reference_points")
    if reference is not None:
        reference = float(reference)
        if not 0.0 <= reference <= scale:
            raise InputError(f"column 'reference_points' holds {reference:g}; points lie from 0 to {scale:g}")
        row["reference_points"] = reference


# --------------------------------------------------------------------------- private loop


class _LoopThread:
    """One event loop in a daemon thread, shared by every reward that calls models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name="proofcritic-rewards", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it (from any other thread)."""
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a reward was called synchronously on its own loop; use `await reward.acall(...)`")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_RUNNER = _LoopThread()


# --------------------------------------------------------------------------- reward objects


class RewardFunction:
    """A TRL reward callable: ``reward(completions, **columns) -> list[float | None]``."""

    #: dataset columns the reward reads
    columns: tuple[str, ...] = ()

    def __init__(self, name: str):
        self.__name__ = name
        self.last_components: list[dict[str, Any]] = []
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    def __repr__(self) -> str:
        return f"<reward {self.__name__}>"

    def _rows(self, completions: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[str], list[dict]]:
        texts = [completion_text(c) for c in completions]
        rows: list[dict[str, Any]] = [{} for _ in texts]
        for column in self.columns:
            if column not in kwargs:
                raise InputError(f"reward {self.__name__!r} needs the dataset column {column!r}")
            values = list(kwargs[column])
            if len(values) != len(texts):
                raise InputError(f"column {column!r} has {len(values)} entries for {len(texts)} completions")
            if column in _SCORE_COLUMNS:  # bad references fail the batch before any model call
                values = [_check_score(v, column) for v in values]
            for row, value in zip(rows, values):
                row[column] = value
        if "max_points" in self.columns:
            for row in rows:
                _check_points(row)
        return texts, rows

    def add_listener(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call ``listener(components)`` after every batch (e.g. to log the components of each
        batch, not only the last one)."""
        self._listeners.append(listener)

    def _finish(self, components: list[dict[str, Any]]) -> list[float | None]:
        self.last_components = components
        for listener in self._listeners:
            listener(components)
        return [c["reward"] for c in components]

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts, rows = self._rows(completions, kwargs)
        return self._finish([self._one(text, row) for text, row in zip(texts, rows)])

    def _one(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _FormatReward(RewardFunction):
    def __init__(self, role: str):
        super().__init__(f"format_{role}")
        self.role = role

    def _one(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        parse = {
            "verifier": parse_verification,
            "meta_verifier": parse_meta_verification,
            "generator": parse_generation,
        }[self.role]
        parsed = parse(text)
        r_format = 1.0 if parsed.format_ok else 0.0
        return {"reward": r_format, "r_format": r_format, "format_error": parsed.format_error}


def format_reward(role: str) -> RewardFunction:
    """R_format for ``role`` ("verifier", "meta_verifier" or "generator"; the prompt names
    "verify", "meta_verify", "generate" work too): 1 when the completion carries the role's
    markers and a parseable score, else 0. Reads no dataset column."""
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r}; use verifier, meta_verifier or generator")
    return _FormatReward(_ROLES[role])


class _MetaVerifierReward(RewardFunction):
    columns = ("reference_meta_score",)

    def _one(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        reference = row["reference_meta_score"]
        parsed = parse_meta_verification(text)
        r_format = 1.0 if parsed.format_ok else 0.0
        if reference is None:
            return {"reward": None, "r_format": r_format, "ms_pred": parsed.score, "ms_ref": None}
        r_score = score_reward(parsed.score, reference)
        return {
            "reward": r_format * r_score,
            "r_format": r_format,
            "r_score": r_score,
            "ms_pred": parsed.score,
            "ms_ref": reference,
        }


class _AnswerReward(RewardFunction):
    columns = ("answer",)

    def _one(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        from ..answers import check_answer

        gold = row["answer"]
        if gold is None or not str(gold).strip():
            return {"reward": None, "accuracy": None, "answered": None}
        # a generator-protocol output ends with its self-evaluation's boxed score: the answer is the
        # solution's (as tora reads it), not that score
        solution = parse_generation(text).proof
        check = check_answer(str(gold), solution if solution.strip() else text)
        correct = 1.0 if check.correct else 0.0
        return {"reward": correct, "accuracy": correct, "answered": 0.0 if check.answer is None else 1.0}


def make_answer_reward() -> RewardFunction:
    """The rule-based correctness reward of answer-checked RL (issue #19, SimpleRL-Zoo style): 1
    when the completion's final answer (:func:`proofcritic.answers.check_answer`: boxed, "Final
    answer:", else the last line; math-verify equivalence) matches the row's ``answer``, else 0;
    no format reward. In a generator-protocol output the answer is read from its ``## Solution``
    (not the self-evaluation's boxed score after it). A row without an answer gets ``None``.
    Components: ``accuracy`` (= the
    reward) and ``answered`` (1 when an answer could be extracted)."""
    return _AnswerReward("answer_reward")


def make_meta_verifier_reward() -> RewardFunction:
    """The meta-verifier's reward R_format * R_score(ms', ms) against ``reference_meta_score``."""
    return _MetaVerifierReward("meta_verifier_reward")


class _ModelReward(RewardFunction):
    """A reward whose samples need model calls: computed concurrently, on a private loop."""

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return _RUNNER.run(self.acall(completions, **kwargs))

    async def acall(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        """The rewards, computed on the running loop."""
        texts, rows = self._rows(completions, kwargs)
        outcomes = await asyncio.gather(*(self._aone(t, r) for t, r in zip(texts, rows)), return_exceptions=True)
        components = []
        for outcome in outcomes:
            if isinstance(outcome, ProofcriticError):
                components.append({"reward": None, "error": f"{type(outcome).__name__}: {outcome}"})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                components.append(outcome)
        return self._finish(components)

    async def _aone(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


async def _meta_score(
    meta_verifier: MetaVerifier, problem: Problem, proof: str, verification: Verification, n: int
) -> tuple[float | None, list[float | None]]:
    """Mean of the scored meta-verifications of ``verification`` (None when none scored)."""
    results = await meta_verifier.meta_verify(problem, proof, verification, n=n)
    scores = [r.score for r in results]
    return _mean(scores), scores


class _VerifierReward(_ModelReward):
    def __init__(self, meta_verifier: MetaVerifier | None, n_meta: int, meta_on_failure: float | None):
        super().__init__("verifier_reward")
        self.meta_verifier, self.n_meta, self.meta_on_failure = meta_verifier, n_meta, meta_on_failure
        self.columns = ("reference_score",) if meta_verifier is None else ("problem", "proof", "reference_score")

    async def _aone(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        reference = row["reference_score"]
        parsed = parse_verification(text)
        r_format = 1.0 if parsed.format_ok else 0.0
        out: dict[str, Any] = {"r_format": r_format, "s_pred": parsed.score, "s_ref": reference}
        if reference is None:
            return {"reward": None, **out}
        r_score = score_reward(parsed.score, reference)
        out["r_score"] = r_score
        if self.meta_verifier is None:
            return {"reward": r_format * r_score, "r_meta": 1.0, **out}
        if r_format * r_score == 0.0:  # the product is 0 whatever the meta-verifier says
            return {"reward": 0.0, "r_meta": None, **out}
        r_meta, scores = await _meta_score(
            self.meta_verifier, as_problem(row["problem"]), str(row["proof"]), parsed, self.n_meta
        )
        r_meta = self.meta_on_failure if r_meta is None else r_meta
        reward = None if r_meta is None else r_format * r_score * r_meta
        return {"reward": reward, "r_meta": r_meta, "meta_scores": scores, **out}


class _PointsVerifierReward(_VerifierReward):
    """The verifier's reward on the points protocol (see the module docstring)."""

    def __init__(self, meta_verifier: MetaVerifier | None, n_meta: int, meta_on_failure: float | None):
        super().__init__(meta_verifier, n_meta, meta_on_failure)
        self.columns = _POINTS_COLUMNS if meta_verifier is None else ("problem", "proof", *_POINTS_COLUMNS)

    async def _aone(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        reference, scale = row["reference_points"], row["max_points"]
        parsed = parse_points_verification(text, max_points=scale)
        r_format = 1.0 if parsed.format_ok else 0.0
        out: dict[str, Any] = {
            "r_format": r_format,
            "points_pred": parsed.points,
            "points_ref": reference,
            # as fractions of the scale too, so that score_accuracy reads exact points matches
            "s_pred": parsed.score,
            "s_ref": None if reference is None else reference / scale,
        }
        if reference is None:
            return {"reward": None, **out}
        r_score = points_reward(parsed.points, reference, scale)
        out["r_score"] = r_score
        if self.meta_verifier is None:
            return {"reward": r_format * r_score, "r_meta": 1.0, **out}
        if r_format * r_score == 0.0:
            return {"reward": 0.0, "r_meta": None, **out}
        problem = as_problem(row["problem"]).model_copy(update={"max_points": scale})
        r_meta, scores = await _meta_score(self.meta_verifier, problem, str(row["proof"]), parsed, self.n_meta)
        r_meta = self.meta_on_failure if r_meta is None else r_meta
        reward = None if r_meta is None else r_format * r_score * r_meta
        return {"reward": reward, "r_meta": r_meta, "meta_scores": scores, **out}


def make_verifier_reward(
    meta_verifier: MetaVerifier | None = None,
    *,
    n_meta: int = 1,
    meta_on_failure: float | None = None,
    scale: str = "ternary",
) -> RewardFunction:
    """The verifier's reward R_V = R_format * R_score * R_meta.

    ``scale="ternary"`` (SPEC section 2): R_score(s', s) = 1 - |s' - s| against
    ``reference_score``. ``scale="points"``: the points parser's format check and
    R_score(p', l) = 1 - |p' - l| / max_points against ``reference_points`` and ``max_points``
    (see :func:`points_reward`). With a meta-verifier the columns ``problem`` and ``proof`` too.
    R_meta is the mean score of ``n_meta`` meta-verifications of the completion's analysis
    (1 without a meta-verifier; not asked for when R_format * R_score is already 0). When no
    meta-verification carries a score, R_meta is ``meta_on_failure`` (default ``None``: the
    sample gets ``None``).
    """
    if n_meta < 1:
        raise ValueError("n_meta must be at least 1")
    if scale == "points":
        return _PointsVerifierReward(meta_verifier, n_meta, meta_on_failure)
    if scale != "ternary":
        raise ValueError(f"scale must be ternary or points, not {scale!r}")
    return _VerifierReward(meta_verifier, n_meta, meta_on_failure)


class _GeneratorReward(_ModelReward):
    columns: tuple[str, ...] = ("problem",)

    def __init__(
        self,
        verifier: Verifier,
        meta_verifier: MetaVerifier | None,
        alpha: float,
        beta: float,
        n_verify: int,
        n_meta: int,
        meta_on_failure: float | None,
    ):
        super().__init__("generator_reward")
        self.verifier, self.meta_verifier = verifier, meta_verifier
        self.alpha, self.beta = alpha, beta
        self.n_verify, self.n_meta, self.meta_on_failure = n_verify, n_meta, meta_on_failure

    async def _aone(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        generation = parse_generation(text)
        r_format = 1.0 if generation.format_ok else 0.0
        out: dict[str, Any] = {"r_format": r_format, "s_self": generation.self_score}
        if r_format == 0.0:  # R = 0 whatever the verifier says: no model call
            return {"reward": 0.0, "r_y": None, "r_z": None, **out}
        problem = as_problem(row["problem"])
        verifications = await self.verifier.verify(problem, generation.proof, n=self.n_verify)
        scores = [v.score for v in verifications]
        r_y = _mean(scores)
        out.update(verifier_scores=scores, r_y=r_y)
        if r_y is None:  # the verifier gave no score: the reward is unknown
            return {"reward": None, "r_z": None, **out}
        r_score = score_reward(generation.self_score, r_y)
        r_meta: float | None = 1.0
        if self.meta_verifier is not None:
            if r_score == 0.0:
                r_meta = None  # R_Z is 0 whatever the meta-verifier says
            else:
                as_verification = Verification(
                    raw=generation.raw, analysis=generation.self_analysis, score=generation.self_score, format_ok=True
                )
                r_meta, meta_scores = await _meta_score(
                    self.meta_verifier, problem, generation.proof, as_verification, self.n_meta
                )
                out["meta_scores"] = meta_scores
                if r_meta is None:
                    r_meta = self.meta_on_failure
                    if r_meta is None:
                        return {"reward": None, "r_score": r_score, "r_meta": None, "r_z": None, **out}
        r_z = r_score * (r_meta if r_meta is not None else 0.0)
        reward = r_format * (self.alpha * r_y + self.beta * r_z)
        return {"reward": reward, "r_score": r_score, "r_meta": r_meta, "r_z": r_z, **out}


def make_generator_reward(
    verifier: Verifier,
    meta_verifier: MetaVerifier | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    *,
    n_verify: int = 1,
    n_meta: int = 1,
    meta_on_failure: float | None = None,
) -> RewardFunction:
    """The generator's reward R = R_format(Y, Z) * (alpha * R_Y + beta * R_Z).

    Column: ``problem``. The completion is parsed into the proof Y, the self-analysis Z and
    the self-score s'. R_Y = s, the mean score of ``n_verify`` verifications of Y by
    ``verifier`` (a sample whose verifications all lack a score gets ``None``);
    R_Z = R_score(s', s) * R_meta(Z), where R_meta(Z) is the mean score of ``n_meta``
    meta-verifications of Z read as a verification of Y with score s' (1 without a
    meta-verifier; ``meta_on_failure`` when none scores, ``None`` by default = skip the sample).
    No model is called for a completion that fails the format (R = 0).
    """
    if n_verify < 1 or n_meta < 1:
        raise ValueError("n_verify and n_meta must be at least 1")
    if alpha < 0 or beta < 0:
        raise ValueError("alpha and beta must not be negative")
    return _GeneratorReward(verifier, meta_verifier, alpha, beta, n_verify, n_meta, meta_on_failure)


class _ProofsOnlyGeneratorReward(_GeneratorReward):
    """The generator reward on rows without an answer only (``reward_verifier_rows: proofs``)."""

    columns = ("problem", "answer")

    async def _aone(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        answer = row.get("answer")
        if answer is not None and str(answer).strip():  # the answer reward scores it: no verifier call
            return {"reward": None, "skipped_answer_row": 1.0}
        return {**(await super()._aone(text, row)), "skipped_answer_row": 0.0}


def make_answer_verifier_rewards(
    verifier: Verifier,
    meta_verifier: MetaVerifier | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    *,
    proofs_only: bool = False,
) -> list[RewardFunction]:
    """Answer-checked RL with the verifier's reward weighted in (issue #19 point 3,
    ``reward: answer+verifier``): ``[answer_reward, generator_reward]``, for TRL to combine with
    its ``reward_weights`` (answer 1, verifier ``reward_verifier_weight``). A row with an answer
    gets the answer reward (:func:`make_answer_reward`) plus the weighted verifier reward
    (:func:`make_generator_reward`); a row without one (a proof problem) gets the answer reward
    ``None`` (left out by TRL), so only the verifier's counts. ``proofs_only``: the verifier scores
    only the rows without an answer (the others get ``None`` from it, and cost no call)."""
    answer = make_answer_reward()
    if proofs_only:
        if alpha < 0 or beta < 0:
            raise ValueError("alpha and beta must not be negative")
        return [answer, _ProofsOnlyGeneratorReward(verifier, meta_verifier, alpha, beta, 1, 1, None)]
    return [answer, make_generator_reward(verifier, meta_verifier, alpha, beta)]


class _ProcessReward(RewardFunction):
    columns = ("problem",)

    def __init__(self, scorer: Any, aggregate: str, step_mode: str):
        super().__init__("process_reward")
        self.scorer, self.aggregate, self.step_mode = scorer, aggregate, step_mode

    def _one(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        from ..pipelines.prm import aggregate_steps, score_steps
        from ..steps import split_steps

        generation = parse_generation(text)
        proof = generation.proof if generation.proof.strip() else text
        steps = [s.text for s in split_steps(proof, self.step_mode)]  # type: ignore[arg-type]
        if not steps:
            return {"reward": 0.0, "steps": 0}
        scores = score_steps(
            self.scorer.model,
            self.scorer.tokenizer,
            as_problem(row["problem"]).statement,
            steps,
            separator=self.scorer.separator,
        )
        if not scores:  # no step fits the PRM's length
            return {"reward": None, "steps": len(steps), "error": "no step fits the PRM's max length"}
        return {"reward": aggregate_steps(scores, self.aggregate), "steps": len(steps), "min_step": min(scores)}  # type: ignore[arg-type]


def make_process_reward(scorer: Any, aggregate: str = "min", step_mode: str = "paragraphs") -> RewardFunction:
    """A process reward for generator GRPO (issue #18): the completion's proof (its
    ``## Solution``, or the whole text when it has none) split into steps, each scored by the
    PRM ``scorer`` (a :class:`proofcritic.pipelines.prm.StepScorer`, e.g. ``load_scorer(FOLDER)``),
    and the step scores aggregated (``min``, ``product`` or ``last``). Column: ``problem``.
    TRL adds it to the outcome reward with its ``reward_weights``."""
    from ..pipelines.prm import PRM_AGGREGATES

    if aggregate not in PRM_AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(PRM_AGGREGATES)}, not {aggregate!r}")
    return _ProcessReward(scorer, aggregate, step_mode)
