"""Tests of fluoseg.models.detection.fpn."""

from __future__ import annotations

import torch

from fluoseg.models.detection.fpn import FeaturePyramidNetwork, ResNetFPN


def test_resnet_fpn_levels_and_strides():
    torch.manual_seed(0)
    backbone = ResNetFPN(2, encoder="resnet18", out_channels=16).eval()
    assert backbone.strides == (4, 8, 16, 32, 64)
    assert backbone.size_divisible == 32
    with torch.no_grad():
        levels = backbone(torch.randn(1, 2, 64, 96))
    assert [tuple(level.shape) for level in levels] == [(1, 16, 16, 24), (1, 16, 8, 12), (1, 16, 4, 6),
                                                        (1, 16, 2, 3), (1, 16, 1, 2)]
    # P6 is P5 subsampled with stride 2.
    torch.testing.assert_close(levels[4], levels[3][:, :, ::2, ::2])


def test_fpn_information_flows_top_down_only():
    torch.manual_seed(0)
    fpn = FeaturePyramidNetwork([3, 5, 7], 4)
    inputs = [torch.randn(1, 3, 8, 8), torch.randn(1, 5, 4, 4), torch.randn(1, 7, 2, 2)]
    base = fpn(inputs)
    finest_changed = fpn([inputs[0] + 1, inputs[1], inputs[2]])
    coarsest_changed = fpn([inputs[0], inputs[1], inputs[2] + 1])
    # A change in the finest input leaves the coarser outputs alone...
    torch.testing.assert_close(finest_changed[1], base[1])
    torch.testing.assert_close(finest_changed[2], base[2])
    # ...while a change in the coarsest reaches every level.
    assert all(not torch.allclose(a, b) for a, b in zip(coarsest_changed, base))
