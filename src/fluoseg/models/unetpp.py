"""Nested U-Net (U-Net++, Zhou et al. 2018) on a (pretrained) encoder.

Zhou et al.: "the feature maps of the encoder undergo a dense convolution block whose
number of convolution layers depends on the pyramid level"; node X^{i,j} receives all
earlier nodes of its level and the upsampled node below,
``X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])``.

Here X^{i,0} (i = 0..4) are the encoder's five feature maps (strides 2..32), H is two 3x3
conv-BN-ReLU, Up is nearest-neighbour upsampling, and node X^{i,j} (j >= 1, i + j <= 4)
has the width the U-Net decoder (``"unet-encoder"``) gives its level, so the last column
X^{0,4}, X^{1,3}, ... is that U-Net's decoder plus the dense skips. Each output passes a
final block (upsampling to full resolution, two conv-BN-ReLU) and a 3x3 convolution.

Deep supervision (``deep_supervision=True``): the nodes X^{0,1..4} each get an output
head (the full-resolution block is shared, the final convolutions are not). In training
mode ``forward`` then returns the list of the four logit maps, shallow to deep, to be
scored with a loss averaged over heads (every loss of
:func:`fluoseg.train.segmentation_losses.build_loss` accepts such a list, and
``DeepSupervisionLoss`` wraps any other); in eval mode it returns their mean, Zhou et al.'s
"accurate mode", one tensor as the tiling code expects.

Unlike segmentation-models-pytorch's ``UnetPlusPlus``, whose inner nodes take the encoder's
widths (2048 channels with ResNet-101), inner nodes here take the decoder's widths, as in
the original U-Net++ where every node of a level has that level's width; parameter counts
therefore differ from smp's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.decoders import (
    DEFAULT_DECODER_CHANNELS,
    DecoderBlock,
    EncoderNetwork,
    initialise_decoder,
    initialise_head,
    positive_ints,
)
from fluoseg.models.registry import register_model

_LEVELS = 4
"""Encoder levels with decoder nodes (0..3); level 4 is the deepest encoder map."""


@register_model("unetpp")
class UNetPlusPlus(EncoderNetwork):
    """U-Net++ with dense skip connections X^{i,j} and optional deep supervision.

    Parameters
    ----------
    in_channels
        Number of marker slots K.
    out_channels
        Number of output logit channels.
    encoder, encoder_weights, encoder_weights_partial, stem_stride, marker_input, marker_input_options
        See :class:`~fluoseg.models.decoders.EncoderNetwork`.
    decoder_channels
        Widths of the nodes of levels 3, 2, 1, 0 and of the full-resolution block (deepest
        first, as for ``"unet-encoder"``).
    deep_supervision
        Output heads on X^{0,1}..X^{0,4}: a list of logits in training mode, their mean in
        eval mode. Without it only X^{0,4} has a head.
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
        deep_supervision: bool = False,
        marker_input: str = "mz",
        marker_input_options: Mapping[str, Any] | None = None,
    ) -> None:
        name = "unetpp"
        widths = positive_ints(name, "decoder_channels", decoder_channels, 5)
        if not isinstance(deep_supervision, bool):
            raise FluosegError(f"unetpp option 'deep_supervision' must be true or false, got {deep_supervision!r}")
        super().__init__(
            name, in_channels, out_channels, encoder=encoder, encoder_weights=encoder_weights,
            encoder_weights_partial=encoder_weights_partial, stem_stride=stem_stride, output_stride=None,
            marker_input=marker_input, marker_input_options=marker_input_options,
        )
        self.deep_supervision = deep_supervision
        encoder_widths = self.encoder.feature_channels
        node_widths = [widths[_LEVELS - 1 - i] for i in range(_LEVELS)]  # level 0 .. 3

        def below(i: int, j: int) -> int:  # width of X^{i+1, j-1}
            return encoder_widths[i + 1] if j == 1 else node_widths[i + 1]

        self.nodes = nn.ModuleDict(
            {
                f"x_{i}_{j}": DecoderBlock(below(i, j), encoder_widths[i] + (j - 1) * node_widths[i], node_widths[i])
                for j in range(1, _LEVELS + 1)
                for i in range(_LEVELS + 1 - j)
            }
        )
        self.final = DecoderBlock(node_widths[0], 0, widths[-1])
        self.heads = nn.ModuleList(
            nn.Conv2d(widths[-1], out_channels, 3, padding=1) for _ in range(_LEVELS if deep_supervision else 1)
        )
        initialise_decoder(self.nodes, self.final)
        for head in self.heads:
            initialise_head(head)

    def output_layers(self) -> list[nn.Conv2d]:
        """The convolution(s) producing the output logits (one row of weights per channel)."""
        return list(self.heads)

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> Tensor | list[Tensor]:
        grid: dict[tuple[int, int], Tensor] = {(i, 0): f for i, f in enumerate(features)}
        for j in range(1, _LEVELS + 1):
            for i in range(_LEVELS + 1 - j):
                same_level = [grid[i, k] for k in range(j)]
                grid[i, j] = self.nodes[f"x_{i}_{j}"](grid[i + 1, j - 1], same_level, tuple(grid[i, 0].shape[-2:]))
        columns = range(1, _LEVELS + 1) if self.deep_supervision else [_LEVELS]
        outputs = [head(self.final(grid[0, j], [], size)) for head, j in zip(self.heads, columns)]
        if len(outputs) == 1:
            return outputs[0]
        if self.training:
            return outputs
        return torch.stack(outputs).mean(dim=0)
