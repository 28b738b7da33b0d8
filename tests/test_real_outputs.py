"""The parsers against every real DeepSeekMath-V2 output in ``../shared/data/dsmv2/outputs``.

What the data hold (checked below, record by record): each ``model_prediction.proof`` is the
*extracted* proof, the body of the model's ``## Solution`` section, saved without the
``## Solution`` header and without the ``## Self Evaluation`` section (no verifier marker, no
self-score appears in any record). Two proofs open with a bold ``**Solution.**`` line. Many
proofs end with a boxed *answer* (``\\boxed{3}``, ``\\boxed{n=1}``), never a valid score.

So the tests assert two things: (1) on the raw records, ``parse_generation`` reports the
missing self-evaluation as a format failure, keeps the proof text and never mistakes an
answer box for a self-score; (2) each real proof, put back into the generator protocol
(several header spellings, both score-marker spellings), parses back to exactly the same
proof and self-score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proofcritic.generator import parse_generation
from proofcritic.parsing import (
    EVALUATION_MARKER,
    EVALUATION_MARKER_RE,
    SCORE_MARKER,
    SCORE_MARKER_RE,
    find_headers,
    read_score,
)
from proofcritic.verifier import parse_issues, parse_verification

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUTPUTS = DATA / "dsmv2" / "outputs"
EXPECTED_COUNTS = {
    "CMO2024.jsonl": 6,
    "IMO-ProofBench-Advanced.jsonl": 30,
    "IMO-ProofBench-Basic.jsonl": 30,
    "IMO2025.jsonl": 6,
    "Putnam2024.jsonl": 12,
}
BOLD_SOLUTION_LINE = {("IMO-ProofBench-Advanced.jsonl", 11), ("IMO-ProofBench-Basic.jsonl", 5)}

pytestmark = pytest.mark.skipif(not OUTPUTS.is_dir(), reason=f"real DeepSeekMath-V2 outputs not found at {OUTPUTS}")


def _records() -> list[tuple[str, int, dict]]:
    if not OUTPUTS.is_dir():
        return []
    rows = []
    for path in sorted(OUTPUTS.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                if line.strip():
                    rows.append((path.name, index, json.loads(line)))
    return rows


RECORDS = _records()
IDS = [f"{name}:{index}" for name, index, _ in RECORDS]


def _score_of(rating: float) -> float:
    """The verifier's mean rating rounded to the nearest score: a realistic self-score."""
    return min((0.0, 0.5, 1.0), key=lambda s: abs(s - rating))


def test_every_file_and_record_is_there():
    counts: dict[str, int] = {}
    for name, _, _ in RECORDS:
        counts[name] = counts.get(name, 0) + 1
    assert counts == EXPECTED_COUNTS


@pytest.mark.parametrize(("name", "index", "record"), RECORDS, ids=IDS)
def test_raw_record_is_a_bare_proof(name, index, record):
    proof = record["model_prediction"]["proof"]
    assert EVALUATION_MARKER_RE.search(proof) is None and SCORE_MARKER_RE.search(proof) is None
    headers = find_headers(proof)
    if (name, index) in BOLD_SOLUTION_LINE:
        assert [kind for kind, _, _ in headers] == ["solution"] and proof.startswith("**Solution.**")
    else:
        assert headers == []

    generation = parse_generation(proof)
    assert not generation.format_ok
    assert "missing '## Self Evaluation' section" in (generation.format_error or "")
    assert generation.self_score == 0.0 and generation.self_analysis == ""
    if (name, index) in BOLD_SOLUTION_LINE:
        assert generation.proof == proof.split("\n", 1)[1].strip()
    else:
        assert generation.proof == proof.strip()
    # the last box of a proof is an answer, never a score in {0, 0.5, 1}
    assert read_score(proof)[0] is None
    # a proof has no issue list
    assert parse_issues(proof) == []


@pytest.mark.parametrize(("name", "index", "record"), RECORDS, ids=IDS)
def test_real_proof_in_the_protocol_round_trips(name, index, record):
    prediction = record["model_prediction"]
    proof = prediction["proof"].strip()
    score = _score_of(prediction["average_automatic_rating"])
    header, evaluation_header, marker = [
        ("## Solution", "## Self Evaluation", SCORE_MARKER),
        ("**Solution**", "**Self Evaluation**", SCORE_MARKER.replace("overall", "overal")),
        ("### Solution:", "### Self-Evaluation", SCORE_MARKER),
    ][index % 3]
    analysis = "Step 1 is correct.\n\n### Issues\n\n- None"
    text = (
        f"<think>draft \\boxed{{0}}</think>{header}\n\n{proof}\n\n{evaluation_header}\n\n"
        f"{EVALUATION_MARKER}\n\n{analysis}\n\n{marker}\n\\boxed{{{score:g}}}\n"
    )
    generation = parse_generation(text)
    assert generation.format_ok, generation.format_error
    assert generation.proof == proof
    assert generation.self_score == score
    assert generation.self_analysis == analysis

    truncated = parse_generation(text[: len(text) // 2], "length")
    assert not truncated.format_ok and truncated.self_score == 0.0
    assert proof.startswith(truncated.proof[:100])


@pytest.mark.parametrize(("name", "index", "record"), RECORDS[::7], ids=IDS[::7])
def test_real_proof_quoted_in_a_verification(name, index, record):
    """A verification that quotes a whole real proof (boxes and headings included) still
    reads its own score, not the proof's answer boxes."""
    proof = record["model_prediction"]["proof"]
    text = (
        f"{EVALUATION_MARKER}\n\nThe solution reads:\n\n{proof}\n\n### Issues\n\n"
        f'- **Location:** "{proof.strip().splitlines()[-1][:40]}" | **Severity:** Justification Gap '
        f"| **Issue:** the last step is terse.\n\n{SCORE_MARKER}\n\\boxed{{0.5}}"
    )
    verification = parse_verification(text)
    assert verification.format_ok and verification.score == 0.5
    assert [issue.severity for issue in verification.issues] == ["justification_gap"]
