"""Statistics for comparing methods, as the MS-ME paper reports them, and as a sceptical reader checks them.

Scores of two methods on the same units are *paired*: the paper reports the relative score
``Q_phi - Q_ref`` per unit and tests it with a two-sided Wilcoxon signed-rank test. Unpaired
groups (e.g. marker combinations with vs. without a marker) are compared with the two-sided
Mann-Whitney U test. Significance is written in the paper's star notation: ``*`` p <= 0.05,
``**`` p <= 0.01, ``***`` p <= 0.001.

The unit of replication matters: the marker combinations of one fold are scored by one
network on the same samples, so they are not independent replicates. Benchmarks therefore
average over what one network produced and test at the level of independently trained
networks (fold x seed) with :func:`paired_t_test` (or Wilcoxon when there are enough
networks), and correct a report's family of tests with :func:`holm`. Networks that share
nothing across the two groups (e.g. different variants trained with the same seed number)
are not paired: :func:`welch_t_test` compares them as independent groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


def stars(p_value: float) -> str:
    """The paper's significance notation for a p-value (``"n.s."`` above 0.05)."""
    if not np.isfinite(p_value):
        return "n/a"
    if p_value <= 0.001:
        return "***"
    if p_value <= 0.01:
        return "**"
    if p_value <= 0.05:
        return "*"
    return "n.s."


class _Starred:
    """Star notation of a result's ``p_value`` (shared by the test results below)."""

    p_value: float

    @property
    def significance(self) -> str:
        """Star notation of the p-value."""
        return stars(self.p_value)


@dataclass(frozen=True)
class PairedComparison(_Starred):
    """Result of a paired comparison of a method against a reference.

    Attributes
    ----------
    n
        Number of paired units.
    mean_difference, median_difference
        Of ``method - reference`` over the units.
    statistic, p_value
        Wilcoxon signed-rank statistic and two-sided p-value (NaN when every difference is 0
        or there are no units).
    """

    n: int
    mean_difference: float
    median_difference: float
    statistic: float
    p_value: float


def paired_wilcoxon(method: Sequence[float], reference: Sequence[float]) -> PairedComparison:
    """Two-sided Wilcoxon signed-rank test of paired scores ``method`` vs ``reference``.

    Zero differences are dropped (``zero_method="wilcox"``, Wilcoxon's original treatment),
    and the exact or normal-approximation p-value is chosen by scipy from the sample size.
    """
    a, b = np.asarray(method, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.shape} and {b.shape}")
    differences = a - b
    if differences.size == 0:
        return PairedComparison(0, float("nan"), float("nan"), float("nan"), float("nan"))
    if np.all(differences == 0):
        return PairedComparison(differences.size, 0.0, 0.0, float("nan"), float("nan"))
    result = scipy_stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return PairedComparison(
        n=int(differences.size),
        mean_difference=float(differences.mean()),
        median_difference=float(np.median(differences)),
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
    )


def mann_whitney(group_a: Sequence[float], group_b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of two unpaired groups; returns ``(U, p_value)``."""
    a, b = np.asarray(group_a, dtype=float), np.asarray(group_b, dtype=float)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    result = scipy_stats.mannwhitneyu(a, b, alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def paired_t_test(method: Sequence[float], reference: Sequence[float]) -> PairedComparison:
    """Two-sided paired t-test of ``method`` vs ``reference`` (one value per independent replicate).

    With few replicates (e.g. 4 folds) the Wilcoxon test cannot reach p < 0.125; the paired
    t-test can, assuming roughly normal differences. ``statistic`` is Student's t.
    """
    a, b = np.asarray(method, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.shape} and {b.shape}")
    differences = a - b
    n = int(differences.size)
    if n < 2 or np.all(differences == differences[0]):
        mean = float(differences.mean()) if n else float("nan")
        median = float(np.median(differences)) if n else float("nan")
        return PairedComparison(n, mean, median, float("nan"), float("nan"))
    result = scipy_stats.ttest_rel(a, b)
    return PairedComparison(n=n, mean_difference=float(differences.mean()),
                            median_difference=float(np.median(differences)), statistic=float(result.statistic),
                            p_value=float(result.pvalue))


@dataclass(frozen=True)
class UnpairedComparison(_Starred):
    """Result of Welch's t-test of two independent groups (``method`` vs ``reference``).

    Attributes
    ----------
    n_method, n_reference
        Group sizes.
    mean_difference
        ``mean(method) - mean(reference)``.
    statistic, df, p_value
        Welch's t, its Welch-Satterthwaite degrees of freedom and the two-sided p-value (NaN
        when a group has fewer than 2 values or both groups have no spread).
    """

    n_method: int
    n_reference: int
    mean_difference: float
    statistic: float
    df: float
    p_value: float


def welch_t_test(method: Sequence[float], reference: Sequence[float]) -> UnpairedComparison:
    """Two-sided Welch t-test (unequal variances) of two independent groups of replicates.

    ``t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with sample variances (ddof 1)
    and Welch-Satterthwaite degrees of freedom; no equal-variance assumption, so one noisy
    variant does not borrow the spread of a steady one.
    """
    a, b = np.asarray(method, dtype=float), np.asarray(reference, dtype=float)
    difference = float(a.mean() - b.mean()) if a.size and b.size else float("nan")
    if a.size < 2 or b.size < 2:
        return UnpairedComparison(int(a.size), int(b.size), difference, float("nan"), float("nan"), float("nan"))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return UnpairedComparison(int(a.size), int(b.size), difference, float("nan"), float("nan"), float("nan"))
    t = difference / float(np.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    p = float(2 * scipy_stats.t.sf(abs(t), df))
    return UnpairedComparison(int(a.size), int(b.size), difference, t, df, p)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of a family of tests (NaN entries stay NaN and do not count).

    The k-th smallest of m p-values is multiplied by ``m - k + 1``; adjusted values are made
    monotone (never below an earlier one) and capped at 1. Rejecting where the adjusted value is
    <= alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted
