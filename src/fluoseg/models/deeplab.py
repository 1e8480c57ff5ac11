"""DeepLabv3 (Chen et al. 2017): atrous spatial pyramid pooling on a dilated encoder.

As torchvision's ``deeplabv3_resnet50/101`` (fine-tuned from COCO in the transfer-learning
study): the encoder's last stages trade stride for dilation (output stride 8 or 16), ASPP
runs a 1x1 convolution, three 3x3 atrous convolutions and an image-pooling branch in
parallel (256 channels each, BN, ReLU), projects their concatenation to 256 channels
(BN, ReLU, dropout 0.5), then a 3x3 conv-BN-ReLU and a 1x1 convolution give logits that
are upsampled bilinearly to the input size. Atrous rates follow the paper: 6/12/18 at
output stride 16 and twice that, 12/24/36, at 8. Modules are named as torchvision's
``DeepLabHead`` (``classifier.0.convs...``, ``classifier.0.project``, ``classifier.4``).

The image-pooling branch makes every output pixel depend on the whole input, so tiled
prediction matches whole-image prediction only approximately (blended overlaps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.decoders import EncoderNetwork, positive_int
from fluoseg.models.registry import register_model

OUTPUT_STRIDES = (8, 16)
ASPP_CHANNELS = 256


def default_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLabv3's rates: (6, 12, 18) at output stride 16, doubled at 8."""
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


class ASPPConv(nn.Sequential):
    """3x3 atrous convolution, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """Image-level features: global average, 1x1 conv, BN, ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        size = x.shape[-2:]
        pooled = self[1](self[0](x))
        norm = self[2]
        if self.training and pooled.shape[0] == 1:
            # One value per channel: batch statistics do not exist at batch size 1, where
            # torch would raise; normalise with the running statistics instead.
            pooled = F.batch_norm(pooled, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                  training=False, eps=norm.eps)
        else:
            pooled = norm(pooled)
        return F.interpolate(self[3](pooled), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 branch, atrous branches, pooling, projection."""

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())
        ]
        branches.extend(ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates)
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


def deeplab_head(in_channels: int, out_channels: int, atrous_rates: Sequence[int]) -> nn.Sequential:
    """torchvision's ``DeepLabHead``: ASPP, 3x3 conv-BN-ReLU, 1x1 conv to the logits."""
    return nn.Sequential(
        ASPP(in_channels, atrous_rates),
        nn.Conv2d(ASPP_CHANNELS, ASPP_CHANNELS, 3, padding=1, bias=False),
        nn.BatchNorm2d(ASPP_CHANNELS),
        nn.ReLU(),
        nn.Conv2d(ASPP_CHANNELS, out_channels, 1),
    )


@register_model("deeplabv3")
class DeepLabV3(EncoderNetwork):
    """DeepLabv3 on a dilated encoder.

    Parameters
    ----------
    in_channels
        Number of marker slots K.
    out_channels
        Number of output logit channels.
    encoder, encoder_weights, encoder_weights_partial, stem_stride, marker_input, marker_input_options
        See :class:`~fluoseg.models.decoders.EncoderNetwork`. Without stem downsampling
        (``stem_stride=1``) the encoder's natural stride is 8 and only ``output_stride=8``
        is possible (no dilation needed).
    output_stride
        8 (torchvision's default and the study's; finer, about twice the computation) or
        16 (the DeepLabv3 paper's training setting).
    atrous_rates
        Three dilation rates of the ASPP branches; default :func:`default_atrous_rates`.
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
        output_stride: int = 8,
        atrous_rates: Sequence[int] | None = None,
        marker_input: str = "mz",
        marker_input_options: Mapping[str, Any] | None = None,
    ) -> None:
        name = "deeplabv3"
        if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
            raise FluosegError(f"deeplabv3 option 'output_stride' must be 8 or 16, got {output_stride!r}")
        if atrous_rates is None:
            rates = default_atrous_rates(output_stride)
        elif isinstance(atrous_rates, (str, bytes)) or not isinstance(atrous_rates, Sequence) or not atrous_rates:
            raise FluosegError(
                f"deeplabv3 option 'atrous_rates' must be a list of positive integers, got {atrous_rates!r}"
            )
        else:
            rates = tuple(positive_int(name, "atrous_rates", r) for r in atrous_rates)
        super().__init__(
            name, in_channels, out_channels, encoder=encoder, encoder_weights=encoder_weights,
            encoder_weights_partial=encoder_weights_partial, stem_stride=stem_stride, output_stride=output_stride,
            marker_input=marker_input, marker_input_options=marker_input_options,
        )
        self.atrous_rates = rates
        self.classifier = deeplab_head(self.encoder.feature_channels[-1], out_channels, rates)

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        return [self.classifier[-1]]

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.classifier(features[-1]), size=size, mode="bilinear", align_corners=False)
