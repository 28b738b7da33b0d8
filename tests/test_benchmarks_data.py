"""Suite loaders against the real data in ../shared/data, and custom files written here."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from proofcritic.benchmarks import (
    BUCKETS,
    SUITES,
    GradeItem,
    SolveItem,
    data_root,
    get_suite,
    load_graded_file,
    load_problems_file,
    load_suite,
)
from proofcritic.errors import InputError, MissingDependencyError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder not found: {DATA}")


def _ids(items: list) -> list[str]:
    return [i.id if isinstance(i, GradeItem) else i.problem.id for i in items]


@needs_data
@pytest.mark.parametrize(
    ("name", "count", "points", "first_id"),
    [
        ("imo2025", 6, 7, "IMO2025-1"),
        ("cmo2024", 6, 21, "CMO2024-1"),
        ("cmo2025", 6, 21, "CMO2025-1"),
        ("putnam2024", 12, 10, "Putnam2024-A1"),
    ],
)
def test_competition_suites(name: str, count: int, points: float, first_id: str) -> None:
    items = load_suite(name, data_dir=DATA)
    assert len(items) == count and all(isinstance(i, SolveItem) for i in items)
    assert {i.problem.max_points for i in items} == {points}
    assert items[0].problem.id == first_id and len(set(_ids(items))) == count
    assert get_suite(name).max_points == points


@needs_data
def test_competition_answers_and_proof_only() -> None:
    items = {i.problem.id: i for i in load_suite("cmo2024", data_dir=DATA)}
    assert items["CMO2024-1"].meta["proof_only"] and items["CMO2024-1"].meta["answer"] is None
    assert items["CMO2024-6"].meta["answer"] == "\\sqrt{5}" and not items["CMO2024-6"].meta["proof_only"]


@needs_data
def test_proofbench_suites() -> None:
    basic = load_suite("proofbench-basic", data_dir=DATA)
    advanced = load_suite("proofbench-advanced", data_dir=DATA)
    assert len(basic) == 30 and len(advanced) == 30
    assert all(i.problem.id.startswith("PB-Basic-") for i in basic)
    assert all(i.problem.id.startswith("PB-Advanced-") for i in advanced)
    for item in basic + advanced:
        assert item.problem.max_points == 7 and item.problem.reference_solution
        assert "(Partial)" in (item.problem.grading_guidelines or "")
        assert item.meta["level"] and item.meta["category"] and item.meta["source"]
    assert basic[0].meta["answer"].startswith("$f(x) = 0$") and basic[1].meta["answer"] is None
    assert get_suite("proofbench-basic").buckets == BUCKETS == {"Correct": 7, "Almost": 6, "Partial": 1, "Incorrect": 0}


@needs_data
def test_usamo_rubric() -> None:
    items = load_suite("usamo2025", data_dir=DATA)
    assert [i.problem.id for i in items] == [f"USAMO2025-{n}" for n in range(1, 7)]
    for item in items:
        assert item.problem.max_points == 7 and item.problem.reference_solution
        guidelines = item.problem.grading_guidelines or ""
        assert guidelines.startswith("Points rubric (7 points")
        assert sum(r["points"] for r in item.meta["rubric"]) == 7
        assert guidelines.count("\n- ") == len(item.meta["rubric"])
    assert "Interchanging the floor and mod (3 points)" in (items[0].problem.grading_guidelines or "")


@needs_data
def test_opc() -> None:
    items = load_suite("opc", data_dir=DATA)
    assert len(items) == 100 and len(set(_ids(items))) == 100
    assert sum(i.human_correct for i in items) == 36
    assert {i.human_points for i in items} == {0.0, 7.0} and {i.problem.max_points for i in items} == {7.0}
    first = items[0]
    assert first.id == "bmo2_2004_3/qwen/qwen3_235b_a22b" and first.problem.id == "bmo2_2004_3"
    assert first.meta["problem_id"] == "bmo2_2004_3" and first.meta["model_id"] == "qwen/qwen3_235b_a22b"
    assert {"competition", "year", "level", "human_label"} <= set(first.meta)
    # the human error annotations: [start, end) offsets of the erroneous passages in the proof
    annotated = [i for i in items if i.meta.get("error_spans")]
    assert len(annotated) == 11 and sum(len(i.meta["error_spans"]) for i in annotated) == 137
    assert all(0 <= s < e <= len(i.proof) for i in annotated for s, e in i.meta["error_spans"])


@needs_data
def test_dsmv2_human() -> None:
    items = load_suite("dsmv2-human", data_dir=DATA)
    assert len(items) == 84 and len(set(_ids(items))) == 84
    counts = Counter(i.meta["competition"] for i in items)
    assert counts == {
        "IMO2025": 6,
        "CMO2024": 6,
        "Putnam2024": 12,
        "IMO-ProofBench-Basic": 30,
        "IMO-ProofBench-Advanced": 30,
    }
    scales = {i.meta["competition"]: i.problem.max_points for i in items}
    assert scales == {
        "IMO2025": 7,
        "CMO2024": 21,
        "Putnam2024": 10,
        "IMO-ProofBench-Basic": 7,
        "IMO-ProofBench-Advanced": 7,
    }
    by_id = {i.id: i for i in items}
    assert by_id["CMO2024-6"].human_points == 9 and by_id["CMO2024-6"].recorded["average_automatic_rating"] == 0.7109375
    assert by_id["Putnam2024-B5"].human_points == 8 and by_id["IMO2025-6"].human_points == 0
    assert all(0 <= i.human_points <= i.problem.max_points for i in items)
    pb = by_id["PB-Advanced-001"]
    assert pb.problem.reference_solution and "(Partial)" in (pb.problem.grading_guidelines or "")
    assert by_id["IMO2025-1"].problem.reference_solution is None


@needs_data
def test_limit_and_data_root() -> None:
    assert len(load_suite("putnam2024", data_dir=DATA, limit=3)) == 3
    assert data_root(DATA) == DATA
    assert data_root().samefile(DATA)  # found from the repository root


def test_data_root_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data folder not found"):
        data_root(tmp_path / "nope")


def test_missing_suite_data(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data for suite 'opc' not found"):
        load_suite("opc", data_dir=tmp_path)


def test_unknown_suite() -> None:
    with pytest.raises(InputError, match=r"unknown suite 'imo1959'.*imo2025"):
        get_suite("imo1959")
    assert {
        "imo2025",
        "cmo2024",
        "cmo2025",
        "putnam2024",
        "proofbench-basic",
        "proofbench-advanced",
        "usamo2025",
        "opc",
        "dsmv2-human",
        "imo-gradingbench",
    } <= set(SUITES)


GRADINGBENCH_COLUMNS = [
    "Grading ID",
    "Problem ID",
    "Problem",
    "Solution",
    "Grading guidelines",
    "Response",
    "Points (0-7)",
    "Reward (Incorrect/Partial/Almost/Correct)",
    "Problem Source",
]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_imo_gradingbench_by_path(tmp_path: Path) -> None:
    rows = [
        [
            "GB-1",
            "PB-Basic-001",
            "Find all f.",
            "f = 0.",
            "(Partial) guess",
            "Proof A, line 1\nline 2",
            "7",
            "Correct",
            "IMO 2019",
        ],
        [
            "GB-2",
            "PB-Basic-001",
            "Find all f.",
            "f = 0.",
            "(Partial) guess",
            "Proof B",
            "6",
            "Almost",
            "IMO 2019",
        ],
        [
            "GB-3",
            "PB-Basic-002",
            "Show x >= 0.",
            "Trivial.",
            "",
            "Proof C",
            "",
            "Partial",
            "Novel",
        ],
        [
            "GB-4",
            "PB-Basic-002",
            "Show x >= 0.",
            "Trivial.",
            "",
            "Proof D",
            "0",
            "incorrect",
            "Novel",
        ],
    ]
    path = _write_csv(tmp_path / "gradingbench.csv", GRADINGBENCH_COLUMNS, rows)
    items = load_suite("imo-gradingbench", source=path)
    assert [i.id for i in items] == ["GB-1", "GB-2", "GB-3", "GB-4"]
    assert [i.human_points for i in items] == [7, 6, 1, 0]
    assert [i.meta["bucket"] for i in items] == [
        "Correct",
        "Almost",
        "Partial",
        "Incorrect",
    ]
    assert items[0].proof == "Proof A, line 1\nline 2" and items[0].problem.id == "PB-Basic-001"
    assert items[0].problem.reference_solution == "f = 0." and items[0].problem.grading_guidelines == "(Partial) guess"
    assert items[2].problem.grading_guidelines is None and items[0].meta["source"] == "IMO 2019"
    assert len(load_suite("imo-gradingbench", source=str(path), limit=2)) == 2
    with pytest.raises(InputError, match="no copy in the data folder"):
        load_suite("imo-gradingbench")


def test_gradingbench_bad_bucket(tmp_path: Path) -> None:
    rows = [["GB-1", "P1", "Problem.", "", "", "Proof", "3", "Excellent", "x"]]
    path = _write_csv(tmp_path / "bad.csv", GRADINGBENCH_COLUMNS, rows)
    with pytest.raises(InputError, match="record 2: unknown reward bucket 'Excellent'"):
        load_suite("imo-gradingbench", source=path)


def test_problems_file_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "mine.jsonl"
    records = [
        {"id": "a", "problem": "Prove 1+1=2.", "solution": "Count.", "level": "easy"},
        {"question": "Prove 2+2=4.", "max_points": 10},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    items = load_problems_file(jsonl)
    assert [i.problem.id for i in items] == ["a", "mine-2"]
    assert items[0].problem.reference_solution == "Count." and items[0].meta == {"level": "easy"}
    assert items[1].problem.max_points == 10
    assert {i.problem.max_points for i in load_problems_file(jsonl, max_points=21)} == {21}
    table = _write_csv(
        tmp_path / "mine.csv",
        ["Problem ID", "Problem", "Grading guidelines", "Short Answer"],
        [["X-1", "Show it.", "(Partial) half", "42"], ["X-2", "Show more.", "", ""]],
    )
    rows = load_suite("problems", source=table)
    assert [i.problem.id for i in rows] == ["X-1", "X-2"]
    assert rows[0].problem.grading_guidelines == "(Partial) half" and rows[0].meta == {"short_answer": "42"}


def test_custom_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_problems_file(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="not found"):
        load_graded_file(tmp_path / "missing.csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        load_problems_file(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "problem": "x"}\n{"id": "a", "problem": "y"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="duplicate item id 'a'"):
        load_problems_file(dup)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "a", "problem": "  "}\n', encoding="utf-8")
    with pytest.raises(InputError, match="record 1"):
        load_problems_file(empty)


def test_graded_file_scales(tmp_path: Path) -> None:
    points = tmp_path / "points.jsonl"
    points.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "p1", "problem": "P", "proof": "A", "human_points": 7},
                {
                    "id": "p2",
                    "problem": "P",
                    "proof": "B",
                    "human_points": 3.5,
                    "model_id": "m",
                },
            ]
        ),
        encoding="utf-8",
    )
    items = load_graded_file(points)
    assert [i.human_points for i in items] == [7, 3.5] and items[1].meta == {"model_id": "m"}
    unit = _write_csv(
        tmp_path / "unit.csv",
        ["problem", "response", "score", "max_points"],
        [["P", "A", "1", "10"], ["P", "B", "0.5", "10"], ["P", "C", "0", "10"]],
    )
    items = load_graded_file(unit)  # every score in [0, 1]: read as fractions
    assert [i.human_points for i in items] == [10, 5, 0] and [i.id for i in items] == [
        "unit-2",
        "unit-3",
        "unit-4",
    ]
    assert [i.human_points for i in load_graded_file(unit, scale="points")] == [
        1,
        0.5,
        0,
    ]
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"problem": "P", "proof": "A", "verdict": "correct"},
                {"problem": "P", "proof": "B", "verdict": "Almost"},
                {"problem": "P", "proof": "C", "verdict": "incorrect"},
            ]
        ),
        encoding="utf-8",
    )
    assert [i.human_points for i in load_graded_file(labels, score_column="verdict")] == [7, 6, 0]
    with pytest.raises(InputError, match="no human score column"):
        load_graded_file(labels)
    with pytest.raises(InputError, match="human_points 7 is outside 0-1"):
        load_graded_file(points, scale="unit")


@needs_data
def test_graded_file_reads_dsmv2_shape() -> None:
    items = load_graded_file(DATA / "dsmv2" / "outputs" / "Putnam2024.jsonl", max_points=10, scale="points")
    assert [i.problem.id for i in items][:2] == ["Putnam2024-A1", "Putnam2024-A2"]
    items = load_graded_file(DATA / "dsmv2" / "outputs" / "CMO2024.jsonl", max_points=21, scale="points")
    assert len(items) == 6 and items[5].human_points == 9 and items[5].problem.id == "CMO2024-6"
    assert items[5].recorded == {"average_automatic_rating": 0.7109375} and items[5].proof


def test_hf_source_needs_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails without touching the network
    with pytest.raises(MissingDependencyError, match=r"proofcritic\[hf\]"):
        load_suite("imo-gradingbench", source="hf:someone/imo-gradingbench")
    with pytest.raises(MissingDependencyError, match="datasets"):
        load_problems_file("someone/problems")
