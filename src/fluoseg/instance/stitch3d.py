"""3D instance labels from slice-wise 2D labels, and anisotropy of z-stacks.

:func:`stitch_slices` links the objects of consecutive z-slices by their overlap, the
scheme of Cellpose's ``stitch_threshold`` (Stringer et al. 2021): going up the stack, each
object of slice ``z`` takes the label of the object of slice ``z - 1`` (already stitched)
with which it has the highest IoU, when that IoU is at least ``threshold`` and no other
object of slice ``z`` overlaps that previous object more; otherwise it starts a new 3D
object. Overlaps are counted sparsely (:func:`fluoseg.metrics.overlap.label_overlap`), so a
slice with thousands of nuclei costs a few passes over its pixels.

:func:`anisotropy` and :func:`isotropic_zoom` turn the pixel size ``(z, y, x)`` into the
factors that resample a stack to cubic voxels (z is usually sampled 2-5 times coarser than
y and x in confocal stacks), e.g. before a 3D decoder that assumes isotropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.metrics.overlap import as_label_image, label_overlap

__all__ = ["StitchedSlices", "anisotropy", "isotropic_zoom", "stitch_slices"]


def _links(previous: np.ndarray, current: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Current object ids and the previous ids they take (Cellpose's stitching rule)."""
    overlap = label_overlap(current, previous)
    iou = overlap.pair_iou
    cur, prev = overlap.pair_true, overlap.pair_pred
    keep = iou >= threshold
    cur, prev, iou = cur[keep], prev[keep], iou[keep]
    # A previous object goes only to the current object(s) overlapping it most.
    best_for_prev = np.zeros(overlap.n_pred)
    np.maximum.at(best_for_prev, prev, iou)
    keep = iou >= best_for_prev[prev]
    cur, prev, iou = cur[keep], prev[keep], iou[keep]
    # Each current object takes its best remaining previous object (first on ties).
    order = np.lexsort((-iou, cur))
    cur, prev = cur[order], prev[order]
    first = np.concatenate([[True], cur[1:] != cur[:-1]]) if cur.size else np.zeros(0, bool)
    return overlap.true_ids[cur[first]], overlap.pred_ids[prev[first]]


def stitch_slices(labels: Any, *, threshold: float = 0.25, min_size: int = 0) -> np.ndarray:
    """Link 2D objects of consecutive slices into 3D objects by IoU.

    Parameters
    ----------
    labels
        ``(Z, Y, X)`` slice-wise instance labels (0 = background); ids may repeat between
        slices (e.g. 1..n on every slice) since each slice is read on its own.
    threshold
        Minimum IoU with an object of the previous slice for an object to continue it
        (Cellpose's ``stitch_threshold``; its documentation suggests values around 0.25).
    min_size
        3D objects with fewer voxels are removed after stitching. The caps of a nucleus
        (its first and last slices) often overlap the next slice too little and start
        objects of their own: on simulated stacks (z step 2 px, radii 5-9 px) such
        fragments had at most 24 voxels and real nuclei at least 74.

    Returns
    -------
    numpy.ndarray
        ``uint32`` ``(Z, Y, X)`` labels, ids ``1..N`` numbered in order of first appearance
        from the bottom slice up (raster order within a slice).

    Raises
    ------
    FluosegError
        For a stack that is not 3D, labels that are not non-negative integers, or a
        threshold outside ``(0, 1]``.
    """
    stack = as_label_image(labels, name="labels")
    if stack.ndim != 3:
        raise FluosegError(f"labels must be a (Z, Y, X) stack to stitch, got shape {stack.shape}")
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise FluosegError(f"threshold must be an IoU in (0, 1], got {threshold!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise FluosegError(f"min_size must be a whole number of voxels >= 0, got {min_size!r}")
    out = np.zeros(stack.shape, np.uint32)
    next_id = 1
    for z, plane in enumerate(stack):
        ids, first_seen = np.unique(plane.ravel(), return_index=True)
        keep = ids > 0
        ids, first_seen = ids[keep], first_seen[keep]
        new = np.zeros(ids.size, np.uint32)
        if z > 0 and ids.size:
            linked, taken = _links(out[z - 1], plane, float(threshold))
            new[np.searchsorted(ids, linked)] = taken
        fresh = np.flatnonzero(new == 0)
        fresh = fresh[np.argsort(first_seen[fresh], kind="stable")]  # raster order of appearance
        new[fresh] = np.arange(next_id, next_id + fresh.size, dtype=np.uint32)
        next_id += fresh.size
        if ids.size:
            position = np.minimum(np.searchsorted(ids, plane), ids.size - 1)
            out[z] = np.where(plane > 0, new[position], 0)
    if min_size > 1 and next_id > 1:
        keep = np.bincount(out.ravel(), minlength=next_id) >= min_size
        keep[0] = False
        renumber = np.where(keep, np.cumsum(keep), 0).astype(np.uint32)  # order of appearance is kept
        out = renumber[out]
    return out


@dataclass(frozen=True)
class StitchedSlices:
    """A slice-wise decoder followed by :func:`stitch_slices`: 3D labels of a maps window.

    Picklable (for block tasks on other processes) when ``decoder`` is. Blockwise decoding
    with it relinks objects across blocks in Z as in Y/X (Z is a *stitched* axis of
    :func:`fluoseg.instance.blocks.plan_blocks`: a halo of one slice suffices, since
    whether two objects of consecutive slices link depends on those two slices only).

    Attributes
    ----------
    decoder
        ``(C, Z, y, x)`` maps -> ``(Z, y, x)`` slice-wise labels.
    threshold
        IoU for linking, see :func:`stitch_slices` (no ``min_size``: a block sees part of
        an object, so a size filter would cut it).
    """

    decoder: Callable[[np.ndarray], np.ndarray]
    threshold: float = 0.25

    def __call__(self, window: np.ndarray) -> np.ndarray:
        return stitch_slices(self.decoder(window), threshold=self.threshold)


def _check_sizes(pixel_size: Sequence[float]) -> tuple[float, float, float]:
    try:
        z, y, x = (float(s) for s in pixel_size)
    except (TypeError, ValueError):
        raise FluosegError(f"pixel_size must be (z, y, x) in µm, got {pixel_size!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in (z, y, x)):
        raise FluosegError(f"pixel sizes must be finite and > 0, got {pixel_size!r}")
    return z, y, x


def anisotropy(pixel_size: Sequence[float]) -> float:
    """Ratio of the z step to the in-plane pixel size, ``z / sqrt(y * x)``.

    Cellpose calls this ``anisotropy`` and rescales z by it before 3D processing.

    Parameters
    ----------
    pixel_size
        ``(z, y, x)`` in µm.

    Raises
    ------
    FluosegError
        If there are not three finite positive sizes.
    """
    z, y, x = _check_sizes(pixel_size)
    return z / math.sqrt(y * x)


def isotropic_zoom(pixel_size: Sequence[float], *, target: float | None = None) -> tuple[float, float, float]:
    """Zoom factors per axis that resample a stack to cubic voxels of ``target`` µm.

    Parameters
    ----------
    pixel_size
        ``(z, y, x)`` in µm.
    target
        Voxel side after resampling; default the finest of the three sizes, so no axis
        loses resolution.

    Returns
    -------
    tuple of float
        ``(fz, fy, fx)``: an axis of ``n`` pixels becomes ``round(n * f)`` pixels
        (the convention of :func:`scipy.ndimage.zoom`).

    Raises
    ------
    FluosegError
        For invalid sizes or target.
    """
    sizes = _check_sizes(pixel_size)
    goal = min(sizes) if target is None else float(target)
    if not (math.isfinite(goal) and goal > 0):
        raise FluosegError(f"target voxel size must be finite and > 0, got {target!r}")
    return tuple(s / goal for s in sizes)  # type: ignore[return-value]
