"""Front ends: how a U-Net turns marker channels into the features of its first block.

- ``"slots"`` (default): the MS-ME layout. Channel k *is* marker slot k of the panel; the
  first convolution has one weight per slot, so only markers of the training panel can
  be used.
- ``"channel-invariant"``: every channel goes through the same small convolutional encoder
  on its own, is told which marker it is by a learned per-marker embedding (a FiLM
  scale and shift of the encoder's features), and the channels present are pooled
  (mean, max or both) into a fixed number of features. The output does not depend on the
  order or the number of channels, and a marker outside the training panel can be fed
  with the embedding's *default* row, which is trained by presenting known markers as
  "unknown" at random (``unknown_rate``). This follows the channel-invariant idea of
  InstanSeg (a shared per-channel network pooled over channels), with a marker
  vocabulary added so that known markers keep their identity.

The model layer never sees marker names. The vocabulary is fixed when the model is built:
embedding row ``k < K`` is slot ``k`` of the model's panel (``in_channels = K``) and row
``K`` is the default for every other name. The caller maps names to rows
(:func:`marker_rows`) and passes them as ``marker_ids``.

Front ends register with :func:`register_front_end` and are built by name with their
options validated (:func:`build_front_end`); the U-Net takes ``front_end`` and
``front_end_options``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.registry import Registry

T = TypeVar("T", bound=type)

__all__ = [
    "FRONT_ENDS",
    "POOLINGS",
    "ChannelInvariantFrontEnd",
    "FrontEnd",
    "MarkerEmbedding",
    "SlotFrontEnd",
    "build_front_end",
    "front_end_names",
    "marker_rows",
    "register_front_end",
    "takes_marker_ids",
    "vocabulary_availability",
]

FRONT_ENDS: Registry[type[nn.Module]] = Registry("front end", required=("n_markers", "padding"))
POOLINGS = ("mean", "max", "mean-max")


def register_front_end(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`FrontEnd` subclass under ``name``."""
    return FRONT_ENDS.register(name)


def build_front_end(name: str, *, n_markers: int, padding: str, **options: Any) -> FrontEnd:
    """Build the front end ``name`` for a panel of ``n_markers`` and the network's padding.

    Raises
    ------
    FluosegError
        For an unknown name or option; the message lists the accepted ones.
    """
    return FRONT_ENDS.build(name, n_markers=n_markers, padding=padding, **options)


def front_end_names() -> list[str]:
    """Names of the registered front ends, sorted."""
    return FRONT_ENDS.names()


def marker_rows(vocabulary: Sequence[str], names: Sequence[str]) -> list[int]:
    """Embedding row of each marker name: its slot in ``vocabulary``, else the default row.

    Parameters
    ----------
    vocabulary
        The model's panel, in slot order (K names).
    names
        Channel names of an image, in channel order.

    Returns
    -------
    list of int
        ``vocabulary.index(name)`` for known names, ``K`` (the default row) for the others.

    Examples
    --------
    >>> marker_rows(["DAPI", "ECAD"], ["ECAD", "HOECHST", "DAPI"])
    [1, 2, 0]
    """
    slots = {name: index for index, name in enumerate(vocabulary)}
    return [slots.get(name, len(vocabulary)) for name in names]


def takes_marker_ids(model: nn.Module) -> bool:
    """Whether a network's front end takes ``marker_ids``, and so markers outside its panel.

    Networks without a front end (encoders, detectors) take marker slots only.
    """
    return bool(getattr(getattr(model, "front_end", None), "takes_marker_ids", False))


def vocabulary_availability(marker_ids: Tensor, availability: Tensor, n_markers: int) -> Tensor:
    """Which known markers are present: ``(N, K)`` 0/1 from channel rows and availability.

    Channels with the default row (unknown markers) do not count: Marker Excite and the
    other availability-driven modules only know the K markers of the panel.
    """
    one_hot = nn.functional.one_hot(marker_ids, n_markers + 1)[..., :n_markers].to(availability.dtype)
    return (one_hot * (availability > 0.5).to(availability.dtype)[..., None]).amax(dim=1)


class FrontEnd(nn.Module):
    """Base class: ``forward(x, availability, marker_ids) -> (features, availability)``.

    Attributes
    ----------
    out_channels
        Feature channels handed to the first U-Net block.
    shrink
        Pixels the front end trims from each spatial size (valid convolutions).
    takes_marker_ids
        Whether ``marker_ids`` (and channel counts other than K) are accepted.
    """

    out_channels: int
    shrink: int = 0
    takes_marker_ids: bool = False

    def __init__(self, n_markers: int, padding: str) -> None:
        super().__init__()
        self.n_markers = int(n_markers)
        self.padding = padding


@register_front_end("slots")
class SlotFrontEnd(FrontEnd):
    """The MS-ME layout: channel k is marker slot k; features and availability pass unchanged."""

    def __init__(self, n_markers: int, padding: str) -> None:
        super().__init__(n_markers, padding)
        self.out_channels = self.n_markers

    def forward(self, x: Tensor, availability: Tensor, marker_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x, availability


class MarkerEmbedding(nn.Module):
    """A learned FiLM scale and shift per known marker, plus a default row for unknown ones.

    Parameters
    ----------
    n_markers
        Known markers K; row K is the default.
    features
        Feature channels the scale and shift apply to.
    """

    def __init__(self, n_markers: int, features: int) -> None:
        super().__init__()
        self.n_markers = n_markers
        self.features = features
        self.table = nn.Embedding(n_markers + 1, 2 * features)
        # Distinct small rows: markers start out (almost) alike and identifiable.
        nn.init.normal_(self.table.weight, std=0.1)

    @property
    def default_row(self) -> int:
        """Row used for markers outside the vocabulary."""
        return self.n_markers

    def forward(self, marker_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., F)`` scales and shifts for integer ``marker_ids`` of any shape."""
        scale, shift = self.table(marker_ids).split(self.features, dim=-1)
        return scale, shift


def _option(name: str, value: Any, check: Callable[[Any], bool], what: str) -> Any:
    if isinstance(value, bool) or not check(value):
        raise FluosegError(f"channel-invariant front end option {name!r} must be {what}, got {value!r}")
    return value


@register_front_end("channel-invariant")
class ChannelInvariantFrontEnd(FrontEnd):
    """Shared per-channel encoder, per-marker FiLM embedding, pooling over present channels.

    For every present channel c with embedding row m_c,
    ``h_c = relu(E(x_c) * (1 + scale[m_c]) + shift[m_c])`` with ``E`` a stack of
    ``layers`` convolutions (ReLU between them) from 1 to ``features`` channels, the same
    for all channels. The output is the mean and/or maximum of ``h_c`` over the present
    channels (zeros where none is present).

    Parameters
    ----------
    n_markers
        Known markers K (the panel); embedding rows ``0..K-1``, default row ``K``.
    padding
        ``"valid"`` (each convolution trims ``kernel_size - 1`` pixels) or ``"same"``.
    features
        Channels of ``h_c``; the front end outputs ``features`` (mean, max) or
        ``2 * features`` (mean-max) channels.
    width
        Channels of the encoder's hidden layers.
    layers
        Convolutions of the encoder (>= 1).
    kernel_size
        Odd kernel size of the encoder's convolutions.
    pool
        ``"mean"``, ``"max"`` or ``"mean-max"`` over the present channels.
    unknown_rate
        At training time, each channel is shown with the default row instead of its own
        with this probability, so the default row learns to stand for "some marker".
        0 disables it (the default row then stays untrained).

    Raises
    ------
    FluosegError
        For an option out of range.
    """

    takes_marker_ids = True

    def __init__(self, n_markers: int, padding: str, *, features: int = 16, width: int = 16, layers: int = 2,
                 kernel_size: int = 3, pool: str = "mean", unknown_rate: float = 0.1) -> None:
        super().__init__(n_markers, padding)
        positive = "a positive integer"
        _option("features", features, lambda v: isinstance(v, int) and v >= 1, positive)
        _option("width", width, lambda v: isinstance(v, int) and v >= 1, positive)
        _option("layers", layers, lambda v: isinstance(v, int) and v >= 1, positive)
        _option("kernel_size", kernel_size, lambda v: isinstance(v, int) and v >= 1 and v % 2 == 1,
                "a positive odd integer")
        _option("pool", pool, lambda v: v in POOLINGS, f"one of {list(POOLINGS)}")
        _option("unknown_rate", unknown_rate, lambda v: isinstance(v, (int, float)) and 0.0 <= v < 1.0,
                "a number in [0, 1)")
        self.pool = pool
        self.unknown_rate = float(unknown_rate)
        self.shrink = layers * (kernel_size - 1) if padding == "valid" else 0
        self.out_channels = 2 * features if pool == "mean-max" else features
        pad = kernel_size // 2 if padding == "same" else 0
        modules: list[nn.Module] = []
        for index in range(layers):
            modules.append(nn.Conv2d(1 if index == 0 else width, features if index == layers - 1 else width,
                                     kernel_size, padding=pad))
            if index < layers - 1:
                modules.append(nn.ReLU(inplace=True))
        self.encoder = nn.Sequential(*modules)
        self.embedding = MarkerEmbedding(n_markers, features)

    def forward(self, x: Tensor, availability: Tensor, marker_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pooled features and the availability of the known markers.

        Parameters
        ----------
        x
            ``(N, C, H, W)``, any number C of channels.
        availability
            ``(N, C)`` 0/1: which channels carry a marker. Absent channels are never
            computed, so their pixels cannot influence the output.
        marker_ids
            ``(N, C)`` integer embedding rows in ``[0, K]`` (K: unknown marker); default
            ``0..K-1`` (C must then be K, the MS-ME slot layout).

        Returns
        -------
        features, known
            ``(N, out_channels, H - shrink, W - shrink)`` and ``(N, K)`` availability of
            the panel's markers (for Marker Excite).
        """
        n, c = x.shape[:2]
        marker_ids = self._rows(marker_ids, n, c, x.device)
        present = availability > 0.5
        known = vocabulary_availability(marker_ids, availability, self.n_markers)
        if not bool(present.any()):
            size = (x.shape[-2] - self.shrink, x.shape[-1] - self.shrink)
            return x.new_zeros((n, self.out_channels, *size)), known
        encoded = self.encoder(x[present][:, None])  # (P, F, h, w): only the channels that exist
        scale, shift = self.embedding(marker_ids[present])
        encoded = torch.relu(encoded * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        per_channel = encoded.new_zeros((n, c, *encoded.shape[1:]))
        per_channel[present] = encoded
        pooled = []
        if self.pool in ("mean", "mean-max"):
            count = present.sum(dim=1).clamp(min=1).to(per_channel.dtype)
            pooled.append(per_channel.sum(dim=1) / count[:, None, None, None])
        if self.pool in ("max", "mean-max"):
            # Features are >= 0 after the ReLU and absent channels hold 0, so they never win.
            pooled.append(per_channel.amax(dim=1))
        return torch.cat(pooled, dim=1), known

    def _rows(self, marker_ids: Tensor | None, n: int, c: int, device: torch.device) -> Tensor:
        """Validated ``(N, C)`` embedding rows, some swapped for the default row when training."""
        if marker_ids is None:
            if c != self.n_markers:
                raise ValueError(f"without marker_ids the input needs {self.n_markers} channels, got {c}")
            marker_ids = torch.arange(c, device=device).expand(n, c)
        if tuple(marker_ids.shape) != (n, c) or marker_ids.dtype.is_floating_point or marker_ids.dtype == torch.bool:
            raise ValueError(f"expected integer marker_ids of shape {(n, c)}, "
                             f"got {marker_ids.dtype} {tuple(marker_ids.shape)}")
        if marker_ids.numel() and (int(marker_ids.min()) < 0 or int(marker_ids.max()) > self.n_markers):
            raise ValueError(f"marker_ids must lie in [0, {self.n_markers}] ({self.n_markers} = unknown marker)")
        marker_ids = marker_ids.long()
        if self.training and self.unknown_rate > 0:
            unknown = torch.rand(marker_ids.shape, device=device) < self.unknown_rate
            marker_ids = marker_ids.masked_fill(unknown, self.embedding.default_row)
        return marker_ids

    def extra_repr(self) -> str:
        return f"n_markers={self.n_markers}, pool={self.pool!r}, unknown_rate={self.unknown_rate}, shrink={self.shrink}"
