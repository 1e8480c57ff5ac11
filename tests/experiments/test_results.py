"""The long results table: optional label-free estimates, pooling them, and judging them across subsets."""

import csv
import math

import pytest

from fluoseg.experiments.results import (ESTIMATE_FIELDS, RESULT_FIELDS, estimate_quality, pool_samples, read_results,
                                         result_row, write_csv)
from fluoseg.metrics.calibration import ExpectedConfusion


def row(combination, sample, tp, fp, fn, expected=None, ece=None, fold=0):
    return result_row(method="M", class_name="c", combination=combination, markers=combination[2:].split(","),
                      fold=fold, sample=sample, tp=tp, fp=fp, fn=fn,
                      expected=None if expected is None else ExpectedConfusion(*expected), ece=ece)


def test_expected_counts_pool_over_samples_and_ece_does_not():
    rows = [row("m_1", "a", 8, 2, 0, (6.0, 4.0, 1.0), 0.2), row("m_1", "b", 2, 0, 2, (1.5, 0.5, 2.5), 0.1)]
    pooled = pool_samples(rows)
    assert len(pooled) == 1
    assert (pooled[0]["tp"], pooled[0]["fp"], pooled[0]["fn"]) == (10, 2, 2)
    assert (pooled[0]["expected_tp"], pooled[0]["expected_fp"], pooled[0]["expected_fn"]) == (7.5, 4.5, 3.5)
    assert pooled[0]["expected_f1"] == pytest.approx(15 / 23) and math.isnan(pooled[0]["ece"])
    # a sample without estimates (e.g. cached by an older fluoseg) leaves the pooled estimate out
    mixed = pool_samples([rows[0], row("m_1", "b", 2, 0, 2)])
    assert "expected_f1" not in mixed[0] and mixed[0]["tp"] == 10


def test_estimates_round_trip_and_tables_without_them_keep_their_columns(tmp_path):
    write_csv([row("m_1", "a", 8, 2, 0, (6.0, 4.0, 1.0), 0.2)], tmp_path / "with.csv")
    write_csv([row("m_1", "a", 8, 2, 0)], tmp_path / "without.csv")
    assert next(csv.reader((tmp_path / "with.csv").open())) == list(RESULT_FIELDS + ESTIMATE_FIELDS)
    assert next(csv.reader((tmp_path / "without.csv").open())) == list(RESULT_FIELDS)
    with_estimates, without = read_results([tmp_path / "with.csv", tmp_path / "without.csv"])
    assert with_estimates["expected_f1"] == pytest.approx(12 / 17) and with_estimates["ece"] == pytest.approx(0.2)
    assert list(without) == list(RESULT_FIELDS)


def test_quality_of_an_estimate_that_ranks_the_subsets_backwards():
    # true F1 rises 0.2 -> 0.5 -> 0.8 over three subsets, the estimate falls: Spearman -1
    rows = [row("m_1", "a", 1, 4, 4, (4.0, 1.0, 1.0), 0.3), row("m_2", "a", 1, 1, 1, (1.0, 1.0, 1.0), 0.1),
            row("m_12", "a", 4, 1, 1, (1.0, 4.0, 4.0), 0.2)]
    assert [r["f1"] for r in rows] == pytest.approx([0.2, 0.5, 0.8])
    assert [r["expected_f1"] for r in rows] == pytest.approx([0.8, 0.5, 0.2])
    (quality,) = estimate_quality(rows + [row("m_1", "a", 1, 1, 1, fold=1)])  # rows without estimates are left out
    assert (quality["n_combinations"], quality["fold"]) == (3, 0)
    assert quality["spearman_expected_f1"] == pytest.approx(-1.0)
    assert quality["mean_abs_error_expected_f1"] == pytest.approx((0.6 + 0 + 0.6) / 3)
    assert quality["mean_ece"] == pytest.approx(0.2)


def test_quality_pools_samples_first_and_one_subset_has_no_rank_correlation():
    rows = [row("m_1", "a", 8, 2, 0, (6.0, 4.0, 1.0), 0.2), row("m_1", "b", 2, 0, 2, (1.5, 0.5, 2.5), 0.4)]
    (quality,) = estimate_quality(rows)
    assert quality["n_combinations"] == 1 and math.isnan(quality["spearman_expected_f1"])
    assert quality["mean_abs_error_expected_f1"] == pytest.approx(abs(15 / 23 - 20 / 24))
    assert quality["mean_ece"] == pytest.approx(0.3)
