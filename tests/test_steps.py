"""The step splitter (issue #18): offsets reproduce the text on every proof and solution in
../shared/data, nothing but whitespace and separator lines falls between steps, and the steps do
not move under whitespace changes (property tests on generated texts, seeded perturbations)."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofcritic.steps import STEP_MODES, Step, join_steps, normalized, split_steps

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder not found: {DATA}")
_GAP = re.compile(r"^(?:\s|[-=_*~])*$")


def shared_texts() -> list[tuple[str, str]]:
    """(name, text) of every proof and solution in ../shared/data."""
    texts: list[tuple[str, str]] = []
    for line_no, line in enumerate((DATA / "opc" / "opc_test_sample100.jsonl").read_text().splitlines()):
        row = json.loads(line)
        texts.append((f"opc:{line_no}:proof", row["proof"]))
        texts += [(f"opc:{line_no}:reference:{i}", ref) for i, ref in enumerate(row["reference_solutions"] or [])]
    for path in sorted((DATA / "dsmv2" / "outputs").glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text().splitlines()):
            row = json.loads(line)
            texts.append((f"{path.name}:{line_no}:proof", row["model_prediction"]["proof"]))
            if row.get("solution"):
                texts.append((f"{path.name}:{line_no}:solution", row["solution"]))
    for name in ("proofbench_v2.csv", "lean_proof_bench.csv"):
        with (DATA / "imobench" / name).open(newline="") as handle:
            texts += [(f"{name}:{row['Problem ID']}", row["Solution"]) for row in csv.DictReader(handle)]
    for path in sorted((DATA / "matharena-usamo2025" / "solutions").glob("*.tex")):
        texts.append((f"usamo2025:{path.name}", path.read_text()))
    return [(name, text) for name, text in texts if text and text.strip()]


def check_steps(text: str, steps: list[Step]) -> None:
    """Offsets reproduce the text; steps are in order, stripped, not empty; only whitespace and
    separator characters lie between (and around) them."""
    assert [s.index for s in steps] == list(range(len(steps)))
    position = 0
    for step in steps:
        assert text[step.start : step.end] == step.text
        assert step.text and step.text == step.text.strip()
        assert step.start >= position
        assert _GAP.match(text[position : step.start]), (position, step.start, text[position : step.start])
        position = step.end
    assert _GAP.match(text[position:])


def perturb(text: str, rng: random.Random) -> str:
    """The same text with its whitespace changed the ways the splitter promises to ignore."""
    out = []
    for original in text.split("\n"):
        line = re.sub(r"[ \t]+", lambda _: rng.choice([" ", "  ", "\t", " \t "]), original)
        if line.strip() and rng.random() < 0.3:
            line = rng.choice([" ", "   ", "\t"]) + line.lstrip(" \t")
        if rng.random() < 0.3:
            line += rng.choice([" ", "  ", "\t"])
        out.append(line)
    lines = out
    result = []
    for i, line in enumerate(lines):
        result.append(line)
        if not line.strip() and i and rng.random() < 0.5:  # one more blank line where there is one
            result.append(rng.choice(["", " ", "\t"]))
    return (rng.choice(["\n", "\r\n"])).join(result)


def shape(steps: list[Step]) -> list[str]:
    return [normalized(s.text) for s in steps]


@needs_data
def test_every_shared_proof_and_solution_splits_with_exact_offsets():
    texts = shared_texts()
    assert len(texts) >= 300  # 100 OPC proofs, their references, 84 dsmv2 proofs, 120 ProofBench solutions ...
    rng = random.Random(18)
    counts = []
    for name, text in texts:
        for mode in STEP_MODES:
            steps = split_steps(text, mode)
            check_steps(text, steps)
            assert steps, name
            # stable under whitespace changes
            assert shape(split_steps(perturb(text, rng), mode)) == shape(steps), (name, mode)
        counts.append(len(split_steps(text)))
    assert max(counts) > 20 and sum(counts) / len(counts) > 5  # real proofs split into many steps


@needs_data
def test_a_real_proof_keeps_its_displays_and_headings():
    rows = [json.loads(line) for line in (DATA / "opc" / "opc_test_sample100.jsonl").read_text().splitlines()]
    proof = next(r["proof"] for r in rows if r["human_annotations"] and "(c)  Tangency." in r["proof"])
    steps = split_steps(proof)
    texts = [s.text for s in steps]
    # the display after "denote by" and the sentence after it are one step
    denote = next(t for t in texts if "denote by" in t)
    assert "\\mathcal E_{k}=\\{" in denote and "the ellipse whose foci" in denote
    # the section heading "1.  An ellipse ... exists" is kept with what follows it
    heading = next(t for t in texts if t.startswith("1.  An ellipse"))
    assert "Put" in heading
    # items (a), (b), (c) start steps of their own
    assert sum(t.startswith(("(a)", "(b)", "(c)")) for t in texts) == 3
    # a display standing between blank lines joins its sentence, and the lower-case rest follows
    segments = next(t for t in texts if t.startswith("The six consecutive segments"))
    assert "AF=AB" in segments and "are all tangent" in segments


def test_modes_and_options():
    text = (
        "Proof.\n\n1. $x=2$\n2. $y = 3$\n3. $z=4$\n\nHence done.\n\n## Lemma 1\n\nLet $a$ be\n$$a^2$$\n"
        "where $a>0$.\n\n   \\[ b \\]\n\nso we get it.\n\n-----\n\nThe end.\nReally."
    )
    assert [s.text for s in split_steps(text)] == [
        "Proof.",
        "1. $x=2$",
        "2. $y = 3$",
        "3. $z=4$",
        "Hence done.",
        "## Lemma 1\n\nLet $a$ be\n$$a^2$$\nwhere $a>0$.\n\n   \\[ b \\]\n\nso we get it.",
        "The end.\nReally.",
    ]
    assert [s.text for s in split_steps(text, "blank")][1] == "1. $x=2$\n2. $y = 3$\n3. $z=4$"
    assert [s.text for s in split_steps(text, "paragraphs", items=False)][1] == "1. $x=2$\n2. $y = 3$\n3. $z=4$"
    assert [s.text for s in split_steps(text, "lines")][-2:] == ["The end.", "Really."]
    no_displays = [s.text for s in split_steps(text, displays=False)]
    assert "\\[ b \\]" in no_displays and "so we get it." in no_displays
    no_headings = [s.text for s in split_steps(text, headings=False)]
    assert "## Lemma 1" in no_headings
    # a blank line inside a display never cuts it, in any mode
    display = "We have\n\\begin{align*}\na &= b\n\n&= c\n\\end{align*}\nas claimed.\n\nNext."
    for mode in STEP_MODES:
        assert [s.text for s in split_steps(display, mode)][-1] == "Next."
        assert split_steps(display, mode)[0].text.endswith("as claimed.")
    assert split_steps("") == [] and split_steps("  \n\n ---- \n") == []
    with pytest.raises(ValueError, match="step mode must be one of"):
        split_steps(text, "words")  # type: ignore[arg-type]


def test_join_steps_gives_offsets_into_the_joined_text():
    text, steps = join_steps(["  First step.\n", "Second $x$.", "Third."])
    assert text == "First step.\n\nSecond $x$.\n\nThird."
    check_steps(text, steps)
    assert [s.text for s in steps] == ["First step.", "Second $x$.", "Third."]
    assert steps[2].number == 3
    with pytest.raises(ValueError):
        Step(index=0, text="abc", start=0, end=2)


# --- property tests -------------------------------------------------------------------------

_WORDS = st.sampled_from(["we", "have", "$x$", "so", "Hence", "$a+b=c$", "\\(y\\)", "prime", "Thus", "it"])
_SENTENCE = st.builds(
    lambda words, end: " ".join(words) + end, st.lists(_WORDS, min_size=1, max_size=6), st.sampled_from([".", "", ":"])
)
_LINE = st.one_of(
    _SENTENCE,
    st.builds(lambda n, s: f"{n}. {s}", st.integers(1, 12), _SENTENCE),
    st.builds(lambda c, s: f"({c}) {s}", st.sampled_from("abc"), _SENTENCE),
    st.builds(lambda s: f"- {s}", _SENTENCE),
    st.builds(lambda s: f"## {s}", _SENTENCE),
    st.just("\\[ x^2 + y^2 \\]"),
    st.just("$$\n\\sum_i a_i\n\n= 1\n$$"),
    st.just("\\begin{align*}\na &= b \\\\\n&= c\n\\end{align*}"),
    st.just("---------"),
    st.just(""),
    st.just("```\ncode\n\n---\n```"),
)
_TEXT = st.builds("\n".join, st.lists(_LINE, max_size=25))


@settings(max_examples=300, deadline=None)
@given(_TEXT, st.sampled_from(STEP_MODES), st.integers(0, 2**32 - 1))
def test_generated_texts_split_exactly_and_stably(text, mode, seed):
    steps = split_steps(text, mode)
    check_steps(text, steps)
    if text.strip(" \n-"):
        assert steps
    assert shape(split_steps(perturb(text, random.Random(seed)), mode)) == shape(steps)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .1()$\\[]{}#-*\n\t\r")), max_size=200), st.sampled_from(STEP_MODES))
def test_any_text_splits_without_losing_content(text, mode):
    check_steps(text, split_steps(text, mode))


def test_number_and_mark_steps():
    from proofcritic.steps import mark_steps, number_steps

    text = "Let $x = 1$.\n\n  Then $x^2 = 1$.\n\nDone."
    steps = split_steps(text)
    assert number_steps(steps) == "[Step 1]\nLet $x = 1$.\n\n[Step 2]\nThen $x^2 = 1$.\n\n[Step 3]\nDone."
    marked = mark_steps(text, steps, ["<1> ", "", "<3> "])
    assert marked == "<1> Let $x = 1$.\n\n  Then $x^2 = 1$.\n\n<3> Done."  # the text itself is kept
    with pytest.raises(ValueError):
        mark_steps(text, steps, ["only one"])


def test_a_sentence_ending_in_math_is_no_heading():
    text = "Then $x = 5$\n\nSo \\(y = 2\\)\n\nLemma 1\n\nIts proof."
    assert [s.text for s in split_steps(text)] == ["Then $x = 5$", "So \\(y = 2\\)", "Lemma 1\n\nIts proof."]
