"""Writing images atomically, at once (:func:`write_image`) or streamed (:func:`create_output`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._atomic import atomic_path, commit, refuse_existing, remove, temporary_sibling
from fluoseg.io._axes import canonical, parse_axes, reorder_for_writing
from fluoseg.io._oserrors import describe_os_error
from fluoseg.io._registry import ImageFormat, WriteMeta, format_for, writable_suffixes


def write_image(
    path: str | Path,
    array: Any,
    *,
    axes: str,
    channel_names: Sequence[str] | None = None,
    pixel_size: Sequence[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an image atomically; the suffix picks the format.

    The data goes to a hidden temporary sibling first and is renamed into place at the
    end, so an interrupted write never leaves a partial file at ``path``.

    Parameters
    ----------
    path
        ``.tif``/``.ome.tif`` (OME-TIFF, zlib), ``.zarr``/``.ome.zarr`` (OME-NGFF 0.5,
        Zarr v3), ``.npy`` or ``.png`` (2D grey uint8/uint16 or RGB(A) uint8).
    array
        The pixels: a numpy array, or a zarr/lazy array that is then copied window by
        window (TIFF, Zarr, NPY) without loading it whole.
    axes
        The array's dimensions, one letter each from C, Z, Y, X (any order); the file
        stores them in C, Z, Y, X order.
    channel_names
        One name per channel (TIFF and Zarr store them; NPY and PNG cannot).
    pixel_size
        Micrometres per pixel for the spatial axes in C, Z, Y, X order, i.e. ``(y, x)``
        or ``(z, y, x)`` (TIFF and Zarr store it).
    overwrite
        Replace an existing output.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FluosegError
        When the output exists (without ``overwrite``), the metadata does not fit the
        array, the format cannot hold the data, or writing fails.
    """
    path = Path(path)
    fmt = _writable_format(path)
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        array = np.asarray(array)
    given = parse_axes(axes, path)
    _check_ndim(given, tuple(array.shape), path)
    array, stored_axes = reorder_for_writing(array, given)
    meta = _meta(path, stored_axes, tuple(array.shape), channel_names, pixel_size, None)
    with atomic_path(path, overwrite=overwrite) as tmp:
        assert fmt.writer is not None
        fmt.writer(tmp, array, meta)
    return path


class OutputArray:
    """A writable output that only appears at its path once committed.

    Attributes
    ----------
    path
        Where the output goes.
    array
        The writable array: a zarr array in a temporary store for Zarr outputs (so a
        prediction larger than memory can be written window by window), an in-memory
        numpy array for other formats. After :meth:`commit` of a Zarr output it is
        the final store, opened read-only.
    axes
        The array's axes.
    """

    def __init__(
        self,
        path: Path,
        array: Any,
        *,
        meta: WriteMeta,
        overwrite: bool,
        fmt: ImageFormat,
        tmp: Path | None = None,
    ) -> None:
        self.path = path
        self.array = array
        self.axes = meta.axes
        self._meta = meta
        self._overwrite = overwrite
        self._fmt = fmt
        self._tmp = tmp
        self._state = "open"

    @property
    def committed(self) -> bool:
        """Whether :meth:`commit` has put the output in place."""
        return self._state == "committed"

    def commit(self) -> Path:
        """Finalise the output at :attr:`path` (a second call does nothing).

        Raises
        ------
        FluosegError
            When the output was discarded, or ``path`` appeared meanwhile and
            ``overwrite`` was not given.
        """
        if self._state == "committed":
            return self.path
        if self._state == "discarded":
            raise FluosegError("the output was discarded and cannot be committed", self.path)
        if self._tmp is not None:
            commit(self._tmp, self.path, self._overwrite)
            if self._fmt.reopen is not None:
                self.array = self._fmt.reopen(self.path)
        else:
            write_image(
                self.path,
                self.array,
                axes=self._meta.axes,
                channel_names=self._meta.channel_names,
                pixel_size=self._meta.pixel_size,
                overwrite=self._overwrite,
            )
        self._state = "committed"
        return self.path

    def discard(self) -> None:
        """Drop the output: delete the temporary store; :attr:`path` is left untouched."""
        if self._state == "committed":
            return
        if self._tmp is not None:
            remove(self._tmp)
        self._state = "discarded"

    def __enter__(self) -> OutputArray:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()
        elif self._state == "open":
            # an explicit discard() inside the block means the output is not wanted
            self.commit()

    def __repr__(self) -> str:
        return f"<OutputArray {self.path} {self._state} shape={tuple(self.array.shape)}>"


def create_output(
    path: str | Path,
    *,
    shape: Sequence[int],
    dtype: Any,
    axes: str,
    channel_names: Sequence[str] | None = None,
    pixel_size: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> OutputArray:
    """Create an output to be filled window by window, then committed atomically.

    Use it as a context manager: it commits when the block ends normally (unless
    :meth:`OutputArray.discard` was called in it) and discards the partial output when
    an exception escapes.

    Parameters
    ----------
    path
        Output path; the suffix picks the format as in :func:`write_image`.
    shape, dtype
        Of the array, e.g. ``(n_classes, Y, X)`` and ``np.float32``.
    axes
        Its dimensions in C, Z, Y, X order (``"CYX"``, ``"CZYX"``, ``"YX"``, ``"ZYX"``).
    channel_names, pixel_size
        Metadata stored as by :func:`write_image`.
    chunks
        Zarr chunk shape; default all channels x 1 plane x 512 x 512. Ignored otherwise.
    overwrite
        Allow replacing an existing output (checked now and at commit).

    Returns
    -------
    OutputArray
        Holding the writable ``.array`` (zeros to start with).
    """
    path = Path(path)
    fmt = _writable_format(path)
    given = parse_axes(axes, path)
    if given != canonical(given):
        raise FluosegError(
            f"create_output needs axes in C, Z, Y, X order (e.g. {canonical(given)!r}), "
            f"not {axes!r}",
            path,
        )
    shape = tuple(int(n) for n in shape)
    _check_ndim(given, shape, path)
    dtype = np.dtype(dtype)
    meta = _meta(path, given, shape, channel_names, pixel_size, chunks)
    refuse_existing(path, overwrite)
    if fmt.create is None:
        return OutputArray(path, np.zeros(shape, dtype), meta=meta, overwrite=overwrite, fmt=fmt)
    tmp = temporary_sibling(path)
    try:
        array = fmt.create(tmp, shape, dtype, meta)
    except OSError as exc:
        remove(tmp)
        raise describe_os_error(exc, path, "create the output") from exc
    except BaseException:
        remove(tmp)
        raise
    return OutputArray(path, array, meta=meta, overwrite=overwrite, fmt=fmt, tmp=tmp)


def _writable_format(path: Path) -> ImageFormat:
    fmt = format_for(path)
    if fmt.writer is None:
        raise FluosegError(
            f"fluoseg does not write {fmt.name} images with write_image; use one of "
            f"{', '.join(writable_suffixes())}",
            path,
        )
    return fmt


def _check_ndim(axes: str, shape: tuple[int, ...], path: Path) -> None:
    if len(axes) != len(shape):
        raise FluosegError(
            f"axes {axes!r} has {len(axes)} letters but the array has {len(shape)} "
            f"dimensions (shape {shape}); give one letter per dimension",
            path,
        )


def _meta(
    path: Path,
    axes: str,
    shape: tuple[int, ...],
    channel_names: Sequence[str] | None,
    pixel_size: Sequence[float] | None,
    chunks: Sequence[int] | None,
) -> WriteMeta:
    names = None
    if channel_names is not None:
        names = (channel_names,) if isinstance(channel_names, str) else tuple(channel_names)
        names = tuple(str(n) for n in names)
        n_channels = shape[axes.index("C")] if "C" in axes else 1
        if len(names) != n_channels:
            raise FluosegError(
                f"{len(names)} channel names were given for {n_channels} channels; give one "
                "name per channel",
                path,
            )
        if len(set(names)) != len(names):
            raise FluosegError(f"channel names {list(names)} repeat; make them unique", path)
    sizes = None
    if pixel_size is not None:
        sizes = tuple(float(s) for s in pixel_size)
        spatial = "".join(a for a in axes if a in "ZYX")
        if len(sizes) != len(spatial) or not all(math.isfinite(s) and s > 0 for s in sizes):
            raise FluosegError(
                f"pixel_size {tuple(pixel_size)} must give one positive size in µm per "
                f"spatial axis ({', '.join(spatial.lower())})",
                path,
            )
    if chunks is not None and (len(chunks) != len(shape) or min(chunks) < 1):
        raise FluosegError(
            f"chunks {tuple(chunks)} must give one positive size per dimension of {shape}", path
        )
    return WriteMeta(
        axes=axes,
        channel_names=names,
        pixel_size=sizes,
        chunks=None if chunks is None else tuple(int(c) for c in chunks),
    )
