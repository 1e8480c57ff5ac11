"""Tests of fluoseg.instance.scale (Kromp et al.'s equal-mean-size rescaling)."""

from __future__ import annotations

import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.data.resample import resample_image, resample_labels, resample_to_shape
from fluoseg.instance.scale import (
    MAX_SCALE,
    MIN_SCALE,
    estimate_diameter_from_labels,
    mean_object_diameter,
    object_diameters,
    peak_to_radius,
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


def test_scale_factor_is_clipped_the_same_for_training_and_prediction() -> None:
    assert scale_factor(10.0, 25.0) == pytest.approx(2.5)
    assert scale_factor(1.0, 25.0) == MAX_SCALE == 4.0  # a shattered first pass cannot ask for 25x
    assert scale_factor(500.0, 10.0) == MIN_SCALE == 0.125
    assert scale_factor(95.4, 14.6) == pytest.approx(14.6 / 95.4)  # the largest dsb2018 nuclei are not clipped
    with pytest.raises(FluosegError):
        scale_factor(0.0, 25.0)
    with pytest.raises(FluosegError):
        scale_factor(10.0, float("nan"))


def test_diameter_rescaling_there_and_back_keeps_labels() -> None:
    labels = disks(7)
    up = resample_labels(labels, (2.0, 2.0))
    assert up.shape == (200, 200) and up.dtype == labels.dtype
    assert np.array_equal(resample_to_shape(up, labels.shape, kind="labels"), labels)
    # A non-integer factor: back to the exact shape, objects nearly unchanged, diameter scaled.
    down = resample_labels(labels, (0.63, 0.63))
    assert estimate_diameter_from_labels(down) == pytest.approx(0.63 * 14, rel=0.08)
    back = resample_to_shape(down, labels.shape, kind="labels")
    assert back.shape == labels.shape
    for k in range(1, 17):
        a, b = labels == k, back == k
        assert (a & b).sum() / (a | b).sum() > 0.7  # blocky after 0.63x and back


def test_diameter_rescaling_of_images_keeps_leading_axes() -> None:
    image = np.random.default_rng(0).random((2, 3, 40, 50)).astype(np.float32)
    scaled = resample_image(image, (1.0, 1.5, 1.5))
    assert scaled.shape == (2, 3, 60, 75) and scaled.dtype == np.float32
    assert resample_to_shape(scaled, image.shape[1:], kind="probabilities").shape == image.shape
    constant = resample_image(np.full((2, 10, 10), 5, np.float32), (0.5, 0.5))
    np.testing.assert_allclose(constant, 5.0, rtol=1e-6)


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_peak_to_radius_is_one_for_disks_and_low_for_pieces_and_fused_objects():
    from scipy import ndimage as ndi

    disk = _disk((80, 80), (40, 40), 20)
    exact = ndi.distance_transform_edt(disk)  # the distance map a perfect network regresses
    assert peak_to_radius(exact, disk.astype(np.int32)) == pytest.approx(1.0, abs=0.05)
    # the disk cut into quadrants along a distance map flat inside it (a network that cannot measure
    # objects this large): each piece has half the radius and peaks at the plateau, a quarter of the radius
    quadrants = np.zeros((80, 80), np.int32)
    quadrants[:40, :40], quadrants[:40, 40:], quadrants[40:, :40], quadrants[40:, 40:] = 1, 2, 3, 4
    quadrants[~disk] = 0
    assert peak_to_radius(np.minimum(exact, 5.0), quadrants) == pytest.approx(5 / (20 / 2), rel=0.1)
    # two disks of radius 6 fused into one object: its peak is 6, its radius 6 * sqrt(2)
    pair = _disk((40, 60), (20, 15), 6) | _disk((40, 60), (20, 45), 6)
    assert peak_to_radius(ndi.distance_transform_edt(pair), pair.astype(np.int32)) == pytest.approx(
        1 / np.sqrt(2), rel=0.08)


def test_peak_to_radius_takes_the_median_over_objects_and_slices():
    values = np.zeros((2, 10, 10), np.float32)
    labels = np.zeros((2, 10, 10), np.int32)
    # three objects of 4 px (radius sqrt(4 / pi)) on two slices; one id spans both slices
    labels[0, :2, :2], labels[1, :2, :2], labels[1, 5:7, 5:7] = 7, 7, 9
    values[0, :2, :2], values[1, :2, :2], values[1, 5:7, 5:7] = 1.0, 2.0, 4.0
    radius = np.sqrt(4 / np.pi)
    assert peak_to_radius(values, labels) == pytest.approx(2.0 / radius)
    assert np.isnan(peak_to_radius(values, np.zeros_like(labels)))
    with pytest.raises(FluosegError, match="does not match labels"):
        peak_to_radius(values[0], labels)
