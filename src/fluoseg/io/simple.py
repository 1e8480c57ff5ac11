"""PNG (through Pillow) and NPY (through numpy): formats without image metadata.

Neither can carry channel names or pixel sizes; writers drop them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._lazy import iter_windows
from fluoseg.io._registry import ImageFormat, RawImage, ReadRequest, WriteMeta, read_errors

# Pillow modes that numpy cannot take as they are, and what to convert them to.
_PNG_CONVERT = {"1": "L", "P": "RGBA", "PA": "RGBA", "LA": "LA", "CMYK": "RGB", "YCbCr": "RGB"}


def read_png(path: Path, request: ReadRequest) -> RawImage:
    """Read a grey (``YX``) or colour (``YXC``, RGB -> 3 channels) PNG; never lazy."""
    from PIL import Image

    with read_errors(path, "PNG image"), Image.open(path) as image:
        image.load()
        if image.mode == "P":
            # palettes without transparency are plain RGB; keep alpha only when present
            mode = "RGBA" if "transparency" in image.info else "RGB"
            image = image.convert(mode)
        elif image.mode in _PNG_CONVERT and _PNG_CONVERT[image.mode] != image.mode:
            image = image.convert(_PNG_CONVERT[image.mode])
        array = np.asarray(image)
    return RawImage(array=array, axes="YX" if array.ndim == 2 else "YXC")


def write_png(path: Path, array: Any, meta: WriteMeta) -> None:
    """Write a 2D grey (uint8 or uint16) or RGB/RGBA (uint8) PNG."""
    from PIL import Image

    data = np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if "Z" in meta.axes:
        raise FluosegError("PNG holds 2D images only; write a 3D stack as .tif or .zarr", path)
    n_channels = data.shape[0] if meta.axes.startswith("C") else 1
    grey_ok = n_channels == 1 and data.dtype in (np.uint8, np.uint16)
    colour_ok = n_channels in (3, 4) and data.dtype == np.uint8
    if not (grey_ok or colour_ok):
        raise FluosegError(
            f"PNG stores 1-channel uint8/uint16 or 3/4-channel uint8 images, not {n_channels} "
            f"channel(s) of {data.dtype}; write .tif or .zarr instead",
            path,
        )
    if meta.axes.startswith("C"):
        data = data[0] if n_channels == 1 else np.moveaxis(data, 0, -1)
    image = Image.fromarray(np.ascontiguousarray(data))
    with open(path, "wb") as handle:
        image.save(handle, format="PNG")


def read_npy(path: Path, request: ReadRequest) -> RawImage:
    """Read a ``.npy`` array; memory-mapped (``mmap_mode="r"``) when lazy."""
    with read_errors(path, "NPY array file"):
        array = np.load(path, mmap_mode="r" if request.lazy else None, allow_pickle=False)
    return RawImage(array=array)


def write_npy(path: Path, array: Any, meta: WriteMeta) -> None:
    """Write a ``.npy`` file; on-disk inputs are copied window by window.

    A single-channel volume (``ZYX``) is stored with a leading size-1 channel axis so
    that its shape alone tells it from a 2D multi-channel image when read back.
    """
    if "Z" in meta.axes and "C" not in meta.axes:
        array = array[np.newaxis] if isinstance(array, np.ndarray) else _AddAxis(array)
    if isinstance(array, np.ndarray):
        with open(path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=tuple(array.shape))
    for window in iter_windows(array.shape):
        out[window] = array[window]
    out.flush()
    del out


class _AddAxis:
    """A leading size-1 axis on an on-disk array, for window-by-window copies."""

    def __init__(self, source: Any) -> None:
        self.source, self.dtype = source, source.dtype
        self.shape = (1, *tuple(source.shape))

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        block = np.asarray(self.source[key[1:]])
        return block if isinstance(key[0], int) else block[np.newaxis]


PNG_FORMAT = ImageFormat(name="PNG", suffixes=(".png",), reader=read_png, writer=write_png)
NPY_FORMAT = ImageFormat(name="NPY", suffixes=(".npy",), reader=read_npy, writer=write_npy)
