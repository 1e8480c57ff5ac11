"""DeepCell (Van Valen et al. 2016), Kromp et al.'s fourth architecture, fully convolutional.

DeepCell classifies the centre pixel of a window (61x61, or 31x31 for Kromp et al.'s
silver-standard runs) as background, cell interior or cell boundary, with a small CNN:
for the 61x61 window, 3x3 and 4x4 convolutions of 64 filters, 2x2 max-pooling, two more
pairs of 3x3 convolutions each followed by pooling, a 4x4 convolution of 200 filters,
a 200-unit dense layer and the 3-class softmax; batch normalisation and ReLU after every
convolution and the dense layer. Sliding it over an image is the same as running the
network fully convolutionally with stride-1 pooling and every later convolution and
pooling dilated by the product of the strides it replaced ("d-regularly sparse
kernels", DeepCell's own implementation), which gives one prediction per pixel in one
pass; the dense layers become 1x1 convolutions.

``padding="same"`` zero-pads the input by half the window (30 or 15 pixels) on each side,
so that every pixel is classified from a window centred on it (the sliding window over a
zero-padded image); ``"valid"`` classifies only pixels whose window lies inside the
input (output smaller by ``window - 1``), for exact overlap-tile inference. Every shift
is admissible (no pooling stride), so any input size works.

Logits come out without softmax; 3 output channels are DeepCell's classes, but any
``out_channels`` is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.decoders import positive_int
from fluoseg.models.marker_input import build_marker_input, checked_marker_input
from fluoseg.models.registry import register_model

NAME = "deepcell"
PADDINGS = ("same", "valid")

POOL = "pool"
"""Marks a 2x2 max-pooling in a layer list."""

LAYERS: dict[int, tuple[tuple[int, int] | str, ...]] = {
    61: ((64, 3), (64, 4), POOL, (64, 3), (64, 3), POOL, (64, 3), (64, 3), POOL, (200, 4)),
    31: ((32, 4), POOL, (64, 3), (64, 3), POOL, (128, 3), (200, 3)),
}
"""Convolutions ``(filters, kernel)`` and poolings of DeepCell's feature nets, by window size."""

DENSE_UNITS = 200


class DilatedMaxPool(nn.Module):
    """2x2 max-pooling with stride 1 and dilation ``d``: a stride-2 pooling on the dense grid."""

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2, stride=1, dilation=self.dilation)

    def extra_repr(self) -> str:
        return f"dilation={self.dilation}"


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> nn.Sequential:
    """Valid convolution (no bias before the normalisation), batch normalisation, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@register_model(NAME)
class DeepCell(nn.Module):
    """DeepCell pixel classifier as a fully convolutional network.

    Parameters
    ----------
    in_channels
        Number of marker slots K.
    out_channels
        Output logit channels (3: background, interior, boundary).
    window
        Receptive field: 61 (DeepCell's feature net for nuclei, Kromp et al.'s
        gold-standard runs) or 31.
    padding
        ``"same"`` (output the input's size) or ``"valid"`` (output ``window - 1`` smaller).
    marker_input, marker_input_options
        Marker input layer applied first (see :mod:`fluoseg.models.marker_input`).
    """

    def __init__(self, in_channels: int, out_channels: int = 3, *, window: int = 61, padding: str = "same",
                 marker_input: str = "mz", marker_input_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.in_channels = positive_int(NAME, "in_channels", in_channels)
        self.out_channels = positive_int(NAME, "out_channels", out_channels)
        if isinstance(window, bool) or window not in LAYERS:
            raise FluosegError(f"{NAME} option 'window' must be one of {sorted(LAYERS)}, got {window!r}")
        if padding not in PADDINGS:
            raise FluosegError(f"{NAME} option 'padding' must be one of {list(PADDINGS)}, got {padding!r}")
        self.window = window
        self.padding = padding
        self.marker_input = build_marker_input(marker_input, n_markers=in_channels, **dict(marker_input_options or {}))
        layers: list[nn.Module] = []
        channels, dilation = in_channels, 1
        for layer in LAYERS[window]:
            if layer == POOL:
                layers.append(DilatedMaxPool(dilation))
                dilation *= 2
                continue
            filters, kernel = layer
            layers.append(conv_bn_relu(channels, filters, kernel, dilation))
            channels = filters
        layers.append(conv_bn_relu(channels, DENSE_UNITS, 1, 1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(DENSE_UNITS, out_channels, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He normal initialisation, as DeepCell's ``init="he_normal"``.
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution producing the output logits."""
        return [self.head]

    def forward(self, x: Tensor, availability: Tensor | None = None) -> Tensor:
        """Logits ``(N, out_channels, output_size(H), output_size(W))`` for ``x`` ``(N, K, H, W)``."""
        x, _ = checked_marker_input(self, x, availability)
        if self.padding == "same":
            half = self.window // 2
            x = F.pad(x, (half, half, half, half))
        return self.head(self.features(x))

    def output_size(self, input_size: int) -> int:
        """Output size for an input of ``input_size`` pixels along an axis.

        Raises
        ------
        ValueError
            If the input is empty, or smaller than the window with valid padding.
        """
        size = int(input_size)
        out = size if self.padding == "same" else size - self.window + 1
        if size < 1 or out < 1:
            raise ValueError(
                f"input size {size} is not admissible for DeepCell with {self.padding} padding "
                f"(window {self.window}); use valid_input_size()"
            )
        return out

    def valid_input_size(self, at_least: int) -> int:
        """Smallest admissible input size ``>= at_least``."""
        smallest = 1 if self.padding == "same" else self.window
        return max(int(at_least), smallest)

    def extra_repr(self) -> str:
        return f"window={self.window}, padding={self.padding!r}"
