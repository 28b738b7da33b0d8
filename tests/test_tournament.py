"""Pairwise tournaments: the comparator's strict parser, both orders against position bias,
knock-out and Swiss selection on a scripted judge that knows each proof's quality, and SmolLM2
through the comparator once."""

from __future__ import annotations

import re

import pytest
from scripted import ScriptedBackend

from proofcritic import Problem
from proofcritic.llm import GenerateConfig, Model
from proofcritic.pipelines.tournament import COMPARE_MARKER, Comparator, knockout, parse_comparison, swiss

PROBLEM = Problem(id="p", statement="Prove that 1 + 1 = 2.")
_QUALITY = re.compile(r"## Proof 1\s+Proof of quality (\d+)\..*## Proof 2\s+Proof of quality (\d+)\.", re.DOTALL)


def judge(bias: bool = False):
    """A comparator that prefers the higher quality; with ``bias`` it always says 1 when the
    qualities are within 1 of each other (a position-biased judge)."""

    def script(call):
        first, second = map(int, _QUALITY.search(call.prompt).groups())
        choice = 1 if (bias and abs(first - second) <= 1) or first > second else 2
        return f"Proof {choice} is tighter.\n\n{COMPARE_MARKER}\n\\boxed{{{choice}}}"

    backend = ScriptedBackend(script)
    return Comparator(Model(backend)), backend


def pool(*qualities: int) -> list[str]:
    return [f"Proof of quality {q}." for q in qualities]


@pytest.mark.parametrize(
    "text, choice, error",
    [
        (f"ok\n{COMPARE_MARKER} \\boxed{{2}}", 2, None),
        (f"ok\n{COMPARE_MARKER} \\boxed{{3}}", None, "not one of 1, 2"),
        (f"ok\n{COMPARE_MARKER} \\boxed{{1}}\nmore", None, "not the end"),
        ("I prefer the first. \\boxed{1}", None, "missing marker"),
    ],
)
def test_parse_comparison(text, choice, error):
    c = parse_comparison(text)
    assert c.choice == choice and c.format_ok == (error is None)
    if error:
        assert error in c.format_error


async def test_knockout_picks_the_best_proof_with_n_minus_one_matches():
    comparator, backend = judge()
    result = await knockout(comparator, PROBLEM, pool(3, 9, 1, 5, 7))
    assert result.winner == 1 and len(result.matches) == 4
    assert backend.count("compare") == 8  # every match asked in both orders
    assert all(m.winner is not None for m in result.matches)


async def test_swiss_picks_the_best_proof_and_avoids_rematches():
    comparator, _ = judge()
    result = await swiss(comparator, PROBLEM, pool(4, 2, 8, 6, 1, 7, 3, 5))
    assert result.winner == 2 and len(result.matches) == 3 * 4  # 3 rounds of 4 matches
    pairs = [frozenset((m.a, m.b)) for m in result.matches]
    assert len(set(pairs)) == len(pairs)
    assert result.points[2] == 3


async def test_position_bias_cancels_into_draws():
    comparator, _ = judge(bias=True)
    game = await comparator.match(PROBLEM, pool(5, 6), 0, 1)
    assert game.forward.choice == 1 and game.backward.choice == 1 and game.winner is None  # each order says "1"
    clear = await comparator.match(PROBLEM, pool(2, 9), 0, 1)
    assert clear.winner == 1
    result = await knockout(comparator, PROBLEM, pool(5, 6))
    assert result.winner == 0 and result.points == [0.5, 0.5]  # a draw goes to the better seed


async def test_one_proof_is_its_own_winner_without_calls():
    comparator, backend = judge()
    assert (await knockout(comparator, PROBLEM, pool(1))).winner == 0
    assert (await swiss(comparator, PROBLEM, pool(1))).winner == 0 and not backend.calls
    with pytest.raises(ValueError):
        await knockout(comparator, PROBLEM, [])


@pytest.mark.smollm2
async def test_smollm2_through_the_comparator(smol_backend):
    comparator = Comparator(Model(smol_backend), config=GenerateConfig(max_tokens=32, temperature=0.0))
    game = await comparator.match(PROBLEM, ["1 + 1 = 2 by the successor axiom.", "It is obvious."], 0, 1)
    for answer in (game.forward, game.backward):
        assert answer.raw and answer.format_ok == (answer.choice in (1, 2))
    assert game.winner in (None, 0, 1)


async def test_single_strategy_can_choose_by_tournament():
    """`solve --strategy single --samples 4 --set select=knockout`: the verifier's model judges a
    knock-out among the samples; the best proof wins although its self-score is the lowest."""
    from scripted import generation_text

    from proofcritic.pipelines import Roles
    from proofcritic.pipelines.single import SingleStrategy

    qualities = [2, 9, 4, 1]
    compare = judge()[0].model.backend.script  # the comparator's answers by quality

    def script(call):
        if call.role == "generate":  # self-scores rank the proofs the wrong way round
            q = qualities[call.index]
            return generation_text(f"Proof of quality {q}.", 1 if q < 5 else 0)
        return compare(call)

    backend = ScriptedBackend(script)
    strategy = SingleStrategy(samples=4, verify_n=0, select="knockout")
    result = await strategy.solve(PROBLEM, Roles.from_models(Model(backend)))
    assert result.proof == "Proof of quality 9." and "knockout tournament (3 matches" in result.stop_reason
    assert backend.count("compare") == 6
    step = next(s for s in result.transcript if s["step"] == "tournament")
    assert step["format"] == "knockout" and len(step["matches"]) == 3
    assert strategy.plan().calls["comparison"] == 6
    plain = await SingleStrategy(samples=4, verify_n=0).solve(
        PROBLEM, Roles.from_models(Model(ScriptedBackend(script)))
    )
    assert plain.proof != "Proof of quality 9."  # by self-score
