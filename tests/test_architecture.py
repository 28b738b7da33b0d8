"""The import contracts of pyproject.toml (``make lint`` runs them): the tree keeps them, and they
catch what they are there to catch (an import running up the layers, a private module imported
from outside its package). Also the one helper that keeps Python 3.10 (requires-python) working
where 3.11 added an API: ``errors.add_note``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proofcritic.errors import BackendError, add_note

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

needs_import_linter = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (dev extra)")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@needs_import_linter
def test_the_tree_keeps_the_import_contracts() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@needs_import_linter
def test_the_contracts_catch_an_upward_import_and_a_private_one(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proofcritic", tmp_path / "proofcritic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # the cache (llm) reaching up to a strategy (pipelines); the service reaching into llm's private module
    with open(tmp_path / "proofcritic" / "llm" / "_cache.py", "a") as f:
        f.write("\nimport proofcritic.pipelines.single\n")
    with open(tmp_path / "proofcritic" / "server" / "app.py", "a") as f:
        f.write("\nfrom proofcritic.llm._cache import CompletionCache as _Cache\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "2 broken" in done.stdout
    assert "proofcritic.llm is not allowed to import proofcritic.pipelines" in done.stdout
    assert "proofcritic.llm._cache -> proofcritic.pipelines.single" in done.stdout
    assert "proofcritic.server.app -> proofcritic.llm._cache" in done.stdout


def test_add_note_puts_the_note_where_readers_look() -> None:
    error = BackendError("the server answered 503")
    add_note(error, "(gave up after 3 attempts)")
    add_note(error, "(tried 2 endpoints)")
    assert error.__notes__ == ["(gave up after 3 attempts)", "(tried 2 endpoints)"]
    with pytest.raises(BackendError, match="gave up after 3 attempts"):
        raise error


def _python310() -> str | None:
    """A Python 3.10 that runs (a pyenv shim may name one it cannot run), or None."""
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob("3.10*/bin/python3.10"))] if pyenv.is_dir() else []
    candidates += [found] if (found := shutil.which("python3.10")) else []
    for python in candidates:
        done = subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30, check=False)
        if done.returncode == 0:
            return python
    return None


def test_add_note_on_python_3_10() -> None:
    """3.10 has no BaseException.add_note: the helper keeps the note in ``__notes__`` there too
    (errors.py is loaded by path: it needs nothing beyond the standard library)."""
    python = _python310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter here")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('errors', {str(ROOT / 'proofcritic' / 'errors.py')!r})\n"
        "errors = importlib.util.module_from_spec(spec); spec.loader.exec_module(errors)\n"
        "e = errors.BackendError('down'); errors.add_note(e, 'one'); errors.add_note(e, 'two')\n"
        "assert not hasattr(BaseException, 'add_note'), sys.version\n"
        "print(e.__notes__)\n"
    )
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['one', 'two']"
