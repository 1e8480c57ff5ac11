"""Training targets for instance segmentation, computed from an instance label image.

Three families of targets turn "which pixel belongs to which object" into something a
pixel-wise network can regress or classify:

* :func:`border_targets` — Kromp et al. (2021), "Evaluation of deep learning architectures for
  complex immunofluorescence nuclear image segmentation": a 3-class map (background,
  object interior, border where objects touch) so a U-Net learns to split aggregated nuclei.
* :func:`unet_weight_map` — Ronneberger et al. (2015), "U-Net: convolutional networks for
  biomedical image segmentation", eq. 2: per-pixel loss weights that balance the classes and
  emphasise the thin gaps between neighbouring objects. Kromp et al. train their U-Net with it.
* :func:`distance_targets` — the in-silico-labelling (ISL) paper (after Naylor et al. 2019,
  "Segmentation of nuclei in histopathology images by deep regression of the distance map"):
  a distance map plus a foreground mask, decoded by h-maxima + watershed
  (:func:`fluoseg.instance.postprocess.labels_from_distance`).

Label images are ``(Y, X)`` or ``(Z, Y, X)`` arrays of non-negative integers, 0 being
background; ids need not be consecutive. 3D stacks are processed slice by slice (every target
here is a 2D definition; nuclei in anisotropic stacks are annotated and predicted per slice).
Only numpy, scipy and scikit-image are used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from fluoseg.errors import FluosegError
from fluoseg.metrics.overlap import as_label_image

__all__ = [
    "BACKGROUND",
    "INTERIOR",
    "BORDER",
    "border_targets",
    "unet_weight_map",
    "distance_targets",
    "check_label_image",
]

#: Class values of :func:`border_targets`.
BACKGROUND, INTERIOR, BORDER = 0, 1, 2

# The exp term of the U-Net weight map is ignored below this fraction of w0; it bounds the
# window around each object in which distances are computed (see _second_distance_margin).
_WEIGHT_TOLERANCE = 1e-6


def check_label_image(labels: Any, *, name: str = "labels") -> np.ndarray:
    """Validate an instance label image of shape ``(Y, X)`` or ``(Z, Y, X)``.

    Parameters
    ----------
    labels
        Non-negative integers (0 = background); float arrays holding whole numbers are
        converted to ``int64``.
    name
        How the array is called in error messages.

    Returns
    -------
    numpy.ndarray
        The labels as an integer array.

    Raises
    ------
    FluosegError
        If the array is not 2D/3D or does not hold non-negative whole numbers.
    """
    array = as_label_image(labels, name=name)
    if array.ndim not in (2, 3):
        raise FluosegError(f"{name} has shape {array.shape}; expected a label image (Y, X) or (Z, Y, X)")
    return array


def _compact_ids(plane: np.ndarray) -> np.ndarray:
    """Relabel objects 1..N in ascending id order (0 stays background).

    Per-object loops use ``ndi.find_objects``, whose output length is the largest id; sparse
    ids such as ``{3, 90000}`` would make it long and slow.
    """
    values, compact = np.unique(plane, return_inverse=True)
    compact = compact.reshape(plane.shape).astype(np.int64, copy=False)
    if values.size and values[0] > 0:
        compact += 1
    return compact


def _slicewise(func: Callable[[np.ndarray], np.ndarray], array: np.ndarray) -> np.ndarray:
    """Apply a 2D function to a 2D array, or to every Z slice of a 3D array and stack."""
    if array.ndim == 2:
        return func(array)
    return np.stack([func(plane) for plane in array])


# --------------------------------------------------------------------------------------------
# Kromp et al.: background / interior / touching border
# --------------------------------------------------------------------------------------------


def border_targets(labels: Any, *, erosion: int = 1,
                   border: Literal["touching", "all"] = "touching") -> np.ndarray:
    """Three-class target map: background, object interior, and border between objects.

    Kromp et al. (2021) train their U-Net on masks whose "nuclear objects have to be shrunk
    by a morphological erosion operation" so that touching nuclei are separated, with the
    highest loss weights on "regions between touching nuclei". This function encodes that
    erosion as a class of its own, so the foreground is not lost:

    * ``BORDER`` (2) — with ``border="touching"`` (default), a pixel of object ``k`` is border
      when a pixel of a *different object* ``j != k, j > 0`` lies within chessboard distance
      ``erosion`` of it, i.e. inside the ``(2 erosion + 1)``-wide square around it. These are
      the rims where objects touch, on both sides of the contact line ("the pixels between
      touching objects"). Rims facing background stay interior. With ``border="all"`` any
      pixel whose square neighbourhood holds another object *or background* is border — the
      classic contour 3-class scheme (e.g. Caicedo et al. 2019).
    * ``INTERIOR`` (1) — every other object pixel: each object eroded by ``erosion`` pixels
      where it touches another object (or, with ``border="all"``, everywhere).
    * ``BACKGROUND`` (0) — label 0.

    Interior ∪ border is exactly the annotated foreground, so the object extent can be
    recovered (:func:`fluoseg.instance.postprocess.labels_from_border_classes`). Interiors of
    different objects are never 8-adjacent: two adjacent interior pixels of objects ``k`` and
    ``j`` would each have the other within distance 1 <= ``erosion``. Connected components of
    the interior therefore never merge touching objects. Pixels outside the image are treated
    as a copy of the nearest edge pixel, so objects cut by the image edge get no border there.
    Objects narrower than about ``2 erosion`` pixels where they touch others may have no
    interior left.

    Parameters
    ----------
    labels
        Instance labels ``(Y, X)`` or ``(Z, Y, X)`` (3D: slice by slice).
    erosion
        Width of the border band on each side of a contact, in pixels (>= 1).
    border
        ``"touching"`` (Kromp: borders between touching objects only) or ``"all"`` (every
        object contour).

    Returns
    -------
    numpy.ndarray
        ``uint8`` class map of the labels' shape with values 0, 1, 2.

    Raises
    ------
    FluosegError
        For an invalid label image, ``erosion < 1`` or an unknown ``border``.
    """
    array = check_label_image(labels)
    if int(erosion) != erosion or erosion < 1:
        raise FluosegError(f"erosion must be a whole number >= 1, got {erosion!r}")
    if border not in ("touching", "all"):
        raise FluosegError(f"border must be 'touching' or 'all', got {border!r}")
    size = 2 * int(erosion) + 1

    def one(plane: np.ndarray) -> np.ndarray:
        plane = plane.astype(np.int64, copy=False)
        foreground = plane > 0
        highest = ndi.maximum_filter(plane, size=size, mode="nearest")
        if border == "touching":
            # Background is lifted above every id so the minimum sees objects only; another
            # object is near iff the neighbourhood's max or min object id differs. (Not the
            # int64 maximum: scipy's minimum filter overflows on it.)
            lifted = np.where(foreground, plane, int(plane.max()) + 1)
            lowest = ndi.minimum_filter(lifted, size=size, mode="nearest")
        else:
            lowest = ndi.minimum_filter(plane, size=size, mode="nearest")
        is_border = foreground & ((highest != plane) | (lowest != plane))
        out = foreground.astype(np.uint8)
        out[is_border] = BORDER
        return out

    return _slicewise(one, array)


# --------------------------------------------------------------------------------------------
# Ronneberger et al.: U-Net weight map
# --------------------------------------------------------------------------------------------


def _class_weight_table(classes: np.ndarray, class_weights: Sequence[float] | None) -> np.ndarray:
    """Weight per class value: given, or inverse frequency normalised to a mean of 1 per pixel."""
    n_values = int(classes.max()) + 1 if classes.size else 1
    if class_weights is not None:
        table = np.asarray(class_weights, dtype=np.float64)
        if table.ndim != 1 or len(table) < n_values or not np.isfinite(table).all() or (table < 0).any():
            raise FluosegError(f"class_weights must be {n_values} or more finite non-negative numbers "
                               f"(one per class value 0..{n_values - 1}), got {class_weights!r}")
        return table
    counts = np.bincount(classes.ravel(), minlength=n_values).astype(np.float64)
    present = counts > 0
    table = np.zeros(n_values, np.float64)
    # N / (C * N_c) over the C classes present: sum_c N_c * w_c = N, i.e. mean weight 1.
    table[present] = classes.size / (present.sum() * counts[present])
    return table


def _second_distance_margin(sigma: float) -> float:
    """Distance beyond which exp(-d^2 / (2 sigma^2)) < tolerance; d1 + d2 >= d2 > it then."""
    return float(sigma * np.sqrt(-2.0 * np.log(_WEIGHT_TOLERANCE)))


def _two_nearest_distances(plane: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, Euclidean distance to the nearest and second-nearest object (inf if > margin).

    Each object's distance transform is computed only in its bounding box grown by
    ``margin``: the object lies wholly inside that window, so distances there are exact, and
    every pixel outside it is farther than ``margin`` from the object.
    """
    d1 = np.full(plane.shape, np.inf, np.float64)
    d2 = np.full(plane.shape, np.inf, np.float64)
    pad = int(np.ceil(margin))
    for index, box in enumerate(ndi.find_objects(plane)):
        if box is None:
            continue
        window = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, plane.shape))
        outside = plane[window] != index + 1
        dist = ndi.distance_transform_edt(outside)
        near1, near2 = d1[window], d2[window]
        # Keep the two smallest of (d1, d2, dist) with d1 <= d2.
        np.minimum(near2, np.maximum(near1, dist), out=near2)
        np.minimum(near1, dist, out=near1)
    return d1, d2


def unet_weight_map(labels: Any, *, w0: float = 10.0, sigma: float = 5.0,
                    class_weights: Sequence[float] | None = None,
                    classes: Any = None) -> np.ndarray:
    """The U-Net loss weight map of Ronneberger et al. (2015, eq. 2).

    .. math::

        w(x) = w_c(x) + w_0 \\exp\\left(-\\frac{(d_1(x) + d_2(x))^2}{2\\sigma^2}\\right)

    where :math:`d_1(x)` and :math:`d_2(x)` are the Euclidean distances from pixel ``x`` to
    the nearest and second-nearest object (distance to object ``k`` = distance to its closest
    pixel, 0 on the object itself). As in the paper the term is evaluated on every pixel:
    it peaks in narrow background gaps between objects (both distances small) and also
    raises the weight of object pixels near a neighbour (:math:`d_1 = 0` there). With fewer
    than two objects the term is 0. Terms below ``1e-6 * w0`` are dropped, which lets each
    object's distance transform be restricted to its bounding box grown by
    ``sigma * sqrt(2 ln 1e6)`` (~26 px for sigma 5): ~200 objects on 512 x 512 take a few
    tens of milliseconds.

    :math:`w_c(x)` balances the classes. The class of a pixel is ``classes[x]`` when given
    (e.g. the 3-class map of :func:`border_targets`), else foreground (label > 0) = 1 and
    background = 0. With ``class_weights=None`` the weights are the inverse class
    frequencies normalised so that the mean weight over the pixels is 1:
    :math:`w_c = N / (C N_c)` with ``N`` pixels, ``N_c`` pixels of class ``c`` and ``C``
    classes present. Frequencies are counted over the whole input (all slices of a stack).

    Parameters
    ----------
    labels
        Instance labels ``(Y, X)`` or ``(Z, Y, X)`` (3D: distances slice by slice).
    w0
        Weight of the separation term (paper: 10).
    sigma
        Width of the separation term in pixels (paper: "approximately 5 pixels").
    class_weights
        Weight per class value ``0..C-1``; None for normalised inverse frequencies.
    classes
        Optional class map of the labels' shape (non-negative integers) defining ``w_c``.

    Returns
    -------
    numpy.ndarray
        ``float32`` weights of the labels' shape.

    Raises
    ------
    FluosegError
        For an invalid label image or class map, or non-positive ``sigma``/negative ``w0``.
    """
    array = check_label_image(labels)
    if not (np.isfinite(w0) and w0 >= 0):
        raise FluosegError(f"w0 must be a finite number >= 0, got {w0!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise FluosegError(f"sigma must be a finite number > 0, got {sigma!r}")
    if classes is None:
        class_map = (array > 0).astype(np.intp)
    else:
        class_map = as_label_image(classes, name="classes")
        if class_map.shape != array.shape:
            raise FluosegError(f"classes has shape {class_map.shape} but labels have shape {array.shape}; "
                               "pass a class map of the same shape")
        class_map = class_map.astype(np.intp, copy=False)
    weights = _class_weight_table(class_map, class_weights)[class_map]
    if w0 > 0:
        margin = _second_distance_margin(sigma)

        def separation(plane: np.ndarray) -> np.ndarray:
            d1, d2 = _two_nearest_distances(_compact_ids(plane), margin)
            term = np.zeros(plane.shape, np.float64)
            known = np.isfinite(d2)
            term[known] = w0 * np.exp(-((d1[known] + d2[known]) ** 2) / (2.0 * sigma**2))
            return term

        weights = weights + _slicewise(separation, array)
    return weights.astype(np.float32)


# --------------------------------------------------------------------------------------------
# ISL / Naylor et al.: distance map + foreground
# --------------------------------------------------------------------------------------------


def _object_distances(plane: np.ndarray) -> np.ndarray:
    """Per object pixel, Euclidean distance to the nearest pixel not of that object."""
    out = np.zeros(plane.shape, np.float64)
    for index, box in enumerate(ndi.find_objects(plane)):
        if box is None:
            continue
        # One pixel of margin holds the nearest non-object pixel of every object pixel (the
        # box is convex); at the image edge there is none, as in a whole-image transform.
        window = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, plane.shape))
        inside = plane[window] == index + 1
        dist = ndi.distance_transform_edt(inside)
        out[window][inside] = dist[inside]
    return out


def _normalise_per_object(compact: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Divide every object's distances by that object's maximum (ids compact, 1..N)."""
    n = int(compact.max()) if compact.size else 0
    peak = np.ones(n + 1, np.float64)
    if n:
        peak[1:] = ndi.maximum(dist, labels=compact, index=np.arange(1, n + 1))
    peak[peak <= 0] = 1.0
    return dist / peak[compact]


def distance_targets(labels: Any, *,
                     normalise: Literal["none", "per_object", "global"] = "none",
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Distance map and foreground mask for the two-head model of the ISL paper.

    The ISL paper predicts "a distance map, i.e. an image where pixel values get higher as
    they are closer to the center of the cell, the background remaining black", following
    Naylor et al. (2019): the Euclidean distance transform inside each object,

    .. math:: D(x) = \\min_{y \\notin O_k} \\lVert x - y \\rVert \\quad (x \\in O_k), \\qquad D(x) = 0 \\text{ on background},

    i.e. for a pixel of object ``k`` the distance (pixel centres, unit pixels) to the nearest
    pixel that is not in ``k`` — background *or another object*, so touching objects meet in
    a valley. Pixels on an object's rim have distance 1. The image edge is not a border (the
    object is taken to continue beyond it).

    Normalisation: the ISL paper states none, and its post-processing uses h = 10 on the
    predicted map, which only makes sense for distances in pixels; Naylor et al. regress the
    raw distance too. The default is therefore ``"none"``. ``"per_object"`` divides each object
    by its own maximum (every object peaks at 1; size-invariant, then use ``h`` < 1 in
    :func:`~fluoseg.instance.postprocess.labels_from_distance`), ``"global"`` divides by the
    maximum over the image (per slice for stacks).

    Parameters
    ----------
    labels
        Instance labels ``(Y, X)`` or ``(Z, Y, X)`` (3D: slice by slice).
    normalise
        ``"none"`` (pixels), ``"per_object"`` or ``"global"`` (both to [0, 1]).

    Returns
    -------
    distance : numpy.ndarray
        ``float32`` map of the labels' shape, 0 on background.
    foreground : numpy.ndarray
        ``uint8`` mask, 1 where label > 0.

    Raises
    ------
    FluosegError
        For an invalid label image or an unknown ``normalise``.
    """
    array = check_label_image(labels)
    if normalise not in ("none", "per_object", "global"):
        raise FluosegError(f"normalise must be 'none', 'per_object' or 'global', got {normalise!r}")

    def one(plane: np.ndarray) -> np.ndarray:
        compact = _compact_ids(plane)
        dist = _object_distances(compact)
        if normalise == "per_object":
            dist = _normalise_per_object(compact, dist)
        elif normalise == "global" and dist.size and dist.max() > 0:
            dist = dist / dist.max()
        return dist.astype(np.float32)

    distance = _slicewise(one, array)
    return distance, (array > 0).astype(np.uint8)
