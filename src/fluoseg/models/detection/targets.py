"""Detection targets from instance labels, and instance labels from detections (numpy only).

The detectors train on per-object targets and predict per-object masks, while fluoseg's
annotations and metrics use instance label images ``(Y, X)`` (0 background, 1..N
objects). This module converts between the two:

- :func:`targets_from_labels`: boxes, masks, class labels, points and the foreground of
  a label image (full supervision for Mask R-CNN and LACSS, or, keeping only ``points``
  and ``foreground``, LACSS's weak supervision);
- :func:`points_from_labels`: one point per object, its centroid or a random pixel of it;
- :func:`labels_from_detections`: a label image from scored mask probabilities, objects
  pasted by descending score (a pixel belongs to the best-scoring object covering it),
  with the kept objects' scores for COCO AP (:mod:`fluoseg.metrics.coco`).

Boxes are ``(x1, y1, x2, y2)`` with the far corner exclusive, ``x2 = last column + 1``
(COCO's ``x + width``, which torchvision's reference scripts train on), so every
non-empty object has a box of positive size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fluoseg.errors import FluosegError

POINT_METHODS = ("centroid", "inside", "random")
"""How :func:`points_from_labels` places a point in each object."""


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise FluosegError(
            f"instance labels must be a 2D integer image (0 background, 1..N objects), got {labels.ndim}D "
            f"{labels.dtype}; detection models are 2D only"
        )
    if labels.size and labels.min() < 0:
        raise FluosegError("instance labels must not be negative; use 0 for background and 1..N for objects")
    return labels


def object_ids(labels: np.ndarray) -> np.ndarray:
    """The object labels present, ascending (background 0 excluded)."""
    ids = np.unique(_check_labels(labels))
    return ids[ids != 0]


def points_from_labels(labels: np.ndarray, *, method: str = "centroid",
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """One ``(y, x)`` point per object, objects in ascending label order: ``(n, 2)`` float32.

    Parameters
    ----------
    labels
        Instance label image ``(Y, X)``.
    method
        ``"centroid"``: the mean pixel coordinate (may lie outside a non-convex object);
        ``"inside"``: the centroid snapped to the object's nearest pixel when it falls
        outside the object (a crescent, a ring), so the point always marks the object;
        ``"random"``: a pixel of the object drawn uniformly, as a human clicking
        somewhere inside would (LACSS's point annotations).
    rng
        Random source for ``"random"`` (default: a fresh unseeded generator).

    Raises
    ------
    FluosegError
        For an unknown method or labels that are not a 2D non-negative integer image.
    """
    if method not in POINT_METHODS:
        raise FluosegError(f"unknown point method {method!r}; choose one of {list(POINT_METHODS)}")
    ids = object_ids(labels)
    if len(ids) == 0:
        return np.zeros((0, 2), np.float32)
    if method in ("centroid", "inside"):
        centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, ids), np.float32).reshape(-1, 2)
        return centroids if method == "centroid" else _snapped_inside(labels, ids, centroids)
    rng = rng if rng is not None else np.random.default_rng()
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], ids, side="left")
    ends = np.searchsorted(flat[order], ids, side="right")
    picks = order[starts + (rng.random(len(ids)) * (ends - starts)).astype(np.int64)]
    return np.stack(np.unravel_index(picks, labels.shape), axis=1).astype(np.float32)


def _snapped_inside(labels: np.ndarray, ids: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each point moved to the nearest pixel of its object unless its rounded pixel belongs to it."""
    snapped = points.copy()
    slices = ndimage.find_objects(labels)
    for row, (object_id, (y, x)) in enumerate(zip(ids, points)):
        iy, ix = int(round(float(y))), int(round(float(x)))
        if 0 <= iy < labels.shape[0] and 0 <= ix < labels.shape[1] and labels[iy, ix] == object_id:
            continue
        rows, cols = slices[object_id - 1]
        ys, xs = np.nonzero(labels[rows, cols] == object_id)
        nearest = int(np.argmin((ys + rows.start - y) ** 2 + (xs + cols.start - x) ** 2))
        snapped[row] = (ys[nearest] + rows.start, xs[nearest] + cols.start)
    return snapped


def targets_from_labels(labels: np.ndarray, *, point_method: str = "centroid",
                        rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Per-object training targets of an instance label image.

    Returns
    -------
    dict
        ``boxes`` ``(n, 4)`` float32 ``x1, y1, x2, y2`` (far corner exclusive);
        ``labels`` ``(n,)`` int64 class labels, all 1 (one object class);
        ``masks`` ``(n, Y, X)`` uint8 0/1; ``points`` ``(n, 2)`` float32 ``(y, x)``
        (see :func:`points_from_labels`); ``foreground`` ``(Y, X)`` uint8;
        ``ids`` ``(n,)`` the objects' values in ``labels``. Objects are in ascending
        label order.
    """
    ids = object_ids(labels)
    masks = (labels[None] == ids[:, None, None]).astype(np.uint8)
    boxes = np.zeros((len(ids), 4), np.float32)
    slices = ndimage.find_objects(labels)  # indexed by label value - 1
    for row, object_id in enumerate(ids):
        rows, cols = slices[object_id - 1]
        boxes[row] = (cols.start, rows.start, cols.stop, rows.stop)
    return {
        "boxes": boxes,
        "labels": np.ones(len(ids), np.int64),
        "masks": masks,
        "points": points_from_labels(labels, method=point_method, rng=rng),
        "foreground": (labels > 0).astype(np.uint8),
        "ids": ids.astype(np.int64),
    }


def labels_from_detections(masks: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                           min_area: int = 1, min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Instance label image from per-object mask probabilities and scores.

    Objects scoring below ``min_score`` are left out; the others are pasted by
    descending score: each takes the pixels where its probability is at least
    ``threshold`` that no better-scoring object took. Objects left with fewer than
    ``min_area`` pixels are dropped. Labels are numbered 1..m by descending score.

    For COCO AP keep every detection (``min_score=0``: AP ranks them by score); for
    metrics of one label image (F1, accuracy, AJI) a score threshold such as 0.5 removes
    the many low-scoring detections a detector reports (Mask R-CNN keeps scores down to
    0.05).

    Parameters
    ----------
    masks
        ``(n, Y, X)`` probabilities (or 0/1) of the detections, pasted into the image.
    scores
        ``(n,)`` detection scores.
    threshold
        Probability from which a pixel belongs to an object (0.5).
    min_area
        Fewest pixels a kept object has.
    min_score
        Lowest score of a kept detection.

    Returns
    -------
    tuple of numpy.ndarray
        The ``(Y, X)`` int32 label image, and the ``(m,)`` float64 scores of labels 1..m
        (the ``scores`` argument of :func:`fluoseg.metrics.coco.coco_detections`).
    """
    masks = np.asarray(masks)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"expected masks (n, Y, X) and n scores, got {masks.shape} and {scores.shape}")
    labels = np.zeros(masks.shape[1:], np.int32)
    kept_scores = []
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] < min_score:
            break
        claimed = (masks[index] >= threshold) & (labels == 0)
        if claimed.sum() >= max(min_area, 1):
            kept_scores.append(scores[index])
            labels[claimed] = len(kept_scores)
    return labels, np.asarray(kept_scores, np.float64)
