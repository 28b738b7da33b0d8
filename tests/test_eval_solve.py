"""``eval_solve``: k samples per problem graded by the verifier, on a scripted model whose
answers are chosen so that pass@k, best@k and self/verifier agreement have known values."""

from __future__ import annotations

import json
import re

import pytest
from scripted import ScriptedBackend, generation_text, verification_text

from proofcritic.benchmarks._items import SolveItem
from proofcritic.benchmarks._run import RunFolder
from proofcritic.benchmarks.eval_solve import (
    eval_solve,
    seeded_roles,
    summarize_solve_run,
)
from proofcritic.llm import Model
from proofcritic.pipelines._common import Roles
from proofcritic.pipelines.single import SingleStrategy
from proofcritic.types import Problem

# problem "a": sample 0 claims 1 but the verifier gives 0.5; sample 1 claims 0.5 and gets 1.
# problem "b": every sample claims 1 and gets 1.
SELF = {("a", 0): 1.0, ("a", 1): 0.5, ("b", 0): 1.0, ("b", 1): 1.0}
VERDICT = {("a", 0): 0.5, ("a", 1): 1.0, ("b", 0): 1.0, ("b", 1): 1.0}


def _script(call) -> str:
    seed = call.request.config.seed or 0
    if call.role == "generate":
        pid = "a" if "statement a" in call.prompt else "b"
        return generation_text(f"PROOF-{pid}-{seed}", SELF[(pid, seed)])
    for (pid, sample), score in VERDICT.items():
        if f"PROOF-{pid}-{sample}" in call.prompt:
            return verification_text(score)
    raise AssertionError("unexpected verification")


def _items() -> list[SolveItem]:
    return [SolveItem(problem=Problem(id=p, statement=f"Prove statement {p}.")) for p in ("a", "b")]


async def test_pass_best_and_agreement_on_a_hand_made_case(tmp_path):
    backend = ScriptedBackend(_script)
    roles = Roles.from_models(Model(backend))
    run = RunFolder(tmp_path / "run")
    prices = {"m": {"prompt": 1.0, "completion": 2.0}}
    summary = await eval_solve(
        _items(), run, roles=roles, strategy=SingleStrategy(verify_n=1), k=2, verify_n=2, prices=prices, model_name="m"
    )
    # 2 problems x 2 samples: 1 generation + 1 verification by the strategy + 1 more verification
    assert backend.count("generate") == 4 and backend.count("verify") == 8
    records = {r["id"]: r for r in run.records()}
    a0, a1 = records["a"]["samples"]
    assert a0["seed"] is None and a1["seed"] == 1
    assert a0["verifier_scores"] == [0.5, 0.5] and a0["points"] == 3.5 and not a0["passed"]
    assert a1["verifier_scores"] == [1.0, 1.0] and a1["points"] == 7.0 and a1["passed"]
    m = summary["metrics"]
    assert m["score"]["value"] == pytest.approx(0.75)  # first samples: 0.5 and 1
    assert m["score"]["low"] == 0.5 and m["score"]["high"] == 1.0 and m["score"]["n"] == 2
    assert m["pass@1"]["value"] == pytest.approx(0.75) and m["pass@k"]["value"] == 1.0
    assert m["best_self"]["value"] == pytest.approx(0.75)  # "a": self-score picks sample 0 (3.5 points)
    assert m["best_verifier"]["value"] == 1.0
    assert summary["points"] == {"first": 10.5, "best": 14.0, "best_self": 10.5, "best_verifier": 14.0, "max": 14.0}
    assert summary["agreement"] == {"pairs": 4, "exact": 0.5, "mean_abs_diff": 0.25}
    assert summary["k"] == 2 and summary["errors"] == 0 and summary["format_failures"] == 0
    tokens = summary["tokens"]
    assert tokens["total"] > 0 and summary["cost"]["total"] == pytest.approx(
        tokens["prompt"] / 1e6 + 2 * tokens["completion"] / 1e6
    )
    assert json.loads(run.summary_path.read_text())["metrics"]["pass@k"]["value"] == 1.0


async def test_resume_makes_no_new_calls(tmp_path):
    backend = ScriptedBackend(_script)
    roles = Roles.from_models(Model(backend))
    run = RunFolder(tmp_path / "run")
    first = await eval_solve(_items()[:1], run, roles=roles, strategy=SingleStrategy(), k=2)
    calls = len(backend.calls)
    assert first["items"] == 1
    again = await eval_solve(_items()[:1], run, roles=roles, strategy=SingleStrategy(), k=2)
    assert len(backend.calls) == calls and again["metrics"] == first["metrics"]
    await eval_solve(_items(), run, roles=roles, strategy=SingleStrategy(), k=2)  # only "b" is new
    assert backend.count("generate") == 4 and len(run.records()) == 2


def test_error_records_and_helpers():
    summary = summarize_solve_run([{"id": "x", "error": "boom", "error_kind": "internal"}])
    assert summary["errors"] == 1 and summary["scored"] == 0 and summary["metrics"]["score"]["value"] is None
    roles = Roles.from_models(Model(ScriptedBackend(_script)))
    assert seeded_roles(roles, 0) is roles and seeded_roles(roles, 3).verifier.config.seed == 3
    assert roles.verifier.config.seed is None


async def test_best_at_k_by_tournament(tmp_path):
    """--tournament knockout: the verifier's model compares the k answers; on problem "a" the
    judge prefers sample 1 (verifier 1.0) although sample 0 has the higher self-score."""
    from proofcritic.pipelines.tournament import COMPARE_MARKER

    def script(call):
        if call.role == "compare":
            shown_first = call.prompt[call.prompt.index("## Proof 1") : call.prompt.index("## Proof 2")]
            choice = 1 if re.search(r"PROOF-\w-1", shown_first) else 2  # the judge prefers sample 1's proof
            return f"Decided.\n{COMPARE_MARKER}\n\\boxed{{{choice}}}"
        return _script(call)

    backend = ScriptedBackend(script)
    summary = await eval_solve(
        _items(),
        RunFolder(tmp_path / "run"),
        roles=Roles.from_models(Model(backend)),
        strategy=SingleStrategy(verify_n=0),
        k=2,
        verify_n=1,
        tournament="knockout",
    )
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "items.jsonl").read_text().splitlines())}
    assert records["a"]["tournament"]["winner"] == 1 and records["a"]["tournament"]["matches"] == 1
    assert backend.count("compare") == 4  # one match (two orders) per problem
    # a: the tournament's pick scores 1.0 (best by self-score picks sample 0: 0.5); b: 1.0
    assert summary["metrics"]["best_tournament"]["value"] == pytest.approx(1.0)
    assert summary["metrics"]["best_self"]["value"] == pytest.approx(0.75)
