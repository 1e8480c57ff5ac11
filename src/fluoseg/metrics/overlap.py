"""Pixel overlaps between two instance label images, stored sparsely.

Every object-level metric of :mod:`fluoseg.metrics` is a function of the contingency table
``N[g, p]`` = number of pixels with truth label ``g`` and predicted label ``p`` (label 0 is
background). The table is computed once per image pair by counting combined label ids with
``np.bincount`` (or ``np.unique`` when the dense table would be too large), and only the
non-zero object/object cells are kept, so a 1000 x 1000 image with 1000 objects on each side
takes a few milliseconds and a few megabytes.

Label images hold non-negative integers; 0 is background and every other value is one
object. Labels need not be consecutive (``{3, 17, 900}`` is fine) and the results do not
depend on which number an object carries, except where a docstring names a tie-break by label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError

__all__ = ["LabelOverlap", "as_label_image", "label_overlap"]

# A dense (n_true+1) x (n_pred+1) table is used while it is at most this many cells
# beyond a few per pixel; past that, unique() on the combined ids keeps memory ~ pixels.
_DENSE_EXTRA_CELLS = 1 << 22


def as_label_image(labels: Any, *, name: str = "labels") -> np.ndarray:
    """Validate an instance label image and return it as an integer array.

    Parameters
    ----------
    labels
        Array-like of non-negative integers (0 = background). Floating-point arrays are
        accepted when every value is a whole number (label TIFFs are sometimes saved as
        float32) and converted to ``int64``.
    name
        How the array is called in error messages.

    Raises
    ------
    FluosegError
        If the array is boolean (a mask, not labels), not numeric, zero-dimensional, holds
        negative or fractional values, or NaN.
    """
    array = np.asarray(labels)
    if array.ndim == 0:
        raise FluosegError(f"{name} is a scalar; pass a label image ([Z,] Y, X)")
    if array.dtype == bool:
        raise FluosegError(f"{name} is a boolean mask, not a label image; label its objects first "
                           "(e.g. skimage.measure.label)")
    if np.issubdtype(array.dtype, np.integer):
        if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
            raise FluosegError(f"{name} holds negative values; labels must be >= 0 (0 = background)")
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and (array >= 0).all() and (array == np.floor(array)).all()):
            raise FluosegError(f"{name} holds non-integer, negative or NaN values; label images must hold "
                               "whole numbers >= 0 (0 = background)")
        return array.astype(np.int64)
    raise FluosegError(f"{name} has dtype {array.dtype}; label images must hold non-negative integers")


def _compact(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object ids (sorted, > 0) and, per pixel, 0 for background or 1 + the object's index."""
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.intp)
    largest = int(flat.max())
    if largest <= 4 * flat.size + 1024:
        present = np.bincount(flat.astype(np.intp, copy=False), minlength=largest + 1)
        ids = np.flatnonzero(present[1:]) + 1
        lookup = np.zeros(largest + 1, np.intp)
        lookup[ids] = np.arange(1, ids.size + 1)
        return ids.astype(np.int64), lookup[flat]
    values, inverse = np.unique(flat, return_inverse=True)
    if values[0] != 0:
        return values.astype(np.int64), inverse.astype(np.intp) + 1
    return values[1:].astype(np.int64), inverse.astype(np.intp)


@dataclass(frozen=True, eq=False)
class LabelOverlap:
    """The sparse contingency table of a truth and a predicted label image.

    Objects are indexed ``0 .. n_true-1`` / ``0 .. n_pred-1`` in ascending label order.

    Attributes
    ----------
    true_ids, pred_ids
        Label values of the objects, ascending, background excluded.
    true_sizes, pred_sizes
        Pixel count of every object.
    true_on_background
        Pixels of each truth object where the prediction is background (``N[g, 0]``).
    pred_on_background
        Pixels of each predicted object where the truth is background (``N[0, p]``).
    pair_true, pair_pred, pair_intersection
        Every object pair that shares at least one pixel: truth index, prediction index and
        the number of shared pixels, ordered by truth index then prediction index.
    n_pixels
        Number of pixels (voxels) of the images.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_sizes: np.ndarray
    pred_sizes: np.ndarray
    true_on_background: np.ndarray
    pred_on_background: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    pair_intersection: np.ndarray
    n_pixels: int

    @property
    def n_true(self) -> int:
        """Number of truth objects."""
        return int(self.true_ids.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return int(self.pred_ids.size)

    @property
    def pair_union(self) -> np.ndarray:
        """|G ∪ P| of every overlapping pair."""
        return self.true_sizes[self.pair_true] + self.pred_sizes[self.pair_pred] - self.pair_intersection

    @property
    def pair_iou(self) -> np.ndarray:
        """Intersection over union |G ∩ P| / |G ∪ P| of every overlapping pair."""
        return self.pair_intersection / self.pair_union

    @property
    def true_foreground(self) -> int:
        """Pixels labelled as an object in the truth."""
        return int(self.true_sizes.sum())

    @property
    def pred_foreground(self) -> int:
        """Pixels labelled as an object in the prediction."""
        return int(self.pred_sizes.sum())

    @property
    def foreground_intersection(self) -> int:
        """Pixels that are foreground in both images."""
        return int(self.pair_intersection.sum())

    def iou_matrix(self) -> np.ndarray:
        """Dense ``(n_true, n_pred)`` IoU matrix (zeros for pairs that do not touch)."""
        matrix = np.zeros((self.n_true, self.n_pred))
        matrix[self.pair_true, self.pair_pred] = self.pair_iou
        return matrix


def label_overlap(true_labels: Any, pred_labels: Any) -> LabelOverlap:
    """Count the pixels shared by every truth/prediction object pair.

    Parameters
    ----------
    true_labels, pred_labels
        Instance label images of the same shape (2D or 3D, any integer labels, 0 = background).

    Returns
    -------
    LabelOverlap

    Raises
    ------
    FluosegError
        If the shapes differ or an image is not a valid label image (see :func:`as_label_image`).
    """
    truth = as_label_image(true_labels, name="truth labels")
    pred = as_label_image(pred_labels, name="predicted labels")
    if truth.shape != pred.shape:
        raise FluosegError(f"predicted labels have shape {pred.shape} but truth labels have shape {truth.shape}; "
                           "they must cover the same pixels")
    true_ids, t = _compact(truth.ravel())
    pred_ids, p = _compact(pred.ravel())
    n_t, n_p = true_ids.size, pred_ids.size
    width = n_p + 1
    combined = t.astype(np.int64) * width + p
    cells = (n_t + 1) * width
    if cells <= 8 * combined.size + _DENSE_EXTRA_CELLS:
        table = np.bincount(combined, minlength=cells).reshape(n_t + 1, width).astype(np.int64)
        true_sizes = table[1:].sum(axis=1)
        pred_sizes = table[:, 1:].sum(axis=0)
        true_bg, pred_bg = table[1:, 0].copy(), table[0, 1:].copy()
        rows, cols = np.nonzero(table[1:, 1:])
        inter = table[1:, 1:][rows, cols]
    else:
        codes, counts = np.unique(combined, return_counts=True)
        gi, pi = codes // width, codes % width
        counts = counts.astype(np.int64)
        true_sizes = np.bincount(gi, weights=counts, minlength=n_t + 1)[1:].astype(np.int64)
        pred_sizes = np.bincount(pi, weights=counts, minlength=n_p + 1)[1:].astype(np.int64)
        true_bg = np.zeros(n_t, np.int64)
        pred_bg = np.zeros(n_p, np.int64)
        on_pred_bg = (gi > 0) & (pi == 0)
        true_bg[gi[on_pred_bg] - 1] = counts[on_pred_bg]
        on_true_bg = (gi == 0) & (pi > 0)
        pred_bg[pi[on_true_bg] - 1] = counts[on_true_bg]
        both = (gi > 0) & (pi > 0)
        rows, cols, inter = gi[both] - 1, pi[both] - 1, counts[both]
    return LabelOverlap(
        true_ids=true_ids, pred_ids=pred_ids,
        true_sizes=np.asarray(true_sizes, np.int64), pred_sizes=np.asarray(pred_sizes, np.int64),
        true_on_background=np.asarray(true_bg, np.int64), pred_on_background=np.asarray(pred_bg, np.int64),
        pair_true=np.asarray(rows, np.intp), pair_pred=np.asarray(cols, np.intp),
        pair_intersection=np.asarray(inter, np.int64), n_pixels=int(truth.size),
    )
