"""COCO-style average precision of scored instance predictions.

This is the detection AP of the COCO benchmark as computed by ``pycocotools.cocoeval.COCOeval``
(``iouType="segm"``, one category, area range "all", no crowd regions), for predicted
objects that carry a confidence score (e.g. StarDist's object probabilities or Mask R-CNN
scores). It is different from the "AP" of Cellpose / the 2018 Data Science Bowl, which is
``tp / (tp + fp + fn)`` at one IoU threshold (``accuracy`` in :mod:`fluoseg.metrics.matching`).

Definition at IoU threshold ``t``
    1. Per image, predictions are sorted by descending score (ties: ascending label) and
       matched greedily: each prediction takes, among the truth objects not yet taken, the
       one with the highest IoU provided that ``IoU >= min(t, 1 - 1e-10)``; among truth objects
       with equal IoU the one with the highest label wins (pycocotools' order when the
       annotations are listed by ascending label). Unmatched predictions are false positives.
    2. Over all images, the predictions are ranked by descending score (ties: image order,
       then the per-image order) and cumulative ``TP_k``, ``FP_k`` give
       ``recall_k = TP_k / n_truth`` and ``precision_k = TP_k / (TP_k + FP_k)``.
    3. Precision is made non-increasing from the right, ``p_k <- max_{j >= k} p_j``, and read
       at the 101 recall levels ``r = 0, 0.01, ..., 1`` as ``p`` of the first rank with
       ``recall >= r`` (0 when recall never reaches ``r``).
    4. ``AP_t`` = mean of those 101 values.

``coco_ap_mean_over_thresholds`` is the mean of ``AP_t`` over ``t = 0.50, 0.55, ..., 0.95``
(COCO's headline "AP"). Differences from pycocotools: no limit on detections per image
unless ``max_detections`` is given (pycocotools' summary uses 100, too few for dense nuclei
images); precision is ``TP / (TP + FP)`` without its ``+ eps`` (a 1e-16 difference); with no
truth object in the pooled images pycocotools reports -1 (undefined) where this gives 1.0 if
there are no predictions either and 0.0 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.metrics.matching import DEFAULT_IOU_THRESHOLDS, check_thresholds
from fluoseg.metrics.overlap import LabelOverlap, label_overlap

__all__ = ["RECALL_LEVELS", "CocoDetections", "coco_average_precision", "coco_detections", "pool_coco"]

#: The 101 recall levels of COCO (the same floating-point values as pycocotools').
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True, eq=False)
class CocoDetections:
    """Scored, greedily matched predictions of one image (or several, concatenated).

    Attributes
    ----------
    thresholds
        IoU thresholds.
    scores
        Score of every kept prediction, in ranking order (descending score).
    matched
        ``(n_thresholds, n_predictions)`` booleans: prediction matched a truth object.
    n_true
        Number of truth objects.
    """

    thresholds: tuple[float, ...]
    scores: np.ndarray
    matched: np.ndarray
    n_true: int

    def average_precision(self) -> np.ndarray:
        """COCO AP at every threshold (``(n_thresholds,)`` floats), steps 2-4 of the module notes."""
        n_det = self.scores.size
        if self.n_true == 0:
            return np.full(len(self.thresholds), 0.0 if n_det else 1.0)
        if n_det == 0:
            return np.zeros(len(self.thresholds))
        order = np.argsort(-self.scores, kind="stable")
        tp = np.cumsum(self.matched[:, order], axis=1, dtype=np.float64)
        fp = np.cumsum(~self.matched[:, order], axis=1, dtype=np.float64)
        ap = np.empty(len(self.thresholds))
        for k in range(len(self.thresholds)):
            recall = tp[k] / self.n_true
            precision = tp[k] / (tp[k] + fp[k])
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            index = np.searchsorted(recall, RECALL_LEVELS, side="left")
            reached = index < n_det
            ap[k] = np.where(reached, envelope[np.minimum(index, n_det - 1)], 0.0).mean()
        return ap

    def mean_average_precision(self) -> float:
        """COCO AP averaged over the thresholds (AP@[.50:.95] for the default thresholds)."""
        return float(self.average_precision().mean())


def _scores_by_index(overlap: LabelOverlap, scores: Mapping[int, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    if isinstance(scores, Mapping):
        table = {int(k): float(v) for k, v in scores.items()}
        missing = [int(i) for i in overlap.pred_ids if int(i) not in table]
        if missing:
            raise FluosegError(f"no score given for predicted labels {missing[:5]}"
                               f"{' ...' if len(missing) > 5 else ''}; give one score per predicted object")
        values = np.array([table[int(i)] for i in overlap.pred_ids], np.float64)
    else:
        values = np.asarray(scores, np.float64).ravel()
        if values.size != overlap.n_pred:
            raise FluosegError(f"{values.size} scores given for {overlap.n_pred} predicted objects; a score "
                               "sequence must hold one score per object in ascending label order")
    if not np.isfinite(values).all():
        raise FluosegError("scores must be finite numbers")
    return values


def coco_detections(true_labels: Any, pred_labels: Any, scores: Mapping[int, float] | Sequence[float] | np.ndarray,
                    *, thresholds: float | Iterable[float] = DEFAULT_IOU_THRESHOLDS,
                    max_detections: int | None = None, overlap: LabelOverlap | None = None) -> CocoDetections:
    """Greedy score-ordered matching of one image (step 1 of the module notes).

    Parameters
    ----------
    true_labels, pred_labels
        Label images of the same shape (ignored when ``overlap`` is given; pass ``None``).
    scores
        Confidence per predicted object: a mapping ``{label: score}`` covering every predicted
        label, or a sequence with one score per predicted object in ascending label order.
    thresholds
        IoU thresholds; default 0.50, 0.55, ..., 0.95.
    max_detections
        Keep only the highest-scoring predictions of the image (pycocotools: 100); ``None``
        keeps all.
    overlap
        A precomputed :func:`~fluoseg.metrics.overlap.label_overlap`.

    Returns
    -------
    CocoDetections

    Raises
    ------
    FluosegError
        On shape mismatch, invalid labels or thresholds, or missing/non-finite scores.
    """
    values = check_thresholds(thresholds)
    if overlap is None:
        overlap = label_overlap(true_labels, pred_labels)
    score = _scores_by_index(overlap, scores)
    order = np.argsort(-score, kind="stable")  # pred_ids ascend, so ties keep label order
    if max_detections is not None:
        if int(max_detections) < 1:
            raise FluosegError(f"max_detections must be a positive integer or None; got {max_detections}")
        order = order[: int(max_detections)]
    rank = np.full(overlap.n_pred, -1, np.intp)
    rank[order] = np.arange(order.size)
    # Candidate truth objects of each kept prediction, in ascending truth label.
    keep = rank[overlap.pair_pred] >= 0
    pair_rank = rank[overlap.pair_pred][keep]
    pair_true = overlap.pair_true[keep]
    pair_iou = overlap.pair_iou[keep]
    by_rank = np.lexsort((pair_true, pair_rank))
    pair_rank, pair_true, pair_iou = pair_rank[by_rank], pair_true[by_rank], pair_iou[by_rank]
    starts = np.searchsorted(pair_rank, np.arange(order.size + 1))
    matched = np.zeros((len(values), order.size), bool)
    for k, t in enumerate(values):
        limit = min(t, 1.0 - 1e-10)
        taken = np.zeros(overlap.n_true, bool)
        for d in range(order.size):
            lo, hi = starts[d], starts[d + 1]
            best, best_iou = -1, limit
            for j in range(lo, hi):
                g = pair_true[j]
                if not taken[g] and pair_iou[j] >= best_iou:
                    best, best_iou = g, pair_iou[j]
            if best >= 0:
                taken[best] = True
                matched[k, d] = True
    return CocoDetections(thresholds=values, scores=score[order], matched=matched, n_true=overlap.n_true)


def pool_coco(results: Iterable[CocoDetections]) -> CocoDetections:
    """Dataset-level detections: every image's ranked predictions concatenated in image order.

    Raises
    ------
    FluosegError
        If the results use different thresholds or none are given.
    """
    items = list(results)
    if not items:
        raise FluosegError("no COCO detections to pool")
    if len({r.thresholds for r in items}) != 1:
        raise FluosegError("cannot pool COCO detections computed at different IoU thresholds")
    return CocoDetections(thresholds=items[0].thresholds, scores=np.concatenate([r.scores for r in items]),
                          matched=np.concatenate([r.matched for r in items], axis=1),
                          n_true=sum(r.n_true for r in items))


def coco_average_precision(true_labels: Any, pred_labels: Any,
                           scores: Mapping[int, float] | Sequence[float] | np.ndarray, *,
                           thresholds: float | Iterable[float] = DEFAULT_IOU_THRESHOLDS,
                           max_detections: int | None = None) -> np.ndarray:
    """COCO average precision of one image at every IoU threshold (see the module notes).

    For a dataset, build :func:`coco_detections` per image, :func:`pool_coco` them and call
    :meth:`CocoDetections.average_precision` — pooling detections, not averaging per-image AP,
    is what COCO does.

    Returns
    -------
    numpy.ndarray
        ``AP_t`` per threshold; ``.mean()`` is AP@[.50:.95] for the default thresholds.
    """
    return coco_detections(true_labels, pred_labels, scores, thresholds=thresholds,
                           max_detections=max_detections).average_precision()
