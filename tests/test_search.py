"""The ``search`` strategy (SPEC 5, high-compute search) on the scripted model: selection,
pairing, the refinement prompt, stopping, the answer, the persistent pool and resume."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

import pytest
from scripted import ScriptedBackend, generation_text, verification_text

from proofcritic.budget import Budget, budget_scope
from proofcritic.llm import Model
from proofcritic.pipelines import Roles
from proofcritic.pipelines.search import SearchConfig, SearchStrategy, choose_analyses
from proofcritic.types import Problem, Verification

PROBLEM = Problem(id="p1", statement="Prove that there are infinitely many primes.")
PROOF = re.compile(r"PROOF\[([^\]]+)\]")
ANALYSIS = re.compile(r"A\[([^\]]+)\]\[(\d+)\]")

Score = float | tuple[float, str]


def search_model(
    verify: Callable[[str, int], Score],
    self_score: Callable[[str], float] = lambda name: 0.5,
    text: Callable[[str], str] = lambda name: f"PROOF[{name}]",
    finish: Callable[[str], str] = lambda name: "stop",
):
    """Initial proofs are named G<i>; a refinement of P is P.<hash of prompt and seed>.<i>. Verification i
    of proof P scores ``verify(P, i)`` with the analysis ``A[P][i]``."""

    def script(call):
        if call.role == "verify":
            name = PROOF.search(call.prompt).group(1)
            score = verify(name, call.index)
            score, end = score if isinstance(score, tuple) else (score, "stop")
            return verification_text(score, analysis=f"A[{name}][{call.index}]"), end
        if call.role == "generate":
            name = f"G{call.index}"
        else:
            parent = re.search(r"--- Solution 1 ---\s+PROOF\[([^\]]+)\]", call.prompt).group(1)
            seed = call.request.config.seed  # a real sampler answers a new seed with new text
            name = f"{parent}.{hashlib.sha256(f'{call.prompt}/{seed}'.encode()).hexdigest()[:4]}.{call.index}"
        return generation_text(text(name), self_score(name)), finish(name)

    backend = ScriptedBackend(script)
    return backend, Roles.from_models(Model(backend))


def hashed(name: str, index: int) -> float:
    """A deterministic mix of 0 and 0.5 (never a pass)."""
    return (0.0, 0.5)[hashlib.sha256(f"{name}/{index}".encode()).digest()[0] % 2]


def v(score: float | None, analysis: str = "x") -> Verification:
    return Verification(score=score, analysis=analysis)


def test_released_defaults():
    c = SearchConfig()
    assert (c.initial_samples, c.verifications, c.top_k, c.trials, c.samples_per_trial) == (128, 64, 32, 32, 4)
    assert (c.analyses_per_proof, c.max_per_score, c.rounds, c.keep_invalid) == (8, 4, 16, False)


def test_choose_analyses_lowest_first_at_most_four_per_score():
    scores = [1, 0, 0.5, 0, 0, 1, 0, 0, 0.5, 1, 1, 0.5]
    vs = [v(s) for s in scores]
    assert choose_analyses(vs) == [1, 3, 4, 6, 2, 8, 11, 0]
    assert choose_analyses(vs, limit=5) == [1, 3, 4, 6, 2]
    assert choose_analyses(vs, per_score=2) == [1, 3, 2, 8, 0, 5]
    # unscored (format failures) and blank analyses are never shown
    assert choose_analyses([v(None), v(0, " "), v(1), v(0.5)]) == [3, 2]
    # a later refinement of the same proof shows the next analyses of each score
    assert choose_analyses(vs, rotation=1) == [7, 1, 3, 4, 8, 11, 2, 0]


G_SCORES = {
    "G0": [0] * 12,
    "G1": [1, 0, 0.5, 0, 0, 1, 0, 0, 0.5, 1, 1, 0.5],
    "G2": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0, 1],
    "G3": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0.5],
}
G_SELF = {"G0": 1, "G1": 0.5, "G2": 0.5, "G3": 1}


async def test_selection_pairing_and_refinement_prompt_layout():
    backend, roles = search_model(
        lambda name, i: G_SCORES[name][i] if name in G_SCORES else 0, lambda name: G_SELF.get(name, 0)
    )
    strategy = SearchStrategy(initial_samples=4, verifications=12, top_k=3, trials=3, samples_per_trial=1, rounds=2)
    result = await strategy.solve(PROBLEM, roles)
    refines = [c.prompt for c in backend.calls if c.role == "refine"]
    # top 3 by mean (G2 and G3 tie at 0.875: G3's self-score 1 wins), G0 (mean 0) is left out
    parents = [re.search(r"--- Solution 1 ---\s+PROOF\[([^\]]+)\]", p).group(1) for p in refines]
    assert sorted(parents) == ["G1", "G2", "G3"]
    expected = {"G3": [10, 11, 0, 1, 2, 3], "G2": [10, 9, 0, 1, 2, 3], "G1": [1, 3, 4, 6, 2, 8, 11, 0]}
    for parent, prompt in zip(parents, refines):
        block = prompt[prompt.index("--- Solution 1 ---") :]
        assert "--- Solution 2 ---" not in block
        evaluations = re.findall(
            r"=== Evaluation (\d+) of Solution 1 ===\s+(.*?)(?=\n=== Evaluation|\n## Your task now)", block, re.DOTALL
        )
        assert [int(j) for j, _ in evaluations] == list(range(1, len(expected[parent]) + 1))
        shown = [ANALYSIS.findall(body) for _, body in evaluations]
        assert shown == [[(parent, str(i))] for i in expected[parent]]
        for (_, body), i in zip(evaluations, expected[parent]):
            assert body.rstrip().endswith(f"[boxed: {G_SCORES[parent][i]:g}]")  # neutralised in the prompt
    select = next(s for s in result.transcript if s["step"] == "select")
    assert [(s["trial"], s["analyses"]) for s in select["refine"]] == [
        (0, expected["G3"]),
        (1, expected["G2"]),
        (2, expected["G1"]),
    ]
    assert result.stop_reason == "max rounds (2) reached" and result.rounds == 2
    # the answer: best mean, then self-score -> G3
    assert result.proof == "PROOF[G3]" and result.mean_score == pytest.approx(10.5 / 12)
    assert len(result.verifications) == 12 and result.proof_id.startswith("r01-t000-s003-")


async def test_top_k_and_trials_bound_the_refinements():
    backend, roles = search_model(
        lambda name, i: G_SCORES[name][i] if name in G_SCORES else 0, lambda n: G_SELF.get(n, 0)
    )
    await SearchStrategy(initial_samples=4, verifications=12, top_k=2, trials=5, samples_per_trial=3, rounds=2).solve(
        PROBLEM, roles
    )
    refines = [c for c in backend.calls if c.role == "refine"]
    assert len(refines) == 2 * 3 and all(c.request.config.n == 3 for c in refines)
    assert {PROOF.search(c.prompt).group(1) for c in refines} == {"G3", "G2"}


async def test_answer_by_mean_then_self_score():
    scores = {"G0": [1, 0.5], "G1": [0.5, 1], "G2": [0, 1]}
    selfs = {"G0": 0, "G1": 1, "G2": 1}
    _, roles = search_model(lambda name, i: scores[name][i], lambda name: selfs[name])
    result = await SearchStrategy(initial_samples=3, verifications=2, rounds=1).solve(PROBLEM, roles)
    assert result.proof == "PROOF[G1]" and result.mean_score == 0.75


async def test_stops_when_a_proof_passes_all_its_verifications():
    scores = {"G0": [0.5, 1, 1], "G1": [1, 1, 1], "G2": [0, 0, 0]}
    backend, roles = search_model(lambda name, i: scores[name][i])
    result = await SearchStrategy(initial_samples=3, verifications=3, rounds=5).solve(PROBLEM, roles)
    assert backend.count("refine") == 0 and result.rounds == 1
    assert result.stop_reason.startswith(f"proof {result.proof_id} passed all 3 verifications in round 1")
    assert result.proof == "PROOF[G1]" and result.mean_score == 1


async def test_a_format_failure_among_verifications_is_not_a_pass():
    # G0's scored verifications all say 1, but one of the three was cut off: mean 1.0, no pass
    scores = {"G0": [1, 1, (1, "length")]}
    backend, roles = search_model(lambda name, i: scores.get(name, [0, 0, 0])[i])
    result = await SearchStrategy(initial_samples=1, verifications=3, samples_per_trial=1, rounds=2).solve(
        PROBLEM, roles
    )
    assert result.rounds == 2 and backend.count("refine") == 1
    assert result.proof == "PROOF[G0]" and result.mean_score == 1.0
    assert [x.score for x in result.verifications] == [1, 1, None]


async def test_duplicates_are_verified_once_and_never_ranked():
    backend, roles = search_model(
        lambda name, i: 0.5, text=lambda name: "PROOF[G0]" if name == "G2" else f"PROOF[{name}]"
    )
    result = await SearchStrategy(initial_samples=3, verifications=2, rounds=1).solve(PROBLEM, roles)
    assert backend.count("verify") == 2 * 2
    steps = [s for s in result.transcript if s["step"] == "generate"]
    assert [s["duplicate_of"] is not None for s in steps] == [False, False, True]
    assert steps[2]["duplicate_of"] == steps[0]["proof_id"]


async def test_format_failures_are_not_proofs_unless_kept():
    backend, roles = search_model(lambda name, i: 0.5, finish=lambda name: "length")
    result = await SearchStrategy(initial_samples=2, verifications=2, rounds=3).solve(PROBLEM, roles)
    assert backend.count("verify") == 0 and result.proof is None
    assert result.stop_reason == "no verified proof to refine after round 1; no valid proof"
    backend, roles = search_model(lambda name, i: 0.5, finish=lambda name: "length")
    kept = await SearchStrategy(initial_samples=2, verifications=2, rounds=2, keep_invalid=True).solve(PROBLEM, roles)
    assert backend.count("verify") > 0 and kept.proof is not None and kept.rounds == 2


async def test_budget_before_any_verification_answers_unverified_best_self_score():
    _, roles = search_model(lambda name, i: 1, lambda name: {"G0": 0, "G1": 1, "G2": 0.5}[name])
    with budget_scope(Budget(max_calls=1, name="problem")):
        result = await SearchStrategy(initial_samples=3, verifications=2).solve(PROBLEM, roles)
    assert result.budget_limited and result.proof == "PROOF[G1]" and result.verifications == []
    assert result.stop_reason == "budget: problem budget of 1 calls is spent (in round 1); the answer is unverified"


def _pool(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


RESUME = {"initial_samples": 3, "verifications": 2, "top_k": 2, "trials": 2, "samples_per_trial": 2, "rounds": 4}


def requests(backend: ScriptedBackend) -> list[tuple[str, str, int | None]]:
    """The requests a backend got (one per request, not per sample), with their seeds: a prompt
    repeated in a later round with its own seed is new work, not a repeat."""
    return [(c.role, c.prompt, c.request.config.seed) for c in backend.calls if c.index == 0]


async def test_pool_persists_and_a_stopped_run_resumes_without_repeating_work(tmp_path):
    reference_backend, roles = search_model(hashed)
    reference = await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=tmp_path / "ref")
    assert len(reference_backend.calls) > 0 and reference.rounds == 4
    total_requests = 4 + 3 * 6  # round 1: 1 generation + 3 verifications; then 2 refinements + 4 verifications
    assert sum(1 for c in reference_backend.calls if c.index == 0) == total_requests

    state = tmp_path / "run"
    first_backend, roles = search_model(hashed)
    with budget_scope(Budget(max_calls=9, name="problem")):
        stopped = await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=state)
    assert stopped.budget_limited and stopped.stop_reason.startswith(
        "budget: problem budget of 9 calls is spent (in round 2)"
    )
    assert stopped.proof is not None and stopped.rounds == 2
    pool_file = state / "pool.jsonl"
    records = _pool(pool_file)
    assert {r["kind"] for r in records} == {"proof", "verification"}
    assert max(r["round"] for r in records) == 2
    proof = next(r for r in records if r["kind"] == "proof" and r["round"] == 2)
    assert proof["parents"] and proof["proof"].startswith("PROOF[") and "self_score" in proof
    verification = next(r for r in records if r["kind"] == "verification")
    assert len(verification["scores"]) == 2 and all("A[" in x["analysis"] for x in verification["verifications"])

    with pool_file.open("ab") as handle:  # a kill in the middle of a write leaves a partial line
        handle.write(b'{"kind": "proof", "id": "r02-t0')
    rerun_backend, roles = search_model(hashed)
    resumed = await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=state)
    assert not resumed.budget_limited and resumed.rounds == 4
    assert len(requests(first_backend)) == 9
    assert len(requests(first_backend)) + len(requests(rerun_backend)) == total_requests
    assert not set(requests(first_backend)) & set(requests(rerun_backend))  # nothing asked twice
    records = _pool(pool_file)
    for kind in ("proof", "verification"):
        ids = [r["id"] for r in records if r["kind"] == kind]
        assert len(ids) == len(set(ids)), f"duplicate {kind} records"
    assert max(r["round"] for r in records) == 4
    assert resumed.transcript == reference.transcript
    assert (resumed.proof_id, resumed.mean_score, resumed.stop_reason) == (
        reference.proof_id,
        reference.mean_score,
        reference.stop_reason,
    )

    again_backend, roles = search_model(hashed)  # everything recorded: a third run asks nothing
    again = await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=state)
    assert again_backend.calls == [] and again.transcript == reference.transcript
    assert again.usage.calls == 0 and again.usage.cached_calls == total_requests


async def test_replayed_work_is_checked_and_charged_like_live_calls(tmp_path):
    backend, roles = search_model(hashed)
    await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=tmp_path / "full")
    backend, roles = search_model(hashed)
    with budget_scope(Budget(max_calls=9, name="problem")):
        fresh = await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=tmp_path / "fresh")
    backend, roles = search_model(hashed)
    with budget_scope(Budget(max_calls=9, name="problem")) as budget:
        replayed = await SearchStrategy(**RESUME).solve(PROBLEM, roles, state_dir=tmp_path / "full")
    # the full pool holds more, but a run under the same budget decides as a fresh one does
    assert backend.calls == [] and budget.calls == 9
    assert replayed.budget_limited and replayed.transcript == fresh.transcript
    assert (replayed.proof_id, replayed.stop_reason) == (fresh.proof_id, fresh.stop_reason)
