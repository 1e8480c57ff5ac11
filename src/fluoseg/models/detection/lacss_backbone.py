"""LACSS backbone: a ResNet without stem downsampling, with channel attention, and an FPN.

LACSS supplement, "Backbone": the stem is "simply two layers of convolution filters with
ReLU activation, resulting in a tensor of (H x W x 64)" (no downsampling, because cells
are small compared with ImageNet objects); the ResNet adds "channel attention
operations at the end of each major processing block"; the encoder "outputs
representations at 2x, 4x, 8x and 16x down-sized dimensions, corresponding to output
level 1-4", which a standard FPN integrates into 256 maps per level. Every one of the four
stages therefore starts with a stride-2 block.

Choices the supplement leaves open: the stem's first convolution has 24 filters (LACSS's
public code); channel attention is Squeeze-and-Excitation (reduction 16) after each of
the four stages; batch normalisation as in torchvision's ResNet blocks, which are reused
from :mod:`fluoseg.models.encoders`. ``depth`` selects ResNet-18/34 blocks for CPU
budgets besides the paper's ResNet-50.
"""

from __future__ import annotations

from torch import Tensor, nn

from fluoseg.models.attention import SqueezeExcitation
from fluoseg.models.detection.fpn import FeaturePyramidNetwork
from fluoseg.models.encoders import BasicBlock, Bottleneck

DEPTHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
"""ResNet variants of the LACSS backbone: block type and blocks per stage."""

STAGE_PLANES = (64, 128, 256, 512)
STEM_CHANNELS = (24, 64)
ATTENTION_REDUCTION = 16


class AttentiveStage(nn.Module):
    """A ResNet stage (first block strided) followed by Squeeze-and-Excitation."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int) -> None:
        super().__init__()
        out_channels = planes * block.expansion
        downsample = nn.Sequential(nn.Conv2d(inplanes, out_channels, 1, stride=2, bias=False),
                                   nn.BatchNorm2d(out_channels))
        layers = [block(inplanes, planes, 2, downsample)]
        layers += [block(out_channels, planes) for _ in range(1, blocks)]
        self.blocks = nn.Sequential(*layers)
        self.attention = SqueezeExcitation(out_channels, 1, reduction=ATTENTION_REDUCTION)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(x)
        return x * self.attention.weights(x)[:, :, None, None]


class LacssBackbone(nn.Module):
    """Stem, four attentive ResNet stages and an FPN: 256-map features at strides 2, 4, 8, 16.

    Parameters
    ----------
    in_channels
        Image channels.
    depth
        ``"resnet50"`` (the paper's), ``"resnet34"`` or ``"resnet18"``.
    fpn_channels
        Channels of every pyramid level (256).

    Attributes
    ----------
    strides
        ``(2, 4, 8, 16)``: levels 1-4 of the supplement.
    size_divisible
        Input sizes must be multiples of 16.
    """

    strides = (2, 4, 8, 16)
    size_divisible = 16

    def __init__(self, in_channels: int, *, depth: str = "resnet50", fpn_channels: int = 256) -> None:
        super().__init__()
        block, layers = DEPTHS[depth]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM_CHANNELS[0], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(STEM_CHANNELS[0], STEM_CHANNELS[1], 3, padding=1), nn.ReLU(inplace=True),
        )
        stages = []
        inplanes = STEM_CHANNELS[1]
        for planes, blocks in zip(STAGE_PLANES, layers):
            stages.append(AttentiveStage(block, inplanes, planes, blocks))
            inplanes = stages[-1].out_channels
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork([s.out_channels for s in stages], fpn_channels)
        self.out_channels = fpn_channels
        # He initialisation as torchvision's ResNet; the FPN keeps its own.
        for part in (self.stem, self.stages):
            for module in part.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        """Pyramid levels 1-4 for ``x`` ``(N, C, H, W)``, H and W multiples of 16."""
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.fpn(features)
