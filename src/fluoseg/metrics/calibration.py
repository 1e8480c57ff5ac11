"""Calibration of per-pixel probabilities and quality estimates without ground truth.

The MS-ME paper names uncertainty estimation as the way to judge segmentation quality "upon
previously unseen combinations" of markers. This module holds the numbers that judge such
an estimate:

* **Reliability and expected calibration error (ECE)** of per-pixel binary probabilities
  ``p`` (probability of the positive class) against 0/1 labels ``y``, with ``B``
  equal-width bins ``[k/B, (k+1)/B)`` (the last one closed at 1)::

      ECE = sum_b (n_b / N) * | mean(y in b) - mean(p in b) |

  :class:`CalibrationCounts` holds the per-bin sums, so images and marker subsets pool
  by adding counts before the ratio is taken (like pooled F1).
* **Expected F1** of a probability map, an estimate of the pixel F1 of its thresholded
  mask made without labels (:func:`expected_confusion`, :func:`expected_f1`).
* **Spearman's rank correlation** (:func:`spearman_correlation`), e.g. between predicted
  and true F1 over all marker subsets: does the estimate rank the subsets right?

Derivation of the expected F1
    Let ``m_i = 1[p_i > t]`` be the predicted mask and suppose the true labels are
    independent ``Y_i ~ Bernoulli(p_i)``, i.e. the probabilities are calibrated. Then
    ``TP = sum m_i Y_i``, ``FP = sum m_i (1 - Y_i)`` and ``FN = sum (1 - m_i) Y_i`` have
    expectations ``E[TP] = sum m_i p_i``, ``E[FP] = sum m_i (1 - p_i)`` and
    ``E[FN] = sum (1 - m_i) p_i``. F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (sum m + sum Y),
    and replacing the counts by their expectations gives::

        expected F1 = 2 sum(p * m) / (sum(m) + sum(p))

    This is a ratio of expectations, not the expectation of the ratio: by the delta
    method they differ by O(1/n) for n pixels of uncertain label (the ratio is smooth in
    the counts, whose relative spread shrinks like 1/sqrt(n)), which is negligible for
    images. It equals the true F1 in expectation up to that term when the map is
    calibrated, so miscalibration (ECE) is what makes it wrong. Both-empty (no pixel above
    the threshold and all p = 0) is 1.0, the convention of :mod:`fluoseg.metrics.semantic`.

    The derivation holds for any mask ``m`` fixed by the prediction, not only ``p > t``:
    multi-class maps decoded by argmax (with the background) pass their decoded class
    mask as ``predicted``, so the estimate is of the F1 of the mask actually written.

This module imports nothing but numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fluoseg.errors import FluosegError

__all__ = [
    "CalibrationCounts",
    "ExpectedConfusion",
    "calibration_counts",
    "check_probabilities",
    "expected_calibration_error",
    "expected_confusion",
    "expected_f1",
    "rank_average",
    "reliability_table",
    "spearman_correlation",
]

DEFAULT_BINS = 15


def check_probabilities(values: Any) -> np.ndarray:
    """``values`` as a float64 array, checked to hold finite probabilities in [0, 1].

    Raises
    ------
    FluosegError
        If a value is outside [0, 1] or not finite (logits passed by mistake).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size and (not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0):
        raise FluosegError("probabilities must be finite numbers in [0, 1]; apply sigmoid/softmax to logits first")
    return array


def _selected(probabilities: Any, labels: Any | None, mask: Any | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat probabilities (and 0/1 labels) of the pixels ``mask`` keeps."""
    p = check_probabilities(probabilities)
    y = None
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != p.shape:
            raise FluosegError(f"labels of shape {y.shape} do not match probabilities of shape {p.shape}")
        if y.size and not np.isin(y, (0, 1)).all():
            raise FluosegError("labels must be 0/1 (or boolean) per pixel; binarise the reference mask first")
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != p.shape:
            raise FluosegError(f"mask of shape {keep.shape} does not match probabilities of shape {p.shape}")
        p = p[keep]
        y = None if y is None else y[keep]
    return p.ravel(), None if y is None else y.ravel().astype(np.float64)


@dataclass(frozen=True)
class CalibrationCounts:
    """Per-bin sums of a reliability diagram; add two to pool images or subsets.

    Attributes
    ----------
    count
        ``(B,)`` pixels per bin.
    probability_sum
        ``(B,)`` sum of the probabilities in each bin.
    label_sum
        ``(B,)`` number of positive labels in each bin.
    """

    count: np.ndarray
    probability_sum: np.ndarray
    label_sum: np.ndarray

    @property
    def n_bins(self) -> int:
        """Number of equal-width bins B."""
        return int(self.count.size)

    def __add__(self, other: CalibrationCounts) -> CalibrationCounts:
        if not isinstance(other, CalibrationCounts):
            return NotImplemented
        if other.n_bins != self.n_bins:
            raise FluosegError(f"cannot pool calibration counts with {self.n_bins} and {other.n_bins} bins")
        return CalibrationCounts(self.count + other.count, self.probability_sum + other.probability_sum,
                                 self.label_sum + other.label_sum)

    def ece(self) -> float:
        """Expected calibration error; NaN when no pixel was counted."""
        total = int(self.count.sum())
        if total == 0:
            return float("nan")
        filled = self.count > 0
        gap = np.abs(self.label_sum[filled] - self.probability_sum[filled])  # n_b * |mean y - mean p|
        return float(gap.sum() / total)

    def rows(self) -> list[dict[str, float | int]]:
        """Reliability-table rows: bin edges, count, mean probability, observed frequency, gap.

        Means and gaps of empty bins are NaN.
        """
        rows = []
        for index in range(self.n_bins):
            n = int(self.count[index])
            mean_p = float(self.probability_sum[index] / n) if n else float("nan")
            frequency = float(self.label_sum[index] / n) if n else float("nan")
            rows.append({"bin_low": index / self.n_bins, "bin_high": (index + 1) / self.n_bins, "count": n,
                         "mean_probability": mean_p, "observed_frequency": frequency,
                         "gap": abs(frequency - mean_p) if n else float("nan")})
        return rows


def calibration_counts(probabilities: Any, labels: Any, *, n_bins: int = DEFAULT_BINS,
                       mask: Any | None = None) -> CalibrationCounts:
    """Bin per-pixel probabilities and count positives per bin.

    Parameters
    ----------
    probabilities
        Array of probabilities of the positive class, any shape.
    labels
        0/1 (or boolean) reference of the same shape.
    n_bins
        Equal-width bins on [0, 1]; bin k is ``[k/B, (k+1)/B)``, the last includes 1.
    mask
        Optional boolean array of the pixels to count (e.g. inside the image, not ignored).

    Raises
    ------
    FluosegError
        For mismatched shapes, probabilities outside [0, 1], labels other than 0/1, or a
        bin count below 1.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise FluosegError(f"n_bins must be a positive integer, got {n_bins!r}")
    p, y = _selected(probabilities, labels, mask)
    y = cast(np.ndarray, y)  # labels were given, so they come back
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    return CalibrationCounts(
        count=np.bincount(index, minlength=n_bins).astype(np.int64),
        probability_sum=np.bincount(index, weights=p, minlength=n_bins),
        label_sum=np.bincount(index, weights=y, minlength=n_bins),
    )


def expected_calibration_error(probabilities: Any, labels: Any, *, n_bins: int = DEFAULT_BINS,
                               mask: Any | None = None) -> float:
    """Expected calibration error of per-pixel binary probabilities (equal-width bins).

    See the module notes for the formula; arguments as :func:`calibration_counts`.
    Returns NaN when no pixel is selected.

    Examples
    --------
    >>> round(expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1], n_bins=2), 6)  # (2*0.4 + 2*0.1) / 4
    0.25
    """
    return calibration_counts(probabilities, labels, n_bins=n_bins, mask=mask).ece()


def reliability_table(probabilities: Any, labels: Any, *, n_bins: int = DEFAULT_BINS,
                      mask: Any | None = None) -> list[dict[str, float | int]]:
    """Rows of the reliability diagram, one per bin (see :meth:`CalibrationCounts.rows`)."""
    return calibration_counts(probabilities, labels, n_bins=n_bins, mask=mask).rows()


@dataclass(frozen=True)
class ExpectedConfusion:
    """Expected pixel counts of a thresholded probability map if its labels were Bernoulli(p).

    Add two to pool images (the expectation of a sum is the sum of expectations).
    """

    tp: float
    fp: float
    fn: float

    def __add__(self, other: ExpectedConfusion) -> ExpectedConfusion:
        if not isinstance(other, ExpectedConfusion):
            return NotImplemented
        return ExpectedConfusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        """``2 E[TP] / (2 E[TP] + E[FP] + E[FN])``; 1.0 when all three are 0."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else float(2 * self.tp / denominator)


def expected_confusion(probabilities: Any, *, threshold: float = 0.5, mask: Any | None = None,
                       predicted: Any | None = None) -> ExpectedConfusion:
    """Expected TP, FP and FN of the mask ``p > threshold`` under labels drawn Bernoulli(p).

    Parameters
    ----------
    probabilities
        Probability map of the positive class, any shape.
    threshold
        Pixels with ``p > threshold`` are predicted positive (0.5 as in decoding).
    mask
        Optional boolean array of the pixels to count.
    predicted
        Optional 0/1 mask of the predicted positives, the shape of ``probabilities``, used
        instead of ``p > threshold`` (e.g. one class of an argmax decoding).

    Raises
    ------
    FluosegError
        For probabilities outside [0, 1], a threshold outside [0, 1), or a predicted mask
        of another shape or with values other than 0/1.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
        raise FluosegError(f"threshold must be a number in [0, 1), got {threshold!r}")
    if predicted is None:
        p, _ = _selected(probabilities, None, mask)
        predicted = p > threshold
    else:
        # the predicted mask is checked like reference labels (same shape, 0/1) and selected alike
        p, chosen = _selected(probabilities, predicted, mask)
        predicted = cast(np.ndarray, chosen) > 0
    tp = float(p[predicted].sum())
    return ExpectedConfusion(tp=tp, fp=float(predicted.sum()) - tp, fn=float(p[~predicted].sum()))


def expected_f1(probabilities: Any, *, threshold: float = 0.5, mask: Any | None = None,
                predicted: Any | None = None) -> float:
    """Expected pixel F1 of a probability map, without labels: ``2 sum(p m) / (sum m + sum p)``.

    ``m = 1[p > threshold]``, or the given ``predicted`` mask. An estimate of the F1 the thresholded mask would score
    against labels drawn ``Bernoulli(p)`` (see the module notes); as good as the map's
    calibration.

    Examples
    --------
    >>> round(expected_f1([0.9, 0.8, 0.2, 0.0]), 4)  # 2 * 1.7 / (2 + 1.9)
    0.8718
    """
    return expected_confusion(probabilities, threshold=threshold, mask=mask, predicted=predicted).f1


def rank_average(values: Any) -> np.ndarray:
    """Ranks ``1..n`` of a 1D array, ties given the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Runs of equal values: each gets the average of positions first..last (1-based).
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman_correlation(x: Any, y: Any) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks.

    Returns NaN for fewer than two pairs or when either side is constant.

    Raises
    ------
    FluosegError
        If the inputs differ in length or hold NaN or infinity.
    """
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise FluosegError(f"rank correlation needs pairs; got {a.size} and {b.size} values")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise FluosegError("rank correlation needs finite values; drop the NaN pairs first")
    if a.size < 2:
        return float("nan")
    ra, rb = rank_average(a) - (a.size + 1) / 2, rank_average(b) - (b.size + 1) / 2
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float("nan") if denominator == 0 else float((ra * rb).sum() / denominator)
