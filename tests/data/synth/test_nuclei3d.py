"""Tests of the 3D nuclei simulator (fluoseg.data.synth.nuclei3d)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fluoseg.data.synth.nuclei3d import simulate_nuclei_3d
from fluoseg.errors import FluosegError


def test_shapes_dtypes_pixel_size_and_determinism():
    image, labels, pixel_size = simulate_nuclei_3d((10, 64, 72), seed=1, z_step=2.5, pixel_size_yx=0.4)
    assert image.shape == (1, 10, 64, 72) and image.dtype == np.uint16
    assert labels.shape == (10, 64, 72) and labels.dtype == np.int32
    assert pixel_size == pytest.approx((1.0, 0.4, 0.4))
    again = simulate_nuclei_3d((10, 64, 72), seed=1, z_step=2.5, pixel_size_yx=0.4)
    assert np.array_equal(again.image, image) and np.array_equal(again.labels, labels)
    assert not np.array_equal(simulate_nuclei_3d((10, 64, 72), seed=2).labels, labels)
    assert simulate_nuclei_3d((6, 40, 40), seed=0, dtype=np.uint8).image.dtype == np.uint8


def test_labels_are_consecutive_connected_ellipsoids():
    _, labels, _ = simulate_nuclei_3d((12, 80, 80), seed=3, z_step=1.0)
    ids = np.unique(labels)
    assert np.array_equal(ids, np.arange(labels.max() + 1)) and labels.max() >= 10
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        _, parts = ndi.label(labels[box] == i)
        assert parts == 1
    volumes = np.bincount(labels.ravel())[1:]
    # semi-axes 0.6-1 x (4..8): an ellipsoid holds at most 4/3 pi 8^3 voxels at z_step 1
    assert volumes.max() <= 4 / 3 * np.pi * 8.5**3


def test_z_sampling_shrinks_objects_along_z_by_the_step():
    _, labels, _ = simulate_nuclei_3d((40, 96, 96), seed=4, z_step=3.0, radius_range=(5, 6))
    boxes = ndi.find_objects(labels)
    extents = np.array([[s.stop - s.start for s in box] for box in boxes], float)
    whole = np.array([box[0].start > 0 and box[0].stop < 40 for box in boxes])  # not cut by top/bottom
    ratio = np.median(extents[whole, 0]) / np.median(extents[whole, 1:])
    assert ratio == pytest.approx(1 / 3, abs=0.12)


def test_orientations_are_random():
    _, labels, _ = simulate_nuclei_3d((24, 96, 96), seed=5, z_step=1.0, radius_range=(6, 8))
    tilted = 0
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        coords = np.argwhere(labels[box] == i).astype(float)
        if len(coords) < 50:
            continue
        _, vectors = np.linalg.eigh(np.cov(coords.T))
        longest = np.abs(vectors[:, -1])
        tilted += longest.max() < 0.95  # the long axis is not along a grid axis
    assert tilted >= 5


def test_image_shows_the_nuclei():
    image, labels, _ = simulate_nuclei_3d((12, 64, 64), seed=6)
    inside = image[0][labels > 0].astype(float)
    outside = image[0][ndi.distance_transform_edt(labels == 0) > 3].astype(float)
    assert inside.mean() > 4 * outside.mean()
    assert simulate_nuclei_3d((8, 40, 40), n_nuclei=0, seed=0).labels.max() == 0


@pytest.mark.parametrize("kwargs", [
    {"shape": (4, 10, 10)}, {"shape": (4, 64)}, {"radius_range": (5, 2)}, {"z_step": 0},
    {"n_nuclei": -1}, {"dtype": np.float32},
])
def test_bad_arguments_are_user_errors(kwargs):
    with pytest.raises(FluosegError):
        simulate_nuclei_3d(**kwargs)
