"""The ``refine`` strategy (SPEC 5, sequential refinement) and ``single``, on the scripted model."""

from __future__ import annotations

import re

import pytest
from scripted import ScriptedBackend, generation_text, verification_text

from proofcritic.budget import Budget, budget_scope
from proofcritic.llm import Model
from proofcritic.parsing import SCORE_MARKER
from proofcritic.pipelines._common import Roles
from proofcritic.pipelines.refine import RefineConfig, RefineStrategy
from proofcritic.pipelines.single import SingleStrategy
from proofcritic.types import Problem

PROBLEM = Problem(id="p1", statement="Prove that $n^3 - n$ is divisible by 6 for every integer $n$.")


def scripted(self_scores: list[float | tuple[float, str]], verify_score: float = 0.5):
    """Generation k (0-based, generate or refine) writes proof ``PROOF-k`` with self-analysis
    ``ANALYSIS-k`` and the k-th self-score; an entry ``(score, "length")`` is cut off."""

    def script(call):
        if call.role == "verify":
            return verification_text(verify_score)
        k = sum(1 for c in backend.calls if c.role in ("generate", "refine")) - 1
        entry = self_scores[min(k, len(self_scores) - 1)]
        score, finish = entry if isinstance(entry, tuple) else (entry, "stop")
        return generation_text(f"PROOF-{k}", score, analysis=f"ANALYSIS-{k}"), finish

    backend = ScriptedBackend(script)
    return backend, Roles.from_models(Model(backend))


async def test_stops_at_self_score_one():
    backend, roles = scripted([0, 0.5, 1, 0.5])
    result = await RefineStrategy().solve(PROBLEM, roles)
    assert result.stop_reason == "self-score 1 at iteration 3"
    assert result.rounds == 3 and result.proof == "PROOF-2" and result.proof_id == "iteration-3"
    assert [c.role for c in backend.calls] == ["generate", "refine", "refine", "verify"]
    assert [s["step"] for s in result.transcript] == ["generate", "refine", "refine", "verify"]
    assert [s["round"] for s in result.transcript] == [1, 2, 3, 3]
    assert result.mean_score == 0.5 and len(result.verifications) == 1 and not result.budget_limited


async def test_stops_at_max_iterations_and_answers_best_self_score():
    backend, roles = scripted([0, 0.5, 0, 0.5, 0])
    result = await RefineStrategy(max_iters=5, verify_n=0).solve(PROBLEM, roles)
    assert result.stop_reason.startswith("max iterations (5) reached")
    assert backend.count("generate") == 1 and backend.count("refine") == 4 and backend.count("verify") == 0
    assert result.proof == "PROOF-3"  # the best self-score, the latest on ties
    assert result.verifications == [] and result.mean_score is None


def test_default_is_eight_iterations():
    assert RefineConfig().max_iters == 8


async def test_refine_prompt_shows_previous_proof_and_its_self_analysis():
    backend, roles = scripted([0, 0.5, 0.5])
    await RefineStrategy(max_iters=3, verify_n=0).solve(PROBLEM, roles)
    refines = [c.prompt for c in backend.calls if c.role == "refine"]
    assert len(refines) == 2
    for k, prompt in enumerate(refines):
        block = prompt[prompt.index("--- Solution 1 ---") :]
        assert re.search(rf"--- Solution 1 ---\s+PROOF-{k}\s+=== Evaluation 1 of Solution 1 ===\s+ANALYSIS-{k}", block)
        assert SCORE_MARKER in block and "--- Solution 2 ---" not in block
        assert f"PROOF-{k + 1}" not in prompt  # only the previous proof, never a later one
    # the score statement of each evaluation is shown neutralised (parsing.neutralize_markers)
    assert "[boxed: 0]" in refines[0] and "[boxed: 0.5]" in refines[1]


async def test_format_failures_never_stop_the_loop_and_are_not_answers():
    # generation 0 claims 1 but was cut off; generation 1 is fine with 0.5; generation 2 cut off again
    backend, roles = scripted([(1, "length"), 0.5, (1, "length")])
    result = await RefineStrategy(max_iters=3, verify_n=0).solve(PROBLEM, roles)
    assert result.rounds == 3 and result.stop_reason.startswith("max iterations")
    assert result.proof == "PROOF-1"
    first_refine = next(c.prompt for c in backend.calls if c.role == "refine")
    assert "PROOF-0" in first_refine  # the cut-off text is still what gets refined
    assert [s["format_ok"] for s in result.transcript] == [False, True, False]
    assert "raw" in result.transcript[0] and "raw" not in result.transcript[1]


async def test_keep_invalid_lets_a_format_failure_stop_and_answer():
    _, roles = scripted([(1, "length")])
    result = await RefineStrategy(max_iters=3, verify_n=0, keep_invalid=True).solve(PROBLEM, roles)
    assert result.stop_reason == "self-score 1 at iteration 1" and result.proof == "PROOF-0"


async def test_budget_returns_best_so_far_marked_limited():
    backend, roles = scripted([0, 0.5, 0, 0, 0])
    with budget_scope(Budget(max_calls=3, name="problem")):
        result = await RefineStrategy(max_iters=8).solve(PROBLEM, roles)
    assert result.budget_limited and result.stop_reason.startswith("budget: problem budget of 3 calls is spent")
    assert len(backend.calls) == 3 and result.proof == "PROOF-1" and result.verifications == []


async def test_budget_spent_during_evidence_keeps_the_answer():
    _, roles = scripted([1])
    with budget_scope(Budget(max_calls=1)):
        result = await RefineStrategy().solve(PROBLEM, roles)
    assert result.budget_limited and result.proof == "PROOF-0" and result.verifications == []


async def test_single_chooses_best_self_score_and_verifies():
    _, roles = scripted([0, 1, 0.5], verify_score=1)
    result = await SingleStrategy(samples=3, verify_n=2).solve(PROBLEM, roles)
    assert result.proof == "PROOF-1" and result.rounds == 1
    assert [v.score for v in result.verifications] == [1, 1] and result.mean_score == 1
    assert [s["step"] for s in result.transcript] == ["generate"] * 3 + ["verify"]


async def test_single_without_a_valid_generation_answers_nothing():
    backend, roles = scripted([(1, "length")])
    result = await SingleStrategy().solve(PROBLEM, roles)
    assert result.proof is None and result.stop_reason.startswith("no valid generation")
    assert backend.count("verify") == 0


@pytest.mark.parametrize("params", [{"max_iters": 0}, {"rounds": 3}])
def test_bad_parameters_are_rejected(params):
    with pytest.raises(ValueError):
        RefineStrategy(**params)


async def test_step_check_shows_the_first_wrong_step_to_the_generator():
    """refine --set step_check=true: the step verifier checks the proof about to be refined and
    the refinement prompt shows its first incorrect step, with the reason."""
    from scripted import step_verification_text

    proofs = ["Step 1. Factor.\n\nStep 2. Every square is divisible by 3.\n\nStep 3. Done.", "Step 1. Fixed."]

    def script(call):
        if call.role == "verify_steps":
            return step_verification_text(["correct", "incorrect", "correct"])
        k = sum(1 for c in backend.calls if c.role in ("generate", "refine")) - 1
        return generation_text(proofs[min(k, 1)], 0 if k == 0 else 1, analysis=f"ANALYSIS-{k}")

    backend = ScriptedBackend(script)
    roles = Roles.from_models(Model(backend))
    result = await RefineStrategy(max_iters=3, verify_n=0, step_check=True).solve(PROBLEM, roles)
    assert result.stop_reason == "self-score 1 at iteration 2" and result.proof == "Step 1. Fixed."
    assert [c.role for c in backend.calls] == ["generate", "verify_steps", "refine"]
    prompt = next(c.prompt for c in backend.calls if c.role == "refine")
    assert "ANALYSIS-0" in prompt
    assert "found its first wrong step, step 2:\n\nStep 2. Every square is divisible by 3." in prompt
    assert "Why it is wrong: reason 2" in prompt
    [check] = [s for s in result.transcript if s["step"] == "step_check"]
    assert (check["first_error"], check["score"], check["steps"]) == (1, 0.0, 3)
    assert RefineStrategy(max_iters=3, step_check=True).plan().calls["step verification"] == 2
    # without it: no step verification, nothing about steps in the prompt
    backend.calls.clear()
    plain = await RefineStrategy(max_iters=3, verify_n=0).solve(PROBLEM, Roles.from_models(Model(backend)))
    assert plain.proof == "Step 1. Fixed." and backend.count("verify_steps") == 0
    assert "first wrong step" not in next(c.prompt for c in backend.calls if c.role == "refine")
