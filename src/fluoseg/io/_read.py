"""Reading images, masks and instance labels into channel-first arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._axes import (
    IMAGE_DEFAULTS,
    LABEL_DEFAULTS,
    resolve_axes,
    select_channels,
    spatial_pixel_size,
    to_channel_first,
)
from fluoseg.io._lazy import FileWindows, LazyView, StackedChannels, iter_windows
from fluoseg.io._registry import (
    RawImage,
    ReadRequest,
    Role,
    check_readable,
    format_for,
    read_errors,
)

if TYPE_CHECKING:
    import zarr

    ArrayLike = Union[np.ndarray, zarr.Array, LazyView, StackedChannels]
else:
    ArrayLike = Any


@dataclass
class ImageData:
    """An image as read from a file, channel-first, with what the file says about it.

    Attributes
    ----------
    array
        ``(C, Y, X)`` or ``(C, Z, Y, X)``. A numpy array for eager reads; for lazy
        reads a zarr array, a :class:`~fluoseg.io.LazyView` or a numpy memory map,
        all of which read only the windows that are sliced.
    axes
        ``"CYX"`` or ``"CZYX"``.
    channel_names
        Marker names from the file's metadata, or None when it has none.
    pixel_size
        Micrometres per pixel in spatial-axis order, ``(y, x)`` or ``(z, y, x)``; None
        when the file is not calibrated.
    path
        The file read.
    """

    array: ArrayLike
    axes: str
    channel_names: tuple[str, ...] | None
    pixel_size: tuple[float, ...] | None
    path: Path

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(Y, X)`` or ``(Z, Y, X)``."""
        return tuple(int(n) for n in self.array.shape[1:])

    @property
    def is_3d(self) -> bool:
        """Whether the image has a Z axis."""
        return "Z" in self.axes

    @property
    def dtype(self) -> np.dtype:
        """The stored data type."""
        return np.dtype(self.array.dtype)

    @property
    def is_lazy(self) -> bool:
        """Whether the pixels stay on disk until a window is sliced."""
        return not isinstance(self.array, np.ndarray) or isinstance(self.array, np.memmap)


def read_image(
    path: str | Path,
    *,
    axes: str | None = None,
    key: str | None = None,
    channels: Sequence[str] | None = None,
    lazy: bool | None = None,
) -> ImageData:
    """Read a multi-channel 2D image or 3D stack as a channel-first array.

    Parameters
    ----------
    path
        An image file (``.tif``, ``.ome.tif``, ``.png``, ``.npy``, ``.h5``) or Zarr
        folder (``.zarr``, ``.ome.zarr``); the suffix picks the reader.
    axes
        The stored dimensions' meaning, one letter each from C, Z, Y, X in stored order
        (e.g. ``"ZCYX"``, ``"YXC"``, ``"ZYX"``); overrides the file's metadata. Without it
        and without metadata: 2D is YX, 3D is CYX, 4D is CZYX. A size-1 Z found in
        metadata (not one given here) is dropped, so a single plane reads as 2D.
    key
        Member of a container file: a Zarr array or group path, or an HDF5 sample group
        (``"Sample_1"``) or dataset (``"Sample_1/DAPI"``). Needed when an HDF5 file holds
        several samples.
    channels
        Channel names to keep, in this order; the file must name its channels (OME
        metadata, OME-Zarr ``omero`` labels, HDF5 dataset names).
    lazy
        Keep the pixels on disk and read windows on demand (TIFF through zarr, NPY as
        a memory map, HDF5 datasets); PNG is always loaded. None (default) means lazy
        for Zarr, loaded for every other format.

    Returns
    -------
    ImageData
        ``CYX`` or ``CZYX`` data with channel names and pixel size (µm) when known.
        Eager reads are checked for NaN/Inf; lazy reads are not (that would read the
        whole image), so call :func:`check_finite` on each window you read.

    Raises
    ------
    FluosegError
        For a missing, empty, corrupt or unsupported file, wrong ``axes``, an unknown
        ``key`` or channel name, or NaN/Inf values.
    """
    path = Path(path)
    request = _request(path, key=key, channels=channels, lazy=lazy, role="image")
    raw = _read_raw(path, request)
    if request.lazy and not isinstance(raw.array, np.ndarray):
        raw.array = FileWindows(raw.array, path)
    resolved = resolve_axes(raw.array.shape, raw.axes, axes, defaults=IMAGE_DEFAULTS, path=path)
    array, cf_axes = to_channel_first(raw.array, resolved)
    names = raw.channel_names
    if names is not None and len(names) != array.shape[0]:
        names = None  # an axes override changed what the channels are
    if channels is not None:
        array, names = _select(array, names, channels, path)
    image = ImageData(
        array=array,
        axes=cf_axes,
        channel_names=None if names is None else tuple(names),
        pixel_size=spatial_pixel_size(raw.pixel_size, cf_axes),
        path=path,
    )
    if not request.lazy:
        image.array = np.asarray(image.array)
        check_finite(image.array, path)
    return image


def read_mask(
    path: str | Path, *, axes: str | None = None, key: str | None = None
) -> np.ndarray:
    """Read per-class binary masks.

    Parameters
    ----------
    path
        A mask file in any supported format; for HDF5, ``key`` may name a sample group
        (all its label datasets become classes) or one dataset.
    axes
        Stored axes, as for :func:`read_image` (classes play the role of channels).
    key
        Member of a container file.

    Returns
    -------
    numpy.ndarray
        ``(n_classes, Y, X)`` or ``(n_classes, Z, Y, X)`` uint8 of 0/1; a 2D file gives
        one class. Values 0/255 are accepted as binary and mapped to 0/1.

    Raises
    ------
    FluosegError
        For unreadable files or values other than 0/1 (or 0/255).
    """
    path = Path(path)
    stored = _read_eager(path, axes=axes, key=key, role="mask", defaults=IMAGE_DEFAULTS)
    array, _ = to_channel_first(stored.data, stored.axes)
    return _binary(np.asarray(array), path)


def read_labels(
    path: str | Path, *, key: str | None = None, axes: str | None = None
) -> np.ndarray:
    """Read an instance label image.

    Parameters
    ----------
    path
        A label file in any supported format.
    key
        Member of a container file (for HDF5, a sample group with one label dataset,
        or the dataset itself).
    axes
        Stored axes; without metadata 2D is YX and 3D is ZYX. A C axis must have size 1.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` integers, 0 for background. Float files are accepted
        when every value is a whole number (converted to int32, or int64 if needed).

    Raises
    ------
    FluosegError
        For unreadable files, several channels, negative or non-integer labels.
    """
    path = Path(path)
    stored = _read_eager(path, axes=axes, key=key, role="labels", defaults=LABEL_DEFAULTS)
    array, _ = to_channel_first(stored.data, stored.axes)
    if array.shape[0] != 1:
        raise FluosegError(
            f"expected one label image but found {array.shape[0]} channels (shape "
            f"{array.shape}); pass axes=... (e.g. 'ZYX') or key=... to pick one",
            path,
        )
    return _integer_labels(np.asarray(array[0]), path)


def check_finite(array: Any, path: str | Path | None = None) -> None:
    """Raise a FluosegError naming ``path`` when ``array`` holds NaN or infinity.

    Integer and boolean data cannot hold either, so they return at once. Large
    on-disk arrays are checked window by window to bound memory.

    Parameters
    ----------
    array
        A numpy, zarr or lazy array (typically one window of a lazy image).
    path
        The file the data came from, named in the message.
    """
    if np.dtype(array.dtype).kind not in "fc":
        return
    windows = [Ellipsis] if isinstance(array, np.ndarray) else iter_windows(array.shape)
    for window in windows:
        block = np.asarray(array[window])
        if not np.isfinite(block).all():
            raise FluosegError(
                "the image contains NaN or infinite values; replace them (e.g. with 0) "
                "in the source image before using it",
                path,
            )


@dataclass
class _Stored:
    """A loaded array with its resolved axes (letters from CZYX1)."""

    data: np.ndarray
    axes: str


def _request(
    path: Path, *, key: str | None, channels: Sequence[str] | None, lazy: bool | None, role: Role
) -> ReadRequest:
    fmt = format_for(path)
    if key is not None and not fmt.container:
        raise FluosegError(
            f"key={key!r} only applies to Zarr and HDF5 files, not {fmt.name}; drop it", path
        )
    if isinstance(channels, str):
        channels = [channels]
    if channels is not None and not list(channels):
        raise FluosegError(
            "channels=[] selects no channel; name at least one or drop channels=...", path
        )
    return ReadRequest(
        key=key,
        channels=None if channels is None else tuple(channels),
        lazy=fmt.lazy_default if lazy is None else bool(lazy),
        role=role,
    )


def _read_raw(path: Path, request: ReadRequest) -> RawImage:
    fmt = format_for(path)
    check_readable(path, fmt)
    raw = fmt.reader(path, request)
    dtype = np.dtype(raw.array.dtype)
    if dtype.kind not in "biuf":
        raise FluosegError(
            f"holds {dtype} data, not numbers; convert it to an integer or float image", path
        )
    shape = tuple(int(n) for n in raw.array.shape)
    if len(shape) < 2:
        raise FluosegError(f"holds a {len(shape)}D array, not an image", path)
    if 0 in shape:
        # later steps (statistics, tiling) would fail on it without naming the file
        raise FluosegError(
            f"holds an empty image (shape {shape}: no pixels); export it again with its pixels",
            path,
        )
    return raw


def _read_eager(
    path: Path, *, axes: str | None, key: str | None, role: Role, defaults: Mapping[int, str]
) -> _Stored:
    request = _request(path, key=key, channels=None, lazy=False, role=role)
    raw = _read_raw(path, request)
    with read_errors(path, "image"):
        data = np.asarray(raw.array)
    resolved = resolve_axes(data.shape, raw.axes, axes, defaults=defaults, path=path)
    return _Stored(data, resolved)


def _select(
    array: Any, names: tuple[str, ...] | None, wanted: Sequence[str], path: Path
) -> tuple[Any, tuple[str, ...]]:
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if names is None:
        raise FluosegError(
            "the file does not name its channels, so channels=... cannot be chosen by name; "
            "use OME-TIFF/OME-Zarr with channel names or drop channels=...",
            path,
        )
    missing = [c for c in wanted if c not in names]
    if missing:
        raise FluosegError(
            f"channels {missing} are not in the file; it has {list(names)}", path
        )
    indices = [names.index(c) for c in wanted]
    return select_channels(array, indices), tuple(wanted)


def _binary(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.size == 0 or ((array == 0) | (array == 1)).all():
        return array.astype(np.uint8)
    if ((array == 0) | (array == 255)).all():
        return (array == 255).astype(np.uint8)
    found = np.unique(array[(array != 0) & (array != 1)])[:5]
    raise FluosegError(
        f"a mask must hold only 0/1 (or 0/255) but has values such as {found.tolist()}; "
        "threshold it, or read it with read_labels if it is an instance label image",
        path,
    )


def _integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise FluosegError(
                "instance labels must be whole numbers but the file has fractional, NaN or "
                "infinite values; save the labels as an integer image",
                path,
            )
        big = array.size and max(abs(float(array.min())), float(array.max())) > 2**31 - 1
        array = array.astype(np.int64 if big else np.int32)
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise FluosegError(
            "instance labels must be >= 0 (0 = background) but the file has negative values; "
            "relabel the objects with positive integers",
            path,
        )
    return array
