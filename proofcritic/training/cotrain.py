"""The co-training loop of SPEC section 4, step by step, resumable at step granularity.

``cotrain(config, workdir, iterations)`` runs iterations 1..``iterations``. Iteration K lives in
``WORKDIR/iter_K/`` and runs these steps, each in its own folder ``WORKDIR/iter_K/<step>/``:

1. ``verifier``: GRPO for the verifier on D_v (R_format * R_score * R_meta; the meta-verifier
   giving R_meta is the starting checkpoint itself when ``verifier_meta_reward`` is on), then,
   when D_mv has rows, a second, sequential GRPO run for the meta-verifier on D_mv starting
   from the first run's output: one model serves both roles. Two runs, not one mixed run,
   because each TRL reward is per role. Starts from the previous iteration's checkpoint (the
   ``rft`` one when that step ran), iteration 1 from ``base_model``. -> ``model/``
2. ``generator_init``: the generator starts as a copy of the step-1 checkpoint. -> ``model/``
3. ``generator``: GRPO for the generator, the step-1 checkpoint as reward model
   (``transformers/<path>``: verifier and meta-verifier). -> ``model/``
4. ``sample``: ``sample.n`` proofs per problem from the trained generator (strategy ``single``
   through ``solve_jsonl``); every usable generation of the transcripts becomes a line of
   ``proofs.jsonl`` (``solve.jsonl`` keeps the solve results).
5. ``label``: auto-labeling (SPEC section 3) of ``proofs.jsonl`` by the step-1 checkpoint
   -> ``labels.jsonl`` and ``review.jsonl``.
6. ``merge``: D_v of this iteration + the labeled proofs -> ``dv.jsonl``; D_mv + the
   meta-verified analyses -> ``dmv.jsonl`` (deduplicated). They are the next iteration's data.
7. ``rft`` (optional, ``rft.enabled``, from iteration 2 on): rejection fine-tuning (SFT) of the
   generator checkpoint on the best samples of each role: the generations whose proof got the
   highest auto-label of their problem (label >= ``rft.min_label``) and the verifier analyses
   whose score equals the proof's label, without duplicates (``rft_rows.jsonl``; ``rft.sft``
   sets the SFT fields). -> ``model/``, the next iteration's start.

Each step folder has a ``manifest.json``: ``{"step", "iteration", "status": "done", "inputs",
"outputs", "started", "finished", "seconds", ...}``; output paths are relative to the step
folder. A step runs in a fresh temporary folder ``iter_K/.<step>.tmp`` (whose manifest says
``running``) that is renamed to ``<step>`` only once the step has succeeded. On a rerun a step
whose manifest says done is skipped; any other state (a leftover temporary folder, a step
folder without a done manifest) is deleted and the step is redone from scratch.

Fault injection (for tests of resumption): ``cotrain(..., fail_at="iter_K/<step>")`` makes that
step raise :class:`InjectedFailure` after its work, before it is marked done (as a crash would).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._constants import DType
from ..errors import InputError
from ..pipelines.label import LabelConfig

__all__ = [
    "STEPS",
    "CotrainConfig",
    "InjectedFailure",
    "LabelParams",
    "RFTParams",
    "SampleParams",
    "cotrain",
    "load_cotrain_config",
    "read_manifest",
]

#: the steps of one iteration, in order
STEPS = ("verifier", "generator_init", "generator", "sample", "label", "merge", "rft")


class InjectedFailure(RuntimeError):
    """Raised by the step named by :func:`cotrain`'s ``fail_at`` (tests of resumption)."""


#: the weight types of a local model (``--dtype``; defined in proofcritic._constants)
LocalDtype = DType


class SampleParams(BaseModel):
    """Sampling of new proofs from the trained generator (step ``sample``)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(4, ge=1, description="Proofs generated per problem (strategy single, samples=n).")
    max_tokens: int = Field(4096, ge=1, description="Maximum new tokens per generation.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature.")
    top_p: float | None = Field(0.95, gt=0.0, le=1.0)
    keep_invalid: bool = Field(False, description="Keep generations that break the output protocol (their proof text).")
    concurrency: int = Field(4, ge=1, description="Problems solved at once.")
    dtype: LocalDtype | None = Field(None, description="Weight type of the generator while it samples (CLI --dtype).")
    threads: int | None = Field(None, ge=1, description="torch threads while it samples (CLI --threads).")


class LabelParams(LabelConfig.with_defaults(n=4, m=2, k=1)):  # type: ignore[misc]
    """Auto-labeling parameters (step ``label``; SPEC section 3): :class:`LabelConfig`'s (n, m,
    k, confirm_at, refute_at, with smaller defaults) and how the verifier runs."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(2048, ge=1, description="Maximum new tokens per verification / meta-verification.")
    temperature: float = Field(1.0, ge=0.0)
    concurrency: int = Field(4, ge=1, description="Proofs labeled at once.")
    dtype: LocalDtype | None = Field(None, description="Weight type of the verifier while it labels (CLI --dtype).")
    threads: int | None = Field(None, ge=1, description="torch threads while it labels (CLI --threads).")


class RFTParams(BaseModel):
    """Rejection fine-tuning (step ``rft``), from the second iteration on."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    min_label: float = Field(0.5, ge=0.0, le=1.0, description="Generations kept need at least this label.")
    sft: dict[str, Any] = Field(default_factory=dict, description="ProofcriticSFTConfig fields.")


class CotrainConfig(BaseModel):
    """A co-training config (YAML). Relative paths are read from the config file's folder."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(..., description="Iteration 1's starting checkpoint (folder, hub id or smollm2).")
    problems: str = Field(..., description="JSONL of problems (id, statement) for the generator and sampling.")
    dv: str = Field(..., description="Initial D_v: JSONL of problem/proof/score records (or training rows).")
    dmv: str | None = Field(None, description="Initial D_mv: JSONL of problem/proof/analysis/meta_score records.")
    grpo: dict[str, Any] = Field(default_factory=dict, description="GRPO config fields for every GRPO run.")
    verifier: dict[str, Any] = Field(default_factory=dict, description="Overrides of the verifier run.")
    meta_verifier: dict[str, Any] = Field(default_factory=dict, description="Overrides of the meta-verifier run.")
    generator: dict[str, Any] = Field(default_factory=dict, description="Overrides of the generator run.")
    verifier_meta_reward: bool = Field(True, description="Give the verifier run R_meta from its starting checkpoint.")
    train_meta_verifier: bool = Field(True, description="Run the meta-verifier GRPO on D_mv when it has rows.")
    sample: SampleParams = Field(default_factory=SampleParams)
    label: LabelParams = Field(default_factory=LabelParams)
    rft: RFTParams = Field(default_factory=RFTParams)

    def resolved(self, base: Path) -> CotrainConfig:
        """A copy whose file paths are absolute (relative ones taken from ``base``)."""

        def fix(value: str | None) -> str | None:
            if value is None:
                return None
            path = Path(value).expanduser()
            if path.is_absolute():
                return str(path)
            candidate = (base / path).resolve()
            return str(candidate) if candidate.exists() or value.startswith(".") or "/" in value else value

        return self.model_copy(
            update={
                "problems": fix(self.problems),
                "dv": fix(self.dv),
                "dmv": fix(self.dmv),
                "base_model": fix(self.base_model),
            }
        )


def load_cotrain_config(source: str | Path | dict[str, Any] | CotrainConfig) -> CotrainConfig:
    """A :class:`CotrainConfig` from a YAML file, a dict or a config (paths made absolute)."""
    if isinstance(source, CotrainConfig):
        return source.resolved(Path.cwd())
    if isinstance(source, dict):
        return CotrainConfig.model_validate(source).resolved(Path.cwd())
    import yaml

    path = Path(source)
    if not path.is_file():
        raise InputError(f"cotrain config not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a cotrain config is a YAML mapping")
    try:
        config = CotrainConfig.model_validate(data)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None
    return config.resolved(path.parent.resolve())


# --------------------------------------------------------------------------- manifests


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def read_manifest(step_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a step folder, or None."""
    path = Path(step_dir) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / "manifest.json")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Iteration:
    """The steps of one iteration; each ``run_step`` is skipped when already done."""

    def __init__(
        self,
        config: CotrainConfig,
        workdir: Path,
        k: int,
        log: Callable[[str], None],
        progress: bool = False,
        fail_at: str | None = None,
    ):
        self.config, self.workdir, self.k, self.log, self.progress = config, workdir, k, log, progress
        self.fail_at = fail_at
        self.dir = workdir / f"iter_{k}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def step_dir(self, step: str) -> Path:
        return self.dir / step

    def done(self, step: str) -> dict[str, Any] | None:
        manifest = read_manifest(self.step_dir(step))
        return manifest if manifest and manifest.get("status") == "done" else None

    def run_step(self, step: str, inputs: dict[str, Any], body: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run ``body(tmp_folder) -> outputs`` in a fresh folder unless the step is done."""
        final = self.step_dir(step)
        manifest = self.done(step)
        if manifest is not None:
            self.skipped.append(step)
            self.log(f"iter_{self.k}/{step}: done, skipped")
            return manifest
        tmp = self.dir / f".{step}.tmp"
        for stale in (tmp, final):
            if stale.exists():
                shutil.rmtree(stale)
        tmp.mkdir(parents=True)
        manifest = {
            "step": step,
            "iteration": self.k,
            "status": "running",
            "inputs": inputs,
            "outputs": {},
            "started": _now(),
            "finished": None,
            "pid": os.getpid(),
        }
        _write_manifest(tmp, manifest)
        self.log(f"iter_{self.k}/{step}: running")
        started = time.monotonic()
        outputs = body(tmp)
        if self.fail_at == f"iter_{self.k}/{step}":
            raise InjectedFailure(f"injected failure in iter_{self.k}/{step} (fail_at)")
        manifest.update(status="done", outputs=outputs, finished=_now(), seconds=round(time.monotonic() - started, 3))
        _write_manifest(tmp, manifest)
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        self.ran.append(step)
        self.log(f"iter_{self.k}/{step}: done in {manifest['seconds']:.1f}s")
        return manifest

    def live(self, step: str, model: Any) -> Any:
        """The live progress of a step's model calls on stderr (see :mod:`proofcritic.progress`),
        callable as its batch's ``on_progress``; with ``progress`` off a context of None."""
        if not self.progress:
            return contextlib.nullcontext(None)
        from rich.console import Console

        from ..progress import LiveProgress

        return LiveProgress(f"iter_{self.k}/{step}", Console(stderr=True), [model], batch=True)

    def path(self, step: str, name: str) -> Path:
        """An output of a done step, as an absolute path."""
        manifest = self.done(step)
        if manifest is None:
            raise RuntimeError(f"iter_{self.k}/{step} is not done")
        return self.step_dir(step) / manifest["outputs"][name]


# --------------------------------------------------------------------------- data helpers


def _read_rows(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> int:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def _verifier_examples(path: str | Path | None) -> list:
    """D_v examples from a user file (raw records) or a file of training rows (``prompt``...)."""
    from ..io import problem_from_record
    from .datasets import VerifierExample, examples_from_jsonl

    if path is None or not Path(path).is_file():
        return []
    rows = _read_rows(path)
    if not rows:
        return []
    if all("prompt" in r and "reference_score" in r for r in rows):
        return [
            VerifierExample(
                problem=problem_from_record({"problem": r["problem"]})
                if isinstance(r["problem"], dict)
                else problem_from_record({"statement": r["problem"]}),
                proof=r["proof"],
                score=r["reference_score"],
                source=r.get("source", ""),
                id=r.get("id", ""),
            )
            for r in rows
        ]
    return examples_from_jsonl(path)


def _meta_examples(path: str | Path | None) -> list:
    from ..io import problem_from_record
    from .datasets import MetaExample, meta_examples_from_jsonl

    if path is None or not Path(path).is_file():
        return []
    rows = _read_rows(path)
    if not rows:
        return []
    if all("prompt" in r and "reference_meta_score" in r for r in rows):
        return [
            MetaExample(
                problem=problem_from_record({"problem": r["problem"]})
                if isinstance(r["problem"], dict)
                else problem_from_record({"statement": r["problem"]}),
                proof=r["proof"],
                analysis=r["analysis"],
                analysis_score=r.get("analysis_score"),
                meta_score=r["reference_meta_score"],
                source=r.get("source", ""),
                id=r.get("id", ""),
            )
            for r in rows
        ]
    return meta_examples_from_jsonl(path)


def _copy_model(source: Path, target: Path) -> None:
    """Copy a checkpoint folder (model and tokenizer files; TRL's checkpoint-* folders left out)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))


# --------------------------------------------------------------------------- steps


def _grpo(
    config: CotrainConfig, role: str, *, model: str, train_file: Path, output_dir: Path, reward_model: str | None
) -> str:
    from .recipes import load_config, train_grpo

    overrides: dict[str, Any] = {**config.grpo, **getattr(config, role)}
    overrides.update(role=role, model=model, train_file=str(train_file), output_dir=str(output_dir))
    overrides.pop("reward_model", None)
    if reward_model is not None:
        overrides["reward_model"] = reward_model
    return train_grpo(load_config(None, overrides, recipe="grpo"))


def _step_verifier(config: CotrainConfig, it: _Iteration, start: str, dv: Path, dmv: Path | None):
    from .datasets import write_jsonl

    def body(tmp: Path) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        d_v = _verifier_examples(dv)
        d_mv = _meta_examples(dmv) if config.train_meta_verifier else []
        current = start
        if d_v:
            data = tmp / "dv_rows.jsonl"
            write_jsonl(d_v, data)
            reward = f"transformers/{start}" if config.verifier_meta_reward else None
            current = _grpo(
                config, "verifier", model=start, train_file=data, output_dir=tmp / "verifier_run", reward_model=reward
            )
            outputs["verifier_run"] = "verifier_run"
        if d_mv:
            data = tmp / "dmv_rows.jsonl"
            write_jsonl(d_mv, data)
            current = _grpo(
                config, "meta_verifier", model=current, train_file=data, output_dir=tmp / "meta_run", reward_model=None
            )
            outputs["meta_verifier_run"] = "meta_run"
        if current == start:  # nothing to train on: the checkpoint carries over
            _copy_model(Path(resolve(start)), tmp / "model")
        else:
            os.replace(current, tmp / "model")
            outputs.pop("meta_verifier_run" if d_mv else "verifier_run", None)
        outputs.update(model="model", dv_rows=len(d_v), dmv_rows=len(d_mv))
        return outputs

    return it.run_step("verifier", {"start": start, "dv": str(dv), "dmv": str(dmv) if dmv else None}, body)


def resolve(model: str) -> str:
    from .recipes import resolve_model_path

    return resolve_model_path(model)


def _step_generator_init(it: _Iteration):
    verifier = it.path("verifier", "model")

    def body(tmp: Path) -> dict[str, Any]:
        _copy_model(verifier, tmp / "model")
        return {"model": "model"}

    return it.run_step("generator_init", {"verifier": str(verifier)}, body)


def _step_generator(config: CotrainConfig, it: _Iteration):
    start, verifier = it.path("generator_init", "model"), it.path("verifier", "model")

    def body(tmp: Path) -> dict[str, Any]:
        out = _grpo(
            config,
            "generator",
            model=str(start),
            train_file=Path(config.problems),
            output_dir=tmp / "run",
            reward_model=f"transformers/{verifier}",
        )
        os.replace(out, tmp / "model")
        return {"model": "model"}

    return it.run_step(
        "generator",
        {"model": str(start), "reward_model": f"transformers/{verifier}", "problems": config.problems},
        body,
    )


def _problems(path: str) -> dict[str, Any]:
    from ..io import problem_from_record
    from ..pipelines.solve import read_problem_items

    out = {}
    for item_id, _, record in read_problem_items(path):
        if isinstance(record, Exception):
            continue
        problem = problem_from_record(record, default_id=item_id)
        out[problem.id] = problem
    return out


def _step_sample(config: CotrainConfig, it: _Iteration):
    generator = it.path("generator", "model")
    params = config.sample

    def body(tmp: Path) -> dict[str, Any]:
        from ..llm import GenerateConfig, get_model
        from ..pipelines import Roles
        from ..pipelines.solve import get_strategy, solve_jsonl

        sampling = GenerateConfig(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p)
        model = get_model(
            f"transformers/{generator}", cache=False, defaults=sampling, dtype=params.dtype, threads=params.threads
        )
        roles = Roles.from_models(model, config=sampling)
        strategy = get_strategy("single", samples=params.n, verify_n=0, keep_invalid=params.keep_invalid)

        async def main():
            try:
                with it.live("sample", model) as progress:
                    return await solve_jsonl(
                        strategy,
                        roles,
                        config.problems,
                        tmp / "solve.jsonl",
                        state_dir=tmp / "solve.state",
                        concurrency=params.concurrency,
                        on_progress=progress,
                    )
            finally:
                await model.aclose()

        stats = asyncio.run(main())
        problems = _problems(config.problems)
        proofs: list[dict[str, Any]] = []
        generations = 0
        for result in _read_rows(tmp / "solve.jsonl"):
            problem = problems.get(str(result.get("problem_id")))
            if problem is None or "error" in result:
                continue
            for entry in result.get("transcript") or []:
                if entry.get("step") != "generate":
                    continue
                generations += 1
                text = (entry.get("proof") or "").strip()
                if not text or not (entry.get("format_ok") or params.keep_invalid):
                    continue
                proofs.append(
                    {
                        "id": f"{problem.id}-s{entry.get('sample', len(proofs))}",
                        "problem": problem.model_dump(mode="json"),
                        "proof": text,
                        "self_score": entry.get("self_score"),
                        "format_ok": entry.get("format_ok"),
                    }
                )
        _write_rows(tmp / "proofs.jsonl", proofs)
        return {
            "solve": "solve.jsonl",
            "proofs": "proofs.jsonl",
            "generations": generations,
            "proofs_count": len(proofs),
            "solve_errors": stats.errors,
            "model_calls": model.usage.calls,
        }

    return it.run_step(
        "sample", {"generator": str(generator), "problems": config.problems, "params": params.model_dump()}, body
    )


def _step_label(config: CotrainConfig, it: _Iteration):
    verifier_path, proofs = it.path("verifier", "model"), it.path("sample", "proofs")
    params = config.label

    def body(tmp: Path) -> dict[str, Any]:
        from ..llm import GenerateConfig, get_model
        from ..meta_verifier import MetaVerifier
        from ..pipelines.label import label_jsonl
        from ..verifier import Verifier

        labels, review = tmp / "labels.jsonl", tmp / "review.jsonl"
        labels.touch()
        review.touch()
        counts = {"labeled_count": 0, "review_count": 0, "errors": 0, "model_calls": 0}
        if _read_rows(proofs):
            sampling = GenerateConfig(max_tokens=params.max_tokens, temperature=params.temperature)
            model = get_model(
                f"transformers/{verifier_path}",
                cache=False,
                defaults=sampling,
                dtype=params.dtype,
                threads=params.threads,
            )

            async def main():
                try:
                    with it.live("label", model) as progress:
                        return await label_jsonl(
                            Verifier(model, config=sampling),
                            MetaVerifier(model, config=sampling),
                            proofs,
                            labels,
                            review,
                            config=params.label_config(),
                            concurrency=params.concurrency,
                            on_progress=progress,
                        )
                finally:
                    await model.aclose()

            stats = asyncio.run(main())
            counts.update(
                labeled_count=stats.extra.get("labeled", 0),
                review_count=stats.extra.get("review", 0),
                errors=stats.errors,
                model_calls=model.usage.calls,
            )
        return {"labels": "labels.jsonl", "review": "review.jsonl", **counts}

    return it.run_step(
        "label", {"verifier": str(verifier_path), "proofs": str(proofs), "params": params.model_dump()}, body
    )


def _step_merge(it: _Iteration, dv: Path, dmv: Path | None):
    labels = it.path("label", "labels")

    def body(tmp: Path) -> dict[str, Any]:
        from .datasets import (
            deduplicate,
            examples_from_labels,
            meta_examples_from_labels,
            write_jsonl,
        )

        old_v, old_mv = _verifier_examples(dv), _meta_examples(dmv)
        new_v = examples_from_labels(labels) if _read_rows(labels) else []
        new_mv = meta_examples_from_labels(labels) if _read_rows(labels) else []
        d_v, d_mv = deduplicate([*old_v, *new_v]), deduplicate([*old_mv, *new_mv])
        write_jsonl(d_v, tmp / "dv.jsonl")
        write_jsonl(d_mv, tmp / "dmv.jsonl")
        return {
            "dv": "dv.jsonl",
            "dmv": "dmv.jsonl",
            "dv_rows": len(d_v),
            "dmv_rows": len(d_mv),
            "dv_added": len(d_v) - len(old_v),
            "dmv_added": len(d_mv) - len(old_mv),
        }

    return it.run_step("merge", {"dv": str(dv), "dmv": str(dmv) if dmv else None, "labels": str(labels)}, body)


def generation_text(proof: str, self_analysis: str, self_score: float) -> str:
    """A generator output in the protocol the generator's parser reads (``## Solution``, then
    ``## Self Evaluation`` opening with the evaluation marker, then the boxed self-score)."""
    from ..parsing import EVALUATION_MARKER, SCORE_MARKER, format_score

    return (
        f"## Solution\n{proof.strip()}\n\n## Self Evaluation\n{EVALUATION_MARKER}\n{self_analysis.strip()}"
        f"\n\n{SCORE_MARKER}\n\\boxed{{{format_score(self_score)}}}"
    )


def _rft_rows(it: _Iteration) -> list[dict[str, Any]]:
    """SFT rows: the best-labeled generations per problem and the analyses that match the label."""
    from ..io import problem_from_record
    from ..promptset import PromptSet

    prompts = PromptSet.load()
    best: dict[str, float] = {}
    labeled = [r for r in _read_rows(it.path("label", "labels")) if r.get("status") == "labeled"]
    for record in labeled:
        pid = str(record["problem"].get("id"))
        best[pid] = max(best.get(pid, 0.0), float(record["label"]))
    rows: list[dict[str, Any]] = []
    proofs = {r["id"]: r for r in _read_rows(it.path("sample", "proofs"))}
    min_label = it.config.rft.min_label
    solve = {str(r.get("problem_id")): r for r in _read_rows(it.path("sample", "solve"))}
    for record in labeled:
        problem = problem_from_record({"problem": record["problem"]})
        label = float(record["label"])
        if label >= min_label and label == best.get(problem.id):
            source = proofs.get(record.get("proof_id") or record.get("id"), {})
            entry = next(
                (
                    e
                    for e in (solve.get(problem.id, {}).get("transcript") or [])
                    if (e.get("proof") or "").strip() == record["proof"].strip()
                ),
                None,
            )
            if entry is not None and entry.get("format_ok"):
                completion = generation_text(
                    entry["proof"], entry.get("self_analysis") or "", entry.get("self_score") or 0
                )
                messages = prompts.render("generate", problem=problem)
                rows.append(
                    {
                        "prompt": [{"role": m.role, "content": m.content} for m in messages],
                        "completion": [{"role": "assistant", "content": completion}],
                        "role": "generator",
                        "source_id": source.get("id"),
                    }
                )
        for analysis in record.get("analyses") or []:
            verification = analysis.get("verification") or {}
            if analysis.get("score") == label and verification.get("format_ok") and verification.get("raw"):
                messages = prompts.render("verify", problem=problem, proof=record["proof"])
                rows.append(
                    {
                        "prompt": [{"role": m.role, "content": m.content} for m in messages],
                        "completion": [{"role": "assistant", "content": verification["raw"]}],
                        "role": "verifier",
                    }
                )
    unique: dict[str, dict[str, Any]] = {}  # the same sample kept twice would only weigh double
    for row in rows:
        unique.setdefault(json.dumps([row["prompt"], row["completion"]], sort_keys=True), row)
    return list(unique.values())


def _step_rft(config: CotrainConfig, it: _Iteration):
    generator = it.path("generator", "model")

    def body(tmp: Path) -> dict[str, Any]:
        from .recipes import load_config, train_sft

        rows = _rft_rows(it)
        _write_rows(tmp / "rft_rows.jsonl", rows)
        if not rows:  # nothing passed the rejection: the generator checkpoint carries over
            _copy_model(generator, tmp / "model")
            return {"model": "model", "rows": 0, "rft_rows": "rft_rows.jsonl", "trained": False}
        overrides = {
            **config.rft.sft,
            "model": str(generator),
            "train_file": str(tmp / "rft_rows.jsonl"),
            "output_dir": str(tmp / "run"),
        }
        out = train_sft(load_config(None, overrides, recipe="sft"))
        os.replace(out, tmp / "model")
        by_role = {role: sum(1 for r in rows if r["role"] == role) for role in ("generator", "verifier")}
        return {
            "model": "model",
            "rows": len(rows),
            "rows_by_role": by_role,
            "rft_rows": "rft_rows.jsonl",
            "trained": True,
        }

    return it.run_step("rft", {"generator": str(generator), "labels": str(it.path("label", "labels"))}, body)


# --------------------------------------------------------------------------- the loop


def cotrain(
    config_path_or_obj: str | Path | dict[str, Any] | CotrainConfig,
    workdir: str | Path,
    iterations: int,
    *,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    fail_at: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``iterations`` co-training iterations in ``workdir``. ``progress``: show
    the live progress of the steps that call models (sample, label) on stderr. ``fail_at``
    (``"iter_K/<step>"``): that step raises :class:`InjectedFailure` after its work, before it
    is marked done (fault injection for tests of resumption).

    Returns ``{"iterations": [{"iteration", "ran", "skipped", "checkpoint", "dv", "dmv"}...],
    "checkpoint": the final model folder}``. See the module docstring for the layout.
    """
    if iterations < 1:
        raise InputError("iterations must be at least 1")
    config = load_cotrain_config(config_path_or_obj)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cotrain_config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
    say = log or (lambda message: None)
    start = resolve(config.base_model)
    dv: Path = Path(config.dv)
    dmv: Path | None = Path(config.dmv) if config.dmv else None
    summary: list[dict[str, Any]] = []
    for k in range(1, iterations + 1):
        it = _Iteration(config, workdir, k, say, progress, fail_at)
        _step_verifier(config, it, start, dv, dmv)
        _step_generator_init(it)
        _step_generator(config, it)
        _step_sample(config, it)
        _step_label(config, it)
        _step_merge(it, dv, dmv)
        checkpoint = it.path("verifier", "model")
        if config.rft.enabled and k >= 2:
            _step_rft(config, it)
            checkpoint = it.path("rft", "model")
        dv, dmv = it.path("merge", "dv"), it.path("merge", "dmv")
        start = str(checkpoint)
        summary.append(
            {"iteration": k, "ran": it.ran, "skipped": it.skipped, "checkpoint": start, "dv": str(dv), "dmv": str(dmv)}
        )
    return {"iterations": summary, "checkpoint": start}
