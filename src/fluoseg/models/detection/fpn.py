"""Feature pyramid network (Lin et al. 2017) and the ResNet-FPN backbone of Mask R-CNN.

:class:`FeaturePyramidNetwork` is torchvision's: a 1x1 lateral convolution per input map,
a top-down pathway adding the nearest-upsampled coarser result, and a 3x3 convolution
per level, all with ``out_channels`` maps; optionally a last level made by max-pooling
the coarsest one with stride 2 (torchvision's ``LastLevelMaxPool``, "P6", used by the
RPN only). :class:`ResNetFPN` puts it on an encoder of :mod:`fluoseg.models.encoders`
(any input channels), tapping its last four stages (C2-C5, strides 4 to 32), as
torchvision's ``resnet_fpn_backbone``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.models.encoders import build_encoder


class FeaturePyramidNetwork(nn.Module):
    """Top-down feature pyramid with lateral connections.

    Parameters
    ----------
    in_channels_list
        Channels of the input maps, finest first.
    out_channels
        Channels of every output map (256 in Mask R-CNN and LACSS).
    extra_max_pool
        Append a level made by ``max_pool2d(kernel 1, stride 2)`` of the coarsest output.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int, *, extra_max_pool: bool = False) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list)
        self.extra_max_pool = extra_max_pool
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Pyramid maps, finest first, each the size of its input (plus the pooled extra level)."""
        last_inner = self.inner_blocks[-1](features[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[index](features[index])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[index](last_inner))
        if self.extra_max_pool:
            results.append(F.max_pool2d(results[-1], 1, 2, 0))
        return results


class ResNetFPN(nn.Module):
    """Encoder stages C2-C5 with an FPN on top: P2-P5 (strides 4-32) and P6 (stride 64).

    Parameters
    ----------
    in_channels
        Input image channels (marker slots); no ImageNet normalisation is applied.
    encoder
        A name of :func:`fluoseg.models.encoders.encoder_names` (``"resnet50"`` in
        torchvision's Mask R-CNN; ``"resnet18"`` trains on a CPU budget).
    out_channels
        Channels of the pyramid maps.

    Attributes
    ----------
    strides
        Stride of each output map, ``(4, 8, 16, 32, 64)``.
    size_divisible
        Input sizes must be multiples of this (the encoder's total stride, 32).
    """

    def __init__(self, in_channels: int, *, encoder: str = "resnet50", out_channels: int = 256) -> None:
        super().__init__()
        self.body = build_encoder(encoder, in_channels=in_channels)
        self.fpn = FeaturePyramidNetwork(self.body.feature_channels[1:], out_channels, extra_max_pool=True)
        self.out_channels = out_channels
        body_strides = self.body.feature_strides[1:]
        self.strides = (*body_strides, body_strides[-1] * 2)
        self.size_divisible = self.body.output_stride

    def forward(self, x: Tensor) -> list[Tensor]:
        """P2-P6 for ``x`` ``(N, C, H, W)`` with H and W multiples of :attr:`size_divisible`."""
        return self.fpn(self.body(x)[1:])
