"""The CRITIC loops (SPEC 5): tool-interactive verification and repair.

Loop logic runs exactly on the scripted model (a stand-in for the MODEL only): the tool is the
real sandboxed Python, so a code block the model writes really runs and its real output must
appear in the next prompt. The end-to-end tests at the bottom run SmolLM2.
"""

from __future__ import annotations

import json

import pytest
from scripted import ScriptedBackend, generation_text, verification_text

from proofcritic.budget import Budget, budget_scope
from proofcritic.errors import InputError
from proofcritic.llm import Model
from proofcritic.parsing import EVALUATION_MARKER, SCORE_MARKER
from proofcritic.pipelines import Roles
from proofcritic.pipelines.critic import CriticStrategy, normalise_proof
from proofcritic.pipelines.solve import get_strategy
from proofcritic.tools import PythonTool, SandboxPool, find_tool_call, get_tool
from proofcritic.types import Problem, Verification
from proofcritic.verifier import CriticVerifier, Verifier
from proofcritic.verifier._critic import TOOL_STOP

PROBLEM = Problem(id="p1", statement="Prove that $n^3 - n$ is divisible by 6 for every integer $n$.")
PROOF = "n^3 - n = (n-1) n (n+1) is a product of three consecutive integers, hence divisible by 6."


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as shared:
        yield shared


def turns(call) -> list:
    return call.request.messages


def tool_turn(code: str, before: str = "Let me check the factorisation.") -> str:
    """A verifier turn that asks for a run, as a backend that honours the stop string returns it
    (cut before the closing fence)."""
    return f"{EVALUATION_MARKER}\n\n{before}\n\n```python\n{code}"


def is_feedback(message) -> bool:
    return message.role == "user" and message.content.startswith("Output of your code:")


# --------------------------------------------------------------------------- finding calls


def test_find_tool_call_closed_cut_and_other_languages():
    text = "Intro\n```text\nprint('not a call')\n```\nthen\n```python\nprint(1)\n```\nafter"
    block = find_tool_call(text, ["python"])
    assert block.code == "print(1)\n" and block.closed and block.language == "python"
    assert block.as_written(text).endswith("print(1)\n```") and "after" not in block.as_written(text)
    cut = find_tool_call("x\n```py\nprint(2)", ["python", "py"])
    assert cut.code == "print(2)" and not cut.closed and cut.as_written("x\n```py\nprint(2)").endswith("print(2)\n```")
    assert find_tool_call("```lean\ntheorem t : True := trivial\n```", ["python"]) is None
    assert find_tool_call("no code at all", ["python"]) is None
    # a python block quoted inside a longer non-python fence is not a call
    assert find_tool_call("````markdown\n```python\nprint(3)\n```\n````\n", ["python"]) is None


def test_unknown_and_missing_tools_are_input_errors():
    with pytest.raises(InputError, match="unknown tool"):
        get_tool("matlab")
    with pytest.raises(InputError, match="unknown tool"):
        get_strategy("critic", tools=["matlab"])


# --------------------------------------------------------------------------- verification loop


async def test_tool_call_runs_and_its_output_is_in_the_next_prompt(pool):
    """Turn 1 asks for code; the real sandbox runs it; turn 2 sees the real output and ends."""

    def script(call):
        assert call.role == "verify"
        messages = turns(call)
        if len(messages) == 1:
            assert "## Checking claims by running code" in messages[0].content
            assert call.request.config.stop == list(TOOL_STOP)
            return tool_turn("import sympy as sp\nn = sp.symbols('n')\nprint(sp.factor(n**3 - n), 6 * 7 * 191)")
        assert [m.role for m in messages] == ["user", "assistant", "user"]
        assert messages[1].content.endswith("print(sp.factor(n**3 - n), 6 * 7 * 191)\n```")
        assert is_feedback(messages[2])
        assert "n*(n - 1)*(n + 1) 8022" in messages[2].content  # computed by the sandbox, not by the test
        assert "2 more blocks" in messages[2].content
        return "The factorisation is confirmed.\n\n### Issues\n\n- None\n\n" + SCORE_MARKER + "\n\\boxed{1}"

    backend = ScriptedBackend(script)
    critic = CriticVerifier(Verifier(Model(backend)), [PythonTool(pool)], max_tool_calls=3)
    [v] = await critic.verify(PROBLEM, PROOF)
    assert v.score == 1 and v.format_ok and v.score_source == "text"
    assert len(v.tool_calls) == 1
    call = v.tool_calls[0]
    assert call.tool == "python" and call.ok and call.stdout == "n*(n - 1)*(n + 1) 8022\n"
    assert call.error is None and call.limit_hit is None
    # the kept transcript: both turns with the output between them, parsed as one analysis
    assert "Output of the code:" in v.raw and "n*(n - 1)*(n + 1) 8022" in v.analysis
    assert v.usage.calls == 2 and len(backend.calls) == 2


async def test_max_tool_calls_then_final_verdict_without_tools(pool):
    """A model that always asks for code gets max_tool_calls runs; then it is told to finish,
    with no stop string, and whatever it writes is the final (parsed) answer."""
    seen = []

    def script(call):
        messages = turns(call)
        seen.append((len(messages), call.request.config.stop))
        k = sum(1 for m in messages if m.role == "assistant")
        return tool_turn(f"print({k} * 11)", before=f"Check {k}.")

    backend = ScriptedBackend(script)
    critic = CriticVerifier(Verifier(Model(backend), score_mode="text"), [PythonTool(pool)], max_tool_calls=2)
    [v] = await critic.verify(PROBLEM, PROOF)
    assert [c.stdout for c in v.tool_calls] == ["0\n", "11\n"]
    assert len(backend.calls) == 3
    assert [s for _, s in seen] == [list(TOOL_STOP), list(TOOL_STOP), None]
    last = turns(backend.calls[-1])
    assert is_feedback(last[-1]) and "cannot run any more code" in last[-1].content
    assert "11" in last[-1].content
    # the final turn's code is not run, and without a score marker the verdict is a format failure
    assert v.score is None and not v.format_ok and "missing score marker" in v.format_error


async def test_score_before_block_is_final_and_errors_and_limits_are_reported(pool):
    def script(call):
        messages = turns(call)
        if len(messages) == 1:
            return tool_turn("def f(k):\n    return k // 0\nprint(f(3))")
        if len(messages) == 3:
            assert "ZeroDivisionError" in messages[-1].content
            return tool_turn("while True:\n    pass", before="Now a long search.")
        assert "time limit" in messages[-1].content
        # a verdict first, then a block: the block is not run, and since the verdict is not the
        # output's final statement the output is a format failure (parsing: final-statement rule)
        return f"Done.\n\n{SCORE_MARKER}\n\\boxed{{0.5}}\n\n```python\nprint('late')\n```\n"

    backend = ScriptedBackend(script)
    tool = PythonTool(pool, timeout=1)
    critic = CriticVerifier(Verifier(Model(backend)), [tool], max_tool_calls=5)
    [v] = await critic.verify(PROBLEM, PROOF)
    assert len(backend.calls) == 3 and len(v.tool_calls) == 2
    first, second = v.tool_calls
    assert not first.ok and first.error.startswith("ZeroDivisionError")
    assert not second.ok and second.limit_hit in ("timeout", "cpu")
    assert v.score is None and v.text_score is None and not v.format_ok
    assert "is not the end of the output" in (v.format_error or "")


async def test_without_stop_support_the_turn_is_cut_after_the_block(pool):
    """A backend that ignores stop strings writes on after the block (a made-up output and a
    verdict); the turn is cut after the block, the code runs, and the model is asked again."""

    def script(call):
        messages = turns(call)
        if len(messages) == 1:
            return f"{EVALUATION_MARKER}\n\n```python\nprint(2**10)\n```\nOutput: 999\n\n{SCORE_MARKER}\n\\boxed{{1}}"
        assert "999" not in messages[1].content and messages[1].content.endswith("print(2**10)\n```")
        assert "1024" in messages[2].content
        return verification_text(0, [("Step 2", "Critical Error", "2^10 is 1024")]).replace(EVALUATION_MARKER, "")

    backend = ScriptedBackend(script)
    critic = CriticVerifier(Verifier(Model(backend)), [PythonTool(pool)], max_tool_calls=1)
    [v] = await critic.verify(PROBLEM, PROOF)
    assert v.score == 0 and v.format_ok and [i.location for i in v.issues] == ["Step 2"]
    assert v.tool_calls[0].stdout == "1024\n"


async def test_samples_are_independent_conversations_with_their_own_seeds(pool):
    def script(call):
        if len(turns(call)) == 1:
            return tool_turn(f"print({call.request.config.seed} + 1)")
        return verification_text(1)

    backend = ScriptedBackend(script)
    critic = CriticVerifier(Verifier(Model(backend)), [PythonTool(pool)], max_tool_calls=2)
    vs = await critic.verify(PROBLEM, PROOF, n=3, seed=40)
    assert sorted(v.tool_calls[0].stdout for v in vs) == ["41\n", "42\n", "43\n"]
    assert all(v.score == 1 for v in vs) and len(backend.calls) == 6


async def test_tool_off_dump_is_unchanged_and_tool_on_dump_keeps_the_transcript():
    plain = Verification(raw="x", score=1.0)
    assert "tool_calls" not in plain.model_dump(mode="json")
    assert "tool_calls" not in json.loads(plain.model_dump_json())


# --------------------------------------------------------------------------- repair loop


def repair_script(critique_scores, revisions):
    """Generation 0 writes PROOF-0; revision r writes revisions[r-1] (a proof text). The critique
    of the k-th critiqued proof runs one piece of code and scores critique_scores[k]."""
    state = {"critiques": 0}

    def script(call):
        messages = turns(call)
        first = messages[0].content
        if call.role == "verify":
            if len(messages) == 1:
                return tool_turn(f"print('check', {state['critiques']})")
            k = state["critiques"]
            state["critiques"] += 1
            score = critique_scores[min(k, len(critique_scores) - 1)]
            return f"Critique {k}.\n\n### Issues\n\n- None\n\n{SCORE_MARKER}\n\\boxed{{{score:g}}}"
        if "## Critique" in first:
            r = sum(1 for c in backend.calls if c.role == "generate" and "## Critique" in turns(c)[0].content)
            return generation_text(revisions[min(r, len(revisions)) - 1], 0.5)
        return generation_text("PROOF-0", 0.5)

    backend = ScriptedBackend(script)
    return backend


async def test_repair_stops_when_the_proof_passes(pool):
    backend = repair_script([0, 0.5, 1], ["PROOF-1", "PROOF-2", "PROOF-3"])
    strategy = CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1)
    result = await strategy.solve(PROBLEM, Roles.from_models(Model(backend)))
    assert result.stop_reason == "passed at round 2"
    assert result.proof == "PROOF-2" and result.mean_score == 1 and result.rounds == 2
    steps = [s["step"] for s in result.transcript]
    assert steps == ["generate", "critique", "revise", "critique", "revise", "critique"]
    # the critique (code and real output) is what the revision prompt shows
    revise_prompts = [turns(c)[0].content for c in backend.calls if "## Critique" in turns(c)[0].content]
    assert "print('check', 0)" in revise_prompts[0] and "check 0" in revise_prompts[0]
    assert "PROOF-0" in revise_prompts[0] and "PROOF-1" in revise_prompts[1]
    assert result.verifications[0].tool_calls[0].stdout == "check 2\n"
    assert result.transcript[1]["tool_calls"][0][0]["stdout"] == "check 0\n"


async def test_repair_stops_when_the_proof_is_unchanged(pool):
    backend = repair_script([0], ["PROOF-1", "  PROOF-1\n"])
    result = await CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1).solve(
        PROBLEM, Roles.from_models(Model(backend))
    )
    assert result.stop_reason.startswith("proof unchanged at round 2")
    assert [s["step"] for s in result.transcript] == ["generate", "critique", "revise", "critique", "revise"]
    assert result.proof == "PROOF-1"  # ties go to the latest critiqued proof
    assert normalise_proof(" a \n\n b ") == "a b"


async def test_repair_stops_after_max_rounds(pool):
    backend = repair_script([0, 0.5, 0, 0, 0, 0], [f"PROOF-{i}" for i in range(1, 10)])
    result = await CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1).solve(
        PROBLEM, Roles.from_models(Model(backend))
    )
    assert result.stop_reason.startswith("max rounds (4) reached")
    assert result.rounds == 4
    assert sum(1 for s in result.transcript if s["step"] == "revise") == 4
    assert sum(1 for s in result.transcript if s["step"] == "critique") == 5
    assert result.proof == "PROOF-1" and result.mean_score == 0.5  # the best critique


async def test_repair_budget_limited(pool):
    backend = repair_script([0], [f"PROOF-{i}" for i in range(1, 10)])
    strategy = CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1)
    with budget_scope(Budget(max_calls=4)):
        result = await strategy.solve(PROBLEM, Roles.from_models(Model(backend)))
    assert result.budget_limited and result.stop_reason.startswith("budget")
    assert len(backend.calls) == 4 and result.proof == "PROOF-0"


def test_strategy_registered_with_defaults():
    strategy = get_strategy("critic", max_tool_calls=2)
    assert strategy.name == "critic" and strategy.config.max_rounds == 4 and strategy.config.max_tool_calls == 2
    assert get_strategy("critic", tools="python").config.tools == ["python"]


# --------------------------------------------------------------------------- the lean tool


async def test_lean_block_goes_to_the_lean_checker(pool):
    """With python and lean offered, a ```lean block is checked by the real Lean checker and
    a ```python block runs in the sandbox; the prompt describes both tools."""
    from proofcritic.lean_checker import LeanNotFoundError, find_lean
    from proofcritic.lean_checker.samples import correct_file, prelude_file
    from proofcritic.tools._lean import LeanTool

    try:
        find_lean()
    except LeanNotFoundError as error:
        pytest.skip(f"no lean here: {error}")
    wrong = prelude_file("theorem bad : Eq (N.add N.zero (N.succ N.zero)) N.zero := Eq.refl N.zero")

    def script(call):
        messages = turns(call)
        if len(messages) == 1:
            assert "- `python`: Python 3 with SymPy" in messages[0].content
            assert "- `lean`: Lean 4" in messages[0].content
            return f"{EVALUATION_MARKER}\n\nFormal check.\n\n```lean\n{correct_file(2)}"
        if len(messages) == 3:
            assert "Lean accepted the code" in messages[-1].content
            return f"Now the false claim.\n\n```lean4\n{wrong}```\n"
        if len(messages) == 5:
            assert "Lean did not accept the code" in messages[-1].content
            assert "Type mismatch" in messages[-1].content
            return tool_turn("print(1 + 1)")
        assert "2" in messages[-1].content
        return verification_text(0).replace(EVALUATION_MARKER, "")

    lean = LeanTool(timeout=60)
    critic = CriticVerifier(Verifier(Model(ScriptedBackend(script))), [PythonTool(pool), lean], max_tool_calls=3)
    try:
        [v] = await critic.verify(PROBLEM, PROOF)
    finally:
        await lean.aclose()
    assert [c.tool for c in v.tool_calls] == ["lean", "lean", "python"]
    assert [c.ok for c in v.tool_calls] == [True, False, True]
    assert "Type mismatch" in v.tool_calls[1].error and v.score == 0


async def test_output_with_fences_is_fenced_longer(pool):
    def script(call):
        messages = turns(call)
        if len(messages) == 1:
            return tool_turn("print('```python')\nprint('x')\nprint('```')")
        assert "````text\n```python\nx\n```\n````" in messages[-1].content
        return verification_text(1).replace(EVALUATION_MARKER, "")

    critic = CriticVerifier(Verifier(Model(ScriptedBackend(script))), [PythonTool(pool)], max_tool_calls=1)
    [v] = await critic.verify(PROBLEM, PROOF)
    assert "````text\n```python\nx\n```\n````" in v.raw and v.score == 1


async def test_repair_rerun_replays_from_the_cache(pool, tmp_path):
    """A second run (e.g. after a kill) replays every model call from the completion cache:
    the same seeds, the same prompts (tool outputs included), the same result."""
    from proofcritic.llm import CompletionCache

    cache = CompletionCache(tmp_path / "c.sqlite")
    first_backend = repair_script([0, 0.5, 1], ["PROOF-1", "PROOF-2", "PROOF-3"])
    strategy = CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1)
    first = await strategy.solve(PROBLEM, Roles.from_models(Model(first_backend, cache=cache)))
    again_backend = repair_script([0, 0, 0], ["OTHER"])  # would answer differently if asked
    again = await strategy.solve(PROBLEM, Roles.from_models(Model(again_backend, cache=cache)))
    assert again_backend.calls == [] and len(first_backend.calls) == 9  # 1 + 3 critiques x 2 + 2
    assert again.proof == first.proof == "PROOF-2" and again.stop_reason == first.stop_reason
    assert again.usage.cached_calls == 9 and again.usage.calls == 0


# --------------------------------------------------------------------------- score read-out


@pytest.mark.parametrize("mode", ["auto", "guided"])
async def test_missing_score_is_read_out_after_the_conversation(tiny_backend, pool, mode):
    """On a real (tiny) model: the final turn has no score, so it is filled the wrapped
    verifier's way for its score mode, from the conversation and the final turn's text."""
    from proofcritic.llm import ChatMessage, GenerateConfig
    from proofcritic.verifier import score_prefix

    model = Model(tiny_backend)
    verifier = Verifier(model, config=GenerateConfig(temperature=0, max_tokens=8), score_mode=mode)
    critic = CriticVerifier(verifier, [PythonTool(pool)], max_tool_calls=1)
    [v] = await critic.verify(PROBLEM, PROOF)
    assert v.tool_calls == [] and v.score is not None and not v.format_ok
    messages = critic.messages(PROBLEM, PROOF)
    prefix = [*messages, ChatMessage(role="assistant", content=score_prefix(v.raw))]
    if mode == "auto":
        assert v.score_source == "likelihood"
        totals = await model.sequence_logprobs(prefix, ["0}", "0.5}", "1}"])
        best = max(range(3), key=totals.__getitem__)
        assert v.score == (0.0, 0.5, 1.0)[best]
    else:
        assert v.score_source == "guided"  # the local backend scores the three choices


async def test_unusable_revision_keeps_the_proof_and_retries_with_a_new_seed(pool):
    """A revision cut off for length is not a proof: the current proof stays, the round is
    spent, and the next round asks again (a new seed, so not the cached answer)."""
    seeds = []

    def script(call):
        messages = turns(call)
        if call.role == "verify":
            if len(messages) == 1:
                return tool_turn("print('ok')")
            return f"Fine.\n\n{SCORE_MARKER}\n\\boxed{{{1 if 'PROOF-OK' in messages[0].content else 0}}}"
        if "## Critique" in messages[0].content:
            seeds.append(call.request.config.seed)
            if len(seeds) == 1:
                return generation_text("HALF", 0.5), "length"
            return generation_text("PROOF-OK", 1)
        return generation_text("PROOF-0", 0.5)

    backend = ScriptedBackend(script)
    result = await CriticStrategy(tool_objects=[PythonTool(pool)], max_tool_calls=1).solve(
        PROBLEM, Roles.from_models(Model(backend))
    )
    steps = [s["step"] for s in result.transcript]
    assert steps == ["generate", "critique", "revise", "revision_unusable", "revise", "critique"]
    assert len(set(seeds)) == 2 and result.proof == "PROOF-OK" and result.stop_reason == "passed at round 2"
    # the second revision still revised PROOF-0 with its critique
    second = [turns(c)[0].content for c in backend.calls if "## Critique" in turns(c)[0].content][1]
    assert "PROOF-0" in second and "HALF" not in second
