"""Random building blocks shared by the simulators: smooth fields and blurred point sources.

numpy/scipy only; every function draws from the generator it is given, so a simulator
that passes its own seeded generator stays deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["point_spots", "smooth_field"]


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, *,
                 centred: bool = False) -> np.ndarray:
    """Gaussian random field of unit standard deviation and correlation length ~``sigma``.

    Parameters
    ----------
    rng
        Source of the white noise that is smoothed.
    shape
        ``(Y, X)`` of the field.
    sigma
        Gaussian smoothing in pixels.
    centred
        Subtract the field's mean over the image. Without it, a ``sigma`` comparable to
        the image size leaves a large common offset (the field varies little across the
        image, and scaling to unit deviation magnifies its level too).

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` float32 field of standard deviation 1 (mean 0 if ``centred``).
    """
    # Smooth fields are made on a grid ``step`` times coarser and interpolated up: direct
    # Gaussian filtering with a large sigma costs most of the simulation time otherwise.
    step = max(1, int(sigma // 3))
    small_sigma = sigma / step
    # Filter a padded noise image and crop it: the default mirror boundary would create
    # structures that meet the image border at right angles.
    pad = int(np.ceil(2 * small_sigma))
    small_shape = (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1)
    noise = rng.standard_normal((small_shape[0] + 2 * pad, small_shape[1] + 2 * pad)).astype(np.float32)
    field = ndi.gaussian_filter(noise, small_sigma, truncate=3.0)
    field = field[pad : pad + small_shape[0], pad : pad + small_shape[1]]
    if step > 1:
        field = ndi.zoom(field, step, order=1)
    field = field[: shape[0], : shape[1]]
    if centred:
        field = field - field.mean()
    return field / max(float(field.std()), 1e-6)


def point_spots(rng: np.random.Generator, where: np.ndarray, density: float, sigma: float,
                brightness: tuple[float, float] = (0.6, 1.0)) -> np.ndarray:
    """Blurred point sources with random brightness at random allowed positions.

    Parameters
    ----------
    rng
        Source of the positions and brightnesses.
    where
        ``(Y, X)`` bool, pixels where a spot may be centred.
    density
        Probability that an allowed pixel holds a spot.
    sigma
        Gaussian radius of a spot in pixels.
    brightness
        Range of the spot amplitudes.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` float32; an isolated spot peaks at its amplitude.
    """
    seeds = (rng.random(where.shape) < density) & where
    amplitude = np.zeros(where.shape, np.float32)
    amplitude[seeds] = rng.uniform(*brightness, int(seeds.sum()))
    return ndi.gaussian_filter(amplitude, sigma) * np.float32(2 * np.pi * sigma**2)
