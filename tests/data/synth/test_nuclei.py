"""Tests of the nuclei image simulator (fluoseg.data.synth.nuclei)."""

import time

import numpy as np
import pytest
from scipy import ndimage

from fluoseg.data.synth import simulate_nuclei, touching_pairs
from fluoseg.errors import FluosegError


def test_shapes_dtypes_and_determinism():
    image, labels = simulate_nuclei((96, 80), seed=1)
    assert image.shape == (1, 96, 80) and image.dtype == np.uint8
    assert labels.shape == (96, 80) and labels.dtype == np.int32
    again = simulate_nuclei((96, 80), seed=1)
    assert np.array_equal(again.image, image) and np.array_equal(again.labels, labels)
    assert not np.array_equal(simulate_nuclei((96, 80), seed=2).labels, labels)
    wide = simulate_nuclei((64, 64), seed=1, dtype=np.uint16).image
    assert wide.dtype == np.uint16 and wide.max() > 1000


def test_labels_are_consecutive_single_objects_of_the_right_size():
    _, labels = simulate_nuclei((160, 160), seed=3, radius_range=(4, 10))
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, labels.max() + 1))
    assert labels.max() >= 20
    for i, obj in enumerate(ndimage.find_objects(labels), start=1):
        parts, n = ndimage.label(labels[obj] == i)
        assert n == 1
    areas = np.bincount(labels.ravel())[1:]
    assert areas.max() <= np.pi * (10 * 1.15) ** 2 and np.median(areas) > np.pi * 4**2 * 0.6


def test_touching_nuclei_share_a_boundary_only_when_asked():
    for seed in range(3):
        _, labels = simulate_nuclei((128, 128), seed=seed)
        assert len(touching_pairs(labels)) >= 3
        # A foreground threshold merges touching nuclei: instance separation matters.
        _, n_components = ndimage.label(labels > 0)
        assert n_components < labels.max()
        _, apart = simulate_nuclei((128, 128), seed=seed, touching=False)
        assert touching_pairs(apart) == set() and apart.max() > 10


def test_image_shows_the_nuclei():
    image, labels = simulate_nuclei((128, 128), seed=4)
    inside, outside = image[0][labels > 0].astype(float), image[0][labels == 0].astype(float)
    assert inside.mean() > outside.mean() + 60
    # Texture and noise: nuclei are not flat plateaus.
    assert inside.std() > 10


def test_count_and_fast():
    _, labels = simulate_nuclei((128, 128), n_nuclei=5, seed=5)
    assert 1 <= labels.max() <= 5
    assert simulate_nuclei((64, 64), n_nuclei=0, seed=0).labels.max() == 0
    start = time.perf_counter()
    simulate_nuclei((256, 256), seed=6)
    assert time.perf_counter() - start < 1.0


def test_user_errors():
    with pytest.raises(FluosegError, match="radius_range"):
        simulate_nuclei((64, 64), radius_range=(8, 4))
    with pytest.raises(FluosegError, match="too small"):
        simulate_nuclei((10, 10), radius_range=(4, 10))
    with pytest.raises(FluosegError, match="dtype"):
        simulate_nuclei((64, 64), dtype=np.float32)
