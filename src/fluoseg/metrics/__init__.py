"""Segmentation metrics: pixel-level (semantic) and object-level (instance).

Look-alike metrics carry distinct names here, each defined exactly in its module:

* :mod:`~fluoseg.metrics.semantic` — per-class pixel counts, precision, recall,
  F1 = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN); pooled or mean-per-image; tidy rows.
* :mod:`~fluoseg.metrics.matching` — one-to-one IoU matching per threshold; ``accuracy``
  = TP/(TP+FP+FN) (StarDist "accuracy", Cellpose "AP"), ``mean_matched_iou``, ``pq``.
* :mod:`~fluoseg.metrics.coco` — COCO average precision of scored predictions
  (``coco_ap``, a different metric from Cellpose's "AP").
* :mod:`~fluoseg.metrics.aji` — Aggregated Jaccard Index of Kumar et al. 2017 (``aji``) and
  Cellpose's variant (``aji_cellpose``).
* :mod:`~fluoseg.metrics.kromp` — Kromp et al. 2021 object categories (US/OS rates).
* :mod:`~fluoseg.metrics.instance` — everything of one image at once, pooling, tidy rows.
* :mod:`~fluoseg.metrics.calibration` — expected calibration error and reliability rows of
  per-pixel probabilities, expected F1 without labels, Spearman rank correlation.
* :mod:`~fluoseg.metrics.uncertainty` — per-pixel variance, predictive entropy and mutual
  information of repeated predictions (TTA, MC dropout, ensembles).

Nothing here imports a deep-learning framework.
"""

from fluoseg.metrics.aji import AJIResult, aggregated_jaccard_index, aggregated_jaccard_index_cellpose, pool_aji
from fluoseg.metrics.calibration import (
    CalibrationCounts,
    ExpectedConfusion,
    calibration_counts,
    expected_calibration_error,
    expected_confusion,
    expected_f1,
    reliability_table,
    spearman_correlation,
)
from fluoseg.metrics.coco import CocoDetections, coco_average_precision, coco_detections, pool_coco
from fluoseg.metrics.instance import (
    INSTANCE_METRICS,
    InstanceEvaluation,
    evaluate_instances,
    instance_evaluation_rows,
    instance_rows,
    pool_instance_evaluations,
)
from fluoseg.metrics.kromp import KrompCounts, kromp_object_counts, pool_kromp
from fluoseg.metrics.matching import (
    DEFAULT_IOU_THRESHOLDS,
    MatchingResult,
    ObjectMatch,
    match_objects,
    matching_at_thresholds,
    mean_over_thresholds,
    pool_matching,
)
from fluoseg.metrics.overlap import LabelOverlap, as_label_image, label_overlap
from fluoseg.metrics.semantic import (
    ConfusionCounts,
    confusion_counts,
    f1_score,
    iou_score,
    mean_over_images,
    per_class_confusion,
    pool_confusion,
    precision_score,
    recall_score,
    semantic_rows,
)
from fluoseg.metrics.uncertainty import UncertaintyMaps, mutual_information, predictive_entropy, uncertainty_maps

__all__ = [
    "AJIResult",
    "CalibrationCounts",
    "CocoDetections",
    "ConfusionCounts",
    "DEFAULT_IOU_THRESHOLDS",
    "ExpectedConfusion",
    "INSTANCE_METRICS",
    "InstanceEvaluation",
    "KrompCounts",
    "LabelOverlap",
    "MatchingResult",
    "ObjectMatch",
    "UncertaintyMaps",
    "aggregated_jaccard_index",
    "aggregated_jaccard_index_cellpose",
    "as_label_image",
    "calibration_counts",
    "coco_average_precision",
    "coco_detections",
    "confusion_counts",
    "evaluate_instances",
    "expected_calibration_error",
    "expected_confusion",
    "expected_f1",
    "f1_score",
    "instance_evaluation_rows",
    "instance_rows",
    "iou_score",
    "kromp_object_counts",
    "label_overlap",
    "match_objects",
    "matching_at_thresholds",
    "mean_over_images",
    "mean_over_thresholds",
    "mutual_information",
    "per_class_confusion",
    "pool_aji",
    "pool_coco",
    "pool_confusion",
    "pool_instance_evaluations",
    "pool_kromp",
    "pool_matching",
    "precision_score",
    "predictive_entropy",
    "recall_score",
    "reliability_table",
    "semantic_rows",
    "spearman_correlation",
    "uncertainty_maps",
]
