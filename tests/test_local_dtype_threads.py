"""Weight type (--dtype) and torch threads (--threads) of the local backends: the type reaches the
loaded weights, the threads are set while the backend works and put back after, the cache keeps
the types apart, the options are checked on the command line, in configs and in get_model, and
the run summary and the service say how the model runs."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from proofcritic.cli import main
from proofcritic.errors import InputError
from proofcritic.llm import ChatMessage, ChatRequest, CompletionCache, GenerateConfig, Model, get_model
from proofcritic.llm import _local_loading as parts
from proofcritic.llm._transformers import TransformersBackend

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROBLEM, PROOF = str(EXAMPLES / "problem.md"), str(EXAMPLES / "proof_flawed.md")


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, list[str]]:
    """``proofcritic ARGS`` through the real entry point, in this process: (status, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["proofcritic", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err.strip().splitlines()


def _dtypes(model) -> set:
    return {p.dtype for p in model.parameters()}


# ------------------------------------------------------------------------------ weight type


def test_dtype_plan_rules(monkeypatch):
    """None is float32 on a CPU (the stored type on a GPU); auto is float32 generation with a
    bfloat16 read-out exactly where the CPU has native bfloat16; a named type is used for both."""
    assert parts.dtype_plan(None, "cpu") == ("float32", "float32")
    assert parts.dtype_plan(None, "cuda:0") == ("stored", "stored")
    assert parts.dtype_plan("bfloat16", "cpu") == ("bfloat16", "bfloat16")
    assert parts.dtype_plan(torch.float16, "cpu") == ("float16", "float16")
    assert parts.dtype_plan("auto", "cuda") == ("stored", "stored")
    monkeypatch.setattr(parts, "cpu_has_bf16", lambda: True)
    assert parts.dtype_plan("auto", "cpu") == ("float32", "bfloat16")
    monkeypatch.setattr(parts, "cpu_has_bf16", lambda: False)
    assert parts.dtype_plan("auto", "cpu") == ("float32", "float32")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        parts.dtype_plan("fp8", "cpu")


def test_cpu_has_bf16_reads_the_flags(tmp_path):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert parts.cpu_has_bf16(with_bf16) and not parts.cpu_has_bf16(without)
    assert parts.cpu_has_bf16(tmp_path / "missing") is False
    amx = tmp_path / "c"
    amx.write_text("flags\t: fpu amx_bf16 amx_tile\n")
    assert parts.cpu_has_bf16(amx)


def test_dtype_reaches_the_loaded_smollm2(smollm2_dir):
    """Every parameter of the loaded SmolLM2 is of the type asked for; auto loads a bfloat16 copy
    for the read-out (where the CPU has native bfloat16) beside the float32 generation model."""
    default = TransformersBackend(smollm2_dir, threads=1)
    default.load()
    assert _dtypes(default._hf_model) == {torch.float32} and default._scorer is default._hf_model
    bf16 = TransformersBackend(smollm2_dir, dtype="bfloat16", threads=1)
    bf16.load()
    assert _dtypes(bf16._hf_model) == {torch.bfloat16} and bf16._scorer is bf16._hf_model
    auto = TransformersBackend(smollm2_dir, dtype="auto", threads=1)
    auto.load()
    assert _dtypes(auto._hf_model) == {torch.float32}
    expected = torch.bfloat16 if parts.cpu_has_bf16() else torch.float32
    assert _dtypes(auto._scorer) == {expected}
    assert auto.describe().startswith("float32 (read-out bfloat16)" if parts.cpu_has_bf16() else "float32,")


def test_auto_readout_keeps_the_most_likely_score(smollm2_dir):
    """The bfloat16 read-out of auto moves the score probabilities by a little and keeps the most
    likely score, on the verify prompt of the demo's flawed proof (what perf/local_speed.py reads)."""
    from proofcritic.io import read_problem, read_proof
    from proofcritic.parsing import SCORE_MARKER
    from proofcritic.promptset import PromptSet

    messages = PromptSet.load().render("verify", problem=read_problem(PROBLEM), proof=read_proof(PROOF))
    messages = [
        *messages,
        ChatMessage(
            role="assistant",
            content=(f"Here is my evaluation of the solution: the second step has a gap.\n\n{SCORE_MARKER} \\boxed{{"),
        ),
    ]
    conts = ["0}", "0.5}", "1}"]

    def probs(dtype):
        backend = TransformersBackend(smollm2_dir, dtype=dtype, threads=1, prefix_cache_tokens=0)
        totals = asyncio.run(backend.sequence_logprobs(messages, conts))
        weights = torch.softmax(torch.tensor(totals, dtype=torch.float64), 0).tolist()
        return weights, backend

    exact, _ = probs(None)
    fast, backend = probs("auto")
    if backend._scorer is backend._hf_model:
        pytest.skip("this CPU has no native bfloat16: auto reads out in float32")
    assert fast != exact  # it really ran in another type
    assert max(abs(a - b) for a, b in zip(fast, exact)) < 0.06
    assert fast.index(max(fast)) == exact.index(max(exact))


# ------------------------------------------------------------------------------ threads


def test_default_threads(monkeypatch):
    """OMP_NUM_THREADS when set; else every usable CPU where OpenMP waits passively, half of them
    (at least 1) where it spins; a CPU backend takes it, a GPU one leaves torch's own."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parts.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    for cpus, spinning, passive in ((1, 1, 1), (2, 1, 2), (3, 1, 3), (8, 4, 8), (64, 32, 64)):
        monkeypatch.setattr(parts, "usable_cpus", lambda cpus=cpus: cpus)
        monkeypatch.setattr(parts, "omp_wait_passive", lambda: False)
        assert parts.default_threads() == spinning
        monkeypatch.setattr(parts, "omp_wait_passive", lambda: True)
        assert parts.default_threads() == passive
    monkeypatch.setattr(parts, "usable_cpus", lambda: 8)
    monkeypatch.setattr(parts, "omp_wait_passive", lambda: False)
    assert TransformersBackend("smollm2").threads == 4
    assert TransformersBackend("smollm2", threads=3).threads == 3
    assert TransformersBackend("smollm2", device="cuda").threads is None  # torch's own on a GPU


@pytest.mark.parametrize(
    ("env", "first", "policy", "all_cpus"),
    [
        ({}, "", "PASSIVE", True),  # proofcritic imports torch: passive wait, every CPU
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "", "ACTIVE", False),  # a set policy is kept: half
        ({}, "import torch; ", None, False),  # torch imported before proofcritic: spinning, half
    ],
)
def test_wait_policy_and_default_in_a_fresh_process(env, first, policy, all_cpus):
    """In a real fresh interpreter: the policy proofcritic sets before it imports torch, and the
    default thread count that follows from it."""
    import os
    import subprocess

    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    code = (
        first
        + "import os; from proofcritic.llm._local_loading import import_torch as _torch, default_threads, usable_cpus; "
        "_torch(); print(os.environ.get('OMP_WAIT_POLICY'), default_threads(), usable_cpus())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == str(policy)
    cpus = int(out[2])
    assert int(out[1]) == (cpus if all_cpus else max(1, cpus // 2))


def test_threads_set_while_working_and_restored(tiny_model_dir):
    """Generation and the read-out run with the backend's thread count; torch's count before the
    work is back after it (a training step in the same process keeps its own)."""
    before = torch.get_num_threads()
    outside = 1 if before != 1 else 2
    wanted = 2 if outside == 1 else 1
    torch.set_num_threads(outside)
    backend = TransformersBackend(tiny_model_dir, threads=wanted, batch_wait_ms=1)
    backend.load()
    seen: list[int] = []
    hook = backend._hf_model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:

        async def work():
            await backend.generate(
                ChatRequest(
                    messages=[ChatMessage(role="user", content="Compute 3 + 4.")],
                    config=GenerateConfig(max_tokens=3, temperature=0),
                )
            )
            await backend.sequence_logprobs([ChatMessage(role="user", content="Hence?")], ["yes", "no"])

        asyncio.run(work())
        assert seen and set(seen) == {wanted}
        assert torch.get_num_threads() == outside
    finally:
        hook.remove()
        backend.close()
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ cache key


def test_identity_and_cache_keep_dtypes_apart(tiny_model_dir, tmp_path):
    """The default's identity is unchanged (float32 is the same as no dtype); every other type has
    its own, and a completion made in float32 is not served to a bfloat16 model (nor back)."""
    ident = {
        d: TransformersBackend(tiny_model_dir, dtype=d).cache_identity()
        for d in (None, "float32", "bfloat16", "float16")
    }
    base = f"transformers/{tiny_model_dir.resolve()}"
    assert ident[None] == ident["float32"] == base
    assert ident["bfloat16"] == base + "@bfloat16" and ident["float16"] == base + "@float16"
    auto = TransformersBackend(tiny_model_dir, dtype="auto").cache_identity()
    assert auto == (base + "@float32+readout-bfloat16" if parts.cpu_has_bf16() else base)

    cache = tmp_path / "c.sqlite"
    request = ChatRequest(
        messages=[ChatMessage(role="user", content="Compute 3 + 4.")],
        config=GenerateConfig(max_tokens=3, temperature=0),
    )

    def one(dtype) -> tuple[int, int]:
        model = Model(TransformersBackend(tiny_model_dir, dtype=dtype, threads=1), cache=CompletionCache(cache))

        async def go():
            try:
                await model.generate(request)
            finally:
                await model.aclose()

        asyncio.run(go())
        return model.usage.calls, model.usage.cached_calls

    assert one(None) == (1, 0)
    assert one("float32") == (0, 1)  # the same weights, the same entry
    assert one("bfloat16") == (1, 0)  # not the float32 answer
    assert one("bfloat16") == (0, 1)


def test_vllm_offline_identity_has_its_dtype():
    from proofcritic.llm._vllm_offline import VLLMOfflineBackend

    assert VLLMOfflineBackend("m").cache_identity() == "vllm-offline/m"
    assert VLLMOfflineBackend("m", dtype="auto").cache_identity() == "vllm-offline/m"
    assert VLLMOfflineBackend("m", dtype="bfloat16").cache_identity() == "vllm-offline/m@bfloat16"
    assert VLLMOfflineBackend("m", dtype="bfloat16").llm_options["dtype"] == "bfloat16"  # goes to vllm.LLM


# ------------------------------------------------------------------------------ options


def test_get_model_checks_the_options():
    model = get_model("transformers/smollm2", cache=False, dtype="bfloat16", threads=2)
    assert model.backend.dtype == "bfloat16" and model.backend.threads == 2
    plain = get_model("transformers/smollm2", cache=False, dtype=None, threads=None)  # None: not given
    assert plain.backend.dtype is None
    with pytest.raises(InputError, match="unknown dtype 'fp8'"):
        get_model("transformers/smollm2", cache=False, dtype="fp8")
    with pytest.raises(InputError, match=r"threads .* at least 1"):
        get_model("transformers/smollm2", cache=False, threads=0)
    with pytest.raises(InputError, match="applies to the local backends"):
        get_model("openai/m", cache=False, base_url="http://127.0.0.1:9/v1", dtype="bfloat16")
    with pytest.raises(InputError, match="applies to the transformers backend"):
        get_model("vllm-offline/m", cache=False, threads=2)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--dtype", "fp8"], "--dtype"),
        (["--dtype", ""], "--dtype"),
        (["--threads", "0"], "--threads"),
        (["--threads", "two"], "--threads"),
        (["--model", "openai/m", "--base-url", "http://127.0.0.1:9/v1", "--dtype", "bfloat16"], "--dtype"),
        (["--model", "openai/m", "--base-url", "http://127.0.0.1:9/v1", "--threads", "1"], "--threads"),
    ],
)
def test_cli_refuses_bad_values_in_one_line(extra, needle, capsys, monkeypatch):
    status, err = run_cli(["grade", "--problem", PROBLEM, "--proof", PROOF, *extra], capsys, monkeypatch)
    assert status == 2, err
    assert len(err) == 1 and needle in err[0], err


def test_summary_line_and_recorded_setting(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The run ends with how the local model ran; a batch records a non-default dtype, so a rerun
    in another type stops before any model call (and --dtype float32 resumes a default run)."""
    model = ["--model", f"transformers/{tiny_model_dir}", "-n", "1", "--max-tokens", "3", "--no-cache"]
    status, err = run_cli(
        ["grade", "--problem", PROBLEM, "--proof", PROOF, *model, "--dtype", "bfloat16", "--threads", "1"],
        capsys,
        monkeypatch,
    )
    assert status in (0, 1), err  # the tiny model writes no score: no verdict (1)
    assert any(
        line.startswith("local model transformers/") and line.endswith(": bfloat16, 1 torch thread") for line in err
    ), err

    batch = tmp_path / "in.jsonl"
    batch.write_text(json.dumps({"id": "a", "problem": "Show 1 = 1.", "proof": "Clear."}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["grade", "--input", str(batch), "--output", str(out), *model, "--threads", "1"]
    status, err = run_cli([*args, "--dtype", "bfloat16"], capsys, monkeypatch)
    assert status == 0, err
    settings = json.loads(Path(f"{out}.settings.json").read_text())
    assert settings["dtype"] == "bfloat16"
    status, err = run_cli(args, capsys, monkeypatch)  # float32 now
    assert status == 2 and "dtype=bfloat16" in err[-1], err

    fresh = tmp_path / "f32.jsonl"
    args = ["grade", "--input", str(batch), "--output", str(fresh), *model, "--threads", "1"]
    assert run_cli(args, capsys, monkeypatch)[0] == 0
    assert "dtype" not in json.loads(Path(f"{fresh}.settings.json").read_text())
    status, err = run_cli([*args, "--dtype", "float32"], capsys, monkeypatch)
    assert status == 0 and any("1 already done" in line for line in err), err


def test_service_stats_say_how_the_local_model_runs(tiny_model_dir, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app

    model = Model(TransformersBackend(tiny_model_dir, dtype="bfloat16", threads=1), cache=None)
    app = create_app(ServerSettings(model=model, db_path=tmp_path / "jobs.sqlite"))
    with TestClient(app) as client:
        upstream = client.get("/v1/stats").json()["upstream"]
    assert upstream["local"] == "bfloat16, 1 torch thread"


def test_configs_take_dtype_and_threads(tmp_path):
    from proofcritic.training._configs import ConfigError, ProofcriticGRPOConfig
    from proofcritic.training.cotrain import LabelParams, SampleParams
    from proofcritic.training.recipes import _reward_model

    config = ProofcriticGRPOConfig(
        output_dir=str(tmp_path),
        num_generations=2,
        per_device_train_batch_size=2,
        reward_model="transformers/smollm2",
        reward_model_dtype="auto",
        reward_model_threads=1,
    )
    reward = _reward_model(config)
    assert reward.backend.dtype == "auto" and reward.backend.threads == 1
    with pytest.raises(ConfigError, match="reward_model_dtype"):
        ProofcriticGRPOConfig(
            output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, reward_model_dtype="fp8"
        )
    assert SampleParams(dtype="bfloat16", threads=2).dtype == "bfloat16"
    with pytest.raises(ValueError):
        LabelParams(dtype="fp8")
    with pytest.raises(ValueError):
        SampleParams(threads=0)
