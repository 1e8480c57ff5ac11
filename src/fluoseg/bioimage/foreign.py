"""Packages fluoseg did not make: run through bioimageio.core, tiled, as semantic models.

A bioimage.io model with one image input (any weights format bioimageio.core runs) gets
the interface ``fluoseg predict`` needs of a :class:`~fluoseg.infer.Segmenter`: its
input channels act as the marker panel (matched by name when the image's channel names
are among them, else by position), its first output's channels are the classes, the
package's own pre- and post-processing run, and bioimageio.core tiles the image into
blocks of the package's admissible sizes with its halo. The output maps are the
"probabilities"; masks are ``maps > 0.5`` per channel. Needs the ``bioimageio`` extra.

:func:`load_model` is what ``fluoseg predict`` calls: a run directory or a fluoseg package
gives a :class:`~fluoseg.infer.Segmenter`, any other package a :class:`ForeignModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.bioimage.package import is_package, open_package
from fluoseg.bioimage.sources import resolve_model
from fluoseg.errors import FluosegError
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.markers import MarkerPanel

MASK_THRESHOLD = 0.5
BLOCK_SIZE = 512
"""Block side (halo included) bioimageio.core is given when the options give no tile size."""


def load_model(source: str | Path, *, checkpoint: str = "best", device: str = "auto") -> Segmenter | ForeignModel:
    """The predictor behind a model argument: run directory, package, or zoo name.

    Raises
    ------
    FluosegError
        If the source does not exist, or a foreign package cannot be run.
    """
    path = resolve_model(source)
    if is_package(path) and not open_package(path).is_fluoseg:
        return ForeignModel.load(path, device=device)
    return Segmenter.load(path, checkpoint=checkpoint, device=device)


class ForeignModel:
    """A single-input bioimage.io model as a semantic segmenter (see the module docstring).

    Parameters
    ----------
    description
        The loaded ``bioimageio.spec`` model description.
    path
        Where it came from, for messages.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    task_name = "semantic"

    def __init__(self, description: Any, path: Path, device: str = "auto") -> None:
        self.description, self.path = description, path
        self.devices = None if device == "auto" else [device]
        (self.input,) = description.inputs
        self.output = description.outputs[0]
        self.panel = MarkerPanel(_channel_names(self.input, "channel"))
        self.classes = _channel_names(self.output, "class")

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> ForeignModel:
        """Load and validate a package with bioimageio.spec.

        Raises
        ------
        FluosegError
            If bioimageio.core is not installed, the package is invalid, or it has more than
            one input.
        """
        try:
            from bioimageio.spec import InvalidDescr, load_model_description
        except ImportError:
            raise FluosegError("running bioimage.io packages not made by fluoseg needs bioimageio.core; install "
                               "the bioimageio extra: pip install 'fluoseg[bioimageio]'", path=path) from None
        description = load_model_description(path, perform_io_checks=False)
        if isinstance(description, InvalidDescr):
            raise FluosegError("the package is not a valid bioimage.io model; run 'bioimageio validate' on it",
                               path=path)
        if len(description.inputs) != 1:
            raise FluosegError(f"the package has {len(description.inputs)} inputs; fluoseg runs foreign packages "
                               "with one image input only", path=path)
        return cls(description, Path(path), device)

    def predict_probabilities(self, image: Any, channel_names: Sequence[str] | None = None,
                              options: PredictOptions | None = None, *, out: Any = None, **settings: Any) -> Any:
        """The package's first output ``(n_outputs, [Z], Y, X)`` for a ``(C, [Z], Y, X)`` image."""
        options = options.replace(**settings) if options and settings else options or PredictOptions(**settings)
        array = self._arrange(np.asarray(image, dtype=np.float32), channel_names, options.source)
        planes = [array] if array.ndim == 3 else [array[:, z] for z in range(array.shape[1])]
        outputs = [self._predict_plane(plane, options) for plane in planes]
        result = outputs[0] if array.ndim == 3 else np.stack(outputs, axis=1)
        if out is None:
            return result
        out[...] = result
        return out

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Per-channel masks ``outputs > 0.5`` (uint8)."""
        return (np.asarray(outputs) > MASK_THRESHOLD).astype(np.uint8)

    def predict_masks(self, image: Any, channel_names: Sequence[str] | None = None,
                      options: PredictOptions | None = None, **settings: Any) -> tuple[np.ndarray, np.ndarray]:
        """Masks and the output maps they come from."""
        probabilities = self.predict_probabilities(image, channel_names, options, **settings)
        return self.decode(probabilities), probabilities

    def _arrange(self, image: np.ndarray, channel_names: Sequence[str] | None, source: str | None) -> np.ndarray:
        """The image's channels in the package's input order: by name when they match, else by position."""
        expected = self.panel.names
        if channel_names and set(channel_names) >= set(expected):
            order = [list(channel_names).index(name) for name in expected]
            return image[order]
        if image.shape[0] != len(expected):
            raise FluosegError(f"the package takes {len(expected)} channel(s) {list(expected)} but the image has "
                               f"{image.shape[0]}; name the channels with --channel-names", path=source)
        return image

    def _predict_plane(self, plane: np.ndarray, options: PredictOptions) -> np.ndarray:
        from bioimageio.core import Tensor, create_prediction_pipeline, predict
        from bioimageio.core.digest_spec import create_sample_for_model

        blocks = self._block_sizes(plane.shape[-2:], options.tile_size or BLOCK_SIZE)
        # an image smaller than the package's smallest block is mirrored out to it, and cropped back after
        padding = [(0, 0)] + [(0, max(0, block - side)) for block, side in zip(blocks.values(), plane.shape[-2:])]
        padded = np.pad(plane, padding, mode="symmetric")
        data = padded if any(a.type == "channel" for a in self.input.axes) else padded[0]
        data = data[None] if any(a.type == "batch" for a in self.input.axes) else data
        tensor = Tensor(data, dims=tuple(str(a.id) for a in self.input.axes))
        sample = create_sample_for_model(self.description, inputs={self.input.id: tensor}, sample_id="image")
        shape = {str(a.id): (1 if a.type == "batch" else a.size if a.type == "channel" else blocks[str(a.id)])
                 for a in self.input.axes}
        # predict() enters the pipeline itself (loading the weights); entering it here too would deadlock
        pipeline = create_prediction_pipeline(self.description, devices=self.devices)
        result = predict(model=pipeline, inputs=sample, input_block_shape={self.input.id: shape})
        maps = _channel_first(result.members[self.output.id], self.output, padded.shape[-2:], self.path)
        return maps[:, : plane.shape[-2], : plane.shape[-1]]

    def _block_sizes(self, spatial: tuple[int, ...], target: int) -> dict[str, int]:
        """Block side per spatial axis: the largest admissible size up to ``target`` and the image side."""
        space = [a for a in self.input.axes if a.type == "space"]
        sizes = {}
        for axis, side in zip(space[-2:], spatial):
            size = axis.size
            if isinstance(size, int):
                sizes[str(axis.id)] = size
            elif hasattr(size, "step"):
                n = max(0, (min(target, side) - size.min) // size.step)
                sizes[str(axis.id)] = size.min + n * size.step
            else:
                raise FluosegError("the package's input size refers to another tensor; fluoseg cannot tile it",
                                   path=self.path)
        return sizes


def _channel_names(tensor: Any, prefix: str) -> tuple[str, ...]:
    for axis in tensor.axes:
        if axis.type == "channel":
            return tuple(str(name) for name in axis.channel_names)
    return (f"{prefix}0",)


def _channel_first(result: Any, descr: Any, spatial: tuple[int, ...], path: Path) -> np.ndarray:
    """A core output tensor as ``(C, Y, X)`` float32 matching the input plane."""
    ids = {axis.type: str(axis.id) for axis in descr.axes if axis.type in ("batch", "channel")}
    space = [str(axis.id) for axis in descr.axes if axis.type == "space"]
    order = [ids[t] for t in ("batch", "channel") if t in ids] + space
    array = np.asarray(result.transpose(order).data, dtype=np.float32)
    if "batch" in ids:
        array = array[0]
    if "channel" not in ids:
        array = array[None]
    if tuple(array.shape[-2:]) != tuple(spatial):
        raise FluosegError(f"the package's output is {array.shape[-2:]} pixels for an input of {tuple(spatial)}; "
                           "fluoseg runs foreign packages whose output matches the input size", path=path)
    return array
