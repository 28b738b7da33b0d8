"""GRPO training throughput per role, with the reward model really in the loop.

For each role (verifier, meta-verifier, generator), in one run: training steps per second,
reward-model calls per step (the reward model's ``usage.calls``) and the share of step time
spent waiting on the reward model (wall time inside the reward callables / wall time of the
steps; the callables' own parsing takes microseconds). The format-failure rate of the policy's
completions is printed too: a completion that breaks the output protocol earns 0 without any
reward-model call, so the calls per step depend on it.

The default policy is the tests' tiny random Llama after the protocol warm-up
(``tests/tiny_model.py``, imported with ``tests/`` on ``sys.path``), which writes well-formed
outputs; it also serves as the reward model (the meta-verifier for the verifier role, verifier
and meta-verifier for the generator). The meta-verifier's reward needs no model (R_format * R_score against references).

    python perf/training.py [--steps 4]
    python perf/training.py --model PATH [--warmup] [--reward-model transformers/PATH|vllm/NAME]

``--model`` is any checkpoint folder (or ``smollm2``); add ``--warmup`` when it does not know
the protocol yet (the warm-up then runs with ``--warmup-lr``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_model: test scaffolding

ROLES = ("verifier", "meta_verifier", "generator")


class _Timed:
    """A reward callable that adds its wall time to a shared clock; other attributes pass through."""

    def __init__(self, inner, clock: dict):
        self.inner, self.clock = inner, clock
        self.__name__ = inner.__name__

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.clock["reward_s"] += time.perf_counter() - started

    def __getattr__(self, name):
        return getattr(self.inner, name)


def measure(role: str, policy: str, reward_spec: str, folder: Path, args) -> dict:
    from tiny_model import write_sample_data
    from transformers import TrainerCallback

    from proofcritic.llm import GenerateConfig, get_model
    from proofcritic.training import recipes

    clock = {"reward_s": 0.0}
    step_times: list[float] = []
    failures: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, a, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.started)

        def on_log(self, a, state, control, logs=None, **kwargs):
            failures.extend(v for k, v in (logs or {}).items() if k.endswith("/format_failure_rate"))

    reward_model = None
    if role != "meta_verifier":
        reward_model = get_model(
            reward_spec, cache=False, defaults=GenerateConfig(max_tokens=args.rm_tokens, temperature=0.0)
        )
    original = recipes.build_rewards
    recipes.build_rewards = lambda config, model=None: [_Timed(r, clock) for r in original(config, model)]
    try:
        config = recipes.ProofcriticGRPOConfig(
            output_dir=str(folder / role),
            use_cpu=True,
            bf16=False,
            max_steps=args.steps,
            logging_steps=1,
            learning_rate=args.lr,
            save_strategy="no",
            report_to="none",
            seed=0,
            model=policy,
            role=role,
            train_file=str(write_sample_data(folder / "data", role)),
            num_generations=args.generations,
            per_device_train_batch_size=args.batch,
            max_completion_length=args.tokens,
            reward_model_max_tokens=args.rm_tokens,
            reward_model=None if reward_model is None else reward_spec,
        )
        recipes.train_grpo(config, reward_model=reward_model, callbacks=[StepClock()])
    finally:
        recipes.build_rewards = original
    total = sum(step_times)
    steps = max(1, len(step_times))
    calls = reward_model.usage.calls if reward_model is not None else 0
    return {
        "role": role,
        "steps": len(step_times),
        "steps_per_s": len(step_times) / total if total else 0.0,
        "step_s": total / steps,
        "rm_calls_per_step": calls / steps,
        "rm_share": clock["reward_s"] / total if total else 0.0,
        "format_failures": sum(failures) / len(failures) if failures else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per role")
    parser.add_argument("--model", default=None, help="policy checkpoint (default: tiny random Llama + warm-up)")
    parser.add_argument("--warmup", action="store_true", help="teach --model the output protocol first")
    parser.add_argument("--warmup-lr", type=float, default=1e-5, help="learning rate of the --warmup run")
    parser.add_argument("--reward-model", default=None, help="BACKEND/MODEL that scores (default: transformers/POLICY)")
    parser.add_argument("--tokens", type=int, default=128, help="max completion tokens of the policy")
    parser.add_argument("--rm-tokens", type=int, default=96, help="max new tokens of each reward-model call")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (num_generations)")
    parser.add_argument("--batch", type=int, default=8, help="completions per step (per_device_train_batch_size)")
    parser.add_argument("--lr", type=float, default=1e-4, help="GRPO learning rate")
    args = parser.parse_args()

    from tiny_model import build_warm_model, warm_up

    from proofcritic.training.recipes import resolve_model_path

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        if args.model is None:
            policy = str(build_warm_model(folder))
        elif args.warmup:
            policy = warm_up(resolve_model_path(args.model), folder / "warm", learning_rate=args.warmup_lr)
        else:
            policy = resolve_model_path(args.model)
        warm_s = time.perf_counter() - started
        reward_spec = args.reward_model or f"transformers/{policy}"
        rows = [measure(role, policy, reward_spec, folder, args) for role in ROLES]
    print(
        f"policy: {args.model or 'tiny random Llama'}{' + warm-up' if args.model is None or args.warmup else ''}"
        f" ({warm_s:.1f}s to prepare); reward model: {args.reward_model or 'the policy'}; "
        f"{args.batch} completions/step ({args.generations} per prompt), <= {args.tokens} tokens, "
        f"reward model <= {args.rm_tokens} tokens"
    )
    print(
        f"{'role':<14}{'steps':>6}{'steps/s':>9}{'s/step':>8}{'RM calls/step':>15}"
        f"{'RM wait share':>15}{'format fail':>13}"
    )
    for r in rows:
        print(
            f"{r['role']:<14}{r['steps']:>6}{r['steps_per_s']:>9.3f}{r['step_s']:>8.2f}"
            f"{r['rm_calls_per_step']:>15.2f}{r['rm_share']:>15.1%}{r['format_failures']:>13.1%}"
        )


if __name__ == "__main__":
    main()
