"""Encoder-decoder networks: the shared base class and the U-Net on a pretrained encoder.

The transfer-learning architectures put a decoder or a head on an encoder of
:mod:`fluoseg.models.encoders`:

- ``"unet-encoder"`` (this module): U-Net decoder on the encoder's five feature maps, as in
  segmentation-models-pytorch's ``Unet`` (Kromp et al.'s U-Net ResNet34, the
  transfer-learning study's U-Net ResNet-101);
- ``"unetpp"`` (:mod:`fluoseg.models.unetpp`): nested U-Net (U-Net++);
- ``"fcn"`` (:mod:`fluoseg.models.fcn`): torchvision's FCN head;
- ``"deeplabv3"`` (:mod:`fluoseg.models.deeplab`): ASPP head on a dilated encoder.

All follow the model interface of ``docs/architecture.md``: a marker input layer first
(``marker_input``, default ``"mz"``), ``padding == "same"`` (the output has the input's
size), admissible input sizes the multiples of the encoder's total stride (32 for the
default encoders; 8 at output stride 8 or without stem downsampling), and the options
shared through :class:`EncoderNetwork`: ``encoder``, ``encoder_weights`` (file, URL or
``"imagenet"``...; see :mod:`fluoseg.models.pretrained`), ``encoder_weights_partial`` and
``stem_stride``.

A model's spec records ``encoder_weights``; rebuild a checkpointed model with
:func:`fluoseg.models.pretrained.without_encoder_weights` applied to its options so that
loading the checkpoint does not need the weights file (or network) again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.encoders import build_encoder
from fluoseg.models.marker_input import build_marker_input, checked_marker_input
from fluoseg.models.pretrained import LoadReport, load_encoder_weights
from fluoseg.models.registry import register_model

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
"""Decoder widths from the deepest stage to full resolution (segmentation-models-pytorch)."""


def positive_int(model: str, name: str, value: Any) -> int:
    """``value`` if it is a positive integer, else a :class:`FluosegError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FluosegError(f"{model} option {name!r} must be a positive integer, got {value!r}")
    return value


def positive_ints(model: str, name: str, value: Any, length: int) -> tuple[int, ...]:
    """``value`` as a tuple of ``length`` positive integers (a list in a config)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != length:
        raise FluosegError(f"{model} option {name!r} must be a list of {length} positive integers, got {value!r}")
    return tuple(positive_int(model, name, v) for v in value)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Convolution (no bias: the normalisation cancels it), batch normalisation, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def initialise_decoder(*modules: nn.Module) -> None:
    """He initialisation for decoder convolutions, identity for normalisations.

    Only the freshly built decoder is touched; the encoder keeps its own (or pretrained)
    initialisation.
    """
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def initialise_head(head: nn.Conv2d) -> None:
    """Xavier weights and zero bias for a layer producing logits (no ReLU after it)."""
    nn.init.xavier_uniform_(head.weight)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


class EncoderNetwork(nn.Module):
    """Base of the networks built on an encoder: marker input, encoder, sizes, weights.

    Subclasses build their decoder after calling this constructor and implement
    :meth:`decode`.

    Parameters
    ----------
    model
        Registered name, for messages.
    in_channels
        Number of marker slots K (the encoder's input channels).
    out_channels
        Number of output logit channels.
    encoder
        ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"densenet121"``.
    encoder_weights
        Pretrained weights loaded into the encoder: a file, an ``http(s)`` URL (cached), or
        ``"imagenet"`` / ``"coco-fcn"`` / ``"coco-deeplabv3"``; ``None`` for random weights.
    encoder_weights_partial
        Accept weights that leave encoder tensors missing (otherwise an error).
    stem_stride
        2 (torchvision stem) or 1 (no stem downsampling, as LACSS).
    output_stride
        Encoder output stride (``None``: natural); dilated networks pass 8 or 16.
    marker_input, marker_input_options
        Marker input layer applied first, and its options.

    Attributes
    ----------
    encoder_weights_report : LoadReport or None
        What loading ``encoder_weights`` did.
    """

    padding = "same"

    def __init__(
        self,
        model: str,
        in_channels: int,
        out_channels: int,
        *,
        encoder: str,
        encoder_weights: str | None,
        encoder_weights_partial: bool,
        stem_stride: int,
        output_stride: int | None,
        marker_input: str,
        marker_input_options: Mapping[str, Any] | None,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(model, "in_channels", in_channels)
        self.out_channels = positive_int(model, "out_channels", out_channels)
        if encoder_weights is not None and not isinstance(encoder_weights, str):
            raise FluosegError(f"{model} option 'encoder_weights' must be a path, URL or name, got {encoder_weights!r}")
        if not isinstance(encoder_weights_partial, bool):
            raise FluosegError(f"{model} option 'encoder_weights_partial' must be true or false, "
                               f"got {encoder_weights_partial!r}")
        self.model_name = model
        self.marker_input = build_marker_input(marker_input, n_markers=in_channels, **dict(marker_input_options or {}))
        self.encoder = build_encoder(encoder, in_channels=in_channels, stem_stride=stem_stride,
                                     output_stride=output_stride)
        self.encoder_weights_report: LoadReport | None = None
        if encoder_weights:
            self.encoder_weights_report = load_encoder_weights(
                self.encoder, encoder_weights, strict=False, allow_partial=encoder_weights_partial
            )

    @property
    def total_stride(self) -> int:
        """Input sizes must be multiples of this (the encoder's total downsampling)."""
        return self.encoder.output_stride

    def output_layers(self) -> list[nn.Conv2d]:  # pragma: no cover
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        raise NotImplementedError

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> Tensor | list[Tensor]:  # pragma: no cover
        """Logits of size ``size`` from the encoder's feature maps."""
        raise NotImplementedError

    def forward(self, x: Tensor, availability: Tensor | None = None) -> Tensor | list[Tensor]:
        """Logits for a batch of marker-slot images.

        Parameters
        ----------
        x
            ``(N, K, H, W)``, K = ``in_channels``; H and W must be multiples of
            :attr:`total_stride`.
        availability
            ``(N, K)`` float 0/1 of the markers present; default all present.

        Returns
        -------
        Tensor
            ``(N, out_channels, H, W)`` logits (a list of them only for U-Net++ with deep
            supervision in training mode).
        """
        x, availability = checked_marker_input(self, x, availability)
        height, width = x.shape[-2:]
        return self.decode(self.encoder(x), (int(height), int(width)))

    def output_size(self, input_size: int) -> int:
        """Output size for ``input_size``: the same, for admissible sizes.

        Raises
        ------
        ValueError
            If ``input_size`` is not a positive multiple of :attr:`total_stride`.
        """
        size = int(input_size)
        if size < 1 or size % self.total_stride:
            raise ValueError(
                f"input size {size} is not admissible for {self.model_name} with a {self.encoder.name} encoder "
                f"(it must be a positive multiple of {self.total_stride}); use valid_input_size()"
            )
        return size

    def valid_input_size(self, at_least: int) -> int:
        """Smallest admissible input size ``>= at_least`` (a multiple of :attr:`total_stride`)."""
        stride = self.total_stride
        return max(1, math.ceil(int(at_least) / stride)) * stride

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, padding={self.padding!r}"


class DecoderBlock(nn.Module):
    """Upsample to the skips' size, concatenate the skips after it, two 3x3 conv-BN-ReLU.

    Nearest-neighbour upsampling as in segmentation-models-pytorch; sizes rather than a
    factor of 2, because without stem downsampling consecutive maps can share a stride.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skips: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="nearest")
        if skips:
            x = torch.cat([x, *skips], dim=1)
        return self.conv2(self.conv1(x))


@register_model("unet-encoder")
class EncoderUNet(EncoderNetwork):
    """U-Net decoder on a (pretrained) encoder: segmentation-models-pytorch's ``Unet``.

    From the deepest map, each of four decoder blocks upsamples to the next shallower
    encoder map, concatenates it (skip connection) and applies two 3x3 conv-BN-ReLU; a
    fifth block upsamples to the input size without a skip, and a 3x3 convolution gives
    the logits. With ``encoder="resnet34"``, 3 inputs and 1 output it has exactly the
    24,436,369 parameters of ``smp.Unet("resnet34", classes=1)``.

    Parameters
    ----------
    in_channels
        Number of marker slots K.
    out_channels
        Number of output logit channels.
    encoder, encoder_weights, encoder_weights_partial, stem_stride, marker_input, marker_input_options
        See :class:`EncoderNetwork`.
    decoder_channels
        Widths of the five decoder blocks, deepest first.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        encoder: str = "resnet34",
        encoder_weights: str | None = None,
        encoder_weights_partial: bool = False,
        stem_stride: int = 2,
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        marker_input: str = "mz",
        marker_input_options: Mapping[str, Any] | None = None,
    ) -> None:
        name = "unet-encoder"
        widths = positive_ints(name, "decoder_channels", decoder_channels, 5)
        super().__init__(
            name, in_channels, out_channels, encoder=encoder, encoder_weights=encoder_weights,
            encoder_weights_partial=encoder_weights_partial, stem_stride=stem_stride, output_stride=None,
            marker_input=marker_input, marker_input_options=marker_input_options,
        )
        skips = list(reversed(self.encoder.feature_channels[:-1])) + [0]
        inputs = [self.encoder.feature_channels[-1], *widths[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(inputs, skips, widths))
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        initialise_decoder(self.blocks)
        initialise_head(self.head)

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        return [self.head]

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        x = features[-1]
        skips = list(reversed(features[:-1]))
        for block, skip in zip(self.blocks[:-1], skips):
            x = block(x, [skip], tuple(skip.shape[-2:]))
        return self.head(self.blocks[-1](x, [], size))
