"""Object categories of Kromp et al.: TP, FP, FN, under- and over-segmentation.

Reference
    F. Kromp et al., "Evaluation of Deep Learning architectures for complex immunofluorescence
    nuclear image segmentation", IEEE Trans. Med. Imaging 40(7), 2021, section "Evaluation
    metrics". Their published numbers were computed by ``objectBasedMeasures4`` (with
    ``getMetrics`` and ``finalMetricForPrint``) in ``Evaluation/Tools/Helper.py`` and
    ``Evaluation/Tools/StructuredEvaluation.py`` of github.com/perlfloccri/NuclearSegmentationPipeline.
    This module is an independent vectorised implementation whose counts equal that code's.

Notation: ``G_i`` truth objects, ``P_t`` predicted objects, ``|.|`` pixel counts,
``cov(G_i) = |G_i ∩ (∪_t P_t)| / |G_i|`` the part of ``G_i`` covered by any prediction,
``a = coverage_threshold`` (0.5) and ``b = iou_threshold`` (0.5). "``P_t`` covers ``G_j``"
means ``|G_j ∩ P_t| / |G_j| > a``.

Detected
    ``G_i`` is *detected* when ``cov(G_i) >= a`` (the paper says "more than 50 %"; the code
    tests ``not cov < a``). Only detected objects can be TP, US or OS.
TP
    A pair ``(G_i, P_t)`` with ``G_i`` detected, ``IoU(G_i, P_t) > b``, and ``P_t`` covering
    exactly one truth object. ``tp`` counts such pairs (one-to-one since ``b >= 0.5``).
FN, FP
    ``fn = n_true - tp`` (every truth object that is not TP, detected or not);
    ``fp = n_pred - tp`` (every prediction that is not in a TP pair).
US (under-segmentation)
    ``G_i`` is US when it is detected with ``cov(G_i) > a``, and some ``P_t`` covers ``G_i`` and
    at least one other truth object, and ``IoU(∪{G_j covered by P_t}, P_t) > b``.
    ``us_rate = us / n_true``.
OS (over-segmentation)
    For detected ``G_i`` let ``R_i`` be the predictions touching it and
    ``I_i = {P_t in R_i : |P_t ∩ G_i| / |P_t| > a}`` those lying mostly inside it, with union
    ``U_i``. ``G_i`` is OS when at least two predictions touch it, ``IoU(G_i, U_i) > b`` and
    ``I_i`` holds at least two predictions. ``os_rate = os / n_true``.
    Reference quirks reproduced exactly: the reference counts the background value 0 as one
    more entry of ``R_i`` (so "at least two predictions touch it" reads ``|R_i| + [0 in R_i] > 2``
    with ``0 in R_i`` unless ``G_i`` fills the whole image and is fully predicted) and of the
    candidate list when ``|G_i \\ U_i| / |image \\ U_i| > a``, in which case the tested IoU is
    that of ``G_i`` with the whole image. On realistic images (background larger than any
    object) both reduce to the plain rule above.
Scores (``finalMetricForPrint``)
    ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``f1 = 2 tp / (2 tp + fp + fn)``,
    ``mean_tp_jaccard`` / ``mean_tp_dice``: mean IoU / Dice of the TP pairs. Pooled over images
    by summing counts (and the TP IoU/Dice sums) first.

Differences from the reference code, all outside its normal use:

* The reference counts each category as "distinct values of a label mask minus one", which is
  one too few when that mask has no background pixel (e.g. every pixel of the image belongs
  to a TP object); objects are counted directly here.
* 0/0: precision, recall and f1 are 1.0 when the image has neither truth nor predicted objects
  and 0.0 otherwise (the reference gives 0.0); ``us_rate``/``os_rate`` are 0.0 without truth
  objects (as in the reference); the mean TP IoU/Dice is 0.0 without TP (reference: NaN),
  1.0 for two empty images.
* The reference stores intermediate label sums in the truth image's dtype, which can
  overflow for small integer dtypes; labels are handled exactly here.
* Only ``iou_threshold >= 0.5`` and ``coverage_threshold >= 0.5`` are accepted: below that
  the reference's categories stop being one per object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.metrics.ratios import ObjectCountScores, safe_ratio
from fluoseg.metrics.overlap import LabelOverlap, label_overlap

__all__ = ["KrompCounts", "KrompObjects", "MISSED_AS", "kromp_object_categories", "kromp_object_counts", "pool_kromp"]

MISSED_AS = ("undetected", "under-segmented", "over-segmented", "misshapen")
"""Why a truth object is not TP, in the order :meth:`KrompObjects.missed_as` gives precedence."""


@dataclass(frozen=True)
class KrompCounts(ObjectCountScores):
    """Kromp et al. object categories of one image (or pooled over images).

    Attributes
    ----------
    n_true, n_pred
        Number of truth and predicted objects.
    detected
        Truth objects covered by predictions for at least ``coverage_threshold`` of their area.
    tp
        TP pairs (see module notes); ``fn = n_true - tp`` and ``fp = n_pred - tp``.
    us
        Under-segmented truth objects.
    os
        Over-segmented truth objects.
    sum_tp_jaccard, sum_tp_dice
        Sums of IoU and Dice over the TP pairs.
    """

    n_true: int
    n_pred: int
    detected: int
    tp: int
    us: int
    os: int
    sum_tp_jaccard: float
    sum_tp_dice: float

    @property
    def us_rate(self) -> float:
        """Under-segmentation rate ``us / n_true`` (0.0 without truth objects)."""
        return safe_ratio(self.us, self.n_true, both_empty=False)

    @property
    def os_rate(self) -> float:
        """Over-segmentation rate ``os / n_true`` (0.0 without truth objects)."""
        return safe_ratio(self.os, self.n_true, both_empty=False)

    @property
    def mean_tp_jaccard(self) -> float:
        """Mean IoU of the TP pairs (the reference's ``OL_MEAN_JI``)."""
        return safe_ratio(self.sum_tp_jaccard, self.tp, both_empty=self._empty)

    @property
    def mean_tp_dice(self) -> float:
        """Mean Dice ``2|G ∩ P| / (|G| + |P|)`` of the TP pairs (the reference's ``OL_MEAN_DICE``)."""
        return safe_ratio(self.sum_tp_dice, self.tp, both_empty=self._empty)


@dataclass(frozen=True, eq=False)
class KrompObjects:
    """Kromp et al. categories of every truth object of one image.

    Every array has one entry per truth object, in the order of ``true_ids`` (ascending label).
    The categories overlap as in the reference: a TP object can also be OS (a small piece
    predicted inside it besides its match).

    Attributes
    ----------
    true_ids
        Label value of each truth object.
    detected, true_positive, under_segmented, over_segmented
        Whether the object is detected, in a TP pair, US or OS (see the module notes).
    """

    true_ids: np.ndarray
    detected: np.ndarray
    true_positive: np.ndarray
    under_segmented: np.ndarray
    over_segmented: np.ndarray

    def missed_as(self) -> np.ndarray:
        """One reason per truth object that is not TP, ``""`` for TP objects.

        ``"undetected"`` (covered below the coverage threshold), else ``"under-segmented"``,
        else ``"over-segmented"``, else ``"misshapen"`` (detected, yet no prediction matches it
        with IoU above the threshold, e.g. one spilling far beyond it). Only detected objects
        can be US or OS, and an object that is both gets the first.
        """
        reasons = np.full(self.true_ids.size, "misshapen", dtype=object)
        reasons[self.over_segmented] = "over-segmented"
        reasons[self.under_segmented] = "under-segmented"
        reasons[~self.detected] = "undetected"
        reasons[self.true_positive] = ""
        return reasons


def pool_kromp(results: Iterable[KrompCounts]) -> KrompCounts:
    """Dataset-level categories: every count and TP score sum added over images."""
    items = list(results)
    if not items:
        raise FluosegError("no Kromp results to pool")
    return KrompCounts(
        n_true=sum(r.n_true for r in items), n_pred=sum(r.n_pred for r in items),
        detected=sum(r.detected for r in items), tp=sum(r.tp for r in items),
        us=sum(r.us for r in items), os=sum(r.os for r in items),
        sum_tp_jaccard=float(sum(r.sum_tp_jaccard for r in items)),
        sum_tp_dice=float(sum(r.sum_tp_dice for r in items)),
    )


def _per_object_sum(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.int64)
    np.add.at(out, index, values)
    return out


def kromp_object_counts(true_labels: Any, pred_labels: Any, *, iou_threshold: float = 0.5,
                        coverage_threshold: float = 0.5, overlap: LabelOverlap | None = None) -> KrompCounts:
    """Count Kromp et al.'s object categories (TP, FP, FN, US, OS) of one image.

    Parameters
    ----------
    true_labels, pred_labels
        Label images of the same shape (ignored when ``overlap`` is given; pass ``None``).
    iou_threshold
        ``ji_threshold`` of the reference, in [0.5, 1).
    coverage_threshold
        ``coveredarea_threshold`` of the reference, in [0.5, 1).
    overlap
        A precomputed :func:`~fluoseg.metrics.overlap.label_overlap`.

    Returns
    -------
    KrompCounts

    Raises
    ------
    FluosegError
        On shape mismatch, invalid labels or thresholds outside [0.5, 1).

    Examples
    --------
    A truth object split into two halves is over-segmented (and FN; both halves are FP);
    a prediction merging two truth objects under-segments both:

    >>> truth = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 3]])
    >>> pred  = np.array([[4, 4, 5, 5, 0, 6, 6, 6, 6, 6]])
    >>> k = kromp_object_counts(truth, pred)
    >>> (k.tp, k.fp, k.fn, k.us, k.os)
    (0, 3, 3, 2, 1)
    """
    objects, overlap, sum_jaccard, sum_dice = _categorise(true_labels, pred_labels, iou_threshold,
                                                          coverage_threshold, overlap)
    return KrompCounts(n_true=overlap.n_true, n_pred=overlap.n_pred,
                       detected=int(np.count_nonzero(objects.detected)),
                       tp=int(np.count_nonzero(objects.true_positive)),
                       us=int(np.count_nonzero(objects.under_segmented)),
                       os=int(np.count_nonzero(objects.over_segmented)),
                       sum_tp_jaccard=sum_jaccard, sum_tp_dice=sum_dice)


def kromp_object_categories(true_labels: Any, pred_labels: Any, *, iou_threshold: float = 0.5,
                            coverage_threshold: float = 0.5, overlap: LabelOverlap | None = None) -> KrompObjects:
    """Kromp et al.'s category of every truth object of one image (what :func:`kromp_object_counts` counts).

    Parameters are those of :func:`kromp_object_counts`.

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 3, 0, 4]])
    >>> pred  = np.array([[4, 4, 5, 5, 0, 6, 6, 6, 6, 6, 0, 0]])
    >>> kromp_object_categories(truth, pred).missed_as().tolist()
    ['over-segmented', 'under-segmented', 'under-segmented', 'undetected']
    """
    return _categorise(true_labels, pred_labels, iou_threshold, coverage_threshold, overlap)[0]


def _categorise(true_labels: Any, pred_labels: Any, iou_threshold: float, coverage_threshold: float,
                overlap: LabelOverlap | None) -> tuple[KrompObjects, LabelOverlap, float, float]:
    """Per-object categories, the overlap they came from, and the TP pairs' IoU and Dice sums."""
    for name, value in (("iou_threshold", iou_threshold), ("coverage_threshold", coverage_threshold)):
        if not 0.5 <= float(value) < 1.0:
            raise FluosegError(f"{name} must be in [0.5, 1); got {value}")
    b, a = float(iou_threshold), float(coverage_threshold)
    if overlap is None:
        overlap = label_overlap(true_labels, pred_labels)
    n_t, n_p, npix = overlap.n_true, overlap.n_pred, overlap.n_pixels
    gs, ps = overlap.true_sizes, overlap.pred_sizes
    ti, pi, inter = overlap.pair_true, overlap.pair_pred, overlap.pair_intersection
    g_area, p_area = gs[ti], ps[pi]

    # The reference divides pixel counts in float64; the same divisions give the same decisions.
    covered = gs - overlap.true_on_background
    coverage = covered / np.maximum(gs, 1)
    detected = ~(coverage < a)

    # Which truth objects each prediction covers (> a of the truth object's area).
    covers = inter / g_area > a
    n_covered = np.bincount(pi[covers], minlength=n_p)
    covered_area = _per_object_sum(pi[covers], g_area[covers], n_p)
    covered_inter = _per_object_sum(pi[covers], inter[covers], n_p)

    pair_union = g_area + p_area - inter
    iou = inter / pair_union
    tp_pair = detected[ti] & (n_covered[pi] == 1) & (iou > b)
    sum_jaccard = float(iou[tp_pair].sum())
    sum_dice = float((2 * inter[tp_pair] / (g_area[tp_pair] + p_area[tp_pair])).sum())

    merged_union = covered_area + ps - covered_inter
    merged_iou = np.divide(covered_inter, merged_union, out=np.zeros(n_p), where=merged_union > 0)
    us_pair = (detected[ti] & (coverage[ti] > a) & (n_covered[pi] > 1) & covers & (merged_iou[pi] > b))

    # Over-segmentation, including the reference's handling of the background value 0.
    touching = np.bincount(ti, minlength=n_t)
    zero_touches = (gs < npix) | (overlap.true_on_background > 0)
    inside = inter / p_area > a
    n_inside = np.bincount(ti[inside], minlength=n_t)
    inside_inter = _per_object_sum(ti[inside], inter[inside], n_t)
    inside_area = _per_object_sum(ti[inside], p_area[inside], n_t)
    inside_iou = inside_inter / (gs + inside_area - inside_inter)
    rest = npix - inside_area
    zero_inside = zero_touches & (rest > 0) & ((gs - inside_inter) / np.maximum(rest, 1) > a)
    candidate_iou = np.where(zero_inside, gs / max(npix, 1), inside_iou)
    over = (detected & (inside_iou > b) & (touching + zero_touches > 2)
            & (n_inside + zero_inside > 1) & (candidate_iou > b))

    tp_truth = np.zeros(n_t, bool)
    tp_truth[ti[tp_pair]] = True  # one-to-one: b >= 0.5
    under = np.zeros(n_t, bool)
    under[ti[us_pair]] = True
    objects = KrompObjects(true_ids=overlap.true_ids, detected=detected, true_positive=tp_truth,
                           under_segmented=under, over_segmented=over)
    return objects, overlap, sum_jaccard, sum_dice
