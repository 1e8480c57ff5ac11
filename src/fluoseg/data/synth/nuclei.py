"""A fast simulator of fluorescence nuclei images with instance labels.

Nuclei are slightly irregular ellipses with a smooth chromatin texture, imaged through a
blurring optics with background, uneven illumination and shot/read noise. Some nuclei are
placed touching a neighbour, so that separating instances (border classes, distance
transforms, watershed) matters: a plain foreground threshold merges them. The labels are
the exact instance masks before blurring.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from fluoseg.errors import FluosegError

__all__ = ["SimulatedNuclei", "camera_noise", "check_nuclei_arguments", "simulate_nuclei", "touching_pairs"]

_FILL_FRACTION = 0.22
"""Fraction of the image covered by nuclei when ``n_nuclei`` is not given."""
_TOUCHING_SHARE = 0.35
"""Share of nuclei placed against an existing one when ``touching=True``."""


class SimulatedNuclei(NamedTuple):
    """A simulated nuclei image; unpacks as ``image, labels = simulate_nuclei(...)``.

    Attributes
    ----------
    image
        ``(1, Y, X)`` uint8 or uint16 nuclear stain.
    labels
        ``(Y, X)`` int32 instance labels, 0 background, ids ``1..N`` without gaps.
    """

    image: np.ndarray
    labels: np.ndarray


def _ellipse(rng: np.random.Generator, radius_range: tuple[float, float]
             ) -> tuple[np.ndarray, float]:
    """Boolean footprint of one irregular ellipse (centred in its box) and its mean radius."""
    major = rng.uniform(*radius_range)
    minor = max(radius_range[0] * 0.8, major * rng.uniform(0.6, 1.0))
    angle = rng.uniform(0, np.pi)
    half = int(np.ceil(major * 1.15)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    u = yy * np.cos(angle) + xx * np.sin(angle)
    v = -yy * np.sin(angle) + xx * np.cos(angle)
    # Low-order harmonics of the polar angle make the outline irregular, like real nuclei.
    phi = np.arctan2(yy, xx)
    wobble = (1.0 + rng.uniform(0, 0.07) * np.cos(2 * phi + rng.uniform(0, 2 * np.pi))
              + rng.uniform(0, 0.05) * np.cos(3 * phi + rng.uniform(0, 2 * np.pi)))
    footprint = (u / major) ** 2 + (v / minor) ** 2 <= wobble**2
    return footprint, float(np.sqrt(major * minor))


def _paste(labels: np.ndarray, footprint: np.ndarray, centre: tuple[int, int], label: int, *,
           gap: int, min_free: float) -> bool:
    """Draw ``footprint`` at ``centre`` on free pixels; False (nothing drawn) if it does not fit.

    With ``gap > 0`` no footprint pixel may come within ``gap`` pixels of another nucleus
    (an isolated nucleus). With ``gap == 0`` the footprint is clipped by the nuclei it
    overlaps, so it touches them along a shared boundary. Either way at least ``min_free``
    of the footprint must land on free pixels inside the image.
    """
    half = footprint.shape[0] // 2
    y0, x0 = centre[0] - half, centre[1] - half
    ys = slice(max(y0, 0), min(y0 + footprint.shape[0], labels.shape[0]))
    xs = slice(max(x0, 0), min(x0 + footprint.shape[1], labels.shape[1]))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return False
    shape = footprint[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    if gap > 0:
        # Look ``gap`` pixels beyond the box for neighbours that would come too close.
        gy, gx = max(ys.start - gap, 0), max(xs.start - gap, 0)
        region = labels[gy : ys.stop + gap, gx : xs.stop + gap] != 0
        near = ndi.binary_dilation(region, iterations=gap) if region.any() else region
        near = near[ys.start - gy : ys.start - gy + shape.shape[0], xs.start - gx : xs.start - gx + shape.shape[1]]
        if np.any(near & shape):
            return False
        free = shape
    else:
        free = shape & (labels[ys, xs] == 0)
    if free.sum() < min_free * footprint.sum():
        return False
    # Keep only the largest connected part, so every label is one object.
    parts, n = ndi.label(free)
    if n > 1:
        free = parts == (np.argmax(np.bincount(parts.ravel())[1:]) + 1)
    labels[ys, xs][free] = label
    return True


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct labels ``(a, b)``, ``a < b``, whose pixels are 4-neighbours."""
    pairs: set[tuple[int, int]] = set()
    for a, b in ((labels[1:, :], labels[:-1, :]), (labels[:, 1:], labels[:, :-1])):
        contact = (a != b) & (a != 0) & (b != 0)
        low = np.minimum(a[contact], b[contact])
        high = np.maximum(a[contact], b[contact])
        pairs.update(zip(low.tolist(), high.tolist()))
    return pairs


def check_nuclei_arguments(shape: tuple[int, ...], radius_range: tuple[float, float], n_nuclei: int | None,
                           dtype: type | np.dtype) -> tuple[float, float, np.dtype]:
    """Validate the arguments the 2D and 3D nuclei simulators share.

    Returns
    -------
    tuple
        ``(low, high, dtype)``: the radius range as floats and the output dtype.

    Raises
    ------
    FluosegError
        For a radius range that is not ``1 <= low <= high``, in-plane axes (the last two of
        ``shape``) too small for the largest nucleus, a negative count, or a dtype other
        than uint8/uint16.
    """
    try:
        low, high = (float(r) for r in radius_range)
    except (TypeError, ValueError):
        low, high = 0.0, -1.0
    if not 1.0 <= low <= high:
        raise FluosegError(f"radius_range must be (low, high) with 1 <= low <= high, got {radius_range!r}")
    if min(shape[-2:]) < 2 * high + 2:
        raise FluosegError(f"shape {tuple(shape)!r} is too small for nuclei of radius up to {high}")
    if n_nuclei is not None and n_nuclei < 0:
        raise FluosegError(f"n_nuclei must be >= 0, got {n_nuclei}")
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise FluosegError(f"dtype must be uint8 or uint16, got {out_dtype}")
    return low, high, out_dtype


def camera_noise(clean: np.ndarray, rng: np.random.Generator, *, gain: float,
                 read_noise: tuple[float, float], dtype: np.dtype) -> np.ndarray:
    """Add shot noise (variance ``0.8 * gain * signal``) and read noise, round and clip to ``dtype``.

    The read noise standard deviation is drawn from ``read_noise`` (in units of ``gain``).
    """
    noise = rng.standard_normal(clean.shape).astype(np.float32) * np.sqrt(
        (rng.uniform(*read_noise) * gain) ** 2 + 0.8 * gain * clean)
    return np.clip(np.rint(clean + noise), 0, np.iinfo(dtype).max).astype(dtype)


def simulate_nuclei(
    shape: tuple[int, int] = (128, 128),
    *,
    n_nuclei: int | None = None,
    radius_range: tuple[float, float] = (4.0, 10.0),
    touching: bool = True,
    seed: int = 0,
    dtype: type | np.dtype = np.uint8,
) -> SimulatedNuclei:
    """Simulate a fluorescence nuclei image with instance labels.

    Parameters
    ----------
    shape
        ``(Y, X)`` of the image.
    n_nuclei
        Number of nuclei to place. ``None``: enough to cover about 22 % of the image.
        Fewer are placed when the image is full.
    radius_range
        Range of the major semi-axis in pixels (minor axes are 0.6-1 times it).
    touching
        Place about a third of the nuclei right against a neighbour (they share a
        boundary but keep distinct labels). ``False`` keeps at least 2 px between nuclei.
    seed
        The same seed gives the same image.
    dtype
        ``numpy.uint8`` (bright nuclei around 180-230) or ``numpy.uint16`` (a 12-bit-like
        range: bright nuclei around 2800-3600).

    Returns
    -------
    SimulatedNuclei
        ``image`` ``(1, Y, X)`` and ``labels`` ``(Y, X)`` int32 with ids ``1..N``.

    Raises
    ------
    FluosegError
        For a bad shape, radius range, count or dtype.

    Examples
    --------
    >>> image, labels = simulate_nuclei((64, 64), seed=1)
    >>> image.shape, labels.dtype
    ((1, 64, 64), dtype('int32'))
    """
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise FluosegError(f"shape must be (Y, X), got {shape!r}") from None
    low, high, out_dtype = check_nuclei_arguments((height, width), radius_range, n_nuclei, dtype)
    rng = np.random.default_rng(seed)
    if n_nuclei is None:
        mean_area = np.pi * ((low + high) / 2) ** 2 * 0.8
        n_nuclei = max(1, int(round(_FILL_FRACTION * height * width / mean_area)))

    labels = np.zeros((height, width), np.int32)
    centres: list[tuple[np.ndarray, float]] = []
    placed = 0
    for _ in range(n_nuclei):
        footprint, radius = _ellipse(rng, (low, high))
        for _attempt in range(30):
            if touching and centres and rng.random() < _TOUCHING_SHARE:
                # Against a random earlier nucleus: centres a bit closer than the radii sum,
                # so the two outlines meet along a short shared boundary.
                other, other_radius = centres[int(rng.integers(len(centres)))]
                angle = rng.uniform(0, 2 * np.pi)
                offset = (other_radius + radius) * rng.uniform(0.75, 0.95)
                centre = np.round(other + offset * np.array([np.sin(angle), np.cos(angle)])).astype(int)
                ok = _paste(labels, footprint, (int(centre[0]), int(centre[1])), placed + 1, gap=0, min_free=0.7)
            else:
                centre = np.array([rng.integers(0, height), rng.integers(0, width)])
                ok = _paste(labels, footprint, (int(centre[0]), int(centre[1])), placed + 1, gap=2, min_free=0.5)
            if ok:
                placed += 1
                centres.append((centre.astype(float), radius))
                break

    # Drop slivers cut by the border, and renumber without gaps.
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes < max(8.0, 0.25 * np.pi * low**2))
    small = small[small > 0]
    if small.size:
        labels[np.isin(labels, small)] = 0
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    labels = lookup[labels]

    # Intensity: per-nucleus brightness, chromatin texture, slightly darker rims (the
    # nucleus is thinner there), optical blur, background and noise.
    brightness = np.concatenate([[0.0], rng.uniform(0.45, 1.0, ids.size)]).astype(np.float32)
    texture = ndi.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 1.2)
    texture /= max(float(texture.std()), 1e-6)
    inside = labels > 0
    # Depth below each nucleus's own outline, also where it touches another nucleus, so
    # touching nuclei show the faint dip between them that real ones do.
    outline = np.zeros_like(inside)
    outline[1:, :] |= labels[1:, :] != labels[:-1, :]
    outline[:-1, :] |= labels[:-1, :] != labels[1:, :]
    outline[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    outline[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    depth = ndi.distance_transform_edt(~(outline & inside)).astype(np.float32)
    rim = np.clip(depth / 3.0, 0.0, 1.0)
    signal = brightness[labels] * (0.75 + 0.25 * rim) * (1.0 + 0.18 * texture) * inside
    signal = ndi.gaussian_filter(signal, rng.uniform(0.8, 1.4))
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, 2)
    illumination = 1.0 + tilt[0] * (yy / height - 0.5) + tilt[1] * (xx / width - 0.5)
    peak = 180.0 if out_dtype == np.uint8 else 2800.0
    background = rng.uniform(0.03, 0.1) * peak
    clean = (background + peak * signal) * illumination
    gain = peak / 180.0  # shot noise in counts scales with the intensity units
    image = camera_noise(clean, rng, gain=gain, read_noise=(2.0, 5.0), dtype=out_dtype)
    return SimulatedNuclei(image=image[None], labels=labels.astype(np.int32))
