"""Bad options and values: one line and exit status 2 on the command line, a 4xx JSON error
naming the field in the service; lone surrogates and over-long texts are input errors (final in
a batch, one line for a file, 413 in the service)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scripted import ScriptedBackend, generation_text, verification_text

from proofcritic.cli import main
from proofcritic.grading import grade_jsonl
from proofcritic.io import DEFAULT_MAX_INPUT_CHARS, input_limit, iter_jsonl
from proofcritic.llm import Model
from proofcritic.verifier import Verifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROBLEM, PROOF = str(EXAMPLES / "problem.md"), str(EXAMPLES / "proof_flawed.md")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, list[str]]:
    """``proofcritic ARGS`` through the real entry point, in this process: (status, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["proofcritic", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err.strip().splitlines()


GRADE = ["grade", "--problem", PROBLEM, "--proof", PROOF]
LABEL = ["label", "--input", "in.jsonl", "--output", "out.jsonl", "--review", "review.jsonl"]
META = ["meta-verify", "--problem", PROBLEM, "--proof", PROOF, "--verification", PROOF]
SOLVE = ["solve", "--problem", PROBLEM]
LEAN_PROVE = ["lean-prove", "--input", "in.csv", "--output", "out.jsonl"]
SERVE_MODEL = ["serve-model", "--engine", "vllm", "--model", "m"]

BAD_OPTIONS = [
    # the shared model options, on several commands
    (GRADE, "--concurrency", "-1"),
    (GRADE, "--max-tokens", "-5"),
    (GRADE, "--temperature", "-3"),
    (GRADE, "--temperature", "nan"),
    (GRADE, "--top-p", "0"),
    (GRADE, "--top-p", "1.5"),
    (GRADE, "--seed", "-1"),
    (GRADE, "--max-input-chars", "-1"),
    (META, "--temperature", "9"),
    (LABEL, "--max-tokens", "0"),
    (SOLVE, "--concurrency", "0"),
    (["eval", "grade", "--suite", "opc"], "--top-p", "-0.5"),
    (["serve"], "--seed", "-2"),
    # each command's own numbers
    (GRADE, "-n", "0"),
    (GRADE, "--max-points", "0"),
    (GRADE, "--tool-timeout", "0"),
    (META, "-n", "0"),
    (META, "--index", "0"),
    (LABEL, "--n", "0"),
    (LABEL, "--m", "0"),
    (LABEL, "--k", "0"),
    (LABEL, "--confirm-at", "2"),
    (LABEL, "--max-points", "-7"),
    (LABEL, "--max-calls", "0"),
    (SOLVE, "--samples", "0"),
    (SOLVE + ["--strategy", "search"], "--top-k", "-2"),
    (SOLVE + ["--strategy", "search"], "--set", "rounds=-1"),
    (SOLVE + ["--strategy", "agent"], "--set", "seed=-1"),
    (SOLVE + ["--strategy", "critic"], "--tool-timeout", "0"),
    (SOLVE, "--max-calls", "-1"),
    (SOLVE, "--parallel-problems", "0"),
    (["eval", "solve", "--suite", "imo2025"], "-k", "0"),
    (["eval", "solve", "--suite", "imo2025", "--strategy", "refine"], "--set", "max_iters=0"),
    (["eval", "grade", "--suite", "opc"], "-n", "0"),
    (["eval", "grade", "--suite", "opc"], "--limit", "0"),
    (["lean-check", "x.lean"], "--timeout", "0"),
    (["lean-check", "x.lean"], "--concurrency", "0"),
    (LEAN_PROVE, "--attempts", "0"),
    (LEAN_PROVE, "--samples", "0"),
    (LEAN_PROVE, "--limit", "0"),
    (LEAN_PROVE, "--lean-timeout", "-1"),
    (LEAN_PROVE, "--lean-concurrency", "0"),
    (["serve"], "--port", "70000"),
    (["serve"], "--max-jobs", "0"),
    (["serve"], "--max-body-bytes", "10"),
    (["serve"], "--request-max-calls", "0"),
    (["serve"], "--max-retries", "-1"),
    (["serve"], "--max-input-chars", "-5"),
    (SERVE_MODEL, "--port", "-1"),
    (SERVE_MODEL, "--timeout", "0"),
    (["cotrain", "--config", "c.yaml", "--workdir", "w"], "-n", "0"),
]


@pytest.mark.parametrize("command, option, value", BAD_OPTIONS, ids=[f"{c[0]} {o} {v}" for c, o, v in BAD_OPTIONS])
def test_a_bad_value_is_one_line_and_status_2(command, option, value, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    status, lines = run_cli([*command, option, value], capsys, monkeypatch)
    assert status == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    named = value.split("=")[0] if option == "--set" else option
    assert named in lines[0], lines


def test_k_above_n_and_the_thresholds_are_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    status, lines = run_cli([*LABEL, "--n", "2", "--k", "3"], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1 and "k (3) must be at most n (2)" in lines[0]
    status, lines = run_cli([*LABEL, "--confirm-at", "0.5", "--refute-at", "0.5"], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1 and "refute_at" in lines[0]


def test_usage_errors_are_one_line_too(capsys, monkeypatch):
    status, lines = run_cli(["grade", "--no-such-option"], capsys, monkeypatch)
    assert status == 2 and lines == ["error: No such option: --no-such-option"]
    status, lines = run_cli(["grade", "--problem", PROBLEM], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1 and "--proof" in lines[0]


# -- lone surrogates ------------------------------------------------------------------------------
def _scripted_verifier() -> tuple[ScriptedBackend, Verifier]:
    def script(call):
        return verification_text(1) if call.role == "verify" else generation_text("A proof.", 1)

    backend = ScriptedBackend(script)
    return backend, Verifier(Model(backend, cache=None), score_mode="text")


def test_iter_jsonl_gives_an_input_error_for_a_lone_surrogate(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "a", "problem": "P", "proof": "x \\ud800 y"}\n'
        '{"id": "b", "problem": "P", "proof": "an emoji \\ud83d\\ude00 is a pair"}\n'
        '{"id": "c", "problem": {"statement": "P", "reference_solution": "\\udfff"}, "proof": "x"}\n'
    )
    records = list(iter_jsonl(source))
    assert "lone surrogate" in str(records[0][1]) and "'proof'" in str(records[0][1])
    assert records[1][1]["proof"] == "an emoji \U0001f600 is a pair"
    assert "'problem.reference_solution'" in str(records[2][1])


async def test_a_surrogate_line_is_a_final_input_error_not_retried(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "bad", "problem": "P", "proof": "x \\ud800"}\n{"id": "good", "problem": "P", "proof": "A proof."}\n'
    )
    out = tmp_path / "out.jsonl"
    backend, verifier = _scripted_verifier()
    await grade_jsonl(verifier, source, out)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "bad" not in records  # an input error is recorded under its line: the id could not be trusted
    bad = records["line-1"]
    assert bad["error_kind"] == "input" and "lone surrogate" in bad["error"]
    assert records["good"]["aggregate"]["mean"] == 1
    lines, calls = out.read_text(), len(backend.calls)
    again = await grade_jsonl(verifier, source, out)
    assert again.skipped == 2 and out.read_text() == lines and len(backend.calls) == calls


def test_a_surrogate_in_a_problem_file_is_one_line(tmp_path, capsys, monkeypatch):
    problem = tmp_path / "p.json"
    problem.write_text('{"statement": "Prove \\ud800 this."}')
    status, lines = run_cli(["grade", "--problem", str(problem), "--proof", PROOF], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1 and "lone surrogate" in lines[0]


# -- the input size limit -------------------------------------------------------------------------
def _longest_real_proof() -> int:
    lengths = [len(json.loads(line)["proof"]) for line in (DATA / "opc" / "opc_test_sample100.jsonl").open()]
    for path in (DATA / "dsmv2" / "outputs").glob("*.jsonl"):
        lengths += [len(json.loads(line)["model_prediction"]["proof"]) for line in path.open()]
    return max(lengths)


@pytest.mark.skipif(not (DATA / "opc").exists(), reason="../shared/data is not here")
def test_the_default_limit_fits_the_longest_real_proof_with_room():
    assert 4 * _longest_real_proof() < DEFAULT_MAX_INPUT_CHARS < 1_000_000


def test_an_over_long_proof_file_is_one_line(tmp_path, capsys, monkeypatch):
    proof = tmp_path / "long.md"
    proof.write_text("Step. " * 400)  # 2,400 characters
    status, lines = run_cli([*GRADE[:3], "--proof", str(proof), "--max-input-chars", "1000"], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1
    assert "2,400 characters, over the limit of 1,000" in lines[0] and "--max-input-chars" in lines[0]
    monkeypatch.setenv("PROOFCRITIC_MAX_INPUT_CHARS", "2000")  # the environment sets it too
    status, lines = run_cli([*GRADE[:3], "--proof", str(proof)], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1 and "over the limit of 2,000" in lines[0]


def test_the_default_limit_refuses_a_5mb_proof(tmp_path, capsys, monkeypatch):
    proof = tmp_path / "huge.md"
    proof.write_text("x = y. " * 750_000)
    status, lines = run_cli([*GRADE[:3], "--proof", str(proof)], capsys, monkeypatch)
    assert status == 2 and len(lines) == 1 and f"over the limit of {DEFAULT_MAX_INPUT_CHARS:,}" in lines[0]


async def test_an_over_long_batch_item_is_an_input_error_record(tmp_path):
    source = tmp_path / "in.jsonl"
    items = [
        {"id": "long-proof", "problem": "P", "proof": "Step. " * 400},
        {"id": "long-reference", "problem": "P", "reference_solution": "R" * 1500, "proof": "A proof."},
        {"id": "fine", "problem": "P", "proof": "A proof."},
    ]
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    out = tmp_path / "out.jsonl"
    backend, verifier = _scripted_verifier()
    with input_limit(1000):
        await grade_jsonl(verifier, source, out)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (
        records["long-proof"]["error_kind"] == "input"
        and "the proof is 2,400 characters" in records["long-proof"]["error"]
    )
    assert (
        records["long-reference"]["error_kind"] == "input"
        and "reference solution" in records["long-reference"]["error"]
    )
    assert "error" not in records["fine"]
    assert all("A proof." in c.prompt for c in backend.calls)  # only the fine item reached the model


# -- the service --------------------------------------------------------------------------------
@pytest.fixture
def service(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app

    backend, _ = _scripted_verifier()
    settings = ServerSettings(model=Model(backend, cache=None), db_path=tmp_path / "jobs.sqlite", max_input_chars=5000)
    with TestClient(create_app(settings)) as client:
        yield client


GOOD = {"problem": "Show that 2 + 2 = 4.", "proof": "Compute it."}


@pytest.mark.parametrize(
    "route, body, field",
    [
        ("/v1/grade", GOOD | {"sampling": {"temperature": -1}}, "sampling.temperature"),
        ("/v1/grade", GOOD | {"sampling": {"top_p": 0}}, "sampling.top_p"),
        ("/v1/grade", GOOD | {"sampling": {"max_tokens": 0}}, "sampling.max_tokens"),
        ("/v1/grade", GOOD | {"sampling": {"seed": -1}}, "sampling.seed"),
        ("/v1/grade", GOOD | {"n": 0}, "n"),
        ("/v1/grade", GOOD | {"max_points": 0}, "max_points"),
        ("/v1/grade", GOOD | {"max_calls": 0}, "max_calls"),
        ("/v1/label", GOOD | {"n": 2, "k": 3}, "k (3) must be at most n (2)"),
        ("/v1/label", GOOD | {"confirm_at": 1.5}, "confirm_at"),
        ("/v1/solve", {"problem": "P", "strategy": "search", "params": {"rounds": -1}}, "rounds"),
        ("/v1/solve", {"problem": "P", "strategy": "agent", "params": {"seed": -1}}, "seed"),
        (
            "/v1/chat/completions",
            {
                "model": "proofcritic/grade",
                "messages": [{"role": "user", "content": "P\n## Proof\nQ"}],
                "temperature": -1,
            },
            "temperature",
        ),
        (
            "/v1/chat/completions",
            {"model": "proofcritic/refine", "messages": [{"role": "user", "content": "P"}], "seed": -3},
            "seed",
        ),
    ],
)
def test_the_service_refuses_bad_values_naming_the_field(service, route, body, field):
    answer = service.post(route, json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]["message"]


def test_the_service_refuses_surrogates_and_over_long_texts(service):
    body = json.dumps({"problem": "P", "proof": "x \ud800"})  # ASCII JSON: the escape \ud800 without its pair
    assert "\\ud800" in body
    answer = service.post("/v1/grade", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("proof: ")  # pydantic's own

    answer = service.post("/v1/grade", json={"problem": "P", "proof": "Step. " * 1000})
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "input_too_large" and "over the limit of 5,000" in error["message"]
    answer = service.post(
        "/v1/chat/completions",
        json={"model": "proofcritic/refine", "messages": [{"role": "user", "content": "Prove it. " * 600}]},
    )
    assert answer.status_code == 413 and "problem statement" in answer.json()["error"]["message"]
    assert service.post("/v1/grade", json={"problem": "P", "proof": "Step. " * 800}).status_code == 202


async def test_an_over_long_eval_item_is_an_input_error_record(tmp_path):
    from proofcritic.benchmarks import GradeItem, RunFolder
    from proofcritic.benchmarks.eval_grade import eval_grade
    from proofcritic.types import Problem

    items = [
        GradeItem(id="long", problem=Problem(statement="P"), proof="Step. " * 400, human_points=7),
        GradeItem(id="fine", problem=Problem(statement="P"), proof="A proof.", human_points=7),
    ]
    backend, verifier = _scripted_verifier()
    with input_limit(1000):
        await eval_grade(items, RunFolder(tmp_path / "run"), verifier=verifier, n=1)
    records = {r["id"]: r for r in RunFolder(tmp_path / "run").records()}
    assert records["long"]["error_kind"] == "input" and "over the limit of 1,000" in records["long"]["error"]
    assert records["fine"].get("error") is None and len(backend.calls) == 1


def test_sampling_options_are_one_model_for_the_service_and_the_command_line():
    """Issue 15: the service's ``sampling`` is SamplingOptions, GenerateConfig extends it, and
    each sampling flag of the command line is one of its fields, with its words, its bounds and
    the roles' default; the flags build it in one helper."""
    import click
    import typer.main

    from proofcritic._roles import DEFAULT_CONFIG
    from proofcritic.cli import app
    from proofcritic.cli._common import sampling
    from proofcritic.llm import GenerateConfig, SamplingOptions
    from proofcritic.server._service import GradeRequest

    assert GradeRequest.model_fields["sampling"].annotation is SamplingOptions
    assert issubclass(GenerateConfig, SamplingOptions)
    root = typer.main.get_command(app)
    grade = root.get_command(click.Context(root), "grade")
    flags = {p.name: p for p in grade.params if p.name in SamplingOptions.model_fields}
    assert sorted(flags) == sorted(SamplingOptions.model_fields)
    for name, field in SamplingOptions.model_fields.items():
        option = flags[name]
        assert option.opts == ["--" + name.replace("_", "-")]
        assert field.description.removesuffix(".") in option.help
        default = getattr(DEFAULT_CONFIG, name)
        assert (f"(default: {default})" in option.help) == (default is not None), name
    given = sampling(0.5, None, None, 3)
    assert given == SamplingOptions(temperature=0.5, seed=3).as_config() and given.model_fields_set == {
        "temperature",
        "seed",
    }
    with pytest.raises(ValueError, match="less than or equal to 5"):
        SamplingOptions(temperature=6)
