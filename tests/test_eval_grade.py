"""eval_grade: the published DeepSeekMath-V2 numbers from recorded grades, the rules on the
scripted model (with resume), and a real run on SmolLM2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scripted import ScriptedBackend, meta_text, verification_text

from proofcritic.benchmarks import SCALES, GradeItem, RunFolder
from proofcritic.benchmarks.eval_grade import eval_grade, summarize_grade_run
from proofcritic.benchmarks.metrics import pearson
from proofcritic.errors import InputError
from proofcritic.llm import GenerateConfig, Model
from proofcritic.meta_verifier import MetaVerifier
from proofcritic.pipelines.adaptive import AdaptiveOptions
from proofcritic.pipelines.label import LabelConfig
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

DSMV2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsmv2" / "outputs"
FILES = {  # file -> points scale (SPEC section 6; data README)
    "IMO2025": SCALES["imo"],
    "CMO2024": SCALES["cmo"],
    "Putnam2024": SCALES["putnam"],
    "IMO-ProofBench-Basic": SCALES["proofbench"],
    "IMO-ProofBench-Advanced": SCALES["proofbench"],
}


def dsmv2_items() -> list[GradeItem]:
    """The 84 DeepSeekMath-V2 proofs with their human points and the recorded 64-verification mean."""
    if not DSMV2.is_dir():
        pytest.skip(f"no DSM-V2 data at {DSMV2}")
    items = []
    for name, scale in FILES.items():
        for line, text in enumerate((DSMV2 / f"{name}.jsonl").read_text().splitlines(), 1):
            record = json.loads(text)
            prediction = record["model_prediction"]
            items.append(
                GradeItem(
                    id=f"{name}-{line}",
                    problem=Problem(
                        id=f"{name}-{record['problem_idx']}", statement=record["question"], max_points=scale
                    ),
                    proof=prediction["proof"],
                    human_points=prediction["human_rating"],
                    meta={"competition": name, "model_id": "DeepSeekMath-V2"},
                    recorded={"average_automatic_rating": prediction["average_automatic_rating"]},
                )
            )
    return items


async def test_dsmv2_published_numbers_from_recorded_grades(tmp_path):
    items = dsmv2_items()
    assert len(items) == 84
    summary = await eval_grade(
        items, RunFolder(tmp_path / "run"), from_recorded="average_automatic_rating", n_resamples=200
    )
    metrics = summary["metrics"]
    assert summary["counts"]["scored"] == 84 and summary["counts"]["errors"] == 0
    assert summary["usage"]["calls"] == 0  # no model involved
    # 0.703 is Pearson of the recorded mean (in [0, 1]) against human points normalised by each
    # file's scale (human_score). The other readings do not give it: the recorded mean against raw
    # human points (CMO 0-21 next to IMO 0-7) gives 0.478, and points against points (the mean
    # times the scale against raw human points) gives 0.778.
    assert round(metrics["pearson"], 3) == 0.703
    assert (
        round(pearson([i.recorded["average_automatic_rating"] for i in items], [i.human_points for i in items]), 3)
        == 0.478
    )
    assert round(metrics["pearson_points"], 3) == 0.778
    # "all 64 passed" (recorded mean == 1) on 72 proofs, 65 of them with full human points;
    # every full-points proof is among them (recall 65/65)
    assert metrics["predicted_correct"] == 72 and metrics["human_correct"] == 65
    assert metrics["precision"] == pytest.approx(65 / 72)
    assert metrics["recall"] == 1.0
    assert metrics["confusion_binary"]["matrix"] == [[12, 7], [0, 65]]
    low, high = metrics["intervals"]["pearson"]["low"], metrics["intervals"]["pearson"]["high"]
    assert low < metrics["pearson"] < high
    assert set(metrics["breakdowns"]["competition"]) == set(FILES)
    assert metrics["breakdowns"]["competition"]["Putnam2024"]["n"] == 12
    # the summary is rebuilt from items.jsonl alone
    run = RunFolder(tmp_path / "run")
    assert run.summary() == summary
    again = summarize_grade_run(run.records(), n_resamples=200)
    assert again["metrics"]["pearson"] == metrics["pearson"] and again["counts"] == summary["counts"]
    first = next(r for r in run.records() if r["id"] == "IMO2025-1")
    assert first["kind"] == "grade" and first["rule"] == "recorded:average_automatic_rating"
    assert first["predicted_points"] == pytest.approx(7 * first["predicted_score"])


async def test_dsmv2_through_load_suite_if_available(tmp_path):
    try:
        from proofcritic.benchmarks import load_suite
    except ImportError:
        pytest.skip("load_suite is not there yet")
    items = load_suite("dsmv2-human")
    assert len(items) == 84
    summary = await eval_grade(
        items, RunFolder(tmp_path / "run"), from_recorded="average_automatic_rating", n_resamples=50
    )
    assert round(summary["metrics"]["pearson"], 3) == 0.703
    assert summary["metrics"]["precision"] == pytest.approx(65 / 72)
    assert set(summary["metrics"]["breakdowns"]["competition"]) == set(FILES)
    assert summary["metrics"]["breakdowns"]["model_id"]["deepseek-math-v2"]["n"] == 84


# --------------------------------------------------------------------------- scripted model

_PROOF = re.compile(r"Proof P(\d+)\.")
_ANALYSIS = re.compile(r"Analysis P(\d+)A(\d+)\.")
#: verifier scores per item (None: a format failure), and meta scores per (item, analysis)
SCORES = {1: [1, 1, 1], 2: [1, 0, 0], 3: [1, 1, 0.5], 4: [None, None, None]}
METAS = {(2, 1): 1, (2, 2): 1, (3, 2): 0}


def _script(call):
    if call.role == "verify":
        k = int(_PROOF.search(call.prompt).group(1))
        score = SCORES[k][call.index]
        if score is None:
            return "I ran out of room before the", "length"
        issues = [] if score == 1 else [("step 1", "Critical Error", "false claim")]
        return verification_text(score, issues, analysis=f"Analysis P{k}A{call.index}.")
    if call.role == "meta_verify":
        k, i = map(int, _ANALYSIS.search(call.prompt).groups())
        return meta_text(METAS[(k, i)])
    raise AssertionError(call.role)


def scripted_items() -> list[GradeItem]:
    def item(k: int, human: float, max_points: float = 7, competition: str = "imo", model_id: str = "m1") -> GradeItem:
        problem = Problem(id=f"p{k}", statement=f"Problem {k}: prove that 1 + 1 = 2.", max_points=max_points)
        return GradeItem(
            id=f"g{k}",
            problem=problem,
            proof=f"Proof P{k}. By definition.",
            human_points=human,
            meta={"competition": competition, "model_id": model_id},
        )

    return [item(1, 7), item(2, 0, model_id="m2"), item(3, 7), item(4, 10, max_points=10, competition="putnam")]


def _roles():
    backend = ScriptedBackend(_script)
    model = Model(backend)
    return Verifier(model, score_mode="text"), MetaVerifier(model), backend


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("mean", {"g1": 1, "g2": 1 / 3, "g3": 5 / 6, "g4": None}),
        ("min", {"g1": 1, "g2": 0, "g3": 0.5, "g4": None}),
        ("majority", {"g1": 1, "g2": 0, "g3": 1, "g4": None}),
        # label: g1 all correct; g2 two confirmed zeros (k=1) -> 0; g3 the 0.5 is refuted -> 1;
        # g4 has no analyses -> review queue
        ("label", {"g1": 1, "g2": 0, "g3": 1, "g4": None}),
    ],
)
async def test_rules_on_the_scripted_model_and_resume(tmp_path, rule, expected):
    verifier, meta_verifier, backend = _roles()
    run = RunFolder(tmp_path / rule)
    progress = []
    summary = await eval_grade(
        scripted_items(),
        run,
        verifier=verifier,
        meta_verifier=meta_verifier,
        n=3,
        rule=rule,
        label_config=LabelConfig(n=3, m=1, k=1) if rule == "label" else None,
        n_resamples=50,
        on_progress=lambda stats: progress.append(stats.done),
    )
    records = {r["id"]: r for r in run.records()}
    for item_id, score in expected.items():
        got = records[item_id]["predicted_score"]
        assert got == (None if score is None else pytest.approx(score)), (item_id, got)
    assert records["g2"]["predicted_points"] == pytest.approx(7 * expected["g2"])
    assert records["g1"]["verifications"][0] == {
        "score": 1,
        "score_source": "text",
        "format_ok": True,
        "issues": 0,
        "issue_spans": [],
        "raw": records["g1"]["verifications"][0]["raw"],
    }
    assert len(records["g2"]["verifications"]) == 3 and records["g2"]["verifications"][1]["issues"] == 1
    counts = summary["counts"]
    assert counts["scored"] == 3 and counts["errors"] == 0
    assert counts["review" if rule == "label" else "no_verdict"] == 1
    assert records["g4"]["status"] == ("review" if rule == "label" else "no_verdict")
    if rule == "label":
        assert records["g4"]["label_rule"] == "no_analyses" and records["g3"]["label_rule"] == "all_refuted"
        assert backend.count("meta_verify") == 3  # g2's two zeros and g3's 0.5
    metrics = summary["metrics"]
    assert metrics["n"] == 3 and metrics["unscored"] == 1
    # g1 and g3 are human-correct, g2 is not; predicted correct iff the verdict is 1
    predicted = {k for k in ("g1", "g2", "g3") if expected[k] == 1}
    assert metrics["predicted_correct"] == len(predicted)
    assert metrics["precision"] == pytest.approx(len(predicted & {"g1", "g3"}) / len(predicted))
    assert set(metrics["breakdowns"]["model_id"]) == {"m1", "m2"}
    assert summary["usage"]["calls"] > 0 and progress[-1] == 4

    calls = len(backend.calls)
    again = await eval_grade(
        scripted_items(),
        run,
        verifier=verifier,
        meta_verifier=meta_verifier,
        n=3,
        rule=rule,
        label_config=LabelConfig(n=3, m=1, k=1) if rule == "label" else None,
        n_resamples=50,
    )
    assert len(backend.calls) == calls  # resumed: every item was done, no new call
    assert again == summary
    assert len(run.items_path.read_text().splitlines()) == 4


async def test_bad_input_and_missing_recorded_field(tmp_path):
    verifier, _meta_verifier, _ = _roles()
    with pytest.raises(InputError, match="verifier"):
        await eval_grade(scripted_items(), RunFolder(tmp_path / "a"))
    with pytest.raises(InputError, match="meta-verifier"):
        await eval_grade(scripted_items(), RunFolder(tmp_path / "a"), verifier=verifier, rule="label")
    with pytest.raises(InputError, match="rule"):
        await eval_grade(scripted_items(), RunFolder(tmp_path / "a"), verifier=verifier, rule="max")
    with pytest.raises(InputError, match="no items"):
        await eval_grade([], RunFolder(tmp_path / "a"), verifier=verifier)
    items = scripted_items()
    items[0].recorded["auto"] = 1.0
    items[1].recorded["auto"] = 0.0
    summary = await eval_grade(items, RunFolder(tmp_path / "b"), from_recorded="auto", n_resamples=20)
    assert summary["counts"]["errors"] == 2 and summary["counts"]["error_kinds"] == {"input": 2}
    assert summary["metrics"]["n"] == 2 and summary["metrics"]["accuracy"] == 1.0


# --------------------------------------------------------------------------- real model


async def test_smollm2_through_the_real_verifier(smol_backend, tmp_path):
    # 16 tokens hold no score: the likelihood read-out (opt-in) gives one
    verifier = Verifier(Model(smol_backend), config=GenerateConfig(max_tokens=16, temperature=0.8), score_mode="auto")
    items = scripted_items()[:2]
    run = RunFolder(tmp_path / "smol")
    summary = await eval_grade(items, run, verifier=verifier, n=1, rule="mean", n_resamples=20)
    records = run.records()
    assert sorted(r["id"] for r in records) == ["g1", "g2"]
    assert all("error" not in r and len(r["verifications"]) == 1 for r in records)
    assert summary["counts"]["scored"] + summary["counts"]["no_verdict"] == 2
    usage = summary["usage"]  # one generation per item, and a read-out for each sample without a written score
    assert usage["completion_tokens"] > 0 and usage["calls"] == 2 + usage["readout_calls"]
    assert usage["readout_calls"] <= 2
    for r in records:
        assert r["verifications"][0]["raw"] is not None
        assert r["predicted_score"] is None or 0 <= r["predicted_score"] <= 1


async def test_gradingbench_rows_get_the_four_bucket_metrics(tmp_path):
    """Rows in IMO-GradingBench's CSV shape, graded by the scripted verifier: the human
    buckets 7/6/1/0 against the verifier's points rounded to the nearest of 0/1/6/7."""
    import csv

    from proofcritic.benchmarks import load_suite

    columns = [
        "Grading ID",
        "Problem ID",
        "Problem",
        "Solution",
        "Grading guidelines",
        "Response",
        "Points",
        "Reward",
        "Problem Source",
    ]
    rows = [  # id, human bucket, the score the verifier writes
        ("GB-1", "7", "Correct", 1),
        ("GB-2", "6", "Almost", 1),
        ("GB-3", "1", "Partial", 0),
        ("GB-4", "0", "Incorrect", 0.5),
        ("GB-5", "0", "Incorrect", 0),
    ]
    path = tmp_path / "gradingbench.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for gid, points, bucket, _ in rows:
            writer.writerow(
                [gid, "PB-1", "Show that 1 + 1 = 2.", "By definition.", "", f"Proof {gid}.", points, bucket, "Novel"]
            )
    items = load_suite("imo-gradingbench", source=path)
    scores = {f"Proof {gid}.": score for gid, _, _, score in rows}

    def script(call):
        return verification_text(next(s for proof, s in scores.items() if proof in call.prompt))

    verifier = Verifier(Model(ScriptedBackend(script)), score_mode="text")
    summary = await eval_grade(items, RunFolder(tmp_path / "run"), verifier=verifier, n=1, rule="mean", n_resamples=50)
    metrics = summary["metrics"]
    # verifier points 7, 7, 0, 3.5 -> 1 (the 1-6 tie goes down), 0; humans 7, 6, 1, 0, 0
    assert metrics["confusion_gradingbench"] == {
        "labels": [0, 1, 6, 7],
        "matrix": [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]],
    }
    from proofcritic.benchmarks.metrics import cohen_kappa

    assert metrics["qwk_gradingbench"] == pytest.approx(
        cohen_kappa([7, 6, 1, 0, 0], [7, 7, 0, 1, 0], labels=[0, 1, 6, 7], weights="quadratic")
    )
    assert metrics["leniency_points"] == pytest.approx((0 + 1 - 1 + 3.5 + 0) / 5)


# -- adaptive verification (issue #17) ----------------------------------------------------------------

_ADAPTIVE_SEED = 500
_PROOF_TAG = re.compile(r"Proof Q(\d+)\.")


def _adaptive_roles(scores_by_proof):
    """A seeded scripted verifier: sample i of proof Qj's request scores ``scores_by_proof[j][i]``
    (the model asks sample i with seed + i, so batches know which samples they are)."""

    def script(call):
        assert call.role == "verify", call.role
        proof = int(_PROOF_TAG.search(call.prompt).group(1))
        index = call.request.config.seed - _ADAPTIVE_SEED + call.index
        score = scores_by_proof[proof][index]
        issues = [] if score == 1 else [("step 1", "Critical Error", "wrong")]
        return verification_text(score, issues)

    backend = ScriptedBackend(script)
    verifier = Verifier(Model(backend), score_mode="text", config=GenerateConfig(seed=_ADAPTIVE_SEED))
    return verifier, backend


def _adaptive_items(count):
    problem = Problem(id="p", statement="Show that 1 + 1 = 2.")
    return [
        GradeItem(id=f"q{j}", problem=problem, proof=f"Proof Q{j}. By definition.", human_points=7)
        for j in range(count)
    ]


@pytest.mark.parametrize(
    ("buckets", "drawn"),
    [
        # "correct" (cut 1.0) alone: all-1 needs all 16; a 0.5 at sample 6 ends at checkpoint 8; a 0 at
        # sample 1 ends at checkpoint 4
        (None, [16, 8, 4]),
        # with the 0/1/6/7 buckets: the all-0 proof must also show its mean is below 0.5/7 points, which
        # Hoeffding's interval over 16 draws only does at 16; the 0.5 proof's mean of 16 may be near 6.5/7
        ("gradingbench", [16, 16, 16]),
    ],
)
async def test_adaptive_mean_rule_stops_where_the_scripts_settle_it(tmp_path, buckets, drawn):
    scores = [[1] * 16, [1, 1, 1, 1, 1, 0.5, 1, 1] + [1] * 8, [0] * 16]
    verifier, backend = _adaptive_roles(scores)
    run = RunFolder(tmp_path / f"adaptive-{buckets}")
    options = AdaptiveOptions(adaptive=True, confidence=0.99, batch=4)
    await eval_grade(
        _adaptive_items(3), run, verifier=verifier, n=16, rule="mean", adaptive=options, buckets=buckets, n_resamples=20
    )
    records = {r["id"]: r for r in run.records()}
    assert [records[f"q{j}"]["sampling"]["drawn"] for j in range(3)] == drawn
    assert [len(records[f"q{j}"]["verifications"]) for j in range(3)] == drawn
    assert backend.count("verify") == sum(drawn)
    assert records["q0"]["sampling"]["requests"] == 3  # checkpoints 4, 8, 16
    if buckets is None:
        assert "stopped after 8 of 16" in records["q1"]["sampling"]["stopped"]
        assert records["q1"]["predicted_score"] == pytest.approx(7.5 / 8)  # the mean of the draws made
    # the decisions equal the fixed procedure's: "correct" only for the all-1 proof
    fixed_run = RunFolder(tmp_path / f"fixed-{buckets}")
    fixed_verifier, _ = _adaptive_roles(scores)
    await eval_grade(
        _adaptive_items(3), fixed_run, verifier=fixed_verifier, n=16, rule="mean", buckets=buckets, n_resamples=20
    )
    fixed = {r["id"]: r for r in fixed_run.records()}
    for j in range(3):
        ours, theirs = records[f"q{j}"], fixed[f"q{j}"]
        assert (ours["predicted_score"] >= 1) == (theirs["predicted_score"] >= 1)
        assert "sampling" not in theirs  # a fixed run's records stay as they were
        if buckets:
            assert ours["predicted_points"] == theirs["predicted_points"]


async def test_adaptive_takes_the_mean_and_label_rules_only(tmp_path):
    verifier, _ = _adaptive_roles([[1] * 4])
    options = AdaptiveOptions(adaptive=True)
    with pytest.raises(InputError, match="mean or label rule"):
        await eval_grade(
            _adaptive_items(1), RunFolder(tmp_path / "a"), verifier=verifier, n=4, rule="min", adaptive=options
        )


def test_eval_grade_cli_refuses_adaptive_outside_the_mean_and_label_rules(tmp_path):
    from typer.testing import CliRunner

    from proofcritic.cli import app

    graded = tmp_path / "graded.jsonl"
    graded.write_text(json.dumps({"problem": "Show 1 + 1 = 2.", "proof": "By definition.", "points": 7}) + "\n")
    base = ["eval", "grade", "--file", str(graded), "--run", str(tmp_path / "run"), "--adaptive"]
    refused = CliRunner().invoke(app, [*base, "--rule", "min"])
    assert refused.exit_code == 2 and "--rule mean or label" in refused.output + refused.stderr
    bad = CliRunner().invoke(app, [*base, "--confidence", "1.5"])
    assert bad.exit_code == 2 and "confidence" in bad.output + bad.stderr
    assert not (tmp_path / "run").exists()  # refused before any run folder or model
