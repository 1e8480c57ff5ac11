"""Tests of fluoseg.models.detection.roi_align against a direct loop of torchvision's CPU kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fluoseg.models.detection.roi_align import LevelMapper, MultiScaleRoIAlign, roi_align, rois_from_boxes


def bilinear_interpolate(feature: np.ndarray, y: float, x: float) -> float:
    """torchvision's ``bilinear_interpolate`` (roi_align_kernel.cpp), one channel."""
    height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
            + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])


def roi_align_loop(features: np.ndarray, rois: np.ndarray, pooled: tuple[int, int], scale: float,
                   sampling_ratio: int, aligned: bool = False) -> np.ndarray:
    """torchvision's ``roi_align_forward_kernel_impl`` written as plain loops."""
    pooled_h, pooled_w = pooled
    out = np.zeros((len(rois), features.shape[1], pooled_h, pooled_w))
    offset = 0.5 if aligned else 0.0
    for n, roi in enumerate(rois):
        image = int(roi[0])
        start_w, start_h = roi[1] * scale - offset, roi[2] * scale - offset
        end_w, end_h = roi[3] * scale - offset, roi[4] * scale - offset
        roi_w, roi_h = end_w - start_w, end_h - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_w)
        count = max(grid_h * grid_w, 1)
        for c in range(features.shape[1]):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    total = 0.0
                    for iy in range(grid_h):
                        y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += bilinear_interpolate(features[image, c], y, x)
                    out[n, c, ph, pw] = total / count
    return out


def random_rois(rng: np.random.Generator, n: int, n_images: int, height: int, width: int) -> np.ndarray:
    """Boxes that poke out of the image, are tiny, or degenerate, on several images."""
    x1 = rng.uniform(-6, width + 2, n)
    y1 = rng.uniform(-6, height + 2, n)
    w = rng.choice([0.0, 0.3, 2.0, 7.5, 25.0], n) * rng.uniform(0.5, 1.5, n)
    h = rng.choice([0.0, 0.3, 2.0, 7.5, 25.0], n) * rng.uniform(0.5, 1.5, n)
    index = rng.integers(0, n_images, n)
    return np.stack([index, x1, y1, x1 + w, y1 + h], axis=1)


@pytest.mark.parametrize("sampling_ratio", [2, 1, 0])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_roi_align_equals_torchvision_loop(sampling_ratio, aligned, scale):
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2, 2, 11, 13)).astype(np.float32)
    rois = random_rois(rng, 24, 2, int(11 / scale), int(13 / scale)).astype(np.float32)
    expected = roi_align_loop(features.astype(np.float64), rois.astype(np.float64), (3, 4), scale,
                              sampling_ratio, aligned)
    got = roi_align(torch.from_numpy(features), torch.from_numpy(rois), (3, 4), scale, sampling_ratio, aligned)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)


def test_roi_align_single_pixel_map_and_no_rois():
    features = torch.full((1, 1, 1, 1), 3.0)
    rois = torch.tensor([[0.0, -0.5, -0.5, 0.5, 0.5]])
    expected = roi_align_loop(features.numpy(), rois.numpy(), (2, 2), 1.0, 2)
    np.testing.assert_allclose(roi_align(features, rois, 2).numpy(), expected)
    assert roi_align(features, torch.zeros((0, 5)), 2).shape == (0, 1, 2, 2)


def test_roi_align_gradient_reaches_features():
    features = torch.randn(1, 3, 8, 8, requires_grad=True)
    out = roi_align(features, torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]]), 2)
    out.sum().backward()
    # Every sample averages bilinear weights that sum to 1, so the total gradient per channel is 1 per bin.
    np.testing.assert_allclose(features.grad.sum(dim=(2, 3)).numpy(), np.full((1, 3), 4.0), rtol=1e-5)


def test_level_mapper_rule():
    mapper = LevelMapper(2, 5)
    sides = torch.tensor([10.0, 111.9, 112.0, 224.0, 447.0, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros(7), torch.zeros(7), sides, sides], dim=1)
    # floor(4 + log2(side / 224) + 1e-6) clamped to [2, 5], minus 2.
    assert mapper([boxes]).tolist() == [0, 0, 1, 2, 2, 3, 3]


def test_multiscale_roi_align_pools_each_box_from_its_level():
    features = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    pooler = MultiScaleRoIAlign((4, 8, 16, 32), 5)
    boxes = [torch.tensor([[0.0, 0.0, 30.0, 30.0], [4.0, 4.0, 124.0, 124.0]]), torch.tensor([[10.0, 20.0, 60.0, 90.0]])]
    got = pooler(features, boxes)
    rois = rois_from_boxes(boxes)
    # sqrt(area): 30 -> level 2 (index 0), 120 -> level 3 (index 1), ~59 -> level 2 (index 0).
    for row, level in zip(range(3), [0, 1, 0]):
        expected = roi_align(features[level], rois[row : row + 1], 5, 1.0 / pooler.strides[level], 2)
        torch.testing.assert_close(got[row : row + 1], expected)
