"""Intensity normalisation with statistics of the whole sample.

The MS-ME pipeline standardises every patch with the mean and standard deviation of the
*sample* it comes from (Methods, tiling step 4): statistics of a single patch would turn a
patch of background into noise at unit variance and make neighbouring tiles disagree.
Statistics are accumulated chunk by chunk, so a lazily read image larger than memory is
never loaded whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError

METHODS = ("gaussian", "percentile")
_HISTOGRAM_BINS = 4096
"""Bins of the streamed histogram used for percentiles of float images (a documented approximation)."""


@dataclass(frozen=True)
class SampleStats:
    """Per-channel statistics of a whole sample.

    Attributes
    ----------
    mean, std
        Per channel, over every spatial position (all z planes included).
    low, high
        Per-channel percentiles (only for percentile normalisation).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: None if v is None else tuple(float(x) for x in v) for k, v in data.items()})

    @property
    def is_finite(self) -> bool:
        """False when the sample holds NaN or infinite pixels."""
        values = list(self.mean) + list(self.std)
        return bool(np.all(np.isfinite(values)))


def _chunks(image: Any, rows: int):
    """Yield ``(C, ...)`` float64 blocks of ``rows`` rows (per z plane for stacks)."""
    spatial = tuple(image.shape[1:])
    planes = [()] if len(spatial) == 2 else [(z,) for z in range(spatial[0])]
    for plane in planes:
        for y in range(0, spatial[-2], rows):
            block = np.asarray(image[(slice(None), *plane, slice(y, y + rows))], dtype=np.float64)
            yield block.reshape(block.shape[0], -1)


def _moments(image: Any, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean, M2 (Chan et al.'s parallel combination), min and max per channel."""
    channels = image.shape[0]
    count = 0
    mean = np.zeros(channels)
    m2 = np.zeros(channels)
    low = np.full(channels, np.inf)
    high = np.full(channels, -np.inf)
    for block in _chunks(image, rows):
        n = block.shape[1]
        if n == 0:
            continue
        block_mean = block.mean(axis=1)
        block_m2 = ((block - block_mean[:, None]) ** 2).sum(axis=1)
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + block_m2 + delta**2 * count * n / total
        count = total
        low = np.minimum(low, block.min(axis=1))
        high = np.maximum(high, block.max(axis=1))
    return np.asarray(count), mean, m2, np.stack([low, high])


def _percentiles(image: Any, rows: int, percentiles: tuple[float, float], bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Streamed per-channel percentiles: exact for integer images, histogram-approximate for floats."""
    channels = image.shape[0]
    integer = np.issubdtype(np.dtype(image.dtype), np.integer)
    lows, highs = np.zeros(channels), np.zeros(channels)
    for c in range(channels):
        lo, hi = bounds[0, c], bounds[1, c]
        if integer:
            offset = int(lo)
            counts = np.zeros(int(hi) - offset + 1, dtype=np.int64)
            for block in _chunks(image, rows):
                counts += np.bincount((block[c] - offset).astype(np.int64), minlength=counts.size)[: counts.size]
            edges = np.arange(counts.size + 1, dtype=np.float64) + offset - 0.5
        else:
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, _HISTOGRAM_BINS + 1)
            counts = np.zeros(_HISTOGRAM_BINS, dtype=np.int64)
            for block in _chunks(image, rows):
                counts += np.histogram(block[c], bins=edges)[0]
        cumulative = np.cumsum(counts) / max(counts.sum(), 1)
        values = []
        for p in percentiles:
            index = int(np.searchsorted(cumulative, p / 100.0, side="left"))
            index = min(index, counts.size - 1)
            values.append(edges[index] + 0.5 if integer else (edges[index] + edges[index + 1]) / 2)
        lows[c], highs[c] = values
    return lows, highs


def compute_stats(
    image: Any,
    *,
    method: str = "gaussian",
    percentiles: tuple[float, float] = (1.0, 99.8),
    chunk_rows: int = 256,
) -> SampleStats:
    """Per-channel statistics of a whole ``(C, [Z], Y, X)`` sample, read in row chunks.

    Parameters
    ----------
    image
        Array-like supporting basic slicing (numpy, zarr, lazy views).
    method
        ``"gaussian"`` (mean/std) or ``"percentile"`` (also the two percentiles).
    percentiles
        Low and high percentile for percentile normalisation.
    chunk_rows
        Rows read at a time; memory is ``C x chunk_rows x X`` values.
    """
    if method not in METHODS:
        raise FluosegError(f"unknown normalisation {method!r}; use one of {list(METHODS)}")
    count, mean, m2, bounds = _moments(image, chunk_rows)
    std = np.sqrt(m2 / max(int(count), 1))
    low = high = None
    if method == "percentile" and np.all(np.isfinite(bounds)):
        low_values, high_values = _percentiles(image, chunk_rows, percentiles, bounds)
        low, high = tuple(low_values.tolist()), tuple(high_values.tolist())
    return SampleStats(mean=tuple(mean.tolist()), std=tuple(std.tolist()), low=low, high=high)


def normalize(window: np.ndarray, stats: SampleStats, *, method: str = "gaussian",
              keep_zero_channels: bool = False) -> np.ndarray:
    """Normalise a ``(C, ...)`` window with whole-sample statistics; returns float32.

    ``gaussian``: ``(x - mean) / std``; ``percentile``: ``(x - low) / (high - low)``.
    A constant channel (std or range 0) is only shifted, never divided by zero. With
    ``keep_zero_channels`` an all-zero channel stays exactly zero, because zero is how a
    missing marker is encoded and shifting it would fake a signal.
    """
    window = np.asarray(window, dtype=np.float32)
    shape = (-1,) + (1,) * (window.ndim - 1)
    if method == "gaussian":
        offset = np.asarray(stats.mean, np.float32)
        scale = np.asarray(stats.std, np.float32)
    elif method == "percentile":
        if stats.low is None or stats.high is None:
            raise FluosegError("percentile normalisation needs statistics computed with method='percentile'")
        offset = np.asarray(stats.low, np.float32)
        scale = np.asarray(stats.high, np.float32) - offset
    else:
        raise FluosegError(f"unknown normalisation {method!r}; use one of {list(METHODS)}")
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    result = (window - offset.reshape(shape)) / scale.reshape(shape)
    if keep_zero_channels:
        empty = ~np.any(window.reshape(window.shape[0], -1), axis=1)
        result[empty] = 0.0
    return result
