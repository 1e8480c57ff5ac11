"""The widget's work without Qt: load a model, predict from marker layers, count tiles.

:class:`LayerSegmentation` runs a :class:`~fluoseg.infer.Segmenter` (run directory,
fluoseg package or zoo model) or a foreign bioimage.io package on the image layers mapped
to its markers and returns napari layer data. ``on_tile`` is called once per network
tile, so a progress bar can follow: the total is known before prediction starts
(:meth:`LayerSegmentation.tile_count`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.bioimage.foreign import ForeignModel, load_model
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.napari.layers import LayerData, prediction_layers, stack_markers
from fluoseg.tiling import plan_tiles

TILE_SIZE = 572


@dataclass
class LayerSegmentation:
    """A loaded model and what the widget shows of it.

    Attributes
    ----------
    model
        The segmenter (or a foreign package's runner).
    source
        What the user chose (path or zoo name).
    """

    model: Segmenter | ForeignModel
    source: str

    @classmethod
    def load(cls, source: str | Path, *, device: str = "auto") -> LayerSegmentation:
        """Load a run directory, a bioimage.io package or a zoo model by name."""
        return cls(model=load_model(source, device=device), source=str(source))

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(self.model.panel.names)

    @property
    def kind(self) -> str:
        """``"instance"``, ``"semantic"`` or ``"regression"``."""
        return self.model.task_name

    def tile_count(self, spatial: tuple[int, ...], tile_size: int = TILE_SIZE) -> int | None:
        """Network tiles a prediction of ``([Z], Y, X)`` takes (``None`` for foreign packages)."""
        if not isinstance(self.model, Segmenter):
            return None
        planes = int(np.prod(spatial[:-2], dtype=np.int64))
        return sum(len(plan_tiles(spatial[-2:], self.model.tile_geometry(m, tile_size))) * planes
                   for m in self.model.members)

    def predict(self, images: Mapping[str, np.ndarray], *, tile_size: int = TILE_SIZE, probabilities: bool = False,
                scale: tuple[float, ...] | None = None, on_tile: Callable[[], None] | None = None) -> list[LayerData]:
        """Segment the marker images (``marker -> ([Z], Y, X)`` array) into napari layers.

        Markers missing from ``images`` are treated as absent: the model uses the others.
        """
        stack, names = stack_markers(images)
        options = PredictOptions(markers=tuple(names), tile_size=tile_size)
        name = Path(self.source).name.removesuffix(".zip") or "fluoseg"
        with _counting_tiles(self.model, on_tile):
            if self.kind == "instance":
                labels, _ = self.model.predict_labels(stack, names, options)
                return prediction_layers(labels, kind="instance", classes=(), name=name, scale=scale)
            if self.kind == "regression":
                maps = np.asarray(self.model.predict_probabilities(stack, names, options))
                return prediction_layers(maps, kind="regression", classes=self.model.classes, name=name, scale=scale)
            masks, maps = self.model.predict_masks(stack, names, options)
        return prediction_layers(masks, kind="semantic", classes=self.model.classes, name=name, scale=scale,
                                 probabilities=np.asarray(maps) if probabilities else None)


class _counting_tiles:
    """Call ``on_tile`` after every forward pass of the segmenter's networks (forward hooks)."""

    def __init__(self, model: Any, on_tile: Callable[[], None] | None) -> None:
        self.networks = [m.model for m in getattr(model, "members", [])] if on_tile else []
        self.on_tile = on_tile
        self.handles: list[Any] = []

    def __enter__(self) -> None:
        self.handles = [n.register_forward_hook(lambda *_: self.on_tile()) for n in self.networks]

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
