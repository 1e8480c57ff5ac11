"""The network pass over one image, prepared once and run whole or band by band.

:meth:`fluoseg.infer.Segmenter.network_pass` resolves everything that needs the whole
image (the marker selection, each member's intensity statistics) into a
:class:`NetworkPass`. Running it tiles the image (:func:`fluoseg.tiling.predict_tiled`)
and writes every member's activated outputs into its channels of one output array. A pass
is picklable (networks, statistics and plain settings), so band tasks on other processes
(:mod:`fluoseg.bandjobs`) run the very pass the main process prepared: each computes a band
of rows and writes only those, equal bit for bit to the rows of a whole-image run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from fluoseg.data.normalize import SampleStats, normalize
from fluoseg.markers import ChannelFeed, MarkerSelection
from fluoseg.models.channel_invariant import marker_rows
from fluoseg.predictor import make_batch_predictor
from fluoseg.tasks import Task
from fluoseg.tiling import TileGeometry, predict_tiled

__all__ = ["MemberPass", "NetworkPass", "Normaliser", "decode_outputs"]


def decode_outputs(tasks: Sequence[Task], outputs: np.ndarray) -> np.ndarray:
    """Activated outputs of member networks (one after another along the channels) decoded by
    their tasks: masks ``(n_classes, ...)`` concatenated, instance labels of the first member,
    or predicted channels."""
    parts, start = [], 0
    for task in tasks:
        size = task.activated_channels()
        parts.append(task.decode(np.asarray(outputs[start : start + size])))
        start += size
    return parts[0] if tasks[0].name == "instance" else np.concatenate(parts)


@dataclass(frozen=True)
class Normaliser:
    """Raw window -> network input: normalised with whole-image statistics, channels arranged."""

    stats: SampleStats
    method: str
    selection: MarkerSelection | ChannelFeed
    source: str | None = None

    def __call__(self, window: np.ndarray) -> np.ndarray:
        return self.selection.arrange(normalize(window, self.stats, method=self.method), source=self.source)


@dataclass(frozen=True)
class MemberPass:
    """One member network's part of a pass: what :func:`~fluoseg.tiling.predict_tiled` needs."""

    model: nn.Module
    task: Task
    geometry: TileGeometry
    transform: Normaliser
    symmetries: tuple[int, ...]
    batch_size: int
    member_markers: tuple[str, ...]
    precision: str = "float32"

    @property
    def channels(self) -> int:
        """Activated output channels of this member."""
        return self.task.activated_channels()

    def predictor(self) -> Any:
        """The batch predictor (built where the pass runs: it holds the network's device tensors)."""
        selection = self.transform.selection
        ids = marker_rows(self.member_markers, selection.used) if isinstance(selection, ChannelFeed) else None
        return make_batch_predictor(self.model, selection.availability, self.task.activate, self.symmetries,
                                    marker_ids=ids, precision=self.precision)


class _ChannelWindow:
    """Channels ``start:stop`` of an output array, written through (zarr slices would be copies)."""

    def __init__(self, out: Any, start: int, stop: int) -> None:
        self.out, self.start, self.stop = out, start, stop
        self.shape = (stop - start, *tuple(out.shape)[1:])

    def __setitem__(self, index: tuple[Any, ...], value: np.ndarray) -> None:
        self.out[(slice(self.start + (index[0].start or 0), self.start + (index[0].stop or self.shape[0])),
                  *index[1:])] = value


@dataclass(frozen=True)
class NetworkPass:
    """The prepared network pass of one image at the model's resolution.

    Attributes
    ----------
    members
        One part per member network; their outputs follow one another along the channels.
    shape
        The image's shape ``(C, [Z], Y, X)`` the pass was prepared for.
    """

    members: tuple[MemberPass, ...]
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        """Output channels of the whole pass."""
        return sum(member.channels for member in self.members)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the pass's output ``(n, [Z], Y, X)``."""
        return (self.channels, *self.shape[1:])

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """The members' decoding of this pass's outputs (:func:`decode_outputs`)."""
        return decode_outputs([member.task for member in self.members], outputs)

    def run(self, image: Any, out: Any = None, *, rows: tuple[int, int] | None = None,
            planes: Sequence[int] | None = None, progress: bool = False) -> Any:
        """Predict into ``out`` (a new float32 array when omitted) and return it.

        Parameters
        ----------
        image
            The image the pass was prepared for, ``(C, [Z], Y, X)`` array-like.
        out
            Writable ``(n, [Z], Y, X)`` array-like (numpy or zarr).
        rows, planes
            Only this band of rows and these slices, as :func:`fluoseg.tiling.predict_tiled`.
        progress
            Show a progress bar over tiles.
        """
        if tuple(image.shape) != self.shape:
            raise ValueError(f"the pass was prepared for an image of shape {self.shape}, got {tuple(image.shape)}")
        if out is None:
            out = np.empty(self.out_shape, dtype=np.float32)
        start = 0
        for member in self.members:
            stop = start + member.channels
            target = out if len(self.members) == 1 else _ChannelWindow(out, start, stop)
            predict_tiled(member.predictor(), image, geometry=member.geometry, out_channels=member.channels,
                          transform=member.transform, out=target, batch_size=member.batch_size, progress=progress,
                          rows=rows, planes=planes)
            start = stop
        return out
