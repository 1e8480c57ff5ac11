"""Fully convolutional network (FCN, Shelhamer et al. 2017) head on a (pretrained) encoder.

torchvision's ``fcn_resnet50/101``, which the transfer-learning study fine-tuned from
COCO: the encoder runs at output stride 8 (dilation instead of stride in ``layer3`` and
``layer4``), ``FCNHead`` (3x3 conv to a quarter of the channels, BN, ReLU, dropout 0.1, 1x1
conv to the classes) maps its last feature map to logits, which are upsampled bilinearly
to the input size. The head is named ``classifier`` with torchvision's indices, so the
keys of a torchvision FCN's ``classifier.*`` match (all but the last layer, whose class
count differs). torchvision's auxiliary head on ``layer3`` is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.models.decoders import EncoderNetwork
from fluoseg.models.mc_dropout import check_dropout
from fluoseg.models.registry import register_model


def fcn_head(in_channels: int, out_channels: int, *, dropout: float = 0.1) -> nn.Sequential:
    """torchvision's ``FCNHead``: 3x3 conv-BN-ReLU to ``in_channels // 4``, dropout, 1x1 conv."""
    inter = in_channels // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
        nn.BatchNorm2d(inter),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Conv2d(inter, out_channels, 1),
    )


@register_model("fcn")
class FCN(EncoderNetwork):
    """FCN head on the encoder's last feature map, upsampled bilinearly to the input size.

    Parameters
    ----------
    in_channels
        Number of marker slots K.
    out_channels
        Number of output logit channels.
    encoder, encoder_weights, encoder_weights_partial, stem_stride, marker_input, marker_input_options
        See :class:`~fluoseg.models.decoders.EncoderNetwork`.
    output_stride
        Stride of the encoder's last map: 8 (torchvision's FCN, the default), 16 or 32
        (no dilation). Lower is finer and slower. Without stem downsampling the natural
        stride is 8, so only 8, 4 or 2 are possible.
    dropout
        Dropout probability in the head (0.1 in torchvision).
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
        dropout: float = 0.1,
        marker_input: str = "mz",
        marker_input_options: Mapping[str, Any] | None = None,
    ) -> None:
        name = "fcn"
        dropout = check_dropout(name, dropout)
        super().__init__(
            name, in_channels, out_channels, encoder=encoder, encoder_weights=encoder_weights,
            encoder_weights_partial=encoder_weights_partial, stem_stride=stem_stride, output_stride=output_stride,
            marker_input=marker_input, marker_input_options=marker_input_options,
        )
        self.classifier = fcn_head(self.encoder.feature_channels[-1], out_channels, dropout=dropout)

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        return [self.classifier[-1]]

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.classifier(features[-1]), size=size, mode="bilinear", align_corners=False)
