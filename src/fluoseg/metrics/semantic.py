"""Pixel-level (semantic) segmentation metrics for binary masks, one class at a time.

Every metric is computed from the pixel confusion counts of one class,

* ``TP`` pixels predicted and true, ``FP`` predicted but not true,
* ``FN`` true but not predicted, ``TN`` neither,

as

* precision  = TP / (TP + FP)
* recall     = TP / (TP + FN)
* F1 (Dice)  = 2 TP / (2 TP + FP + FN)
* IoU (Jaccard) = TP / (TP + FP + FN)

Empty masks
    A ratio whose denominator is zero is **1.0 when prediction and truth are both empty**
    (TP = FP = FN = 0: nothing to find and nothing falsely found) and **0.0 otherwise**
    (e.g. precision when nothing is predicted but something is true). This is the
    convention of the MS-ME evaluation (F1 = 2TP/(2TP+FP+FN), 0/0 := 1) extended to the
    other ratios; StarDist and scikit-learn return 0.0 for the both-empty case instead.

Aggregation over images
    *Pooled* (dataset-level) scores sum TP/FP/FN/TN over all images first and then take the
    ratio, so large images weigh more (:func:`pool_confusion`); *mean-per-image* scores
    average the per-image ratios, so every image weighs the same (:func:`mean_over_images`).
    :func:`semantic_rows` reports per-image rows and pooled rows under the image name
    ``"ALL"``.

This module imports no deep-learning framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.metrics.ratios import safe_ratio

__all__ = [
    "ALL_IMAGES",
    "SEMANTIC_METRICS",
    "ConfusionCounts",
    "confusion_counts",
    "per_class_confusion",
    "pool_confusion",
    "mean_over_images",
    "precision_score",
    "recall_score",
    "f1_score",
    "iou_score",
    "semantic_rows",
]

#: Image name of the rows that pool counts over every image.
ALL_IMAGES = "ALL"
#: Image name of the optional rows that average per-image ratios.
MEAN_OF_IMAGES = "MEAN"
#: Metric names of :func:`semantic_rows`, in output order.
SEMANTIC_METRICS = ("tp", "fp", "fn", "tn", "precision", "recall", "f1", "iou")
_RATIO_METRICS = ("precision", "recall", "f1", "iou")


def precision_score(tp: int, fp: int, fn: int) -> float:
    """Precision TP / (TP + FP) from pixel (or object) counts.

    0/0 is 1.0 when TP = FP = FN = 0 and 0.0 otherwise (see the module notes).
    """
    tp, fp, fn = int(tp), int(fp), int(fn)
    return safe_ratio(tp, tp + fp, both_empty=tp + fp + fn == 0)


def recall_score(tp: int, fp: int, fn: int) -> float:
    """Recall TP / (TP + FN) from counts; 0/0 is 1.0 only when TP = FP = FN = 0."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    return safe_ratio(tp, tp + fn, both_empty=tp + fp + fn == 0)


def f1_score(tp: int, fp: int, fn: int) -> float:
    """F1 score (Dice coefficient) 2 TP / (2 TP + FP + FN) from counts; 1.0 when all are 0."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    return safe_ratio(2 * tp, 2 * tp + fp + fn, both_empty=tp + fp + fn == 0)


def iou_score(tp: int, fp: int, fn: int) -> float:
    """Intersection over union (Jaccard index) TP / (TP + FP + FN) from counts; 1.0 when all are 0."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    return safe_ratio(tp, tp + fp + fn, both_empty=tp + fp + fn == 0)


@dataclass(frozen=True)
class ConfusionCounts:
    """Pixel confusion counts of one binary class, and the ratios derived from them.

    Counts add up (``a + b``) so that pooling over images is a sum. The ratios follow the
    empty-mask convention of the module: 0/0 is 1.0 when truth and prediction are both empty.

    Attributes
    ----------
    tp, fp, fn, tn
        True positive, false positive, false negative and true negative pixel counts.
    """

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def n_pixels(self) -> int:
        """TP + FP + FN + TN."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return precision_score(self.tp, self.fp, self.fn)

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return recall_score(self.tp, self.fp, self.fn)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN), the Dice coefficient."""
        return f1_score(self.tp, self.fp, self.fn)

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN), the Jaccard index."""
        return iou_score(self.tp, self.fp, self.fn)

    def as_dict(self) -> dict[str, int | float]:
        """The counts and ratios keyed by the names in :data:`SEMANTIC_METRICS`."""
        return {name: getattr(self, name) for name in SEMANTIC_METRICS}


def _binary(mask: Any, *, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise FluosegError(f"{name} has dtype {array.dtype}; masks must hold 0/1 (or boolean) values")
    if array.size and not np.isin(array, (0, 1)).all():
        raise FluosegError(f"{name} holds values other than 0 and 1; threshold probabilities "
                           "(or binarise label images) before computing pixel metrics")
    return array.astype(bool)


def _check_shapes(pred: np.ndarray, truth: np.ndarray, *, what: str = "") -> None:
    if pred.shape != truth.shape:
        raise FluosegError(f"prediction{what} has shape {pred.shape} but truth has shape {truth.shape}; "
                           "they must cover the same pixels")


def confusion_counts(pred_mask: Any, true_mask: Any) -> ConfusionCounts:
    """Pixel confusion counts of one binary class.

    Parameters
    ----------
    pred_mask, true_mask
        Arrays of the same shape (any number of dimensions) holding booleans or 0/1.

    Returns
    -------
    ConfusionCounts
        TP = #(pred & truth), FP = #(pred & ~truth), FN = #(~pred & truth), TN = the rest.

    Raises
    ------
    FluosegError
        If the shapes differ or a mask holds values other than 0/1.
    """
    pred = _binary(pred_mask, name="prediction mask")
    truth = _binary(true_mask, name="truth mask")
    _check_shapes(pred, truth)
    tp = int(np.count_nonzero(pred & truth))
    n_pred, n_true = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    fp, fn = n_pred - tp, n_true - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(pred.size) - tp - fp - fn)


def per_class_confusion(pred_masks: Any, true_masks: Any) -> tuple[ConfusionCounts, ...]:
    """Confusion counts for every class of channel-first masks.

    Parameters
    ----------
    pred_masks, true_masks
        Arrays ``(n_classes, Y, X)`` or ``(n_classes, Z, Y, X)`` of booleans or 0/1; class
        ``c`` is channel ``c`` of both.

    Returns
    -------
    tuple of ConfusionCounts
        One entry per class.

    Raises
    ------
    FluosegError
        If the shapes (including the number of classes) differ or values are not 0/1.
    """
    pred = _binary(pred_masks, name="prediction masks")
    truth = _binary(true_masks, name="truth masks")
    if pred.ndim < 2:
        raise FluosegError(f"masks must be channel-first (n_classes, [Z,] Y, X); got shape {pred.shape}")
    _check_shapes(pred, truth, what=" masks")
    return tuple(confusion_counts(p, t) for p, t in zip(pred, truth))


def pool_confusion(counts: Iterable[ConfusionCounts]) -> ConfusionCounts:
    """Dataset-level counts: TP, FP, FN and TN summed over images (ratios taken afterwards)."""
    total = ConfusionCounts(0, 0, 0, 0)
    for item in counts:
        total = total + item
    return total


def mean_over_images(counts: Iterable[ConfusionCounts], metric: str) -> float:
    """Mean-per-image score: the arithmetic mean of ``metric`` computed on each image separately.

    Parameters
    ----------
    counts
        One :class:`ConfusionCounts` per image.
    metric
        ``"precision"``, ``"recall"``, ``"f1"`` or ``"iou"``.

    Returns
    -------
    float
        The mean, or NaN when ``counts`` is empty.
    """
    if metric not in _RATIO_METRICS:
        raise FluosegError(f"unknown metric {metric!r}; choose one of {list(_RATIO_METRICS)}")
    values = [getattr(c, metric) for c in counts]
    return float(np.mean(values)) if values else float("nan")


def semantic_rows(items: Iterable[Sequence[Any]], class_names: Sequence[str], *,
                  include_image_mean: bool = False) -> list[dict[str, Any]]:
    """Tidy per-image and pooled pixel metrics for every class.

    Parameters
    ----------
    items
        ``(name, pred_masks, truth_masks)`` per image — note the order: prediction before
        truth. Masks are channel-first ``(n_classes, [Z,] Y, X)`` booleans or 0/1.
    class_names
        One name per mask channel.
    include_image_mean
        Also add rows with image ``"MEAN"`` holding the mean-per-image ratios (precision,
        recall, f1, iou; counts are not averaged).

    Returns
    -------
    list of dict
        Rows ``{"image", "class", "metric", "value"}`` with metrics ``tp, fp, fn, tn``
        (int) and ``precision, recall, f1, iou`` (float), first per image in input order,
        then the pooled rows with image ``"ALL"`` (counts summed over images, then ratios).

    Raises
    ------
    FluosegError
        On shape mismatches, non-binary masks, a class count that differs from
        ``class_names``, duplicate image names, or an image named ``"ALL"``/``"MEAN"``.
    """
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names):
        raise FluosegError(f"class names {class_names} contain duplicates; give every class a distinct name")
    rows: list[dict[str, Any]] = []
    per_image: list[tuple[ConfusionCounts, ...]] = []
    seen: set[str] = set()
    for item in items:
        if len(item) != 3:
            raise FluosegError("each item must be (name, pred_masks, truth_masks)")
        name, pred, truth = str(item[0]), item[1], item[2]
        if name in (ALL_IMAGES, MEAN_OF_IMAGES) or name in seen:
            raise FluosegError(f"image name {name!r} is reserved or used twice; give every image a distinct name")
        seen.add(name)
        counts = per_class_confusion(pred, truth)
        if len(counts) != len(class_names):
            raise FluosegError(f"image {name!r} has {len(counts)} mask channels but {len(class_names)} class names "
                               f"were given ({class_names})")
        per_image.append(counts)
        rows.extend(_rows(name, class_names, counts))
    if include_image_mean and per_image:
        for c, class_name in enumerate(class_names):
            for metric in _RATIO_METRICS:
                rows.append({"image": MEAN_OF_IMAGES, "class": class_name, "metric": metric,
                             "value": mean_over_images((image[c] for image in per_image), metric)})
    if per_image:
        pooled = tuple(pool_confusion(image[c] for image in per_image) for c in range(len(class_names)))
        rows.extend(_rows(ALL_IMAGES, class_names, pooled))
    return rows


def _rows(image: str, class_names: Sequence[str], counts: Sequence[ConfusionCounts]) -> list[dict[str, Any]]:
    return [{"image": image, "class": class_name, "metric": metric, "value": value}
            for class_name, c in zip(class_names, counts) for metric, value in c.as_dict().items()]
