import numpy as np
import pytest

from fluoseg.data.resample import resample_image, resample_labels, resample_mask, resample_to_shape, scale_factors
from fluoseg.errors import FluosegError


def test_scale_factors():
    assert scale_factors((0.5, 0.5), 1.0) == (0.5, 0.5)
    assert scale_factors((2.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == (2.0, 1.0, 1.0)
    with pytest.raises(FluosegError):
        scale_factors((0.0, 1.0), 1.0)


def test_image_round_trip_keeps_shape_and_smooth_content():
    yy, xx = np.mgrid[:101, :77]
    image = np.stack([np.sin(yy / 10.0) + np.cos(xx / 12.0)]).astype(np.float32)
    small = resample_image(image, (0.5, 0.5))
    assert small.shape == (1, 50, 38)
    back = resample_to_shape(small, (101, 77), kind="image")
    assert back.shape == image.shape
    assert np.abs(back - image)[:, 5:-5, 5:-5].max() < 0.1


def test_mask_area_preserved():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :200]
    mask = np.zeros((1, 200, 200), np.uint8)
    for _ in range(15):
        cy, cx, r = rng.integers(0, 200, 2).tolist() + [int(rng.integers(5, 15))]
        mask[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    for factor in (0.5, 0.37, 1.6):
        resized = resample_mask(mask, (factor, factor))
        assert set(np.unique(resized)) <= {0, 1}
        assert abs(resized.mean() - mask.mean()) < 0.01
        assert resample_to_shape(resized, (200, 200), kind="mask").shape == (1, 200, 200)


def test_labels_keep_ids():
    labels = np.zeros((60, 60), np.uint16)
    labels[5:20, 5:20] = 3
    labels[30:50, 25:55] = 7
    for factor in (0.5, 2.0):
        resized = resample_labels(labels, (factor, factor))
        assert set(np.unique(resized)) == {0, 3, 7} and resized.dtype == labels.dtype
        back = resample_to_shape(resized, labels.shape, kind="labels")
        assert back.shape == labels.shape and np.mean(back == labels) > 0.97
