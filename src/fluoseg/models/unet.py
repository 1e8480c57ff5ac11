"""The U-Net of the MS-ME paper and the blocks it is made of.

MS-ME uses the original U-Net (Ronneberger et al. 2015) with half the filters: 4 poolings,
32 filters in the first block doubling to 512 in the bottleneck, two 3x3 convolutions with
ReLU per block, no batch normalisation, 2x2 max-pooling, 2x2 transposed convolutions, and
concatenation with the centre-cropped encoder features. With valid convolutions an input
tile of 572 gives an output tile of 388, the geometry the overlap-tile scheme of
:mod:`fluoseg.tiling` derives from :meth:`UNet.output_size`.

Extension points
----------------
- Marker input layer (``marker_input``): applied to ``(x, availability)`` before the first
  block; see :mod:`fluoseg.models.marker_input`.
- Front end (``front_end``): turns the marker channels into the first block's input;
  ``"slots"`` (MS-ME: channel k is marker slot k) or ``"channel-invariant"`` (a shared
  per-channel encoder with a marker embedding, pooled over the channels present, which
  also takes markers outside the panel); see :mod:`fluoseg.models.channel_invariant`.
- Attention (``attention``): every block ends with a hook module called as
  ``hook(features, availability) -> features``, built by name from
  :data:`fluoseg.models.registry.ATTENTION` for the block kinds listed in ``attention_at``
  (``"input"``, ``"encoder"``, ``"bottleneck"``, ``"decoder"``) and ``"none"`` elsewhere.
  Squeeze-and-Excitation and Marker Excite modules register themselves there
  (:mod:`fluoseg.models.attention`); without ``attention_at`` a module goes where its
  class attribute ``default_at`` says (all blocks when it has none).
- Width (``base_filters``): a widened variant is the same class with more filters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.channel_invariant import build_front_end
from fluoseg.models.marker_input import build_marker_input, default_availability
from fluoseg.models.mc_dropout import check_dropout
from fluoseg.models.registry import ATTENTION, build_attention, register_attention, register_model

PADDINGS = ("valid", "same")
NORMS = ("none", "batch", "instance")
BLOCK_KINDS = ("input", "encoder", "bottleneck", "decoder")

_SHRINK_PER_BLOCK = 4
"""Pixels lost per block with valid padding: two 3x3 convolutions, one on each side."""


@register_attention("none")
class NoAttention(nn.Module):
    """The hook of a block without attention: returns the features unchanged."""

    def __init__(self, channels: int, n_markers: int) -> None:
        super().__init__()

    def forward(self, features: Tensor, availability: Tensor) -> Tensor:
        return features


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by optional normalisation and a ReLU, then a hook.

    Parameters
    ----------
    in_channels, out_channels
        Feature channels in and out.
    padding
        ``"valid"`` (each convolution trims one pixel per side) or ``"same"``.
    norm
        ``"none"`` (MS-ME), ``"batch"`` or ``"instance"``.
    hook
        Module called as ``hook(features, availability)`` on the block's output: the place
        for attention (SE, Marker Excite).
    """

    def __init__(self, in_channels: int, out_channels: int, *, padding: str, norm: str, hook: nn.Module) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            # A bias before a normalisation layer would be cancelled by it.
            layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=1 if padding == "same" else 0, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out_channels))
            elif norm == "instance":
                layers.append(nn.InstanceNorm2d(out_channels, affine=True))
            layers.append(nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*layers)
        self.hook = hook

    def forward(self, x: Tensor, availability: Tensor) -> Tensor:
        return self.hook(self.convs(x), availability)


def center_crop(x: Tensor, height: int, width: int) -> Tensor:
    """The central ``height`` x ``width`` region of ``x`` (..., H, W)."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FluosegError(f"unet option {name!r} must be a positive integer, got {value!r}")
    return value


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise FluosegError(f"unet option {name!r} must be one of {list(choices)}, got {value!r}")
    return value


@register_model("unet")
class UNet(nn.Module):
    """U-Net with a marker input layer and per-block attention hooks.

    Parameters
    ----------
    in_channels
        Number of marker slots K.
    out_channels
        Number of output logit channels.
    depth
        Number of 2x2 poolings (4 in MS-ME).
    base_filters
        Filters of the first block; they double at every level (32..512 in MS-ME, half of
        the original U-Net). Raise it for a widened variant.
    padding
        ``"valid"`` (MS-ME overlap-tile; output smaller than input) or ``"same"``.
    norm
        ``"none"`` (MS-ME found batch normalisation harmful with batch size 2), ``"batch"``
        or ``"instance"``.
    marker_input
        Registered marker input layer name (``"mz"``); ``marker_input_options`` are its options.
    attention
        Registered attention module name placed after the blocks listed in
        ``attention_at``; ``"none"`` for the plain U-Net. ``attention_options`` are its options.
    attention_at
        Block kinds receiving the attention module, any of ``"input"`` (first encoder
        block), ``"encoder"`` (the other encoder blocks), ``"bottleneck"``, ``"decoder"``.
        ``None`` (default) places it where the module's ``default_at`` says: encoder,
        bottleneck and decoder (E+B+D, the MS-ME paper's placement) for ``"se"`` and
        ``"me"``; every block for modules that do not declare a placement.
    front_end
        Registered front end: ``"slots"`` (default, MS-ME) or ``"channel-invariant"``,
        which needs ``marker_input`` ``"mz"`` or ``"ms"`` (the rescaling of ``ms-dr`` and
        ``ms-vr`` would change the pooled features). ``front_end_options`` are its options.
    dropout
        Rate of channel dropout (``Dropout2d``) after the bottleneck and every decoder
        block but the last; 0 (default, MS-ME) for none. Needed for Monte-Carlo dropout
        uncertainty (:func:`fluoseg.models.mc_dropout.mc_dropout`).

    Notes
    -----
    Admissible input sizes are those for which every pooled map has an even size (valid)
    or that are multiples of ``2**depth`` (same); see :meth:`output_size` and
    :meth:`valid_input_size`. Admissible sizes are ``2**depth`` apart, and the network is
    translation-equivariant only for shifts that are multiples of ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        depth: int = 4,
        base_filters: int = 32,
        padding: str = "valid",
        norm: str = "none",
        marker_input: str = "mz",
        marker_input_options: Mapping[str, Any] | None = None,
        attention: str = "none",
        attention_options: Mapping[str, Any] | None = None,
        attention_at: Sequence[str] | None = None,
        front_end: str = "slots",
        front_end_options: Mapping[str, Any] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.depth = _positive_int("depth", depth)
        self.base_filters = _positive_int("base_filters", base_filters)
        self.padding = _choice("padding", padding, PADDINGS)
        self.norm = _choice("norm", norm, NORMS)
        if isinstance(attention_at, str):
            raise FluosegError(f"unet option 'attention_at' must be a list of block kinds, got {attention_at!r}")
        if attention_at is None:
            attention_at = getattr(ATTENTION.get(attention), "default_at", BLOCK_KINDS)
        for kind in attention_at:
            _choice("attention_at", kind, BLOCK_KINDS)
        self.attention_at = tuple(attention_at)

        self.marker_input = build_marker_input(marker_input, n_markers=in_channels, **dict(marker_input_options or {}))
        self.front_end = build_front_end(front_end, n_markers=in_channels, padding=padding,
                                         **dict(front_end_options or {}))
        if self.front_end.takes_marker_ids and marker_input not in ("mz", "ms"):
            raise FluosegError(
                f"unet front end {front_end!r} pools the channels present and needs marker_input 'mz' or 'ms', "
                f"got {marker_input!r}"
            )

        def hook(kind: str, channels: int) -> nn.Module:
            name = attention if kind in attention_at else "none"
            options = dict(attention_options or {}) if name != "none" else {}
            return build_attention(name, channels=channels, n_markers=in_channels, **options)

        def block(kind: str, channels_in: int, channels_out: int) -> ConvBlock:
            return ConvBlock(channels_in, channels_out, padding=padding, norm=norm, hook=hook(kind, channels_out))

        filters = [base_filters * 2**level for level in range(depth + 1)]
        inputs = [self.front_end.out_channels, *filters[: depth - 1]]
        self.encoders = nn.ModuleList(
            block("input" if level == 0 else "encoder", inputs[level], filters[level]) for level in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = block("bottleneck", filters[depth - 1], filters[depth])
        # Decoder modules are stored deepest level first, the order forward() uses them.
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(filters[level + 1], filters[level], 2, stride=2) for level in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(
            block("decoder", 2 * filters[level], filters[level]) for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(filters[0], out_channels, 1)
        rate = check_dropout("unet", dropout)
        self.dropout = nn.Dropout2d(rate) if rate > 0 else nn.Identity()
        self._initialise()

    def _initialise(self) -> None:
        # He initialisation as in the original U-Net: without normalisation layers, the
        # PyTorch default (a smaller uniform) lets activations shrink through ~20 layers.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nonlinearity = "linear" if module is self.head else "relu"
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity=nonlinearity)
            elif isinstance(module, nn.ConvTranspose2d):
                # Each output pixel of a stride-2, 2x2 transposed convolution receives one
                # tap per input channel, so its fan-in is the input channel count.
                nn.init.normal_(module.weight, std=math.sqrt(1.0 / module.in_channels))
            else:
                continue
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        return [self.head]

    def forward(self, x: Tensor, availability: Tensor | None = None, marker_ids: Tensor | None = None) -> Tensor:
        """Logits for a batch of marker-slot images.

        Parameters
        ----------
        x
            ``(N, K, H, W)``, K = ``in_channels``; H and W must be admissible sizes. With
            the channel-invariant front end and ``marker_ids``, any number C of channels.
        availability
            ``(N, K)`` (or ``(N, C)``) float 0/1 of the channels present; default all.
        marker_ids
            Channel-invariant front end only: ``(N, C)`` integer embedding rows, the
            panel slot of each channel's marker or K for a marker outside the panel (see
            :func:`~fluoseg.models.channel_invariant.marker_rows`). Default: the slot
            layout, channel k is marker k.

        Returns
        -------
        Tensor
            ``(N, out_channels, output_size(H), output_size(W))`` logits.
        """
        free_channels = marker_ids is not None and self.front_end.takes_marker_ids
        if marker_ids is not None and not free_channels:
            raise ValueError("marker_ids need the channel-invariant front end; this U-Net uses marker slots")
        if x.ndim != 4 or (x.shape[1] != self.in_channels and not free_channels):
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        for size in x.shape[-2:]:
            self.output_size(int(size))  # raises for inadmissible sizes instead of misaligning crops
        if availability is None:
            availability = default_availability(x)
        elif tuple(availability.shape) != tuple(x.shape[:2]):
            raise ValueError(f"expected availability of shape {tuple(x.shape[:2])}, got {tuple(availability.shape)}")
        x, availability = self.marker_input(x, availability)
        x, availability = self.front_end(x, availability, marker_ids)
        skips = []
        for encoder in self.encoders:
            x = encoder(x, availability)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x, availability))
        for level, (upsample, decoder, skip) in enumerate(zip(self.upsamplers, self.decoders, reversed(skips))):
            x = upsample(x)
            x = decoder(torch.cat([center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1), availability)
            if level < self.depth - 1:
                x = self.dropout(x)
        return self.head(x)

    def output_size(self, input_size: int) -> int:
        """Spatial output size for an input of ``input_size`` (same rule for H and W).

        Raises
        ------
        ValueError
            If ``input_size`` is not admissible: with valid padding, a map to be pooled
            has an odd size or a map vanishes; with same padding, the size is not a
            positive multiple of ``2**depth``.
        """
        size = int(input_size) - self.front_end.shrink
        if self.padding == "same":
            if size < 1 or size % 2**self.depth:
                raise ValueError(self._inadmissible(size, f"it must be a positive multiple of {2**self.depth}"))
            return size
        for _ in range(self.depth):
            size -= _SHRINK_PER_BLOCK
            if size <= 0 or size % 2:
                raise ValueError(self._inadmissible(input_size, "a pooled feature map would be odd or empty"))
            size //= 2
        size -= _SHRINK_PER_BLOCK
        for _ in range(self.depth):
            if size <= 0:
                break
            size = 2 * size - _SHRINK_PER_BLOCK
        if size <= 0:
            raise ValueError(self._inadmissible(input_size, "the output would be empty"))
        return size

    def valid_input_size(self, at_least: int) -> int:
        """Smallest admissible input size that is ``>= at_least``."""
        size = max(int(at_least), 1)
        while True:  # admissible sizes are 2**depth apart, so this ends within a few steps
            try:
                self.output_size(size)
                return size
            except ValueError:
                size += 1

    def _inadmissible(self, size: int, why: str) -> str:
        return (
            f"input size {size} is not admissible for a depth-{self.depth} U-Net with {self.padding} padding "
            f"({why}); use valid_input_size()"
        )

    def extra_repr(self) -> str:
        return f"depth={self.depth}, base_filters={self.base_filters}, padding={self.padding!r}, norm={self.norm!r}"
