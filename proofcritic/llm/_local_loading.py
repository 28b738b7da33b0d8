"""Loading a local model: torch and transformers imported on first use (with the OpenMP wait
policy set before), the weight types (``dtype``) and torch threads a local backend runs with, and
the weights shared by every backend of one process."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from .._constants import DTYPES
from ..errors import MissingDependencyError, ModelNotFoundError

#: environment variable of the OpenMP runtime's wait policy, read once when torch loads it
OMP_WAIT_ENV = "OMP_WAIT_POLICY"
#: the wait policy in force when proofcritic imported torch (None: torch came from elsewhere)
_policy_at_import: str | None = None


def prefer_passive_wait() -> None:
    """Before torch is imported: ask OpenMP for threads that sleep while they wait instead of
    spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the variable is set), so that a thread that
    lost its core to another process does not stall the others (see :func:`default_threads`).
    Once torch is imported the policy is fixed and this does nothing."""
    if "torch" not in sys.modules:
        os.environ.setdefault(OMP_WAIT_ENV, "PASSIVE")


def import_torch() -> Any:
    """torch, imported with the OpenMP wait policy of :func:`prefer_passive_wait`."""
    global _policy_at_import
    if "torch" not in sys.modules:
        prefer_passive_wait()
        _policy_at_import = os.environ[OMP_WAIT_ENV]
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "local") from exc
    return torch


def import_transformers() -> Any:
    """transformers (after torch), with its own progress bars off."""
    import_torch()
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "local") from exc
    # loading is reported by proofcritic itself; transformers' own bars would clutter the output
    transformers.utils.logging.disable_progress_bar()
    return transformers


#: CPU flags (``/proc/cpuinfo``) of a native bfloat16 dot product: AVX512-BF16, AMX-BF16
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16), read from
    ``/proc/cpuinfo`` without importing torch; False where that file is missing (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(_BF16_FLAGS & set(line.partition(":")[2].split()))
    except OSError:
        pass
    return False


def check_dtype(dtype: Any) -> None:
    """Refuse a weight type that is not one of :data:`DTYPES` (None and a ``torch.dtype`` pass)."""
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def dtype_plan(dtype: Any, device: str) -> tuple[str, str]:
    """The weight types a local backend runs in: (generation, likelihood read-out and guided
    choice), as torch dtype names, or ``"stored"`` for the type the checkpoint was saved in.

    - None (the default): ``float32`` on a CPU (exact, and batched generation gives the same
      greedy texts as one request at a time), the stored type on a GPU;
    - ``float32`` / ``bfloat16`` / ``float16`` (or a ``torch.dtype``): that type for everything;
    - ``auto``: on a CPU, ``float32`` for generation and ``bfloat16`` for the read-out where the
      CPU has a native bfloat16 dot product (:func:`cpu_has_bf16`), else ``float32``; on a GPU,
      the stored type. Generation stays in float32 because bfloat16 barely speeds up decoding
      on a CPU and makes batched greedy texts differ from one-at-a-time ones; the read-out is
      one long forward pass (prefill), where bfloat16 is several times faster.
    """
    check_dtype(dtype)
    cpu = str(device).startswith("cpu")
    if dtype is None:
        return ("float32", "float32") if cpu else ("stored", "stored")
    if dtype == "auto":
        if not cpu:
            return "stored", "stored"
        return "float32", "bfloat16" if cpu_has_bf16() else "float32"
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    return name, name


def dtype_label(plan: tuple[str, str]) -> str:
    """``float32``, or ``float32 (read-out bfloat16)`` when the read-out runs in another type."""
    gen, score = plan
    return gen if gen == score else f"{gen} (read-out {score})"


#: environment variable read by the OpenMP runtime; a set value is the default thread count
OMP_THREADS_ENV = "OMP_NUM_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def omp_wait_passive() -> bool:
    """Whether torch's OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``): the
    policy proofcritic imported torch with, or will (PASSIVE unless the variable says otherwise);
    for a torch imported elsewhere, the variable's value now (the best guess)."""
    if "torch" not in sys.modules:
        policy = os.environ.get(OMP_WAIT_ENV, "PASSIVE")
    elif _policy_at_import is not None:
        policy = _policy_at_import
    else:
        policy = os.environ.get(OMP_WAIT_ENV, "")
    return policy.strip().upper() == "PASSIVE"


def default_threads() -> int:
    """The torch threads a local model on a CPU uses when none is given: ``OMP_NUM_THREADS``
    when it is set; else every CPU this process may use when OpenMP's threads wait passively
    (:func:`omp_wait_passive`: proofcritic imports torch with ``OMP_WAIT_POLICY=PASSIVE`` unless
    the variable is set), else half of them (at least 1).

    Why: with torch's own setting (every core, threads spinning while they wait) decoding
    collapses as soon as another busy process shares the machine: each operation waits for its
    slowest thread, and the spinning threads keep the one that lost its core from running (on 2
    cores beside one busy process, 2 threads decoded at 5.0 tokens/s where 1 thread kept 14.4).
    Passive waiting keeps every core's speed on an idle machine and does not collapse beside a
    busy process (2 threads: 13.9 and 12.4 tokens/s); where torch was imported with spinning
    threads, half the cores leave room for a second process. ``perf/local_speed.py`` measures
    all three."""
    raw = os.environ.get(OMP_THREADS_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    cpus = usable_cpus()
    return cpus if omp_wait_passive() else max(1, cpus // 2)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Any:
    """Run the block with torch's intra-op thread count set to ``threads`` (None: unchanged),
    and put the previous count back after it. The count is process-global in torch: two local
    models running at the same moment in one process share whichever count was set last."""
    if not threads:
        yield
        return
    torch = import_torch()
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


def looks_like_path(spec: str) -> bool:
    """Whether a missing ``spec`` was meant as a path rather than a hub id like "org/name"."""
    return (
        os.path.isabs(spec) or spec.startswith((".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")
    )


#: weights loaded in this process, shared by every backend on the same folder, device and dtype
#: (inference only reads them), so that a second backend or a second CLI call in one process
#: does not load again; the least recently used is dropped beyond _SHARED_MAX
_SHARED: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 2


def load_shared(source: str, device: str, dtype_name: str, *, folder: bool) -> tuple[Any, Any]:
    """Tokenizer and model of ``source`` in ``dtype_name`` ("stored": the checkpoint's own), on
    ``device``, loaded once per process (see ``_SHARED``); ``folder``: whether ``source`` is a
    local folder (else a hub id looked up in the local Hugging Face cache), for the error."""
    torch, tf = import_torch(), import_transformers()
    dtype = "auto" if dtype_name == "stored" else getattr(torch, dtype_name)
    key = (source, str(device), str(dtype))
    with _SHARED_LOCK:
        shared = _SHARED.pop(key, None)
        if shared is None:
            try:
                tokenizer = tf.AutoTokenizer.from_pretrained(source, local_files_only=True)
                model = tf.AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
            except (OSError, ValueError) as exc:
                where = "the folder" if folder else "no such folder, and not in the local Hugging Face cache"
                raise ModelNotFoundError(f"cannot load model {source!r} ({where}): {exc}") from exc
            model.to(device)
            model.eval()
            shared = (tokenizer, model)
        _SHARED[key] = shared  # most recently used last
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.pop(next(iter(_SHARED)))
    return shared
