import numpy as np
import pytest
from scipy import stats as scipy_stats

from itertools import combinations, product
from math import erfc, sqrt

from fluoseg.metrics.stats import holm, mann_whitney, paired_t_test, paired_wilcoxon, stars, welch_t_test


def exact_wilcoxon_p(differences) -> float:
    """Two-sided exact p of the signed-rank statistic by enumerating all 2^n sign patterns."""
    ranks = scipy_stats.rankdata(np.abs(differences))
    observed = ranks[np.asarray(differences) > 0].sum()
    total = ranks.sum()
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in product((0, 1), repeat=len(ranks))]
    low, high = min(observed, total - observed), max(observed, total - observed)
    return min(1.0, sum(1 for w in sums if w <= low or w >= high) / len(sums))


@pytest.mark.parametrize("p, expected", [(0.0005, "***"), (0.001, "***"), (0.005, "**"), (0.05, "*"),
                                         (0.051, "n.s."), (float("nan"), "n/a")])
def test_star_notation(p, expected):
    assert stars(p) == expected


def test_paired_wilcoxon_hand_case_exact_p():
    # all 6 differences positive and distinct: exact two-sided p = 2 / 2**6
    method = [0.9, 0.8, 0.7, 0.75, 0.85, 0.95]
    reference = [0.8, 0.78, 0.6, 0.72, 0.70, 0.90]
    result = paired_wilcoxon(method, reference)
    assert result.n == 6 and result.p_value == pytest.approx(2 / 64)
    assert result.mean_difference == pytest.approx(np.mean(np.subtract(method, reference)))
    assert result.significance == "*"


@pytest.mark.parametrize("seed", range(5))
def test_paired_wilcoxon_equals_exact_enumeration_for_small_samples(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(10), rng.random(10) + 0.1 * seed
    assert paired_wilcoxon(a, b).p_value == pytest.approx(exact_wilcoxon_p(a - b))


def test_paired_wilcoxon_large_samples_use_the_normal_approximation():
    rng = np.random.default_rng(0)
    a, b = rng.random(124), rng.random(124)
    d = a - b
    ranks = scipy_stats.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    n = d.size
    z = (w_plus - n * (n + 1) / 4) / sqrt(n * (n + 1) * (2 * n + 1) / 24)
    result = paired_wilcoxon(a, b)
    assert result.statistic == pytest.approx(min(w_plus, n * (n + 1) / 2 - w_plus))
    assert result.p_value == pytest.approx(erfc(abs(z) / sqrt(2)), rel=1e-6)


def test_paired_t_test_hand_case():
    # differences 1, 2, 3, 4: mean 2.5, sd 1.2910, t = 2.5 / (1.2910 / 2) = 3.8730, 3 df: p = 0.03047
    result = paired_t_test([2, 4, 6, 8], [1, 2, 3, 4])
    assert result.n == 4 and result.statistic == pytest.approx(3.8730, abs=1e-4)
    assert result.p_value == pytest.approx(0.03047, abs=1e-4) and result.significance == "*"
    assert np.isnan(paired_t_test([1.0], [0.0]).p_value) and np.isnan(paired_t_test([1, 2], [0, 1]).p_value)


def test_welch_t_test_hand_case():
    # a = 1, 2, 3 (mean 2, var 1); b = 4, 6, 8 (mean 6, var 4): se^2 = 1/3 + 4/3 = 5/3,
    # t = -4 / sqrt(5/3) = -3.0984, df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17 = 2.9412,
    # two-sided p from Student's t with 2.9412 df = 0.05479 (3 df would give 0.0534, 2 df 0.0903)
    result = welch_t_test([1, 2, 3], [4, 6, 8])
    assert (result.n_method, result.n_reference) == (3, 3) and result.mean_difference == pytest.approx(-4.0)
    assert result.statistic == pytest.approx(-3.0984, abs=1e-4) and result.df == pytest.approx(50 / 17)
    assert result.p_value == pytest.approx(0.05479, abs=1e-4) and result.significance == "n.s."
    # unequal spread: the pooled-variance (Student) test would give other df; Welch's must not pool
    assert welch_t_test([1, 2, 3, 4], [10, 10.5]).df == pytest.approx(
        (5 / 12 + 0.125 / 2) ** 2 / ((5 / 12) ** 2 / 3 + (0.125 / 2) ** 2 / 1))


def test_welch_t_test_degenerate_cases():
    assert np.isnan(welch_t_test([1.0], [0.0, 1.0]).p_value)        # one value: no variance
    assert np.isnan(welch_t_test([1.0, 1.0], [0.0, 0.0]).p_value)   # no spread at all
    assert welch_t_test([1.0, 1.0], [0.0, 0.0]).mean_difference == 1.0
    assert np.isnan(welch_t_test([], [1.0, 2.0]).mean_difference)


def test_holm_hand_case():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0] and holm([]).size == 0


def test_paired_wilcoxon_degenerate_cases():
    assert np.isnan(paired_wilcoxon([0.5, 0.5], [0.5, 0.5]).p_value)
    assert paired_wilcoxon([], []).n == 0
    with pytest.raises(ValueError):
        paired_wilcoxon([1, 2], [1])


def test_mann_whitney_equals_exact_enumeration_for_small_groups():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5), rng.normal(1.0, 1, 6)
    u, p = mann_whitney(a, b)
    values = np.concatenate([a, b])
    assert u == sum(x > y for x in a for y in b)  # U of the first group, counted by hand
    # every way of choosing which 5 of the 11 values form group a is equally likely under H0
    us = [sum(values[i] > values[j] for i in chosen for j in set(range(11)) - set(chosen))
          for chosen in combinations(range(11), 5)]
    centre = 5 * 6 / 2
    expected = np.mean([abs(x - centre) >= abs(u - centre) for x in us])
    assert p == pytest.approx(expected)
    assert np.isnan(mann_whitney([], [1.0])[1])
