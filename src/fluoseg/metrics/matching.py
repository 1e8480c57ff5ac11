"""One-to-one object matching by IoU and the detection scores derived from it.

Definitions (per image, at an IoU threshold ``t``)
-------------------------------------------------
A truth object ``G`` and a predicted object ``P`` *may* match when
``IoU(G, P) = |G ∩ P| / |G ∪ P| >= t``. The matching is the one-to-one assignment with

1. the largest number of matched pairs, and among those
2. the largest sum of IoU over the matched pairs,

solved exactly with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on
each connected group of candidate pairs. For ``t > 0.5`` every object has at most one
candidate (two objects cannot both overlap a third by more than half), so the matching is
unique and equals every other optimal-assignment implementation. This is the criterion of
StarDist (``stardist.matching.matching``) and Cellpose (``metrics.average_precision``),
which also match at ``IoU >= t``; they break ties in (2) with the IoU of *all* assigned
pairs, including pairs below ``t``, which can only change which pairs match (not how many)
when ``t <= 0.5``.

From the matching:

* ``tp`` matched pairs, ``fp = n_pred - tp``, ``fn = n_true - tp``
* ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``
* ``f1 = 2 tp / (2 tp + fp + fn)``
* ``accuracy = tp / (tp + fp + fn)`` — StarDist's "accuracy", Cellpose's and the 2018 Data
  Science Bowl's "average precision" (AP). It is **not** COCO's average precision, which
  integrates a precision/recall curve over detection scores (see :mod:`fluoseg.metrics.coco`).
* ``mean_matched_iou = sum of matched IoU / tp`` — StarDist's ``mean_matched_score``, the
  segmentation quality SQ of Kirillov et al.
* ``pq = sum of matched IoU / (tp + fp/2 + fn/2) = SQ * RQ`` with ``RQ = f1`` — panoptic
  quality, Kirillov et al., "Panoptic Segmentation", CVPR 2019, Eq. 1. Kirillov match at
  ``IoU > 0.5``; the ``t = 0.5`` row here matches at ``IoU >= 0.5``, which differs only for
  pairs whose IoU is exactly one half.

A ratio with a zero denominator is 1.0 when the image has neither truth nor predicted
objects and 0.0 otherwise (StarDist: always 0.0).

Pooling over images sums ``tp, fp, fn``, the object counts and the matched IoU, then takes
the ratios (as ``stardist.matching.matching_dataset(by_image=False)`` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fluoseg.errors import FluosegError
from fluoseg.metrics.ratios import ObjectCountScores, safe_ratio
from fluoseg.metrics.overlap import LabelOverlap, label_overlap

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "MATCHING_METRICS",
    "MatchingResult",
    "ObjectMatch",
    "check_thresholds",
    "match_objects",
    "matching_at_thresholds",
    "mean_over_thresholds",
    "pool_matching",
]

#: IoU thresholds 0.50, 0.55, ..., 0.95 (exact decimals, not accumulated floating-point steps).
DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
#: Per-threshold metric names, in the order of the tidy rows.
MATCHING_METRICS = ("tp", "fp", "fn", "precision", "recall", "f1", "accuracy", "mean_matched_iou", "pq")
#: The ratio metrics that are averaged over thresholds.
THRESHOLD_AVERAGED_METRICS = ("precision", "recall", "f1", "accuracy", "mean_matched_iou", "pq")


def check_thresholds(thresholds: float | Iterable[float]) -> tuple[float, ...]:
    """Validate IoU thresholds: a number or a non-empty sequence of numbers in (0, 1]."""
    items: tuple[Any, ...] = (thresholds,) if np.isscalar(thresholds) else tuple(thresholds)  # type: ignore[arg-type]
    try:
        values = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise FluosegError(f"IoU thresholds must be numbers; got {thresholds!r}") from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise FluosegError(f"IoU thresholds must be a non-empty list of numbers in (0, 1]; got {list(values)}")
    return values


@dataclass(frozen=True)
class MatchingResult(ObjectCountScores):
    """Counts of an IoU matching at one threshold, and the scores derived from them.

    Counts add up over images (``pool_matching``); the ratios are properties.

    Attributes
    ----------
    threshold
        IoU threshold of the matching (pairs match at ``IoU >= threshold``).
    n_true, n_pred
        Number of truth and predicted objects.
    tp
        Number of matched pairs.
    sum_matched_iou
        Sum of the IoU of the matched pairs.
    """

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    sum_matched_iou: float

    @property
    def accuracy(self) -> float:
        """``tp / (tp + fp + fn)`` (StarDist "accuracy", Cellpose/DSB2018 "AP")."""
        return safe_ratio(self.tp, self.tp + self.fp + self.fn, both_empty=self._empty)

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the matched pairs (SQ, StarDist ``mean_matched_score``)."""
        return safe_ratio(self.sum_matched_iou, self.tp, both_empty=self._empty)

    @property
    def pq(self) -> float:
        """Panoptic quality ``sum matched IoU / (tp + fp/2 + fn/2)`` = SQ * RQ."""
        return safe_ratio(self.sum_matched_iou, self.tp + 0.5 * self.fp + 0.5 * self.fn, both_empty=self._empty)

    def as_dict(self) -> dict[str, int | float]:
        """The values of :data:`MATCHING_METRICS`."""
        return {name: getattr(self, name) for name in MATCHING_METRICS}


@dataclass(frozen=True)
class ObjectMatch:
    """Matched object pairs at one threshold, as label values.

    Attributes
    ----------
    threshold
        The IoU threshold.
    true_labels, pred_labels
        Label values of the matched truth and predicted objects (pair ``k`` is
        ``(true_labels[k], pred_labels[k])``), ordered by truth label.
    iou
        IoU of each pair.
    """

    threshold: float
    true_labels: np.ndarray
    pred_labels: np.ndarray
    iou: np.ndarray


def _matched_pairs(overlap: LabelOverlap, threshold: float, iou: np.ndarray) -> np.ndarray:
    """Indices into the overlap's pair arrays of the optimal matching at ``threshold``."""
    candidates = np.flatnonzero(iou >= threshold)
    if candidates.size == 0:
        return candidates
    rows, cols = overlap.pair_true[candidates], overlap.pair_pred[candidates]
    row_degree = np.bincount(rows, minlength=overlap.n_true)
    col_degree = np.bincount(cols, minlength=overlap.n_pred)
    if row_degree.max() <= 1 and col_degree.max() <= 1:
        return candidates  # already one-to-one: the only (and so the optimal) matching
    # Solve each connected group of candidate pairs on its own; singletons need no solver.
    n_t = overlap.n_true
    graph = coo_matrix((np.ones(candidates.size), (rows, n_t + cols)), shape=(n_t + overlap.n_pred,) * 2)
    _, component = connected_components(graph, directed=False)
    group = component[rows]
    simple = (row_degree[rows] == 1) & (col_degree[cols] == 1)
    chosen = [candidates[simple]]
    for g in np.unique(group[~simple]):
        members = candidates[group == g]
        r_ids, r = np.unique(overlap.pair_true[members], return_inverse=True)
        c_ids, c = np.unique(overlap.pair_pred[members], return_inverse=True)
        # Weight 1 per matched pair dominates the IoU tie-break: the IoU term sums to < 1/2.
        weight = np.zeros((r_ids.size, c_ids.size))
        weight[r, c] = 1.0 + iou[members] / (2.0 * min(r_ids.size, c_ids.size))
        row_ind, col_ind = linear_sum_assignment(weight, maximize=True)
        lookup = np.full((r_ids.size, c_ids.size), -1, np.intp)
        lookup[r, c] = members
        picked = lookup[row_ind, col_ind]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def match_objects(true_labels: Any, pred_labels: Any, *, threshold: float = 0.5,
                  overlap: LabelOverlap | None = None) -> ObjectMatch:
    """The optimal one-to-one matching of truth and predicted objects at ``IoU >= threshold``.

    Parameters
    ----------
    true_labels, pred_labels
        Label images of the same shape (ignored when ``overlap`` is given; pass ``None``).
    threshold
        IoU threshold in (0, 1].
    overlap
        A precomputed :func:`~fluoseg.metrics.overlap.label_overlap` of the two images.

    Returns
    -------
    ObjectMatch
        Matched pairs: maximum number of pairs, then maximum total IoU (module notes).
    """
    (threshold,) = check_thresholds(threshold)
    if overlap is None:
        overlap = label_overlap(true_labels, pred_labels)
    iou = overlap.pair_iou
    chosen = _matched_pairs(overlap, threshold, iou)
    return ObjectMatch(threshold=threshold, true_labels=overlap.true_ids[overlap.pair_true[chosen]],
                       pred_labels=overlap.pred_ids[overlap.pair_pred[chosen]], iou=iou[chosen])


def matching_at_thresholds(true_labels: Any, pred_labels: Any, *,
                           thresholds: float | Iterable[float] = DEFAULT_IOU_THRESHOLDS,
                           overlap: LabelOverlap | None = None) -> tuple[MatchingResult, ...]:
    """Matching counts and scores of one image at every IoU threshold.

    Parameters
    ----------
    true_labels, pred_labels
        Label images of the same shape (0 = background; labels need not be consecutive).
        Ignored when ``overlap`` is given (pass ``None``).
    thresholds
        IoU thresholds; default 0.50, 0.55, ..., 0.95.
    overlap
        A precomputed :func:`~fluoseg.metrics.overlap.label_overlap`.

    Returns
    -------
    tuple of MatchingResult
        One per threshold, in the given order.

    Raises
    ------
    FluosegError
        On shape mismatch, invalid labels or thresholds.

    Examples
    --------
    >>> truth = np.zeros((8, 8), int); truth[:4, :4] = 1
    >>> pred = np.zeros((8, 8), int); pred[:4, :3] = 5
    >>> r = matching_at_thresholds(truth, pred, thresholds=(0.5, 0.8))
    >>> [(m.threshold, m.tp, m.fp, m.fn) for m in r]
    [(0.5, 1, 0, 0), (0.8, 0, 1, 1)]
    """
    values = check_thresholds(thresholds)
    if overlap is None:
        overlap = label_overlap(true_labels, pred_labels)
    iou = overlap.pair_iou
    results = []
    for t in values:
        chosen = _matched_pairs(overlap, t, iou)
        results.append(MatchingResult(threshold=t, n_true=overlap.n_true, n_pred=overlap.n_pred,
                                      tp=int(chosen.size), sum_matched_iou=float(iou[chosen].sum())))
    return tuple(results)


def pool_matching(results: Iterable[MatchingResult]) -> MatchingResult:
    """Dataset-level result at one threshold: counts and matched IoU summed over images.

    Raises
    ------
    FluosegError
        If the results were computed at different thresholds or none are given.
    """
    items = list(results)
    if not items:
        raise FluosegError("no matching results to pool")
    thresholds = {r.threshold for r in items}
    if len(thresholds) != 1:
        raise FluosegError(f"cannot pool matchings at different IoU thresholds {sorted(thresholds)}")
    return MatchingResult(threshold=items[0].threshold, n_true=sum(r.n_true for r in items),
                          n_pred=sum(r.n_pred for r in items), tp=sum(r.tp for r in items),
                          sum_matched_iou=float(sum(r.sum_matched_iou for r in items)))


def mean_over_thresholds(results: Sequence[MatchingResult]) -> dict[str, float]:
    """Each ratio metric averaged over the thresholds of ``results`` (e.g. accuracy over 0.5:0.95).

    Returns
    -------
    dict
        ``{metric: mean}`` for ``precision, recall, f1, accuracy, mean_matched_iou, pq``.
    """
    if not results:
        raise FluosegError("no matching results to average")
    return {name: float(np.mean([getattr(r, name) for r in results])) for name in THRESHOLD_AVERAGED_METRICS}
