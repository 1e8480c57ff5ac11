"""A simulator of 3D fluorescence nuclei stacks with instance labels.

Nuclei are ellipsoids with random semi-axes, a random orientation in 3D and a random
brightness with a smooth chromatin texture. They are placed without overlapping (they may
touch), imaged through a blurring optics whose point spread function is elongated along
the optical axis, with background and shot/read noise. Confocal stacks are sampled more
coarsely along z than in-plane: ``z_step`` is the distance between slices in in-plane
pixels, and both the labels and the image are sampled on that anisotropic grid, so a
sphere of radius r spans about ``2 r / z_step`` slices.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from fluoseg.data.synth.nuclei import camera_noise, check_nuclei_arguments
from fluoseg.errors import FluosegError

__all__ = ["SimulatedNuclei3D", "simulate_nuclei_3d"]

_FILL_FRACTION = 0.15
"""Fraction of the volume covered by nuclei when ``n_nuclei`` is not given."""
_AXIAL_ELONGATION = 2.5
"""Axial / lateral width of a confocal point spread function."""


class SimulatedNuclei3D(NamedTuple):
    """A simulated stack; unpacks as ``image, labels, pixel_size = simulate_nuclei_3d(...)``.

    Attributes
    ----------
    image
        ``(1, Z, Y, X)`` uint8 or uint16 nuclear stain.
    labels
        ``(Z, Y, X)`` int32 instance labels, 0 background, ids ``1..N`` without gaps.
    pixel_size
        ``(z, y, x)`` in µm.
    """

    image: np.ndarray
    labels: np.ndarray
    pixel_size: tuple[float, float, float]


def _paint_ellipsoid(labels: np.ndarray, centre: np.ndarray, axes: np.ndarray, rotation: np.ndarray,
                     z_step: float, label: int) -> bool:
    """Draw one ellipsoid (physical units: in-plane pixels) if it overlaps no other nucleus."""
    reach = float(axes.max())
    low = np.floor([(centre[0] - reach) / z_step, centre[1] - reach, centre[2] - reach]).astype(int)
    high = np.ceil([(centre[0] + reach) / z_step, centre[1] + reach, centre[2] + reach]).astype(int) + 1
    low = np.maximum(low, 0)
    high = np.minimum(high, labels.shape)
    if np.any(high <= low):
        return False
    box = tuple(slice(a, b) for a, b in zip(low, high))
    grid = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(low, high)), indexing="ij")
    offsets = np.stack([grid[0] * z_step - centre[0], grid[1] - centre[1], grid[2] - centre[2]], axis=-1)
    # Coordinates in the ellipsoid's own frame: rotation columns are its axes.
    local = offsets @ rotation.astype(np.float32)
    inside = ((local / axes.astype(np.float32)) ** 2).sum(axis=-1) <= 1.0
    if not inside.any() or np.any(labels[box][inside]):
        return False
    labels[box][inside] = label
    return True


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    try:
        depth, height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise FluosegError(f"shape must be (Z, Y, X), got {shape!r}") from None
    if depth < 1:
        raise FluosegError(f"shape {shape!r} has no slices")
    return depth, height, width


def simulate_nuclei_3d(
    shape: tuple[int, int, int] = (16, 96, 96),
    *,
    n_nuclei: int | None = None,
    radius_range: tuple[float, float] = (4.0, 8.0),
    z_step: float = 2.0,
    pixel_size_yx: float = 0.5,
    seed: int = 0,
    dtype: type | np.dtype = np.uint16,
) -> SimulatedNuclei3D:
    """Simulate a 3D nuclei stack with instance labels.

    Parameters
    ----------
    shape
        ``(Z, Y, X)`` of the stack.
    n_nuclei
        Nuclei to place. ``None``: enough to fill about 15 % of the volume. Fewer are placed
        when no free position is found.
    radius_range
        Range of the longest semi-axis in in-plane pixels; the other two are 0.6-1 times it.
    z_step
        Slice spacing in in-plane pixels (anisotropy; 1 = cubic voxels).
    pixel_size_yx
        In-plane pixel size in µm; the z size is ``z_step * pixel_size_yx``.
    seed
        The same seed gives the same stack.
    dtype
        ``numpy.uint16`` (nuclei around 2000-3600) or ``numpy.uint8`` (around 130-230).

    Returns
    -------
    SimulatedNuclei3D
        ``image`` ``(1, Z, Y, X)``, ``labels`` ``(Z, Y, X)`` int32, ``pixel_size`` ``(z, y, x)``.

    Raises
    ------
    FluosegError
        For a bad shape, radius range, z step, count or dtype.
    """
    depth, height, width = _check_shape(shape)
    low, high, out_dtype = check_nuclei_arguments((height, width), radius_range, n_nuclei, dtype)
    if not (np.isfinite(z_step) and z_step > 0):
        raise FluosegError(f"z_step must be a positive number of in-plane pixels, got {z_step!r}")
    rng = np.random.default_rng(seed)
    extent = np.array([depth * z_step, height, width], dtype=np.float64)
    if n_nuclei is None:
        mean_volume = 4 / 3 * np.pi * ((low + high) / 2) ** 3 * 0.8**2
        n_nuclei = max(1, int(round(_FILL_FRACTION * float(np.prod(extent)) / mean_volume)))

    labels = np.zeros((depth, height, width), np.int32)
    placed = 0
    for _ in range(n_nuclei):
        longest = rng.uniform(low, high)
        axes = np.sort(longest * np.concatenate([[1.0], rng.uniform(0.6, 1.0, 2)]))[::-1]
        rotation = Rotation.random(random_state=rng).as_matrix()
        for _attempt in range(20):
            centre = rng.uniform(0, 1, 3) * extent
            if _paint_ellipsoid(labels, centre, axes, rotation, z_step, placed + 1):
                placed += 1
                break

    # Drop slivers cut by the stack's faces and renumber without gaps.
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(8.0, 0.2 * 4 / 3 * np.pi * low**3 / z_step)
    keep[0] = True
    lookup = np.cumsum(keep).astype(np.int32) - 1
    lookup[~keep] = 0
    labels = lookup[labels]

    brightness = np.concatenate([[0.0], rng.uniform(0.55, 1.0, int(labels.max()))]).astype(np.float32)
    texture = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32),
                                  (1.2 / z_step, 1.2, 1.2))
    texture /= max(float(texture.std()), 1e-6)
    signal = brightness[labels] * (1.0 + 0.15 * texture) * (labels > 0)
    lateral = rng.uniform(0.8, 1.3)
    signal = ndi.gaussian_filter(signal, (lateral * _AXIAL_ELONGATION / z_step, lateral, lateral))
    peak = 230.0 if out_dtype == np.uint8 else 3600.0
    clean = peak * (rng.uniform(0.03, 0.08) + signal)
    gain = peak / 230.0
    image = camera_noise(clean, rng, gain=gain, read_noise=(2.0, 4.0), dtype=out_dtype)
    size = float(pixel_size_yx)
    return SimulatedNuclei3D(image=image[None], labels=labels, pixel_size=(z_step * size, size, size))
