"""Zarr stores (v3, and v2 for reading) and OME-Zarr (OME-NGFF 0.4 and 0.5).

Reads stay lazy by default: the returned zarr array reads chunks only when sliced.
Written stores are OME-NGFF 0.5 images (one resolution level, ``"0"``) so that napari,
Fiji (MoBIE) and our reader find axes, channel names and pixel sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._lazy import iter_windows
from fluoseg.io._registry import ImageFormat, RawImage, ReadRequest, WriteMeta, read_errors
from fluoseg.io._units import to_micrometres

_LEVEL0 = "0"
# Chunks of all channels x 512 x 512 suit tiled reading; wider chunks are split by channel.
_CHUNK_YX = 512
_CHUNK_MAX_BYTES = 16 * 2**20
_NGFF_AXIS = {
    "C": {"name": "c", "type": "channel"},
    "Z": {"name": "z", "type": "space"},
    "Y": {"name": "y", "type": "space"},
    "X": {"name": "x", "type": "space"},
}


def read_zarr(path: Path, request: ReadRequest) -> RawImage:
    """Read a Zarr array, an OME-Zarr image (level 0) or a member named by ``key``."""
    import zarr

    with read_errors(path, "Zarr store"):
        root = zarr.open(str(path), mode="r")
        node = _locate(root, request.key, path)
        raw = _read_node(node, path)
        if not request.lazy:
            raw.array = np.asarray(raw.array[...])
    return raw


def _locate(root: Any, key: str | None, path: Path) -> Any:
    import zarr

    if key is None:
        return root
    if isinstance(root, zarr.Array):
        raise FluosegError(
            f"key {key!r} was given but the store holds a single array; drop the key", path
        )
    try:
        return root[key.strip("/")]
    except KeyError:
        raise FluosegError(
            f"no array or group {key!r} in the store; use one of {_members(root)}", path
        ) from None


def _members(group: Any) -> str:
    names = sorted(name for name, _ in group.members())
    return ", ".join(repr(n) for n in names) or "(none: the store is empty)"


def _read_node(node: Any, path: Path) -> RawImage:
    import zarr

    if isinstance(node, zarr.Array):
        return RawImage(array=node, axes=_plain_axes(node))
    attrs = node.attrs.asdict()
    ome = attrs.get("ome", attrs)
    if ome.get("multiscales"):
        return _read_ngff(node, ome, attrs)
    images = [
        name
        for name, member in node.members()
        if isinstance(member, zarr.Array) or "multiscales" in member.attrs.get("ome", member.attrs)
    ]
    if len(images) == 1:
        return _read_node(node[images[0]], path)
    raise FluosegError(
        f"the store holds {'no' if not images else 'several'} images and no OME-NGFF "
        f"multiscales; pass key=... naming one of {_members(node)}",
        path,
    )


def _plain_axes(array: Any) -> str | None:
    names = getattr(array.metadata, "dimension_names", None)
    if not names:
        names = array.attrs.get("_ARRAY_DIMENSIONS")  # xarray's convention for v2
    if not names or len(names) != array.ndim:
        return None
    return "".join(_letter({"name": n}, size) for n, size in zip(names, array.shape))


def _read_ngff(group: Any, ome: dict[str, Any], attrs: dict[str, Any]) -> RawImage:
    multiscale = ome["multiscales"][0]
    datasets = multiscale.get("datasets") or [{"path": _LEVEL0}]
    level = datasets[0]
    array = group[level["path"]]
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    if len(axes_meta) != array.ndim:
        # NGFF 0.1-0.3 had no axes list; their layout was always tczyx
        axes_meta = [{"name": n} for n in "tczyx"[-array.ndim :]]
    axes = "".join(_letter(a, size) for a, size in zip(axes_meta, array.shape))
    scale = _level_scale(level, multiscale, array.ndim)
    sizes: dict[str, float] = {}
    for meta, letter, value in zip(axes_meta, axes, scale):
        if letter in "ZYX" and meta.get("unit") is not None:
            um = to_micrometres(value, meta["unit"])
            if um is not None:
                sizes[letter.lower()] = um
    omero = ome.get("omero") or attrs.get("omero") or {}
    labels = [c.get("label") for c in omero.get("channels", []) if isinstance(c, dict)]
    n_channels = dict(zip(axes, array.shape)).get("C", 1)
    names = None
    if len(labels) == n_channels and all(isinstance(n, str) and n for n in labels):
        names = tuple(labels)
    return RawImage(array=array, axes=axes, channel_names=names, pixel_size=sizes or None)


def _letter(axis: dict[str, Any], size: int) -> str:
    name = str(axis.get("name", "")).lower()
    kind = str(axis.get("type", "")).lower()
    if name in ("c", "z", "y", "x"):
        return name.upper()
    if name == "t" or kind == "time":
        # a real time axis is refused by resolve_axes unless axes=... reinterprets it
        return "1" if size == 1 else "T"
    if kind == "channel":
        return "C"
    return "1" if size == 1 else "?"


def _level_scale(level: dict[str, Any], multiscale: dict[str, Any], ndim: int) -> list[float]:
    """Multiply the level's scale with the optional multiscale-wide one."""
    scale = [1.0] * ndim
    for transforms in (level.get("coordinateTransformations", []),
                       multiscale.get("coordinateTransformations", [])):
        for transform in transforms or []:
            if transform.get("type") == "scale" and len(transform.get("scale", [])) == ndim:
                scale = [a * float(b) for a, b in zip(scale, transform["scale"])]
    return scale


def default_chunks(shape: tuple[int, ...], axes: str, itemsize: int) -> tuple[int, ...]:
    """Chunks of (all channels, 1 plane, 512, 512), splitting channels when too big."""
    chunks = [n if a == "C" else 1 if a == "Z" else min(n, _CHUNK_YX) for a, n in zip(axes, shape)]
    if "C" in axes and int(np.prod(chunks)) * itemsize > _CHUNK_MAX_BYTES:
        chunks[axes.index("C")] = 1
    return tuple(max(1, c) for c in chunks)


def create_zarr(
    path: Path, shape: tuple[int, ...], dtype: Any, meta: WriteMeta
) -> Any:
    """Create an empty OME-Zarr image at ``path`` and return its writable level-0 array.

    Parameters
    ----------
    path
        The store folder to create (it must not exist).
    shape, dtype
        Of the image, in the order of ``meta.axes`` (C, Z, Y, X order).
    meta
        Axes, channel names, pixel sizes (µm) and chunks (None for defaults).
    """
    import zarr

    dtype = np.dtype(dtype)
    chunks = meta.chunks or default_chunks(shape, meta.axes, dtype.itemsize)
    if len(chunks) != len(shape):
        raise FluosegError(
            f"chunks {tuple(chunks)} must give one size per dimension of shape {shape}", path
        )
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    array = group.create_array(
        _LEVEL0,
        shape=shape,
        chunks=tuple(int(c) for c in chunks),
        dtype=dtype,
        fill_value=0,
        dimension_names=[a.lower() for a in meta.axes],
    )
    group.attrs["ome"] = _ngff_attrs(meta)
    return array


def _ngff_attrs(meta: WriteMeta) -> dict[str, Any]:
    axes = [dict(_NGFF_AXIS[a]) for a in meta.axes]
    scale = [1.0] * len(meta.axes)
    if meta.pixel_size is not None:
        spatial = [i for i, a in enumerate(meta.axes) if a in "ZYX"]
        for i, size in zip(spatial, meta.pixel_size):
            scale[i] = float(size)
            # without a unit readers treat the scale as uncalibrated
            axes[i]["unit"] = "micrometer"
    attrs: dict[str, Any] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": axes,
                "datasets": [
                    {
                        "path": _LEVEL0,
                        "coordinateTransformations": [{"type": "scale", "scale": scale}],
                    }
                ],
            }
        ],
    }
    if meta.channel_names is not None:
        attrs["omero"] = {
            "channels": [
                {"label": name, "active": True, "color": "FFFFFF"} for name in meta.channel_names
            ]
        }
    return attrs


def write_zarr(path: Path, array: Any, meta: WriteMeta) -> None:
    """Write an OME-Zarr image; on-disk inputs are copied window by window."""
    out = create_zarr(path, tuple(int(n) for n in array.shape), array.dtype, meta)
    if isinstance(array, np.ndarray):
        out[...] = array
        return
    for window in iter_windows(array.shape, block=2048):
        out[window] = np.asarray(array[window])


def open_written(path: Path) -> Any:
    """Open the level-0 array of a store written by :func:`create_zarr`, read-only."""
    import zarr

    return zarr.open_array(str(path / _LEVEL0), mode="r")


ZARR_FORMAT = ImageFormat(
    name="Zarr",
    suffixes=(".zarr", ".ome.zarr"),
    reader=read_zarr,
    writer=write_zarr,
    create=create_zarr,
    reopen=open_written,
    directory=True,
    container=True,
    lazy_default=True,
)
