"""D_v and D_mv builders (SPEC section 4): auto-label records, human-graded suites, user JSONL,
deduplication, the held-out split and the dataset/JSONL output."""

from __future__ import annotations

import json

import pytest
from scripted import meta_text, points_output, verification_text

from proofcritic.benchmarks import GradeItem, load_suite
from proofcritic.errors import InputError
from proofcritic.pipelines.label import AnalysisEvidence, LabelConfig, LabelResult
from proofcritic.training import (
    MetaExample,
    VerifierExample,
    deduplicate,
    examples_from_grades,
    examples_from_jsonl,
    examples_from_labels,
    make_meta_verifier_reward,
    make_verifier_reward,
    meta_examples_from_jsonl,
    meta_examples_from_labels,
    points_to_score,
    split,
    to_dataset,
    write_jsonl,
)
from proofcritic.types import Aggregate, Problem, Verification

PROBLEM = Problem(id="p1", statement="Prove that $n^3 - n$ is divisible by 6.")


def analysis(index: int, score: float, metas: list[float | None]) -> AnalysisEvidence:
    v = Verification(raw=f"raw {index}", analysis=f"Analysis A{index}.", score=score, format_ok=True)
    return AnalysisEvidence(index=index, score=score, reports_issues=score < 1, meta_scores=metas, verification=v)


def record(proof: str, status: str, label: float | None, analyses: list[AnalysisEvidence]) -> dict:
    result = LabelResult(
        problem=PROBLEM,
        proof=proof,
        status=status,
        label=label,
        rule="confirmed_lowest" if status == "labeled" else "not_enough_confirmed",
        config=LabelConfig(n=len(analyses), m=3),
        analyses=analyses,
        aggregate=Aggregate(n=len(analyses), valid=len(analyses)),
    )
    return {"id": proof, "line": 1, **result.model_dump(mode="json")}


@pytest.fixture
def label_records() -> list[dict]:
    return [
        record(
            "proof A", "labeled", 0.0, [analysis(0, 0, [1, 1, 0]), analysis(1, 0, [1, 0.5, 0.5]), analysis(2, 1, [])]
        ),
        record("proof B", "labeled", 1.0, [analysis(0, 1, []), analysis(1, 1, [])]),
        record("proof C", "review", None, [analysis(0, 0.5, [0, None, None]), analysis(1, 0.5, [None, None, None])]),
        {"id": "bad", "line": 4, "error": "boom", "error_kind": "InputError"},
    ]


def test_d_v_from_label_records(label_records, tmp_path):
    examples = examples_from_labels(label_records)
    assert [(e.proof, e.score) for e in examples] == [("proof A", 0.0), ("proof B", 1.0)]
    assert examples[0].problem == PROBLEM and examples[0].source == "label" and examples[0].id
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in label_records))
    assert examples_from_labels(path) == examples


def test_d_mv_from_label_evidence_uses_the_majority_meta_score(label_records):
    examples = meta_examples_from_labels(label_records)
    got = [(e.proof, e.analysis, e.analysis_score, e.meta_score) for e in examples]
    assert got == [
        ("proof A", "Analysis A0.", 0.0, 1.0),  # votes 1, 1, 0
        ("proof A", "Analysis A1.", 0.0, 0.5),  # votes 1, 0.5, 0.5
        ("proof C", "Analysis A0.", 0.5, 0.0),  # a review record still gives meta evidence
    ]  # score-1 analyses and analyses without a scored meta vote give none


@pytest.mark.parametrize(
    ("points", "max_points", "score"),
    [(7, 7, 1.0), (0, 7, 0.0), (6, 7, 0.5), (1, 7, 0.5), (21, 21, 1.0), (10, 21, 0.5), (0, 21, 0.0), (8, 7, 1.0)],
)
def test_points_mapping(points, max_points, score):
    assert points_to_score(points, max_points) == score


def test_proofbench_buckets_override_points():
    items = [
        GradeItem(id=b, problem=PROBLEM, proof=f"proof {b}", human_points=pts, meta={"bucket": b})
        for b, pts in [("Correct", 7), ("Almost", 6), ("Partial", 1), ("Incorrect", 0)]
    ]
    assert [e.score for e in examples_from_grades(items)] == [1.0, 0.5, 0.0, 0.0]


def _suite(name: str):
    try:
        return load_suite(name)
    except InputError as error:
        pytest.skip(f"{name} data absent: {error}")


def test_d_v_from_dsmv2_human():
    items = _suite("dsmv2-human")
    examples = examples_from_grades(items, source="dsmv2-human")
    assert len(examples) == len(items)
    for item, example in zip(items, examples):
        expected = 1.0 if item.human_points >= item.problem.max_points else 0.0 if item.human_points <= 0 else 0.5
        assert example.score == expected and example.proof == item.proof
    assert {e.score for e in examples} == {0.0, 0.5, 1.0}


def test_d_v_from_opc_is_binary():
    items = _suite("opc")
    examples = examples_from_grades(items, source="opc")
    assert {e.score for e in examples} <= {0.0, 1.0}
    assert sum(e.score for e in examples) == sum(1 for i in items if i.meta.get("human_label") == "correct")


def test_user_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"problem": "Show 1 + 1 = 2.", "proof": "Count.", "score": 1},
        {"problem": {"statement": "Show 2 > 1.", "max_points": 10}, "proof": "Clear.", "points": 4},
        {
            "statement": "Show 3 > 2.",
            "proof": "Obvious.",
            "score": 0,
            "analysis": "No argument.",
            "meta_score": 1,
            "analysis_score": 0,
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = examples_from_jsonl(path)
    assert [(e.problem.statement, e.score) for e in examples] == [
        ("Show 1 + 1 = 2.", 1.0),
        ("Show 2 > 1.", 0.5),
        ("Show 3 > 2.", 0.0),
    ]
    assert examples[1].problem.max_points == 10
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x", "proof": "y", "score": 0.7}) + "\n")
    with pytest.raises(InputError, match=r"0, 0\.5 or 1"):
        examples_from_jsonl(bad)
    with pytest.raises(InputError, match="analysis"):
        meta_examples_from_jsonl(path)
    meta_path = tmp_path / "meta.jsonl"
    meta_path.write_text(json.dumps(rows[2]) + "\n")
    (meta,) = meta_examples_from_jsonl(meta_path)
    assert (meta.analysis, meta.analysis_score, meta.meta_score) == ("No argument.", 0.0, 1.0)


def _examples(n: int) -> list[VerifierExample]:
    return [
        VerifierExample(problem=Problem(statement=f"Problem {i % 7}"), proof=f"proof {i}", score=1.0) for i in range(n)
    ]


def test_deduplicate_keeps_the_first():
    a = VerifierExample(problem=PROBLEM, proof="same", score=1.0, source="first")
    b = VerifierExample(problem=PROBLEM, proof="same ", score=0.0, source="second")
    c = VerifierExample(problem=PROBLEM, proof="other", score=0.0)
    assert deduplicate([a, b, c]) == [a, c]
    m1 = MetaExample(problem=PROBLEM, proof="same", analysis="x", meta_score=1)
    m2 = MetaExample(problem=PROBLEM, proof="same", analysis="y", meta_score=1)
    assert len(deduplicate([m1, m2, m1])) == 2


def test_split_is_deterministic_and_keeps_problems_together():
    examples = _examples(200)
    train, held = split(examples, 0.3)
    assert len(train) + len(held) == 200 and held
    assert {e.problem.statement for e in train}.isdisjoint({e.problem.statement for e in held})
    _, again_held = split(list(reversed(examples)), 0.3)
    assert {e.proof for e in again_held} == {e.proof for e in held}
    _, by_example = split(examples, 0.3, by="example")
    assert 30 <= len(by_example) <= 90
    assert split(examples, 0.0)[1] == [] and split(examples, 1.0)[0] == []
    assert {e.proof for e in split(examples, 0.3, by="example", salt="other")[1]} != {e.proof for e in by_example}


def test_dataset_and_jsonl_output_feed_the_rewards(label_records, tmp_path):
    d_v = to_dataset(examples_from_labels(label_records))
    assert d_v.column_names == ["id", "prompt", "problem", "proof", "reference_score", "source"]
    row = d_v[0]
    assert row["prompt"][-1]["role"] == "user" and "proof A" in row["prompt"][-1]["content"]
    assert row["problem"]["statement"] == PROBLEM.statement
    reward = make_verifier_reward()
    assert reward([verification_text(0)] * len(d_v), **d_v.to_dict()) == [1.0, 0.0]

    d_mv = to_dataset(meta_examples_from_labels(label_records))
    assert {"analysis", "analysis_score", "reference_meta_score"} <= set(d_mv.column_names)
    assert "Analysis A0." in d_mv[0]["prompt"][-1]["content"]
    assert make_meta_verifier_reward()([meta_text(1)] * len(d_mv), **d_mv.to_dict()) == [1.0, 0.5, 0.0]

    path = tmp_path / "out" / "d_v.jsonl"
    assert write_jsonl(examples_from_labels(label_records), path) == 2
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["reference_score"] == 0.0 and lines[0]["prompt"] == d_v[0]["prompt"]


# --------------------------------------------------------------------------- the points protocol


@pytest.fixture
def points_label_file(tmp_path):
    """`label --scale points` output (see scripted.write_points_labels)."""
    from scripted import write_points_labels

    return write_points_labels(tmp_path, PROBLEM.statement)


def test_points_labels_make_points_d_v_and_d_mv(points_label_file):
    """D_v from points labels: the points verifier's prompt, the labelled points as reference;
    D_mv: the points review prompt showing each analysis's points."""
    from proofcritic.training import dataset_scale

    records = [json.loads(line) for line in points_label_file.read_text().splitlines()]
    assert [(r["id"], r["status"], r["scale"]) for r in records] == [
        ("gap", "labeled", "points"),
        ("full", "labeled", "points"),
        ("muddle", "review", "points"),
    ]
    d_v = examples_from_labels(points_label_file)
    assert [(e.proof, e.scale, e.points, e.score) for e in d_v] == [
        ("Proof gap.", "points", 3, pytest.approx(3 / 7)),
        ("Proof full.", "points", 7, 1.0),
    ]
    assert dataset_scale(d_v) == "points"
    rows = to_dataset(d_v)
    assert {"reference_points", "max_points", "scale"} <= set(rows.column_names)
    assert rows["reference_points"] == [3, 7] and rows["max_points"] == [7, 7] and rows["scale"] == ["points"] * 2
    prompt = rows[0]["prompt"][-1]["content"]
    assert "on a scale of 0 to 7 points" in prompt and "final number of points should be" in prompt
    assert "Proof gap." in prompt and "\\boxed{0}" not in prompt  # not the ternary prompt
    # the points reward scores completions against those references: 1 - |p - l| / 7
    reward = make_verifier_reward(scale="points")
    assert reward([points_output(3)] * 2, **rows.to_dict()) == pytest.approx([1.0, 3 / 7])

    d_mv = meta_examples_from_labels(points_label_file)
    # gap: the two 3s (7 is never reviewed); muddle: 2 and the two 5s, each with one 0 and one 1
    # (majority tie -> the lower meta score, 0)
    assert [(e.proof, e.analysis_points, e.meta_score) for e in d_mv] == [
        ("Proof gap.", 3, 1.0),
        ("Proof gap.", 3, 1.0),
        ("Proof muddle.", 2, 0.0),
        ("Proof muddle.", 5, 0.0),
        ("Proof muddle.", 5, 0.0),
    ]
    meta_rows = to_dataset(d_mv)
    assert meta_rows["analysis_points"][:3] == [3, 3, 2] and set(meta_rows["scale"]) == {"points"}
    review = meta_rows[2]["prompt"][-1]["content"]
    assert "The grader's points: 2 of 7" in review and "Analysis of muddle #0." in review
    assert make_meta_verifier_reward()([meta_text(1)] * 5, **meta_rows.to_dict()) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_one_scale_per_data_set(points_label_file, label_records, tmp_path):
    """Points and ternary labels in one data set are refused with both counts; so is asking for
    the other scale; a user's points file needs points on the problem's scale."""
    points_records = [json.loads(line) for line in points_label_file.read_text().splitlines()]
    with pytest.raises(InputError, match=r"mixes scales: 2 points and 2 ternary example\(s\)"):
        examples_from_labels([*points_records, *label_records])
    with pytest.raises(InputError, match=r"mixes scales"):
        meta_examples_from_labels([*label_records, *points_records])
    with pytest.raises(InputError, match=r"label record 'gap' is on the points scale.*scale: ternary"):
        examples_from_labels(points_records, scale="ternary")
    with pytest.raises(InputError, match=r"mixes scales"):
        to_dataset([*examples_from_labels(points_records), *examples_from_labels(label_records)])
    # a ternary label record without the scale field (older files): read from its analyses
    assert {e.scale for e in examples_from_labels(label_records)} == {"ternary"}

    user = tmp_path / "dv.jsonl"
    user.write_text(
        json.dumps({"problem": {"statement": "S", "max_points": 10}, "proof": "P", "points": 4, "scheme": "4 for x"})
        + "\n"
    )
    [example] = examples_from_jsonl(user, scale="points")
    assert (example.scale, example.points, example.score) == ("points", 4, pytest.approx(0.4))
    assert "4 for x" in to_dataset([example])[0]["prompt"][-1]["content"]  # the scheme is shown
    assert examples_from_jsonl(user)[0].scale == "ternary"  # unasked, points map to {0, 0.5, 1}
    user.write_text(json.dumps({"problem": "S", "proof": "P", "points": 8, "scale": "points"}) + "\n")
    with pytest.raises(InputError, match=r"'points' is 8; on this problem's scale it lies from 0 to 7"):
        examples_from_jsonl(user)
