"""Adaptive verification (issue #17) on the scripted model.

The scripted verifier answers sample i of a proof's request with the score the test chose for
position i, and the meta-verifier answers sample j of an analysis' request with the meta score
chosen for (analysis i, vote j). The roles carry a seed, and the model draws sample i of a request
with seed + i, so the backend knows which sample it is asked for even when the samples come in
batches (``first``): the stopping points below follow from the scripts.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

import pytest
from scripted import ScriptedBackend, generation_text, meta_text, verification_text

from proofcritic.budget import Budget, budget_scope
from proofcritic.llm import CompletionCache, GenerateConfig, Model
from proofcritic.meta_verifier import MetaVerifier
from proofcritic.pipelines import Roles
from proofcritic.pipelines.adaptive import Race, checkpoints, mean_bounds, verify_until_fail, vote_settled
from proofcritic.pipelines.label import LabelConfig, label_proof
from proofcritic.pipelines.search import SearchStrategy
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

PROBLEM = Problem(id="p", statement="Prove that $n^3 - n$ is divisible by 6.")
PROOF = "It is a product of three consecutive integers."
SEED = 1000
_TAG = re.compile(r"Analysis A(\d+)\.")


def roles(scores, metas=None, cache=None):
    """Verifier and meta-verifier on one scripted model (seeded: sample i is asked with seed+i)."""
    metas = metas or {}

    def script(call):
        index = call.request.config.seed - SEED + call.index
        if call.role == "verify":
            score = scores[index]
            if score is None:
                return "I ran out of room before the", "length"
            issues = [] if score == 1 else [("step 2", "Critical Error", "the claim is false")]
            return verification_text(score, issues, analysis=f"Analysis A{index}.")
        if call.role == "meta_verify":
            analysis = int(_TAG.search(call.prompt).group(1))
            meta = metas[analysis][index]
            return meta_text(meta) if meta is not None else "I cannot decide."
        raise AssertionError(call.role)

    backend = ScriptedBackend(script)
    model = Model(backend, cache=cache)
    config = GenerateConfig(seed=SEED)
    return Verifier(model, score_mode="text", config=config), MetaVerifier(model, config=config), backend


def samples(backend, role):
    return sum(1 for c in backend.calls if c.role == role)


def test_checkpoints_double_up_to_n():
    assert checkpoints(64, 4) == [4, 8, 16, 32, 64]
    assert checkpoints(16, 4) == [4, 8, 16]
    assert checkpoints(8, 5) == [5, 8]
    assert checkpoints(3, 4) == [3]


def test_batches_are_the_samples_of_the_fixed_request(tmp_path):
    """Sample i drawn in a batch is sample i of one request for all n: the same cache slot, and
    with a seed the seed of sample i; a fixed run after an adaptive one draws only the rest."""
    scores = [1, 1, 1, 1, 1, 0.5, 1, 1] + [1] * 8
    cache = CompletionCache(tmp_path / "cache.sqlite")
    verifier, _, backend = roles(scores, cache=cache)
    draws = asyncio.run(verify_until_fail(verifier, PROBLEM, PROOF, n=16, batch=4))
    assert draws.drawn == 8 and draws.requests == 2  # checkpoints 4 and 8; sample 6 scored 0.5
    assert draws.stopped.startswith("fails: verification 6 has score 0.5; stopped after 8 of 16")
    assert [c.request.config.seed for c in backend.calls] == [SEED] * 4 + [SEED + 4] * 4
    fixed = asyncio.run(verifier.verify(PROBLEM, PROOF, n=16))
    assert [v.raw for v in fixed[:8]] == [v.raw for v in draws.verifications]
    assert len(backend.calls) == 16  # the fixed run asked only for samples 8..15 ...
    assert {c.request.config.seed for c in backend.calls[8:]} == {SEED + 8}  # ... with their own seeds
    assert [v.score for v in fixed] == scores


def test_passes_all_n_draws_everything_and_fails_at_the_first_batch_with_a_failure():
    verifier, _, backend = roles([1] * 16)
    draws = asyncio.run(verify_until_fail(verifier, PROBLEM, PROOF, n=16, batch=4))
    assert draws.drawn == 16 and draws.requests == 3 and draws.stopped == "passes: all 16 verifications scored 1"
    verifier, _, backend = roles([1, 1, None, 1] + [1] * 12)  # an unscored verification is no pass
    draws = asyncio.run(verify_until_fail(verifier, PROBLEM, PROOF, n=16, batch=4))
    assert draws.drawn == 4 and samples(backend, "verify") == 4 and "verification 3 has no score" in draws.stopped


def test_vote_settled_counts_strict_majorities_of_m():
    assert vote_settled(5, 0, 5, 8)["is_for"]
    assert not vote_settled(4, 0, 5, 8)["is_for"] and vote_settled(4, 0, 5, 8)["can_be_for"]
    assert not vote_settled(1, 3, 5, 8)["can_be_for"]  # 1 + 3 left = 4: no strict majority of 8
    assert vote_settled(1, 3, 5, 8)["can_be_against"]


# --------------------------------------------------------------------------- labeling


def test_label_stops_once_k_lowest_possible_analyses_are_confirmed():
    """Scores 0.5, 0, 1, 0 in the first batch: the two zeros are meta-verified (5 votes each,
    all confirming: valid), k=2, and no score is lower than 0: label 0 after 4 of 16."""
    scores = [0.5, 0, 1, 0] + [0.5] * 12
    metas = {i: [1] * 8 for i in range(16)}
    verifier, meta_verifier, backend = roles(scores, metas)
    config = LabelConfig(n=16, m=8, k=2, adaptive=True)
    result = asyncio.run(label_proof(verifier, meta_verifier, PROBLEM, PROOF, config))
    assert (result.status, result.label, result.rule) == ("labeled", 0.0, "confirmed_lowest")
    assert samples(backend, "verify") == 4 and samples(backend, "meta_verify") == 10
    s = result.sampling
    assert (s.planned, s.drawn, s.requests, s.meta_drawn, s.meta_requests) == (16, 4, 1, 10, 2)
    assert s.meta_planned == 24  # the fixed rule: 8 votes for each of the 3 issue-reporting analyses drawn
    assert "confirmed after 4 of 16 verifications" in s.stopped and "adaptive: 4 of 16" in result.reason
    [half] = [a for a in result.analyses if a.score == 0.5]
    assert half.verdict == "unsettled" and half.meta_scores == []  # the label did not need it
    fixed_v, fixed_m, fixed_backend = roles(scores, metas)
    fixed = asyncio.run(label_proof(fixed_v, fixed_m, PROBLEM, PROOF, LabelConfig(n=16, m=8, k=2)))
    assert (fixed.status, fixed.label, fixed.rule) == ("labeled", 0.0, "confirmed_lowest")
    assert samples(fixed_backend, "verify") + samples(fixed_backend, "meta_verify") == 16 + 15 * 8
    assert fixed.sampling is None and "adaptive" not in fixed.model_dump(mode="json")["config"]


def test_label_of_a_correct_proof_draws_all_n_and_no_meta():
    verifier, meta_verifier, backend = roles([1] * 16)
    result = asyncio.run(label_proof(verifier, meta_verifier, PROBLEM, PROOF, LabelConfig(n=16, adaptive=True)))
    assert (result.status, result.label, result.rule) == ("labeled", 1.0, "all_correct")
    assert samples(backend, "verify") == 16 and samples(backend, "meta_verify") == 0
    assert result.sampling.requests == 3 and "every analysis scored 1" in result.sampling.stopped


def test_label_refuted_claims_stop_at_their_majority():
    """Two 0.5 analyses, each refuted by its first 5 votes: all_refuted with 10 votes, not 16."""
    scores = [1, 0.5, 1, 1, 0.5, 1, 1, 1]
    metas = {1: [0] * 8, 4: [0] * 8}
    verifier, meta_verifier, backend = roles(scores, metas)
    config = LabelConfig(n=8, m=8, k=1, adaptive=True)
    result = asyncio.run(label_proof(verifier, meta_verifier, PROBLEM, PROOF, config))
    assert (result.status, result.label, result.rule) == ("labeled", 1.0, "all_refuted")
    assert samples(backend, "meta_verify") == 10 and result.sampling.meta_requests == 2
    assert [a.verdict for a in result.analyses if a.reports_issues] == ["refuted", "refuted"]


def test_label_review_stops_at_the_first_claim_that_cannot_be_refuted():
    """Lowest score 0 once, k=2: rule 3 cannot fire; the 0 analysis is confirmed by its votes,
    so it cannot be refuted: review without meta-verifying the 0.5 ones."""
    scores = [0.5, 1, 0, 1, 0.5, 1, 1, 1]
    metas = {0: [0] * 8, 2: [1] * 8, 4: [0] * 8}
    verifier, meta_verifier, backend = roles(scores, metas)
    result = asyncio.run(label_proof(verifier, meta_verifier, PROBLEM, PROOF, LabelConfig(n=8, k=2, adaptive=True)))
    assert (result.status, result.rule) == ("review", "not_enough_confirmed")
    # phase A: the lone 0 cannot make k=2 (no votes needed); phase B: one round of 5 votes for each
    # claim shows the 0 analysis cannot be refuted
    assert samples(backend, "meta_verify") == 15
    assert "unsettled" not in {a.verdict for a in result.analyses} or "unsettled (not needed)" in result.reason


@pytest.mark.parametrize("seed", range(4))
def test_adaptive_labels_equal_fixed_labels_on_the_same_draws(seed):
    """Random scripts (scores with format failures, meta votes with 0.5s and failures): the
    adaptive label (status, label, rule) is the fixed one, and it never draws more samples."""
    rng = random.Random(seed)
    for _ in range(60):
        n, m = rng.choice([4, 8, 16]), rng.choice([1, 2, 3, 5, 8])
        k = rng.randint(1, min(3, n))
        p1, p0 = rng.random(), rng.random()
        scores = [rng.choices([1, 0.5, 0, None], [p1, 1 - p1, p0, 0.1])[0] for _ in range(n)]
        q = rng.random()
        metas = {i: [rng.choices([1, 0.5, 0, None], [q, 0.2, 1 - q, 0.1])[0] for _ in range(m)] for i in range(n)}
        batch = rng.choice([1, 2, 4])
        fixed_v, fixed_m, fixed_backend = roles(scores, metas)
        fixed = asyncio.run(label_proof(fixed_v, fixed_m, PROBLEM, PROOF, LabelConfig(n=n, m=m, k=k)))
        v, mv, backend = roles(scores, metas)
        config = LabelConfig(n=n, m=m, k=k, adaptive=True, batch=batch)
        adaptive = asyncio.run(label_proof(v, mv, PROBLEM, PROOF, config))
        assert (adaptive.status, adaptive.label, adaptive.rule) == (fixed.status, fixed.label, fixed.rule), (
            scores,
            metas,
            k,
            batch,
        )
        assert len(backend.calls) <= len(fixed_backend.calls)
        assert adaptive.sampling.drawn == samples(backend, "verify")


# --------------------------------------------------------------------------- mean bounds and racing


def test_mean_bounds_are_exact_at_n_and_hold_the_fixed_mean():
    assert mean_bounds([1, 0.5, None, 0], 4, 0.01) == (0.5, 0.5)
    assert mean_bounds([None, None], 4, 0.01) is None
    lo, hi = mean_bounds([1.0] * 16, 64, 0.01)
    assert hi == 1.0 and 0.5 < lo < 1.0
    rng = random.Random(7)
    misses = 0
    for _ in range(2000):  # the interval after 8 of 32 draws holds the mean of all 32
        mu = rng.random()
        draws = [float(rng.random() < mu) for _ in range(32)]
        lo, hi = mean_bounds(draws[:8], 32, 0.05)
        misses += not lo <= sum(draws) / 32 <= hi
    assert misses <= 0.05 * 2000


def test_race_settles_a_separated_pool_early():
    """Three proofs scoring 1 every time, three scoring 0: with 6 proofs, n=64, confidence 0.99
    the intervals after 16 draws separate them (0.554 vs 0.446), not after 8."""
    race = Race(n=64, k=3, confidence=0.99, items=6, batch=4)
    pool = lambda t: [(i, [1.0 if i < 3 else 0.0] * t, (0, -i)) for i in range(6)]  # noqa: E731
    assert race.decide(pool(8))[2] == list(range(6))
    inside, outside, open_ = race.decide(pool(16))
    assert (inside, outside, open_) == ([0, 1, 2], [3, 4, 5], [])


def test_race_breaks_exact_ties_by_the_tiebreak_only_when_drawn_out():
    race = Race(n=8, k=1, confidence=0.99, items=2, batch=4)
    full, part = [1.0] * 8, [1.0] * 4
    # proof 1 ranks above proof 0 on ties; proof 1 is fully drawn at mean 1: it is surely first
    assert race.decide([(0, part, (0, 0)), (1, full, (1, 0))]) == ([1], [0], [])
    # proof 0 ranks above on ties but may still fall below 1: open
    assert race.decide([(0, part, (1, 0)), (1, full, (0, 0))]) == ([], [], [0, 1])


# --------------------------------------------------------------------------- search


def search_roles(verify, cache=None):
    """Initial proofs G<i>; a refinement of P is P.<round>.<i>. Verification i of proof P scores
    ``verify(P, i)`` (i from the seed: sample i is asked with seed + i)."""
    proof_name = re.compile(r"PROOF\[([^\]]+)\]")

    def script(call):
        if call.role == "verify":
            name = proof_name.search(call.prompt).group(1)
            index = call.request.config.seed - SEED + call.index
            score = verify(name, index)
            issues = [] if score == 1 else [("step 1", "Critical Error", "a gap")]
            return verification_text(score, issues, analysis=f"A[{name}][{index}]")
        if call.role == "generate":
            return generation_text(f"PROOF[G{call.index}]", 0.5)
        parent = re.search(r"--- Solution 1 ---\s+PROOF\[([^\]]+)\]", call.prompt).group(1)
        return generation_text(f"PROOF[{parent}.{call.request.config.seed % 97}.{call.index}]", 0.5)

    backend = ScriptedBackend(script)
    return backend, Roles.from_models(Model(backend, cache=cache), config=GenerateConfig(seed=SEED))


def search(verify, **config):
    backend, the_roles = search_roles(verify)
    result = asyncio.run(SearchStrategy(**config).solve(PROBLEM, the_roles))
    return result, backend


def test_search_draws_a_passing_proof_out_and_races_the_rest():
    """G0 scores 1 every time: drawn 2, 4, 8, 16 and passes; the others fail their first batch
    and, once G0 passed, cannot be the answer: 16 + 3 x 2 verifications instead of 64."""
    scores = {"G0": 1, "G1": 0, "G2": 0.5, "G3": 0}
    config = {"initial_samples": 4, "verifications": 16, "top_k": 2, "trials": 2, "samples_per_trial": 1, "rounds": 3}
    adaptive, backend = search(lambda name, i: scores[name], adaptive=True, batch=2, **config)
    fixed, fixed_backend = search(lambda name, i: scores[name], **config)
    assert adaptive.proof_id == fixed.proof_id and "G0" in adaptive.proof
    assert samples(backend, "verify") == 22 and samples(fixed_backend, "verify") == 64
    assert "passed all 16 verifications in round 1" in adaptive.stop_reason
    assert adaptive.stop_reason.endswith("adaptive: 22 of 64 verifications drawn")
    [step] = [s for s in adaptive.transcript if s["step"] == "adaptive"]
    assert (step["drawn"], step["planned"]) == (22, 64) and step["stopped"].startswith("settled")
    plan = SearchStrategy(adaptive=True, batch=2, **config).plan()
    assert plan.samples["verification"] == SearchStrategy(**config).plan().samples["verification"]
    assert plan.calls["verification"] == 4 * SearchStrategy(**config).plan().calls["verification"]  # 2, 4, 8, 16


def test_search_top_k_and_answer_equal_the_fixed_search():
    """No proof can pass (each scores 0.5 on its first verification). G0 and G1 score 1 after
    that, G2 and G3 score 0: the top 2 are G0 and G1 in both searches; G2 and G3 leave the race
    before all 16 are drawn; the answer is G0 in both (a tie with G1, broken by the slot)."""

    def verify(name, i):
        if name in ("G0", "G1"):
            return 0.5 if i == 0 else 1
        if name in ("G2", "G3"):
            return 0
        return 0.5 if i % 2 else 0  # refinements: a mean of 0.25

    config = {"initial_samples": 4, "verifications": 16, "top_k": 2, "trials": 2, "samples_per_trial": 1, "rounds": 2}
    adaptive, backend = search(verify, adaptive=True, batch=2, **config)
    fixed, fixed_backend = search(verify, **config)

    def selected(result):
        return {r["proof_id"] for s in result.transcript if s["step"] == "select" for r in s["refine"]}

    assert selected(adaptive) == selected(fixed)
    assert {p.split("-")[2] for p in selected(fixed)} == {"s000", "s001"}  # G0 and G1
    assert adaptive.proof_id == fixed.proof_id and "G0" in adaptive.proof
    assert samples(backend, "verify") < samples(fixed_backend, "verify") == 6 * 16


# --------------------------------------------------------------------------- the command line


def test_label_cli_adaptive_through_a_server(tmp_path):
    """``label --adaptive`` against an OpenAI-compatible server (``--seed 0``: sample i is asked
    with seed i): proof A's first batch holds two zeros whose first 5 votes confirm them (label 0
    after 4 verifications and 10 votes); proof B scores 1 every time (all 16, in 3 requests). The
    labels are the fixed run's; the server saw 4 + 16 verifications instead of 32."""
    from servers.tiny_openai_server import TinyOpenAIServer
    from typer.testing import CliRunner

    from proofcritic.cli import app

    scores = {"A": [0.5, 0, 1, 0] + [0.5] * 12, "B": [1] * 16}

    def script(call):
        name = re.findall(r"PROOF\[(\w)\]", call.prompt)[-1]
        index = (call.request.config.seed or 0) + call.index
        if call.role == "verify":
            score = scores[name][index]
            issues = [] if score == 1 else [("step 2", "Critical Error", "the claim is false")]
            return verification_text(score, issues, analysis=f"Analysis A{index}.")
        return meta_text(1)

    rows = [{"id": name, "problem": PROBLEM.statement, "proof": f"PROOF[{name}] {PROOF}"} for name in scores]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    backend = ScriptedBackend(script)
    labels = {}
    with TinyOpenAIServer(backend, "roles") as server:
        for mode in ("fixed", "adaptive"):
            server.requests.clear()
            out = tmp_path / f"{mode}.jsonl"
            args = ["label", "--input", str(source), "--output", str(out), "--review", str(tmp_path / f"{mode}.r")]
            args += ["--model", "openai/roles", "--base-url", server.url, "--api-key", "x", "--seed", "0"]
            args += ["--cache", str(tmp_path / f"{mode}.sqlite"), "--n", "16", "--m", "8", "--k", "2"]
            result = CliRunner().invoke(app, args + (["--adaptive"] if mode == "adaptive" else []))
            assert result.exit_code == 0, result.output
            records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
            labels[mode] = {k: (r["status"], r["label"], r["rule"]) for k, r in records.items()}
            verify = [r for r in server.requests if "You are an expert grader" in r["messages"][-1]["content"]]
            sent = sum(r.get("n") or 1 for r in verify)
            if mode == "adaptive":
                assert sent == 4 + 16 and len(verify) == 1 + 3
                assert records["A"]["sampling"]["drawn"] == 4 and records["A"]["sampling"]["meta_drawn"] == 10
                assert records["B"]["sampling"]["stopped"].startswith("all 16 verifications drawn")
                settings = json.loads((tmp_path / "adaptive.jsonl.settings.json").read_text())
                assert "adaptive" in json.dumps(settings)
            else:
                assert sent == 32 and records["A"].get("sampling") is None
    assert (
        labels["adaptive"]
        == labels["fixed"]
        == {
            "A": ("labeled", 0.0, "confirmed_lowest"),
            "B": ("labeled", 1.0, "all_correct"),
        }
    )


def test_solve_search_adaptive_plan(tmp_path):
    """``solve --strategy search --adaptive --dry-run``: the plan counts a request per checkpoint
    (4, 8, 16, 32, 64: five per proof), the same verifications as the fixed search at most."""
    from typer.testing import CliRunner

    from proofcritic.cli import app

    problem = tmp_path / "p.md"
    problem.write_text(PROBLEM.statement)
    base = ["solve", "--problem", str(problem), "--strategy", "search", "--rounds", "1", "--dry-run"]
    fixed = CliRunner().invoke(app, base)
    adaptive = CliRunner().invoke(app, [*base, "--adaptive", "--confidence", "0.95"])
    assert fixed.exit_code == 0 and adaptive.exit_code == 0, adaptive.output
    assert "128 verification (8,192 verifications)" in fixed.output
    assert "640 verification (8,192 verifications)" in adaptive.output
    bad = CliRunner().invoke(app, [*base, "--adaptive", "--confidence", "1.5"])
    assert bad.exit_code == 2 and "--confidence" in bad.output


def test_search_adaptive_resumes_with_the_same_decisions(tmp_path):
    """A search stopped by its budget part-way, then run again on the same cache and state,
    ends as an uninterrupted one: the same selections, answer and draws (replayed, not asked)."""

    def verify(name, i):
        if name in ("G0", "G1"):
            return 0.5 if i == 0 else 1
        return 0 if name in ("G2", "G3") else (0.5 if i % 2 else 0)

    config = {"initial_samples": 4, "verifications": 16, "top_k": 2, "trials": 2, "samples_per_trial": 1}
    strategy = SearchStrategy(adaptive=True, batch=2, rounds=2, **config)

    def run(name, budget=None):
        backend, the_roles = search_roles(verify, CompletionCache(tmp_path / f"{name}.sqlite"))
        state = tmp_path / f"{name}.state"
        if budget is None:
            return asyncio.run(strategy.solve(PROBLEM, the_roles, state_dir=state)), backend

        async def limited():
            with budget_scope(Budget(max_calls=budget)):
                return await strategy.solve(PROBLEM, the_roles, state_dir=state)

        return asyncio.run(limited()), backend

    whole, _ = run("whole")
    cut, _ = run("resumed", budget=6)
    assert cut.budget_limited
    resumed, backend = run("resumed")

    def decisions(result):
        selects = [s["refine"] for s in result.transcript if s["step"] == "select"]
        return result.proof_id, [[r["proof_id"] for r in s] for s in selects], result.stop_reason

    assert decisions(resumed) == decisions(whole)
    again, backend = run("resumed")
    assert decisions(again) == decisions(whole) and samples(backend, "verify") == 0


def test_settle_mean_stops_once_one_bucket_holds_the_interval():
    """Cut 1.0 (mean 1 or not) is exact: the 0.5 in the first batch settles it after 4 of 16.
    Cut 0.5 on scores that are all 0, n=64, confidence 0.99 over 4 looks: the interval after 8
    draws reaches 0.605, after 16 only 0.396: stopped after 16."""
    from proofcritic.pipelines.adaptive import settle_mean

    verifier, _, backend = roles([1, 1, 1, 0.5] + [1] * 12)
    draws = asyncio.run(settle_mean(verifier, PROBLEM, PROOF, 16, [1.0]))
    assert draws.drawn == 4 and "stopped after 4 of 16" in draws.stopped
    verifier, _, backend = roles([0] * 64)
    draws = asyncio.run(settle_mean(verifier, PROBLEM, PROOF, 64, [0.5]))
    assert draws.drawn == 16 and samples(backend, "verify") == 16 and draws.requests == 3
    verifier, _, _ = roles([1] * 16)
    assert asyncio.run(settle_mean(verifier, PROBLEM, PROOF, 16, [1.0])).drawn == 16


@pytest.mark.slow
def test_perf_adaptive_quick_run():
    """perf/adaptive.py --quick: one run prints the call shares and the decision agreement; the
    exact rules agree on every decision, and the real commands decide as their fixed runs do."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "perf" / "adaptive.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick"], check=False, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for model in ("bernoulli", "three-point"):
        assert report[model]["passes all 64"]["identical"] == 1.0
        assert report[model]["label (n=16, m=8, k=2)"]["identical"] == 1.0
        assert report[model]["passes all 64"]["by_group"]["mean below 1"] < 1 / 3
    for figures in report["cli"].values():
        assert figures["identical"] == 1.0 and figures["sample_share"] < 1
    assert "verifier calls" in done.stdout and "identical decisions" in done.stdout


def test_label_adaptive_within_a_spent_budget_goes_to_review():
    """One model call allowed: the first batch of verifications is drawn, the meta-verification
    that would confirm its zeros is refused: review with budget_exhausted, nothing decided wrongly."""
    verifier, meta_verifier, backend = roles([0] * 16, {i: [1] * 8 for i in range(16)})

    async def limited():
        with budget_scope(Budget(max_calls=1)):
            return await label_proof(verifier, meta_verifier, PROBLEM, PROOF, LabelConfig(n=16, adaptive=True))

    result = asyncio.run(limited())
    assert (result.status, result.rule, result.budget_limited) == ("review", "budget_exhausted", True)
    assert samples(backend, "verify") == 4 and samples(backend, "meta_verify") == 0
    assert result.sampling.stopped.startswith("budget:")
