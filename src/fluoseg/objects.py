"""Per-object measurements of a label image: what ``fluoseg predict --objects`` writes.

One row per object: its label, area (pixels, and µm² when the pixel size is known), centroid,
bounding box, eccentricity (2D), and the mean and summed intensity of every named channel of
the input image. For a z-stack the area is the voxel count (and µm³), the centroid and box
have a z coordinate, and eccentricity is left out (it is defined for 2D shapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from fluoseg.errors import FluosegError


def object_table(labels: np.ndarray, image: np.ndarray | None = None, channel_names: Sequence[str] = (), *,
                 pixel_size: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Measurements of every object of a label image.

    Parameters
    ----------
    labels
        ``([Z], Y, X)`` integer labels, 0 for background.
    image
        ``(C, [Z], Y, X)`` intensities of the same spatial shape, or ``None``.
    channel_names
        Name of each image channel (columns ``mean_<name>``, ``sum_<name>``).
    pixel_size
        µm per spatial axis (or one isotropic value); adds ``area_um2`` (2D) or ``volume_um3`` (3D).

    Returns
    -------
    list of dict
        One row per object, in label order.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise FluosegError(f"objects are measured on 2D or 3D integer label images, got {labels.dtype} {labels.shape}")
    ids = np.unique(labels[labels > 0])
    if ids.size == 0:
        return []
    index = ids.astype(np.int64)
    area = ndimage.sum_labels(np.ones(labels.shape, np.float64), labels, index)
    centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, index), np.float64).reshape(len(ids), -1)
    boxes = ndimage.find_objects(labels)
    axes = "zyx"[3 - labels.ndim:]
    rows: list[dict[str, Any]] = []
    for k, label in enumerate(ids):
        box = boxes[int(label) - 1]
        row: dict[str, Any] = {"label": int(label), "area_px": int(area[k])}
        for a, name in enumerate(axes):
            row[f"centroid_{name}"] = round(float(centroids[k, a]), 3)
        for a, name in enumerate(axes):
            row[f"bbox_{name}0"], row[f"bbox_{name}1"] = int(box[a].start), int(box[a].stop)
        rows.append(row)
    if pixel_size is not None:
        sizes = _per_axis(pixel_size, labels.ndim)
        key = "area_um2" if labels.ndim == 2 else "volume_um3"
        for row in rows:
            row[key] = round(row["area_px"] * float(np.prod(sizes)), 6)
    if labels.ndim == 2:
        for row, value in zip(rows, _eccentricities(labels, ids, boxes)):
            row["eccentricity"] = round(value, 6)
    if image is not None:
        image = np.asarray(image)
        if image.shape[1:] != labels.shape or len(channel_names) != image.shape[0]:
            raise FluosegError(f"image {image.shape} with channels {list(channel_names)} does not fit labels "
                               f"{labels.shape}")
        for c, name in enumerate(channel_names):
            sums = ndimage.sum_labels(image[c].astype(np.float64), labels, index)
            for row, total in zip(rows, sums):
                row[f"mean_{name}"] = round(float(total) / row["area_px"], 6)
                row[f"sum_{name}"] = round(float(total), 6)
    return rows


def _per_axis(pixel_size: Sequence[float], n_axes: int) -> tuple[float, ...]:
    sizes = tuple(float(p) for p in pixel_size)
    if len(sizes) == 1:
        return sizes * n_axes
    if len(sizes) < n_axes:  # a 2D pixel size given for a stack: z unknown
        raise FluosegError(f"a pixel size {sizes} does not give every axis of a {n_axes}D label image")
    return sizes[-n_axes:]


def _eccentricities(labels: np.ndarray, ids: np.ndarray, boxes: list) -> list[float]:
    """Eccentricity of the ellipse with the same second moments as each object (0: a disk, -> 1: a line)."""
    values = []
    for label in ids:
        box = boxes[int(label) - 1]
        yy, xx = np.nonzero(labels[box] == label)
        if yy.size < 2:
            values.append(0.0)
            continue
        covariance = np.cov(np.stack([yy, xx]).astype(np.float64), bias=True)
        small, large = np.sort(np.clip(np.linalg.eigvalsh(covariance), 0.0, None))
        values.append(float(np.sqrt(1.0 - small / large)) if large > 0 else 0.0)
    return values
