"""Grader metrics against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from proofcritic.benchmarks.metrics import (
    MetricsError,
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    breakdown,
    confusion_matrix,
    f1,
    grader_report,
    mae,
    pearson,
    precision,
    rankdata,
    recall,
    score_bucket,
    spearman,
)
from proofcritic.errors import InputError

TRUE = [True, True, False, False, True]
PRED = [True, False, False, True, True]


def test_binary_metrics_by_hand():
    # agreements at 0, 2, 4 -> 3/5
    assert accuracy(TRUE, PRED) == pytest.approx(3 / 5)
    # recall of True: truly True at 0, 1, 4, predicted True at 0, 4 -> 2/3
    # recall of False: truly False at 2, 3, predicted False at 2 -> 1/2; mean = 7/12
    assert balanced_accuracy(TRUE, PRED) == pytest.approx(7 / 12)
    # predicted True at 0, 3, 4; truly True at 0, 4 -> 2/3
    assert precision(TRUE, PRED) == pytest.approx(2 / 3)
    assert recall(TRUE, PRED) == pytest.approx(2 / 3)
    assert f1(TRUE, PRED) == pytest.approx(2 / 3)
    # with "incorrect" as the positive class: predicted False at 1, 2 -> truly False at 2 -> 1/2
    assert precision(TRUE, PRED, positive=False) == pytest.approx(1 / 2)


def test_single_class_is_defined_or_none():
    true = [True, True, True]
    # one human class: balanced accuracy is the recall of that class, i.e. the accuracy
    assert balanced_accuracy(true, [True, False, True]) == pytest.approx(2 / 3) == accuracy(true, [True, False, True])
    assert precision(true, [True, False, True]) == 1.0
    # nothing predicted correct: precision undefined -> None (and so F1)
    assert precision(true, [False, False, False]) is None
    assert f1(true, [False, False, False]) is None
    # nothing correct by the humans: recall undefined -> None
    assert recall([False, False], [True, False]) is None
    # both defined but zero -> F1 is 0, not None
    assert f1([True, False], [False, True]) == 0.0


def test_empty_and_mismatched_input_are_clear_errors():
    for function in (accuracy, balanced_accuracy, precision, recall, mae, pearson, spearman, confusion_matrix):
        with pytest.raises(MetricsError, match="empty input"):
            function([], [])
    with pytest.raises(ValueError, match="different lengths"):
        mae([1, 2], [1])
    assert issubclass(MetricsError, InputError)
    with pytest.raises(MetricsError, match="no item"):
        grader_report([])


def test_mae_in_points():
    # |7-7| + |0-3.5| + |3.5-0| = 7 over 3 items
    assert mae([7, 0, 3.5], [7, 3.5, 0]) == pytest.approx(7 / 3)


def test_pearson_by_hand_and_constant_input():
    # x = 1,2,3 (mean 2), y = 1,2,5 (mean 8/3): dx = -1,0,1, dy = -5/3,-2/3,7/3
    # sum dx*dy = 5/3 + 7/3 = 4; sum dx^2 = 2; sum dy^2 = (25+4+49)/9 = 78/9
    # r = 4 / sqrt(2 * 78/9) = 12 / sqrt(156)
    assert pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(12 / math.sqrt(156))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None  # constant: None, not NaN
    assert pearson([0.7, 0.7], [0, 1]) is None
    assert pearson([1], [2]) is None
    assert spearman([5, 5, 5], [1, 2, 3]) is None


def test_spearman_with_ties_uses_average_ranks():
    assert rankdata([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert rankdata([3, 1, 3, 3]) == [3, 1, 3, 3]  # three tied at ranks 2,3,4 -> 3
    # ranks x = 1, 2.5, 2.5, 4 and y = 1, 3, 2, 4 (both mean 2.5)
    # dx = -1.5, 0, 0, 1.5; dy = -1.5, 0.5, -0.5, 1.5
    # sum dx*dy = 4.5; sum dx^2 = 4.5; sum dy^2 = 5 -> r = 4.5 / sqrt(22.5) = 3 / sqrt(10)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    # monotone but not linear: Spearman 1, Pearson below 1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)


def test_confusion_matrices():
    result = confusion_matrix([0, 0, 7, 7, 3.5], [0, 7, 7, 7, 0])
    assert result["labels"] == [0, 3.5, 7]
    assert result["matrix"] == [[1, 0, 1], [1, 0, 0], [0, 0, 2]]
    binary = confusion_matrix(TRUE, PRED, labels=[False, True])
    # rows: truly False (2, 3) -> predicted F, T; truly True (0, 1, 4) -> T, F, T
    assert binary["matrix"] == [[1, 1], [1, 2]]
    with pytest.raises(MetricsError, match="not one of the labels"):
        confusion_matrix([0, 1], [0, 2], labels=[0, 1])
    assert [score_bucket(s) for s in (0, 0.2, 0.5, 6 / 7, 1)] == ["0", "0.5", "0.5", "0.5", "1"]


def test_bootstrap_is_seeded_and_contains_the_estimate():
    x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    y = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9]
    first = bootstrap_ci(pearson, x, y, n_resamples=300, seed=7)
    again = bootstrap_ci(pearson, x, y, n_resamples=300, seed=7)
    other = bootstrap_ci(pearson, x, y, n_resamples=300, seed=8)
    assert first == again
    assert (first["low"], first["high"]) != (other["low"], other["high"])
    assert first["low"] <= first["estimate"] <= first["high"] <= 1.0
    assert first["estimate"] == pytest.approx(pearson(x, y))
    ci = bootstrap_ci(accuracy, TRUE * 4, PRED * 4, n_resamples=200, seed=0)
    assert ci["low"] <= 0.6 <= ci["high"] and ci["n_resamples"] == 200
    # an undefined estimate has no interval
    assert bootstrap_ci(pearson, [1, 1, 1], [1, 2, 3])["low"] is None
    with pytest.raises(MetricsError):
        bootstrap_ci(pearson, [1, 2], [1, 2], n_resamples=0)


def _row(human, predicted, max_points=7, competition="imo", model_id="a"):
    return {
        "human_points": human,
        "predicted_points": predicted,
        "max_points": max_points,
        "human_correct": human >= max_points,
        "predicted_correct": predicted is not None and predicted >= max_points,
        "meta": {"competition": competition, "model_id": model_id},
    }


def test_breakdown_groups_by_meta_key():
    rows = [
        _row(7, 7, competition="imo"),
        _row(0, 7, competition="cmo"),
        _row(7, 0, competition="imo"),
        _row(1, 1, competition=None),
    ]
    sizes = breakdown(rows, "competition", len)
    assert sizes == {"cmo": 1, "imo": 2, "unknown": 1}


def test_grader_report_by_hand():
    rows = [
        _row(7, 7),  # correct, predicted correct
        _row(7, 3.5),  # correct, missed
        _row(0, 7, model_id="b"),  # wrong, predicted correct
        _row(0, 0, model_id="b"),  # wrong, predicted wrong
        _row(21, 21, max_points=21, competition="cmo"),  # correct on the 21 scale
        _row(3, None),  # no verdict: left out
    ]
    report = grader_report(rows, n_resamples=200)
    assert report["n"] == 5 and report["unscored"] == 1
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["precision"] == pytest.approx(2 / 3)  # predicted correct: rows 1, 3, 5; truly: 1, 5
    assert report["recall"] == pytest.approx(2 / 3)  # truly correct: 1, 2, 5; found: 1, 5
    assert report["mae_points"] == pytest.approx((0 + 3.5 + 7 + 0 + 0) / 5)
    assert report["mae_score"] == pytest.approx((0 + 0.5 + 1 + 0 + 0) / 5)
    assert report["confusion_binary"]["matrix"] == [[1, 1], [1, 2]]
    assert report["confusion_buckets"]["matrix"] == [[1, 0, 1], [0, 0, 0], [0, 1, 2]]
    assert report["breakdowns"]["competition"]["cmo"]["n"] == 1
    assert report["breakdowns"]["model_id"]["b"]["precision"] == 0.0
    # the lone cmo row: one class, constant grades -> notes, Nones
    cmo = report["breakdowns"]["competition"]["cmo"]
    assert cmo["pearson"] is None and any("balanced accuracy equals accuracy" in n for n in cmo["notes"])
    for name, interval in report["intervals"].items():
        if report[name] is not None and interval["low"] is not None:
            assert interval["low"] <= interval["high"]
    json.dumps(report)  # the report is JSON-able


# -- agreement beyond accuracy (kappa, weighted kappa, leniency, calibration, sample agreement)


def test_cohen_kappa_by_hand():
    from proofcritic.benchmarks.metrics import cohen_kappa

    # observed agreement 3/4; chance 0.5 * 0.25 + 0.5 * 0.75 = 1/2 -> (3/4 - 1/2) / (1 - 1/2)
    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == pytest.approx(0.5)
    assert cohen_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert cohen_kappa([True, True], [True, True], labels=[False, True]) is None  # chance agreement is total
    with pytest.raises(MetricsError, match="weights"):
        cohen_kappa([1], [1], weights="cubic")


def test_quadratic_weighted_kappa_by_hand():
    from proofcritic.benchmarks.metrics import cohen_kappa

    # weights ((i - j) / 2)^2; observed sum w*O = 0.25 / 3; expected sum w*E = 1.25 / 3 -> 1 - 0.2
    assert cohen_kappa([0, 1, 2], [0, 2, 2], labels=[0, 1, 2], weights="quadratic") == pytest.approx(0.8)
    # a near miss costs less than a far one under quadratic weights, the same under nominal ones
    near = cohen_kappa([0, 1, 2, 2], [0, 1, 2, 1], labels=[0, 1, 2], weights="quadratic")
    far = cohen_kappa([0, 1, 2, 2], [0, 1, 2, 0], labels=[0, 1, 2], weights="quadratic")
    assert near > far
    assert cohen_kappa([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx(cohen_kappa([0, 1, 2, 2], [0, 1, 2, 0]))


def test_grades_on_the_seven_point_scale_and_gradingbench_buckets():
    from proofcritic.benchmarks.metrics import gradingbench_bucket, points_grade

    assert [points_grade(p, 7) for p in (0, 3.5, 6.49, 7)] == [0, 4, 6, 7]
    assert points_grade(10, 21) == 3 and points_grade(21, 21) == 7
    assert [gradingbench_bucket(p, 7) for p in (0, 0.4, 0.6, 3.5, 5, 6.6, 7)] == [0, 0, 1, 1, 6, 7, 7]
    assert gradingbench_bucket(18, 21) == 6


def test_sample_agreement_fleiss_by_hand():
    from proofcritic.benchmarks.metrics import sample_agreement

    out = sample_agreement([[1, 1, 1], [0, 1, 1], [0, 0], [1]])  # the lone sample is left out
    assert out["proofs"] == 3
    assert out["pairwise"] == pytest.approx(7 / 9)  # (1 + 1/3 + 1) / 3
    # chance: (5/8)^2 + (3/8)^2 = 17/32 -> (7/9 - 17/32) / (15/32)
    assert out["fleiss_kappa"] == pytest.approx(71 * 32 / (288 * 15))
    assert sample_agreement([[1], []]) == {"proofs": 0, "pairwise": None, "fleiss_kappa": None}
    assert sample_agreement([[1, 1], [1, 1]])["fleiss_kappa"] is None  # one value only


def test_partial_credit_calibration_and_leniency_by_hand():
    from proofcritic.benchmarks.metrics import mean_difference, partial_credit_calibration

    out = partial_credit_calibration([0, 0.5, 1, 1], [0, 1, 1, 0.5])
    assert out["buckets"]["1"] == {"n": 2, "mean_predicted": 1.0, "mean_human": 0.75}
    assert out["buckets"]["0.5"] == {"n": 1, "mean_predicted": 0.5, "mean_human": 1.0}
    assert out["error"] == pytest.approx(0.25)  # 1/4 * 0 + 2/4 * 0.25 + 1/4 * 0.5
    assert mean_difference([7, 0, 3], [7, 2, 2]) == pytest.approx(1 / 3)


def test_grader_report_carries_the_agreement_metrics():
    rows = [_row(7, 7), _row(7, 3.5), _row(0, 7), _row(0, 0), _row(2, 0)]
    rows[0]["sample_scores"] = [1, 1]
    rows[1]["sample_scores"] = [1, 0]
    report = grader_report(rows, n_resamples=200)
    human = [True, True, False, False, False]
    predicted = [True, False, True, False, False]
    from proofcritic.benchmarks.metrics import cohen_kappa

    assert report["kappa"] == pytest.approx(cohen_kappa(human, predicted))
    assert report["qwk_points"] == pytest.approx(
        cohen_kappa([7, 7, 0, 0, 2], [7, 4, 7, 0, 0], labels=range(8), weights="quadratic")
    )
    assert report["leniency_points"] == pytest.approx((0 - 3.5 + 7 + 0 - 2) / 5)
    assert set(report["leniency_by_human_bucket"]) == {"0", "0.5", "1"}
    assert report["leniency_by_human_bucket"]["1"]["leniency_points"] == pytest.approx(-3.5 / 2)
    assert report["sample_agreement"]["pairwise"] == pytest.approx(0.5)
    assert report["intervals"]["kappa"]["low"] <= report["kappa"] <= report["intervals"]["kappa"]["high"]
    json.dumps(report)


def test_issue_localisation_by_hand():
    from proofcritic.benchmarks.metrics import issue_localisation

    rows = [
        # two annotated errors; issues at [5, 9) (hits the first), [40, 50) (hits nothing), one unplaced
        {"error_spans": [[0, 10], [20, 30]], "issue_spans": [[5, 9], [40, 50], None]},
        # one annotated error, found by the one issue
        {"error_spans": [[100, 120]], "issue_spans": [[119, 130]]},
        {"error_spans": [], "issue_spans": [[0, 5]]},  # no annotation: left out
    ]
    out = issue_localisation(rows)
    assert out["proofs"] == 2 and out["errors"] == 3 and out["issues"] == 4
    assert out["errors_found"] == pytest.approx(2 / 3)
    assert out["issues_located"] == pytest.approx(3 / 4)
    assert out["issues_on_target"] == pytest.approx(2 / 3)
    assert issue_localisation([{"error_spans": [[0, 1]], "issue_spans": []}])["issues_on_target"] is None
