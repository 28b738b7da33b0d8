"""GRPO training throughput per role on CPU with the tiny random model.

For each role: training steps per second, reward-model calls per step (the reward Model's
``usage.calls``), and the share of step time spent inside the reward callables (reward time /
step time). Run: ``python perf/training.py [--steps 4]``. The tiny model never writes
well-formed outputs, so the rewards short-circuit (R_format = 0 -> no reward-model call); the
reward share then measures the parsing cost only. A real model (``--model``) calls the reward model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

STATEMENT = "Prove that the sum of two even integers is even."
PROOF = "Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even."


class _Timed:
    """A reward callable that adds its wall time to a shared counter; attributes pass through."""

    def __init__(self, inner, clock: dict):
        self.inner, self.clock = inner, clock
        self.__name__ = inner.__name__

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.clock["reward_s"] += time.perf_counter() - started
            self.clock["reward_calls"] += 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _data(folder: Path, role: str) -> Path:
    if role == "verifier":
        rows = [{"problem": STATEMENT, "proof": PROOF, "score": 1}, {"problem": STATEMENT, "proof": "obvious", "score": 0}]
    elif role == "meta_verifier":
        rows = [{"problem": STATEMENT, "proof": PROOF, "analysis": "Complete.", "meta_score": 1},
                {"problem": STATEMENT, "proof": "obvious", "analysis": "Fine.", "meta_score": 0}]
    else:
        rows = [{"problem": STATEMENT}, {"problem": "Prove that 3 divides n^3 - n."}]
    path = folder / f"{role}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def measure(role: str, model_dir: str, folder: Path, steps: int, tokens: int) -> dict:
    from transformers import TrainerCallback

    from proofcritic.llm import GenerateConfig, get_model
    from proofcritic.training import recipes

    clock = {"reward_s": 0.0, "reward_calls": 0}
    step_times: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.t)

    reward_model = None
    if role != "meta_verifier":
        reward_model = get_model(f"transformers/{model_dir}", cache=False, defaults=GenerateConfig(max_tokens=tokens))
    original = recipes.build_rewards
    recipes.build_rewards = lambda config, model=None: [_Timed(r, clock) for r in original(config, model)]
    try:
        config = recipes.ProofcriticGRPOConfig(
            output_dir=str(folder / role), use_cpu=True, bf16=False, max_steps=steps, logging_steps=1,
            learning_rate=1e-2, save_strategy="no", report_to="none", seed=0, entropy_coef=1.0, model=model_dir,
            role=role, train_file=str(_data(folder, role)), num_generations=2, per_device_train_batch_size=2,
            max_completion_length=tokens, reward_model_max_tokens=tokens,
            reward_model=None if reward_model is None else f"transformers/{model_dir}")
        recipes.train_grpo(config, reward_model=reward_model, callbacks=[StepClock()])
    finally:
        recipes.build_rewards = original
    total = sum(step_times)
    calls = reward_model.usage.calls if reward_model is not None else 0
    return {"role": role, "steps": len(step_times), "steps_per_s": len(step_times) / total if total else 0.0,
            "step_s": total / max(1, len(step_times)), "rm_calls_per_step": calls / max(1, len(step_times)),
            "reward_share": clock["reward_s"] / total if total else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=8, help="max completion / reward-model tokens")
    parser.add_argument("--model", default=None, help="model folder (default: the tiny random Llama)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from conftest import build_tiny_model

            model_dir = str(build_tiny_model(folder / "tiny"))
        rows = [measure(role, model_dir, folder, args.steps, args.tokens)
                for role in ("verifier", "meta_verifier", "generator")]
    print(f"{'role':<14}{'steps':>6}{'steps/s':>10}{'s/step':>9}{'RM calls/step':>15}{'reward share':>14}")
    for r in rows:
        print(f"{r['role']:<14}{r['steps']:>6}{r['steps_per_s']:>10.2f}{r['step_s']:>9.3f}"
              f"{r['rm_calls_per_step']:>15.2f}{r['reward_share']:>13.1%}")


if __name__ == "__main__":
    main()
