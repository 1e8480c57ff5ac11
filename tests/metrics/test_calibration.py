"""Tests of fluoseg.metrics.calibration: ECE, reliability rows, expected F1, Spearman correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fluoseg.errors import FluosegError
from fluoseg.metrics.calibration import (
    CalibrationCounts,
    calibration_counts,
    expected_calibration_error,
    expected_confusion,
    expected_f1,
    rank_average,
    reliability_table,
    spearman_correlation,
)

# Four bins of width 0.25. By hand:
#   [0, .25):  0.05, 0.15        -> mean p 0.1,    positives 0/2 -> gap 0.1
#   [.25, .5): 0.25, 0.35        -> mean p 0.3,    positives 1/2 -> gap 0.2
#   [.5, .75): 0.5               -> mean p 0.5,    positives 0/1 -> gap 0.5
#   [.75, 1]:  0.8, 0.95, 1.0    -> mean p 0.9167, positives 3/3 -> gap 0.0833
#   ECE = (2 * 0.1 + 2 * 0.2 + 1 * 0.5 + 3 * 0.25 / 3) / 8 = 1.35 / 8
HAND_P = np.array([0.05, 0.15, 0.25, 0.35, 0.5, 0.8, 0.95, 1.0])
HAND_Y = np.array([0, 0, 1, 0, 0, 1, 1, 1])


def ece_by_loops(p, y, n_bins):
    """Independent ECE: explicit bin edges and a Python loop over them."""
    p, y = np.ravel(p).tolist(), np.ravel(y).tolist()
    total = 0.0
    for k in range(n_bins):
        low, high = k / n_bins, (k + 1) / n_bins
        members = [i for i, v in enumerate(p) if low <= v < high or (k == n_bins - 1 and v == 1.0)]
        if members:
            confidence = sum(p[i] for i in members) / len(members)
            accuracy = sum(y[i] for i in members) / len(members)
            total += len(members) * abs(accuracy - confidence)
    return total / len(p)


def test_ece_of_a_hand_computed_example():
    assert expected_calibration_error(HAND_P, HAND_Y, n_bins=4) == pytest.approx(1.35 / 8)
    assert expected_calibration_error(HAND_P, HAND_Y.astype(bool), n_bins=4) == pytest.approx(1.35 / 8)


def test_reliability_rows_of_the_hand_example():
    rows = reliability_table(HAND_P, HAND_Y, n_bins=4)
    assert [r["count"] for r in rows] == [2, 2, 1, 3]
    assert [r["bin_low"] for r in rows] == [0.0, 0.25, 0.5, 0.75] and rows[-1]["bin_high"] == 1.0
    assert [r["mean_probability"] for r in rows] == pytest.approx([0.1, 0.3, 0.5, 2.75 / 3])
    assert [r["observed_frequency"] for r in rows] == pytest.approx([0.0, 0.5, 0.0, 1.0])
    assert [r["gap"] for r in rows] == pytest.approx([0.1, 0.2, 0.5, 0.25 / 3])
    empty = reliability_table([0.1], [1], n_bins=3)[2]
    assert empty["count"] == 0 and math.isnan(empty["mean_probability"]) and math.isnan(empty["gap"])


@pytest.mark.parametrize("n_bins", [1, 3, 10, 15])
def test_ece_matches_an_independent_loop_implementation(n_bins):
    rng = np.random.default_rng(n_bins)
    p = rng.beta(0.5, 0.5, (30, 40))
    y = rng.random((30, 40)) < p**1.5
    mask = rng.random((30, 40)) < 0.7
    assert expected_calibration_error(p, y, n_bins=n_bins) == pytest.approx(ece_by_loops(p, y, n_bins), abs=1e-12)
    assert expected_calibration_error(p, y, n_bins=n_bins, mask=mask) == pytest.approx(
        ece_by_loops(p[mask], y[mask], n_bins), abs=1e-12)


def test_counts_pool_by_addition_like_a_concatenation():
    rng = np.random.default_rng(0)
    a, b = rng.random(200), rng.random(300)
    ya, yb = rng.random(200) < a, rng.random(300) < b
    pooled = calibration_counts(a, ya, n_bins=7) + calibration_counts(b, yb, n_bins=7)
    joined = calibration_counts(np.r_[a, b], np.r_[ya, yb], n_bins=7)
    assert np.array_equal(pooled.count, joined.count)
    assert np.allclose(pooled.probability_sum, joined.probability_sum)
    assert pooled.ece() == pytest.approx(joined.ece())
    with pytest.raises(FluosegError, match="7 and 3 bins"):
        pooled + calibration_counts(a, ya, n_bins=3)


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_do_not():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(p, y) < 0.01
    overconfident = np.where(p > 0.5, 1 - (1 - p) / 3, p / 3)
    assert expected_calibration_error(overconfident, y) > 0.1
    assert math.isnan(CalibrationCounts(np.zeros(3, np.int64), np.zeros(3), np.zeros(3)).ece())


def test_expected_f1_of_a_hand_example_and_its_counts():
    counts = expected_confusion([0.9, 0.8, 0.2, 0.0])
    assert (counts.tp, counts.fp, counts.fn) == pytest.approx((1.7, 0.3, 0.2))
    assert expected_f1([0.9, 0.8, 0.2, 0.0]) == pytest.approx(2 * 1.7 / (2 + 1.9))
    assert expected_f1([[0.9, 0.8], [0.2, 0.0]], threshold=0.85) == pytest.approx(2 * 0.9 / (1 + 1.9))
    assert expected_f1([0.9, 0.8, 0.2, 0.0], mask=[True, False, True, False]) == pytest.approx(1.8 / 2.1)


def test_expected_counts_of_a_given_predicted_mask():
    # an argmax decoding may leave a 0.45 pixel in the class and drop a 0.55 one (another class won)
    p = np.array([0.45, 0.55, 0.9, 0.1])
    predicted = np.array([1, 0, 1, 0])
    counts = expected_confusion(p, predicted=predicted)
    assert (counts.tp, counts.fp, counts.fn) == pytest.approx((1.35, 0.65, 0.65))
    assert expected_f1(p, predicted=predicted) == pytest.approx(2 * 1.35 / (2 + 2.0))
    assert expected_f1(p, predicted=p > 0.5) == pytest.approx(expected_f1(p))
    assert expected_f1(p, predicted=predicted, mask=[True, True, False, False]) == pytest.approx(0.9 / 2.0)
    with pytest.raises(FluosegError, match="0/1"):
        expected_f1(p, predicted=[2, 0, 1, 0])
    with pytest.raises(FluosegError, match="shape"):
        expected_f1(p, predicted=[1, 0])


def test_expected_f1_equals_the_mean_true_f1_when_labels_are_bernoulli_p():
    rng = np.random.default_rng(2)
    n = 3000
    # Mostly confident pixels plus a band of uncertain ones, as in a segmentation map.
    p = np.concatenate([rng.beta(0.3, 6, n // 2), rng.beta(6, 0.4, n // 3), rng.random(n - n // 2 - n // 3)])
    predicted = p > 0.5
    draws = rng.random((4000, n)) < p  # 4000 label images drawn Bernoulli(p)
    true_f1 = 2 * (draws & predicted).sum(axis=1) / (predicted.sum() + draws.sum(axis=1))
    standard_error = true_f1.std() / np.sqrt(true_f1.size)
    assert abs(true_f1.mean() - expected_f1(p)) < 4 * standard_error + 2e-4
    assert standard_error < 5e-4  # the check is sharp: the estimate is right to ~0.1 %


def test_expected_f1_edge_cases_and_pooling():
    assert expected_f1(np.zeros((4, 4))) == 1.0  # nothing predicted, nothing expected
    assert expected_f1(np.full(4, 0.4)) == 0.0  # nothing predicted, 1.6 positives expected
    a, b = np.array([0.9, 0.3]), np.array([0.7, 0.6, 0.1])
    pooled = expected_confusion(a) + expected_confusion(b)
    assert pooled.f1 == pytest.approx(expected_f1(np.r_[a, b]))
    with pytest.raises(FluosegError, match="threshold"):
        expected_f1(a, threshold=1.0)


def test_rank_average_matches_scipy_rankdata():
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.integers(0, 6, rng.integers(1, 30)).astype(float)
        assert np.array_equal(rank_average(values), stats.rankdata(values))


def test_spearman_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(4)
    for size in (2, 3, 7, 31, 50):
        for ties in (False, True):
            x = rng.integers(0, 4, size) if ties else rng.normal(size=size)
            y = x + rng.normal(scale=1.5, size=size)
            if np.ptp(x) == 0:
                continue
            assert spearman_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman_correlation([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman_correlation([1, 1, 1], [1, 2, 3])) and math.isnan(spearman_correlation([1], [2]))


@pytest.mark.parametrize("call, match", [
    (lambda: expected_calibration_error([0.5, 1.2], [0, 1]), "in \\[0, 1\\]"),
    (lambda: expected_calibration_error([0.5, np.nan], [0, 1]), "finite"),
    (lambda: expected_calibration_error([0.5, 0.2], [0, 2]), "0/1"),
    (lambda: expected_calibration_error([0.5, 0.2], [0, 1, 1]), "do not match"),
    (lambda: expected_calibration_error([0.5, 0.2], [0, 1], mask=[True]), "mask of shape"),
    (lambda: expected_calibration_error([0.5], [0], n_bins=0), "n_bins"),
    (lambda: spearman_correlation([1, 2], [1, 2, 3]), "pairs"),
    (lambda: spearman_correlation([1, np.nan], [1, 2]), "finite"),
])
def test_mistakes_are_fluoseg_errors(call, match):
    with pytest.raises(FluosegError, match=match):
        call()
