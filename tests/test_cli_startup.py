"""Start-up of the command line (issue 14): the parser is built from modules that import nothing
heavier than typer, so `--help` and argument errors do not load the models, pydantic, numpy,
aiohttp, torch or the roles; the public Python API is unchanged, its names imported on first use.

Each start-up check runs a fresh interpreter and reads the modules it had imported when it
exited, ``sys.modules`` (timings are perf/cli_startup.py's, never a test's).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what building the parser, a help or an argument error must not import (top-level names
#: match their submodules too)
HEAVY = (
    "numpy",
    "pydantic",
    "aiohttp",
    "torch",
    "transformers",
    "openai",
    "jinja2",
    "asyncio",
    "proofcritic.generator",
    "proofcritic.benchmarks",
    "proofcritic.llm",
    "proofcritic.verifier",
    "proofcritic.meta_verifier",
    "proofcritic.pipelines",
    "proofcritic.types",
    "proofcritic.io",
    "proofcritic.grading",
    "proofcritic.promptset",
    "proofcritic.runner",
    "proofcritic.training",
)


def _heavy(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        m
        for m in modules
        if any(m == h or m.startswith(h + ".") for h in HEAVY)
        and not any(m == a or m.startswith(a + ".") for a in allowed)
    )


_MODULES = "MODULES-AT-EXIT"


def _run(args: list[str], code: str | None = None) -> tuple[int, str, set[str]]:
    """Run ``python -m proofcritic ARGS`` (or ``python -c CODE``): its exit status, its output
    (stdout and stderr) and the modules it had imported when it exited."""
    report = (
        f"import atexit, sys\natexit.register(lambda: print({_MODULES!r}, *sorted(sys.modules), file=sys.stderr))\n"
    )
    if code is None:
        code = f"sys.argv = ['proofcritic', *{args!r}]\nimport runpy\nrunpy.run_module('proofcritic', run_name='__main__')\n"
    done = subprocess.run(
        [sys.executable, "-c", report + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, COLUMNS="100"),
    )
    modules: set[str] = set()
    other = []
    for line in done.stderr.splitlines():
        if line.startswith(_MODULES):
            modules.update(line.split()[1:])
        else:
            other.append(line)
    assert modules, done.stderr
    return done.returncode, done.stdout + "\n".join(other), modules


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],  # no command: the help
        ["grade", "--help"],
        ["solve", "--help"],
        ["label", "--help"],
        ["eval", "--help"],
        ["lean-prove", "--help"],
        ["serve", "--help"],
        ["serve-model", "--help"],
        ["train", "sft", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(args):
    status, output, modules = _run(args)
    assert status in (0, 2), output  # no command: click's help, exit status 2
    assert "Usage:" in output
    assert "proofcritic.cli" in modules and "typer" in modules  # the parser was built
    assert _heavy(modules) == []


def test_argument_errors_import_nothing_heavy():
    status, output, modules = _run(["grade", "--no-such-option"])
    assert status == 2 and output.strip() == "error: No such option: --no-such-option"
    # typer itself may use pydantic to coerce values; none of proofcritic's heavy parts load
    assert _heavy(modules, allowed=("pydantic",)) == []
    status, output, modules = _run(["no-such-command"])
    assert status == 2 and "No such command" in output
    assert _heavy(modules) == []


def test_a_bound_error_loads_only_the_model_that_defines_the_bound():
    """``--temperature 9``: the bound is GenerateConfig's, whose module is imported for the check;
    not the Model wrapper, the cache, asyncio or the roles."""
    status, output, modules = _run(["grade", "--temperature", "9"])
    assert (
        status == 2
        and output.strip() == "error: Invalid value for '--temperature': Input should be less than or equal to 5"
    )
    assert {m for m in modules if m.startswith("proofcritic.llm")} == {"proofcritic.llm", "proofcritic.llm._types"}
    assert _heavy(modules, allowed=("pydantic", "proofcritic.llm")) == []
    status, output, _ = _run(["grade", "--max-points", "0"])
    assert status == 2 and output.strip() == "error: Invalid value for '--max-points': Input should be greater than 0"


def test_every_help_builds_without_heavy_modules_and_eval_lists_the_suites():
    """Every command's help in one process: nothing heavy until `eval solve|grade --help`, whose
    --suite help reads the registry then (its suites, as before), still without numpy."""
    code = (
        "import sys, typer.main\n"
        "from typer.testing import CliRunner\n"
        "from proofcritic.cli import app\n"
        "root = typer.main.get_command(app)\n"
        "paths = []\n"
        "def walk(c, p):\n"
        "    for name, sub in sorted(getattr(c, 'commands', {}).items()):\n"
        "        paths.append(p + [name]); walk(sub, p + [name])\n"
        "walk(root, [])\n"
        "runner = CliRunner()\n"
        "for p in paths:\n"
        "    if p[0] != 'eval' or len(p) == 1:\n"
        "        r = runner.invoke(app, p + ['--help'])\n"
        "        assert r.exit_code == 0, (p, r.output)\n"
        "print('BEFORE-EVAL', len(paths), sorted(sys.modules))\n"
        "for kind in ('solve', 'grade'):\n"
        "    r = runner.invoke(app, ['eval', kind, '--help'], env={'COLUMNS': '300'})\n"
        "    print('SUITES', kind, repr(r.output))\n"
        "print('AFTER-EVAL', sorted(sys.modules))\n"
    )
    status, output, _ = _run([], code=code)
    assert status == 0, output
    before = next(line for line in output.splitlines() if line.startswith("BEFORE-EVAL"))
    count = int(before.split()[1])
    assert count >= 20  # every command and subcommand was drawn
    assert _heavy(set(eval(before.split(" ", 2)[2]))) == []
    after = set(eval(next(line for line in output.splitlines() if line.startswith("AFTER-EVAL")).split(" ", 1)[1]))
    assert "proofcritic.benchmarks._registry" in after
    assert "numpy" not in after and "proofcritic.benchmarks.eval_grade" not in after
    from proofcritic.benchmarks._registry import suite_names

    for kind in ("solve", "grade"):
        line = next(line for line in output.splitlines() if line.startswith(f"SUITES {kind}"))
        drawn = eval(line.split(" ", 2)[2])
        text = " ".join(re.sub(r"-\n\s+", "-", drawn).split())  # the help's lines joined again
        assert f"Suite name: {', '.join(suite_names(kind))}." in text


def test_import_proofcritic_is_light_and_the_public_api_unchanged():
    status, output, modules = _run([], code="import proofcritic")
    assert status == 0, output
    assert _heavy(modules) == []

    import proofcritic
    import proofcritic.benchmarks
    import proofcritic.benchmarks.eval_grade
    from proofcritic import (
        generator,
        grading,
        llm,
        meta_verifier,
        promptset,
        types,
        verifier,
    )

    where = {
        "Candidate": generator,
        "Generator": generator,
        "grade": grading,
        "grade_jsonl": grading,
        "GenerateConfig": llm,
        "Model": llm,
        "get_model": llm,
        "MetaVerifier": meta_verifier,
        "PromptSet": promptset,
        "Verifier": verifier,
        "DEFAULT_SCORE_MODE": verifier,
    }
    for name in proofcritic.__all__:
        value = getattr(proofcritic, name)
        assert name in dir(proofcritic)
        if name in where:
            assert value is getattr(where[name], name)
        elif name[0].isupper() and hasattr(types, name):
            assert value is getattr(types, name)
    assert proofcritic.DEFAULT_SCORE_MODE == "text"
    namespace: dict = {}
    exec("from proofcritic import *", namespace)  # noqa: S102 - the star import, as a user writes it
    assert set(proofcritic.__all__) <= set(namespace)
    with pytest.raises(AttributeError):
        proofcritic.no_such_name  # noqa: B018
    # a submodule is an attribute of the package, as when the package imported them all
    assert proofcritic.lean_checker.__name__ == "proofcritic.lean_checker"
    # llm: its names as before, each its submodule's object
    import proofcritic.llm._model
    import proofcritic.llm._registry
    import proofcritic.llm._types

    for name in llm.__all__:
        assert name in dir(llm)
    assert llm.get_model is proofcritic.llm._registry.get_model and llm.Model is proofcritic.llm._model.Model
    assert llm.GenerateConfig is proofcritic.llm._types.GenerateConfig and llm.DEFAULT_MODEL == "transformers/smollm2"
    # benchmarks: its names as before; eval_grade is the function even after its module loaded
    for name in proofcritic.benchmarks.__all__:
        assert getattr(proofcritic.benchmarks, name) is not None
    assert callable(proofcritic.benchmarks.eval_grade)
    assert proofcritic.benchmarks.eval_grade is sys.modules["proofcritic.benchmarks.eval_grade"].eval_grade
