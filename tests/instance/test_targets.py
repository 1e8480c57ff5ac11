"""Tests of fluoseg.instance.targets on hand-made label images."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from fluoseg.errors import FluosegError
from fluoseg.instance.targets import (
    BACKGROUND,
    BORDER,
    INTERIOR,
    border_targets,
    distance_targets,
    unet_weight_map,
)


def two_touching_squares() -> np.ndarray:
    labels = np.zeros((14, 20), np.uint16)
    labels[3:11, 3:10] = 1
    labels[3:11, 10:17] = 2
    return labels


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# ------------------------------------------------------------------ border_targets


def test_touching_squares_get_border_class_between_them_only() -> None:
    labels = two_touching_squares()
    classes = border_targets(labels)
    assert classes.dtype == np.uint8 and classes.shape == labels.shape
    # The columns on both sides of the contact line are border; nothing else is.
    expected_border = np.zeros(labels.shape, bool)
    expected_border[3:11, 9:11] = True
    assert np.array_equal(classes == BORDER, expected_border)
    assert np.array_equal(classes == BACKGROUND, labels == 0)
    # Interior + border is the whole foreground, and the two interiors are apart (8-connectivity).
    assert np.array_equal(classes > 0, labels > 0)
    _, n = ndi.label(classes == INTERIOR, structure=np.ones((3, 3)))
    assert n == 2


def test_single_disk_has_no_border_class() -> None:
    labels = disk((21, 21), (10, 10), 7).astype(np.int32) * 5
    classes = border_targets(labels)
    assert not (classes == BORDER).any()
    assert np.array_equal(classes == INTERIOR, labels > 0)


def test_border_all_marks_contours_and_erosion_widens_the_band() -> None:
    labels = disk((21, 21), (10, 10), 7).astype(np.int32)
    classes = border_targets(labels, border="all")
    inner = ndi.binary_erosion(labels > 0, structure=np.ones((3, 3)))
    assert np.array_equal(classes == INTERIOR, inner)
    assert np.array_equal(classes == BORDER, (labels > 0) & ~inner)

    wide = border_targets(two_touching_squares(), erosion=2)
    assert np.array_equal(np.flatnonzero((wide == BORDER).any(axis=0)), [8, 9, 10, 11])


def test_border_targets_slicewise_and_errors() -> None:
    stack = np.stack([two_touching_squares(), np.zeros((14, 20), np.uint16)])
    classes = border_targets(stack)
    assert np.array_equal(classes[0], border_targets(stack[0])) and not classes[1].any()
    with pytest.raises(FluosegError):
        border_targets(two_touching_squares(), erosion=0)
    with pytest.raises(FluosegError):
        border_targets(two_touching_squares() > 0)
    with pytest.raises(FluosegError):
        border_targets(np.zeros(5, int))


# ------------------------------------------------------------------ unet_weight_map


def brute_force_weights(labels: np.ndarray, w0: float, sigma: float, wc: np.ndarray) -> np.ndarray:
    ids = [k for k in np.unique(labels) if k]
    dists = np.sort(np.stack([ndi.distance_transform_edt(labels != k) for k in ids]), axis=0)
    return wc + w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))


def test_weight_map_matches_definition_and_peaks_between_close_objects() -> None:
    labels = np.zeros((40, 90), np.int32)
    labels[10:30, 5:25] = 1
    labels[10:30, 27:47] = 2  # two-pixel gap to object 1
    labels[12:20, 70:78] = 3  # far from both
    weights = unet_weight_map(labels)
    assert weights.dtype == np.float32 and weights.shape == labels.shape
    n, n_fg = labels.size, (labels > 0).sum()
    wc = np.where(labels > 0, n / (2 * n_fg), n / (2 * (n - n_fg)))
    np.testing.assert_allclose(weights, brute_force_weights(labels, 10.0, 5.0, wc), atol=1e-4)
    # The separation term peaks in the gap (d1 + d2 = 3, like on the facing rims) and
    # vanishes far from pairs of objects.
    term = weights - wc
    assert term[20, 25] == pytest.approx(term.max(), rel=1e-5)
    assert term[20, 25] == pytest.approx(10.0 * np.exp(-9 / 50), rel=1e-5)
    assert weights[0, 89] == pytest.approx(wc[0, 89], abs=1e-5)


def test_weight_map_single_object_is_class_weights_with_mean_one() -> None:
    labels = disk((30, 30), (15, 15), 6).astype(np.int32)
    weights = unet_weight_map(labels)
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert len(np.unique(weights)) == 2
    custom = unet_weight_map(labels, class_weights=[1.0, 3.0, 2.0], classes=border_targets(labels, border="all"))
    assert set(np.unique(custom)) == {1.0, 3.0, 2.0}
    with pytest.raises(FluosegError):
        unet_weight_map(labels, class_weights=[1.0])
    with pytest.raises(FluosegError):
        unet_weight_map(labels, sigma=0)


def test_weight_map_is_fast_for_200_objects() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((512, 512), np.int32)
    for k, (y, x) in enumerate(rng.integers(10, 502, size=(200, 2)), start=1):
        labels[max(y - 8, 0) : y + 8, max(x - 8, 0) : x + 8] = k
    start = time.perf_counter()
    unet_weight_map(labels)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------ distance_targets


def test_distance_zero_outside_and_peak_at_centre() -> None:
    labels = disk((31, 31), (15, 15), 10).astype(np.int32) * 3
    distance, foreground = distance_targets(labels)
    assert distance.dtype == np.float32 and foreground.dtype == np.uint8
    assert np.array_equal(foreground, labels > 0)
    assert (distance[labels == 0] == 0).all()
    assert np.unravel_index(np.argmax(distance), distance.shape) == (15, 15)
    np.testing.assert_allclose(distance, ndi.distance_transform_edt(labels > 0), atol=1e-6)


def test_distance_touching_objects_meet_in_a_valley_and_normalise() -> None:
    labels = two_touching_squares()
    distance, _ = distance_targets(labels)
    assert distance[6, 9] == 1 and distance[6, 10] == 1  # the contact line is a border
    per_object, _ = distance_targets(labels * 7, normalise="per_object")
    for k in (7, 14):
        assert per_object[labels * 7 == k].max() == pytest.approx(1.0)
    global_, _ = distance_targets(labels, normalise="global")
    np.testing.assert_allclose(global_, distance / distance.max())
    stack, _ = distance_targets(np.stack([labels, labels]))
    assert np.array_equal(stack[1], distance)
    with pytest.raises(FluosegError):
        distance_targets(labels, normalise="max")  # type: ignore[arg-type]
