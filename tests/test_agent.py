"""The agent loop (proofcritic.pipelines.agent): counters, repair/dispute flow, budgets, format
failures, prompt fallback (scripted model), and one end-to-end run on SmolLM2."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from pydantic import ValidationError
from scripted import Call, ScriptedBackend, generation_text, judge_text, repair_text, verification_text

from proofcritic.budget import Budget, budget_scope
from proofcritic.errors import PromptError
from proofcritic.llm import GenerateConfig, Model
from proofcritic.pipelines import Roles
from proofcritic.pipelines._agent_roles import agent_prompts
from proofcritic.pipelines.agent import AgentConfig, AgentStrategy
from proofcritic.promptset import OPTIONAL_TEMPLATE_VARIABLES, PromptSet
from proofcritic.types import Problem

PROBLEM = Problem(id="p", statement="Prove that $n^2+n$ is even for every integer $n$.")
VERIFY_ROLES = ("verify", "agent_reverify")
Answer = str | tuple[str, str]


def agent_script(
    verdicts: Iterable[bool],
    *,
    solve: Callable[[int], Answer] | None = None,
    improve: Callable[[int], Answer] | None = None,
    verify: Callable[[Call, int], Answer] | None = None,
    judge: Callable[[int, bool], Answer] | None = None,
    repair: Callable[[Call, int], Answer] | None = None,
) -> Callable[[Call], Answer]:
    """Answers per role; the k-th judge call answers ``verdicts[k]`` unless ``judge`` overrides."""
    verdict_of = iter(verdicts)
    seen: Counter[str] = Counter()

    def script(call: Call) -> Answer:
        role = "verify" if call.role in VERIFY_ROLES else call.role
        seen[role] += 1
        k = seen[role]
        if role == "generate":
            return solve(k) if solve else generation_text(f"SOLVED PROOF {k}", 1)
        if role == "agent_improve":
            return improve(k) if improve else generation_text(f"IMPROVED PROOF {k}", 1)
        if role == "verify":
            return verify(call, k) if verify else verification_text(1)
        if role == "agent_judge":
            verdict = next(verdict_of)
            return judge(k, verdict) if judge else judge_text(verdict)
        if role == "agent_repair":
            return repair(call, k) if repair else repair_text(f"REPAIRED PROOF {k}")
        raise AssertionError(f"unexpected role {call.role}")

    return script


async def run_agent(script: Callable[[Call], Answer], prompts: PromptSet | None = None, **params):
    backend = ScriptedBackend(script)
    roles = Roles.from_models(Model(backend), prompts=prompts)
    result = await AgentStrategy(**params).solve(PROBLEM, roles)
    return result, backend


def counts(backend: ScriptedBackend) -> dict[str, int]:
    found = Counter(c.role for c in backend.calls)
    found["verify"] += found.pop("agent_reverify", 0)
    return {role: n for role, n in found.items() if n}


def steps(result, step: str) -> list[dict]:
    return [e for e in result.transcript if e["step"] == step]


# --------------------------------------------------------------------------- counters


async def test_accepts_after_exactly_five_consecutive_passes():
    result, backend = await run_agent(agent_script(itertools.repeat(True)))
    assert counts(backend) == {"generate": 1, "agent_improve": 1, "verify": 5, "agent_judge": 5}
    assert result.strategy == "agent" and result.stop_reason.startswith("accepted")
    assert result.proof == "IMPROVED PROOF 1" and result.generation.proof == "IMPROVED PROOF 1"
    assert len(result.verifications) == 5 and result.mean_score == 1.0 and not result.budget_limited
    assert [e["step"] for e in result.transcript] == [
        "solve",
        "improve",
        *["verify", "judge", "verdict"] * 5,
        "run_end",
    ]
    assert [e["consecutive_passes"] for e in steps(result, "verdict")] == [1, 2, 3, 4, 5]
    assert all({"run", "iteration", "step"} <= set(e) for e in result.transcript)
    assert [e["iteration"] for e in steps(result, "verify")] == [1, 2, 3, 4, 5]
    assert result.usage.calls == 12 and result.rounds == 5 and result.proof_id == "run-1/improve"


async def test_a_fail_resets_the_pass_counter_and_triggers_a_repair():
    result, backend = await run_agent(agent_script([True] * 4 + [False] + [True] * 5))
    assert counts(backend) == {"generate": 1, "agent_improve": 1, "verify": 10, "agent_judge": 10, "agent_repair": 1}
    verdicts = steps(result, "verdict")
    assert [e["consecutive_passes"] for e in verdicts] == [1, 2, 3, 4, 0, 1, 2, 3, 4, 5]
    assert [e["consecutive_failures"] for e in verdicts] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert steps(result, "repair")[0]["iteration"] == 5
    assert result.proof == "REPAIRED PROOF 1" and len(result.verifications) == 5
    assert result.proof_id == "run-1/repair-5" and result.rounds == 10
    assert result.stop_reason == "accepted: 5 consecutive passes in run 1 (iteration 10)"


async def test_gives_up_after_ten_consecutive_failures_then_starts_a_new_run():
    result, backend = await run_agent(agent_script([False] * 10 + [True] * 5))
    # no repair after the 10th failure: the run ends there
    assert counts(backend) == {"generate": 2, "agent_improve": 2, "verify": 15, "agent_judge": 15, "agent_repair": 9}
    ends = steps(result, "run_end")
    assert [(e["run"], e["iteration"], e["outcome"]) for e in ends] == [(1, 10, "gave_up"), (2, 5, "accepted")]
    assert [e["consecutive_failures"] for e in steps(result, "verdict")][:10] == list(range(1, 11))
    assert result.proof == "IMPROVED PROOF 2" and "run 2" in result.stop_reason


async def test_a_pass_resets_the_failure_counter():
    result, backend = await run_agent(agent_script([False] * 9 + [True] + [False] * 10), max_runs=1)
    assert counts(backend) == {"generate": 1, "agent_improve": 1, "verify": 20, "agent_judge": 20, "agent_repair": 18}
    assert [e["consecutive_failures"] for e in steps(result, "verdict")][8:12] == [9, 0, 1, 2]
    assert steps(result, "run_end")[0]["iteration"] == 20
    assert result.stop_reason == "not accepted in 1 runs (gave_up)"
    assert result.proof == "REPAIRED PROOF 9"  # the only proof that passed once


async def test_thirty_iteration_cap():
    result, backend = await run_agent(agent_script(itertools.cycle([True] * 4 + [False])), max_runs=2)
    # per run: 30 rounds, fails at 5, 10, ..., 30; the fail at 30 is not repaired
    assert counts(backend) == {"generate": 2, "agent_improve": 2, "verify": 60, "agent_judge": 60, "agent_repair": 10}
    assert [(e["iteration"], e["outcome"]) for e in steps(result, "run_end")] == [(30, "max_iterations")] * 2
    assert result.stop_reason == "not accepted in 2 runs (max_iterations, max_iterations)"
    assert not result.budget_limited and result.proof is not None


async def test_best_so_far_when_nothing_is_accepted():
    result, _ = await run_agent(
        agent_script([True, True, True, False, False, False]), failures_to_give_up=3, max_runs=1, max_iterations=10
    )
    assert result.proof == "IMPROVED PROOF 1" and len(result.verifications) == 4
    assert result.stop_reason.startswith("not accepted")


# --------------------------------------------------------------------------- bug report and disputes


async def test_bug_report_reaches_the_repair_and_disputes_reach_the_verifier():
    def verify(call: Call, k: int) -> str:
        if k == 1:
            return verification_text(0, [("Step 2", "Critical Error", "BUG-17 the parity claim is unproved")])
        return verification_text(1)

    def repair(call: Call, k: int) -> str:
        return repair_text(
            "REPAIRED PROOF", disputes=[("BUG-17", "REBUTTAL-42 n(n+1) is a product of consecutive integers")]
        )

    result, backend = await run_agent(agent_script([False] + [True] * 5, verify=verify, repair=repair))
    (repair_call,) = [c for c in backend.calls if c.role == "agent_repair"]
    assert "BUG-17" in repair_call.prompt and "IMPROVED PROOF 1" in repair_call.prompt
    verify_calls = [c for c in backend.calls if c.role in VERIFY_ROLES]
    assert [c.role for c in verify_calls] == ["verify"] + ["agent_reverify"] * 5
    assert all("REBUTTAL-42" in c.prompt and "REPAIRED PROOF" in c.prompt for c in verify_calls[1:])
    assert "REBUTTAL-42" not in verify_calls[0].prompt
    (repaired,) = steps(result, "repair")
    assert len(repaired["disputed_items"]) == 1 and "REBUTTAL-42" in repaired["disputes"]
    assert [e["template"] for e in steps(result, "verify")] == ["verify"] + ["agent_reverify"] * 5
    assert result.proof == "REPAIRED PROOF"
    assert type(result).model_validate_json(result.model_dump_json()).model_dump() == result.model_dump()
    # the judge read the failing log
    assert "BUG-17" in next(c for c in backend.calls if c.role == "agent_judge").prompt


async def test_a_repair_without_disputes_is_verified_plainly():
    result, backend = await run_agent(agent_script([False] + [True] * 5))
    assert [c.role for c in backend.calls if c.role in VERIFY_ROLES] == ["verify"] * 6
    assert steps(result, "repair")[0]["disputed_items"] == []


# --------------------------------------------------------------------------- failures and budgets


async def test_format_failures_count_as_failures():
    def verify(call: Call, k: int) -> Answer:
        return (verification_text(1)[:40], "length") if k == 1 else verification_text(1)

    result, backend = await run_agent(
        agent_script([True], verify=verify, judge=lambda k, v: "I cannot tell. \\boxed{maybe}"),
        failures_to_give_up=2,
        max_runs=1,
    )
    # round 1: the cut-off verification fails without a judge call; round 2: the judge's answer does not parse
    assert counts(backend) == {"generate": 1, "agent_improve": 1, "verify": 2, "agent_judge": 1, "agent_repair": 1}
    reasons = [e["reason"] for e in steps(result, "verdict")]
    assert reasons[0].startswith("invalid verification: output truncated")
    assert reasons[1].startswith("judge format failure")
    assert result.stop_reason == "not accepted in 1 runs (gave_up)"


async def test_unusable_generations():
    def cut(k):
        return generation_text("CUT", 1)[:20], "length"

    result, backend = await run_agent(agent_script([], solve=cut), max_runs=2)
    assert counts(backend) == {"generate": 2}  # no improvement of nothing, no verification
    assert result.proof is None and result.stop_reason == "not accepted in 2 runs (no_proof, no_proof)"
    # a cut-off improvement keeps the solved proof; a cut-off repair keeps the current one
    result, backend = await run_agent(
        agent_script([False, True], improve=cut, repair=lambda call, k: (repair_text("R")[:30], "length")),
        passes_to_accept=1,
        max_runs=1,
    )
    assert [c.prompt.count("SOLVED PROOF 1") > 0 for c in backend.calls if c.role == "verify"] == [True, True]
    assert result.proof == "SOLVED PROOF 1" and result.stop_reason.startswith("accepted")


async def test_format_failures_are_no_proofs_unless_keep_invalid():
    def bare(k):
        return "Since n^2+n = n(n+1) is a product of consecutive integers, it is even."

    params = {"max_runs": 1, "self_improve": False, "passes_to_accept": 1}
    result, backend = await run_agent(agent_script([True], solve=bare), **params)
    assert counts(backend) == {"generate": 1} and result.proof is None
    result, backend = await run_agent(agent_script([True], solve=bare), keep_invalid=True, **params)
    assert result.stop_reason.startswith("accepted") and result.proof.startswith("Since n^2+n")


async def test_budget_exhaustion_returns_the_best_so_far():
    backend = ScriptedBackend(agent_script(itertools.repeat(True)))
    roles = Roles.from_models(Model(backend))
    with budget_scope(Budget(max_calls=6)):  # solve, improve, 2 x (verify, judge), then spent
        result = await AgentStrategy().solve(PROBLEM, roles)
    assert result.budget_limited and result.stop_reason.startswith("budget")
    assert result.proof == "IMPROVED PROOF 1" and len(result.verifications) == 2
    assert len(backend.calls) == 6 and len(steps(result, "verdict")) == 2
    with budget_scope(Budget(max_calls=0)):
        result = await AgentStrategy().solve(PROBLEM, roles)
    assert result.budget_limited and result.proof is None and result.transcript == []


# --------------------------------------------------------------------------- seeds and config


async def test_each_call_has_its_own_seed():
    _, backend = await run_agent(agent_script(itertools.repeat(True)))
    seeds = [c.request.config.seed for c in backend.calls]
    assert len(set(seeds)) == len(seeds) == 12 and all(isinstance(s, int) for s in seeds)
    _, again = await run_agent(agent_script(itertools.repeat(True)))
    assert [c.request.config.seed for c in again.calls] == seeds  # a rerun replays the same requests
    _, other = await run_agent(agent_script(itertools.repeat(True)), seed=7)
    assert [c.request.config.seed for c in other.calls] != seeds


async def test_repeated_verifications_are_new_samples_and_a_rerun_replays_the_cache(tmp_path):
    from proofcritic.llm import CompletionCache

    for rerun in (False, True):
        backend = ScriptedBackend(agent_script(itertools.repeat(True)))
        model = Model(backend, cache=CompletionCache(tmp_path / "cache.sqlite"))
        result = await AgentStrategy().solve(PROBLEM, Roles.from_models(model))
        assert result.stop_reason.startswith("accepted") and len(result.verifications) == 5
        # first run: 5 verifications of one proof reach the model (none is a cached copy of
        # another); the rerun is answered from the cache and makes the same decisions
        assert counts(backend) == ({} if rerun else {"generate": 1, "agent_improve": 1, "verify": 5, "agent_judge": 5})
        assert (result.usage.calls, result.usage.cached_calls) == ((0, 12) if rerun else (12, 0))


def test_registered_as_a_strategy():
    from proofcritic.errors import InputError
    from proofcritic.pipelines.solve import get_strategy

    strategy = get_strategy("agent", max_runs="2")
    assert isinstance(strategy, AgentStrategy) and strategy.config.max_runs == 2
    with pytest.raises(InputError, match="no parameter 'max_run'"):
        get_strategy("agent", max_run=2)


def test_config():
    strategy = AgentStrategy(AgentConfig(max_runs=2), max_iterations=7)
    assert strategy.name == "agent"
    assert (strategy.config.max_runs, strategy.config.max_iterations, strategy.config.passes_to_accept) == (2, 7, 5)
    assert AgentConfig().model_dump() == {
        "passes_to_accept": 5,
        "failures_to_give_up": 10,
        "max_iterations": 30,
        "max_runs": 10,
        "self_improve": True,
        "keep_invalid": False,
        "seed": None,
    }
    with pytest.raises(ValidationError, match="raise max_iterations"):
        AgentStrategy(passes_to_accept=6, max_iterations=5)
    with pytest.raises(ValidationError):
        AgentStrategy(max_run=3)
    with pytest.raises(ValidationError):
        AgentStrategy(failures_to_give_up=0)


async def test_without_self_improvement():
    result, backend = await run_agent(agent_script(itertools.repeat(True)), self_improve=False, passes_to_accept=1)
    assert counts(backend) == {"generate": 1, "verify": 1, "agent_judge": 1}
    assert result.proof == "SOLVED PROOF 1"


# --------------------------------------------------------------------------- prompt sets


def _user_set(tmp_path: Path, keep_agent: bool = False) -> Path:
    folder = tmp_path / "user"
    shutil.copytree(PromptSet.load().directory, folder)
    if not keep_agent:
        for path in folder.glob("agent_*"):
            path.unlink()
    verify = folder / "verify.j2"
    verify.write_text(verify.read_text() + "\nUSER-VERIFY-MARK\n")
    return folder


async def test_a_user_set_without_agent_templates_falls_back_to_the_built_in_ones(tmp_path):
    user = PromptSet.load(_user_set(tmp_path))  # the agent templates are not required
    assert user.names == ("generate", "verify", "meta_verify", "refine")
    resolved = agent_prompts(user)
    assert all(s.directory == PromptSet.load().directory for s in resolved.values())
    result, backend = await run_agent(agent_script([False] + [True] * 5), prompts=user)
    assert result.stop_reason.startswith("accepted")
    assert all("USER-VERIFY-MARK" in c.prompt for c in backend.calls if c.role == "verify")
    assert {c.role for c in backend.calls} == {"generate", "agent_improve", "verify", "agent_judge", "agent_repair"}


async def test_a_user_set_may_override_agent_templates(tmp_path):
    folder = _user_set(tmp_path)
    (folder / "agent_judge.txt").write_text("You are reading a verification log. CUSTOM-JUDGE on {problem_id}:\n{log}")
    user = PromptSet.load(folder)
    assert "agent_judge" not in user.names  # a plain load leaves optional roles alone
    resolved = agent_prompts(user)
    assert resolved["agent_judge"].directory == folder and resolved["agent_repair"].directory != folder
    _, backend = await run_agent(agent_script(itertools.repeat(True)), prompts=user, passes_to_accept=2)
    judged = [c.prompt for c in backend.calls if c.role == "agent_judge"]
    assert len(judged) == 2 and all(
        p.startswith("You are reading a verification log. CUSTOM-JUDGE on p:") for p in judged
    )


async def test_a_bad_agent_template_fails_when_the_agent_starts(tmp_path):
    folder = _user_set(tmp_path)
    (folder / "agent_repair.j2").write_text("{{ proof }} {{ verdict }}")
    user = PromptSet.load(folder)  # fine for the core roles
    with pytest.raises(PromptError, match=r"agent_repair\.j2.*verdict"):
        await run_agent(agent_script([]), prompts=user)


def test_with_templates_keeps_custom_variables(tmp_path):
    folder = _user_set(tmp_path, keep_agent=True)
    (folder / "critique.txt").write_text("Critique {proof}.")
    user = PromptSet.load(folder, variables={"critique": ["problem", "proof"]})
    extended = user.with_templates(OPTIONAL_TEMPLATE_VARIABLES)
    assert extended.names == (*user.names, "agent_improve", "agent_judge", "agent_repair", "agent_reverify")
    assert extended.render("critique", problem=PROBLEM, proof="P")[0].content == "Critique P."


# --------------------------------------------------------------------------- SmolLM2


def _smol_roles(smol_backend, generator: Model | None = None) -> Roles:
    return Roles.from_models(
        Model(smol_backend), generator=generator, config=GenerateConfig(max_tokens=16), score_mode="text"
    )


async def test_smollm2_end_to_end(smol_backend):
    """Every role on SmolLM2 with 16 new tokens: outputs are format failures (cut off, no
    markers), the loop counts them as failures and ends cleanly without accepting anything."""
    strategy = AgentStrategy(passes_to_accept=1, failures_to_give_up=1, max_iterations=2, max_runs=1)
    result = await strategy.solve(PROBLEM, _smol_roles(smol_backend))
    assert not result.budget_limited
    (end,) = steps(result, "run_end")
    assert end["outcome"] in ("no_proof", "gave_up")
    assert result.stop_reason == f"not accepted in 1 runs ({end['outcome']})"
    assert (result.proof is None) == (end["outcome"] == "no_proof")
    assert result.transcript[0]["step"] == "solve"
    assert all(not e["passed"] for e in steps(result, "verdict"))
    for entry in result.transcript:
        if entry["step"] in ("solve", "improve", "verify", "judge", "repair"):
            assert not entry["format_ok"] and entry["format_error"]
    assert result.usage.calls == sum(
        e["step"] in ("solve", "improve", "verify", "judge", "repair") for e in result.transcript
    )


async def test_smollm2_verifier_format_failures_end_the_run(smol_backend):
    """A scripted solver, SmolLM2 as verifier (and judge): its 16-token log is a failure, and
    with failures_to_give_up=1 the run gives up at once, keeping the unaccepted proof."""
    solver = Model(ScriptedBackend(agent_script([])))
    strategy = AgentStrategy(passes_to_accept=1, failures_to_give_up=1, max_iterations=2, max_runs=1)
    result = await strategy.solve(PROBLEM, _smol_roles(smol_backend, generator=solver))
    assert [e["step"] for e in result.transcript if e["step"] != "judge"] == [
        "solve",
        "improve",
        "verify",
        "verdict",
        "run_end",
    ]
    (verification,) = result.verifications
    assert not verification.format_ok and verification.raw
    (verdict,) = steps(result, "verdict")
    assert not verdict["passed"] and verdict["consecutive_failures"] == 1
    assert result.proof == "IMPROVED PROOF 1"
    assert result.stop_reason == "not accepted in 1 runs (gave_up)"


# --------------------------------------------------------------------------- adaptive re-verification


def verify_requests(backend: ScriptedBackend) -> list[int]:
    """The samples of each verification request, in the order the requests were sent."""
    sizes: dict[int, int] = {}
    for call in backend.calls:
        if call.role in VERIFY_ROLES:
            sizes[id(call.request)] = sizes.get(id(call.request), 0) + 1
    return list(sizes.values())


@pytest.mark.parametrize(("batch", "requests"), [(4, [4, 1]), (1, [1, 1, 2, 1]), (8, [5])])
async def test_adaptive_draws_a_streak_at_its_checkpoints(batch, requests):
    """Five passes needed: the checkpoints of 5 with the batch (4, 5 / 1, 2, 4, 5 / 5) are the
    requests; the judge still reads one verification per iteration."""
    result, backend = await run_agent(agent_script(itertools.repeat(True)), adaptive=True, batch=batch)
    assert verify_requests(backend) == requests
    assert counts(backend) == {"generate": 1, "agent_improve": 1, "verify": 5, "agent_judge": 5}
    assert result.stop_reason.startswith("accepted") and len(result.verifications) == 5
    (adaptive,) = steps(result, "adaptive")
    assert (adaptive["planned"], adaptive["drawn"], adaptive["used"], adaptive["requests"]) == (5, 5, 5, len(requests))
    assert adaptive["stopped"].startswith("5 consecutive passes")


async def test_adaptive_decisions_follow_the_fixed_loop_and_unused_draws_are_counted():
    """Verdicts pass, fail, then five passes: the same judge calls, repairs and acceptance as the
    fixed loop; the first streak drew 4 (checkpoint 4) and used 2, the second drew 4 + 1."""
    verdicts = [True, False] + [True] * 5
    fixed, fixed_backend = await run_agent(agent_script(iter(verdicts)))
    result, backend = await run_agent(agent_script(iter(verdicts)), adaptive=True, batch=4)
    assert result.stop_reason == fixed.stop_reason and result.proof == fixed.proof == "REPAIRED PROOF 1"
    assert [e["passed"] for e in steps(result, "verdict")] == [e["passed"] for e in steps(fixed, "verdict")]
    assert counts(backend)["agent_judge"] == counts(fixed_backend)["agent_judge"] == 7
    assert counts(fixed_backend)["verify"] == 7 and verify_requests(fixed_backend) == [1] * 7
    assert counts(backend)["verify"] == 9 and verify_requests(backend) == [4, 4, 1]
    first, second = steps(result, "adaptive")
    assert (first["drawn"], first["used"], first["iteration"]) == (4, 2, 1)
    assert first["stopped"].startswith("verification 2 failed: 2 of 4")
    assert (second["drawn"], second["used"], second["iteration"]) == (5, 5, 3)
    # every request sent is in the usage, the one holding the unused two included: 3 verification
    # requests, 7 judge calls, solve, improvement and one repair (the fixed loop: 7 verification requests)
    assert result.usage.calls == len({id(c.request) for c in backend.calls}) == 13
    assert fixed.usage.calls == 17
    assert result.usage.completion_tokens > 0 and fixed.usage.completion_tokens > 0


def test_adaptive_agent_plan_and_config():
    plan = AgentStrategy(adaptive=True, batch=4, max_iterations=10, max_runs=1).plan()
    assert plan.calls["verification"] == 10 and plan.samples["verification"] == 40
    assert AgentStrategy(max_iterations=10, max_runs=1).plan().samples["verification"] == 10
    assert "adaptive" not in AgentConfig().model_dump()  # a fixed run's settings stay as they were
