"""Instance (object-level) evaluation of label images: all metrics of one image in one call.

The metrics themselves live in cohesive modules, each documenting its exact definition:

* :mod:`fluoseg.metrics.overlap`  — sparse pixel overlaps of two label images
* :mod:`fluoseg.metrics.matching` — Hungarian IoU matching per threshold: tp, fp, fn,
  precision, recall, f1, accuracy (= StarDist "accuracy" = Cellpose "AP"), mean matched IoU,
  panoptic quality
* :mod:`fluoseg.metrics.aji`      — Aggregated Jaccard Index, Kumar et al. and Cellpose variants
* :mod:`fluoseg.metrics.kromp`    — Kromp et al. categories: TP/FP/FN, under-/over-segmentation
* :mod:`fluoseg.metrics.coco`     — COCO average precision of scored predictions

This module computes them together from one overlap table (:func:`evaluate_instances`),
pools them over images (:func:`pool_instance_evaluations`: counts and pixel sums added, then
ratios), and turns them into tidy rows (:func:`instance_rows`).

Tidy-row metric names (``threshold`` is the IoU threshold, or None where none applies)
-------------------------------------------------------------------------------------
Per IoU threshold (matching at ``IoU >= threshold``, :mod:`~fluoseg.metrics.matching`)
    ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``accuracy``,
    ``mean_matched_iou``, ``pq``; and, only when scores are given, ``coco_ap``.
Averaged over the thresholds (threshold None)
    ``precision_mean_over_thresholds``, ``recall_mean_over_thresholds``,
    ``f1_mean_over_thresholds``, ``accuracy_mean_over_thresholds``,
    ``mean_matched_iou_mean_over_thresholds``, ``pq_mean_over_thresholds``,
    ``coco_ap_mean_over_thresholds`` (with scores; COCO's AP@[.50:.95] for the default
    thresholds). For image ``ALL`` these average the pooled per-threshold values.
Without threshold
    ``n_true``, ``n_pred`` — object counts;
    ``aji`` — Kumar et al. 2017; ``aji_cellpose`` — Cellpose's variant;
    ``us_rate``, ``os_rate`` — Kromp et al. under-/over-segmentation rates;
    ``kromp_tp``, ``kromp_fp``, ``kromp_fn``, ``kromp_detected``, ``kromp_us``, ``kromp_os``,
    ``kromp_precision``, ``kromp_recall``, ``kromp_f1``, ``kromp_mean_tp_jaccard``,
    ``kromp_mean_tp_dice`` — Kromp et al. counts and scores (their TP needs IoU > 0.5 *and*
    a prediction covering a single truth object, so they differ from ``tp`` at 0.5);
    ``pixel_dice``, ``pixel_jaccard`` — Dice and IoU of the binary foregrounds
    (label > 0), pooled as pixel counts.

Image ``"ALL"`` pools the images: counts summed, AJI as sum C / sum U, COCO detections
ranked together, then every ratio computed from the sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.metrics.aji import AJIResult, aggregated_jaccard_index, aggregated_jaccard_index_cellpose, pool_aji
from fluoseg.metrics.coco import CocoDetections, coco_detections, pool_coco
from fluoseg.metrics.kromp import KrompCounts, kromp_object_counts, pool_kromp
from fluoseg.metrics.matching import (
    DEFAULT_IOU_THRESHOLDS,
    MATCHING_METRICS,
    THRESHOLD_AVERAGED_METRICS,
    MatchingResult,
    check_thresholds,
    matching_at_thresholds,
    mean_over_thresholds,
    pool_matching,
)
from fluoseg.metrics.overlap import label_overlap
from fluoseg.metrics.semantic import ALL_IMAGES, ConfusionCounts

__all__ = [
    "INSTANCE_METRICS",
    "InstanceEvaluation",
    "evaluate_instances",
    "pool_instance_evaluations",
    "instance_rows",
    "instance_evaluation_rows",
]

_MEAN_SUFFIX = "_mean_over_thresholds"
#: Every metric name :func:`instance_rows` can emit, in output order.
INSTANCE_METRICS: tuple[str, ...] = (
    ("n_true", "n_pred") + MATCHING_METRICS + ("coco_ap",)
    + tuple(m + _MEAN_SUFFIX for m in THRESHOLD_AVERAGED_METRICS) + ("coco_ap" + _MEAN_SUFFIX,)
    + ("aji", "aji_cellpose", "us_rate", "os_rate")
    + tuple("kromp_" + m for m in ("tp", "fp", "fn", "detected", "us", "os", "precision", "recall", "f1",
                                   "mean_tp_jaccard", "mean_tp_dice"))
    + ("pixel_dice", "pixel_jaccard")
)


@dataclass(frozen=True)
class InstanceEvaluation:
    """Every instance metric of one image (or of several, pooled).

    Attributes
    ----------
    matching
        One :class:`~fluoseg.metrics.matching.MatchingResult` per IoU threshold.
    aji
        Kumar et al. AJI.
    aji_cellpose
        Cellpose's AJI variant.
    kromp
        Kromp et al. object categories.
    foreground
        Pixel confusion counts of the binary foregrounds (label > 0).
    coco
        Scored, matched detections for COCO AP, or None when no scores were given.
    """

    matching: tuple[MatchingResult, ...]
    aji: AJIResult
    aji_cellpose: AJIResult
    kromp: KrompCounts
    foreground: ConfusionCounts
    coco: CocoDetections | None = None

    @property
    def thresholds(self) -> tuple[float, ...]:
        """IoU thresholds of :attr:`matching`."""
        return tuple(m.threshold for m in self.matching)

    def at(self, threshold: float) -> MatchingResult:
        """The matching result at ``threshold``."""
        for m in self.matching:
            if np.isclose(m.threshold, threshold, rtol=0, atol=1e-12):
                return m
        raise FluosegError(f"IoU threshold {threshold} was not evaluated; evaluated: {list(self.thresholds)}")


def evaluate_instances(true_labels: Any, pred_labels: Any, *,
                       thresholds: float | Iterable[float] = DEFAULT_IOU_THRESHOLDS,
                       scores: Mapping[int, float] | Sequence[float] | np.ndarray | None = None,
                       max_detections: int | None = None) -> InstanceEvaluation:
    """Compute every instance metric of one image from a single overlap table.

    Parameters
    ----------
    true_labels, pred_labels
        Instance label images of the same shape, 2D or 3D (0 = background; labels need not
        be consecutive; float arrays must hold whole numbers).
    thresholds
        IoU thresholds of the matching and of COCO AP; default 0.50, 0.55, ..., 0.95.
    scores
        Optional confidence per predicted object (``{label: score}`` or one score per object
        in ascending label order); enables COCO AP.
    max_detections
        COCO AP only: keep this many highest-scoring predictions (None = all).

    Returns
    -------
    InstanceEvaluation

    Raises
    ------
    FluosegError
        On shape mismatch, non-integer or negative labels, bad thresholds or scores.
    """
    values = check_thresholds(thresholds)
    overlap = label_overlap(true_labels, pred_labels)
    n_pixels = overlap.n_pixels
    inter = overlap.foreground_intersection
    foreground = ConfusionCounts(tp=inter, fp=overlap.pred_foreground - inter, fn=overlap.true_foreground - inter,
                                 tn=n_pixels - overlap.true_foreground - overlap.pred_foreground + inter)
    coco = None
    if scores is not None:
        coco = coco_detections(None, None, scores, thresholds=values, max_detections=max_detections, overlap=overlap)
    return InstanceEvaluation(
        matching=matching_at_thresholds(None, None, thresholds=values, overlap=overlap),
        aji=aggregated_jaccard_index(None, None, overlap=overlap),
        aji_cellpose=aggregated_jaccard_index_cellpose(None, None, overlap=overlap),
        kromp=kromp_object_counts(None, None, overlap=overlap),
        foreground=foreground,
        coco=coco,
    )


def pool_instance_evaluations(evaluations: Iterable[InstanceEvaluation]) -> InstanceEvaluation:
    """Dataset-level evaluation: counts and pixel sums added over images, ratios from the sums.

    COCO detections are pooled only when every image has them.

    Raises
    ------
    FluosegError
        If no evaluation is given or they use different thresholds.
    """
    items = list(evaluations)
    if not items:
        raise FluosegError("no instance evaluations to pool")
    if len({e.thresholds for e in items}) != 1:
        raise FluosegError("cannot pool instance evaluations computed at different IoU thresholds")
    foreground = ConfusionCounts(0, 0, 0, 0)
    for e in items:
        foreground = foreground + e.foreground
    coco = pool_coco(e.coco for e in items) if all(e.coco is not None for e in items) else None  # type: ignore[misc]
    return InstanceEvaluation(
        matching=tuple(pool_matching(e.matching[k] for e in items) for k in range(len(items[0].matching))),
        aji=pool_aji(e.aji for e in items),
        aji_cellpose=pool_aji(e.aji_cellpose for e in items),
        kromp=pool_kromp(e.kromp for e in items),
        foreground=foreground,
        coco=coco,
    )


def instance_evaluation_rows(image: str, evaluation: InstanceEvaluation) -> list[dict[str, Any]]:
    """Tidy rows ``{"image", "metric", "threshold", "value"}`` of one evaluation (names: module notes)."""
    rows: list[dict[str, Any]] = []

    def add(metric: str, value: int | float, threshold: float | None = None) -> None:
        rows.append({"image": image, "metric": metric, "threshold": threshold, "value": value})

    add("n_true", evaluation.kromp.n_true)
    add("n_pred", evaluation.kromp.n_pred)
    for m in evaluation.matching:
        for name in MATCHING_METRICS:
            add(name, getattr(m, name), m.threshold)
    coco_ap = evaluation.coco.average_precision() if evaluation.coco is not None else None
    if coco_ap is not None:
        for t, ap in zip(evaluation.thresholds, coco_ap):
            add("coco_ap", float(ap), t)
    for name, value in mean_over_thresholds(evaluation.matching).items():
        add(name + _MEAN_SUFFIX, value)
    if coco_ap is not None:
        add("coco_ap" + _MEAN_SUFFIX, float(coco_ap.mean()))
    add("aji", evaluation.aji.value)
    add("aji_cellpose", evaluation.aji_cellpose.value)
    k = evaluation.kromp
    add("us_rate", k.us_rate)
    add("os_rate", k.os_rate)
    for name in ("tp", "fp", "fn", "detected", "us", "os", "precision", "recall", "f1",
                 "mean_tp_jaccard", "mean_tp_dice"):
        add("kromp_" + name, getattr(k, name))
    add("pixel_dice", evaluation.foreground.f1)
    add("pixel_jaccard", evaluation.foreground.iou)
    return rows


def instance_rows(items: Iterable[Sequence[Any]], *,
                  thresholds: float | Iterable[float] = DEFAULT_IOU_THRESHOLDS,
                  max_detections: int | None = None) -> list[dict[str, Any]]:
    """Tidy per-image and pooled instance metrics for a list of images.

    Parameters
    ----------
    items
        ``(name, pred_labels, true_labels)`` or ``(name, pred_labels, true_labels, scores)`` per
        image — note the order: prediction before truth, as in
        :func:`fluoseg.metrics.semantic.semantic_rows`. ``scores`` (``{label: score}``) enables
        COCO AP; the pooled COCO rows appear only when every image has scores.
    thresholds
        IoU thresholds; default 0.50, 0.55, ..., 0.95.
    max_detections
        COCO AP only: predictions kept per image (None = all).

    Returns
    -------
    list of dict
        Rows ``{"image", "metric", "threshold", "value"}``: every image in input order, then
        image ``"ALL"`` pooled over images. Metric names are listed in the module notes;
        ``threshold`` is None where it does not apply.

    Raises
    ------
    FluosegError
        On invalid images (shape mismatch, non-integer labels), duplicate image names or
        an image named ``"ALL"``.
    """
    values = check_thresholds(thresholds)
    rows: list[dict[str, Any]] = []
    evaluations: list[InstanceEvaluation] = []
    seen: set[str] = set()
    for item in items:
        if len(item) not in (3, 4):
            raise FluosegError("each item must be (name, pred_labels, true_labels) or (name, pred_labels, "
                               "true_labels, scores)")
        name = str(item[0])
        if name == ALL_IMAGES or name in seen:
            raise FluosegError(f"image name {name!r} is reserved or used twice; give every image a distinct name")
        seen.add(name)
        scores = item[3] if len(item) == 4 else None
        try:
            evaluation = evaluate_instances(item[2], item[1], thresholds=values, scores=scores,
                                            max_detections=max_detections)
        except FluosegError as error:
            raise FluosegError(f"image {name!r}: {error.message}") from None
        evaluations.append(evaluation)
        rows.extend(instance_evaluation_rows(name, evaluation))
    if evaluations:
        rows.extend(instance_evaluation_rows(ALL_IMAGES, pool_instance_evaluations(evaluations)))
    return rows
