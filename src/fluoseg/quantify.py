"""Volume fractions of segmented classes inside a tissue mask, per sample and region.

The MS-ME paper quantifies bone marrow vasculature as "the ratio of [the vessels']
respective foreground pixels within the newly defined tissue class to the total number of
foreground tissue pixels", separately in the diaphysis and the metaphysis (Fig. 5c), and
the fraction of fetal liver tissue volume occupied by vessels (Fig. 6g). For every class
``c`` and region ``r`` of a sample this module counts

* ``class_pixels``  = |c ∩ tissue ∩ r|,
* ``tissue_pixels`` = |tissue ∩ r|,
* ``fraction``      = ``class_pixels / tissue_pixels`` (NaN when the region holds no tissue),

and, when the pixel size is known, the same counts in µm² (2D: ``class_area_um2``,
``tissue_area_um2``) or µm³ (3D: ``class_volume_um3``, ``tissue_volume_um3``). The region
``"all"`` is the whole image; further regions come from a label image (each id > 0 is one
region, e.g. 1 = diaphysis, 2 = metaphysis) or from named, possibly overlapping masks.
Without a tissue mask every pixel counts as tissue.

Results are tidy rows ``{"sample", "region", "class", "metric", "value"}``. Inputs are read
window by window, so Zarr stores larger than memory are counted in bounded memory. The
counting is numpy-only; :func:`quantify_files` reads files through :mod:`fluoseg.io`;
:func:`plot_fractions` draws with matplotlib's Agg canvas.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError

__all__ = ["ALL_REGIONS", "plot_fractions", "quantify_files", "quantify_volumes"]

ALL_REGIONS = "all"
"""Region name of the whole image."""

_Z_WINDOW = 8


def _windows(shape: tuple[int, ...], block: int) -> Iterator[tuple[slice, ...]]:
    """Windows of ``block`` pixels in Y and X (and ``_Z_WINDOW`` slices) covering ``shape``."""
    steps = [block] * len(shape)
    if len(shape) == 3:
        steps[0] = _Z_WINDOW
    ranges = [range(0, n, s) for n, s in zip(shape, steps)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(a, min(a + s, n)) for a, s, n in zip(starts, steps, shape))


def _binary(window: Any, what: str) -> np.ndarray:
    """A 0/1 (or 0/255, or boolean) window as booleans."""
    array = np.asarray(window)
    if array.dtype == bool:
        return array
    ones = array == 1
    if array.size and not np.all(ones | (array == 0) | (array == 255)):
        raise FluosegError(f"the {what} must hold only 0/1 (or 0/255) values; threshold probabilities "
                           "into a mask first")
    return ones | (array == 255)


def _region_ids(window: Any) -> np.ndarray:
    """A window of a region label image as non-negative integers."""
    ids = np.asarray(window)
    if ids.dtype.kind == "f" and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
        ids = ids.astype(np.int64)
    if ids.dtype.kind not in "ui" or (ids.size and ids.min() < 0):
        raise FluosegError("the region image must hold non-negative whole-number region ids (0 = no region)")
    return ids


class _Counts:
    """Running pixel counts per region: tissue, and class within tissue."""

    def __init__(self, n_classes: int) -> None:
        self.tissue: dict[Any, int] = defaultdict(int)
        self.classes: dict[Any, np.ndarray] = defaultdict(lambda: np.zeros(n_classes, np.int64))

    def add(self, region: Any, tissue: int, classes: np.ndarray) -> None:
        self.tissue[region] += int(tissue)
        self.classes[region] += classes


def _count_window(counts: _Counts, masks: np.ndarray, tissue: np.ndarray, regions: Any, window: tuple[slice, ...]) -> None:
    inside = masks & tissue
    counts.add(ALL_REGIONS, tissue.sum(), inside.reshape(len(masks), -1).sum(axis=1))
    if regions is None:
        return
    if isinstance(regions, Mapping):
        for name, region in regions.items():
            area = _binary(region[window], f"region mask {name!r}")
            counts.add(name, (tissue & area).sum(), (inside & area).reshape(len(masks), -1).sum(axis=1))
        return
    ids = _region_ids(regions[window])
    nothing = np.zeros(len(masks), np.int64)
    for region in np.unique(ids):
        if region > 0:  # a region without tissue still reports (a NaN fraction)
            counts.add(int(region), 0, nothing)
    for region, n in zip(*np.unique(ids[tissue], return_counts=True)):
        if region > 0:
            counts.add(int(region), n, nothing)
    for c, member in enumerate(inside):
        for region, n in zip(*np.unique(ids[member], return_counts=True)):
            if region > 0:
                counts.classes[int(region)][c] += n


def _spatial_shape(masks: Any) -> tuple[int, ...]:
    shape = tuple(int(n) for n in masks.shape)
    if len(shape) not in (3, 4):
        raise FluosegError(f"masks must be (classes, [Z,] Y, X), got shape {shape}")
    return shape[1:]


def _check_same_shape(array: Any, shape: tuple[int, ...], what: str) -> None:
    if array is not None and tuple(int(n) for n in array.shape) != shape:
        raise FluosegError(f"the {what} has shape {tuple(array.shape)} but the masks cover {shape}; "
                           "give images of the same size")


def quantify_volumes(masks: Any, *, tissue: Any = None, regions: Any = None,
                     class_names: Sequence[str] | None = None, region_names: Mapping[int, str] | None = None,
                     pixel_size: Sequence[float] | None = None, sample: str = "sample",
                     block: int = 1024) -> list[dict[str, Any]]:
    """Count each class's pixels inside the tissue, per region, and their fraction.

    Parameters
    ----------
    masks
        ``(n_classes, [Z,] Y, X)`` masks of 0/1 (0/255 and booleans work), numpy or zarr.
    tissue
        ``([Z,] Y, X)`` tissue mask; None counts every pixel as tissue.
    regions
        ``([Z,] Y, X)`` integer label image (0 = outside every region), or a mapping
        ``{name: ([Z,] Y, X) mask}`` of possibly overlapping regions, or None.
    class_names
        One name per class; default ``class1``, ``class2``, ...
    region_names
        Names for the ids of a region label image; other ids are named by their number.
    pixel_size
        ``(y, x)`` or ``(z, y, x)`` in µm, or one size for every axis; adds areas (µm²)
        or volumes (µm³).
    sample
        The sample name put in every row.
    block
        Window side in pixels for streaming (memory ~ classes x block² bytes).

    Returns
    -------
    list of dict
        Rows ``sample, region, class, metric, value``; regions ``"all"`` first, then the
        label ids in increasing order (or the mapping's order); per class ``class_pixels``,
        ``tissue_pixels``, ``fraction`` and, with a pixel size, the physical measures.

    Raises
    ------
    FluosegError
        For shapes that differ, masks that are not 0/1, region ids that are not
        non-negative integers, or names/pixel sizes that do not fit the data.
    """
    shape = _spatial_shape(masks)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise FluosegError(f"block must be a positive number of pixels, got {block!r}")
    n_classes = int(masks.shape[0])
    names = [f"class{i + 1}" for i in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n_classes:
        raise FluosegError(f"{len(names)} class names were given for {n_classes} mask channels; give one per class")
    _check_same_shape(tissue, shape, "tissue mask")
    for what, region in (regions.items() if isinstance(regions, Mapping) else [("region image", regions)]):
        _check_same_shape(region, shape, str(what))
    unit = _unit_size(pixel_size, len(shape))
    counts = _Counts(n_classes)
    if regions is not None and not isinstance(regions, Mapping):
        for region_id in region_names or {}:  # named regions are reported even when absent
            counts.add(int(region_id), 0, np.zeros(n_classes, np.int64))
    for window in _windows(shape, int(block)):
        window_masks = _binary(masks[(slice(None), *window)], "masks")
        window_tissue = np.ones(window_masks.shape[1:], bool) if tissue is None else _binary(tissue[window], "tissue mask")
        _count_window(counts, window_masks, window_tissue, regions, window)
    order = [ALL_REGIONS] + (list(regions) if isinstance(regions, Mapping)
                             else sorted(k for k in counts.tissue if k != ALL_REGIONS))
    return _rows(counts, order, names, region_names or {}, unit, len(shape), sample)


def _unit_size(pixel_size: Sequence[float] | None, ndim: int) -> float | None:
    if pixel_size is None:
        return None
    sizes = [float(s) for s in pixel_size]
    if len(sizes) == 1:  # one size: isotropic pixels or voxels
        sizes *= ndim
    if len(sizes) != ndim or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise FluosegError(f"pixel_size must give {ndim} positive sizes in µm ({'z, ' if ndim == 3 else ''}y, x) or one, "
                           f"got {tuple(pixel_size)}")
    return float(np.prod(sizes))


def _rows(counts: _Counts, order: list[Any], names: list[str], region_names: Mapping[int, str],
          unit: float | None, ndim: int, sample: str) -> list[dict[str, Any]]:
    measure = "area_um2" if ndim == 2 else "volume_um3"
    rows = []
    for region in order:
        label = region_names.get(region, str(region)) if isinstance(region, int) else str(region)
        tissue = counts.tissue[region]
        for name, count in zip(names, counts.classes[region]):
            values = {"class_pixels": int(count), "tissue_pixels": tissue,
                      "fraction": count / tissue if tissue else math.nan}
            if unit is not None:
                values[f"class_{measure}"] = int(count) * unit
                values[f"tissue_{measure}"] = tissue * unit
            rows += [{"sample": sample, "region": label, "class": name, "metric": metric, "value": value}
                     for metric, value in values.items()]
    return rows


class _FileWindows:
    """Windows of a file's array (or one channel of it), checked as read; errors name the file."""

    def __init__(self, array: Any, path: Path, *, channel: int | None, kind: str) -> None:
        self.array, self.path, self.channel, self.kind = array, path, channel, kind
        self.shape = tuple(int(n) for n in (array.shape if channel is None else array.shape[1:]))

    def __getitem__(self, window: tuple[slice, ...]) -> np.ndarray:
        index = window if self.channel is None else (self.channel, *window)
        try:
            data = np.asarray(self.array[index])
            return _region_ids(data) if self.kind == "regions" else _binary(data, self.kind)
        except FluosegError as exc:
            raise FluosegError(exc.message, self.path) from None


def _as_paths(value: Any, count: int | None, what: str) -> list[Path | None]:
    if value is None:
        return [None] * (count or 0)
    paths = [Path(value)] if isinstance(value, (str, os.PathLike)) else [Path(v) for v in value]
    if count is not None and len(paths) != count:
        raise FluosegError(f"{len(paths)} {what} files were given for {count} mask files; give one per sample")
    return list(paths)


def _open(path: Path, expected: tuple[int, ...] | None, what: str) -> Any:
    from fluoseg.io import read_image
    from fluoseg.io.ngff import read_label_masks

    # an OME-Zarr with label images ('fluoseg predict --format ngff'): its labels are the masks
    image = read_label_masks(path) if what == "masks" else None
    image = image or read_image(path)  # lazy for Zarr, loaded for other formats
    if expected is not None and image.spatial_shape != expected:
        raise FluosegError(f"the {what} covers {image.spatial_shape} but the masks cover {expected}; "
                           "give images of the same size", path)
    return image


def _sample_name(path: Path) -> str:
    return path.name.split(".")[0] or path.name


def quantify_files(masks: str | os.PathLike | Sequence[str | os.PathLike],
                   tissue: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                   regions: str | os.PathLike | Sequence[str | os.PathLike] | None = None, *,
                   class_names: Sequence[str] | None = None, region_names: Mapping[int, str] | None = None,
                   pixel_size: Sequence[float] | None = None, samples: Sequence[str] | None = None,
                   block: int = 1024) -> list[dict[str, Any]]:
    """:func:`quantify_volumes` on files, one sample per masks file.

    Parameters
    ----------
    masks
        One or several mask files (``(classes, [Z,] Y, X)`` 0/1, any format of
        :func:`fluoseg.io.read_image`; Zarr stays on disk and is read window by window), or
        OME-Zarr images with label images (``fluoseg predict --format ngff``): each label
        image is one class, 1 where it is > 0.
    tissue
        Tissue mask files (one channel), one per masks file, or None.
    regions
        Region files, one per masks file, or None. A one-channel file is a label image
        (0 = no region, ids named by ``region_names``); a file with several channels holds
        one mask per region, named by its channel names.
    class_names
        Names of the mask channels; default the masks file's channel names.
    region_names
        ``{id: name}`` for region label images, e.g. ``{1: "diaphysis", 2: "metaphysis"}``.
    pixel_size
        ``([z,] y, x)`` in µm, or one size for every axis; default the masks file's (then the
        tissue file's) metadata.
    samples
        Sample names; default each masks file's name up to its first dot.
    block
        Window side for streaming.

    Returns
    -------
    list of dict
        Tidy rows of every sample, as :func:`quantify_volumes`.

    Raises
    ------
    FluosegError
        For unreadable files, counts of files or names that do not match, images of
        different sizes, a tissue file with several channels, or non-binary masks.
    """
    mask_paths = [p for p in _as_paths(masks, None, "masks") if p is not None]
    tissue_paths = _as_paths(tissue, len(mask_paths), "tissue")
    region_paths = _as_paths(regions, len(mask_paths), "region")
    names = [str(s) for s in samples] if samples is not None else [_sample_name(p) for p in mask_paths]
    if len(names) != len(mask_paths) or len(set(names)) != len(names):
        raise FluosegError(f"sample names {names} must be unique, one per masks file; pass samples=... explicitly")
    rows: list[dict[str, Any]] = []
    for mask_path, tissue_path, region_path, sample in zip(mask_paths, tissue_paths, region_paths, names):
        image = _open(mask_path, None, "masks")
        shape = image.spatial_shape
        tissue_windows = region_windows = None
        size = pixel_size if pixel_size is not None else image.pixel_size
        if tissue_path is not None:
            tissue_image = _open(tissue_path, shape, "tissue mask")
            if tissue_image.n_channels != 1:
                raise FluosegError(f"a tissue mask has one channel, this file has {tissue_image.n_channels}; "
                                   "pass the tissue class alone", tissue_path)
            tissue_windows = _FileWindows(tissue_image.array, tissue_path, channel=0, kind="tissue mask")
            size = size if size is not None else tissue_image.pixel_size
        if region_path is not None:
            region_image = _open(region_path, shape, "region image")
            if region_image.n_channels == 1:
                region_windows = _FileWindows(region_image.array, region_path, channel=0, kind="regions")
            else:
                labels = region_image.channel_names or [f"region{i + 1}" for i in range(region_image.n_channels)]
                region_windows = {name: _FileWindows(region_image.array, region_path, channel=i, kind="region mask")
                                  for i, name in enumerate(labels)}
        rows += quantify_volumes(
            _FileWindows(image.array, mask_path, channel=None, kind="masks"), tissue=tissue_windows,
            regions=region_windows, class_names=class_names if class_names is not None else image.channel_names,
            region_names=region_names, pixel_size=size, sample=sample, block=block)
    return rows


def plot_fractions(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, metric: str = "fraction") -> Path:
    """Box plots of a metric over samples: one panel per class, one box per region.

    Like the MS-ME paper's Fig. 5c (vessel volume fraction of the bone marrow per region).
    Fractions are shown in percent; every sample is drawn as a point over its box.

    Parameters
    ----------
    rows
        Tidy rows from :func:`quantify_volumes` or :func:`quantify_files`.
    path
        PNG file to write (atomically).
    metric
        Which metric to plot.

    Returns
    -------
    Path
        The PNG written.

    Raises
    ------
    FluosegError
        When no row holds ``metric``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = [r for r in rows if r["metric"] == metric and not _is_nan(r["value"])]
    if not chosen:
        raise FluosegError(f"no finite {metric!r} values to plot; metrics present: "
                           f"{sorted({r['metric'] for r in rows})}")
    classes = list(dict.fromkeys(r["class"] for r in chosen))
    regions = list(dict.fromkeys(r["region"] for r in chosen))
    scale = 100.0 if metric == "fraction" else 1.0
    figure = Figure(figsize=(1.5 + 1.2 * len(regions) * len(classes), 4.0))
    FigureCanvasAgg(figure)
    # own y range per class: rare classes (arteries, < 1 %) would vanish next to common ones
    axes = figure.subplots(1, len(classes), squeeze=False)[0]
    jitter = np.random.default_rng(0)
    for ax, name in zip(axes, classes):
        data = [[scale * r["value"] for r in chosen if r["class"] == name and r["region"] == region] for region in regions]
        ax.boxplot(data, whis=1.5, widths=0.6, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.plot(i + jitter.uniform(-0.15, 0.15, len(values)), values, "o", markersize=3, alpha=0.7)
        ax.set_xticks(range(1, len(regions) + 1), [f"{r}\nn={len(v)}" for r, v in zip(regions, data)])
        ax.set_title(name)
    axes[0].set_ylabel("% of tissue" if metric == "fraction" else metric)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, path)
    return path


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
