"""npe2 reader: fluoseg outputs (labels, masks, probabilities) and OME-Zarr images with labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fluoseg.errors import FluosegError
from fluoseg.io import supported_suffixes
from fluoseg.napari.layers import LayerData, read_layers


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader function for ``path``, or ``None`` when fluoseg cannot read it (napari tries others)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(any(p.lower().rstrip("/").endswith(s) for s in supported_suffixes()) for p in paths):
        return None
    return read


def read(path: str | list[str]) -> list[LayerData]:
    """Layer data of every path (see :func:`fluoseg.napari.layers.read_layers`).

    Raises
    ------
    FluosegError
        For damaged files, with the file named (napari shows the message).
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for item in paths:
        if not Path(item).exists():
            raise FluosegError("file not found", path=item)
        layers.extend(read_layers(item))
    return layers
