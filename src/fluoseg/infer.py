"""Applying trained models: images of any size and any subset of the trained markers.

A :class:`Segmenter` wraps the network(s) of a run directory together with what they were
trained with (marker panel, classes, normalisation, pixel size). It maps an image's
channels onto the model's marker slots by name, normalises with statistics of the whole
image, runs the overlap-tile scheme and returns per-class probabilities or masks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fluoseg.data.normalize import SampleStats, compute_stats, normalize
from fluoseg.data.resample import resample_image, resample_to_shape, scale_factors
from fluoseg.device import resolve_device
from fluoseg.errors import FluosegError
from fluoseg.markers import MarkerPanel
from fluoseg.instance.scale import estimate_diameter_from_labels, rescale_image, restore_shape
from fluoseg.models import build_model
from fluoseg.models.pretrained import without_encoder_weights
from fluoseg.tasks import Task, task_from_state
from fluoseg.tiling import TileGeometry, geometry_for, predict_tiled
from fluoseg.train.checkpoint import load_checkpoint

RUN_INDEX = "run.json"
"""File in a run directory listing its member networks (one, or one per class)."""

DEFAULT_TILE = 572
"""Default network input tile: the MS-ME tile, rounded to what the network accepts."""


@dataclass
class Member:
    """One trained network and the metadata it needs at inference.

    Its task says how its logits are activated (e.g. softmax) and decoded (masks or labels).
    """

    model: nn.Module
    panel: MarkerPanel
    classes: tuple[str, ...]
    preprocess: dict[str, Any]
    task: Task

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], device: torch.device) -> Member:
        """Rebuild the network of a checkpoint and load its weights."""
        spec = state["model"]
        # The checkpoint holds every trained weight: never re-download or re-read pretrained files.
        options = without_encoder_weights(spec["options"])
        model = build_model(spec["name"], in_channels=spec["in_channels"], out_channels=spec["out_channels"], **options)
        model.load_state_dict(state["model_state"])
        model.to(device).eval()
        return cls(model=model, panel=MarkerPanel(state["markers"]), classes=tuple(state["classes"]),
                   preprocess=dict(state["preprocess"]), task=task_from_state(state["task"]))


ALL_SYMMETRIES = tuple(range(8))
"""The 8 symmetries of the square (quarter turns, each with and without a mirror image)."""


def _dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """Symmetry ``index`` of the last two axes, as :func:`fluoseg.data.augment.dihedral` on numpy."""
    out = torch.rot90(x, k=index % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if index >= 4 else out


def _inverse_dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    out = torch.flip(x, dims=(-1,)) if index >= 4 else x
    return torch.rot90(out, k=-(index % 4), dims=(-2, -1))


def make_batch_predictor(model: nn.Module, availability: np.ndarray, activate,
                         symmetries: tuple[int, ...] = (0,)):
    """A numpy-in, numpy-out function: the model's activated outputs (e.g. class probabilities).

    With several ``symmetries`` (test-time augmentation) each tile is also predicted
    flipped/rotated, every output is mapped back, and the activated outputs are averaged.
    Tiles are square, so rotating them keeps the tiling geometry.
    """
    device = next(model.parameters()).device
    available = torch.as_tensor(availability, dtype=torch.float32, device=device)
    # NHWC lets oneDNN (CPU) and cuDNN pick their fast convolution kernels: 1.8x for the U-Net
    # on 2 CPU cores (bench/results/peers.md). The weights are converted in place, once.
    model.to(memory_format=torch.channels_last)

    def predict_batch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.as_tensor(batch, device=device)
            vector = available.expand(x.shape[0], -1)
            total = None
            for index in symmetries:
                view = _dihedral(x, index).contiguous(memory_format=torch.channels_last)
                out = _inverse_dihedral(activate(model(view, vector)), index)
                total = out if total is None else total + out
            return (total / len(symmetries)).float().cpu().numpy()

    return predict_batch


class Segmenter:
    """The trained network(s) of a run, ready to segment images.

    Parameters
    ----------
    members
        Networks of the run; their class lists are disjoint and together give ``classes``.
    """

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.panel = self.members[0].panel
        self.classes = tuple(c for m in self.members for c in m.classes)
        self.task_name = self.members[0].task.name

    @classmethod
    def load(cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> Segmenter:
        """Load the ``best`` (or ``last``) checkpoint of every member of a run directory."""
        run_dir = Path(run_dir)
        index = run_dir / RUN_INDEX
        if not index.is_file():
            raise FluosegError(f"not a fluoseg run directory (no {RUN_INDEX}); train one with 'fluoseg train'", path=run_dir)
        try:
            members = json.loads(index.read_text())["members"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise FluosegError(f"{RUN_INDEX} is damaged; retrain or restore it", path=index) from None
        torch_device = resolve_device(device)
        return cls([
            Member.from_checkpoint(load_checkpoint(run_dir / member / f"{checkpoint}.pt"), torch_device)
            for member in members
        ])

    def tile_geometry(self, member: Member, tile_size: int | None) -> TileGeometry:
        """Tiling geometry of a member network for a requested input tile size."""
        return geometry_for(member.model, tile_size or DEFAULT_TILE)

    def predict_probabilities(
        self,
        image: Any,
        channel_names: Sequence[str],
        *,
        markers: Sequence[str] | None = None,
        pixel_size: Sequence[float] | None = None,
        tile_size: int | None = None,
        batch_size: int = 1,
        tta: bool | Sequence[int] = False,
        out: Any = None,
        progress: bool = False,
        source: str | None = None,
    ) -> Any:
        """Activated outputs (class probabilities for semantic tasks) ``(n, [Z], Y, X)``.

        Parameters
        ----------
        image
            ``(C, [Z], Y, X)`` array-like (numpy or lazy zarr); read tile by tile.
        channel_names
            Marker name of each image channel.
        markers
            Markers to use (a subset of the image's and the model's); default all channels.
        pixel_size
            Image pixel size in µm; when the model was trained at another pixel size the
            image is resampled for prediction and the result resampled back.
        tile_size
            Network input tile size (rounded to an admissible one); default 572.
        tta
            Test-time augmentation: ``True`` averages over all 8 flips/rotations, a list of
            indices (0-7, see :func:`fluoseg.data.augment.dihedral`) over a chosen subset.
        out
            Optional writable ``(n_classes, [Z], Y, X)`` float32 array (e.g. zarr) to stream into.
        """
        ignored = set(getattr(self.members[0].task, "ignored_channels", ()))  # regression targets
        use = tuple(n for n in (channel_names if markers is None else markers) if n not in ignored)
        self.panel.parse([n for n in channel_names if n not in ignored], source=source)  # unknown names are errors
        missing = set(use) - set(channel_names)
        if missing:
            raise FluosegError(f"marker(s) {sorted(missing)} requested but the image has {list(channel_names)}", path=source)
        spatial = tuple(image.shape[1:])
        image, factors = self._to_model_resolution(image, pixel_size)
        results = []
        for member in self.members:
            method = member.preprocess["normalization"]
            stats = compute_stats(image, method=method, percentiles=tuple(member.preprocess["percentiles"]))
            if not stats.is_finite:
                raise FluosegError("image contains NaN or infinite pixels; replace them (e.g. with 0) before prediction",
                                   path=source)
            transform = _slot_transform(member.panel, channel_names, use, stats, method, source, ignored)
            availability = member.panel.availability(member.panel.parse(list(use), source=source))
            target = out if (out is not None and len(self.members) == 1 and factors is None) else None
            result = predict_tiled(
                make_batch_predictor(member.model, availability, member.task.activate, _symmetries(tta)),
                image,
                geometry=self.tile_geometry(member, tile_size),
                out_channels=member.task.activated_channels(),
                transform=transform,
                out=target,
                batch_size=batch_size,
                progress=progress,
            )
            results.append(result)
        if len(results) == 1 and factors is None:
            return _into(results[0], out)
        merged = np.concatenate([np.asarray(r) for r in results])
        if factors is not None:
            merged = resample_to_shape(merged, spatial, kind="probabilities")
        return _into(merged, out)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Activated outputs of all members -> masks ``(n_classes, ...)`` or instance labels."""
        parts, start = [], 0
        for member in self.members:
            size = member.task.activated_channels()
            parts.append(member.task.decode(np.asarray(outputs[start : start + size])))
            start += size
        return parts[0] if self.task_name == "instance" else np.concatenate(parts)

    def predict_masks(self, image: Any, channel_names: Sequence[str], **options: Any) -> tuple[np.ndarray, Any]:
        """Per-class uint8 masks and the probabilities they come from (semantic tasks)."""
        probabilities = self.predict_probabilities(image, channel_names, **options)
        return self.decode(np.asarray(probabilities)), probabilities

    def predict_labels(self, image: Any, channel_names: Sequence[str], *, diameter: float | str | None = None,
                       **options: Any) -> tuple[np.ndarray, np.ndarray]:
        """Instance labels ``([Z], Y, X)`` and the activated maps they were decoded from.

        Parameters
        ----------
        diameter
            Mean object diameter in the image, in pixels, when the model was trained with
            scale normalisation (``instance.target_diameter``): the image is rescaled so its
            objects get the training size, and the labels are resampled back. ``"auto"``
            estimates it from a first prediction at the original scale. ``None``: no rescaling.
        """
        target = self.members[0].task.state().get("target_diameter")
        if diameter is None or not target:
            outputs = self.predict_probabilities(image, channel_names, **options)
            return self.decode(np.asarray(outputs)), np.asarray(outputs)
        if diameter == "auto":
            first, _ = self.predict_labels(image, channel_names, diameter=None, **options)
            diameter = estimate_diameter_from_labels(first) if first.max() > 0 else float(target)
        # A first pass that shatters objects would otherwise ask for a huge upscaling.
        factor = float(np.clip(float(target) / float(diameter), 0.25, 4.0))
        spatial = tuple(image.shape[1:])
        scaled = rescale_image(np.asarray(image, dtype=np.float32), factor)
        outputs = np.asarray(self.predict_probabilities(scaled, channel_names, **options))
        labels = restore_shape(self.decode(outputs), spatial, labels=True)
        return labels, restore_shape(outputs, spatial)

    def _to_model_resolution(self, image: Any, pixel_size: Sequence[float] | None) -> tuple[Any, tuple | None]:
        target = self.members[0].preprocess.get("pixel_size_um")
        if target is None or pixel_size is None:
            return image, None
        spatial_axes = len(image.shape) - 1
        size = tuple(pixel_size)[-2:] if len(pixel_size) >= 2 else tuple(pixel_size) * 2  # isotropic shorthand
        factors = scale_factors(size, target)
        if all(abs(f - 1.0) < 1e-6 for f in factors):
            return image, None
        factors = (1.0,) * (spatial_axes - 2) + tuple(factors)  # z of a stack is never resampled
        return resample_image(np.asarray(image, dtype=np.float32), factors), factors


def _symmetries(tta: bool | Sequence[int]) -> tuple[int, ...]:
    if tta is True:
        return ALL_SYMMETRIES
    if not tta:
        return (0,)
    chosen = tuple(int(i) for i in tta)
    if not chosen or any(i not in ALL_SYMMETRIES for i in chosen):
        raise FluosegError(f"--tta symmetries must be indices 0-7, got {list(tta)}")
    return chosen


def _slot_transform(panel: MarkerPanel, channel_names: Sequence[str], use: Sequence[str],
                    stats: SampleStats, method: str, source: str | None, ignored: set[str] = frozenset()):
    """Per-window normalisation with the whole image's statistics, then marker-slot arrangement."""
    keep = [i for i, name in enumerate(channel_names) if name not in ignored]
    kept_names = [channel_names[i] for i in keep]

    def transform(window: np.ndarray) -> np.ndarray:
        normalised = normalize(window, stats, method=method)[keep]
        slots, _ = panel.arrange(normalised, kept_names, use=use, source=source)
        return slots

    return transform


def _into(result: Any, out: Any) -> Any:
    if out is None or result is out:
        return result
    out[...] = result
    return out
