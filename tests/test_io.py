"""Reading user input: clear errors for bad files and lines, and resumable appends."""

from __future__ import annotations

import json

import pytest

from proofcritic.errors import InputError
from proofcritic.io import (
    JsonlAppender,
    iter_jsonl,
    problem_from_record,
    proof_from_record,
    read_done,
    read_problem,
    read_text,
)


def test_read_text_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_text(tmp_path / "nope.md", "proof file")
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        read_text(tmp_path / "empty.md")
    (tmp_path / "bin.md").write_bytes(b"\x89PNG\x00\x01")
    with pytest.raises(InputError, match="binary"):
        read_text(tmp_path / "bin.md")
    (tmp_path / "latin.md").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        read_text(tmp_path / "latin.md")


def test_read_problem_from_markdown_and_json(tmp_path):
    (tmp_path / "p1.md").write_text("Show that $1+1=2$.\n")
    (tmp_path / "ref.md").write_text("By Peano.")
    problem = read_problem(tmp_path / "p1.md", reference=tmp_path / "ref.md", max_points=10)
    assert problem.id == "p1" and problem.statement == "Show that $1+1=2$."
    assert problem.reference_solution == "By Peano." and problem.max_points == 10
    (tmp_path / "p2.json").write_text(json.dumps({"id": "x", "question": "Q?", "grading guidelines": "G"}))
    problem = read_problem(tmp_path / "p2.json")
    assert (problem.id, problem.statement, problem.grading_guidelines) == ("x", "Q?", "G")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        read_problem(tmp_path / "bad.json")


def test_records_to_problem_and_proof():
    assert problem_from_record({"problem": {"statement": "S", "max_points": 10}, "id": "a"}).max_points == 10
    with pytest.raises(InputError, match="no problem statement"):
        problem_from_record({"proof": "x"})
    with pytest.raises(InputError, match="empty"):
        proof_from_record({"proof": "   "})
    with pytest.raises(InputError, match="must be text"):
        proof_from_record({"proof": 3})


def test_iter_jsonl_reports_bad_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n\nnot json\n[1, 2]\n\xff\xfe\n{"b": 2}\n')
    rows = list(iter_jsonl(path))
    assert [n for n, _ in rows] == [1, 3, 4, 5, 6]
    assert rows[0][1] == {"a": 1} and rows[-1][1] == {"b": 2}
    assert all(isinstance(r, InputError) for _, r in rows[1:4])


def test_appender_cuts_a_partial_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2", "trunc')
    with JsonlAppender(path) as out:
        out.write({"id": "3"})
    assert path.read_text().splitlines() == ['{"id": "1"}', '{"id": "3"}']
    assert set(read_done(path)) == {"1", "3"}


def test_latest_values_keeps_the_last_record_of_each_id_in_one_pass(tmp_path):
    from proofcritic.io import latest_values

    path = tmp_path / "out.jsonl"
    lines = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}, {"no_id": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": "c", "v": 9', encoding="utf-8")
    calls = []

    def value(record):
        calls.append(record["id"])
        return record["v"] * 10

    assert latest_values(path, value) == {"a": 30, "b": 20}  # the torn last line is no record
    assert calls == ["a", "b", "a"]  # each record read once
    assert latest_values(tmp_path / "absent.jsonl", value) == {}
