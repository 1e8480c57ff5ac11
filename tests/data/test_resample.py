"""Tests of resampling to a working pixel size and back (fluoseg.data.resample)."""

import numpy as np
import pytest
from scipy import ndimage

from fluoseg.data.resample import (
    resample_image,
    resample_labels,
    resample_mask,
    resample_to_shape,
    resampled_shape,
    scale_factors,
)
from fluoseg.data.synth.vessels import simulate_tissue
from fluoseg.errors import FluosegError


def test_scale_factors():
    assert scale_factors((0.5, 0.5), 1.0) == (0.5, 0.5)
    assert scale_factors((2.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == (2.0, 1.0, 1.0)
    assert scale_factors((3.0, 0.5, 0.5), (None, 1.0, 1.0)) == (1.0, 0.5, 0.5)
    with pytest.raises(FluosegError, match="positive"):
        scale_factors((0.0, 1.0), 1.0)
    with pytest.raises(FluosegError, match="per spatial axis"):
        scale_factors((1.0, 1.0), (1.0, 1.0, 1.0))


def test_resampled_shape_rounds_and_never_collapses():
    assert resampled_shape((101, 77), (0.5, 0.5)) == (50, 38)
    assert resampled_shape((3, 3), (0.01, 2.0)) == (1, 6)
    with pytest.raises(FluosegError):
        resampled_shape((10, 10), (0.5,))


@pytest.mark.parametrize("factor", [0.5, 0.37, 1.6])
def test_image_round_trip_keeps_shape_and_content(factor):
    yy, xx = np.mgrid[:101, :77]
    smooth = np.sin(yy / 9.0) + np.cos(xx / 7.0)
    image = np.stack([smooth, 2 * smooth + 5]).astype(np.float32)
    small = resample_image(image, (factor, factor))
    assert small.dtype == np.float32 and small.shape == (2,) + resampled_shape((101, 77), (factor, factor))
    back = resample_to_shape(small, (101, 77), kind="image")
    assert back.shape == image.shape
    # Pixel centres stay aligned: no shift, only the detail lost to the coarser grid.
    inner = (slice(None), slice(6, -6), slice(6, -6))
    assert np.abs(back - image)[inner].mean() < 0.05


def test_downsampling_is_anti_aliased():
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)[None]
    small = resample_image(checker, (0.5, 0.5))
    # Without the low-pass filter one phase of the checkerboard would be picked (all 0 or 1).
    assert np.abs(small - 0.5).max() < 0.2
    assert np.abs(resample_image(checker, (0.5, 0.5), antialias=False) - 0.5).max() <= 0.5


def test_3d_image_and_per_axis_factors():
    image = np.random.default_rng(0).random((2, 6, 20, 30)).astype(np.float32)
    out = resample_image(image, (2.0, 0.5, 1.0))
    assert out.shape == (2, 12, 10, 30)
    assert resample_to_shape(out, (6, 20, 30), kind="image").shape == image.shape


def _area_error(masks, factor, method):
    shape = resampled_shape(masks.shape[1:], (factor, factor))
    if method == "nearest":
        out = np.stack([ndimage.zoom(m, factor, order=0, mode="nearest", grid_mode=True) for m in masks])
    elif method == "linear":
        out = np.stack([ndimage.zoom(m.astype(np.float32), factor, order=1, mode="nearest", grid_mode=True) >= 0.5
                        for m in masks])
    else:
        out = resample_mask(masks, (factor, factor))
    assert out.shape[1:] == shape
    before = masks.reshape(len(masks), -1).mean(1)
    return np.abs(out.reshape(len(masks), -1).mean(1) / before - 1)


def test_mask_resampling_preserves_area_better_than_linear_threshold():
    # The decision documented in resample.py: shrinking with nearest neighbour keeps each
    # class's area fraction; linear interpolation thresholded at 0.5 is biased (at factor
    # 0.5 every output pixel sits midway between two input pixels).
    masks = np.concatenate([simulate_tissue((256, 256), seed=s, artery_probability=1.0).masks for s in range(3)])
    factors = (0.5, 0.25, 0.37, 0.66, 0.8)
    ours = np.array([_area_error(masks, f, "ours") for f in factors])
    linear = np.array([_area_error(masks, f, "linear") for f in factors])
    assert ours.mean(1).max() < 0.04, ours
    assert ours.mean() < linear.mean()
    assert linear[0].mean() > 2 * ours[0].mean()  # factor 0.5, e.g. 0.5 µm -> 1 µm


@pytest.mark.parametrize("factor", [0.5, 0.37, 1.3, 2.0])
def test_mask_round_trip_keeps_shape_and_area_fraction(factor):
    masks = simulate_tissue((200, 180), seed=4, artery_probability=1.0).masks
    small = resample_mask(masks, (factor, factor))
    assert small.dtype == np.uint8 and set(np.unique(small)) <= {0, 1}
    back = resample_to_shape(small, (200, 180), kind="mask")
    assert back.shape == masks.shape and back.dtype == np.uint8
    before = masks.reshape(2, -1).mean(1)
    for out in (small, back):
        np.testing.assert_allclose(out.reshape(2, -1).mean(1), before, rtol=0.12)


def test_upsampled_mask_is_smooth():
    disc = (np.hypot(*np.mgrid[-10:10, -10:10] + 0.5) < 7).astype(np.uint8)[None]
    big = resample_mask(disc, (4.0, 4.0))[0]
    # Linear interpolation + threshold gives a round disc, not 4x4 blocks: its area is close
    # to pi r^2 at the new scale and its outline has more than 4-pixel steps.
    assert big.sum() == pytest.approx(np.pi * 28**2, rel=0.05)
    assert not np.array_equal(big, np.kron(disc[0], np.ones((4, 4), np.uint8)))


@pytest.mark.parametrize("factor", [0.5, 0.43, 1.7])
def test_labels_keep_ids_and_dtype(factor):
    labels = np.zeros((120, 90), np.int32)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:120, :90]
    for i, (cy, cx) in enumerate(rng.integers(12, 78, (8, 2)), start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1000 + i  # large ids, overlapping discs
    small = resample_labels(labels, (factor, factor))
    assert small.dtype == labels.dtype
    assert set(np.unique(small)) == set(np.unique(labels))
    back = resample_to_shape(small, labels.shape, kind="labels")
    assert back.shape == labels.shape and set(np.unique(back)) == set(np.unique(labels))


def test_probabilities_stay_in_unit_interval():
    probs = np.random.default_rng(2).random((2, 33, 47)).astype(np.float32)
    for shape in [(100, 140), (10, 12)]:
        out = resample_to_shape(probs, shape, kind="probabilities")
        assert out.shape == (2,) + shape and out.min() >= 0.0 and out.max() <= 1.0


def test_resample_user_errors():
    with pytest.raises(FluosegError, match="unknown resampling kind"):
        resample_to_shape(np.zeros((1, 4, 4)), (8, 8), kind="nearest")
    with pytest.raises(FluosegError, match="target shape"):
        resample_to_shape(np.zeros((1, 4, 4)), (8, 8, 8), kind="image")
    with pytest.raises(FluosegError, match="must be"):
        resample_image(np.zeros((4, 4)), (2.0, 2.0))
