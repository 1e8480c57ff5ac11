"""TIFF and OME-TIFF (including ImageJ hyperstacks) through tifffile."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._lazy import iter_windows
from fluoseg.io._registry import ImageFormat, RawImage, ReadRequest, WriteMeta, read_errors
from fluoseg.io._units import to_micrometres

# Planes larger than this are written as 256x256 tiles so that lazy readers can fetch
# windows; smaller ones stay in strips, which every TIFF reader (ImageJ too) opens.
_TILE_ABOVE_PIXELS = 4096 * 4096
_TILE = (256, 256)
# Classic TIFF addresses at most 4 GiB; keep a margin for tags and OME-XML.
_BIGTIFF_ABOVE_BYTES = 2**32 - 2**25


def read_tiff(path: Path, request: ReadRequest) -> RawImage:
    """Read the first series of a TIFF file (level 0 of a pyramid).

    Axes come from tifffile's series (``S`` samples become ``C``; ``Q``/``I`` and other
    letters are unknown and settled by the default layout); channel names from OME
    ``Channel Name`` or ImageJ slice labels; pixel sizes from OME ``PhysicalSize*``
    or ImageJ resolution and spacing.
    """
    import tifffile

    with read_errors(path, "TIFF file"), _logged_damage(path), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise FluosegError("the TIFF file holds no image; export it again", path)
        series = tif.series[0]
        shape = tuple(int(n) for n in series.shape)
        axes = _map_axes(series.axes, shape)
        names, sizes = _metadata(tif, axes, shape)
        if request.lazy:
            import zarr

            # tifffile reopens the file on demand, so the store outlives this block
            array: Any = zarr.open_array(series.aszarr(level=0), mode="r")
        else:
            array = series.asarray(level=0)
    return RawImage(array=array, axes=axes, channel_names=names, pixel_size=sizes)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _logged_damage(path: Path) -> Iterator[None]:
    """Raise for damage tifffile only logs, e.g. a tag pointing past the end of the file.

    A TIFF cut short after its pixels still decodes, but loses its OME-XML (channel
    names, pixel size) with nothing but a log line; silently reading it without its
    metadata would mislabel markers.
    """
    handler = _Collect()
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
    damaged = [m for m in handler.messages if "offset" in m]
    if damaged:
        raise FluosegError(
            f"not a readable TIFF file (truncated or damaged: {damaged[0]}); check that the "
            "file is complete (copy or export it again)",
            path,
        )


def _map_axes(series_axes: str, shape: tuple[int, ...]) -> str:
    letters = []
    for letter, size in zip(series_axes.upper(), shape):
        if letter in "CZYX":
            letters.append(letter)
        elif letter == "S":
            # interleaved samples (YXS) are colour channels; tifffile also labels a
            # plain 3-4 plane stack as planar RGB (SYX), which says nothing, so use defaults
            letters.append("C" if series_axes.upper().endswith("S") else "?")
        elif size == 1:
            letters.append("1")
        elif letter == "T":
            letters.append("T")  # refused by resolve_axes unless axes=... reinterprets it
        else:
            letters.append("?")
    return "".join(letters)


def _metadata(
    tif: Any, axes: str, shape: tuple[int, ...]
) -> tuple[tuple[str, ...] | None, dict[str, float] | None]:
    n_channels = dict(zip(axes, shape)).get("C", 1)
    if tif.is_ome and tif.ome_metadata:
        return _ome_metadata(tif.ome_metadata, n_channels)
    if tif.is_imagej and tif.imagej_metadata is not None:
        return _imagej_metadata(tif, axes, n_channels)
    return None, None


def _ome_metadata(
    xml: str, n_channels: int
) -> tuple[tuple[str, ...] | None, dict[str, float] | None]:
    import tifffile

    try:
        ome = tifffile.xml2dict(xml).get("OME", {})
    except Exception:  # noqa: BLE001 - broken XML only costs the metadata, not the pixels
        return None, None
    image = ome.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    pixels = image.get("Pixels", {}) if isinstance(image, dict) else {}
    sizes: dict[str, float] = {}
    for letter in "XYZ":
        value = pixels.get(f"PhysicalSize{letter}")
        if value is not None:
            um = to_micrometres(value, pixels.get(f"PhysicalSize{letter}Unit"))
            if um is not None:
                sizes[letter.lower()] = um
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = [c.get("Name") if isinstance(c, dict) else None for c in channels]
    valid = len(names) == n_channels and all(isinstance(n, str) and n for n in names)
    return (tuple(names) if valid else None), (sizes or None)  # type: ignore[arg-type]


def _imagej_metadata(
    tif: Any, axes: str, n_channels: int
) -> tuple[tuple[str, ...] | None, dict[str, float] | None]:
    meta = tif.imagej_metadata
    unit = meta.get("unit")
    sizes: dict[str, float] = {}
    tags = tif.pages.first.tags
    for letter, tag in (("x", "XResolution"), ("y", "YResolution")):
        if unit is not None and tag in tags:
            numerator, denominator = tags[tag].value
            if numerator:
                um = to_micrometres(denominator / numerator, unit)
                if um is not None:
                    sizes[letter] = um
    if "spacing" in meta and unit is not None:
        um = to_micrometres(meta["spacing"], unit)
        if um is not None:
            sizes["z"] = um
    # ImageJ keeps one label per plane; they name channels only without a Z axis
    labels = meta.get("Labels")
    names = None
    if isinstance(labels, list) and "Z" not in axes and len(labels) == n_channels:
        if all(isinstance(n, str) and n for n in labels):
            names = tuple(labels)
    return names, (sizes or None)


def write_tiff(path: Path, array: Any, meta: WriteMeta) -> None:
    """Write an OME-TIFF with axes, channel names and pixel sizes, zlib-compressed.

    Arrays that are not numpy arrays (zarr, lazy views) are streamed plane by plane or
    tile by tile, so they need not fit in memory.
    """
    import tifffile

    array, dtype = _tiff_compatible(array, path)
    shape = tuple(int(n) for n in array.shape)
    metadata: dict[str, Any] = {"axes": meta.axes}
    if meta.channel_names is not None:
        metadata["Channel"] = {"Name": list(meta.channel_names)}
    if meta.pixel_size is not None:
        for letter, size in zip([a for a in meta.axes if a in "ZYX"], meta.pixel_size):
            metadata[f"PhysicalSize{letter}"] = float(size)
            metadata[f"PhysicalSize{letter}Unit"] = "µm"
    tile = _TILE if shape[-1] * shape[-2] > _TILE_ABOVE_PIXELS else None
    data: Any = array if isinstance(array, np.ndarray) else _chunks(array, dtype, tile)
    tifffile.imwrite(
        path,
        data,
        shape=shape,
        dtype=dtype,
        ome=True,
        photometric="minisblack",
        compression="zlib",
        bigtiff=int(np.prod(shape)) * dtype.itemsize > _BIGTIFF_ABOVE_BYTES,
        tile=tile,
        metadata=metadata,
    )


def _tiff_compatible(array: Any, path: Path) -> tuple[Any, np.dtype]:
    """Return the array in a dtype OME-TIFF stores (no bool, float16 or 64-bit ints)."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        target = np.dtype(np.uint8)
    elif dtype == np.float16:
        target = np.dtype(np.float32)
    elif dtype.kind in "iu" and dtype.itemsize == 8:
        low, high = _value_range(array)
        if low >= 0 and high <= np.iinfo(np.uint32).max:
            target = np.dtype(np.uint16 if high <= np.iinfo(np.uint16).max else np.uint32)
        elif np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max:
            target = np.dtype(np.int32)
        else:
            raise FluosegError(
                "values exceed the 32-bit range TIFF can store; write .zarr or .npy instead",
                path,
            )
    elif dtype.kind not in "iuf":
        raise FluosegError(f"TIFF cannot store {dtype} data; convert to a numeric type", path)
    else:
        target = dtype
    if target == dtype:
        return array, dtype
    if isinstance(array, np.ndarray):
        return array.astype(target), target
    return _Cast(array, target), target


def _value_range(array: Any) -> tuple[int, int]:
    if isinstance(array, np.ndarray):
        return (int(array.min()), int(array.max())) if array.size else (0, 0)
    low, high = 0, 0
    for window in iter_windows(array.shape):
        block = np.asarray(array[window])
        if block.size:
            low, high = min(low, int(block.min())), max(high, int(block.max()))
    return low, high


class _Cast:
    """Cast windows of an on-disk array to another dtype as they are read."""

    def __init__(self, source: Any, dtype: np.dtype) -> None:
        self.source, self.dtype, self.shape = source, dtype, tuple(source.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.source[key]).astype(self.dtype)


def _chunks(array: Any, dtype: np.dtype, tile: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Yield the pages (or tiles) tifffile expects, reading one window at a time."""
    for index in np.ndindex(*array.shape[:-2]):
        if tile is None:
            yield np.asarray(array[index], dtype=dtype)
            continue
        for y0 in range(0, array.shape[-2], tile[0]):
            for x0 in range(0, array.shape[-1], tile[1]):
                window = (*index, slice(y0, y0 + tile[0]), slice(x0, x0 + tile[1]))
                yield np.asarray(array[window], dtype=dtype)


TIFF_FORMAT = ImageFormat(
    name="TIFF",
    suffixes=(".tif", ".tiff", ".ome.tif", ".ome.tiff"),
    reader=read_tiff,
    writer=write_tiff,
)
