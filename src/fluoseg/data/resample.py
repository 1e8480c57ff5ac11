"""Resampling to a working pixel size and back (MS-ME Methods, tiling step 1).

Images are interpolated linearly, with a Gaussian anti-aliasing filter when shrunk; masks
and label images use nearest-neighbour so classes and object ids stay exact. Going back
always targets the exact original shape, so predictions line up pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from fluoseg.errors import FluosegError

KINDS = ("image", "mask", "labels", "probabilities")


def scale_factors(pixel_size: Sequence[float], target_pixel_size: float | Sequence[float]) -> tuple[float, ...]:
    """Zoom factor per spatial axis: ``pixel_size / target`` (> 1 enlarges the image)."""
    sizes = tuple(float(p) for p in pixel_size)
    targets = (float(target_pixel_size),) * len(sizes) if np.isscalar(target_pixel_size) else tuple(target_pixel_size)  # type: ignore[arg-type]
    if len(targets) != len(sizes) or any(v <= 0 for v in sizes + targets):
        raise FluosegError(f"pixel sizes must be positive and per axis, got {sizes} and target {targets}")
    return tuple(p / t for p, t in zip(sizes, targets))


def _output_shape(spatial: Sequence[int], factors: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * f))) for n, f in zip(spatial, factors))


def _zoom_to(array: np.ndarray, shape: Sequence[int], *, order: int, antialias: bool) -> np.ndarray:
    """Resample one spatial array to ``shape`` with pixel centres aligned (grid_mode)."""
    array = np.asarray(array)
    factors = [s / n for s, n in zip(shape, array.shape)]
    if antialias:
        sigma = [max((1.0 / f - 1.0) / 2.0, 0.0) if f < 1 else 0.0 for f in factors]
        if any(sigma):
            array = ndimage.gaussian_filter(array.astype(np.float32), sigma)
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def _per_channel(array: np.ndarray, shape: Sequence[int], *, order: int, antialias: bool, dtype) -> np.ndarray:
    out = np.empty((array.shape[0],) + tuple(shape), dtype=dtype)
    for c in range(array.shape[0]):
        out[c] = _zoom_to(array[c].astype(np.float32) if order > 0 else array[c], shape, order=order, antialias=antialias)
    return out


def resample_image(image: np.ndarray, factors: Sequence[float], *, order: int = 1) -> np.ndarray:
    """Resample a ``(C, [Z], Y, X)`` image by ``factors`` (one per spatial axis); float32."""
    shape = _output_shape(image.shape[1:], factors)
    return _per_channel(np.asarray(image), shape, order=order, antialias=True, dtype=np.float32)


def resample_mask(masks: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Resample ``(n, [Z], Y, X)`` 0/1 masks: linear interpolation thresholded at 0.5.

    Thresholding the interpolated mask keeps the area fraction closer than nearest-neighbour
    when shrinking thin structures, and the result stays strictly binary.
    """
    shape = _output_shape(masks.shape[1:], factors)
    return (_per_channel(np.asarray(masks, np.float32), shape, order=1, antialias=False, dtype=np.float32) >= 0.5).astype(np.uint8)


def resample_labels(labels: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Resample a ``([Z], Y, X)`` instance label image with nearest neighbour (ids preserved)."""
    shape = _output_shape(labels.shape, factors)
    return _zoom_to(labels, shape, order=0, antialias=False).astype(labels.dtype)


def resample_to_shape(array: np.ndarray, shape: Sequence[int], *, kind: str = "image") -> np.ndarray:
    """Resample back to an exact spatial ``shape``.

    ``kind`` is ``"image"`` or ``"probabilities"`` (channel-first, linear), ``"mask"``
    (channel-first, thresholded) or ``"labels"`` (no channel axis, nearest).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = tuple(int(s) for s in shape)
    if kind == "labels":
        return _zoom_to(array, shape, order=0, antialias=False).astype(array.dtype)
    if kind == "mask":
        return (_per_channel(np.asarray(array, np.float32), shape, order=1, antialias=False, dtype=np.float32) >= 0.5).astype(np.uint8)
    return _per_channel(np.asarray(array), shape, order=1, antialias=True, dtype=np.float32)
