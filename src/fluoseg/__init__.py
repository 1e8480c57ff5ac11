"""fluoseg: deep-learning segmentation of multi-channel fluorescence microscopy images.

One model serves any subset of the markers it was trained on (Marker Sampling and Marker
Excite), markers are matched by name, and images of any size are segmented tile by tile.

The public API (imported lazily, so ``import fluoseg`` stays fast and loading a config
needs no torch)::

    config = fluoseg.load_config("config.yaml")
    run_dir = fluoseg.train(config, "runs/vessels")
    segmenter = fluoseg.Segmenter.load(run_dir)
    image = fluoseg.read_image("scan.ome.tif")
    masks, probabilities = segmenter.predict_masks(image.array, image.channel_names, markers=["DAPI"])
    fluoseg.write_image("scan_masks.tif", masks, axes="CYX", channel_names=list(segmenter.classes))
    rows = fluoseg.evaluate("pred/", "truth/", task="semantic")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_PUBLIC = {
    "load_config": "fluoseg.config",
    "RunConfig": "fluoseg.config",
    "train": "fluoseg.train.trainer",
    "Segmenter": "fluoseg.infer",
    "PredictOptions": "fluoseg.infer",
    "RunDir": "fluoseg.run",
    "Checkpoint": "fluoseg.run",
    "MarkerPanel": "fluoseg.markers",
    "read_image": "fluoseg.io",
    "read_labels": "fluoseg.io",
    "read_mask": "fluoseg.io",
    "write_image": "fluoseg.io",
    "evaluate": "fluoseg.evaluate",
    "FluosegError": "fluoseg.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fluoseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
