"""Metrics of a grader against human grades: pure functions on lists.

Conventions:

- Empty input (or lists of different lengths) raises :class:`MetricsError`, which is both an
  :class:`~proofcritic.errors.InputError` and a :class:`ValueError`.
- A metric that is undefined on the data returns ``None``, never NaN: precision when nothing is
  predicted positive, recall when nothing is actually positive, F1 when either is undefined,
  Pearson/Spearman when one side is constant or there are fewer than 2 pairs.
- Balanced accuracy is the mean recall over the classes present in ``y_true``; when only one
  class is present it equals that class's recall (i.e. the accuracy). :func:`grader_report`
  adds a note when that happens.
- Spearman uses average ranks for ties (the Pearson correlation of the ranks).
- Bootstrap intervals: percentile method, ``n_resamples`` resamples of the rows with
  replacement, drawn by ``numpy.random.default_rng(seed)``; resamples where the metric is
  undefined are left out (their count is reported).
- A group of fewer than :data:`SMALL_N` items (a run, or a breakdown group) is flagged
  (``small_n``) and carries a note: its correlations and intervals mean little (on 2 items
  Pearson is +-1 and its interval the point itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from ..errors import InputError

Number = float | int


#: fewer items than this: correlations and bootstrap intervals are flagged as too few to mean much
SMALL_N = 10


def small_sample_note(n: int, unit: str = "items") -> str | None:
    """The note of a metric group on ``n`` items (problems, ...) when n < :data:`SMALL_N`, else None."""
    if n >= SMALL_N:
        return None
    return f"n = {n} {unit}, too few (under {SMALL_N}): correlations and 95% intervals mean little"


class MetricsError(InputError, ValueError):
    """A metric cannot be computed on this input (empty, or columns of different lengths)."""


def _check(*columns: Sequence[Any], what: str = "metric") -> int:
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise MetricsError(f"{what}: the inputs have different lengths {sorted(lengths)}")
    size = lengths.pop()
    if size == 0:
        raise MetricsError(f"{what}: empty input (no graded items to measure)")
    return size


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """The fraction of items where the prediction equals the truth."""
    n = _check(y_true, y_pred, what="accuracy")
    return sum(t == p for t, p in zip(y_true, y_pred)) / n


def recall_of(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], label: Hashable) -> float | None:
    """Recall of one class: among items truly ``label``, the fraction predicted ``label``."""
    _check(y_true, y_pred, what="recall")
    hits = [p == label for t, p in zip(y_true, y_pred) if t == label]
    return sum(hits) / len(hits) if hits else None


def balanced_accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Mean recall over the classes present in ``y_true`` (one class: its recall = accuracy)."""
    _check(y_true, y_pred, what="balanced accuracy")
    recalls = [recall_of(y_true, y_pred, label) for label in _labels(y_true)]
    return sum(recalls) / len(recalls)  # type: ignore[arg-type]  # each class is present


def precision(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], positive: Hashable = True) -> float | None:
    """Among items predicted ``positive``, the fraction truly positive; None if none predicted."""
    _check(y_true, y_pred, what="precision")
    hits = [t == positive for t, p in zip(y_true, y_pred) if p == positive]
    return sum(hits) / len(hits) if hits else None


def recall(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], positive: Hashable = True) -> float | None:
    """Among items truly ``positive``, the fraction predicted positive; None if none are."""
    return recall_of(y_true, y_pred, positive)


def f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], positive: Hashable = True) -> float | None:
    """Harmonic mean of precision and recall; None if either is undefined, 0 if both are 0."""
    p, r = precision(y_true, y_pred, positive), recall(y_true, y_pred, positive)
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mae(truth: Sequence[Number], predicted: Sequence[Number]) -> float:
    """Mean absolute error (in the unit of the inputs, e.g. points)."""
    n = _check(truth, predicted, what="MAE")
    return sum(abs(float(t) - float(p)) for t, p in zip(truth, predicted)) / n


def pearson(x: Sequence[Number], y: Sequence[Number]) -> float | None:
    """Pearson correlation; None when a side is constant or there are fewer than 2 pairs."""
    n = _check(x, y, what="Pearson")
    if n < 2:
        return None
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator <= 1e-12 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max())) ** 2:
        return None
    return max(-1.0, min(1.0, float(a @ b) / denominator))


def rankdata(values: Sequence[Number]) -> list[float]:
    """Ranks 1..n; tied values get the average of the ranks they span."""
    if not len(values):
        return []
    _, inverse, counts = np.unique(np.asarray(values, dtype=float), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # a run of ties holds ranks ends - counts + 1 .. ends
    return ((2 * ends - counts + 1) / 2)[inverse.reshape(-1)].tolist()


def spearman(x: Sequence[Number], y: Sequence[Number]) -> float | None:
    """Spearman correlation: Pearson of the average ranks; None when a side is constant."""
    _check(x, y, what="Spearman")
    return pearson(rankdata(x), rankdata(y))


def _labels(values: Iterable[Hashable]) -> list[Hashable]:
    unique = set(values)
    try:
        return sorted(unique)  # type: ignore[type-var]
    except TypeError:
        return sorted(unique, key=repr)


def confusion_matrix(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """``{"labels": [...], "matrix": rows}``: ``matrix[i][j]`` counts items truly ``labels[i]``
    predicted ``labels[j]``. Labels are inferred (sorted union of both sides) unless given; a
    value outside given labels is an error."""
    _check(y_true, y_pred, what="confusion matrix")
    labels = list(labels) if labels is not None else _labels([*y_true, *y_pred])
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred):
        if t not in index or p not in index:
            raise MetricsError(
                f"confusion matrix: value {t if t not in index else p!r} is not one of the labels {labels}"
            )
        matrix[index[t]][index[p]] += 1
    return {"labels": labels, "matrix": matrix}


def cohen_kappa(
    a: Sequence[Hashable],
    b: Sequence[Hashable],
    *,
    labels: Sequence[Hashable] | None = None,
    weights: str | None = None,
) -> float | None:
    """Cohen's kappa of two raters: ``1 - sum(w * observed) / sum(w * expected)`` over the
    ``labels`` (ordered; default: the sorted union of both sides), where expected is the
    product of the two raters' label shares. ``weights``: None (nominal: a disagreement
    weighs 1), ``"linear"`` (``|i - j| / (k - 1)``) or ``"quadratic"`` (``((i - j) / (k - 1))^2``:
    the quadratic-weighted kappa of ordinal grades). None when undefined: chance agreement is
    total (e.g. both raters give one and the same label to every item)."""
    n = _check(a, b, what="kappa")
    if weights not in (None, "linear", "quadratic"):
        raise MetricsError(f"kappa: weights must be None, 'linear' or 'quadratic', not {weights!r}")
    labels = list(labels) if labels is not None else _labels([*a, *b])
    k = len(labels)
    observed = np.asarray(confusion_matrix(a, b, labels=labels)["matrix"], dtype=float) / n
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    else:
        distance = np.abs(i - j) / max(k - 1, 1)
        w = distance if weights == "linear" else distance**2
    chance = float((w * expected).sum())
    if chance <= 1e-12:
        return None
    return 1.0 - float((w * observed).sum()) / chance


def mean_difference(truth: Sequence[Number], predicted: Sequence[Number]) -> float:
    """The mean of ``predicted - truth``: a grader's leniency (above 0: more generous than the
    humans; in the unit of the inputs, e.g. points)."""
    n = _check(truth, predicted, what="leniency")
    return sum(float(p) - float(t) for t, p in zip(truth, predicted)) / n


#: the four grade buckets of IMO-GradingBench / ProofBench on the 7-point scale
GRADINGBENCH_BUCKETS = (0, 1, 6, 7)


def points_grade(points: float, max_points: float, scale: int = 7) -> int:
    """``points`` out of ``max_points`` as a whole grade on a ``0..scale`` scale (rounded half
    up), so that problems with other maxima share one ordinal scale."""
    if max_points <= 0:
        raise MetricsError(f"max_points must be more than 0, not {max_points}")
    return math.floor(float(points) / float(max_points) * scale + 0.5 + 1e-9)


def gradingbench_bucket(points: float, max_points: float) -> int:
    """The nearest of the four GradingBench grades 0/1/6/7 (on the 7-point scale; a tie goes
    to the lower grade)."""
    value = float(points) / float(max_points) * 7
    return min(GRADINGBENCH_BUCKETS, key=lambda bucket: (abs(bucket - value), bucket))


def sample_agreement(samples: Sequence[Sequence[Hashable]]) -> dict[str, Any]:
    """How much the n verification samples of each proof agree with one another.

    ``samples``: the scores of each proof's scored samples. Proofs with fewer than 2 are left
    out. ``pairwise``: the mean over proofs of the share of sample pairs with equal scores;
    ``fleiss_kappa``: Fleiss' kappa (for a varying number of samples per proof: each proof's
    pair agreement, against the chance agreement of the pooled score shares), None when
    undefined; ``proofs``: how many proofs counted."""
    rows = [list(s) for s in samples if len(s) >= 2]
    if not rows:
        return {"proofs": 0, "pairwise": None, "fleiss_kappa": None}
    labels = _labels(value for row in rows for value in row)
    totals = dict.fromkeys(labels, 0)
    agreements = []
    for row in rows:
        counts: dict[Hashable, int] = {}
        for value in row:
            counts[value] = counts.get(value, 0) + 1
            totals[value] += 1
        m = len(row)
        agreements.append(sum(c * (c - 1) for c in counts.values()) / (m * (m - 1)))
    observed = sum(agreements) / len(agreements)
    pooled = sum(totals.values())
    chance = sum((count / pooled) ** 2 for count in totals.values())
    kappa = None if chance >= 1 - 1e-12 else (observed - chance) / (1 - chance)
    return {"proofs": len(rows), "pairwise": observed, "fleiss_kappa": kappa}


def partial_credit_calibration(human_score: Sequence[Number], predicted_score: Sequence[Number]) -> dict[str, Any]:
    """Whether a grader's partial credit means what the humans' does: for each bucket of the
    predicted score (0, partial, full; :func:`score_bucket`), the items in it, their mean
    predicted and mean human score; and ``error``, the item-weighted mean of
    ``|mean predicted - mean human|`` over the buckets (0: calibrated). Scores in [0, 1]."""
    n = _check(human_score, predicted_score, what="calibration")
    bins: dict[str, list[tuple[float, float]]] = {}
    for h, p in zip(human_score, predicted_score):
        bins.setdefault(score_bucket(float(p)), []).append((float(h), float(p)))
    out: dict[str, Any] = {"buckets": {}}
    error = 0.0
    for bucket in ("0", "0.5", "1"):
        pairs = bins.get(bucket)
        if not pairs:
            continue
        mean_h = sum(h for h, _ in pairs) / len(pairs)
        mean_p = sum(p for _, p in pairs) / len(pairs)
        out["buckets"][bucket] = {"n": len(pairs), "mean_predicted": mean_p, "mean_human": mean_h}
        error += len(pairs) / n * abs(mean_p - mean_h)
    out["error"] = error
    return out


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def issue_localisation(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Whether reported issues point where the human-annotated errors are.

    Each row: ``error_spans`` (the annotated errors' ``[start, end)`` offsets in the proof) and
    ``issue_spans`` (each reported issue's span in the proof, None where its quote was not
    found). Rows without annotated errors are left out. ``errors_found``: the share of annotated
    errors that some reported issue overlaps; ``issues_on_target``: the share of located issues
    that overlap an annotated error; ``issues_located``: the share of reported issues whose
    quote was found in the proof; with the counts (micro-averaged over proofs)."""
    errors = found = issues = located = on_target = proofs = 0
    for row in rows:
        spans = [tuple(s) for s in row.get("error_spans") or []]
        if not spans:
            continue
        proofs += 1
        reported = list(row.get("issue_spans") or [])
        placed = [tuple(s) for s in reported if s is not None]
        errors += len(spans)
        found += sum(any(_overlaps(e, i) for i in placed) for e in spans)
        issues += len(reported)
        located += len(placed)
        on_target += sum(any(_overlaps(i, e) for e in spans) for i in placed)
    return {
        "proofs": proofs,
        "errors": errors,
        "issues": issues,
        "errors_found": found / errors if errors else None,
        "issues_located": located / issues if issues else None,
        "issues_on_target": on_target / located if located else None,
    }


def score_bucket(score: float) -> str:
    """A score in [0, 1] as a verifier grade: ``"1"`` full, ``"0"`` none, ``"0.5"`` anything between."""
    if score >= 1:
        return "1"
    if score <= 0:
        return "0"
    return "0.5"


def bootstrap_ci(
    metric: Callable[..., float | None],
    *columns: Sequence[Any],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap interval of ``metric(*columns)``, resampling rows together.

    Returns ``{"estimate", "low", "high", "level", "n_resamples", "undefined"}``; ``low`` and
    ``high`` are None when the estimate is undefined or no resample gives a value.
    """
    n = _check(*columns, what="bootstrap")
    if n_resamples < 1:
        raise MetricsError(f"bootstrap: n_resamples must be at least 1, not {n_resamples}")
    if not 0 < level < 1:
        raise MetricsError(f"bootstrap: level must be in (0, 1), not {level}")
    estimate = metric(*columns)
    result: dict[str, Any] = {
        "estimate": estimate,
        "low": None,
        "high": None,
        "level": level,
        "n_resamples": n_resamples,
        "undefined": 0,
    }
    if estimate is None:
        return result
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        rows = rng.integers(0, n, size=n).tolist()
        take = itemgetter(*rows)  # a tuple of the rows (one row: the row itself)
        value = metric(*(list(take(column)) if n > 1 else [take(column)] for column in columns))
        if value is None:
            result["undefined"] += 1
        else:
            values.append(value)
    if values:
        tail = (1 - level) / 2 * 100
        result["low"], result["high"] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return result


def breakdown(
    rows: Sequence[Mapping[str, Any]],
    key: str | Callable[[Mapping[str, Any]], Hashable],
    compute: Callable[[list], Any],
) -> dict[str, Any]:
    """``compute(rows of the group)`` for each value of ``key`` (a field of the row or of its
    ``meta``, or a function); rows without the key go to the group ``"unknown"``."""

    def key_of(row: Mapping[str, Any]) -> Hashable:
        if callable(key):
            return key(row)
        value = row.get(key, (row.get("meta") or {}).get(key))
        return "unknown" if value is None else value

    groups: dict[Hashable, list] = {}
    for row in rows:
        groups.setdefault(key_of(row), []).append(row)
    return {str(group): compute(groups[group]) for group in _labels(groups)}


#: metrics with a bootstrap interval in :func:`grader_report`
INTERVAL_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "mae_points",
    "pearson",
    "spearman",
    "kappa",
    "qwk_points",
    "qwk_buckets",
    "leniency_points",
)


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    return {
        "human_score": [r["human_points"] / r["max_points"] for r in rows],
        "predicted_score": [r["predicted_points"] / r["max_points"] for r in rows],
        "human_points": [float(r["human_points"]) for r in rows],
        "predicted_points": [float(r["predicted_points"]) for r in rows],
        "human_correct": [bool(r["human_correct"]) for r in rows],
        "predicted_correct": [bool(r["predicted_correct"]) for r in rows],
        "human_grade": [points_grade(r["human_points"], r["max_points"]) for r in rows],
        "predicted_grade": [points_grade(r["predicted_points"], r["max_points"]) for r in rows],
        "human_bucket": [score_bucket(r["human_points"] / r["max_points"]) for r in rows],
        "predicted_bucket": [score_bucket(r["predicted_points"] / r["max_points"]) for r in rows],
        "human_gb": [gradingbench_bucket(r["human_points"], r["max_points"]) for r in rows],
        "predicted_gb": [gradingbench_bucket(r["predicted_points"], r["max_points"]) for r in rows],
    }


def _kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    return cohen_kappa(a, b, labels=[False, True])


def _qwk(labels: Sequence[Hashable]) -> Callable[[Sequence[Hashable], Sequence[Hashable]], float | None]:
    def qwk(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
        return cohen_kappa(a, b, labels=labels, weights="quadratic")

    return qwk


_METRICS: dict[str, tuple[Callable[..., float | None], tuple[str, str]]] = {
    "accuracy": (accuracy, ("human_correct", "predicted_correct")),
    "balanced_accuracy": (balanced_accuracy, ("human_correct", "predicted_correct")),
    "precision": (precision, ("human_correct", "predicted_correct")),
    "recall": (recall, ("human_correct", "predicted_correct")),
    "f1": (f1, ("human_correct", "predicted_correct")),
    "mae_points": (mae, ("human_points", "predicted_points")),
    "mae_score": (mae, ("human_score", "predicted_score")),
    "pearson": (pearson, ("human_score", "predicted_score")),
    "spearman": (spearman, ("human_score", "predicted_score")),
    "pearson_points": (pearson, ("human_points", "predicted_points")),
    "spearman_points": (spearman, ("human_points", "predicted_points")),
    # agreement beyond chance: binary verdicts, whole points 0-7, the 0/partial/full buckets and
    # the four GradingBench grades (quadratic weights for the ordinal ones)
    "kappa": (_kappa, ("human_correct", "predicted_correct")),
    "qwk_points": (_qwk(range(8)), ("human_grade", "predicted_grade")),
    "qwk_buckets": (_qwk(["0", "0.5", "1"]), ("human_bucket", "predicted_bucket")),
    "qwk_gradingbench": (_qwk(GRADINGBENCH_BUCKETS), ("human_gb", "predicted_gb")),
    # leniency: mean predicted minus human points (above 0: more generous than the humans)
    "leniency_points": (mean_difference, ("human_points", "predicted_points")),
    "leniency_score": (mean_difference, ("human_score", "predicted_score")),
}


def grader_report(
    rows: Sequence[Mapping[str, Any]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    breakdown_keys: Sequence[str] = ("competition", "model_id"),
) -> dict[str, Any]:
    """All metrics of a grader from rows of ``human_points, predicted_points, max_points,
    human_correct, predicted_correct, meta``.

    ``pearson``/``spearman`` compare scores normalised by each row's ``max_points`` (so 21-point
    and 7-point problems are on one scale); ``*_points`` variants compare raw points. "Correct"
    is the positive class of precision/recall/F1. Rows whose ``predicted_points`` is None (no
    verdict) are left out and counted in ``unscored``. Breakdowns (each group's metrics with
    its own intervals) are by each of ``breakdown_keys`` looked up in the row or its ``meta``.
    """
    scored = [r for r in rows if r.get("predicted_points") is not None]
    if not scored:
        raise MetricsError("grader report: no item has both a human grade and a predicted grade")
    report = _metrics(scored)
    report["unscored"] = len(rows) - len(scored)
    report["intervals"] = _intervals(scored, n_resamples, seed)
    report["bootstrap"] = {"n_resamples": n_resamples, "seed": seed, "level": 0.95, "method": "percentile"}
    report["breakdowns"] = {
        key: breakdown(
            scored, key, lambda group: {**_metrics(group), "intervals": _intervals(group, n_resamples, seed)}
        )
        for key in breakdown_keys
    }
    if any(r.get("error_spans") for r in scored):
        report["localisation"] = issue_localisation(scored)
    report["leniency_by_human_bucket"] = breakdown(
        scored,
        lambda row: score_bucket(row["human_points"] / row["max_points"]),
        lambda group: _leniency(group, n_resamples, seed),
    )
    return report


def _leniency(rows: Sequence[Mapping[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    columns = _columns(rows)
    ci = bootstrap_ci(
        mean_difference, columns["human_points"], columns["predicted_points"], n_resamples=n_resamples, seed=seed
    )
    return {"n": len(rows), "leniency_points": ci["estimate"], "low": ci["low"], "high": ci["high"]}


def _intervals(rows: Sequence[Mapping[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    """The bootstrap interval of each of :data:`INTERVAL_METRICS` on scored rows."""
    columns = _columns(rows)
    out = {}
    for name in INTERVAL_METRICS:
        function, (a, b) = _METRICS[name]
        ci = bootstrap_ci(function, columns[a], columns[b], n_resamples=n_resamples, seed=seed)
        out[name] = {k: ci[k] for k in ("low", "high", "undefined")}
    return out


def paired_differences(
    rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]], *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Every grader metric of two graders on the same items (row i of both is one item, each
    with a verdict): ``{name: {"a", "b", "difference", "low", "high"}}``, the difference B - A
    with its paired bootstrap interval (items resampled together in both). The difference is
    None where the metric is undefined on either side."""
    _check(rows_a, rows_b, what="paired difference")
    a, b = _columns(rows_a), _columns(rows_b)
    out: dict[str, dict[str, Any]] = {}
    for name, (function, (truth, predicted)) in _METRICS.items():

        def difference(
            ta: list, pa: list, tb: list, pb: list, f: Callable[..., float | None] = function
        ) -> float | None:
            x, y = f(ta, pa), f(tb, pb)
            return None if x is None or y is None else y - x

        ci = bootstrap_ci(
            difference, a[truth], a[predicted], b[truth], b[predicted], n_resamples=n_resamples, seed=seed
        )
        out[name] = {
            "a": function(a[truth], a[predicted]),
            "b": function(b[truth], b[predicted]),
            "difference": ci["estimate"],
            "low": ci["low"],
            "high": ci["high"],
        }
    return out


def _metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The point estimates, confusion matrices and notes of one group of scored rows."""
    columns = _columns(rows)
    out: dict[str, Any] = {"n": len(rows)}
    for name, (function, (a, b)) in _METRICS.items():
        out[name] = function(columns[a], columns[b])
    out["human_correct"] = sum(columns["human_correct"])
    out["predicted_correct"] = sum(columns["predicted_correct"])
    out["confusion_binary"] = confusion_matrix(
        columns["human_correct"], columns["predicted_correct"], labels=[False, True]
    )
    out["confusion_buckets"] = confusion_matrix(
        [score_bucket(s) for s in columns["human_score"]],
        [score_bucket(s) for s in columns["predicted_score"]],
        labels=["0", "0.5", "1"],
    )
    out["confusion_gradingbench"] = confusion_matrix(
        columns["human_gb"], columns["predicted_gb"], labels=list(GRADINGBENCH_BUCKETS)
    )
    out["calibration"] = partial_credit_calibration(columns["human_score"], columns["predicted_score"])
    out["sample_agreement"] = sample_agreement([r.get("sample_scores") or [] for r in rows])
    notes = []
    out["small_n"] = len(rows) < SMALL_N
    small = small_sample_note(len(rows))
    if small:
        notes.append(small)
    if len(set(columns["human_correct"])) == 1:
        notes.append("only one human class present: balanced accuracy equals accuracy")
    for name in ("precision", "recall", "f1", "pearson", "spearman", "kappa"):
        if out[name] is None:
            notes.append(f"{name} is undefined on this data ({_WHY[name]})")
    out["notes"] = notes
    return out


_WHY = {
    "precision": "no item predicted correct",
    "recall": "no item correct by the humans",
    "f1": "precision or recall undefined",
    "pearson": "constant grades on one side, or fewer than 2 items",
    "spearman": "constant grades on one side, or fewer than 2 items",
    "kappa": "both sides give every item one and the same verdict",
}
