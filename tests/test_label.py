"""Scaled verification and auto-labeling (SPEC section 3) on the scripted model.

The scripted verifier answers sample i with the score the test chose for it and tags its
analysis "Analysis A<i>."; the scripted meta-verifier finds that tag in its prompt and answers
its sample j with the meta score the test chose for analysis i. ``None`` is a format failure.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from scripted import ScriptedBackend, meta_text, verification_text

from proofcritic.budget import Budget, budget_scope
from proofcritic.llm import Model
from proofcritic.meta_verifier import MetaVerifier
from proofcritic.pipelines.label import LabelConfig, decide, judge, label_jsonl, label_proof, majority
from proofcritic.pipelines.scaled import rank_by_score, scaled_verify
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

PROBLEM = Problem(id="p", statement="Prove that $n^3 - n$ is divisible by 6.")
PROOF = "It is a product of three consecutive integers."
_TAG = re.compile(r"Analysis A(\d+)\.")


def scripted(scores, metas=None, delay: float = 0.0):
    """Verifier and meta-verifier on one scripted model, and the backend that records calls."""
    metas = metas or {}

    def script(call):
        if call.role == "verify":
            score = scores[call.index]
            if score is None:
                return "I ran out of room before the", "length"
            issues = [] if score == 1 else [("step 2", "Critical Error", "the claim is false")]
            return verification_text(score, issues, analysis=f"Analysis A{call.index}.")
        if call.role == "meta_verify":
            index = int(_TAG.search(call.prompt).group(1))
            meta = metas[index][call.index]
            return meta_text(meta) if meta is not None else "I cannot decide."
        raise AssertionError(call.role)

    backend = ScriptedBackend(script, delay=delay)
    model = Model(backend)
    return Verifier(model, score_mode="text"), MetaVerifier(model), backend


def label(scores, metas=None, **config):
    verifier, meta_verifier, backend = scripted(scores, metas)
    cfg = LabelConfig(n=len(scores), **config)
    result = asyncio.run(label_proof(verifier, meta_verifier, PROBLEM, PROOF, cfg))
    return result, backend


# --------------------------------------------------------------------------- scaled verification


def test_scaled_verification_aggregates_and_selects_lowest():
    verifier, _, backend = scripted([1, 0.5, None, 0, 1, 0])
    result = asyncio.run(scaled_verify(verifier, PROBLEM, PROOF, n=6))
    assert len(backend.calls) == 6 and len({id(c.request) for c in backend.calls}) == 1  # one request, n=6
    assert result.n == 6 and result.aggregate.valid == 5
    assert result.mean == pytest.approx(2.5 / 5) and result.aggregate.min == 0 and result.majority == 0  # tie 1/0 -> 0
    assert result.lowest_score == 0 and result.lowest == [3, 5] and result.format_failures == [2]
    assert [v.score for v in result.lowest_verifications()] == [0, 0]
    assert result.scored() == [0, 1, 3, 4, 5]
    assert rank_by_score(result.verifications) == [3, 5, 1, 0, 4]
    assert rank_by_score(result.verifications, per_score=1) == [3, 1, 0]
    assert rank_by_score(result.verifications, limit=3) == [3, 5, 1]
    assert result.usage.calls == 1 and result.usage.completion_tokens > 0


def test_scaled_verification_without_any_score():
    verifier, _, _ = scripted([None, None])
    result = asyncio.run(scaled_verify(verifier, PROBLEM, PROOF, n=2))
    assert result.lowest_score is None and result.lowest == [] and result.aggregate.mean is None
    assert result.format_failures == [0, 1]


# --------------------------------------------------------------------------- the rules


def test_k_valid_lowest_labels_with_lowest_score():
    # analyses 1 and 3 scored 0 and are confirmed; analysis 2 scored 0.5 and is refuted
    metas = {1: [1, 1, 0], 2: [0, 0, 0], 3: [1, 1, 1]}
    result, backend = label([1, 0, 0.5, 0], metas, m=3, k=2)
    assert (result.status, result.label, result.rule) == ("labeled", 0.0, "confirmed_lowest")
    assert result.lowest_score == 0 and result.valid_lowest == 2
    by_index = {a.index: a for a in result.analyses}
    assert by_index[0].verdict == "no_issues" and by_index[0].meta_scores == []
    assert by_index[1].verdict == "valid" and by_index[1].meta_scores == [1, 1, 0]
    assert (by_index[1].confirmations, by_index[1].refutations) == (2, 1)
    assert by_index[2].verdict == "refuted"
    assert backend.count("verify") == 4 and backend.count("meta_verify") == 3 * 3


def test_lowest_half_score_is_a_label_too():
    result, _ = label([1, 0.5, 0.5], {1: [1], 2: [1]}, m=1, k=2)
    assert (result.status, result.label, result.rule) == ("labeled", 0.5, "confirmed_lowest")


def test_no_issue_claimed_labels_one_without_meta_calls():
    result, backend = label([1, 1, 1], m=4, k=1)
    assert (result.status, result.label, result.rule) == ("labeled", 1.0, "all_correct")
    assert backend.count("meta_verify") == 0
    assert all(a.verdict == "no_issues" and not a.reports_issues for a in result.analyses)


def test_every_claim_refuted_labels_one():
    metas = {1: [0, 0, 1], 2: [0, 0, 0.5]}
    result, backend = label([1, 0, 0.5], metas, m=3, k=1)
    assert (result.status, result.label, result.rule) == ("labeled", 1.0, "all_refuted")
    assert [a.verdict for a in result.analyses] == ["no_issues", "refuted", "refuted"]
    assert backend.count("meta_verify") == 2 * 3


def test_claims_confirmed_fewer_than_k_go_to_review():
    metas = {0: [1, 1], 1: [0, 0], 2: [0, 0.5]}
    result, _ = label([0, 0, 0], metas, m=2, k=2)
    assert (result.status, result.label, result.rule) == ("review", None, "not_enough_confirmed")
    assert result.valid_lowest == 1 and [a.verdict for a in result.analyses] == ["valid", "refuted", "undecided"]


def test_lowest_refuted_but_higher_valid_goes_to_review():
    # SPEC looks at the lowest score only: a valid 0.5 analysis does not label the proof 0.5
    result, _ = label([0, 0.5, 0.5], {0: [0], 1: [1], 2: [1]}, m=1, k=1)
    assert (result.status, result.rule) == ("review", "not_enough_confirmed")


def test_ties_among_lowest_count_together():
    metas = {0: [1], 1: [0], 2: [1], 3: [1]}
    result, _ = label([0, 0, 0, 0.5], metas, m=1, k=2)
    assert result.lowest_score == 0 and result.valid_lowest == 2 and result.label == 0
    result, _ = label([0, 0, 0, 0.5], metas, m=1, k=3)  # the valid 0.5 analysis does not count
    assert result.status == "review" and result.valid_lowest == 2


def test_format_failures_are_recorded_not_analyses():
    result, backend = label([None, 0, None, 1], {1: [1]}, m=1, k=1)
    assert (result.status, result.label) == ("labeled", 0.0)
    assert [a.index for a in result.analyses] == [1, 3]
    assert len(result.format_failures) == 2 and all(not v.format_ok for v in result.format_failures)
    assert backend.count("meta_verify") == 1  # format failures are never meta-verified
    result, backend = label([None, None], m=3, k=1)
    assert (result.status, result.rule) == ("review", "no_analyses") and backend.count("meta_verify") == 0


def test_exact_half_is_not_a_majority():
    # m = 2: one confirm and one refute is neither valid nor refuted
    result, _ = label([0], {0: [1, 0]}, m=2, k=1)
    assert result.analyses[0].verdict == "undecided" and result.status == "review"
    result, _ = label([0], {0: [1, 1]}, m=2, k=1)
    assert result.analyses[0].verdict == "valid" and result.label == 0
    result, _ = label([0], {0: [0, 0]}, m=2, k=1)
    assert result.analyses[0].verdict == "refuted" and result.label == 1
    # meta format failures count in m but vote for nothing
    result, _ = label([0, 0.5], {0: [1, None, 1], 1: [None, None, 0]}, m=3, k=1)
    assert [a.verdict for a in result.analyses] == ["valid", "undecided"]


def test_thresholds_are_parameters():
    cfg = LabelConfig(m=3, confirm_at=0.5, refute_at=0.0)
    assert judge([0.5, 0.5, 0], cfg)[0] == "valid"
    binary = LabelConfig(m=3, refute_at=0.5)  # every scored meta vote confirms or refutes
    assert judge([0.5, 0.5, 1], binary) == ("refuted", 1, 2)
    assert judge([0.5, 0.5, 1], LabelConfig(m=3)) == ("undecided", 1, 0)
    with pytest.raises(ValueError, match="refute_at"):
        LabelConfig(confirm_at=0.5, refute_at=0.5)
    assert majority([0, 1, 1, None]) == 1 and majority([0, 1]) == 0 and majority([None]) is None
    assert decide([], LabelConfig())[2] == "no_analyses"


def test_evidence_is_complete_and_json_ready():
    result, _ = label([0, 1, None], {0: [1, 1]}, m=2, k=1)
    data = json.loads(result.model_dump_json())
    assert data["config"] == {"n": 3, "m": 2, "k": 1, "confirm_at": 1.0, "refute_at": 0.0}
    assert data["problem"]["statement"] == PROBLEM.statement and data["proof"] == PROOF
    first = data["analyses"][0]
    assert first["verification"]["raw"].count("Analysis A0.") == 1 and first["verification"]["issues"]
    assert first["meta_scores"] == [1, 1] and len(first["meta_verifications"]) == 2
    assert first["meta_verifications"][0]["raw"]
    assert data["reason"] and data["aggregate"]["valid"] == 2
    assert data["usage"]["calls"] == 2  # one verify request, one meta request (m=2 samples)


def test_meta_verifications_of_different_analyses_run_concurrently():
    verifier, meta_verifier, _ = scripted([0, 0, 0, 0], {i: [1] for i in range(4)}, delay=0.2)
    loop_time = asyncio.run(_timed(label_proof(verifier, meta_verifier, PROBLEM, PROOF, LabelConfig(n=4, m=1, k=1))))
    assert loop_time < 0.2 + 4 * 0.2 * 0.6  # one verify, then the four meta requests together


async def _timed(coro) -> float:
    start = asyncio.get_running_loop().time()
    await coro
    return asyncio.get_running_loop().time() - start


def test_budget_spent_sends_to_review():
    verifier, meta_verifier, backend = scripted([0, 0.5], {0: [1], 1: [1]})

    async def run():
        with budget_scope(Budget(max_calls=1)):
            return await label_proof(verifier, meta_verifier, PROBLEM, PROOF, LabelConfig(n=2, m=1, k=2))

    result = asyncio.run(run())
    assert result.budget_limited and (result.status, result.rule) == ("review", "budget_exhausted")
    assert backend.count("meta_verify") == 0 and len(result.analyses) == 2


# --------------------------------------------------------------------------- batch


def _batch(tmp_path, lines):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    return source, tmp_path / "labels.jsonl", tmp_path / "review.jsonl"


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_writes_labels_and_review_and_resumes(tmp_path):
    # the scripted model labels "good" 1, sends "bad" to review (claims undecided)
    def script(call):
        if call.role == "verify":
            score = 1 if "PROOF-GOOD" in call.prompt else 0
            return verification_text(score, [] if score == 1 else [("x", "Critical Error", "no")])
        return meta_text(0.5)

    backend = ScriptedBackend(script)
    model = Model(backend)
    verifier, meta_verifier = Verifier(model, score_mode="text"), MetaVerifier(model)
    source, out, review = _batch(
        tmp_path,
        [
            json.dumps({"id": "a", "problem": "P?", "proof": "PROOF-GOOD"}),
            "{not json",
            json.dumps({"id": "b", "problem": "P?", "proof": "PROOF-WEAK"}),
        ],
    )
    cfg = LabelConfig(n=2, m=1, k=1)
    stats = asyncio.run(label_jsonl(verifier, meta_verifier, source, out, review, config=cfg))
    assert stats.extra == {"labeled": 1, "review": 1} and stats.errors == 1
    by_id = {r["id"]: r for r in _records(out)}
    assert by_id["a"]["status"] == "labeled" and by_id["a"]["label"] == 1
    assert by_id["b"]["status"] == "review" and by_id["line-2"]["error_kind"] == "input"
    assert [r["id"] for r in _records(review)] == ["b"]
    calls = len(backend.calls)

    stats = asyncio.run(label_jsonl(verifier, meta_verifier, source, out, review, config=cfg))
    assert len(backend.calls) == calls and stats.skipped == 3 and stats.extra == {"labeled": 1, "review": 1}
    assert len(_records(out)) == 3 and len(_records(review)) == 1


def test_batch_repairs_a_kill_between_the_two_writes(tmp_path):
    verifier, meta_verifier, backend = scripted([0], {0: [0.5]})
    source, out, review = _batch(tmp_path, [json.dumps({"id": "b", "problem": "P?", "proof": "weak"})])
    cfg = LabelConfig(n=1, m=1, k=1)
    asyncio.run(label_jsonl(verifier, meta_verifier, source, out, review, config=cfg))
    record = _records(out)[0]
    calls = len(backend.calls)

    out.write_text("")  # killed after the review write, before the output write
    asyncio.run(label_jsonl(verifier, meta_verifier, source, out, review, config=cfg))
    assert len(backend.calls) == calls and [r["id"] for r in _records(out)] == ["b"]
    assert len(_records(review)) == 1

    review.write_text("")  # an output record with status review that never reached the review file
    asyncio.run(label_jsonl(verifier, meta_verifier, source, out, review, config=cfg))
    assert len(backend.calls) == calls and _records(review)[0]["rule"] == record["rule"]
    assert len(_records(out)) == 1


def test_batch_item_budget(tmp_path):
    verifier, meta_verifier, backend = scripted([0, 0], {0: [1], 1: [1]})
    source, out, review = _batch(tmp_path, [json.dumps({"id": "b", "problem": "P?", "proof": "p"})])
    stats = asyncio.run(
        label_jsonl(verifier, meta_verifier, source, out, review, config=LabelConfig(n=2, m=1, k=2), max_calls=1)
    )
    record = _records(out)[0]
    assert stats.budget_limited == 1 and record["budget_limited"] and record["rule"] == "budget_exhausted"
    assert backend.count("verify") == 2 and backend.count("meta_verify") == 0  # one call: the verify request
    assert [r["id"] for r in _records(review)] == ["b"]


def test_label_parameters_are_defined_once():
    """The service's label request and co-training's label parameters are LabelConfig (issue 15):
    the same fields, bounds, descriptions and checks; co-training keeps its smaller defaults."""
    from proofcritic.server._service import LabelRequest
    from proofcritic.training.cotrain import LabelParams

    names = ("n", "m", "k", "confirm_at", "refute_at")
    for model in (LabelRequest, LabelParams):
        for name in names:
            mine, theirs = model.model_fields[name], LabelConfig.model_fields[name]
            assert (mine.description, mine.metadata) == (theirs.description, theirs.metadata), (model, name)
    assert LabelRequest(problem="P", proof="Q").label_config() == LabelConfig()
    assert LabelParams().label_config() == LabelConfig(n=4, m=2, k=1)
    with pytest.raises(ValueError, match=r"k \(5\) must be at most n \(4\)"):
        LabelParams(k=5)  # the check of LabelConfig, at config load rather than at the label step
    assert LabelParams(confirm_at=0.5, refute_at=0.25).label_config().confirm_at == 0.5
    with pytest.raises(ValueError, match="less than or equal to 1024"):
        LabelConfig(m=1025)  # the samples of one request, as GenerateConfig.n
    import click
    import typer.main

    from proofcritic.cli import app

    root = typer.main.get_command(app)
    label = root.get_command(click.Context(root), "label")
    options = {p.name: p for p in label.params}
    for name in names:  # the label command's options: the same defaults and words
        field = LabelConfig.model_fields[name]
        assert (options[name].default, options[name].help) == (field.default, field.description), name
