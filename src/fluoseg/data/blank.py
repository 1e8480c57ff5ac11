"""Is there anything in this field of view? A noise-aware test for blank images.

Per-image normalisation stretches whatever an image holds to the range the network was
trained on: on an empty field (camera noise around a flat background, common in screens) the
noise itself then looks like texture, and an instance model finds hundreds of "objects"; the
``--diameter auto`` first pass measures those specks and zooms in on them. Before any of that,
:func:`signal_to_noise` asks whether the image holds a spot brighter than its noise allows.

The image is smoothed with a Gaussian of ``sigma`` pixels, which divides white noise by
``2 sqrt(pi) sigma`` but leaves an object larger than the kernel at its full brightness. The
noise level comes from pixel-to-pixel differences (median absolute deviation of the first
differences along X, robust to objects and to smooth background gradients). The score is
the brightest smoothed pixel above the smoothed background (5th percentile), in units of the
smoothed noise. Pure white noise scores about 6-7 on images of 0.1-10 megapixels (the
extreme of a Gaussian sample); an object as bright as 1.2 raw noise standard deviations
scores over 10 with the default ``sigma`` of 2.

The two robust statistics (noise and background level) are read from at most
``SAMPLE_PIXELS`` pixels, whole rows taken at a regular stride: on a whole slide the full
sorts took longer than the smoothing, and the score of the 67-megapixel speed mosaic moved by
0.02 %. The brightest spot is always searched in the whole plane.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLANK_SNR = 10.0
"""Default score under which an image is blank (pure noise scores about 6-7)."""

SAMPLE_PIXELS = 1 << 22
"""Most pixels the noise and background statistics of one plane are computed from."""

_MAD_TO_SD = 1.4826  # standard deviation of a normal sample per median absolute deviation


def _sampled_rows(plane: np.ndarray) -> np.ndarray:
    """Every k-th row of a 2D plane, k the smallest stride that keeps at most ``SAMPLE_PIXELS`` pixels."""
    return plane[:: max(1, -(-plane.size // SAMPLE_PIXELS))]


def _noise_sd(plane: np.ndarray) -> float:
    """White-noise standard deviation of a 2D plane from its first differences along X."""
    differences = np.diff(_sampled_rows(plane), axis=-1).ravel()
    mad = float(np.median(np.abs(differences - np.median(differences))))
    return _MAD_TO_SD * mad / np.sqrt(2.0)  # a difference of two pixels has twice the variance


def signal_to_noise(image: Any, *, sigma: float = 2.0) -> float:
    """The brightest smoothed spot above background, in noise standard deviations.

    Parameters
    ----------
    image
        ``(C, [Z], Y, X)`` array; each 2D plane of each channel is scored and the best one
        counts (an object in any channel or slice makes the image non-blank).
    sigma
        Gaussian smoothing in pixels: objects should be larger than about ``2 sigma``.

    Returns
    -------
    float
        ``inf`` for a noise-free image with structure, 0 for a constant one.
    """
    from scipy import ndimage  # here, so that the command line reads BLANK_SNR without scipy

    array = np.asarray(image, dtype=np.float32)
    planes = array.reshape((-1,) + array.shape[-2:])
    best = 0.0
    for plane in planes:
        smoothed = ndimage.gaussian_filter(plane, sigma)
        peak = float(smoothed.max() - np.percentile(_sampled_rows(smoothed), 5))
        if peak <= 0:
            continue
        noise = _noise_sd(plane) / (2.0 * np.sqrt(np.pi) * sigma)
        best = max(best, peak / noise if noise > 0 else np.inf)
    return best


def is_blank(image: Any, *, threshold: float = BLANK_SNR, sigma: float = 2.0) -> bool:
    """Whether no plane of ``image`` holds a spot above ``threshold`` (see :func:`signal_to_noise`)."""
    return signal_to_noise(image, sigma=sigma) < threshold
