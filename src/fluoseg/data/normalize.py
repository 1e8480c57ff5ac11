"""Intensity normalisation with statistics of the whole sample.

The MS-ME pipeline standardises every patch with the mean and standard deviation of the
*sample* it comes from (Methods, "Tiling strategy", step 4). Statistics of a single patch
would stretch a patch of pure background into unit-variance noise, erase the brightness
differences the network needs (a bright vessel wall and a dim one become alike) and make
neighbouring tiles disagree at their seams.

Statistics are accumulated chunk by chunk along Y (and Z), so a lazily read image (zarr,
HDF5, a memory map) larger than memory is never loaded whole:

- mean and standard deviation use float64 accumulators merged with Chan et al.'s parallel
  algorithm, which stays accurate when the mean is large compared with the spread;
- percentiles are exact for 8- and 16-bit integer images (and any integer image whose value
  ranges, summed over channels, fit in :data:`EXACT_RANGE_LIMIT` bins): a streamed
  histogram of every value gives the same result as ``np.percentile`` with numpy's
  default ``method="linear"``;
- for float images (and integers with a wider range) percentiles come from a streamed
  histogram of :data:`FLOAT_HISTOGRAM_BINS` bins between the streamed minimum and maximum,
  assuming values spread evenly inside a bin. The error is at most one bin width,
  ``(max - min) / FLOAT_HISTOGRAM_BINS``; it needs a second pass over the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import numpy as np

from fluoseg.errors import FluosegError

__all__ = [
    "METHODS",
    "DEFAULT_PERCENTILES",
    "FLOAT_HISTOGRAM_BINS",
    "EXACT_RANGE_LIMIT",
    "SampleStats",
    "compute_stats",
    "normalize",
    "standardize",
]

NormalizationName = Literal["gaussian", "percentile"]
METHODS: tuple[str, ...] = get_args(NormalizationName)
DEFAULT_PERCENTILES = (1.0, 99.8)
FLOAT_HISTOGRAM_BINS = 1 << 16
"""Bins of the streamed histogram behind approximate (float) percentiles."""
EXACT_RANGE_LIMIT = 1 << 22
"""Integer images whose value ranges (summed over channels) fit in this many bins get exact
percentiles; the histogram then takes ``8 x EXACT_RANGE_LIMIT`` bytes (32 MiB)."""
_CHUNK_VALUES = 1 << 22
"""Values read per chunk when ``chunk_rows`` is not given (32 MiB as float64)."""


@dataclass(frozen=True)
class SampleStats:
    """Per-channel intensity statistics of one whole sample.

    Every value is a tuple with one float per channel, so the object is immutable,
    comparable, and :meth:`to_dict` is directly JSON-able.

    Attributes
    ----------
    mean, std
        Mean and (population) standard deviation over every spatial position, z included.
    low, high
        Values at the ``percentiles`` levels, or ``None`` when not computed.
    percentiles
        The two percentile levels (0-100) that ``low`` and ``high`` belong to.
    minimum, maximum
        Smallest and largest value per channel.
    count
        Number of values per channel (the spatial size of the sample).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    percentiles: tuple[float, float] | None = None
    minimum: tuple[float, ...] | None = None
    maximum: tuple[float, ...] | None = None
    count: int = 0

    @property
    def n_channels(self) -> int:
        """Number of channels described."""
        return len(self.mean)

    @property
    def is_finite(self) -> bool:
        """False when the sample holds NaN or infinite pixels (its statistics are then unusable)."""
        values = [v for v in (self.mean, self.std, self.low, self.high) if v is not None]
        return bool(all(np.all(np.isfinite(v)) for v in values))

    @property
    def zero_channels(self) -> np.ndarray:
        """``(C,)`` bool: channels that are exactly zero everywhere in the sample (missing markers)."""
        if self.minimum is None or self.maximum is None:
            return np.zeros(self.n_channels, bool)
        return (np.asarray(self.minimum) == 0) & (np.asarray(self.maximum) == 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists of floats, ``None`` for what was not computed)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleStats:
        """Inverse of :meth:`to_dict`; missing optional keys take their defaults.

        Raises
        ------
        FluosegError
            When ``mean`` or ``std`` is missing or a key is unknown.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "mean" not in data or "std" not in data:
            raise FluosegError(f"normalisation statistics need 'mean' and 'std' and accept only {sorted(known)}; "
                               f"got keys {sorted(data)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "count":
                values[key] = int(value)
            else:
                values[key] = None if value is None else tuple(float(v) for v in value)
        return cls(**values)


def _auto_rows(image: Any, row_values: int) -> int:
    """Rows per chunk: about ``_CHUNK_VALUES`` values, a multiple of the storage chunk height."""
    rows = max(1, _CHUNK_VALUES // max(row_values, 1))
    chunks = getattr(image, "chunks", None)
    # Reading whole storage chunks avoids decompressing the same zarr/HDF5 chunk repeatedly.
    if isinstance(chunks, tuple) and len(chunks) == len(image.shape) and isinstance(chunks[-2], int):
        height = max(int(chunks[-2]), 1)
        rows = max(height, rows // height * height)
    return rows


def _blocks(image: Any, rows: int) -> Iterator[np.ndarray]:
    """Yield ``(C, n)`` blocks of the sample, ``rows`` rows (of one or more z planes) at a time."""
    spatial = tuple(image.shape[1:])
    height = spatial[-2]
    if len(spatial) == 2:
        for y in range(0, height, rows):
            block = np.asarray(image[:, y : y + rows])
            yield block.reshape(block.shape[0], -1)
        return
    if rows >= height:
        planes = max(1, rows // height)  # whole planes fit: read several at once
        for z in range(0, spatial[0], planes):
            block = np.asarray(image[:, z : z + planes])
            yield block.reshape(block.shape[0], -1)
        return
    for z in range(spatial[0]):
        for y in range(0, height, rows):
            block = np.asarray(image[:, z, y : y + rows])
            yield block.reshape(block.shape[0], -1)


class _Moments:
    """Count, mean, sum of squared deviations (M2), min and max per channel, merged chunk by chunk."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)
        self.minimum = np.full(channels, np.inf)
        self.maximum = np.full(channels, -np.inf)

    def add(self, block: np.ndarray) -> None:
        n = block.shape[1]
        if n == 0:
            return
        values = block.astype(np.float64, copy=False)
        block_mean = values.mean(axis=1)
        block_m2 = np.square(values - block_mean[:, None]).sum(axis=1)
        # Chan, Golub & LeVeque's pairwise update: no catastrophic cancellation of sum(x^2) - n*mean^2.
        total = self.count + n
        delta = block_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + block_m2 + delta**2 * (self.count * n / total)
        self.count = total
        # NaN must propagate to min/max too, so the statistics read as not finite.
        self.minimum = np.minimum(self.minimum, values.min(axis=1))
        self.maximum = np.maximum(self.maximum, values.max(axis=1))


def _rank_values(counts: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Index of the histogram bin holding each 0-based rank of the sorted values."""
    return np.searchsorted(np.cumsum(counts), ranks, side="right")


def _linear_percentiles(value_at_rank, total: int, levels: tuple[float, float]) -> list[float]:
    """numpy's default ("linear") percentile from a function giving the value of a rank."""
    out = []
    for q in levels:
        h = (total - 1) * q / 100.0
        k = int(np.floor(h))
        frac = h - k
        below = value_at_rank(k)
        above = value_at_rank(min(k + 1, total - 1))
        out.append(float(below + frac * (above - below)) if frac else float(below))
    return out


def _exact_percentiles(counts: np.ndarray, offset: int, levels: tuple[float, float]) -> list[float]:
    """Exact percentiles from a histogram with one bin per integer value (bin i is ``offset + i``)."""
    total = int(counts.sum())
    return _linear_percentiles(lambda r: float(offset + _rank_values(counts, r)), total, levels)


def _approximate_percentiles(counts: np.ndarray, low: float, high: float,
                             levels: tuple[float, float]) -> list[float]:
    """Percentiles from a fine histogram on ``[low, high]``; values assumed evenly spread in a bin."""
    total = int(counts.sum())
    if high <= low:
        return [float(low)] * len(levels)
    width = (high - low) / counts.size
    cumulative = np.cumsum(counts)

    def value(rank: int) -> float:
        b = int(np.searchsorted(cumulative, rank, side="right"))
        before = cumulative[b] - counts[b]
        return low + (b + (rank - before + 0.5) / counts[b]) * width

    return _linear_percentiles(value, total, levels)


def _check_image(image: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in getattr(image, "shape", ()))
    if len(shape) not in (3, 4) or 0 in shape:
        raise FluosegError("statistics need a non-empty channel-first (C, Y, X) or (C, Z, Y, X) image, "
                           f"got shape {shape}")
    return shape


def _check_levels(percentiles: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise FluosegError(f"percentiles must be two numbers (low, high), got {percentiles!r}") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise FluosegError(f"percentiles must satisfy 0 <= low < high <= 100, got ({lo}, {hi})")
    return lo, hi


def compute_stats(
    image: Any,
    *,
    method: str = "gaussian",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    chunk_rows: int | None = None,
) -> SampleStats:
    """Per-channel statistics of a whole ``(C, Y, X)`` or ``(C, Z, Y, X)`` sample, streamed.

    Parameters
    ----------
    image
        Any array-like with ``shape``, ``dtype`` and basic slicing (numpy, zarr, h5py,
        memory maps). It is read ``chunk_rows`` rows (of one z plane, or of several whole
        planes when they fit) at a time and never loaded whole.
    method
        ``"gaussian"``: mean and standard deviation (always computed). ``"percentile"``:
        also the two ``percentiles``, which takes a second pass for float images.
    percentiles
        Low and high percentile levels (0-100) for percentile normalisation.
    chunk_rows
        Rows read at a time; memory is about ``8 x C x chunk_rows x X`` bytes. ``None``
        picks about 4 M values per read, rounded to whole storage chunks of zarr/HDF5.

    Returns
    -------
    SampleStats
        ``low``/``high`` are set only for ``method="percentile"``. A sample with NaN or
        infinite pixels gives statistics whose :attr:`SampleStats.is_finite` is False.

    Raises
    ------
    FluosegError
        For an unknown method, bad percentile levels, or an image that is not channel-first 3D/4D.

    Notes
    -----
    Percentiles follow numpy's default (``method="linear"``). They are exact for 8- and
    16-bit images and for integer images whose value ranges, summed over channels, fit in
    :data:`EXACT_RANGE_LIMIT` bins;
    otherwise they are approximated to within ``(max - min) / FLOAT_HISTOGRAM_BINS``.
    """
    if method not in METHODS:
        raise FluosegError(f"unknown normalisation {method!r}; use one of {list(METHODS)}")
    levels = _check_levels(percentiles)
    shape = _check_image(image)
    channels = shape[0]
    if chunk_rows is None:
        chunk_rows = _auto_rows(image, channels * shape[-1])
    if int(chunk_rows) < 1:
        raise FluosegError(f"chunk_rows must be at least 1, got {chunk_rows}")
    rows = int(chunk_rows)
    dtype = np.dtype(image.dtype)
    want_percentiles = method == "percentile"
    # 8/16-bit (and bool) images: exact histograms fit in 65536 bins, so one pass does everything.
    small_int = want_percentiles and (dtype == np.bool_ or (np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2))
    offset = int(np.iinfo(dtype).min) if small_int and dtype != np.bool_ else 0
    size = 2 if dtype == np.bool_ else (1 << (8 * dtype.itemsize) if small_int else 0)
    counts = np.zeros(channels * size, np.int64) if small_int else None
    channel_base = (np.arange(channels, dtype=np.int64) * size)[:, None]

    moments = _Moments(channels)
    for block in _blocks(image, rows):
        moments.add(block)
        if small_int:
            index = block.astype(np.int64) - offset + channel_base
            counts += np.bincount(index.ravel(), minlength=counts.size)

    std = np.sqrt(moments.m2 / max(moments.count, 1))
    low = high = None
    levels_out = None
    if want_percentiles:
        levels_out = levels
        finite = np.all(np.isfinite(moments.minimum)) and np.all(np.isfinite(moments.maximum))
        if not finite:
            low = high = (float("nan"),) * channels
        else:
            if small_int:
                assert counts is not None
                pairs = [_exact_percentiles(counts[c * size : (c + 1) * size], offset, levels) for c in range(channels)]
            else:
                pairs = _second_pass_percentiles(image, rows, dtype, moments, levels)
            low = tuple(p[0] for p in pairs)
            high = tuple(p[1] for p in pairs)
    return SampleStats(
        mean=tuple(moments.mean.tolist()),
        std=tuple(std.tolist()),
        low=low,
        high=high,
        percentiles=levels_out,
        minimum=tuple(moments.minimum.tolist()),
        maximum=tuple(moments.maximum.tolist()),
        count=int(moments.count),
    )


def _second_pass_percentiles(image: Any, rows: int, dtype: np.dtype, moments: _Moments,
                             levels: tuple[float, float]) -> list[list[float]]:
    """Percentiles from a histogram streamed in a second pass, bounded by the first pass's min/max."""
    channels = moments.mean.size
    lo, hi = moments.minimum, moments.maximum
    exact = np.issubdtype(dtype, np.integer) and float(np.sum(hi - lo + 1)) <= EXACT_RANGE_LIMIT
    if exact:
        sizes = (hi - lo).astype(np.int64) + 1
    else:
        sizes = np.full(channels, FLOAT_HISTOGRAM_BINS, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[:, None]
    counts = np.zeros(int(sizes.sum()), np.int64)
    span = np.where(hi > lo, hi - lo, 1.0)
    for block in _blocks(image, rows):
        if exact:
            index = block.astype(np.int64) - lo.astype(np.int64)[:, None]
        else:
            scaled = (block.astype(np.float64) - lo[:, None]) * (FLOAT_HISTOGRAM_BINS / span)[:, None]
            index = np.clip(scaled.astype(np.int64), 0, FLOAT_HISTOGRAM_BINS - 1)
        counts += np.bincount((index + starts).ravel(), minlength=counts.size)
    out = []
    for c in range(channels):
        part = counts[starts[c, 0] : starts[c, 0] + sizes[c]]
        if exact:
            out.append(_exact_percentiles(part, int(lo[c]), levels))
        else:
            out.append(_approximate_percentiles(part, float(lo[c]), float(hi[c]), levels))
    return out


def normalize(
    window: np.ndarray,
    stats: SampleStats,
    *,
    method: str = "gaussian",
    keep_zero_channels: bool = False,
) -> np.ndarray:
    """Normalise a ``(C, ...)`` window of a sample with that sample's statistics.

    Parameters
    ----------
    window
        Any part of the sample (a patch, a tile, or the whole image), channel-first.
    stats
        Statistics of the *whole* sample from :func:`compute_stats`. Using the same
        statistics for every window is what makes tiled prediction equal whole-image
        prediction: the map is a fixed affine function per channel.
    method
        ``"gaussian"``: ``(x - mean) / std``. ``"percentile"``: ``(x - low) / (high - low)``
        (not clipped). A constant channel (std or range 0) is shifted but divided by 1, so
        there is never a division by zero; a channel that is zero in the whole sample thus
        stays zero.
    keep_zero_channels
        Keep every channel that is exactly zero throughout ``window`` at exactly zero.
        Zero is how fluoseg encodes a missing marker (marker panels zero-fill absent
        markers and marker sampling zeroes dropped ones); shifting such a channel by
        ``-mean/std`` would show the network a fake, uniform stain. Leave it off for
        windows of real channels: a genuinely dark region would otherwise normalise
        differently depending on how the sample was tiled.

    Returns
    -------
    numpy.ndarray
        float32 array of the window's shape.

    Raises
    ------
    FluosegError
        For an unknown method, percentile normalisation without percentiles in ``stats``,
        statistics with NaN/inf, or a channel count that does not match.
    """
    window = np.asarray(window)
    if method not in METHODS:
        raise FluosegError(f"unknown normalisation {method!r}; use one of {list(METHODS)}")
    if window.ndim < 2 or window.shape[0] != stats.n_channels:
        raise FluosegError(f"the window has shape {window.shape} but the statistics describe "
                           f"{stats.n_channels} channels; pass a channel-first window of the same sample")
    if method == "gaussian":
        offset = np.asarray(stats.mean, np.float64)
        scale = np.asarray(stats.std, np.float64)
    else:
        if stats.low is None or stats.high is None:
            raise FluosegError("percentile normalisation needs statistics computed with method='percentile'")
        offset = np.asarray(stats.low, np.float64)
        scale = np.asarray(stats.high, np.float64) - offset
    if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(scale))):
        raise FluosegError("the sample's statistics are not finite (it holds NaN or infinite pixels); "
                           "replace them (e.g. with 0) first")
    scale = np.where(scale > 0, scale, 1.0)
    shape = (-1,) + (1,) * (window.ndim - 1)
    out = window.astype(np.float32)  # always a copy, so in-place arithmetic below is safe
    out -= offset.astype(np.float32).reshape(shape)
    out /= scale.astype(np.float32).reshape(shape)
    if keep_zero_channels:
        empty = ~np.any(window.reshape(window.shape[0], -1) != 0, axis=1)
        out[empty] = 0.0
    return out


def standardize(window: np.ndarray, stats: SampleStats, *, keep_zero_channels: bool = False) -> np.ndarray:
    """Gaussian standardisation ``(x - mean) / std`` with whole-sample statistics (MS-ME step 4).

    Shorthand for ``normalize(window, stats, method="gaussian", ...)``; see :func:`normalize`.
    """
    return normalize(window, stats, method="gaussian", keep_zero_channels=keep_zero_channels)
