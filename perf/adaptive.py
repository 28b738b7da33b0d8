"""Adaptive verification (issue #17) against the fixed procedures: the share of verifier calls
and the share of identical decisions.

Part 1, a simulation driven by real data. The 84 DeepSeekMath-V2 proofs of
``../shared/data/dsmv2/outputs/`` each carry ``average_automatic_rating``, the mean of 64 real
verifier scores (72 of them 1.0). Each seed draws, for every proof, its verification scores from
that mean, and both procedures decide on the SAME draws:

- draw model ``bernoulli`` (the default): each verification scores 1 with probability = the mean,
  else 0. Among all score distributions on [0, 1] with a given mean it has the most 1s and the
  largest variance, so it is the hardest case for "passes all n" (fewest early failures) and for
  the mean-based races (widest spread); ``three-point`` puts mass on 0.5 too
  (P(0.5) = min(mean, 1 - mean), P(1) = mean - P(0.5) / 2, the rest on 0), which labels need to
  see 0.5 analyses;
- meta-verifications (labels only; the data has none): a vote confirms an issue-reporting
  analysis with probability 0.8 when the humans gave the proof less than full marks (its issues
  are real), 0.2 otherwise; it refutes with probability 0.1 resp. 0.7, and says 0.5 otherwise.

Decisions compared, per seed:

- "passes all n" (n = 64) of each proof: fixed = all 64 drawn; adaptive = ``verify_until_fail``'s
  rule (checkpoints 4, 8, 16, 32, 64, stop after the first batch with a failure);
- the label of each proof (LabelConfig defaults n=16, m=8, k=2), both procedures run by the real
  code (:func:`proofcritic.pipelines.label.label_proof`) on an in-process model answering from the
  draws;
- the top-k set of a search pool by mean (n = 64, ties by a random slot order per seed): the 84
  proofs with k = 21 (a quarter, as the released search's 32 of 128), and the 12 proofs whose mean
  is below 1 with k = 3; adaptive = :class:`proofcritic.pipelines.adaptive.Race` at confidence
  0.99.

Part 2, the real command line against a local OpenAI-compatible server (in this process, on
127.0.0.1) whose verifier answers sample i of a proof with a draw from the proof's score
distribution (the Bernoulli model, keyed by the proof and i), its meta-verifier as above, and
whose generator writes proofs whose means come from the data: ``proofcritic label`` on the 84
proofs and ``proofcritic solve --strategy search`` on a few problems, each run with and without
``--adaptive`` (``--seed 0``, so sample i is asked with seed i), counting the server's requests,
samples and prompt tokens, and comparing the decisions (labels; the search's selections and
answer). The inputs are the real proofs' texts (the search's generator writes proofs as long as
the real ones), so prompts are as long as real ones; the token share adds an assumed
``COMPLETION_TOKENS`` per sample (the local server's answers are short).

Usage: python perf/adaptive.py [--seeds 200] [--label-seeds 10] [--model bernoulli|three-point]
       [--skip-cli] [--quick] [--ablation]

``--ablation`` also runs the two top-k races under other choices than the shipped ones, on the
same draws: an empirical-Bernstein interval (the variance bounded through a Chernoff interval
for the mean), checkpoints growing by 1.25 instead of doubling, and a confidence of 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import math
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dsmv2" / "outputs"
MAX_POINTS = {"IMO2025": 7, "CMO2024": 21, "Putnam2024": 10, "IMO-ProofBench-Basic": 7, "IMO-ProofBench-Advanced": 7}
SEED = 0
META_CONFIRM = {True: (0.8, 0.1), False: (0.2, 0.7)}
#: tokens of one verification or meta-verification, for the token shares of part 2 (an assumption:
#: DeepSeekMath-V2's analyses run to thousands of tokens; the local server writes short ones)
COMPLETION_TOKENS = 2000  # flawed by the humans -> (P(confirm), P(refute))
TAG = re.compile(r"\[proof (\d+)\]")
ANALYSIS = re.compile(r"Analysis A(\d+)\.")


def load_proofs() -> list[dict[str, Any]]:
    out = []
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            prediction = record["model_prediction"]
            out.append(
                {
                    "source": path.stem,
                    "problem": record["question"],
                    "mean": float(prediction["average_automatic_rating"]),
                    "flawed": float(prediction["human_rating"]) < MAX_POINTS[path.stem],
                    "proof": prediction["proof"],
                }
            )
    return out


def draw_scores(rng: random.Random, mean: float, n: int, model: str) -> list[float]:
    if model == "bernoulli":
        return [1.0 if rng.random() < mean else 0.0 for _ in range(n)]
    half = min(mean, 1 - mean)
    one = mean - half / 2
    return [rng.choices([1.0, 0.5, 0.0], [one, half, max(0.0, 1 - one - half)])[0] for _ in range(n)]


def draw_votes(rng: random.Random, flawed: bool, m: int) -> list[float]:
    confirm, refute = META_CONFIRM[flawed]
    return [rng.choices([1.0, 0.0, 0.5], [confirm, refute, 1 - confirm - refute])[0] for _ in range(m)]


# --------------------------------------------------------------------------- part 1: simulation


def first_checkpoint_past(failure: int, n: int, batch: int) -> int:
    from proofcritic.pipelines.adaptive import checkpoints

    return next(c for c in checkpoints(n, batch) if c > failure)


def simulate_pass(proofs, seeds: int, model: str, n: int = 64, batch: int = 4) -> dict[str, Any]:
    from proofcritic.pipelines.adaptive import checkpoints

    drawn = fixed = same = decisions = requests = 0
    by_mean = {"mean 1.0": [0, 0], "mean below 1": [0, 0]}
    for seed in range(seeds):
        rng = random.Random(f"pass/{seed}")
        for proof in proofs:
            scores = draw_scores(rng, proof["mean"], n, model)
            failure = next((i for i, s in enumerate(scores) if s != 1), None)
            fixed_pass = failure is None
            used = n if failure is None else first_checkpoint_past(failure, n, batch)
            adaptive_pass = all(s == 1 for s in scores[:used]) and used == n
            same += fixed_pass == adaptive_pass
            decisions += 1
            drawn += used
            fixed += n
            requests += sum(1 for c in checkpoints(n, batch) if c <= used)
            group = by_mean["mean 1.0" if proof["mean"] >= 1 else "mean below 1"]
            group[0] += used
            group[1] += n
    return {
        "call_share": drawn / fixed,
        "identical": same / decisions,
        "requests_per_proof": requests / decisions,
        "by_group": {k: v[0] / v[1] for k, v in by_mean.items() if v[1]},
    }


class DrawsBackend:
    """An in-process model answering verifications and meta-verifications from fixed draws."""

    def __init__(self) -> None:
        from proofcritic.llm import Backend, Completion
        from proofcritic.parsing import EVALUATION_MARKER, META_SCORE_MARKER, SCORE_MARKER

        scores: dict[int, list[float]] = {}
        votes: dict[tuple[int, int], list[float]] = {}
        self.scores, self.votes = scores, votes
        self.calls = {"verify": 0, "meta": 0}
        self.requests = {"verify": 0, "meta": 0}
        outer = self

        class _Backend(Backend):
            name, model = "draws", "sim"

            async def generate(self, request):
                prompt = "\n".join(m.content for m in request.messages)
                proof = int(TAG.search(prompt).group(1))
                start = request.config.seed - SEED
                meta = "You are reviewing the work of a grader" in prompt
                outer.requests["meta" if meta else "verify"] += 1
                out = []
                for j in range(request.config.n):
                    index = start + j
                    if meta:
                        outer.calls["meta"] += 1
                        analysis = int(ANALYSIS.search(prompt).group(1))
                        text = f"Reviewed.\n\n{META_SCORE_MARKER}\n\\boxed{{{votes[(proof, analysis)][index]:g}}}"
                    else:
                        outer.calls["verify"] += 1
                        score = scores[proof][index]
                        issue = (
                            "- None"
                            if score == 1
                            else '- **Location:** "x" | **Severity:** Critical Error | **Issue:** y'
                        )
                        text = (
                            f"{EVALUATION_MARKER}\n\nAnalysis A{index}.\n\n### Issues\n\n{issue}\n\n"
                            f"{SCORE_MARKER}\n\\boxed{{{score:g}}}"
                        )
                    out.append(Completion(text=text, finish_reason="stop", prompt_tokens=100, completion_tokens=50))
                return out

        self.backend = _Backend()


def simulate_labels(proofs, seeds: int, model: str) -> dict[str, Any]:
    from proofcritic.llm import GenerateConfig, Model
    from proofcritic.meta_verifier import MetaVerifier
    from proofcritic.pipelines.label import LabelConfig, label_proof
    from proofcritic.types import Problem
    from proofcritic.verifier import Verifier

    base = LabelConfig()
    n, m = base.n, base.m
    totals = {"fixed_verify": 0, "fixed_meta": 0, "adaptive_verify": 0, "adaptive_meta": 0}
    same = decisions = 0
    outcomes: dict[str, int] = {}
    groups = {"mean 1.0": [0, 0], "mean below 1": [0, 0]}
    for seed in range(seeds):
        rng = random.Random(f"label/{seed}/{model}")
        draws = DrawsBackend()
        for i, proof in enumerate(proofs):
            draws.scores[i] = draw_scores(rng, proof["mean"], n, model)
            for a in range(n):
                draws.votes[(i, a)] = draw_votes(rng, proof["flawed"], m)
        config = GenerateConfig(seed=SEED)
        model_ = Model(draws.backend, max_concurrency=256)
        verifier = Verifier(model_, config=config, score_mode="text")
        meta_verifier = MetaVerifier(model_, config=config)

        async def run(cfg: LabelConfig, verifier=verifier, meta_verifier=meta_verifier):
            problems = [Problem(id=f"p{i}", statement=p["problem"][:200]) for i, p in enumerate(proofs)]
            return await asyncio.gather(
                *(
                    label_proof(verifier, meta_verifier, problems[i], f"[proof {i}] (text omitted)", cfg)
                    for i in range(len(proofs))
                )
            )

        fixed = asyncio.run(run(base))
        totals["fixed_verify"] += draws.calls["verify"]
        totals["fixed_meta"] += draws.calls["meta"]
        draws.calls = {"verify": 0, "meta": 0}
        adaptive = asyncio.run(run(LabelConfig(adaptive=True)))
        totals["adaptive_verify"] += draws.calls["verify"]
        totals["adaptive_meta"] += draws.calls["meta"]
        for proof, a, f in zip(proofs, adaptive, fixed):
            group = groups["mean 1.0" if proof["mean"] >= 1 else "mean below 1"]
            group[0] += a.sampling.drawn + a.sampling.meta_drawn
            group[1] += len(f.analyses) + len(f.format_failures) + sum(len(x.meta_scores) for x in f.analyses)
            decisions += 1
            same += (a.status, a.label, a.rule) == (f.status, f.label, f.rule)
            outcomes[f.rule] = outcomes.get(f.rule, 0) + 1
    fixed_all = totals["fixed_verify"] + totals["fixed_meta"]
    adaptive_all = totals["adaptive_verify"] + totals["adaptive_meta"]
    return {
        "call_share": adaptive_all / fixed_all,
        "verify_share": totals["adaptive_verify"] / totals["fixed_verify"],
        "meta_share": totals["adaptive_meta"] / max(1, totals["fixed_meta"]),
        "identical": same / decisions,
        "fixed_rules": outcomes,
        "per_proof_fixed": fixed_all / decisions,
        "per_proof_adaptive": adaptive_all / decisions,
        "by_group": {k: v[0] / v[1] for k, v in groups.items() if v[1]},
    }


def simulate_topk(means: list[float], k: int, seeds: int, model: str, confidence: float = 0.99) -> dict[str, Any]:
    from proofcritic.pipelines.adaptive import Race, checkpoints, next_checkpoint

    n, batch = 64, 4
    drawn_total = fixed_total = same = 0
    for seed in range(seeds):
        rng = random.Random(f"topk/{seed}/{model}/{k}")
        scores = [draw_scores(rng, mu, n, model) for mu in means]
        order = list(range(len(means)))
        rng.shuffle(order)
        tiebreak = {i: (-order[i],) for i in range(len(means))}
        full = sorted(range(len(means)), key=lambda i: (-sum(scores[i]) / n, order[i]))
        fixed_set = set(full[:k])
        race = Race(n=n, k=k, confidence=confidence, items=len(means), batch=batch)
        drawn = dict.fromkeys(range(len(means)), checkpoints(n, batch)[0])
        while True:
            todo = race.pick([(i, scores[i][: drawn[i]], tiebreak[i]) for i in drawn])
            if not todo:
                break
            for i in todo:
                drawn[i] = next_checkpoint(drawn[i], n, batch)
        inside, _, _ = race.decide([(i, scores[i][: drawn[i]], tiebreak[i]) for i in drawn])
        same += set(inside) == fixed_set
        drawn_total += sum(drawn.values())
        fixed_total += n * len(means)
    return {"call_share": drawn_total / fixed_total, "identical": same / seeds, "pool": len(means), "k": k}


# --------------------------------------------------------------------------- ablation: other bounds


def _kl(p: float, q: float) -> float:
    q = min(max(q, 1e-12), 1 - 1e-12)
    out = p * math.log(p / q) if p > 0 else 0.0
    return out + ((1 - p) * math.log((1 - p) / (1 - q)) if p < 1 else 0.0)


def _kl_interval(x: float, t: int, level: float) -> tuple[float, float]:
    """The means q with ``t * kl(x, q) <= level`` (Chernoff's bound for scores in [0, 1])."""
    lo_out, lo_in, hi_in, hi_out = 0.0, x, x, 1.0
    for _ in range(40):
        mid = (lo_out + lo_in) / 2
        lo_out, lo_in = (mid, lo_in) if t * _kl(x, mid) > level else (lo_out, mid)
        mid = (hi_in + hi_out) / 2
        hi_in, hi_out = (hi_in, mid) if t * _kl(x, mid) > level else (mid, hi_out)
    return lo_in, hi_in


def bernstein_bounds(scores, n: int, delta: float, hoeffding=None):
    """The interval of ``mean_bounds`` narrowed by Bernstein's inequality where it is tighter: the
    scores' variance bounded by mu (1 - mu) over a Chernoff interval for mu (``delta / 4``),
    Bernstein on the same weighted difference as Hoeffding (``delta / 4``), Hoeffding itself at
    ``delta / 2``; valid at ``delta`` by a union bound."""
    t = len(scores)
    scored = [s for s in scores if s is not None]
    k, rest = len(scored), max(0, n - t)
    found = hoeffding(scores, n, delta / 2)
    if found is None or rest == 0:
        return found
    mean = sum(scored) / k
    lo_mu, hi_mu = _kl_interval(mean, k, math.log(8.0 / delta))
    var = 0.25 if lo_mu <= 0.5 <= hi_mu else max(lo_mu * (1 - lo_mu), hi_mu * (1 - hi_mu))
    level, whole = math.log(8.0 / delta), k + rest
    reach = (rest / whole) * max(1.0 / k, 1.0 / rest)  # the largest weight of one draw in the difference
    half = reach * level / 3 + math.sqrt((reach * level / 3) ** 2 + 2 * level * var * rest / (whole * k))
    return max(found[0], mean - half), min(found[1], mean + half)


def growing_checkpoints(growth: float):
    def checkpoints(n: int, batch: int) -> list[int]:
        out, t = [], max(1, batch)
        while t < n:
            out.append(t)
            t = max(t + 1, math.ceil(t * growth))
        return [*out, n]

    return checkpoints


def ablation(proofs, seeds: int, model: str) -> dict[str, Any]:
    """The top-k races under other choices than the shipped ones (Hoeffding, checkpoints doubling
    from 4), on the same draws: empirical Bernstein, checkpoints growing by 1.25, a confidence of 0.9."""
    import proofcritic.pipelines.adaptive as adaptive

    shipped = adaptive.mean_bounds, adaptive.checkpoints
    variants = {
        "shipped (Hoeffding, x2 checkpoints, 0.99)": ({}, 0.99),
        "Bernstein with a Chernoff variance bound": (
            {"mean_bounds": functools.partial(bernstein_bounds, hoeffding=shipped[0])},
            0.99,
        ),
        "checkpoints x1.25 (4, 5, 7, 9, 12, ...)": ({"checkpoints": growing_checkpoints(1.25)}, 0.99),
        "confidence 0.9": ({}, 0.9),
    }
    means = [p["mean"] for p in proofs]
    out: dict[str, Any] = {}
    for name, (patch, confidence) in variants.items():
        for attr, value in patch.items():
            setattr(adaptive, attr, value)
        try:
            out[name] = {
                "top-21 of 84": simulate_topk(means, 21, seeds, model, confidence),
                "top-3 of 12": simulate_topk([m for m in means if m < 1], 3, seeds, model, confidence),
            }
        finally:
            adaptive.mean_bounds, adaptive.checkpoints = shipped
    return out


# --------------------------------------------------------------------------- part 2: the CLI


class ServerScript:
    """The local server's model: verifications drawn from each proof's score distribution (by
    proof and sample index), meta votes as in the simulation, proofs whose means come from the data."""

    def __init__(
        self,
        means: dict[str, float],
        flawed: dict[str, bool],
        pool_means: list[float],
        texts: tuple[str, ...] | list[str] = (),
    ):
        self.means, self.flawed, self.pool_means = means, flawed, pool_means
        self.texts = list(texts) or ["A proof."]  # proof G<i> is as long as the i-th real one

    def mean_of(self, name: str) -> float:
        if name in self.means:
            return self.means[name]
        root = re.match(r"(p\d+)-G(\d+)", name)
        return self.pool_means[int(root.group(2)) % len(self.pool_means)] if root else 0.5

    def answer(self, prompt: str, seed: int, n: int) -> list[str]:
        from proofcritic.parsing import EVALUATION_MARKER, META_SCORE_MARKER, SCORE_MARKER

        name = re.findall(r"\[proof ([^\]]+)\]", prompt)[-1]  # the proof's tag (after the problem's)
        out = []
        for j in range(n):
            index = seed - SEED + j
            key = hashlib.sha256(f"{name}/{index}".encode()).digest()
            u = int.from_bytes(key[:8], "big") / 2**64
            if "You are reviewing the work of a grader" in prompt:
                analysis = ANALYSIS.search(prompt).group(1)
                v = int.from_bytes(hashlib.sha256(f"{name}/{analysis}/{index}".encode()).digest()[:8], "big") / 2**64
                confirm, refute = META_CONFIRM[self.flawed.get(name.split("-G")[0], True)]
                vote = 1 if v < confirm else 0 if v < confirm + refute else 0.5
                out.append(f"Reviewed.\n\n{META_SCORE_MARKER}\n\\boxed{{{vote:g}}}")
            elif "## Earlier attempts" in prompt or "Your task is to solve the problem" in prompt:
                child = f"{name}.{seed % 1000}.{j}" if "## Earlier attempts" in prompt else f"{name}-G{j}"
                root = re.match(r"p\d+-G(\d+)", child)
                body = self.texts[int(root.group(1)) % len(self.texts)] if root else self.texts[0]
                out.append(
                    f"## Solution\n\n[proof {child}] {body}\n\n## Self Evaluation\n\n{EVALUATION_MARKER}\nFine.\n\n"
                    f"{SCORE_MARKER}\n\\boxed{{0.5}}"
                )
            else:
                score = 1 if u < self.mean_of(name) else 0
                issue = (
                    "- None"
                    if score == 1
                    else '- **Location:** "A proof" | **Severity:** Critical Error | **Issue:** gap'
                )
                out.append(
                    f"{EVALUATION_MARKER}\n\nAnalysis A{index}.\n\n### Issues\n\n{issue}\n\n{SCORE_MARKER}\n\\boxed{{{score}}}"
                )
        return out


def start_server(script: ServerScript):
    """An OpenAI-compatible server on 127.0.0.1 (aiohttp, in a thread); returns (url, requests, stop)."""
    from aiohttp import web

    requests: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        prompt = "\n".join(m.get("content") or "" for m in body["messages"])
        n = body.get("n") or 1
        requests.append({"n": n, "prompt_tokens": len(prompt) // 4})
        texts = script.answer(prompt, body.get("seed") or 0, n)
        requests[-1]["role"] = (
            "meta"
            if "You are reviewing the work of a grader" in prompt
            else "generate"
            if ("## Earlier attempts" in prompt or "Your task is to solve the problem" in prompt)
            else "verify"
        )
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
        usage = {
            "prompt_tokens": len(prompt) // 4,
            "completion_tokens": 50 * n,
            "total_tokens": len(prompt) // 4 + 50 * n,
        }
        return web.json_response(
            {"id": "x", "object": "chat.completion", "model": "sim", "choices": choices, "usage": usage}
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model"}]})

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(30)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)

    return f"http://127.0.0.1:{holder['port']}/v1", requests, stop


def cli(args: list[str]) -> None:
    from typer.testing import CliRunner

    from proofcritic.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=False)
    if result.exit_code not in (0, 1):
        raise SystemExit(f"proofcritic {' '.join(args)} failed ({result.exit_code}): {result.output}")


def counted(requests: list[dict[str, Any]], role: str) -> tuple[int, int, int]:
    """(requests, samples, prompt tokens at 4 characters a token) the server saw for ``role``."""
    chosen = [r for r in requests if r["role"] == role]
    return len(chosen), sum(r["n"] for r in chosen), sum(r["prompt_tokens"] for r in chosen)


def token_share(adaptive: list[tuple[int, int, int]], fixed: list[tuple[int, int, int]]) -> float:
    """Tokens sent and generated, adaptive over fixed, with COMPLETION_TOKENS per sample and every
    prompt counted in full (no prefix cache)."""

    def total(parts: list[tuple[int, int, int]]) -> int:
        return sum(prompt + COMPLETION_TOKENS * samples for _, samples, prompt in parts)

    return total(adaptive) / total(fixed)


def run_cli(proofs, work: Path, quick: bool) -> dict[str, Any]:
    names = {f"d{i}": p["mean"] for i, p in enumerate(proofs)}
    flawed = {f"d{i}": p["flawed"] for i, p in enumerate(proofs)}
    hard = [p["mean"] for p in proofs if p["mean"] < 1]
    all_means = [p["mean"] for p in proofs]
    out: dict[str, Any] = {}
    common = ["--model", "openai/sim", "--api-key", "x", "--seed", "0", "--concurrency", "32"]

    # label: the 84 proofs
    rows = [  # the real proofs and problems, so that prompts are as long as real ones
        {"id": f"d{i}", "problem": p["problem"], "proof": f"[proof d{i}] {p['proof']}"} for i, p in enumerate(proofs)
    ]
    (work / "proofs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = ServerScript(names, flawed, all_means)
    url, requests, stop = start_server(script)
    try:
        results = {}
        for mode in ("fixed", "adaptive"):
            requests.clear()
            extra = ["--adaptive"] if mode == "adaptive" else []
            output = work / f"labels-{mode}.jsonl"
            cli(
                [
                    "label",
                    "--input",
                    str(work / "proofs.jsonl"),
                    "--output",
                    str(output),
                    "--review",
                    str(work / f"review-{mode}.jsonl"),
                ]
                + common
                + ["--base-url", url, "--cache", str(work / f"cache-{mode}.sqlite")]
                + extra
            )
            records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
            results[mode] = (records, counted(requests, "verify"), counted(requests, "meta"))
        (fixed, fv, fm), (adaptive, av, am) = results["fixed"], results["adaptive"]
        same = sum(
            (adaptive[i]["status"], adaptive[i]["label"], adaptive[i]["rule"])
            == (fixed[i]["status"], fixed[i]["label"], fixed[i]["rule"])
            for i in fixed
        )
        out["label"] = {
            "proofs": len(fixed),
            "identical": same / len(fixed),
            "fixed": {
                "verify_requests": fv[0],
                "verifications": fv[1],
                "meta_requests": fm[0],
                "meta_verifications": fm[1],
                "prompt_tokens": fv[2] + fm[2],
            },
            "adaptive": {
                "verify_requests": av[0],
                "verifications": av[1],
                "meta_requests": am[0],
                "meta_verifications": am[1],
                "prompt_tokens": av[2] + am[2],
            },
            "sample_share": (av[1] + am[1]) / (fv[1] + fm[1]),
            "request_share": (av[0] + am[0]) / (fv[0] + fm[0]),
            "token_share": token_share([av, am], [fv, fm]),
        }
    finally:
        stop()

    # solve --strategy search: pools whose means come from the data
    texts = {"all": [p["proof"] for p in proofs], "hard": [p["proof"] for p in proofs if p["mean"] < 1]}
    for label, means, body in (
        ("search (all 84 means)", all_means, texts["all"]),
        ("search (the 12 means below 1)", hard, texts["hard"]),
    ):
        problems = [
            {"id": f"p{j}", "problem": f"Problem {j}: prove the claim. [proof p{j}]"} for j in range(2 if quick else 4)
        ]
        (work / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in problems))
        url, requests, stop = start_server(ServerScript({}, {}, means, body))
        try:
            results = {}
            for mode in ("fixed", "adaptive"):
                requests.clear()
                extra = ["--adaptive"] if mode == "adaptive" else []
                output = work / f"search-{mode}-{len(means)}.jsonl"
                cli(
                    ["solve", "--strategy", "search", "--input", str(work / "problems.jsonl"), "--output", str(output)]
                    + ["--initial-samples", "16", "--verifications", "64", "--top-k", "4", "--trials", "4"]
                    + ["--samples-per-trial", "2", "--rounds", "3"]
                    + common
                    + ["--base-url", url, "--cache", str(work / f"cache-search-{mode}-{len(means)}.sqlite")]
                    + extra
                )
                records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
                results[mode] = (records, counted(requests, "verify"))
            (fixed, fv), (adaptive, av) = results["fixed"], results["adaptive"]

            def decisions(record: dict[str, Any]) -> tuple:
                result = record.get("result", record)
                selects = [
                    tuple(sorted(r["proof_id"] for r in s["refine"]))
                    for s in result.get("transcript", [])
                    if s.get("step") == "select"
                ]
                return result.get("proof_id"), tuple(selects)

            same = sum(decisions(adaptive[i]) == decisions(fixed[i]) for i in fixed)
            out[label] = {
                "problems": len(fixed),
                "identical": same / len(fixed),
                "fixed": {"verify_requests": fv[0], "verifications": fv[1], "prompt_tokens": fv[2]},
                "adaptive": {"verify_requests": av[0], "verifications": av[1], "prompt_tokens": av[2]},
                "sample_share": av[1] / fv[1],
                "request_share": av[0] / fv[0],
                "token_share": token_share([av], [fv]),
            }
        finally:
            stop()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="seeds of the pass-all and top-k simulations")
    parser.add_argument("--label-seeds", type=int, default=10, help="seeds of the label simulation (the real code)")
    parser.add_argument("--model", choices=["bernoulli", "three-point", "both"], default="both")
    parser.add_argument("--skip-cli", action="store_true", help="only the simulation")
    parser.add_argument("--quick", action="store_true", help="few seeds and problems (a smoke run)")
    parser.add_argument("--ablation", action="store_true", help="also the top-k races under other bounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.label_seeds = 10, 2
    sys.path.insert(0, str(ROOT))
    proofs = load_proofs()
    ones = sum(p["mean"] >= 1 for p in proofs)
    print(f"data: {len(proofs)} DeepSeekMath-V2 proofs, {ones} with mean 1.0 over 64 verifications")
    report: dict[str, Any] = {}
    models = ["bernoulli", "three-point"] if args.model == "both" else [args.model]
    for model in models:
        start = time.perf_counter()
        part = {
            "passes all 64": simulate_pass(proofs, args.seeds, model),
            "label (n=16, m=8, k=2)": simulate_labels(proofs, args.label_seeds, model),
            "top-21 of the 84 (n=64)": simulate_topk([p["mean"] for p in proofs], 21, args.seeds, model),
            "top-3 of the 12 below 1 (n=64)": simulate_topk(
                [p["mean"] for p in proofs if p["mean"] < 1], 3, args.seeds, model
            ),
        }
        report[model] = part
        ones_share = ones / len(proofs)
        low = part["passes all 64"]["by_group"]["mean below 1"]
        need = (1 / 3 - low) / (1 - low)  # f * 1 + (1 - f) * low <= 1/3
        part["passes all 64"]["target_needs"] = (
            f"{ones_share:.0%} of the proofs pass every verification (each needs all 64); the rest use {low:.1%}: "
            f"1/3 of the calls needs at most {need:.0%} of the proofs at mean 1"
        )
        print(f"\nsimulation, draw model {model} ({time.perf_counter() - start:.0f} s)")
        for name, figures in part.items():
            extra = {k: v for k, v in figures.items() if k not in ("call_share", "identical")}
            print(
                f"  {name:32s} verifier calls {figures['call_share']:6.1%} of the fixed procedure's, "
                f"identical decisions {figures['identical']:7.2%}  {json.dumps(extra, default=str)}"
            )
    if args.ablation:
        start = time.perf_counter()
        report["ablation"] = ablation(proofs, args.seeds, models[0])
        print(f"\nablation of the top-k races, draw model {models[0]} ({time.perf_counter() - start:.0f} s)")
        for name, parts in report["ablation"].items():
            shown = ", ".join(
                f"{part} {figures['call_share']:.1%} (identical {figures['identical']:.0%})"
                for part, figures in parts.items()
            )
            print(f"  {name:44s} {shown}")
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            report["cli"] = run_cli(proofs, Path(tmp), args.quick)
            print(f"\nthe real command line against a local server ({time.perf_counter() - start:.0f} s)")
            for name, figures in report["cli"].items():
                print(
                    f"  {name:32s} samples {figures['sample_share']:6.1%}, requests {figures['request_share']:6.1%}, "
                    f"tokens {figures['token_share']:6.1%} (at {COMPLETION_TOKENS:,} per sample, prompts in full) "
                    f"of the fixed run's; identical decisions {figures['identical']:.0%}; "
                    f"fixed {figures['fixed']}, adaptive {figures['adaptive']}"
                )
    print("\n" + json.dumps(report, default=str))


if __name__ == "__main__":
    main()
