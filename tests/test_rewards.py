"""GRPO rewards (SPEC section 2): hand-computed tables on the scripted model, one case on the
real tiny transformers model, and TRL's calling convention.

The scripted verifier reads the score it should give from a ``[verdict=S]`` tag in the proof;
the scripted meta-verifier reads the meta score it should give from a ``[meta=M]`` tag in the
analysis it judges (the verifier's analysis, or the generator's self-analysis).
"""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from scripted import ScriptedBackend, generation_text, meta_text, verification_text

from proofcritic.errors import BackendError, InputError
from proofcritic.llm import GenerateConfig, Model
from proofcritic.meta_verifier import MetaVerifier
from proofcritic.parsing import META_SCORE_MARKER
from proofcritic.training import (
    format_reward,
    make_generator_reward,
    make_meta_verifier_reward,
    make_verifier_reward,
    score_reward,
)
from proofcritic.types import SCORES, Problem
from proofcritic.verifier import Verifier

PROBLEM = Problem(id="p", statement="Prove that $n^3 - n$ is divisible by 6.")
_VERDICT = re.compile(r"\[verdict=([0-9.]+)\]")
_META = re.compile(r"\[meta=([0-9.]+)\]")


def script(call):
    if call.role == "verify":
        match = _VERDICT.search(call.prompt)
        if match is None:
            return "no markers at all"
        return verification_text(float(match.group(1)))
    if call.role == "meta_verify":
        match = _META.search(call.prompt)
        if match is None:
            return "I cannot decide."  # a meta format failure
        if match.group(1) == "9":
            raise BackendError("the meta-verifier is down")
        return meta_text(float(match.group(1)))
    raise AssertionError(call.role)


@pytest.fixture
def roles():
    backend = ScriptedBackend(script)
    model = Model(backend)
    return Verifier(model, score_mode="text"), MetaVerifier(model), backend


def gen(self_score: float, verdict: float, meta: float | None = None) -> str:
    analysis = "I checked my proof." + ("" if meta is None else f" [meta={meta:g}]")
    return generation_text(f"The product of three consecutive integers. [verdict={verdict:g}]", self_score, analysis)


def ver(score: float, meta: float | None = None) -> str:
    return verification_text(score, analysis="Checked." + ("" if meta is None else f" [meta={meta:g}]"))


# --------------------------------------------------------------------------- formulas

PAIRS = [(sp, s) for sp in SCORES for s in SCORES]
EXPECTED_SCORE = {
    (0, 0): 1,
    (0, 0.5): 0.5,
    (0, 1): 0,
    (0.5, 0): 0.5,
    (0.5, 0.5): 1,
    (0.5, 1): 0.5,
    (1, 0): 0,
    (1, 0.5): 0.5,
    (1, 1): 1,
}


@pytest.mark.parametrize(("s_pred", "s_ref"), PAIRS)
def test_score_reward_table(s_pred, s_ref):
    assert score_reward(s_pred, s_ref) == EXPECTED_SCORE[(s_pred, s_ref)]


def test_score_reward_of_a_format_failure_is_zero():
    assert score_reward(None, 1) == 0 and score_reward(None, 0) == 0


@pytest.mark.parametrize(
    ("role", "text", "expected"),
    [
        ("verifier", verification_text(0.5), 1.0),
        ("verifier", "Here is my evaluation of the solution: fine. \\boxed{1}", 0.0),  # no score marker
        ("verifier", verification_text(0.7), 0.0),  # score outside {0, 0.5, 1}
        ("verify", verification_text(1), 1.0),
        ("meta_verifier", meta_text(1), 1.0),
        ("meta_verifier", "I think it is fine. \\boxed{1}", 0.0),
        ("generator", generation_text("a proof", 1), 1.0),
        ("generator", "## Solution\n\na proof with no self evaluation", 0.0),
    ],
)
def test_format_reward_table(role, text, expected):
    reward = format_reward(role)
    assert reward([text]) == [expected]
    assert reward.__name__.startswith("format_")


def test_format_reward_rejects_an_unknown_role():
    with pytest.raises(ValueError, match="unknown role"):
        format_reward("grader")


# --------------------------------------------------------------------------- verifier


@pytest.mark.parametrize(("s_pred", "s_ref"), PAIRS)
def test_verifier_reward_without_meta_is_r_score(s_pred, s_ref):
    reward = make_verifier_reward()
    assert reward([ver(s_pred)], reference_score=[s_ref]) == [EXPECTED_SCORE[(s_pred, s_ref)]]
    assert reward.last_components[0]["r_meta"] == 1.0


VERIFIER_META_CASES = [
    # (s', s, meta score, R_V = R_format * R_score * R_meta)
    (1, 1, 1, 1.0),
    (1, 1, 0.5, 0.5),
    (1, 1, 0, 0.0),
    (0.5, 0, 1, 0.5),
    (0.5, 0, 0.5, 0.25),
    (0, 0.5, 0.5, 0.25),
    (0, 1, 1, 0.0),  # R_score = 0: the meta-verifier is not asked
]


@pytest.mark.parametrize(("s_pred", "s_ref", "meta", "expected"), VERIFIER_META_CASES)
def test_verifier_reward_with_meta_table(roles, s_pred, s_ref, meta, expected):
    _, meta_verifier, backend = roles
    reward = make_verifier_reward(meta_verifier)
    out = reward([ver(s_pred, meta)], problem=[PROBLEM.statement], proof=["a proof"], reference_score=[s_ref])
    assert out == [pytest.approx(expected)]
    assert backend.count("meta_verify") == (0 if EXPECTED_SCORE[(s_pred, s_ref)] == 0 else 1)


def test_verifier_reward_format_failure_is_zero_and_calls_nothing(roles):
    _, meta_verifier, backend = roles
    reward = make_verifier_reward(meta_verifier)
    assert reward(["I like it. \\boxed{1}"], problem=[PROBLEM.statement], proof=["p"], reference_score=[1]) == [0.0]
    assert reward.last_components[0]["r_format"] == 0.0 and backend.calls == []


def test_verifier_reward_meta_failure_skips_or_falls_back(roles):
    _, meta_verifier, _ = roles
    columns = {"problem": [PROBLEM.statement], "proof": ["p"], "reference_score": [1]}
    assert make_verifier_reward(meta_verifier)([ver(1)], **columns) == [None]  # no [meta=] tag: format failure
    assert make_verifier_reward(meta_verifier, meta_on_failure=1.0)([ver(1)], **columns) == [1.0]


def test_verifier_reward_averages_several_meta_verifications(roles):
    _, meta_verifier, backend = roles
    reward = make_verifier_reward(meta_verifier, n_meta=3)
    assert reward([ver(1, 0.5)], problem=[PROBLEM], proof=["p"], reference_score=[1]) == [0.5]
    assert reward.last_components[0]["meta_scores"] == [0.5, 0.5, 0.5] and backend.count("meta_verify") == 3


# --------------------------------------------------------------------------- verifier, points scale


def points_ver(points: str | int, meta: float | None = None, tail: str = "") -> str:
    from proofcritic.parsing import EVALUATION_MARKER, POINTS_MARKER

    analysis = "Checked." + ("" if meta is None else f" [meta={meta:g}]")
    return f"{EVALUATION_MARKER}\n{analysis}\n\n### Issues\n\n- None\n\n{POINTS_MARKER}\n\\boxed{{{points}}}{tail}"


POINTS_CASES = [
    # (completion, labelled points l, max_points, R_V = R_format * (1 - |p' - l| / max_points))
    (points_ver(7), 7, 7, 1.0),
    (points_ver(5), 7, 7, 5 / 7),
    (points_ver(0), 7, 7, 0.0),
    (points_ver(3), 0, 7, 4 / 7),
    (points_ver(4), 7, 10, 0.7),  # the problem's own scale
    (points_ver(10), 7, 10, 0.7),
    (points_ver(8), 7, 7, 0.0),  # off the scale: a format failure
    (points_ver("3.5"), 3, 7, 0.0),  # not a whole number: a format failure
    (points_ver(3, tail="\nAnd more."), 3, 7, 0.0),  # text after the box: a format failure
    (ver(1), 7, 7, 0.0),  # the ternary protocol is a format failure on the points scale
]


@pytest.mark.parametrize(("text", "reference", "max_points", "expected"), POINTS_CASES)
def test_points_verifier_reward_table(text, reference, max_points, expected):
    from proofcritic.training import points_reward

    reward = make_verifier_reward(scale="points")
    assert reward([text], reference_points=[reference], max_points=[max_points]) == [pytest.approx(expected)]
    [components] = reward.last_components
    assert components["r_format"] == (1.0 if expected > 0 or text == points_ver(0) else 0.0)
    assert components["points_ref"] == reference
    assert points_reward(None, 3, 7) == 0.0 and points_reward(2, 3, 7) == pytest.approx(6 / 7)


def test_points_verifier_reward_with_meta_reviews_the_points_grade(roles):
    """R_meta on the points scale: the meta-verifier reviews the points grade (its points
    template), and the product is R_format * R_score * R_meta; the ternary reward is untouched."""
    _, meta_verifier, backend = roles
    reward = make_verifier_reward(meta_verifier, scale="points")
    columns = {"problem": [PROBLEM.statement], "proof": ["p"], "reference_points": [7], "max_points": [7]}
    assert reward([points_ver(6, meta=0.5)], **columns) == [pytest.approx(6 / 7 * 0.5)]
    [call] = [c for c in backend.calls if c.role == "meta_verify"]
    assert "The grader's points: 6 of 7" in call.prompt
    assert reward([points_ver(0, meta=1)], **columns) == [0.0] and backend.count("meta_verify") == 1
    assert make_verifier_reward()([ver(0.5)], reference_score=[1]) == [0.5]
    with pytest.raises(InputError, match=r"'reference_points' holds 8; points lie from 0 to 7"):
        make_verifier_reward(scale="points")([points_ver(7)], reference_points=[8], max_points=[7])
    with pytest.raises(InputError, match=r"needs the dataset column 'max_points'"):
        make_verifier_reward(scale="points")([points_ver(7)], reference_points=[7])
    with pytest.raises(ValueError, match="ternary or points"):
        make_verifier_reward(scale="quartiles")


# --------------------------------------------------------------------------- meta-verifier


@pytest.mark.parametrize(("ms_pred", "ms_ref"), PAIRS)
def test_meta_verifier_reward_table(ms_pred, ms_ref):
    reward = make_meta_verifier_reward()
    assert reward([meta_text(ms_pred)], reference_meta_score=[ms_ref]) == [EXPECTED_SCORE[(ms_pred, ms_ref)]]


def test_meta_verifier_reward_format_failure():
    reward = make_meta_verifier_reward()
    assert reward([f"no box\n{META_SCORE_MARKER}\nnothing"], reference_meta_score=[0]) == [0.0]
    assert reward.last_components[0]["r_format"] == 0.0


# --------------------------------------------------------------------------- generator

GENERATOR_CASES = [
    # (s', s from the verifier, meta score of Z or None = no meta-verifier, alpha, beta, R)
    (1, 1, None, 0.76, 0.24, 1.0),  # 0.76 * 1 + 0.24 * 1
    (1, 0, None, 0.76, 0.24, 0.0),  # 0.76 * 0 + 0.24 * 0
    (0, 0, None, 0.76, 0.24, 0.24),  # 0 + 0.24 * 1: an honest self-evaluation of a wrong proof
    (0.5, 1, None, 0.76, 0.24, 0.88),  # 0.76 + 0.24 * 0.5
    (1, 0.5, None, 0.76, 0.24, 0.5),  # 0.38 + 0.24 * 0.5
    (1, 0.5, 0.5, 0.76, 0.24, 0.44),  # 0.38 + 0.24 * 0.5 * 0.5
    (1, 1, 0.5, 0.76, 0.24, 0.88),  # 0.76 + 0.24 * 1 * 0.5
    (0, 0, 1, 0.76, 0.24, 0.24),
    (0, 0, 0, 0.76, 0.24, 0.0),  # the meta-verifier rejects the self-analysis
    (0.5, 1, None, 0.5, 0.5, 0.75),  # alpha, beta parameters: 0.5 + 0.5 * 0.5
    (0.5, 1, None, 1.0, 0.0, 1.0),
    (0.5, 1, None, 0.0, 1.0, 0.5),
]


@pytest.mark.parametrize(("s_self", "s", "meta", "alpha", "beta", "expected"), GENERATOR_CASES)
def test_generator_reward_table(roles, s_self, s, meta, alpha, beta, expected):
    verifier, meta_verifier, backend = roles
    reward = make_generator_reward(verifier, meta_verifier if meta is not None else None, alpha=alpha, beta=beta)
    assert reward([gen(s_self, s, meta)], problem=[PROBLEM.statement]) == [pytest.approx(expected)]
    parts = reward.last_components[0]
    assert parts["r_y"] == s and parts["r_format"] == 1.0
    assert parts["reward"] == pytest.approx(alpha * parts["r_y"] + beta * parts["r_z"])
    assert backend.count("verify") == 1


def test_generator_format_failure_is_zero_without_model_calls(roles):
    verifier, meta_verifier, backend = roles
    reward = make_generator_reward(verifier, meta_verifier)
    out = reward(["## Solution\n\nproof [verdict=1] and no self evaluation"], problem=[PROBLEM.statement])
    assert out == [0.0] and backend.calls == []


def test_generator_reward_batches_concurrently_and_isolates_errors(roles):
    verifier, meta_verifier, backend = roles
    reward = make_generator_reward(verifier, meta_verifier)
    completions = [gen(1, 1, 1), gen(0, 0, 0.5), gen(1, 1, 9), "garbage", gen(1, 0.5, 1)]
    out = reward(completions, problem=[PROBLEM.statement] * len(completions))
    assert out == [pytest.approx(1.0), pytest.approx(0.12), None, 0.0, pytest.approx(0.5)]
    assert "BackendError" in reward.last_components[2]["error"]
    assert backend.count("verify") == 4


def test_generator_reward_with_a_real_tiny_model(tiny_backend):
    """The verifier runs on the real transformers backend; the score is read out by likelihood."""
    verifier = Verifier(Model(tiny_backend), score_mode="logprob", config=GenerateConfig(max_tokens=8, temperature=0))
    reward = make_generator_reward(verifier)
    out = reward([gen(1, 1)], problem=[PROBLEM.model_dump()])
    parts = reward.last_components[0]
    assert parts["r_y"] in SCORES
    s = parts["r_y"]
    assert out == [pytest.approx(0.76 * s + 0.24 * (1 - abs(1 - s)))]


# --------------------------------------------------------------------------- TRL convention


def test_trl_calling_convention(roles):
    verifier, _, _ = roles
    reward = make_generator_reward(verifier)
    conversational = [
        [{"role": "assistant", "content": gen(1, 1)}],
        [{"role": "assistant", "content": [{"type": "text", "text": gen(0, 0)}]}],
    ]
    out = reward(
        prompts=[[{"role": "user", "content": "x"}]] * 2,
        completions=conversational,
        completion_ids=[[1], [2]],
        problem=[PROBLEM.statement, {"statement": PROBLEM.statement, "max_points": 7}],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
    )
    assert out == [pytest.approx(1.0), pytest.approx(0.24)]
    assert reward.__name__ == "generator_reward"
    from trl.trainer.utils import get_callable_name, is_async_callable

    assert get_callable_name(reward) == "generator_reward" and not is_async_callable(reward)


def test_none_reference_gives_none_and_bad_columns_raise():
    reward = make_verifier_reward()
    assert reward([ver(1), ver(1)], reference_score=[None, 1]) == [None, 1.0]
    with pytest.raises(InputError, match="reference_score"):
        reward([ver(1)])
    with pytest.raises(InputError, match="entries"):
        reward([ver(1)], reference_score=[1, 1])
    with pytest.raises(InputError, match="scores lie"):
        reward([ver(1)], reference_score=[7])


async def test_sync_call_inside_a_running_loop_and_acall(roles):
    verifier, _, _ = roles
    reward = make_generator_reward(verifier)
    assert reward([gen(1, 1)], problem=[PROBLEM.statement]) == [pytest.approx(1.0)]  # private loop
    assert await reward.acall([gen(0, 0)], problem=[PROBLEM.statement]) == [pytest.approx(0.24)]


def test_sync_call_from_worker_threads(roles):
    verifier, _, _ = roles
    reward = make_generator_reward(verifier)
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(reward([gen(1, 1)], problem=[PROBLEM.statement])))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[pytest.approx(1.0)]] * 3
    assert asyncio.run(reward.acall([gen(1, 0.5)], problem=[PROBLEM.statement])) == [pytest.approx(0.5)]
