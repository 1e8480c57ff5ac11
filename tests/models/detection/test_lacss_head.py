"""Tests of fluoseg.models.detection.lacss_head: patches, location encoding, head and auxnet."""

from __future__ import annotations

import numpy as np
import torch

from fluoseg.models.detection.lacss_head import (
    AuxNet,
    LocationConditionedSegmentation,
    crop_patches,
    paste_patches,
)


def test_crop_patches_pads_with_zeros():
    image = torch.arange(1.0, 13.0).reshape(3, 4)
    origins = torch.tensor([[-1, -1], [1, 2]])
    patches = crop_patches(image, origins, 2, shared=True)
    assert patches.tolist() == [[[0.0, 0.0], [0.0, 1.0]], [[7.0, 8.0], [11.0, 12.0]]]
    per_patch = crop_patches(torch.stack([image, -image]), origins, 2)
    assert per_patch[1].tolist() == [[-7.0, -8.0], [-11.0, -12.0]]
    maps = crop_patches(torch.stack([image, 10 * image]), origins, 2, shared=True)
    assert maps.shape == (2, 2, 2, 2) and maps[1, 1].tolist() == [[70.0, 80.0], [110.0, 120.0]]


def test_paste_patches_sums_or_separates_and_crops():
    patches = torch.ones(2, 3, 3)
    origins = torch.tensor([[-1, -1], [0, 1]])
    summed = paste_patches(patches, origins, (3, 5))
    # Patch 0 covers rows 0-1, columns 0-1 of the image; patch 1 rows 0-2, columns 1-3.
    expected = np.array([[1, 2, 1, 1, 0], [1, 2, 1, 1, 0], [0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(summed.numpy(), expected)
    separate = paste_patches(patches, origins, (3, 5), accumulate=False)
    np.testing.assert_array_equal(separate.sum(0).numpy(), expected)
    assert separate.shape == (2, 3, 5) and separate[0, 2].sum() == 0
    assert paste_patches(torch.zeros(0, 3, 3), torch.zeros((0, 2), dtype=torch.int64), (3, 5),
                         accumulate=False).shape == (0, 3, 5)


def test_patch_origin_and_location_encoding_by_hand():
    head = LocationConditionedSegmentation(4, crop_size=8, shared_channels=(4,), patch_channels=4)
    locations = torch.tensor([[5.0, 9.0]])
    origins = head.patch_origins(locations)
    # Location in feature cell (2, 4); the 4-cell patch starts 2 cells before: pixel (0, 4).
    assert origins.tolist() == [[0, 4]]
    encoding = head.location_encoding(locations, origins)
    # Cell centres y = 0.5, 2.5, 4.5, 6.5 and x = 4.5, 6.5, 8.5, 10.5, minus the location, over 4.
    np.testing.assert_allclose(encoding[0, 0, :, 0].numpy(), [-1.125, -0.625, -0.125, 0.375])
    np.testing.assert_allclose(encoding[0, 1, 0, :].numpy(), [-1.125, -0.625, -0.125, 0.375])


def test_head_outputs_one_crop_per_location_conditioned_on_it():
    torch.manual_seed(0)
    head = LocationConditionedSegmentation(6, crop_size=8, shared_channels=(8,), patch_channels=4)
    features = torch.randn(2, 6, 10, 10)
    uniform = torch.ones(1, 6, 10, 10)
    (logits, origins), (empty, _) = head(features, [torch.tensor([[3.0, 4.0], [12.0, 15.0]]), torch.zeros((0, 2))])
    assert logits.shape == (2, 8, 8) and origins.shape == (2, 2) and empty.shape == (0, 8, 8)
    # On constant features, locations in the same cell at different sub-cell positions differ
    # only through the location encoding.
    (a, _), = head(uniform, [torch.tensor([[8.0, 8.0]])])
    (b, _), = head(uniform, [torch.tensor([[9.5, 9.5]])])
    assert not torch.allclose(a, b)


def test_auxnet_has_a_small_field_of_view():
    torch.manual_seed(0)
    auxnet = AuxNet(2)
    image = torch.zeros(1, 2, 21, 21)
    base = auxnet(image)
    image[0, 0, 10, 10] = 5.0
    changed = (auxnet(image) - base).abs()[0] > 0
    assert base.shape == (1, 21, 21) and bool(((base > 0) & (base < 1)).all())
    rows, cols = torch.where(changed)
    # Four 3x3 convolutions: a pixel influences outputs at most 4 pixels away.
    assert rows.min() >= 6 and rows.max() <= 14 and cols.min() >= 6 and cols.max() <= 14
