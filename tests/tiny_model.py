"""The tiny local models the tests and ``perf/training.py`` start from, built in code (nothing
is downloaded): test and benchmark scaffolding, not part of the package.

- :func:`build_tiny_model`: a random 2-layer Llama and a byte-level BPE tokenizer trained on
  made-up math text (``tiny_model_dir`` in conftest.py);
- :func:`warm_up`: a protocol warm-up, a short SFT run that teaches such a model the output
  format of every role (``warm_model_dir``). A freshly initialised model never writes
  ``## Solution`` / ``## Self Evaluation`` headers or a boxed score, so every GRPO reward it
  earns is 0 and no reward model is ever asked; the warm-up fine-tunes it on the three roles'
  GRPO prompts and on the prompts a reward model sees (``verify``, ``meta_verify``), each
  answered with a short, well-formed protocol output, so that GRPO has real reward differences
  to learn from and the reward model is really called. The answers it teaches are placeholders
  (``Even.``, ``Checked.``): only their shape matters.

``perf/training.py`` imports this module with ``tests/`` put on ``sys.path``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from proofcritic.parsing import EVALUATION_MARKER, META_SCORE_MARKER, SCORE_MARKER

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def math_corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Made-up math text, enough for a small BPE vocabulary."""
    rng = random.Random(seed)
    subjects = [
        "the integer n",
        "every prime p",
        "the sum of squares",
        "the function f",
        "a triangle",
        "the sequence a_k",
        "the polynomial P(x)",
        "each root",
        "the set S",
        "the matrix A",
    ]
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


def build_tiny_model(
    folder: str | Path,
    *,
    vocab_size: int = 600,
    seed: int = 0,
    max_positions: int = 32768,
    corpus: list[str] | None = None,
) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus`` (default :func:`math_corpus`) and save it
    with a random 2-layer Llama (hidden size 48) into ``folder``: seconds to build, nothing
    downloaded.

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
    bpe.train_from_iterator(math_corpus() if corpus is None else corpus, trainer=trainer)
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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- the protocol warm-up

_EVEN = "Prove that the sum of two even integers is even."
_CUBE = "Prove that 3 divides n^3 - n."
_PROOF = "Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even."

#: a few raw training records per role (the formats ``proofcritic train`` reads)
SAMPLE_RECORDS: dict[str, list[dict[str, Any]]] = {
    "verifier": [
        {"problem": _EVEN, "proof": _PROOF, "score": 1},
        {"problem": _CUBE, "proof": "It is obvious.", "score": 0},
    ],
    "meta_verifier": [
        {
            "problem": _EVEN,
            "proof": _PROOF,
            "meta_score": 1,
            "analysis": "The proof writes both numbers as multiples of 2 and factors the sum. It is complete.",
        },
        {"problem": _EVEN, "proof": "It is obvious.", "analysis": "Fine.", "meta_score": 0},
    ],
    "generator": [{"problem": _EVEN}, {"problem": _CUBE}],
}


def write_sample_data(folder: str | Path, role: str) -> Path:
    """Write ``SAMPLE_RECORDS[role]`` to ``FOLDER/<role>.jsonl`` and return the path."""
    path = Path(folder) / f"{role}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in SAMPLE_RECORDS[role]), encoding="utf-8")
    return path


def protocol_output(role: str, score: float) -> str:
    """A short, well-formed output of ``role`` carrying ``score`` (what the warm-up teaches)."""
    verification = f"{EVALUATION_MARKER}\nChecked.\n{SCORE_MARKER} \\boxed{{{score:g}}}"
    if role == "verifier":
        return verification
    if role == "meta_verifier":
        return f"{META_SCORE_MARKER} \\boxed{{{score:g}}}"
    if role == "generator":
        return f"## Solution\nEven.\n## Self Evaluation\n{verification}"
    raise ValueError(f"unknown role {role!r}; use verifier, meta_verifier or generator")


def _messages(rendered) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in rendered]


def warmup_rows(data: dict[str, str | Path] | None = None, statements: list[str] | None = None) -> list[dict]:
    """Conversational SFT rows (``prompt``, ``completion``).

    ``data``: role -> JSONL file of that role's GRPO data (raw records or training rows); each
    prompt is answered with its reference score (generator: 1). ``statements``: problems whose
    ``verify`` prompt on the proof ``Even.`` (what the generator is taught to write) is added,
    answered with score 1. ``meta_verify`` prompts judging the analysis ``Checked.`` (scored 0
    and 1) of those proofs and of the verifier data's proofs are added too, answered with meta
    score 1, so a warmed-up model can serve as the reward model of every role.
    Defaults: :data:`SAMPLE_RECORDS` and their statements.
    """
    import tempfile

    from proofcritic.promptset import PromptSet
    from proofcritic.training.recipes import _role_dataset
    from proofcritic.training.rewards import as_problem
    from proofcritic.types import Problem

    rows: list[dict] = []
    judged: list[tuple[Problem, str]] = []  # (problem, proof) pairs a meta-verifier reward judges
    with tempfile.TemporaryDirectory() as tmp:
        files = data or {role: write_sample_data(tmp, role) for role in SAMPLE_RECORDS}
        for role, path in files.items():
            for row in _role_dataset(path, role):
                score = row.get("reference_score", row.get("reference_meta_score", 1))
                score = 1 if score is None else score
                rows.append(
                    {
                        "prompt": row["prompt"],
                        "completion": [{"role": "assistant", "content": protocol_output(role, score)}],
                    }
                )
                if role == "verifier" and "problem" in row and "proof" in row:
                    judged.append((as_problem(row["problem"]), str(row["proof"])))
    if statements is None:
        statements = sorted({r["problem"] for records in SAMPLE_RECORDS.values() for r in records})
    prompts = PromptSet.load()
    for statement in statements:  # the verification of the generator's proof "Even."
        problem = Problem(statement=statement)
        judged.append((problem, "Even."))
        rows.append(
            {
                "prompt": _messages(prompts.render("verify", problem=problem, proof="Even.")),
                "completion": [{"role": "assistant", "content": protocol_output("verifier", 1)}],
            }
        )
    # the meta-verifications a reward asks for: of the verifier's analysis of each data proof, and
    # of the generator's self-evaluation of "Even." (the judged score may be 0 or 1)
    for problem, proof in judged:
        for score in (0, 1):
            rows.append(
                {
                    "prompt": _messages(
                        prompts.render("meta_verify", problem=problem, proof=proof, analysis="Checked.", score=score)
                    ),
                    "completion": [{"role": "assistant", "content": protocol_output("meta_verifier", 1)}],
                }
            )
    return rows


def warm_up(
    model: str | Path,
    output_dir: str | Path,
    *,
    data: dict[str, str | Path] | None = None,
    statements: list[str] | None = None,
    steps: int = 36,
    learning_rate: float = 1e-2,
    batch_size: int = 4,
    **sft_fields: Any,
) -> str:
    """SFT ``model`` on :func:`warmup_rows` for ``steps`` steps; returns the output folder.

    The defaults suit the tiny random model (a high, constant learning rate); lower
    ``learning_rate`` (e.g. 1e-5) for a real checkpoint. ``sft_fields``: further
    :class:`ProofcriticSFTConfig` fields (``use_cpu`` is on unless given).
    """
    from proofcritic.training.recipes import ProofcriticSFTConfig, train_sft

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = warmup_rows(data, statements)
    train_file = output_dir / "warmup_rows.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fields: dict[str, Any] = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "max_steps": steps,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "logging_steps": max(1, steps // 3),
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "per_device_train_batch_size": batch_size,
        "max_length": 4096,
    }
    fields.update(sft_fields)
    config = ProofcriticSFTConfig(model=str(model), train_file=str(train_file), **fields)
    return train_sft(config)


def protocol_corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Made-up math sentences plus every role's protocol output: the vocabulary of the model
    :func:`warm_up` starts from (its markers are few tokens)."""
    rng = random.Random(seed)
    things = [
        "the integer n",
        "a prime p",
        "the sum",
        "the polynomial f",
        "the triangle ABC",
        "each term a_k",
        "the set S",
        "a root r",
        "the product",
        "the matrix M",
    ]
    relations = ["divides", "is at most", "equals", "is congruent to", "exceeds", "is coprime to"]
    targets = ["2", "3", "n - 1", "zero", "x^2 + 1", "p + 1", "the bound", "4k", "the determinant", "1"]
    openers = ["Hence", "So", "Suppose", "By induction", "Because", "We show", "Thus", "Assume", "Recall"]
    out = [protocol_output(role, s) for role in SAMPLE_RECORDS for s in (0, 0.5, 1)]
    for _ in range(lines):
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        out.append(
            f"{rng.choice(openers)} {rng.choice(things)} {rng.choice(relations)} {rng.choice(targets)}. "
            f"Check {a} + {b} = {a + b} and {a} * {b} = {a * b}, which proves the claim."
        )
    return out


def build_warm_model(folder: str | Path) -> Path:
    """The tiny model on :func:`protocol_corpus`'s vocabulary (``folder/tiny``) after
    :func:`warm_up` (``folder/warm``, returned)."""
    folder = Path(folder)
    return Path(warm_up(build_tiny_model(folder / "tiny", corpus=protocol_corpus()), folder / "warm"))
