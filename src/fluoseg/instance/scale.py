"""Scale normalisation by object size (Kromp et al. 2021).

Kromp et al. rescale every image so that "nuclei are equally mean-sized across all images":
the mean nuclear size of an image is computed from its annotation mask, and image and mask
are resized so that it matches a common value; predictions are resized back to the original
image size before evaluation. They found this raises precision and recall of the U-Net and
Mask R-CNN, because networks no longer have to learn nuclei at many scales.

Size here is the **equivalent-circle diameter** of an object, :math:`d = 2\\sqrt{A/\\pi}` for
an object of ``A`` pixels (a digitised disk of radius ``r`` gives ``d ≈ 2r``), summarised
over objects by their mean (default) or median. The workflow::

    target = mean_object_diameter(training_labels)                # common size, in pixels
    factor = scale_factor(estimate_diameter_from_labels(labels), target)
    small_image, small_labels = rescale_image(image, factor), rescale_labels(labels, factor)
    ...                                                            # train / predict
    labels_back = restore_shape(pred_labels, labels.shape, labels=True)

At inference the diameter of an unannotated image must come from elsewhere (its pixel size,
a first segmentation pass, or the user).

Resampling: ``fluoseg.data.resample`` did not exist when this module was written, so minimal
local helpers live here (:func:`rescale_image`, :func:`rescale_labels`,
:func:`restore_shape`). Both scale the last two axes (Y, X) only and use pixel-centre
alignment, so a label image enlarged by an integer factor and restored is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from skimage.transform import resize

from fluoseg.errors import FluosegError
from fluoseg.instance.targets import check_label_image

__all__ = [
    "object_diameters",
    "estimate_diameter_from_labels",
    "mean_object_diameter",
    "scale_factor",
    "scaled_shape",
    "rescale_image",
    "rescale_labels",
    "restore_shape",
]

Statistic = Literal["mean", "median"]


def object_diameters(labels: Any) -> np.ndarray:
    """Equivalent-circle diameter :math:`2\\sqrt{A/\\pi}` of every object, in pixels.

    Parameters
    ----------
    labels
        Instance labels ``(Y, X)``, or ``(Z, Y, X)`` where every object's section on every
        slice counts as one 2D object (slice-wise, like the rest of :mod:`fluoseg.instance`).

    Returns
    -------
    numpy.ndarray
        ``float64`` diameters, one per object (section), in ascending label order.

    Raises
    ------
    FluosegError
        For an invalid label image.
    """
    array = check_label_image(labels)
    if array.ndim == 2:
        array = array[None]
    ids = array.reshape(array.shape[0], -1)
    slice_index = np.broadcast_to(np.arange(array.shape[0])[:, None], ids.shape)
    keep = ids > 0
    # One key per (slice, object) pair; unique() copes with sparse or huge ids.
    keys = slice_index[keep].astype(np.int64) * (int(array.max()) + 1) + ids[keep]
    _, areas = np.unique(keys, return_counts=True)
    return 2.0 * np.sqrt(areas / np.pi)


def _summarise(diameters: np.ndarray, statistic: Statistic, what: str) -> float:
    if statistic not in ("mean", "median"):
        raise FluosegError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    if diameters.size == 0:
        raise FluosegError(f"{what} contain no objects; a diameter needs at least one annotated object")
    return float(np.mean(diameters) if statistic == "mean" else np.median(diameters))


def estimate_diameter_from_labels(labels: Any, *, statistic: Statistic = "mean") -> float:
    """Mean (or median) equivalent-circle diameter of the objects of one label image.

    This is Kromp et al.'s per-image "mean nuclear size" from which the image's rescaling
    factor is computed (:func:`scale_factor`).

    Parameters
    ----------
    labels
        Instance labels ``(Y, X)`` or ``(Z, Y, X)`` (see :func:`object_diameters`).
    statistic
        ``"mean"`` (Kromp et al.) or ``"median"`` (robust to a few fused or tiny objects).

    Returns
    -------
    float
        Diameter in pixels.

    Raises
    ------
    FluosegError
        If the image holds no object or ``statistic`` is unknown.
    """
    return _summarise(object_diameters(labels), statistic, "the labels")


def mean_object_diameter(labels_list: Any | Iterable[Any], *, statistic: Statistic = "mean") -> float:
    """Mean (or median) equivalent-circle diameter over all objects of several label images.

    Objects are pooled, so an image with many nuclei weighs more than one with few; this is
    the natural common ``target_diameter`` for a training set.

    Parameters
    ----------
    labels_list
        One label image or an iterable of them (2D or 3D each).
    statistic
        ``"mean"`` or ``"median"`` of the pooled diameters.

    Returns
    -------
    float
        Diameter in pixels.

    Raises
    ------
    FluosegError
        If no image holds an object, or an image is invalid.
    """
    if isinstance(labels_list, np.ndarray):
        labels_list = [labels_list]
    parts = [object_diameters(labels) for labels in labels_list]
    diameters = np.concatenate(parts) if parts else np.zeros(0)
    return _summarise(diameters, statistic, "the label images")


def scale_factor(object_diameter: float, target_diameter: float) -> float:
    """Zoom factor that brings objects of ``object_diameter`` to ``target_diameter``.

    Parameters
    ----------
    object_diameter
        Current object diameter in pixels (e.g. :func:`estimate_diameter_from_labels`).
    target_diameter
        Wanted diameter in pixels (e.g. :func:`mean_object_diameter` of the training set).

    Returns
    -------
    float
        ``target_diameter / object_diameter``; > 1 enlarges the image.

    Raises
    ------
    FluosegError
        If either diameter is not a finite positive number.
    """
    for name, value in (("object_diameter", object_diameter), ("target_diameter", target_diameter)):
        if not (np.isfinite(value) and value > 0):
            raise FluosegError(f"{name} must be a finite number > 0 (pixels), got {value!r}")
    return float(target_diameter) / float(object_diameter)


def scaled_shape(shape_yx: Sequence[int], factor: float) -> tuple[int, int]:
    """Spatial shape after zooming by ``factor``: ``round(n * factor)``, at least 1 pixel.

    Raises
    ------
    FluosegError
        If ``factor`` is not a finite positive number.
    """
    if not (np.isfinite(factor) and factor > 0):
        raise FluosegError(f"the scale factor must be a finite number > 0, got {factor!r}")
    return tuple(max(1, int(round(n * factor))) for n in shape_yx)  # type: ignore[return-value]


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    # Pixel-centre alignment: output pixel i covers [i, i+1) * n_in / n_out of the input.
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


def _resize_nearest(array: np.ndarray, shape_yx: Sequence[int]) -> np.ndarray:
    rows = _nearest_indices(array.shape[-2], int(shape_yx[0]))
    cols = _nearest_indices(array.shape[-1], int(shape_yx[1]))
    return array[..., rows[:, None], cols[None, :]]


def _resize_linear(array: np.ndarray, shape_yx: Sequence[int]) -> np.ndarray:
    shape_yx = tuple(int(n) for n in shape_yx)
    data = np.asarray(array, dtype=np.float32)
    flat = data.reshape((-1,) + data.shape[-2:])
    # Smoothing before shrinking avoids aliasing of textures smaller than the new pixels.
    shrink = shape_yx[0] < data.shape[-2] or shape_yx[1] < data.shape[-1]
    out = np.stack([resize(plane, shape_yx, order=1, mode="edge", anti_aliasing=shrink, preserve_range=True)
                    for plane in flat]).astype(np.float32)
    return out.reshape(data.shape[:-2] + shape_yx)


def _check_spatial(array: np.ndarray, name: str) -> None:
    if array.ndim < 2:
        raise FluosegError(f"{name} has shape {array.shape}; expected at least the spatial axes (Y, X)")


def rescale_image(image: Any, factor: float) -> np.ndarray:
    """Zoom the Y and X axes (the last two) of an image by ``factor``, bilinearly.

    Parameters
    ----------
    image
        ``(Y, X)``, ``(C, Y, X)``, ``(C, Z, Y, X)`` or any array whose last two axes are Y, X;
        leading axes (channels, Z) are not resampled.
    factor
        Zoom factor (:func:`scale_factor`); the new shape is :func:`scaled_shape`.

    Returns
    -------
    numpy.ndarray
        ``float32`` image (Gaussian anti-aliasing when shrinking).

    Raises
    ------
    FluosegError
        For fewer than two axes or a bad factor.
    """
    array = np.asarray(image)
    _check_spatial(array, "image")
    return _resize_linear(array, scaled_shape(array.shape[-2:], factor))


def rescale_labels(labels: Any, factor: float) -> np.ndarray:
    """Zoom a label image's Y and X axes by ``factor`` with nearest-neighbour sampling.

    Nearest neighbour never mixes ids; the dtype is kept. Objects much smaller than
    ``1 / factor`` pixels can vanish when shrinking.

    Parameters
    ----------
    labels
        Instance labels ``(Y, X)`` or ``(Z, Y, X)`` (Z is not resampled).
    factor
        Zoom factor; the new shape is :func:`scaled_shape`.

    Returns
    -------
    numpy.ndarray
        Labels of the new shape and the input's dtype.
    """
    array = check_label_image(labels)
    return _resize_nearest(array, scaled_shape(array.shape[-2:], factor))


def restore_shape(array: Any, shape: Sequence[int], *, labels: bool = False) -> np.ndarray:
    """Resample an array back to an exact spatial shape (undoing :func:`rescale_image`/``_labels``).

    Parameters
    ----------
    array
        Labels (``labels=True``; nearest neighbour, dtype kept) or an image/probability map
        (bilinear, float32), last two axes Y, X.
    shape
        Target shape; only its last two entries (Y, X) are used, so the original image's
        full shape may be passed.
    labels
        Whether ``array`` holds labels (or any class map that must not be interpolated).

    Returns
    -------
    numpy.ndarray
        The array with spatial shape ``shape[-2:]``.
    """
    data = np.asarray(array)
    _check_spatial(data, "array")
    if len(shape) < 2 or any(int(n) < 1 for n in shape[-2:]):
        raise FluosegError(f"shape {tuple(shape)} must end with two positive sizes (Y, X)")
    target = tuple(int(n) for n in shape[-2:])
    if labels:
        return _resize_nearest(data, target)
    return _resize_linear(data, target)
