"""Step labels by rollouts (label-steps): scripted models whose rollouts succeed on known samples
give known hard and soft labels; early stop, the verifier as judge, budgets and the cache."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from scripted import Call, ScriptedBackend, verification_text

from proofcritic.llm import CompletionCache, GenerateConfig, Model
from proofcritic.pipelines.step_labels import Roller, StepLabelConfig, label_steps, label_steps_jsonl
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

SEED = 100  # the global sample index of a rollout is its request's seed - SEED + its index
PROBLEM = Problem(id="p", statement="Compute x.")
GOLD = "\\frac{1}{2}"
SOLUTION = "Step 1. We set up.\n\nStep 2. We reduce.\n\nStep 3. We compute.\n\nStep 4. Final answer: $\\boxed{1}$."
#: rollout samples that reach the gold answer, by the number of steps in the prefix
WINNERS = {1: {0, 1, 3}, 2: {1, 3}, 3: set()}


def _steps_in(prompt: str) -> int:
    return max(int(i) for i in re.findall(r"Step (\d)\.", prompt))


def _sample(call: Call) -> int:
    return call.request.config.seed - SEED + call.index


def answer_script(call: Call) -> str:
    assert call.role == "rollout", call.role
    won = _sample(call) in WINNERS[_steps_in(call.prompt)]
    return f"We finish.\n\nFinal answer: \\boxed{{{'0.5' if won else '2'}}}"


def _roles(script, cache=None):
    backend = ScriptedBackend(script)
    model = Model(backend, cache=cache)
    config = GenerateConfig(seed=SEED, max_tokens=64)
    return backend, Roller(model, config=config), Verifier(model, config=config)


def test_soft_and_hard_labels_from_known_success_rates():
    backend, roller, _ = _roles(answer_script)
    config = StepLabelConfig(n=4, early_stop=False)
    result = asyncio.run(label_steps(roller, None, PROBLEM, SOLUTION, answer=GOLD, config=config))
    assert result.completions[0] == "Step 1. We set up."
    assert result.soft_labels == [0.75, 0.5, 0.0, 0.0]  # the last step: the solution's own answer 1
    assert result.labels == [True, True, False, False]
    assert result.first_bad_step == 2 and result.status == "labeled"
    assert all(e.soft_exact for e in result.steps)
    assert backend.count("rollout") == 12  # 4 per step but the last, which is not continued
    last = result.steps[-1].rollouts[0]
    assert (last.answer.answer, last.answer.correct) == ("1", False)
    rollout = result.steps[0].rollouts[3]
    assert rollout.passed and rollout.answer.answer == "0.5" and rollout.continuation.startswith("We finish.")
    assert "2 bad (first bad: step 3)" in result.reason
    # the same solution ending with the right answer: its last step is good
    right = SOLUTION.replace("\\boxed{1}", "\\boxed{1/2}")
    again = asyncio.run(label_steps(roller, None, PROBLEM, right, answer=GOLD, config=config))
    assert again.labels == [True, True, False, True]


def test_early_stop_draws_until_the_first_success():
    backend, roller, _ = _roles(answer_script)
    config = StepLabelConfig(n=4, early_stop=True, batch=1)
    result = asyncio.run(label_steps(roller, None, PROBLEM, SOLUTION, answer=GOLD, config=config))
    assert result.labels == [True, True, False, False]  # the hard labels of all n
    assert [e.judged for e in result.steps] == [1, 2, 4, 1]  # draws 1, then 1 more, then 2 more
    assert result.soft_labels == [1.0, 0.5, 0.0, 0.0]
    assert [e.soft_exact for e in result.steps] == [False, False, True, True]
    assert backend.count("rollout") == 7


def test_proofs_are_judged_by_the_verifier():
    def script(call: Call) -> str:
        if call.role == "rollout":
            good = _sample(call) in WINNERS[_steps_in(call.prompt)]
            return "good ending" if good else "bad ending"
        assert call.role == "verify"
        proof = call.prompt.split("## Proof", 1)[-1] if "## Proof" in call.prompt else call.prompt
        if "ending" in proof:
            return verification_text(1 if "good ending" in proof else 0)
        return verification_text(1 if _sample(call) == 2 else 0)  # the whole solution: its third verification passes

    backend, roller, verifier = _roles(script)
    result = asyncio.run(
        label_steps(roller, verifier, PROBLEM, SOLUTION, config=StepLabelConfig(n=4, early_stop=True, batch=1))
    )
    assert result.judge == "verifier"
    assert result.labels == [True, True, False, True]
    assert [e.judged for e in result.steps] == [1, 2, 4, 4]  # the last: samples 0, 1, then 2 and 3
    assert result.steps[1].rollouts[1].verification.score == 1
    assert backend.count("verify") == 1 + 2 + 4 + 4


def test_budget_then_rerun_on_the_cache(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "s1", "problem": "Compute x.", "proof": SOLUTION, "answer": GOLD}) + "\n")
    config = StepLabelConfig(n=4, early_stop=False)
    cache = CompletionCache(tmp_path / "cache.sqlite", flush_size=1)
    backend, roller, _ = _roles(answer_script, cache)
    stats = asyncio.run(label_steps_jsonl(roller, None, source, tmp_path / "a.jsonl", config=config, max_calls=2))
    [limited] = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert limited["status"] == "budget_exhausted" and limited["budget_limited"]
    assert len(limited["labels"]) < 4 and "steps labeled in order" in limited["reason"]
    asked = backend.count("rollout")
    assert 0 < asked < 12
    # a run without the budget on the same cache: what was asked comes from the cache
    backend2, roller2, _ = _roles(answer_script, cache)
    stats = asyncio.run(label_steps_jsonl(roller2, None, source, tmp_path / "b.jsonl", config=config))
    [full] = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert full["labels"] == [True, True, False, False] and full["soft_labels"] == [0.75, 0.5, 0.0, 0.0]
    assert full["prompt"] == "Compute x." and len(full["completions"]) == 4  # TRL's stepwise fields
    assert backend2.count("rollout") == 12 - asked
    assert stats.extra == {"good_steps": 2, "bad_steps": 2}
    # and a rerun into the same output skips the finished solution
    backend3, roller3, _ = _roles(answer_script, cache)
    asyncio.run(label_steps_jsonl(roller3, None, source, tmp_path / "b.jsonl", config=config))
    assert backend3.calls == []


@pytest.mark.smollm2
def test_label_steps_cli_on_smollm2(smollm2_dir, tmp_path):
    """The command end to end on the embedded model (default --model), tiny n, short rollouts:
    an answer problem (checked by math-verify) and a proof (judged by the verifier)."""
    from typer.testing import CliRunner

    from proofcritic.cli import app

    source, out = tmp_path / "in.jsonl", tmp_path / "steps.jsonl"
    records = [
        {
            "id": "answer",
            "problem": "Compute $1+1$.",
            "proof": "We add one and one.\n\nSo the sum is $2$.",
            "answer": "2",
        },
        {
            "id": "proof",
            "problem": "Prove that $n^2 \\ge 0$ for every real $n$.",
            "proof": "A square is never negative.\n\nHence $n^2 \\ge 0$.",
        },
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["label-steps", "--input", str(source), "--output", str(out), "--n", "2", "--no-early-stop"]
    args += ["--max-tokens", "16", "--seed", "1", "--cache", str(tmp_path / "c.sqlite")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    by_id = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    answer, proof = by_id["answer"], by_id["proof"]
    assert answer["judge"] == "answer" and proof["judge"] == "verifier"
    for record in (answer, proof):
        assert record["status"] == "labeled" and len(record["completions"]) == 2
        assert len(record["labels"]) == len(record["soft_labels"]) == 2
        first = record["steps"][0]
        assert first["judged"] == 2 and all(r["continuation"] or r["format_error"] for r in first["rollouts"])
    assert answer["labels"][-1] is True  # the solution's own answer 2 is right
    assert "processed 2 solution(s)" in result.stderr.replace("\n", " ")


def test_label_steps_dry_run_plans_by_the_longest_solution(tmp_path):
    from typer.testing import CliRunner

    from proofcritic.cli import app

    source = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "problem": "Compute x.", "proof": SOLUTION, "answer": GOLD},
        {"id": "b", "problem": "P", "proof": "One step."},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["label-steps", "--input", str(source), "--output", str(tmp_path / "o.jsonl"), "-n", "4", "--dry-run"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # 4 steps: 3 continued, each drawn at 1, 2, 4 (3 requests, 4 samples); verification: one per rollout (12),
    # the last step 3 requests of 4 samples
    assert "at most 24 model calls: 9 rollout (12 samples), 15 verification (proofs only) (16 samples)" in result.output
    assert "for the longest solution, 4 step(s)" in result.output and "2 solution(s)" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_rollout_prompts_and_the_judge_option(tmp_path):
    backend, roller, _ = _roles(answer_script)
    config = StepLabelConfig(n=1, early_stop=False)
    asyncio.run(label_steps(roller, None, PROBLEM, SOLUTION, answer=GOLD, config=config))
    prompts = sorted((c.prompt for c in backend.calls), key=len)
    assert "Step 1. We set up.\n\n## What to do" in prompts[0]  # the first prefix, as written
    assert "Step 2." not in prompts[0] and "Step 3. We compute." in prompts[-1]
    assert all("Final answer: \\boxed{<the answer>}" in p for p in prompts)
    # --judge answer: a record without an answer is an error record
    source = tmp_path / "in.jsonl"
    rows = [{"id": "no-answer", "problem": "P", "proof": SOLUTION}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    stats = asyncio.run(label_steps_jsonl(roller, None, source, out, config=config, judge="answer"))
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats.errors == 1 and "has no answer" in record["error"]
