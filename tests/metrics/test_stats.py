import numpy as np
import pytest
from scipy import stats as scipy_stats

from fluoseg.metrics.stats import mann_whitney, paired_wilcoxon, stars


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


def test_paired_wilcoxon_matches_scipy_on_random_data():
    rng = np.random.default_rng(0)
    a, b = rng.random(124), rng.random(124)
    expected = scipy_stats.wilcoxon(a, b)
    result = paired_wilcoxon(a, b)
    assert result.p_value == pytest.approx(expected.pvalue) and result.statistic == pytest.approx(expected.statistic)


def test_paired_wilcoxon_degenerate_cases():
    assert np.isnan(paired_wilcoxon([0.5, 0.5], [0.5, 0.5]).p_value)
    assert paired_wilcoxon([], []).n == 0
    with pytest.raises(ValueError):
        paired_wilcoxon([1, 2], [1])


def test_mann_whitney_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 30), rng.normal(0.5, 1, 40)
    u, p = mann_whitney(a, b)
    expected = scipy_stats.mannwhitneyu(a, b, alternative="two-sided")
    assert u == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert np.isnan(mann_whitney([], [1.0])[1])
