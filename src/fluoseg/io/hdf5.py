"""HDF5 samples in the layout of the MS-ME paper's tooling (MiNTiF).

A file holds groups ``Sample_1``, ``Sample_2``... (MiNTiF numbers them from 0), each with
one 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` dataset per marker and per label, named after it.
MiNTiF tells them apart by name (``in_channel_*`` are markers, names containing
``label`` are labels, ``*coordinates*`` are point tables); files written by
:func:`write_hdf5_sample` also mark each dataset with an attribute ``kind``
(``"marker"`` or ``"label"``) and ``axes``. The sample's ``voxel_size`` attribute
(µm, z-y-x; MiNTiF writes ``[1, y, x]`` for 2D) gives the pixel size, or else a
dataset's ``element_size_um`` (the Fiji/ilastik convention).

MiNTiF's own training files, where a sample holds ``Patch_N`` subgroups of cut-out
patches, are not whole images and are refused with a message.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._atomic import atomic_path
from fluoseg.io._oserrors import os_errors_as_user_errors
from fluoseg.io._lazy import StackedChannels
from fluoseg.io._registry import ImageFormat, RawImage, ReadRequest, read_errors

MARKER, LABEL, POINTS = "marker", "label", "points"


def read_hdf5(path: Path, request: ReadRequest) -> RawImage:
    """Read marker or label datasets of one sample group (or one dataset by ``key``)."""
    import h5py

    with read_errors(path, "HDF5 file"):
        handle = h5py.File(path, "r")
    try:
        with read_errors(path, "HDF5 file"):
            node = _locate(handle, request.key, path)
            if isinstance(node, h5py.Dataset):
                parts = [node]
                axes = _dataset_axes(node)
                names = None if "C" in axes else (node.name.rsplit("/", 1)[-1],)
                sizes = _pixel_size(node.parent, node)
            else:
                parts, names = _choose(node, request, path)
                axes = "C" + _dataset_axes(parts[0])
                sizes = _pixel_size(node, parts[0])
            stacked = len(axes) == parts[0].ndim + 1
            if request.lazy:
                # the stack keeps the file open for as long as it is used; a lone
                # dataset gets a size-1 leading axis that the reader then drops
                array: Any = StackedChannels(parts, keepalive=handle)
                axes = axes if stacked else "1" + axes
            else:
                array = np.stack([p[()] for p in parts]) if stacked else parts[0][()]
    except BaseException:
        handle.close()
        raise
    if not request.lazy:
        handle.close()
    return RawImage(array=array, axes=axes, channel_names=names, pixel_size=sizes)


def _locate(handle: Any, key: str | None, path: Path) -> Any:
    import h5py

    if key is not None:
        node = handle.get(key.strip("/"))
        if node is None:
            raise FluosegError(
                f"no group or dataset {key!r} in the file; use one of {_listing(handle)}", path
            )
        return node
    groups = [name for name, item in handle.items() if isinstance(item, h5py.Group)]
    if len(groups) == 1:
        return handle[groups[0]]
    if not groups and len(handle):
        return handle
    raise FluosegError(
        f"the file holds {len(groups)} sample groups; pass key=... naming one of "
        f"{_listing(handle)}",
        path,
    )


def _listing(group: Any) -> str:
    return ", ".join(repr(n) for n in sorted(group.keys())) or "(none: the file is empty)"


def kind_of(name: str, dataset: Any) -> str:
    """Return ``"marker"``, ``"label"`` or ``"points"`` for a dataset of a sample."""
    kind = dataset.attrs.get("kind")
    if isinstance(kind, bytes):
        kind = kind.decode()
    if kind in (MARKER, LABEL, POINTS):
        return str(kind)
    lowered = name.lower()
    if "coordinates" in lowered or dataset.ndim < 2:
        return POINTS
    return LABEL if "label" in lowered else MARKER


def _choose(group: Any, request: ReadRequest, path: Path) -> tuple[list[Any], tuple[str, ...]]:
    import h5py

    if any(name.startswith("Patch_") for name in group.keys()):
        raise FluosegError(
            "the sample holds MiNTiF training patches (Patch_N groups), not a whole image; "
            "read the original images or write whole samples with write_hdf5_sample",
            path,
        )
    items = {
        name: ds
        for name, ds in group.items()
        if isinstance(ds, h5py.Dataset) and kind_of(name, ds) != POINTS
    }
    wanted_kind = MARKER if request.role == "image" else LABEL
    if request.channels is not None:
        missing = [c for c in request.channels if c not in items]
        if missing:
            raise FluosegError(
                f"channels {missing} are not in group {group.name!r}; it has "
                f"{sorted(items)}",
                path,
            )
        names = list(request.channels)
    else:
        names = [n for n, ds in items.items() if kind_of(n, ds) == wanted_kind]
    if not names:
        raise FluosegError(
            f"group {group.name!r} has no {wanted_kind} datasets (it has {sorted(items)}); "
            "pass key='<group>/<dataset>' to read one",
            path,
        )
    if request.role == "labels" and len(names) > 1:
        raise FluosegError(
            f"group {group.name!r} has several label datasets {names}; pass "
            f"key='{group.name.strip('/')}/<name>' to choose one",
            path,
        )
    parts = [items[n] for n in names]
    shapes = {tuple(p.shape) for p in parts}
    if len(shapes) > 1:
        raise FluosegError(
            f"datasets {names} of group {group.name!r} differ in shape {sorted(shapes)}; "
            "all channels of a sample must have the same shape",
            path,
        )
    return parts, tuple(names)


def _dataset_axes(dataset: Any) -> str:
    axes = dataset.attrs.get("axes")
    if axes is not None:
        return str(axes.decode() if isinstance(axes, bytes) else axes).upper()
    return {2: "YX", 3: "ZYX"}.get(dataset.ndim, "?" * dataset.ndim)


def _pixel_size(group: Any, dataset: Any) -> dict[str, float] | None:
    for source in (group.attrs.get("voxel_size"), dataset.attrs.get("element_size_um")):
        if source is None:
            continue
        values = [float(v) for v in np.atleast_1d(source)]
        if len(values) in (2, 3) and all(np.isfinite(v) and v > 0 for v in values):
            return dict(zip("zyx"[-len(values) :], values))
    return None


def write_hdf5_sample(
    path: str | Path,
    group: str,
    datasets: Mapping[str, Any],
    *,
    attrs: Mapping[str, Any] | None = None,
    labels: Collection[str] | None = None,
    pixel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Add one sample group (MiNTiF layout) to an HDF5 file.

    Parameters
    ----------
    path
        The ``.h5`` / ``.hdf5`` file; created atomically when missing, else the group
        is added to it in place (a failure removes the half-written group).
    group
        The sample group's name, e.g. ``"Sample_1"``.
    datasets
        Marker and label arrays by name, all ``(Y, X)`` or all ``(Z, Y, X)`` of one shape.
    attrs
        Extra attributes of the sample group.
    labels
        Names in ``datasets`` that are labels (masks, instance labels); default: names
        containing "label", as MiNTiF names them.
    pixel_size
        µm per pixel, ``(y, x)`` or ``(z, y, x)``; stored as the group's ``voxel_size``.
    overwrite
        Replace a group of the same name.

    Returns
    -------
    Path
        The file written.
    """
    import h5py

    path = Path(path)
    arrays = {name: np.asarray(a) for name, a in datasets.items()}
    label_names = set(labels) if labels is not None else {n for n in arrays if "label" in n.lower()}
    _check_sample(path, arrays, label_names, pixel_size)
    if not path.exists():
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
            _add_group(handle, group, arrays, label_names, attrs, pixel_size, overwrite, path)
        return path
    with read_errors(path, "HDF5 file"):
        handle = h5py.File(path, "a")
    with os_errors_as_user_errors(path, "add the sample to the file"), handle:
        _add_group(handle, group, arrays, label_names, attrs, pixel_size, overwrite, path)
    return path


def _add_group(
    handle: Any,
    group: str,
    arrays: Mapping[str, np.ndarray],
    label_names: set[str],
    attrs: Mapping[str, Any] | None,
    pixel_size: tuple[float, ...] | None,
    overwrite: bool,
    path: Path,
) -> None:
    if group in handle:
        if not overwrite:
            raise FluosegError(
                f"group {group!r} already exists; pass --overwrite to replace it", path
            )
        del handle[group]
    # keep the caller's channel order (HDF5 would otherwise list names alphabetically)
    sample = handle.create_group(group, track_order=True)
    try:
        for key, value in (attrs or {}).items():
            sample.attrs[key] = value
        if pixel_size is not None:
            sample.attrs["voxel_size"] = np.asarray(pixel_size, dtype=float)
        for name, array in arrays.items():
            data = array.astype(np.uint8) if array.dtype == np.bool_ else array
            ds = sample.create_dataset(name, data=data, compression="gzip", chunks=True)
            ds.attrs["kind"] = LABEL if name in label_names else MARKER
            ds.attrs["axes"] = "YX" if array.ndim == 2 else "ZYX"
    except BaseException:
        # appending works in place, so at least drop the half-written group
        del handle[group]
        raise


def _check_sample(
    path: Path, arrays: Mapping[str, np.ndarray], labels: set[str], pixel_size: Any
) -> None:
    if not arrays:
        raise FluosegError("no datasets given; pass at least one marker array", path)
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1 or len(next(iter(shapes))) not in (2, 3):
        raise FluosegError(
            f"datasets must all be (Y, X) or all (Z, Y, X) of one shape, got {sorted(shapes)}",
            path,
        )
    unknown = sorted(labels - set(arrays))
    if unknown:
        raise FluosegError(f"labels {unknown} are not among the datasets {sorted(arrays)}", path)
    if pixel_size is not None and len(pixel_size) not in (2, 3):
        raise FluosegError("pixel_size must be (y, x) or (z, y, x) in micrometres", path)


HDF5_FORMAT = ImageFormat(
    name="HDF5",
    suffixes=(".h5", ".hdf5"),
    reader=read_hdf5,
    container=True,
)
