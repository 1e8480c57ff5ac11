"""Tests of fluoseg.models.detection.anchors."""

from __future__ import annotations

import pytest
import torch

from fluoseg.models.detection.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_by_hand():
    # Ratio 0.5: w = 32 / sqrt(0.5) = 45.25, h = 22.63 -> half sizes 22.63, 11.31 -> rounded 23, 11.
    anchors = cell_anchors((32.0,), (0.5, 1.0, 2.0))
    assert anchors.tolist() == [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]


def test_cell_anchors_order_ratios_outer_sizes_inner():
    anchors = cell_anchors((8.0, 16.0), (1.0, 4.0))
    widths = (anchors[:, 2] - anchors[:, 0]).tolist()
    assert widths == [8.0, 16.0, 4.0, 8.0]


def test_anchor_grid_order_and_strides():
    generator = AnchorGenerator(((8.0,), (16.0,)), ((1.0, 2.0),) * 2)
    anchors = generator((32, 48), [(4, 6), (2, 3)])
    assert anchors.shape == ((4 * 6 + 2 * 3) * 2, 4)
    # Level 0, stride 8: row-major positions, two cell anchors per position.
    assert anchors[0].tolist() == [-4.0, -4.0, 4.0, 4.0]
    assert anchors[2].tolist() == [4.0, -4.0, 12.0, 4.0]  # next column, x + 8
    assert anchors[2 * 6].tolist() == [-4.0, 4.0, 4.0, 12.0]  # next row, y + 8
    # Level 1 starts after level 0, stride 16.
    assert anchors[48 + 2].tolist() == [8.0, -8.0, 24.0, 8.0]
    assert generator.num_anchors_per_location() == [2, 2]


def test_anchor_level_count_mismatch():
    with pytest.raises(ValueError, match="levels"):
        AnchorGenerator(((8.0,),), ((1.0,),))((8, 8), [(2, 2), (1, 1)], dtype=torch.float32)
