"""Tests of fluoseg.instance.scale (Kromp et al.'s equal-mean-size rescaling)."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.instance.scale import (
    estimate_diameter_from_labels,
    mean_object_diameter,
    object_diameters,
    rescale_image,
    rescale_labels,
    restore_shape,
    scale_factor,
)


def disks(radius: float, n: int = 4, size: int = 100) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    step = size // n
    for i in range(n):
        for j in range(n):
            cy, cx = (i + 0.5) * step, (j + 0.5) * step
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1 + i * n + j
    return labels


@pytest.mark.parametrize("radius", [4, 7.5, 11])
def test_mean_diameter_of_disks_is_twice_the_radius(radius: float) -> None:
    labels = disks(radius)
    assert estimate_diameter_from_labels(labels) == pytest.approx(2 * radius, rel=0.03)
    assert estimate_diameter_from_labels(labels, statistic="median") == pytest.approx(2 * radius, rel=0.03)


def test_mean_object_diameter_pools_objects_over_images() -> None:
    small, large = disks(4, n=4), disks(10, n=2)  # 16 and 4 objects
    pooled = mean_object_diameter([small, large])
    expected = np.concatenate([object_diameters(small), object_diameters(large)]).mean()
    assert pooled == pytest.approx(expected)
    assert mean_object_diameter(small) == pytest.approx(estimate_diameter_from_labels(small))
    assert len(object_diameters(np.stack([small, small]))) == 32  # slice-wise sections
    with pytest.raises(FluosegError):
        mean_object_diameter([np.zeros((5, 5), np.uint8)])
    with pytest.raises(FluosegError):
        estimate_diameter_from_labels(small, statistic="mode")  # type: ignore[arg-type]


def test_scale_factor() -> None:
    assert scale_factor(10.0, 25.0) == pytest.approx(2.5)
    with pytest.raises(FluosegError):
        scale_factor(0.0, 25.0)
    with pytest.raises(FluosegError):
        scale_factor(10.0, float("nan"))


def test_rescale_labels_there_and_back_keeps_labels() -> None:
    labels = disks(7)
    up = rescale_labels(labels, 2.0)
    assert up.shape == (200, 200) and up.dtype == labels.dtype
    assert np.array_equal(restore_shape(up, labels.shape, labels=True), labels)
    # A non-integer factor: back to the exact shape, objects nearly unchanged, diameter scaled.
    down = rescale_labels(labels, 0.63)
    assert estimate_diameter_from_labels(down) == pytest.approx(0.63 * 14, rel=0.08)
    back = restore_shape(down, labels.shape, labels=True)
    assert back.shape == labels.shape
    for k in range(1, 17):
        a, b = labels == k, back == k
        assert (a & b).sum() / (a | b).sum() > 0.7  # blocky after 0.63x and back


def test_rescale_image_keeps_leading_axes() -> None:
    image = np.random.default_rng(0).random((2, 3, 40, 50)).astype(np.float32)
    scaled = rescale_image(image, 1.5)
    assert scaled.shape == (2, 3, 60, 75) and scaled.dtype == np.float32
    back = restore_shape(scaled, image.shape)
    assert back.shape == image.shape
    constant = rescale_image(np.full((2, 10, 10), 5, np.uint8), 0.5)
    np.testing.assert_allclose(constant, 5.0)
    with pytest.raises(FluosegError):
        rescale_image(image, -1.0)
