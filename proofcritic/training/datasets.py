"""Training sets for the verifier (D_v) and the meta-verifier (D_mv) (SPEC section 4).

D_v holds (problem, proof, score) and D_mv holds (problem, proof, analysis, meta score). They
come from three sources:

- **auto-label records** (the output lines of :func:`proofcritic.pipelines.label.label_jsonl`,
  or :class:`LabelResult` objects): a *labeled* proof gives a D_v example with its label;
  every analysis that was meta-verified gives a D_mv example whose meta score is the majority
  of its scored meta-verifications (ties go to the lower score; an analysis without any scored
  meta-verification is left out). Score-1 analyses are never meta-verified, so they never
  appear in D_mv. Review records give D_mv examples too (their evidence is as good), but no
  D_v example. Error records are skipped. A record a reviewer decided (``rule: human``, written by
  ``proofcritic review --export``) gives a D_v example with the human label and ``source``
  "human".
- **human-graded sets** (:class:`GradeItem`, e.g. ``load_suite("dsmv2-human")`` or
  ``load_suite("opc")``), with :func:`points_to_score`: full points -> 1, 0 points -> 0,
  anything between -> 0.5. OPC is binary, so correct -> 1, incorrect -> 0. A ProofBench item
  with a ``bucket`` uses :data:`BUCKET_SCORES` instead: Correct -> 1, Almost (minor errors,
  the paper's 0.5) -> 0.5, Partial (1 of 7 points: no complete proof) -> 0, Incorrect -> 0.
- **a JSONL file a user writes**: one object per line with ``problem`` (a statement or a
  problem object; ``statement`` also works), ``proof``, and ``score`` in {0, 0.5, 1} (or
  ``points`` with the problem's ``max_points``); for D_mv also ``analysis`` and
  ``meta_score`` (and optionally ``analysis_score``, the score the analysis gave).

**Two protocols.** Every example is on one verifier scale (:data:`Scale`): ``ternary`` (SPEC,
scores in {0, 0.5, 1}) or ``points`` (``label --scale points``: whole points from 0 to the
problem's ``max_points``). A points example's D_v prompt is the points verifier's
(``verify_points``), its reference the labelled points (``reference_points``, with
``max_points``; ``reference_score`` = points / max_points as well); a points D_mv prompt is the
points review (``meta_verify_points``, showing the analysis's points). A label record's scale is
its ``scale`` field, else what its analyses say (a points grade carries ``points``); a user
record's is its ``scale`` field, else the ``scale`` asked for, else ternary (a ternary record's
``points`` map to {0, 0.5, 1} as above; a points record needs ``points``). One data set holds
one scale: a mix is an :class:`InputError` that says which records differ.

Examples are deduplicated by a hash of problem statement + proof (+ analysis for D_mv; the
first occurrence wins, except that a human-reviewed example replaces an automatic one) and split deterministically by a hash of the problem statement (so no
problem sits on both sides) into train and held-out parts. :func:`to_dataset` gives a
``datasets.Dataset`` with a conversational ``prompt`` column rendered by the project's
prompts plus the columns the rewards of :mod:`proofcritic.training.rewards` read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, model_validator

from ..benchmarks import GradeItem
from ..errors import InputError
from ..io import iter_jsonl, problem_from_record
from ..meta_verifier import MetaVerifier
from ..pipelines.label import LabelResult, majority
from ..promptset import PromptSet
from ..types import Problem, Verification

__all__ = [
    "BUCKET_SCORES",
    "SCALES",
    "MetaExample",
    "Scale",
    "VerifierExample",
    "dataset_scale",
    "deduplicate",
    "examples_from_grades",
    "examples_from_jsonl",
    "examples_from_labels",
    "meta_examples_from_jsonl",
    "meta_examples_from_labels",
    "points_to_score",
    "record_scale",
    "split",
    "to_dataset",
    "to_rows",
    "write_jsonl",
]

#: ProofBench buckets as scores in {0, 0.5, 1}
BUCKET_SCORES: dict[str, float] = {"Correct": 1.0, "Almost": 0.5, "Partial": 0.0, "Incorrect": 0.0}

#: the verifier protocols an example can be on (see the module docstring)
Scale = Literal["ternary", "points"]
SCALES: tuple[Scale, ...] = ("ternary", "points")


class VerifierExample(BaseModel):
    """One element of D_v."""

    problem: Problem
    proof: str
    score: float = Field(
        ..., ge=0, le=1, description="The reference score s in {0, 0.5, 1} (points scale: points / max_points)."
    )
    source: str = Field("", description="Where the example came from (label, a suite name, a file).")
    id: str = ""
    scale: Scale = "ternary"
    points: float | None = Field(None, description="Points scale: the reference points, 0..problem.max_points.")
    scheme: str = Field("", description="Points scale: the marking scheme the prompt shows (text; empty: none).")

    @model_validator(mode="after")
    def _points(self) -> VerifierExample:
        if self.scale == "points":
            if self.points is None or not 0 <= self.points <= self.problem.max_points:
                raise ValueError(
                    f"a points example needs points from 0 to {self.problem.max_points:g}, not {self.points}"
                )
        elif self.points is not None:
            raise ValueError("points belong to the points scale (scale='points')")
        return self


class MetaExample(BaseModel):
    """One element of D_mv."""

    problem: Problem
    proof: str
    analysis: str
    analysis_score: float | None = Field(None, description="The score the analysis gave the proof.")
    meta_score: float = Field(..., ge=0, le=1, description="The reference meta score ms in {0, 0.5, 1}.")
    source: str = ""
    id: str = ""
    scale: Scale = Field("ternary", description="The protocol of the analysis under review.")
    analysis_points: float | None = Field(None, description="Points scale: the points the analysis gave.")


E = TypeVar("E", VerifierExample, MetaExample)


def _hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def example_key(example: VerifierExample | MetaExample) -> str:
    """The deduplication key: a hash of statement + proof (+ analysis)."""
    parts = [example.problem.statement.strip(), example.proof.strip()]
    if isinstance(example, MetaExample):
        parts.append(example.analysis.strip())
    return _hash(*parts)


def _with_id(example: E) -> E:
    return example if example.id else example.model_copy(update={"id": example_key(example)[:16]})


def points_to_score(points: float, max_points: float) -> float:
    """Human points as a score: full points -> 1, 0 (or less) -> 0, anything between -> 0.5."""
    if points >= max_points:
        return 1.0
    return 0.0 if points <= 0 else 0.5


def record_scale(record: Mapping[str, Any]) -> Scale | None:
    """The scale of a label record: its ``scale`` field, else ``points`` when one of its
    verifications is a points grade (carries ``points``), ``ternary`` when it has scored
    verifications without, None when it holds no verification to tell (e.g. an error record)."""
    given = record.get("scale")
    if given is not None:
        if given not in SCALES:
            raise InputError(f"record {record.get('id', '')!r}: scale {given!r} is neither ternary nor points")
        return given
    verifications = [a.get("verification") or {} for a in record.get("analyses") or []]
    verifications += list(record.get("format_failures") or [])
    if any(v.get("points") is not None for v in verifications):
        return "points"
    return "ternary" if record.get("analyses") else None


def _chosen_scale(found: Scale | None, wanted: Scale | None, where: str) -> Scale:
    if found is not None and wanted is not None and found != wanted:
        raise InputError(
            f"{where} is on the {found} scale, but the data set was asked for the {wanted} scale "
            f"(scale: {wanted}); train each scale on its own data set"
        )
    return found or wanted or "ternary"


def dataset_scale(examples: Iterable[VerifierExample | MetaExample], default: Scale = "ternary") -> Scale:
    """The one scale of ``examples`` (``default`` when there are none); a mix of scales is an
    :class:`InputError` that counts both and names the first example of the minority."""
    by_scale: dict[Scale, list[VerifierExample | MetaExample]] = {}
    for example in examples:
        by_scale.setdefault(example.scale, []).append(example)
    if len(by_scale) > 1:
        (one, first), (other, second) = sorted(by_scale.items(), key=lambda kv: -len(kv[1]))
        odd = second[0]
        raise InputError(
            f"the data set mixes scales: {len(first)} {one} and {len(second)} {other} example(s) (the first "
            f"{other} one: {odd.id or odd.source or odd.proof[:40]!r}); one data set trains one protocol, so "
            "label (or write) each scale into its own file"
        )
    return next(iter(by_scale), default)


# --------------------------------------------------------------------------- auto-labels


def _label_records(records: Iterable[LabelResult | Mapping[str, Any]] | str | Path) -> Iterable[dict]:
    if isinstance(records, (str, Path)):
        for _, record in iter_jsonl(records):
            if isinstance(record, InputError):
                raise record
            yield record
        return
    for given in records:
        yield given.model_dump(mode="json") if isinstance(given, LabelResult) else dict(given)


def _where(record: Mapping[str, Any], number: int) -> str:
    return f"label record {record.get('id') or number!r}"


def examples_from_labels(
    records: Iterable[LabelResult | Mapping[str, Any]] | str | Path, scale: Scale | None = None
) -> list[VerifierExample]:
    """D_v from auto-label records (objects, dicts or a JSONL path): one example per labeled
    proof, on each record's scale (``scale``: the one the data set must have; see
    :func:`record_scale`). A points label (points / max points) becomes a points example whose
    reference is the labelled points."""
    out = []
    for number, record in enumerate(_label_records(records), 1):
        if record.get("status") != "labeled" or record.get("label") is None or "error" in record:
            continue
        problem = problem_from_record({"problem": record["problem"]})
        found = _chosen_scale(record_scale(record), scale, _where(record, number))
        label = float(record["label"])
        points = round(label * problem.max_points, 6) if found == "points" else None
        out.append(
            _with_id(
                VerifierExample(
                    problem=problem,
                    proof=record["proof"],
                    score=label,
                    source="human" if record.get("rule") == "human" else "label",
                    scale=found,
                    points=points,
                )
            )
        )
    dataset_scale(out)
    return out


def meta_examples_from_labels(
    records: Iterable[LabelResult | Mapping[str, Any]] | str | Path, scale: Scale | None = None
) -> list[MetaExample]:
    """D_mv from auto-label evidence: each meta-verified analysis with its majority meta score,
    on its record's scale (a points analysis keeps its points for the review prompt)."""
    out = []
    for number, record in enumerate(_label_records(records), 1):
        if "error" in record or "problem" not in record:
            continue
        problem = problem_from_record({"problem": record["problem"]})
        found = _chosen_scale(record_scale(record), scale, _where(record, number))
        for analysis in record.get("analyses") or []:
            meta_score = majority(analysis.get("meta_scores") or [])
            if meta_score is None:
                continue
            verification = analysis.get("verification") or {}
            text = verification.get("analysis") or verification.get("raw") or ""
            if not text.strip():
                continue
            out.append(
                _with_id(
                    MetaExample(
                        problem=problem,
                        proof=record["proof"],
                        analysis=text,
                        analysis_score=analysis.get("score"),
                        meta_score=meta_score,
                        source="label",
                        scale=found,
                        analysis_points=verification.get("points") if found == "points" else None,
                    )
                )
            )
    dataset_scale(out)
    return out


# --------------------------------------------------------------------------- human grades


def examples_from_grades(items: Iterable[GradeItem], source: str = "human") -> list[VerifierExample]:
    """D_v from human-graded items (see the module docstring for the points mapping)."""
    out = []
    for item in items:
        bucket = item.meta.get("bucket")
        if bucket in BUCKET_SCORES:
            score = BUCKET_SCORES[bucket]
        else:
            score = points_to_score(item.human_points, item.problem.max_points)
        out.append(VerifierExample(problem=item.problem, proof=item.proof, score=score, source=source, id=item.id))
    return out


# --------------------------------------------------------------------------- user files


def _user_records(path: str | Path) -> Iterable[tuple[int, dict]]:
    for line, record in iter_jsonl(path):
        if isinstance(record, InputError):
            raise record
        yield line, record


def _problem_of(record: dict, line: int) -> Problem:
    value = record.get("problem")
    if isinstance(value, str):
        record = {**record, "problem": None, "statement": value}
    return problem_from_record(record, default_id=f"line{line}")


def _score(value: Any, name: str, line: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise InputError(f"line {line}: {name!r} must be a number, not {value!r}") from None
    if score not in (0.0, 0.5, 1.0):
        raise InputError(f"line {line}: {name!r} is {score:g}; it must be 0, 0.5 or 1")
    return score


def _user_scale(record: dict, wanted: Scale | None, path: str | Path, line: int) -> Scale:
    given = record.get("scale")
    if given is not None and given not in SCALES:
        raise InputError(f"{path} line {line}: scale {given!r} is neither ternary nor points")
    return _chosen_scale(given, wanted, f"{path} line {line}")


def _points(value: Any, name: str, problem: Problem, path: str | Path, line: int) -> float:
    try:
        points = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path} line {line}: {name!r} must be a number, not {value!r}") from None
    if not 0 <= points <= problem.max_points:
        raise InputError(
            f"{path} line {line}: {name!r} is {points:g}; on this problem's scale it lies from 0 to "
            f"{problem.max_points:g} (max_points)"
        )
    return points


def examples_from_jsonl(path: str | Path, scale: Scale | None = None) -> list[VerifierExample]:
    """D_v from a user's JSONL (``problem``, ``proof``, ``score`` or ``points``; on the points
    scale ``points``, and optionally a marking ``scheme``)."""
    out = []
    for line, record in _user_records(path):
        problem = _problem_of(record, line)
        if _user_scale(record, scale, path, line) == "points":
            if record.get("points") is None:
                raise InputError(f"{path} line {line}: a points-scale example needs 'points' (0..max_points)")
            from ..verifier import scheme_text

            points = _points(record["points"], "points", problem, path, line)
            out.append(
                _with_id(
                    VerifierExample(
                        problem=problem,
                        proof=str(record.get("proof", "")),
                        score=points / problem.max_points,
                        points=points,
                        scale="points",
                        scheme=scheme_text(record.get("scheme")),
                        source=str(path),
                        id=str(record.get("id", "")),
                    )
                )
            )
            continue
        if record.get("score") is not None:
            score = _score(record["score"], "score", line)
        elif record.get("points") is not None:
            score = points_to_score(float(record["points"]), problem.max_points)
        else:
            raise InputError(f"{path} line {line}: no 'score' (or 'points')")
        out.append(
            _with_id(
                VerifierExample(
                    problem=problem,
                    proof=str(record.get("proof", "")),
                    score=score,
                    source=str(path),
                    id=str(record.get("id", "")),
                )
            )
        )
    return out


def meta_examples_from_jsonl(path: str | Path, scale: Scale | None = None) -> list[MetaExample]:
    """D_mv from a user's JSONL (``problem``, ``proof``, ``analysis``, ``meta_score``; on the
    points scale ``analysis_points``, the points the analysis gave, instead of ``analysis_score``)."""
    out = []
    for line, record in _user_records(path):
        if record.get("meta_score") is None or not record.get("analysis"):
            raise InputError(f"{path} line {line}: D_mv records need 'analysis' and 'meta_score'")
        problem = _problem_of(record, line)
        found = _user_scale(record, scale, path, line)
        points: float | None = None
        score: float | None = None
        if found == "points":
            if record.get("analysis_points") is None:
                raise InputError(
                    f"{path} line {line}: a points-scale D_mv record needs 'analysis_points' (the points the analysis gave)"
                )
            points = _points(record["analysis_points"], "analysis_points", problem, path, line)
            score = points / problem.max_points
        else:
            given = record.get("analysis_score")
            score = None if given is None else _score(given, "analysis_score", line)
        out.append(
            _with_id(
                MetaExample(
                    problem=problem,
                    proof=str(record.get("proof", "")),
                    analysis=str(record["analysis"]),
                    analysis_score=score,
                    meta_score=_score(record["meta_score"], "meta_score", line),
                    source=str(path),
                    id=str(record.get("id", "")),
                    scale=found,
                    analysis_points=points,
                )
            )
        )
    return out


# --------------------------------------------------------------------------- dedup, split, output


def deduplicate(examples: Iterable[E]) -> list[E]:
    """The examples without repeats of the same problem + proof (+ analysis): the first one wins,
    except that a human-reviewed example (``source`` "human") takes an automatic one's place."""
    seen: dict[str, int] = {}
    out: list[E] = []
    for example in examples:
        key = example_key(example)
        if key not in seen:
            seen[key] = len(out)
            out.append(example)
        elif example.source == "human" and out[seen[key]].source != "human":
            out[seen[key]] = example
    return out


def split(
    examples: Sequence[E], held_out: float = 0.1, *, by: Literal["problem", "example"] = "problem", salt: str = ""
) -> tuple[list[E], list[E]]:
    """``(train, held_out)``: an example is held out when the hash of its problem statement (or
    of the whole example, ``by="example"``) with ``salt`` falls below ``held_out``. The same
    input always splits the same way, whatever the order or the other examples."""
    if not 0.0 <= held_out <= 1.0:
        raise ValueError("held_out must lie in [0, 1]")
    train: list[E] = []
    test: list[E] = []
    for example in examples:
        key = example.problem.statement.strip() if by == "problem" else example_key(example)
        fraction = int(_hash(salt, key)[:16], 16) / 16**16
        (test if fraction < held_out else train).append(example)
    return train, test


def _row(example: VerifierExample | MetaExample, prompts: PromptSet) -> dict[str, Any]:
    problem = example.problem.model_dump(mode="json")
    if example.scale == "points":
        return _points_row(example, prompts, problem)
    if isinstance(example, VerifierExample):
        messages = prompts.render("verify", problem=example.problem, proof=example.proof)
        extra: dict[str, Any] = {"reference_score": example.score}
    else:
        messages = prompts.render(
            "meta_verify",
            problem=example.problem,
            proof=example.proof,
            analysis=example.analysis,
            score=example.analysis_score,
        )
        extra = {
            "analysis": example.analysis,
            "analysis_score": example.analysis_score,
            "reference_meta_score": example.meta_score,
        }
    prompt = [{"role": m.role, "content": m.content} for m in messages]
    return {
        "id": example.id,
        "prompt": prompt,
        "problem": problem,
        "proof": example.proof,
        **extra,
        "source": example.source,
    }


def _points_row(example: VerifierExample | MetaExample, prompts: PromptSet, problem: dict[str, Any]) -> dict[str, Any]:
    """A points-scale row: the prompt the points roles render (their own ``messages``, which
    call no model), the points references, and ``scale``."""
    roles = _prompt_roles(prompts)
    if isinstance(example, VerifierExample):
        messages = roles[0].messages(example.problem, example.proof, example.scheme or None)
        extra: dict[str, Any] = {
            "reference_score": example.score,
            "reference_points": example.points,
            "max_points": example.problem.max_points,
        }
    else:
        graded = Verification(
            raw=example.analysis,
            analysis=example.analysis,
            score=example.analysis_score,
            points=example.analysis_points,
        )
        messages = roles[1].messages(example.problem, example.proof, graded)
        extra = {
            "analysis": example.analysis,
            "analysis_score": example.analysis_score,
            "analysis_points": example.analysis_points,
            "reference_meta_score": example.meta_score,
        }
    prompt = [{"role": m.role, "content": m.content} for m in messages]
    return {
        "id": example.id,
        "prompt": prompt,
        "problem": problem,
        "proof": example.proof,
        **extra,
        "source": example.source,
        "scale": "points",
    }


def _prompt_roles(prompts: PromptSet) -> tuple[Any, MetaVerifier]:
    """The points verifier and the meta-verifier on ``prompts``, for their prompts only (no model)."""
    from ..verifier import PointsVerifier

    no_model: Any = None  # rendering a prompt never touches the model
    return PointsVerifier(no_model, prompts=prompts), MetaVerifier(no_model, prompts=prompts)


def to_rows(examples: Iterable[VerifierExample | MetaExample], prompts: PromptSet | None = None) -> list[dict]:
    """The training rows: ``id``, ``prompt`` (chat messages), ``problem`` (a Problem dict),
    ``proof``, ``reference_score`` (D_v) or ``analysis``, ``analysis_score``,
    ``reference_meta_score`` (D_mv), and ``source``. Points-scale rows also carry ``scale``
    ("points") and ``reference_points`` and ``max_points`` (D_v) or ``analysis_points`` (D_mv);
    examples on both scales are an :class:`InputError` (see :func:`dataset_scale`)."""
    prompts = prompts or PromptSet.load()
    examples = list(examples)
    dataset_scale(examples)
    return [_row(example, prompts) for example in examples]


def to_dataset(examples: Iterable[VerifierExample | MetaExample], prompts: PromptSet | None = None):
    """The rows of :func:`to_rows` as a ``datasets.Dataset`` (needs the ``datasets`` package)."""
    try:
        from datasets import Dataset
    except ImportError:  # pragma: no cover - depends on the environment
        from ..errors import missing

        raise missing("datasets", "train") from None
    return Dataset.from_list(to_rows(examples, prompts))


def write_jsonl(
    examples: Iterable[VerifierExample | MetaExample], path: str | Path, prompts: PromptSet | None = None
) -> int:
    """Write the rows of :func:`to_rows` to ``path``, one JSON object a line; returns the count."""
    rows = to_rows(examples, prompts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
