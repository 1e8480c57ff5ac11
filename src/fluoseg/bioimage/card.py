"""The model card (``README.md``) and cover image of an exported package.

The card says what the spec cannot: how the activated maps become masks or instance
labels (fluoseg's decoding, with the trained constants), what the availability input
means, and how to use the package from fluoseg, napari, Fiji and QuPath. The cover shows
the test sample's markers next to the decoded result. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.bioimage.sizes import PackageSizes
from fluoseg.io import atomic_path, write_text_atomically

COVER_HEIGHT = 256
_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.float32)

_DECODING = {
    "semantic": ("Each pixel goes to the class with the highest probability, against a background of one minus the "
                 "summed class probabilities (softmax models) or 0.5 (sigmoid models)."),
    "border": ("Channels are background, object interior and touching border (softmax). Every pixel takes its "
               "most probable class; connected components of the interior class are seeds, grown by a watershed "
               "over interior and border pixels with the border probability as elevation; objects under "
               "`min_size` pixels are removed (Kromp et al.)."),
    "distance": ("Channel 0 is a distance-to-boundary map, channel 1 the foreground probability. Seeds are the "
                 "h-maxima (height `h`) of the distance map inside the foreground (probability > `threshold`), "
                 "grown by watershed on the inverted distance within the foreground; objects under `min_size` "
                 "pixels are removed."),
    "threshold": ("The foreground probability is thresholded at `threshold` and connected components become objects; "
                  "objects under `min_size` pixels are removed."),
    "regression": "The outputs are the predicted marker intensities (normalised); no decoding.",
}


def output_channel_names(task: Mapping[str, Any], classes: Sequence[str]) -> tuple[str, ...]:
    """Names of the activated channels of one member network."""
    if task.get("name") == "instance":
        return {"border": ("background", "interior", "border"), "distance": ("distance", "foreground"),
                "threshold": ("foreground",)}.get(str(task.get("method", "border")), ("foreground",))
    return tuple(classes)


def decoding_kind(task: Mapping[str, Any]) -> str:
    """``semantic``, ``regression`` or the instance method name (a key of the decoding notes)."""
    return str(task.get("method", "border")) if task.get("name") == "instance" else str(task.get("name"))


def write_model_card(path: Path, *, name: str, description: str, markers: Sequence[str],
                     output_channels: Sequence[str], task: Mapping[str, Any], classes: Sequence[str],
                     preprocess: Mapping[str, Any], sizes: PackageSizes, training: Mapping[str, Any],
                     fluoseg_version: str) -> Path:
    """Write the package's ``README.md``."""
    kind = decoding_kind(task)
    constants = {k: v for k, v in task.items() if k in ("min_size", "h", "threshold", "erosion", "target_diameter")}
    pixel = preprocess.get("pixel_size_um")
    normalisation = ("per image and channel, (x - mean) / std over y and x" if preprocess.get("normalization") !=
                     "percentile" else f"per image and channel, percentiles {preprocess.get('percentiles')} to 0 and 1")
    lines = [
        f"# {name}", "", description, "",
        f"Exported by fluoseg {fluoseg_version}. One network serves any subset of its markers: give the markers "
        "you have, fill the others with zeros, and say which are present in the availability input.", "",
        "## Inputs", "",
        f"- `image` (batch, channel, y, x), channels in this order: {', '.join(f'`{m}`' for m in markers)}. "
        "Missing markers are zero-filled channels.",
        "- `availability` (batch, channel), optional: 1 for each marker present, 0 for each missing one, same "
        "order. Left out, it is read off the image: a channel that is zero throughout is a missing marker.",
        f"- Normalisation: {normalisation} (the description's preprocessing).",
        f"- Pixel size: {f'{pixel} µm' if pixel else 'as in the training data (not recorded)'}; resample images "
        "to it first (fluoseg does this from the file's metadata).",
        f"- Sizes: {sizes.minimum} + n × {sizes.step} pixels per axis; tiles overlap by the output halo "
        f"({sizes.halo} px), which is at least the network's valid-convolution margin ({sizes.margin} px), so "
        "tiled and whole-image predictions agree.", "",
        "## Output", "",
        f"`maps` (batch, channel, y, x), channels {', '.join(f'`{c}`' for c in output_channels)}: "
        "activated network outputs (probabilities, or a distance map).", "",
        "## Decoding (not expressible in the bioimage.io spec)", "",
        _DECODING.get(kind, "See fluoseg's documentation."), "",
        f"Trained constants: {constants if constants else 'none'}."
        + (f" Classes: {', '.join(classes)}." if classes else ""), "",
        "`fluoseg predict` applies this decoding when it runs the package:", "",
        "```", "fluoseg predict model.zip image.tif --out predictions/ --channel-names "
        + ",".join(markers), "```", "",
        "## Use it from other tools", "",
        "- napari: `pip install fluoseg[napari]`, then *Plugins > fluoseg > Segment* and choose this package.",
        "- Fiji (deepImageJ) and QuPath: run the package for the `maps` output, or run fluoseg with "
        "`--format geojson` (QuPath objects) or `--format roi` (ImageJ ROI set).", "",
        "## Validation", "",
        "`bioimageio test` passes on this package (both weight formats reproduce the test output, and every "
        "admissible size runs). The test input is cut from a real sample; the test output is the network's "
        "prediction on it, which equals fluoseg's own prediction of that crop.", "",
        "## Training", "",
        *[f"- {key}: {value}" for key, value in training.items()], "",
        "## Limitations", "",
        "Trained on the data listed above only; check predictions on your own images before trusting counts. "
        "3D stacks are predicted slice by slice.", "",
    ]
    return write_text_atomically(path, "\n".join(lines))


def write_cover(path: Path, image: np.ndarray, decoded: np.ndarray, *, instance: bool) -> Path:
    """Write a 2:1 PNG: the input markers as a colour composite, and the decoded result.

    Parameters
    ----------
    image
        ``(K, Y, X)`` normalised marker slots.
    decoded
        Instance labels ``(Y, X)``, or masks / maps ``(C, Y, X)``.
    instance
        Whether ``decoded`` holds instance labels.
    """
    from PIL import Image

    left = _composite(image)
    right = _label_colours(decoded) if instance else _composite(decoded.astype(np.float32))
    pair = np.concatenate([left, right], axis=1)
    picture = Image.fromarray(pair).resize((2 * COVER_HEIGHT, COVER_HEIGHT), Image.Resampling.NEAREST)
    with atomic_path(path, overwrite=True) as temporary:
        picture.save(temporary, format="PNG")
    return path


def _composite(channels: np.ndarray) -> np.ndarray:
    """``(C, Y, X)`` -> ``(Y, X, 3)`` uint8: each channel contrast-stretched and coloured."""
    rgb = np.zeros(channels.shape[1:] + (3,), np.float32)
    for index, channel in enumerate(channels):
        low, high = np.percentile(channel, (1, 99.5))
        scaled = np.clip((channel - low) / (high - low), 0, 1) if high > low else np.zeros_like(channel)
        rgb += scaled[..., None] * _PALETTE[index % len(_PALETTE)]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """Instance labels -> ``(Y, X, 3)`` uint8, each object a palette colour, background black."""
    colours = np.vstack([np.zeros((1, 3), np.float32), _PALETTE])
    index = np.where(labels > 0, (labels - 1) % len(_PALETTE) + 1, 0)
    return colours[index].astype(np.uint8)
