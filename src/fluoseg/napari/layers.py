"""Between fluoseg arrays and napari layers: reading outputs, mapping layers to markers.

napari layers travel as *layer data tuples* ``(data, metadata, layer_type)``. This module
makes them from fluoseg's files and predictions and picks image layers for a model's
markers; it imports neither Qt nor napari.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.io import read_image, read_labels

LayerData = tuple[Any, dict[str, Any], str]


def match_layers(markers: Sequence[str], layer_names: Sequence[str]) -> dict[str, str | None]:
    """The image layer for each marker: the layer of that name (case-insensitive), else none."""
    by_name = {name.lower(): name for name in layer_names}
    return {marker: by_name.get(marker.lower()) for marker in markers}


def prediction_layers(result: np.ndarray, *, kind: str, classes: Sequence[str], name: str,
                      probabilities: np.ndarray | None = None, scale: Sequence[float] | None = None) -> list[LayerData]:
    """Layers of a prediction: instance labels, one Labels layer per class, or predicted channels.

    Parameters
    ----------
    result
        Labels ``([Z], Y, X)`` (``kind="instance"``), masks ``(n_classes, ...)`` (``"semantic"``)
        or predicted marker channels (``"regression"``).
    probabilities
        Semantic class probabilities to show as Image layers too.
    """
    meta = {"scale": tuple(scale)} if scale else {}
    if kind == "instance":
        return [(result, {"name": f"{name} labels", **meta}, "labels")]
    if kind == "regression":
        return [(channel, {"name": f"{name} {c}", "colormap": "magma", **meta}, "image")
                for c, channel in zip(classes, result)]
    layers: list[LayerData] = [(mask.astype(np.uint8), {"name": f"{name} {c}", "opacity": 0.6, **meta}, "labels")
                               for c, mask in zip(classes, result)]
    if probabilities is not None:
        layers += [(p, {"name": f"{name} {c} probability", "colormap": "viridis", "visible": False, **meta},
                    "image") for c, p in zip(classes, probabilities)]
    return layers


def read_layers(path: str | Path) -> list[LayerData]:
    """The layers of a fluoseg output or an OME-Zarr image with labels.

    - 16- or 32-bit integer images of one unnamed channel: instance labels (one Labels layer);
    - uint8 0/1 images: per-class masks (one Labels layer each, named by the channel names);
    - other images: one Image layer per channel, named by the channel names;
    - OME-Zarr: the image's channels, plus every label image under ``labels/``.
    """
    path = Path(path)
    image = read_image(path)
    scale = image.pixel_size
    layers = _image_layers(np.asarray(image.array), image.axes, image.channel_names, path.name.split(".")[0], scale)
    for label_name in _ome_zarr_label_names(path):
        labels = read_labels(path, key=f"labels/{label_name}")
        name = label_name.split(".")[0]
        layers.append((np.asarray(labels), {"name": name, **({"scale": tuple(scale)} if scale else {})}, "labels"))
    return layers


def _image_layers(array: np.ndarray, axes: str, names: Sequence[str] | None, stem: str,
                  scale: Sequence[float] | None) -> list[LayerData]:
    meta = {"scale": tuple(scale)} if scale else {}
    if "C" in axes and array.shape[0] == 1 and not names and array.dtype.kind in "iu" and array.dtype.itemsize >= 2:
        return [(array[0], {"name": stem, **meta}, "labels")]  # fluoseg's label images: 16/32-bit, no channels
    if "C" not in axes:
        kind = "labels" if array.dtype.kind in "iu" and array.dtype.itemsize >= 2 else "image"
        return [(array, {"name": stem, **meta}, kind)]
    names = list(names or [f"{stem} {i}" for i in range(array.shape[0])])
    is_masks = array.dtype == np.uint8 and array.max(initial=0) <= 1
    kind = "labels" if is_masks else "image"
    return [(channel, {"name": channel_name, **meta}, kind) for channel_name, channel in zip(names, array)]


def _ome_zarr_label_names(path: Path) -> list[str]:
    """Names listed in an OME-Zarr image's ``labels`` group (empty for anything else)."""
    import json

    for attributes in (path / "labels" / "zarr.json", path / "labels" / ".zattrs"):
        if attributes.is_file():
            content = json.loads(attributes.read_text(encoding="utf-8"))
            content = content.get("attributes", content)
            return list(content.get("ome", content).get("labels", []))
    return []


def stack_markers(images: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """``(C, [Z], Y, X)`` float32 of single-channel layer arrays, and the marker name of each channel."""
    names = list(images)
    shapes = {np.shape(images[n]) for n in names}
    if len(shapes) != 1:
        from fluoseg.errors import FluosegError

        raise FluosegError(f"the chosen layers differ in shape {sorted(shapes)}; choose layers of one image")
    return np.stack([np.asarray(images[n], dtype=np.float32) for n in names]), names
