"""Multiscale OME-Zarr (OME-NGFF 0.5) images with label images, for viewers of whole slides.

NGFF 0.5 is the version written: it is stored as Zarr v3, which zarr 3.1 writes natively,
and ``ome-zarr-models`` and ``ome-zarr`` (the Python reader napari uses) both read and
validate it. (0.4 would need Zarr v2.)

Layout::

    image.ome.zarr/            group, attributes {"ome": {"version": "0.5", "multiscales": [...], "omero": ...}}
        0/ 1/ 2/ ...           the pyramid: level k is 2**k times coarser in Y and X (and Z if asked)
        labels/                group, {"ome": {"version": "0.5", "labels": ["nuclei", "vessels", ...]}}
            nuclei/            group, {"ome": {"multiscales": [...], "image-label": {...}}}
                0/ 1/ 2/ ...   as many levels as the image, same spatial axes without C

Image levels average blocks of 2 x 2 (x 2) pixels (partial blocks at the border average the
pixels present); their pixel centres move by half the block, which each level's
``translation`` records. Label levels pick every second pixel (never a mean or mode,
which would invent ids or borders), so pixel 0 stays in place and no translation is needed.
Every level is computed window by window from the one before, so inputs larger than memory
(zarr arrays) are written in bounded memory. New stores are written under a temporary
name and renamed into place; labels added to an existing image appear atomically per label.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._atomic import commit, refuse_existing, remove, temporary_sibling
from fluoseg.io.zarrstore import default_chunks

__all__ = ["NGFF_VERSION", "mask_labels", "pyramid_levels", "read_label_masks", "write_ngff_image",
           "write_ngff_labels", "write_ngff_masks"]

NGFF_VERSION = "0.5"
_AXIS = {"C": ("c", "channel"), "Z": ("z", "space"), "Y": ("y", "space"), "X": ("x", "space")}
# Windows of the level being written: all channels, one plane, 512 x 512 (the default
# chunk), so a level is read from the one before in pieces of at most 2 x 1024 x 1024.
_WINDOW = {"C": None, "Z": 1, "Y": 512, "X": 512}
_SMALLEST_SIDE = 256
_MAX_LEVELS = 10


def pyramid_levels(shape_yx: Sequence[int]) -> int:
    """Levels needed until the longer of Y and X is at most 256 pixels (at most 10)."""
    longest = max(int(n) for n in shape_yx)
    return min(1 + max(0, math.ceil(math.log2(longest / _SMALLEST_SIDE))), _MAX_LEVELS)


def _factors(axes: str, downsample_z: bool) -> tuple[int, ...]:
    return tuple(2 if a in "YX" or (a == "Z" and downsample_z) else 1 for a in axes)


def _level_shapes(shape: tuple[int, ...], factors: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    shapes = [shape]
    for _ in range(levels - 1):
        shapes.append(tuple(-(-n // f) for n, f in zip(shapes[-1], factors)))
    return shapes


def _windows(shape: tuple[int, ...], axes: str) -> Iterator[tuple[slice, ...]]:
    steps = [n if _WINDOW[a] is None else _WINDOW[a] for a, n in zip(axes, shape)]
    for starts in itertools.product(*(range(0, n, s) for n, s in zip(shape, steps))):
        yield tuple(slice(a, min(a + s, n)) for a, s, n in zip(starts, steps, shape))


def _block_mean(block: np.ndarray, factors: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Mean over ``factors``-sized blocks; blocks cut by the border average what they hold."""
    padded_shape = [-(-n // f) * f for n, f in zip(block.shape, factors)]
    padded = np.full(padded_shape, np.nan)
    padded[tuple(slice(0, n) for n in block.shape)] = block
    split = [d for n, f in zip(padded_shape, factors) for d in (n // f, f)]
    mean = np.nanmean(padded.reshape(split), axis=tuple(range(1, 2 * block.ndim, 2)))
    return np.rint(mean).astype(dtype) if dtype.kind in "iub" else mean.astype(dtype)


def _downsample(source: Any, target: Any, axes: str, factors: tuple[int, ...], *, labels: bool) -> None:
    """Fill ``target`` (one level coarser) from ``source`` window by window."""
    dtype = np.dtype(target.dtype)
    for window in _windows(tuple(target.shape), axes):
        read = tuple(slice(w.start * f, min(w.stop * f, n)) for w, f, n in zip(window, factors, source.shape))
        block = np.asarray(source[read])
        if labels:
            target[window] = block[tuple(slice(None, None, f) for f in factors)]
        else:
            target[window] = _block_mean(block.astype(np.float64), factors, dtype)


def _copy(source: Any, target: Any, axes: str) -> None:
    if isinstance(source, np.ndarray):
        target[...] = source
        return
    for window in _windows(tuple(target.shape), axes):
        target[window] = np.asarray(source[window])


def _transforms(pixel_size: tuple[float, ...], axes: str, factors: tuple[int, ...], level: int,
                *, centred: bool) -> list[dict[str, Any]]:
    scale, shift = [], []
    spatial = iter(pixel_size)
    for axis, factor in zip(axes, factors):
        size = 1.0 if axis == "C" else float(next(spatial))
        step = factor**level
        scale.append(size * step)
        shift.append(size * (step - 1) / 2 if centred else 0.0)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if any(shift):
        transforms.append({"type": "translation", "translation": shift})
    return transforms


def _multiscales(name: str, axes: str, pixel_size: tuple[float, ...], factors: tuple[int, ...], levels: int,
                 *, centred: bool, calibrated: bool) -> list[dict[str, Any]]:
    axis_meta = []
    for axis in axes:
        letter, kind = _AXIS[axis]
        meta = {"name": letter, "type": kind}
        if kind == "space" and calibrated:
            meta["unit"] = "micrometer"
        axis_meta.append(meta)
    datasets = [{"path": str(k), "coordinateTransformations": _transforms(pixel_size, axes, factors, k, centred=centred)}
                for k in range(levels)]
    return [{"name": name, "axes": axis_meta, "datasets": datasets}]


def _check_axes(axes: str, ndim: int, *, channels: bool, path: Path) -> str:
    axes = axes.upper()
    allowed = ("CYX", "CZYX") if channels else ("YX", "ZYX")
    if axes not in allowed or len(axes) != ndim:
        raise FluosegError(f"axes {axes!r} do not fit an array of {ndim} dimensions; use one of {allowed}", path)
    return axes


def _check_pixel_size(pixel_size: Sequence[float] | None, n_spatial: int, path: Path) -> tuple[tuple[float, ...], bool]:
    if pixel_size is None:
        return (1.0,) * n_spatial, False
    sizes = tuple(float(s) for s in pixel_size)
    if len(sizes) != n_spatial or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise FluosegError(f"pixel_size {tuple(pixel_size)} must give {n_spatial} positive sizes in µm", path)
    return sizes, True


def _write_pyramid(group: Any, array: Any, axes: str, factors: tuple[int, ...], levels: int, *,
                   labels: bool, chunks: Sequence[int] | None) -> None:
    dtype = np.dtype(array.dtype)
    shapes = _level_shapes(tuple(int(n) for n in array.shape), factors, levels)
    previous = None
    for level, shape in enumerate(shapes):
        level_chunks = tuple(min(c, n) for c, n in zip(chunks or default_chunks(shape, axes, dtype.itemsize), shape))
        target = group.create_array(str(level), shape=shape, chunks=level_chunks, dtype=dtype, fill_value=0,
                                    dimension_names=[_AXIS[a][0] for a in axes])
        if previous is None:
            _copy(array, target, axes)
        else:
            _downsample(previous, target, axes, factors, labels=labels)
        previous = target


# Distinct, saturated colours for named label values (matplotlib's tab10).
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _image_label(values: Mapping[int, str], first_colour: int = 0) -> dict[str, Any]:
    """``image-label`` metadata: a colour and a class name per named value.

    ``colors`` is written even when empty: ome-zarr-models 1.6 rejects an image-label
    without it, although NGFF makes it optional.
    """
    ordered = sorted((int(k), str(v)) for k, v in values.items())
    palette = [_PALETTE[(first_colour + i) % len(_PALETTE)] for i in range(len(ordered))]
    return {
        "version": NGFF_VERSION,
        "colors": [{"label-value": k, "rgba": [*rgb, 255]} for (k, _), rgb in zip(ordered, palette)],
        "properties": [{"label-value": k, "class": v} for k, v in ordered],
        "source": {"image": "../../"},
    }


def _level_factors(multiscale: dict[str, Any], axes: str) -> list[int]:
    """Per-axis downsampling factor between levels 0 and 1 of an image (1 with a single level)."""
    datasets = multiscale["datasets"]
    if len(datasets) < 2:
        return [2 if a in "YX" else 1 for a in axes]
    first, second = (d["coordinateTransformations"][0]["scale"] for d in datasets[:2])
    return [max(1, round(b / a)) for a, b in zip(first, second)]


def _add_labels(image_group: Any, labels: Mapping[str, Any], values: Mapping[str, Mapping[int, str] | None],
                image_path: Path, *, overwrite: bool, first_colour: int = 0) -> None:
    import zarr

    ome = image_group.attrs.asdict().get("ome")
    if image_group.metadata.zarr_format != 3 or not ome or "multiscales" not in ome:
        raise FluosegError("labels can only be added to an OME-NGFF 0.5 image (Zarr v3); write the image "
                           "with write_ngff_image first", image_path)
    multiscale = ome["multiscales"][0]
    axes = "".join(a["name"].upper() for a in multiscale["axes"])
    spatial = [i for i, a in enumerate(axes) if a != "C"]
    spatial_axes = "".join(axes[i] for i in spatial)
    image_shape = tuple(int(image_group[multiscale["datasets"][0]["path"]].shape[i]) for i in spatial)
    levels = len(multiscale["datasets"])
    factors = tuple(_level_factors(multiscale, axes)[i] for i in spatial)
    level0_scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    sizes = tuple(float(level0_scale[i]) for i in spatial)
    calibrated = any("unit" in a for a in multiscale["axes"])
    group = zarr.open_group(str(image_path / "labels"), mode="a", zarr_format=3)
    listed = list(group.attrs.asdict().get("ome", {}).get("labels", []))
    for position, (name, array) in enumerate(labels.items()):
        if not name or "/" in name or name.startswith("."):
            raise FluosegError(f"label name {name!r} must be a plain folder name", image_path)
        if tuple(int(n) for n in array.shape) != image_shape or np.dtype(array.dtype).kind not in "ui":
            raise FluosegError(f"labels {name!r} must be integers of the image's spatial shape {image_shape}, "
                               f"got {np.dtype(array.dtype)} {tuple(array.shape)}", image_path)
        final = image_path / "labels" / name
        refuse_existing(final, overwrite)
        tmp = temporary_sibling(final)
        try:
            label_group = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
            _write_pyramid(label_group, array, spatial_axes, factors, levels, labels=True, chunks=None)
            # each label image of one call starts at its own colour, so overlaid classes differ
            image_label = _image_label(values.get(name) or {}, first_colour + position)
            label_group.attrs["ome"] = {
                "version": NGFF_VERSION,
                "multiscales": _multiscales(name, spatial_axes, sizes, factors, levels, centred=False,
                                            calibrated=calibrated),
                "image-label": image_label,
            }
        except BaseException:
            remove(tmp)
            raise
        commit(tmp, final, overwrite)
        listed = [*dict.fromkeys([*listed, name])]
        group.attrs["ome"] = {"version": NGFF_VERSION, "labels": listed}


def write_ngff_image(path: str | Path, array: Any, *, axes: str, channel_names: Sequence[str] | None = None,
                     pixel_size: Sequence[float] | None = None, levels: int | None = None,
                     downsample_z: bool = False, chunks: Sequence[int] | None = None,
                     labels: Mapping[str, Any] | None = None,
                     label_values: Mapping[str, Mapping[int, str]] | None = None,
                     overwrite: bool = False) -> Path:
    """Write a multiscale OME-Zarr 0.5 image, optionally with label images, atomically.

    Parameters
    ----------
    path
        The ``.ome.zarr`` folder to create.
    array
        ``(C, [Z,] Y, X)`` image (numpy or zarr; zarr is copied window by window).
    axes
        ``"CYX"`` or ``"CZYX"``.
    channel_names
        One name per channel (stored as ``omero`` channel labels).
    pixel_size
        ``([z,] y, x)`` in µm; without it the axes carry no unit.
    levels
        Pyramid levels; default until the longer of Y and X is at most 256.
    downsample_z
        Halve Z too at each level (for near-isotropic stacks); default only Y and X.
    chunks
        Chunk shape of level 0 (and of the coarser levels, clipped); default all channels
        x 1 plane x 512 x 512.
    labels
        ``{name: ([Z,] Y, X) integer array}`` written as ``labels/<name>`` in the same store.
    label_values
        ``{name: {value: class}}`` stored as ``image-label`` properties.
    overwrite
        Replace an existing store.

    Returns
    -------
    Path
        ``path``, holding levels ``0..levels-1`` and ``labels/`` when labels were given.

    Raises
    ------
    FluosegError
        For axes, pixel sizes or labels that do not fit the array, or an existing output.
    """
    import zarr

    path = Path(path)
    axes = _check_axes(axes, len(array.shape), channels=True, path=path)
    sizes, calibrated = _check_pixel_size(pixel_size, len(axes) - 1, path)
    names = None if channel_names is None else [str(n) for n in channel_names]
    if names is not None and len(names) != int(array.shape[0]):
        raise FluosegError(f"{len(names)} channel names for {int(array.shape[0])} channels; give one per channel", path)
    n_levels = pyramid_levels(array.shape[-2:]) if levels is None else int(levels)
    if not 1 <= n_levels <= 20:
        raise FluosegError(f"levels must be between 1 and 20, got {levels!r}", path)
    factors = _factors(axes, downsample_z)
    if chunks is not None and (len(chunks) != len(axes) or min(int(c) for c in chunks) < 1):
        raise FluosegError(f"chunks {tuple(chunks)} must give one positive size per axis of {axes}", path)
    refuse_existing(path, overwrite)
    tmp = temporary_sibling(path)
    try:
        group = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        _write_pyramid(group, array, axes, factors, n_levels, labels=False, chunks=chunks)
        ome: dict[str, Any] = {"version": NGFF_VERSION,
                               "multiscales": _multiscales(path.name, axes, sizes, factors, n_levels, centred=True,
                                                           calibrated=calibrated)}
        if names is not None:
            ome["omero"] = {"channels": [{"label": n, "active": True, "color": "FFFFFF",
                                          "window": {"start": 0, "end": 1, "min": 0, "max": 1}} for n in names]}
        group.attrs["ome"] = ome
        if labels:
            _add_labels(group, labels, dict(label_values or {}), tmp, overwrite=False)
    except BaseException:
        remove(tmp)
        raise
    return commit(tmp, path, overwrite)


def write_ngff_labels(image_path: str | Path, name: str, labels: Any, *,
                      values: Mapping[int, str] | None = None, overwrite: bool = False,
                      first_colour: int = 0) -> Path:
    """Add a label image as ``labels/<name>`` to an existing OME-Zarr 0.5 image.

    The label pyramid gets as many levels as the image, with the image's pixel sizes and
    downsampling factors, so viewers overlay them.

    Parameters
    ----------
    image_path
        The image's ``.ome.zarr`` folder (e.g. from :func:`write_ngff_image` or
        :func:`fluoseg.io.write_image`).
    name
        Folder name of the label image.
    labels
        ``([Z,] Y, X)`` integer array of the image's spatial shape (numpy or zarr).
    values
        ``{value: class name}`` stored as ``image-label`` properties, each with a colour.
    overwrite
        Replace an existing label image of that name.
    first_colour
        Index in the palette (matplotlib's tab10) of the first named value's colour.

    Returns
    -------
    Path
        ``image_path / "labels" / name``.

    Raises
    ------
    FluosegError
        When the image is not OME-NGFF 0.5, the labels do not fit it, or the name exists.
    """
    import zarr

    image_path = Path(image_path)
    try:
        group = zarr.open_group(str(image_path), mode="r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise FluosegError("no OME-Zarr image here; write the image first (write_ngff_image)", image_path) from None
    _add_labels(group, {name: labels}, {name: values}, image_path, overwrite=overwrite, first_colour=first_colour)
    return image_path / "labels" / name


def write_ngff_masks(image_path: str | Path, masks: Any, class_names: Sequence[str], *,
                     overwrite: bool = False) -> list[Path]:
    """Add per-class binary masks ``(n_classes, [Z,] Y, X)`` as one label image per class.

    Classes may overlap (tissue contains vessels), so each becomes ``labels/<class>`` with
    values 0/1 (1 named after the class) rather than one image of class indices.

    Returns
    -------
    list of Path
        The label folders, in class order.
    """
    labels, values = mask_labels(masks, class_names, path=Path(image_path))
    return [write_ngff_labels(image_path, name, array, values=values[name], overwrite=overwrite, first_colour=i)
            for i, (name, array) in enumerate(labels.items())]


def mask_labels(masks: Any, class_names: Sequence[str], *,
                path: Path | None = None) -> tuple[dict[str, Any], dict[str, dict[int, str]]]:
    """Per-class binary masks ``(n_classes, [Z,] Y, X)`` as ``labels`` and ``label_values`` of :func:`write_ngff_image`.

    Each class becomes a lazily sliced uint8 label image (0/1, 1 named after the class), so
    on-disk masks are never loaded whole.

    Raises
    ------
    FluosegError
        When the number of class names differs from the number of masks.
    """
    if len(class_names) != int(masks.shape[0]):
        raise FluosegError(f"{len(class_names)} class names for {int(masks.shape[0])} masks; give one per class", path)
    names = [str(n) for n in class_names]
    return ({name: _Channel(masks, i) for i, name in enumerate(names)}, {name: {1: name} for name in names})


def read_label_masks(path: str | Path) -> Any:
    """The label images of an OME-Zarr as masks ``(labels, [Z,] Y, X)``: 1 where a label is > 0.

    What ``fluoseg predict --format ngff`` wrote (``labels/<class>`` 0/1, or
    ``labels/objects``) read back as masks, lazily (level 0 of each label image, window by
    window), named after the label images, with the image's pixel size.

    Returns
    -------
    fluoseg.io.ImageData or None
        None when ``path`` is no Zarr store or lists no label images.
    """
    import zarr

    from fluoseg.io._lazy import StackedChannels
    from fluoseg.io._read import ImageData, read_image

    path = Path(path)
    if not (path / "labels").is_dir():
        return None
    try:
        group = zarr.open_group(str(path / "labels"), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return None
    attrs = group.attrs.asdict()
    names = [str(n) for n in attrs.get("ome", attrs).get("labels", [])]
    if not names:
        return None
    parts = []
    for name in names:
        label_attrs = group[name].attrs.asdict()
        level0 = label_attrs.get("ome", label_attrs)["multiscales"][0]["datasets"][0]["path"]
        parts.append(_Channel(group[name][level0]))
    image = read_image(path, lazy=True)
    if tuple(parts[0].shape) != image.spatial_shape:
        raise FluosegError(f"the label images cover {tuple(parts[0].shape)} but the image {image.spatial_shape}", path)
    return ImageData(array=StackedChannels(parts), axes=image.axes, channel_names=tuple(names),
                     pixel_size=image.pixel_size, path=path)


class _Channel:
    """One channel of a (possibly on-disk) array (or the array itself), sliced lazily, as 0/1 uint8."""

    def __init__(self, array: Any, index: int | None = None) -> None:
        self.array, self.index = array, index
        self.shape = tuple(int(n) for n in array.shape[0 if index is None else 1:])
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, window: Any) -> np.ndarray:
        window = window if isinstance(window, tuple) else (window,)
        key = window if self.index is None else (self.index, *window)
        return (np.asarray(self.array[key]) > 0).astype(np.uint8)
