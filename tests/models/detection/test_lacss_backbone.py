"""Tests of fluoseg.models.detection.lacss_backbone."""

from __future__ import annotations

import torch

from fluoseg.models.detection.lacss_backbone import LacssBackbone


def test_levels_at_strides_2_to_16_without_stem_downsampling():
    torch.manual_seed(0)
    backbone = LacssBackbone(3, depth="resnet18", fpn_channels=8).eval()
    with torch.no_grad():
        stem = backbone.stem(torch.randn(1, 3, 32, 48))
        levels = backbone(torch.randn(1, 3, 32, 48))
    assert stem.shape == (1, 64, 32, 48)
    assert [tuple(level.shape) for level in levels] == [(1, 8, 16, 24), (1, 8, 8, 12), (1, 8, 4, 6), (1, 8, 2, 3)]


def test_resnet50_stages_and_channel_attention():
    with torch.device("meta"):
        backbone = LacssBackbone(1, depth="resnet50")
    assert [stage.out_channels for stage in backbone.stages] == [256, 512, 1024, 2048]
    assert [len(stage.blocks) for stage in backbone.stages] == [3, 4, 6, 3]
    # Squeeze-and-Excitation with reduction 16 after each stage.
    assert backbone.stages[3].attention.squeeze.weight.shape == (2048 // 16, 2048)
