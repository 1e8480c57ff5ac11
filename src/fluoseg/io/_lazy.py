"""Light read-only views of on-disk arrays that read windows on demand.

Zarr, TIFF-as-zarr and HDF5 arrays cannot be transposed or stacked without loading
them. These wrappers record the reordering and apply it to each window read, so an
image larger than memory can still be presented channel-first. They support what
tiled processing needs and nothing more: ``shape``, ``dtype``, ``ndim``, ``len()``,
``np.asarray(view)`` and indexing with integers, slices and ``...``
(e.g. ``view[c, y0:y1, x0:x1]``); fancy (array) indexing is not supported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.io._registry import read_errors

Index = int | slice


def normalize_key(key: Any, shape: Sequence[int]) -> tuple[Index, ...]:
    """Expand a basic index to one non-negative int or slice per dimension.

    Raises
    ------
    IndexError
        For out-of-range integers or too many indices.
    TypeError
        For index types other than int, slice and Ellipsis.
    """
    items = key if isinstance(key, tuple) else (key,)
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        fill = (slice(None),) * (len(shape) - len(items) + 1)
        items = items[:at] + fill + items[at + 1 :]
    if len(items) > len(shape):
        raise IndexError(f"too many indices ({len(items)}) for {len(shape)} dimensions")
    items = items + (slice(None),) * (len(shape) - len(items))
    out: list[Index] = []
    for item, size in zip(items, shape):
        if isinstance(item, slice):
            out.append(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            i = int(item) + size if item < 0 else int(item)
            if not 0 <= i < size:
                raise IndexError(f"index {item} is out of bounds for size {size}")
            out.append(i)
        else:
            raise TypeError(
                f"lazy arrays support integers, slices and '...' only, not {type(item).__name__}; "
                "read a window with slices first, then index the numpy result"
            )
    return tuple(out)


class _LazyBase:
    """Shared read-only array protocol of the lazy wrappers."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}>"


class LazyView(_LazyBase):
    """A reordered, read-only view of an array that reads windows on demand.

    Parameters
    ----------
    source
        The stored array (zarr, h5py or anything with basic slicing).
    source_axes
        One letter per source dimension from ``CZYX``, or ``1`` for a size-1
        dimension that the view drops.
    target_axes
        The view's axes: a reordering of the kept source letters, optionally with a
        ``C`` the source lacks (it becomes a size-1 dimension).
    channel_index
        Source channels shown as the view's channels, in this order.
    """

    def __init__(
        self,
        source: Any,
        source_axes: str,
        target_axes: str,
        channel_index: Sequence[int] | None = None,
    ) -> None:
        self.source = source
        self.source_axes = source_axes
        self.target_axes = target_axes
        self.channel_index = None if channel_index is None else [int(i) for i in channel_index]
        self.dtype = np.dtype(source.dtype)
        sizes = dict(zip(source_axes, source.shape))
        if self.channel_index is not None:
            sizes["C"] = len(self.channel_index)
        self.shape = tuple(int(sizes.get(a, 1)) for a in target_axes)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = normalize_key(key, self.shape)
        src_key: list[Any] = [0 if a == "1" else slice(None) for a in self.source_axes]
        channels: list[int] | None = None
        for letter, item in zip(self.target_axes, key):
            if letter not in self.source_axes:
                continue
            pos = self.source_axes.index(letter)
            if letter == "C" and self.channel_index is not None:
                if isinstance(item, int):
                    src_key[pos] = self.channel_index[item]
                else:
                    channels = [self.channel_index[j] for j in range(*item.indices(self.shape[0]))]
                    src_key[pos] = slice(None)
            else:
                src_key[pos] = item
        block = self._read(src_key, channels)
        src_kept = [a for a, k in zip(self.source_axes, src_key) if isinstance(k, slice)]
        tgt_kept = [
            a for a, k in zip(self.target_axes, key) if isinstance(k, slice) and a in src_kept
        ]
        block = np.transpose(block, [src_kept.index(a) for a in tgt_kept])
        return self._insert_missing(block, key)

    def _read(self, src_key: list[Any], channels: list[int] | None) -> np.ndarray:
        if channels is None:
            return np.asarray(self.source[tuple(src_key)])
        pos = self.source_axes.index("C")
        # position of C among the dimensions that survive the source read
        axis = sum(isinstance(k, slice) for k in src_key[:pos])
        parts = []
        for ch in channels or [0]:
            src_key[pos] = slice(ch, ch + 1)
            parts.append(np.asarray(self.source[tuple(src_key)]))
        block = np.concatenate(parts, axis=axis)
        return block if channels else np.take(block, [], axis=axis)

    def _insert_missing(self, block: np.ndarray, key: tuple[Index, ...]) -> np.ndarray:
        axis = 0
        for letter, item in zip(self.target_axes, key):
            if not isinstance(item, slice):
                continue
            if letter not in self.source_axes:
                block = np.expand_dims(block, axis)
                if len(range(*item.indices(1))) == 0:
                    block = np.take(block, [], axis=axis)
            axis += 1
        return block


class StackedChannels(_LazyBase):
    """Equally shaped arrays (one per channel) presented as one ``(C, ...)`` array.

    HDF5 files in the MiNTiF layout keep one dataset per marker; stacking them lazily
    lets a large sample be read window by window.

    Parameters
    ----------
    parts
        One array per channel, all of the same shape.
    keepalive
        An object (an open file) that must live as long as the view.
    """

    def __init__(self, parts: Sequence[Any], keepalive: Any = None) -> None:
        self.parts = list(parts)
        self._keepalive = keepalive
        self.dtype = np.result_type(*[np.dtype(p.dtype) for p in self.parts])
        self.shape = (len(self.parts), *tuple(self.parts[0].shape))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = normalize_key(key, self.shape)
        rest = key[1:]
        if isinstance(key[0], int):
            return np.asarray(self.parts[key[0]][rest], dtype=self.dtype)
        chosen = [self.parts[i] for i in range(*key[0].indices(self.shape[0]))]
        if not chosen:
            window = np.empty(self.shape[1:], self.dtype)[rest]
            return np.empty((0, *window.shape), self.dtype)
        return np.stack([np.asarray(p[rest], dtype=self.dtype) for p in chosen])


class FileWindows(_LazyBase):
    """An on-disk array (zarr, TIFF-as-zarr, HDF5) whose window reads name the file on failure.

    A lazy read only opens the file; a damaged chunk shows when a window is sliced, long
    after :func:`read_image` returned, in the middle of tiled prediction. This wrapper
    turns the codec and library errors of that moment into a one-line FluosegError naming
    the file, as an eager read would have.

    Parameters
    ----------
    source
        The stored array; anything with ``shape``, ``dtype`` and basic slicing.
    path
        The file it comes from.
    """

    def __init__(self, source: Any, path: Path) -> None:
        self.source = source
        self.path = path
        self.shape = tuple(int(n) for n in source.shape)
        self.dtype = np.dtype(source.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        with read_errors(self.path, "image"):
            return np.asarray(self.source[key])


def iter_windows(shape: Sequence[int], block: int = 1024) -> Iterator[tuple[Index, ...]]:
    """Yield index tuples covering an array plane by plane in YX blocks.

    Every leading dimension is visited one index at a time and the last two in
    ``block`` x ``block`` windows, so no read exceeds one block of one plane.
    """
    ny, nx = shape[-2], shape[-1]
    for index in np.ndindex(*shape[:-2]):
        for y0 in range(0, ny, block):
            for x0 in range(0, nx, block):
                yield (*index, slice(y0, min(y0 + block, ny)), slice(x0, min(x0 + block, nx)))
